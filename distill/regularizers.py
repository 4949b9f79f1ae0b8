"""Regularizers of a rendered scene, with threestudio's dreamfusion-sd weights (threestudio/systems/dreamfusion.py).

- orientation (Ref-NeRF eq. 11): Σ_i sg(w_i)·max(0, n_i·d)², summed over the samples of every ray and divided
  by the number of rays with opacity > 0; it penalizes normals facing away from the camera. Its weight is ramped
  linearly from 10 to 1000 over the first half of the run (threestudio: over steps 0 → 5000 of 10 000).
- sparsity: mean over pixels of √(opacity² + 0.01), weight 1.
- opaque: binary cross-entropy of the opacity with itself (pushes it to 0 or 1), weight 0 as in dreamfusion-sd.
- total variation: mean squared difference of neighbouring cells of the density and albedo logits. threestudio's
  hash-grid MLP needs none and has none (weight 0); a free voxel grid may want a little.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .render import Render
from .scene import VoxelScene


def orientation(render: Render) -> Tensor:
    """Ref-NeRF eq. 11 as threestudio sums it."""
    facing = (render.normals * render.directions[..., None, :]).sum(-1).clamp(min=0)
    return (render.weights.detach() * facing**2).sum() / (render.opacity > 0).sum().clamp(min=1)


def sparsity(render: Render) -> Tensor:
    return (render.opacity**2 + 0.01).sqrt().mean()


def opaque(render: Render) -> Tensor:
    o = render.opacity.clamp(1e-3, 1 - 1e-3)
    return F.binary_cross_entropy(o, o)


def total_variation(grid: Tensor) -> Tensor:
    """Mean squared neighbour difference of a grid [1, C, D, H, W] along each of its three axes, summed."""
    return sum(torch.diff(grid, dim=d).pow(2).mean() for d in (2, 3, 4))


@dataclass(frozen=True)
class Regularizers:
    orientation: tuple[float, float] = (10.0, 1000.0)
    orientation_ramp: float = 0.5
    sparsity: float = 1.0
    opaque: float = 0.0
    total_variation: float = 0.0

    def __post_init__(self):
        if min(*self.orientation, self.sparsity, self.opaque, self.total_variation) < 0:
            raise ValueError("regularizer weights must be ≥ 0.")
        if not 0 <= self.orientation_ramp <= 1:
            raise ValueError(f"orientation_ramp must be a share of the run within [0, 1], got {self.orientation_ramp}.")

    def orientation_weight(self, progress: float) -> float:
        start, end = self.orientation
        ramp = 1.0 if self.orientation_ramp == 0 else min(progress / self.orientation_ramp, 1.0)
        return start + (end - start) * ramp

    def __call__(self, render: Render, scene: VoxelScene, progress: float) -> Tensor:
        """The weighted sum at run progress ∈ [0, 1]."""
        total = render.rgb.new_zeros(())
        if self.orientation_weight(progress) > 0:
            total = total + self.orientation_weight(progress) * orientation(render)
        if self.sparsity > 0:
            total = total + self.sparsity * sparsity(render)
        if self.opaque > 0:
            total = total + self.opaque * opaque(render)
        if self.total_variation > 0:
            total = total + self.total_variation * (total_variation(scene.density) + total_variation(scene.albedo))
        return total
