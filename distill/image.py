"""Pixel-space score distillation: what the loss sees of an image at each step (LMC-SDS §5).

For the first steps the whole image, resized to the model's native resolution; after that, random
patches at native resolution. The view is differentiable, so the latent-space gradient reaches the
pixels through the (differentiable) VAE encoder the caller supplies. Patches sit on the VAE's 8-pixel
grid (the one VAE Encode crops to), so a field at the image's latent resolution — a fixed noise — is cut at a
patch's window exactly. An editing reference is not such a field: an encoder with spatial context (GroupNorm,
attention) does not commute with cutting, so the reference is the original image seen as the optimized one is,
cut or resized in pixels and encoded (``ImageReference``).
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

    def windows(self, pixels: Tensor, run: Run) -> list[Window]:
        """Where the latents the loss sees this step lie in their items' latent grids: each whole item, or (drawn from
        the items' streams) ``patches`` native-size windows per item."""
        h, w = pixels.shape[-2:]
        grid, _ = latent_grid(h, w)
        if run.step < self.whole_image_steps or max(h, w) <= self.native:
            return [Window(item, 0, 0, grid[0], grid[1], grid) for item in range(len(pixels))]
        size = min(self.native // LATENT_SCALE, *grid)
        corners = patch_corners(*grid, size, self.patches, run.generators)
        return [Window(item, y, x, size, size, grid) for item, cs in enumerate(corners) for y, x in cs]

    def cut(self, pixels: Tensor, windows: list[Window]) -> Tensor:
        """The images at the windows: whole items resized to the native size, or patches cut on the 8-pixel grid."""
        h, w = pixels.shape[-2:]
        if all((v.height, v.width) == tuple(v.grid) for v in windows):
            items = pixels[[v.item for v in windows]] if len(windows) != len(pixels) else pixels
            return kornia.geometry.transform.resize(items, fit_size(h, w, self.native), antialias=True)
        _, (oy, ox) = latent_grid(h, w)
        crops = []
        for v in windows:
            top, left = oy + LATENT_SCALE * v.top, ox + LATENT_SCALE * v.left
            crops.append(pixels[v.item, :, top:top + LATENT_SCALE * v.height, left:left + LATENT_SCALE * v.width])
        return torch.stack(crops)

    def view(self, pixels: Tensor, run: Run) -> tuple[Tensor, list[Window]]:
        """pixels [B, 3, H, W] → the images the loss sees this step, and where each lies in its item's latent grid."""
        windows = self.windows(pixels, run)
        return self.cut(pixels, windows), windows


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


class ImageReference:
    """An editing reference in pixels, [1 or B, 3, H, W]: at each step the original image cut or resized as the
    optimized image is, and encoded by the same encoder without gradient, so that an unedited image and its
    reference give the loss identical latents. The last windows' latents are kept (the whole-image phase
    encodes once)."""

    def __init__(self, pixels: Tensor, schedule: PatchSchedule, encode: Callable[[Tensor], Tensor]):
        self.pixels, self.schedule, self.encode = pixels, schedule, encode
        self.kept: tuple | None = None

    def __call__(self, windows: list[Window], size: tuple[int, int]) -> Tensor:
        key = (tuple(windows), tuple(size))
        if self.kept is None or self.kept[0] != key:
            items = [w._replace(item=w.item if len(self.pixels) > 1 else 0) for w in windows]
            with torch.no_grad():
                self.kept = key, self.encode(self.schedule.cut(self.pixels, items)).detach()
        return self.kept[1]


def latent_view(schedule: PatchSchedule, encode: Callable[[Tensor], Tensor]):
    """A view for ``optimize``: the schedule's images of the pixels, encoded to model-space latents."""

    def view(pixels: Tensor, run: Run) -> tuple[Tensor, list[Window]]:
        images, windows = schedule.view(pixels, run)
        return encode(images), windows

    return view
