"""Per-run state of one optimization: where it is, its random streams, what a noise source caches, and where
each latent the loss sees lies in its item's image."""
from dataclasses import dataclass, field
from typing import NamedTuple

import kornia
import numpy as np
import torch
from torch import Tensor


def item_generators(seed: int, batch: int) -> list[torch.Generator]:
    """Independent CPU generators, one per batch item, derived from one seed (numpy's SeedSequence)."""
    states = [s.generate_state(1, np.uint64)[0] for s in np.random.SeedSequence(seed).spawn(batch)]
    return [torch.Generator().manual_seed(int(s)) for s in states]


def to_device_of(t: Tensor, like: Tensor) -> Tensor:
    """t, made on the CPU, in like's device and dtype without making the host wait for the device: a copy to the
    device from pageable memory is staged at once, so it needs no synchronization (a plain .to() waits)."""
    return t.to(device=like.device, dtype=like.dtype, non_blocking=True)


def gaussian_noise(x: Tensor, generators: list[torch.Generator]) -> Tensor:
    """ε ~ N(0, I) shaped like x, each item drawn from its own generator on the CPU (same seed, same noise anywhere)."""
    return to_device_of(torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]), x)


def uniform(generators: list[torch.Generator]) -> Tensor:
    """One U[0, 1) draw per item, float64, each from its own generator."""
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])


class Window(NamedTuple):
    """Where a latent the loss sees lies in its item's image: rows top … top + height and columns left … left + width
    of the item's latent grid (the whole image's latent, grid = (H, W)), in latent pixels. A latent of another size
    than its window is that region resized (Optimize Image's whole-image phase)."""

    item: int
    top: int
    left: int
    height: int
    width: int
    grid: tuple[int, int]

    def crop(self, field: Tensor, size: tuple[int, int]) -> Tensor:
        """A field [..., H, W] on the item's grid, cut at this window and resized to the latent's size if it differs."""
        region = field[..., self.top:self.top + self.height, self.left:self.left + self.width]
        if tuple(region.shape[-2:]) != tuple(size):
            region = kornia.geometry.transform.resize(region, tuple(size), antialias=True)
        return region

    def at_scale(self, size: tuple[int, int]) -> "Window":
        """This window on the grid of the latent's own scale: itself when the latent is not resized; a resized
        latent (always a whole image) is the whole of a grid of its own size."""
        if tuple(size) == (self.height, self.width):
            return self
        return Window(self.item, 0, 0, size[0], size[1], tuple(size))


def whole_windows(x: Tensor) -> list[Window]:
    """Each latent of x [B, C, H, W] is its item's whole image."""
    h, w = x.shape[-2:]
    return [Window(i, 0, 0, h, w, (h, w)) for i in range(len(x))]


@dataclass
class Run:
    """generators: one per latent the loss sees (an item's own stream, shared by its patches); windows: where those
    latents lie in their items' images (None: each latent is its item's whole image); checks: None to check each
    gradient as it is made (a host read per step), or a list the loss appends its pending checks to, for the loop
    to read together (see losses.raise_if_not_finite)."""

    generators: list[torch.Generator]
    steps: int = 1
    step: int = 0
    cache: dict = field(default_factory=dict)
    windows: list[Window] | None = None
    checks: list | None = None

    def windows_of(self, x: Tensor) -> list[Window]:
        return self.windows if self.windows is not None else whole_windows(x)

    @property
    def progress(self) -> float:
        """step / (steps − 1) ∈ [0, 1]: 0 at the first step, 1 at the last."""
        return self.step / max(self.steps - 1, 1)
