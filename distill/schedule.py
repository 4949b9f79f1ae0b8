"""Noise levels: σ, the schedule fraction t and ᾱ, for VE-style (EPS, v, EDM) and flow models.

Conventions at this boundary:
- A model's σ table lists its discrete noise levels in ascending order (ComfyUI's
  ``model_sampling.sigmas``). The schedule fraction t ∈ [0, 1] is the position in that table,
  interpolated log-linearly as ComfyUI's ``ModelSamplingDiscrete.sigma`` does: t = 0 is the smallest σ,
  t = 1 the largest, t = 0.2 is timestep 200 of 1000 on SD1.x.
- A noisy latent is x_σ = a(σ)·x + b(σ)·ε, in model space (after ``latent_format.process_in``).
"""
import torch
from torch import Tensor


def per_item(v: Tensor, like: Tensor) -> Tensor:
    """Shape a per-item vector [B] to broadcast over a batch like ``like`` [B, ...]."""
    return v.reshape(-1, *[1] * (like.ndim - 1))


def sigma_at(sigmas: Tensor, t: Tensor) -> Tensor:
    """σ at schedule fraction t, log-linear between the table's entries."""
    pos = t.to(sigmas).clamp(0, 1) * (len(sigmas) - 1)
    lo = pos.floor().long()
    hi = pos.ceil().long()
    return torch.lerp(sigmas[lo].log(), sigmas[hi].log(), pos - lo).exp()


def sd15_sigmas() -> Tensor:
    """SD1.x's discrete σ table: scaled-linear β, ᾱ = Π(1 − β), σ = √((1 − ᾱ)/ᾱ)."""
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    return ((1 - abar) / abar).sqrt().float()


def sd3_sigmas(shift: float = 3.0) -> Tensor:
    """SD3's flow σ table: σ = shift·t/(1 + (shift − 1)·t), t = 1/1000 … 1."""
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    return (shift * t / (1 + (shift - 1) * t)).float()


def ve_coefficients(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) of x_σ = x + σ·ε: EPS, v-prediction and EDM models in ComfyUI's VE view."""
    return torch.ones_like(sigma), sigma


def flow_coefficients(sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(a, b) of x_σ = (1 − σ)·x + σ·ε: rectified-flow (CONST) models such as SD3 and Flux."""
    return 1 - sigma, sigma


def alpha_bar(a: Tensor, b: Tensor) -> Tensor:
    """DDPM ᾱ of the level x_σ = a·x + b·ε (for VE: ᾱ = 1 / (1 + σ²))."""
    return a**2 / (a**2 + b**2)


def noised(x: Tensor, eps: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x_σ = a·x + b·ε."""
    return a * x + b * eps


def eps_from_x0(x_noisy: Tensor, x0: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """ε̂ = (x_σ − a·x̂0) / b: the noise prediction implied by an x0 prediction."""
    return (x_noisy - a * x0) / b
