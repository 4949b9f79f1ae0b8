"""Pixel-space score distillation: what the loss sees of an image at each step (LMC-SDS §5).

For the first steps the whole image, resized to the model's native resolution; after that, random
patches at native resolution. The view is differentiable, so the latent-space gradient reaches the
pixels through the (differentiable) VAE encoder the caller supplies. Patches sit on the VAE's 8-pixel
grid (the one VAE Encode crops to), so a field at the image's latent resolution — a fixed noise, an
editing reference — is cut at a patch's window exactly.
"""
from dataclasses import dataclass
from typing import Callable

import kornia
import torch
from torch import Tensor

from .inversion import DDIMInversion
from .run import Run, Window

LATENT_SCALE = 8
"""Pixels per latent pixel of the VAEs the pack works with."""


def fit_size(h: int, w: int, native: int, multiple: int = LATENT_SCALE) -> tuple[int, int]:
    """The size with the same aspect whose longer side is `native`, rounded to a multiple of 8."""
    scale = native / max(h, w)
    return max(multiple, round(h * scale / multiple) * multiple), max(multiple, round(w * scale / multiple) * multiple)


def latent_grid(h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The latent grid (H, W) of an h × w image and the pixel offset of its first cell: VAE Encode keeps the centred
    multiple-of-8 part of the image."""
    return (h // LATENT_SCALE, w // LATENT_SCALE), ((h % LATENT_SCALE) // 2, (w % LATENT_SCALE) // 2)


def patch_corners(h: int, w: int, size: int, count: int,
                  generators: list[torch.Generator]) -> list[list[tuple[int, int]]]:
    """`count` top-left corners per item, uniform over [−size/2, dim − size/2] and clamped into the image, so
    that border cells are drawn about as often as inner ones and every cell is covered over a run."""
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
        if self.native < LATENT_SCALE or self.patches < 1 or self.whole_image_steps < 0:
            raise ValueError("native_size must be ≥ 8, patches ≥ 1 and whole_image_steps ≥ 0.")

    def has_patch_phase(self, h: int, w: int, steps: int) -> bool:
        return steps > self.whole_image_steps and max(h, w) > self.native

    def view(self, pixels: Tensor, run: Run) -> tuple[Tensor, list[Window]]:
        """pixels [B, 3, H, W] → the images the loss sees this step, and where each lies in its item's latent grid."""
        h, w = pixels.shape[-2:]
        grid, (oy, ox) = latent_grid(h, w)
        if run.step < self.whole_image_steps or max(h, w) <= self.native:
            whole = [Window(item, 0, 0, grid[0], grid[1], grid) for item in range(len(pixels))]
            return kornia.geometry.transform.resize(pixels, fit_size(h, w, self.native), antialias=True), whole
        size = min(self.native // LATENT_SCALE, *grid)
        crops, windows = [], []
        for item, corners in enumerate(patch_corners(*grid, size, self.patches, run.generators)):
            for y, x in corners:
                top, left = oy + LATENT_SCALE * y, ox + LATENT_SCALE * x
                crops.append(pixels[item, :, top:top + LATENT_SCALE * size, left:left + LATENT_SCALE * size])
                windows.append(Window(item, y, x, size, size, grid))
        return torch.stack(crops), windows


def check_patch_phase(loss, schedule: PatchSchedule, h: int, w: int, steps: int) -> None:
    """Refuses what cannot follow patches that move every step: SDI noise reused for refresh_every steps is inferred
    from one patch's content and has no place in the image to be kept at."""
    noise = getattr(loss, "noise", None)
    if isinstance(noise, DDIMInversion) and noise.refresh_every > 1 and schedule.has_patch_phase(h, w, steps):
        raise ValueError(
            f"refresh_every: DDIM-Invert Noise would reuse noise inverted from one patch for {noise.refresh_every} "
            f"steps, but Optimize Image's patches move every step after whole_image_steps ({schedule.whole_image_steps}"
            f" of {steps} steps, image {w}×{h} above native_size {schedule.native}), so it would land on other "
            "content. Set refresh_every to 1, or whole_image_steps to at least steps (no patch phase)."
        )


def latent_view(schedule: PatchSchedule, encode: Callable[[Tensor], Tensor]):
    """A view for ``optimize``: the schedule's images of the pixels, encoded to model-space latents."""

    def view(pixels: Tensor, run: Run) -> tuple[Tensor, list[Window]]:
        images, windows = schedule.view(pixels, run)
        return encode(images), windows

    return view
