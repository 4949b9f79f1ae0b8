"""Volume rendering of a density field in the box [−1, 1]³: dense samples along each ray, alpha compositing.

Along a ray through the box from t_near to t_far, S samples at t_i = t_near + (i + u_i)·δ, δ = (t_far − t_near)/S
(u_i = ½, or stratified u_i ~ U[0, 1) from a CPU generator), are composited as NeRF does (Mildenhall et al.
eq. 3): α_i = 1 − exp(−σ_i·δ), T_i = Π_{j<i} (1 − α_j), colour = Σ_i T_i·α_i·c_i + (1 − Σ_i T_i·α_i)·background.
For constant σ over the chord, T after the box is exp(−σ·chord) exactly. A camera inside the box starts at t = 0.
"""
from typing import Callable, NamedTuple, Protocol

import torch
from torch import Tensor

from .cameras import Rays

BOUND = 1.0
"""The scene lies in [−BOUND, BOUND]³ (world units)."""


class FieldSample(NamedTuple):
    """A field at N points: density σ [N] (per world unit), albedo [N, 3] in [0, 1], unit outward normal [N, 3]."""

    density: Tensor
    albedo: Tensor
    normal: Tensor


class Field(Protocol):
    def __call__(self, points: Tensor) -> FieldSample:
        """The field at world points [N, 3]."""


Shader = Callable[[FieldSample, Tensor], Tensor]
"""(the field at N points, the points [N, 3]) → the colour each sample emits [N, 3]."""


class Render(NamedTuple):
    """rgb [B, 3, H, W] composited over the background; opacity Σ T·α [B, 1, H, W]; per sample along each ray
    [B, H, W, S]: weights T·α, and normals [B, H, W, S, 3]; ray directions [B, H, W, 3]."""

    rgb: Tensor
    opacity: Tensor
    weights: Tensor
    normals: Tensor
    directions: Tensor


def box_chord(rays: Rays, bound: float = BOUND) -> tuple[Tensor, Tensor]:
    """(t_near, t_far) [B, H, W] of each ray through [−bound, bound]³ (slab method); t_far = t_near on a miss."""
    inverse = 1 / rays.directions
    t1 = (-bound - rays.origins) * inverse
    t2 = (bound - rays.origins) * inverse
    near = torch.minimum(t1, t2).amax(-1).clamp(min=0)
    far = torch.maximum(t1, t2).amin(-1)
    return near, torch.maximum(far, near)


def albedo_shader(sample: FieldSample, points: Tensor) -> Tensor:
    return sample.albedo


def composite(density: Tensor, colour: Tensor, delta: Tensor, background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(colour [..., 3], opacity [...], weights [..., S]) of samples density [..., S], colour [..., S, 3] spaced
    delta [...] apart (eq. 3, T by torch.cumprod)."""
    alpha = 1 - torch.exp(-density * delta[..., None])
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1 - alpha[..., :-1]], -1), -1)
    weights = transmittance * alpha
    opacity = weights.sum(-1)
    rgb = (weights[..., None] * colour).sum(-2) + (1 - opacity[..., None]) * background
    return rgb, opacity, weights


def render(field: Field, rays: Rays, samples: int, background: Tensor, shader: Shader = albedo_shader,
           generator: torch.Generator | None = None) -> Render:
    """Renders `field` along `rays` with `samples` per ray; `background` [3] in [0, 1]. With a generator the samples
    are stratified (its draws made on the CPU), else at the midpoints of their intervals."""
    near, far = box_chord(rays)
    delta = (far - near) / samples
    shape = (*near.shape, samples)
    if generator is None:
        u = torch.full(shape, 0.5, dtype=near.dtype, device=near.device)
    else:
        u = torch.rand(shape, generator=generator, dtype=torch.float64).to(near)
    t = near[..., None] + (torch.arange(samples, device=near.device).to(near) + u) * delta[..., None]
    points = rays.origins[..., None, :] + t[..., None] * rays.directions[..., None, :]
    flat = points.reshape(-1, 3)
    sample = field(flat)
    colour = shader(sample, flat).reshape(*shape, 3)
    rgb, opacity, weights = composite(sample.density.reshape(shape), colour, delta, background.to(colour))
    return Render(rgb.permute(0, 3, 1, 2), opacity[:, None], weights, sample.normal.reshape(*shape, 3),
                  rays.directions)
