"""How results compare with real images of the prompted class; every score is 1 for images like the data.

- fidelity: distance to the nearest image of the class over the class's median nearest-neighbour
  distance (leave-one-out): below 1 closer to a real image than real images are to each other, above 1 off.
- adherence: the fraction of results whose best match among all images, up to a translation and by the
  shape of their channel-norm map (colour aside), is of the prompted class.
- diversity: mean distance between results (seeds) over the mean distance between images of the class.
- contrast: mean per-item std and mean max |x|, over the class's.
- band power: mean power per radial frequency band (low, mid, high), over the class's.
- distance to source (editing): distance to the image being edited, over its class's median nearest-neighbour
  distance: below 1 the edit is closer to its source than the source is to any other image of its class.
"""
from typing import NamedTuple

import torch
from torch import Tensor

from .corrector import radial_bands
from .shapes import Shapes

BANDS = 3


class Scores(NamedTuple):
    fidelity: float
    adherence: float
    diversity: float
    std: float
    max_abs: float
    band_power: tuple[float, ...]


def _flat(x: Tensor) -> Tensor:
    return x.flatten(1).double()


def neighbour_scale(images: Tensor) -> float:
    """The median distance from an image to its nearest other image."""
    d = torch.cdist(_flat(images), _flat(images))
    d.fill_diagonal_(float("inf"))
    return d.min(1).values.median().item()


def fidelity(x: Tensor, images: Tensor) -> Tensor:
    """Per item [B]: distance to the nearest of the images over their own ``neighbour_scale``."""
    return torch.cdist(_flat(x), _flat(images)).min(1).values / neighbour_scale(images)


def distance_to_source(x: Tensor, source: Tensor, images: Tensor) -> Tensor:
    """Per item [B]: distance from each result to its source image over the source class's ``neighbour_scale``."""
    return (_flat(x) - _flat(source)).norm(dim=1) / neighbour_scale(images)


def shape_match(x: Tensor, images: Tensor) -> Tensor:
    """[B, N]: the best normalized correlation over all translations between the channel-norm maps of each
    item and each image: 1 for the same shape anywhere in any colour."""
    h, w = x.shape[-2:]

    def spectrum(y):
        p = y.double().norm(dim=1)
        p = p / p.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
        return torch.fft.rfft2(p, s=(2 * h, 2 * w))

    corr = torch.fft.irfft2(spectrum(x)[:, None] * spectrum(images)[None].conj(), s=(2 * h, 2 * w))
    return corr.flatten(2).max(2).values


def adherence(x: Tensor, data: Shapes, prompt: str) -> Tensor:
    """Per item [B]: 1 where the best ``shape_match`` among all images of ``data`` is of the prompted class."""
    best = data.labels[shape_match(x, data.images).argmax(1)]
    return (best == data.classes.index(prompt)).double()


def mean_distance(x: Tensor) -> float:
    """The mean distance between two different items."""
    return torch.pdist(_flat(x)).mean().item()


def band_power(x: Tensor, bands: int = BANDS) -> Tensor:
    """[bands]: mean power of the orthonormal 2-D FFT per radial band, over items and channels."""
    power = torch.fft.fft2(x.double(), norm="ortho").abs() ** 2
    band = radial_bands(x.shape[-2], x.shape[-1], bands).flatten()
    per_band = torch.zeros(bands, dtype=torch.float64).index_add_(0, band, power.mean((0, 1)).flatten())
    return per_band / torch.bincount(band, minlength=bands)


def contrast(x: Tensor) -> tuple[float, float]:
    """The mean per-item std and the mean per-item max |x|."""
    f = _flat(x)
    return f.std(1).mean().item(), f.abs().max(1).values.mean().item()


def scores(x: Tensor, data: Shapes, prompt: str) -> Scores:
    """Every score of results x [B, C, H, W] (B ≥ 2 seeds) for a prompt, relative to its class in ``data``."""
    images = data.of(prompt)
    (sx, mx), (si, mi) = contrast(x), contrast(images)
    return Scores(fidelity=fidelity(x, images).median().item(), adherence=adherence(x, data, prompt).mean().item(),
                  diversity=mean_distance(x) / mean_distance(images), std=sx / si, max_abs=mx / mi,
                  band_power=tuple((band_power(x) / band_power(images)).tolist()))
