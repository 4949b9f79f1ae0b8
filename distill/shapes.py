"""A small image dataset the pack makes itself: sharp-edged discs, squares, bars and rings, whose class
names serve as prompts. With ``mixture.MixtureDenoiser`` it is an exact, non-linear prior to test methods on.

Every image is one shape on a zero background, hard-edged (a pixel is in or out by its centre), at a random
position and size, in one colour: a random direction in channel space scaled to a random intensity.
"""
import math
from dataclasses import dataclass

import torch
from kornia.filters import gaussian_blur2d
from torch import Tensor

CLASSES = ("disc", "square", "bar", "ring")


@dataclass(frozen=True)
class Shapes:
    """Images [N, C, H, W] and their class index [N] into ``classes``."""

    images: Tensor
    labels: Tensor
    classes: tuple[str, ...] = CLASSES

    def of(self, prompt: str) -> Tensor:
        """The images of one class."""
        if prompt not in self.classes:
            raise ValueError(f"prompt must be one of {', '.join(self.classes)}, got {prompt!r}.")
        return self.images[self.labels == self.classes.index(prompt)]

    def blurred(self, pixels: float) -> "Shapes":
        """The same images under a Gaussian blur of std ``pixels``: a "low quality" negative prompt."""
        k = 2 * math.ceil(3 * pixels) + 1
        return Shapes(gaussian_blur2d(self.images, (k, k), (pixels, pixels), border_type="constant"),
                      self.labels, self.classes)


def _mask(prompt: str, size: int, g: torch.Generator) -> Tensor:
    """[size, size] bool: one shape of the class at a random position and size, inside the image."""
    def u(lo, hi):
        return lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64).item()

    y, x = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    if prompt in ("disc", "ring"):
        r = u(0.18, 0.32) * size
        cy, cx = u(r + 1, size - r - 1), u(r + 1, size - r - 1)
        d = torch.sqrt((y - cy) ** 2 + (x - cx) ** 2)
        return d <= r if prompt == "disc" else (d <= r) & (d >= r - u(0.08, 0.12) * size)
    if prompt == "square":
        hw, hh = (u(0.15, 0.28) * size,) * 2
    else:  # bar: long and thin, horizontal or vertical
        hw, hh = u(0.3, 0.42) * size, u(0.05, 0.09) * size
        if torch.rand((), generator=g).item() < 0.5:
            hw, hh = hh, hw
    cy, cx = u(hh + 1, size - hh - 1), u(hw + 1, size - hw - 1)
    return ((y - cy).abs() <= hh) & ((x - cx).abs() <= hw)


def make_shapes(per_class: int, size: int = 32, channels: int = 3, seed: int = 0) -> Shapes:
    """``per_class`` images of every class, [N, channels, size, size]; the same seed gives the same images.

    Colours have a per-channel magnitude of about 1 (an intensity in [0.6, 1.4] times a unit direction
    scaled by √channels), like the unit-variance latents of a VAE.
    """
    g = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for label, prompt in enumerate(CLASSES):
        for _ in range(per_class):
            direction = torch.randn(channels, generator=g)
            colour = (0.6 + 0.8 * torch.rand((), generator=g)) * math.sqrt(channels) * direction / direction.norm()
            images.append(colour[:, None, None] * _mask(prompt, size, g))
            labels.append(label)
    return Shapes(torch.stack(images), torch.tensor(labels))
