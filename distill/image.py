"""Pixel-space score distillation: what the loss sees of an image at each step (LMC-SDS §5).

For the first steps the whole image, resized to the model's native resolution; after that, random
patches at native resolution. The view is differentiable, so the latent-space gradient reaches the
pixels through the (differentiable) VAE encoder the caller supplies.
"""
from dataclasses import dataclass
from typing import Callable

import kornia
import torch
from torch import Tensor

from .run import Run


def fit_size(h: int, w: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """The size with the same aspect whose longer side is `native`, rounded to a multiple of 8."""
    scale = native / max(h, w)
    return max(multiple, round(h * scale / multiple) * multiple), max(multiple, round(w * scale / multiple) * multiple)


def patch_corners(h: int, w: int, size: int, count: int, generators: list[torch.Generator]) -> list[list[tuple[int, int]]]:
    """`count` top-left corners per item, uniform over [−size/2, dim − size/2] and clamped into the image, so
    that border pixels are drawn about as often as inner ones and every pixel is covered over a run."""
    corners = []
    for g in generators:
        u = torch.rand((count, 2), generator=g, dtype=torch.float64)
        y = (u[:, 0] * h - size / 2).round().long().clamp(0, max(h - size, 0))
        x = (u[:, 1] * w - size / 2).round().long().clamp(0, max(w - size, 0))
        corners.append(list(zip(y.tolist(), x.tolist())))
    return corners


@dataclass(frozen=True)
class PatchSchedule:
    """native: the model's resolution in pixels; whole_image_steps: steps on the whole (resized) image;
    patches: random native-size patches per item and step after that (paper: 150 / 2 for synthesis)."""

    native: int = 512
    whole_image_steps: int = 150
    patches: int = 2

    def __post_init__(self):
        if self.native < 8 or self.patches < 1 or self.whole_image_steps < 0:
            raise ValueError("native_size must be ≥ 8, patches ≥ 1 and whole_image_steps ≥ 0.")

    def view(self, pixels: Tensor, run: Run) -> tuple[Tensor, list[torch.Generator]]:
        """pixels [B, 3, H, W] → the images the loss sees this step, and a generator for each of them."""
        h, w = pixels.shape[-2:]
        if run.step < self.whole_image_steps or max(h, w) <= self.native:
            return kornia.geometry.transform.resize(pixels, fit_size(h, w, self.native), antialias=True), run.generators
        size = min(self.native, h, w)
        crops, generators = [], []
        for item, (corners, g) in enumerate(zip(patch_corners(h, w, size, self.patches, run.generators), run.generators)):
            crops += [pixels[item, :, y:y + size, x:x + size] for y, x in corners]
            generators += [g] * self.patches
        return torch.stack(crops), generators


def latent_view(schedule: PatchSchedule, encode: Callable[[Tensor], Tensor]):
    """A view for ``optimize``: the schedule's images of the pixels, encoded to model-space latents."""

    def view(pixels: Tensor, run: Run) -> tuple[Tensor, list[torch.Generator]]:
        images, generators = schedule.view(pixels, run)
        return encode(images), generators

    return view
