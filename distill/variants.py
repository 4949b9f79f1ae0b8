"""Distillation losses since SDS that are each a direction over the one evaluation path: CSD, ISM, SDS-Bridge, ASD.

Each answers SDS's over-smoothing or saturation by replacing what the guided prediction is compared with:
CSD drops the noise term and keeps the classifier direction; ISM compares with the unconditional prediction at a
DDIM-inverted earlier level; SDS-Bridge compares a "sharp" prompt with an "over-saturated, blurry" one; ASD compares
with the prompt's prediction a little higher in noise, with the same ε.
"""
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser, predict
from .inversion import ddim_invert, ddim_step
from .losses import Evaluation
from .run import Run, gaussian_noise
from .schedule import eps_from_x0, noised, per_item, sigma_at


def csd_direction(ev: Evaluation, scale: float, ramp: float) -> Tensor:
    """CSD (Yu et al. 2023, eq. 9): w(t)·s·(ε̂_c − ε̂_ref), no sampled noise; ε̂_ref goes linearly from the
    unconditional ε̂_∅ to the negative prompt's ε̂_neg over the first ``ramp`` of the run (its csd-if config)."""
    p = 1.0 if ramp <= 0 else min(ev.progress / ramp, 1.0)
    if p >= 1:
        ref = ev.eps["csd_negative"]
    else:
        ref = (1 - p) * ev.eps["negative"] + p * ev.eps["csd_negative"]
    return ev.w * scale * (ev.eps["positive"] - ref)


def ism_direction(ev: Evaluation) -> Tensor:
    """ISM (LucidDreamer, Liang et al. 2024, eq. 12): w(t)·(CFG(x_t, t) − ε̂_∅(x_s, s)), x_s and x_t from DDIM
    inversion of x (``ISMInversion``), w = √((1 − ᾱ_t)/ᾱ_t)."""
    return ev.w * (ev.eps["cfg"] - ev.eps["negative@s"])


def bridge_direction(ev: Evaluation, scale: float) -> Tensor:
    """SDS-Bridge's stage two (McAllister et al. 2024): w(t)·s·(ε̂(y + "sharp" suffix) − ε̂(y + "blurry" suffix)):
    a bridge from the current image's distribution, described by the second, to the first's."""
    return ev.w * scale * (ev.eps["bridge_target"] - ev.eps["bridge_source"])


def asd_direction(ev: Evaluation) -> Tensor:
    """ASD (ScaleDreamer, Ma et al. 2024): w(t)·(CFG(x_t, t) − ε̂_c(x_{t+Δ}, t + Δ)), both latents noised with the
    same ε, Δ = ratio·(t − t_min) (``ScoreDistillation.shift``)."""
    return ev.w * (ev.eps["cfg"] - ev.eps["positive@shifted"])


def ism_grid(s: float, interval: float, levels: int) -> list[float]:
    """ISM's walk to s: table index 1 (the first of its 1000-level DDIM grid), then every ``interval`` of the
    schedule above it below s, then s (the reference code's x0 → x_s steps of 200 timesteps)."""
    last = levels - 1
    step = max(round(interval * levels), 1)
    below = [i / last for i in range(1 + step, last, step) if i < round(s * last, 6)]
    return [1 / last] + below + ([s] if s > 1 / last else [])


@dataclass(frozen=True)
class ISMInversion:
    """ISM's noise: x noised with ε to the first grid level, walked up by unconditional DDIM to s = t − delta in
    steps of ``interval`` (``ism_grid``), then one DDIM step s → t. Returns κ with a·x + b·κ = x_t at t, and the
    unconditional ε̂ at x_s that the direction subtracts ("negative@s"). delta 0.08 and interval 0.2 are the
    reference code's δ = 80 and 200 timesteps of 1000, taken as that many steps of the model's table; about
    ⌈s/interval⌉ + 1 model calls before the forward."""

    delta: float = 0.08
    interval: float = 0.2

    def __post_init__(self):
        if not 0 < self.delta < 1:
            raise ValueError(f"delta_t must be within (0, 1), a fraction of the schedule; got {self.delta}.")
        if not 0 < self.interval <= 1:
            raise ValueError(f"inversion_interval must be within (0, 1]; got {self.interval}.")

    def __call__(self, denoiser: Denoiser, x: Tensor, t: Tensor, cfg: float, run: Run) -> tuple[Tensor, dict]:
        sigmas, levels = denoiser.sigmas, len(denoiser.sigmas)
        first = 1 / (levels - 1)
        s = (t - round(self.delta * levels) * first).clamp(min=first)
        grids = [ism_grid(float(si), self.interval, levels) for si in s]

        def coefficients(fractions: Tensor) -> tuple[Tensor, Tensor]:
            return tuple(per_item(c, x) for c in denoiser.coefficients(sigma_at(sigmas, fractions).to(x)))

        eps = gaussian_noise(x, run.generators)
        a0, b0 = coefficients(torch.full_like(t, first))
        x_s = ddim_invert(denoiser, noised(x, eps, a0, b0) / (a0**2 + b0**2).sqrt(), grids, 1.0,
                          positive="negative")
        sigma_s = sigma_at(sigmas, s).to(x)
        with torch.inference_mode():
            x0_s = predict(denoiser, x_s, sigma_s, 1.0, positive="negative")["cfg"]
        x0_s = x0_s.clone().to(x)
        a_s, b_s = coefficients(s)
        eps_s = eps_from_x0(x_s, x0_s, a_s, b_s)
        a_t, b_t = coefficients(t)
        x_t = ddim_step(x0_s, eps_s, a_t, b_t)
        return (x_t - a_t * x) / b_t, {"negative@s": eps_s}
