"""SDI's noise: DDIM inversion of the current latent up the model's own schedule (Lukoianov et al. 2024).

SDS is a high-variance DDIM: a DDIM step in x0-space is an SDS update whose noise κ solves the
stationary equation κ = ε̂(a·x + b·κ, σ). SDS draws κ at random; SDI approximates it by inverting
DDIM from the clean latent up to the step's noise level.

Conventions of the reference code (threestudio's SDI guidance), kept so results match it: the grid is
diffusers' "leading" spacing with offset 1 (table indices 0, 1, 1 + r, 1 + 2r, … with r = levels // steps,
then the last point); the walk starts from the clean latent as the sample of the table's first level; the
η noise of each step has the DDPM posterior variance between its two levels. States are in the model's
own scale x_σ = a·x + b·ε; its DDPM-scale (variance-preserving) sample is x_σ / √(a² + b²).
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser, predict
from .run import Run, gaussian_noise, to_device_of, uniform
from .schedule import alpha_bar, eps_from_x0, per_item, sigma_at

VARIANTS = ("inverted", "renoise")
ETA_PLACEMENTS = ("every_step", "end")


def ddim_step(x0: Tensor, eps: Tensor, a_to: Tensor, b_to: Tensor) -> Tensor:
    """Deterministic DDIM (η = 0) to another level: x′ = a′·x̂0 + b′·ε̂ (in σ-space for EPS: x + (σ′ − σ)·ε̂)."""
    return a_to * x0 + b_to * eps


def posterior_std(a: Tensor, b: Tensor, a_to: Tensor, b_to: Tensor) -> Tensor:
    """√β̃ of DDPM's posterior between two levels (DDPM eq. 7, ᾱ from (a, b)), in the scale of the upper
    level's state."""
    abar, abar_to = alpha_bar(a, b), alpha_bar(a_to, b_to)
    variance = (1 - abar) / (1 - abar_to) * (1 - abar_to / abar)
    return (variance.clamp(min=0) * (a_to**2 + b_to**2)).sqrt()


def inversion_grid(t: float, t_end: float, steps: int, levels: int = 1000) -> list[float]:
    """Schedule fractions of the walk to t_end: 0, then the leading grid 1, 1 + r, … (table indices, r =
    levels // steps) below t, then t_end — about int(steps·t) + 2 model calls."""
    ratio, last = levels // steps, levels - 1
    return [0.0] + [i / last for i in range(1, last, ratio) if i < round(t * last, 6)] + [t_end]


def ddim_invert(denoiser: Denoiser, x: Tensor, grids: list[list[float]], cfg: float, eta: float = 0.0,
                generators: list[torch.Generator] | None = None, positive: str = "positive") -> Tensor:
    """The latents x [B, ...] walked by DDIM up each item's grid of schedule fractions, starting from x as
    the DDPM-scale sample of the grid's first level.

    Items with fewer grid points leave the batch when they arrive, so one call evaluates every item still
    walking. eta > 0 adds, at every step, η times the DDPM posterior noise between the two levels (the
    reference code's placement). ``positive`` is the guided branch; "negative" with cfg 1 walks unconditionally (ISM).
    """
    sigmas = denoiser.sigmas
    start = to_device_of(sigma_at(sigmas, torch.tensor([g[0] for g in grids])), x)
    a0, b0 = (per_item(c, x) for c in denoiser.coefficients(start))
    state = x * (a0**2 + b0**2).sqrt()
    for k in range(max(len(g) for g in grids) - 1):
        active = [i for i, g in enumerate(grids) if k + 1 < len(g)]
        index = torch.tensor(active).to(x.device, non_blocking=True)  # a list index would be a waiting copy
        s_from = to_device_of(sigma_at(sigmas, torch.tensor([grids[i][k] for i in active])), x)
        s_to = to_device_of(sigma_at(sigmas, torch.tensor([grids[i][k + 1] for i in active])), x)
        xs = state[index]
        a, b = (per_item(c, xs) for c in denoiser.coefficients(s_from))
        a_to, b_to = (per_item(c, xs) for c in denoiser.coefficients(s_to))
        with torch.inference_mode():
            x0 = predict(denoiser, xs, s_from, cfg, positive=positive)["cfg"]
        x0 = x0.clone().to(x)
        nxt = ddim_step(x0, eps_from_x0(xs, x0, a, b), a_to, b_to)
        if eta > 0:
            nxt = nxt + eta * posterior_std(a, b, a_to, b_to) * gaussian_noise(xs, [generators[i] for i in active])
        state[index] = nxt
    return state


@dataclass(frozen=True)
class DDIMInversion:
    """A noise source for ScoreDistillation: κ from DDIM inversion instead of a fresh Gaussian ε.

    Defaults are the reference code's, in the standard CFG form: its inversion guidance −7.5 computes
    ε̂_c − 7.5·(ε̂_c − ε̂_u), the standard form at −6.5. variant "inverted" (the code): the model gets the
    inverted latent of level t + τ, rescaled to the level t it is told (the code feeds the DDPM-scale latent
    labelled t); "renoise" (the paper, Alg. 2): read κ off the inverted latent and noise the clean latent with
    it at t. eta adds η·ε_H at every inversion step with DDPM's posterior variance (the code) or once to κ at
    the end (the paper). jitter moves the last inversion point to t + τ, τ ~ U[0, 1/steps). refresh_every = k
    re-inverts every k optimization steps and reuses κ in between (1 = the paper and the code).
    """

    steps: int = 10
    cfg: float = -6.5
    eta: float = 0.3
    eta_placement: str = "every_step"
    jitter: bool = True
    variant: str = "inverted"
    refresh_every: int = 1

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"inversion_steps must be at least 1, got {self.steps}.")
        if self.refresh_every < 1:
            raise ValueError(f"refresh_every must be at least 1, got {self.refresh_every}.")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}.")
        if self.eta_placement not in ETA_PLACEMENTS:
            raise ValueError(f"eta_placement must be one of {', '.join(ETA_PLACEMENTS)}, got {self.eta_placement!r}.")
        if self.eta < 0:
            raise ValueError(f"eta must be ≥ 0, got {self.eta}.")

    def __call__(self, denoiser: Denoiser, x: Tensor, t: Tensor, cfg: float, run: Run) -> Tensor:
        """κ of this step; one kept from an earlier step only for latents at the same places (κ belongs to the
        content it was inferred from: Optimize Image refuses reuse before patches that move)."""
        windows = run.windows_of(x)
        kept = run.cache.get("sdi_kappa")
        if kept is None or run.step % self.refresh_every == 0 or kept[0] != windows:
            kept = windows, self.infer(denoiser, x, t, run)
            run.cache["sdi_kappa"] = kept
        kappa = kept[1]
        if self.eta > 0 and self.eta_placement == "end":
            return kappa + self.eta * gaussian_noise(x, run.generators)
        return kappa

    def infer(self, denoiser: Denoiser, x: Tensor, t: Tensor, run: Run) -> Tensor:
        """κ with which a·x + b·κ at level t is the latent the model is given (see the variants)."""
        t_end = t
        if self.jitter:
            t_end = (t + uniform(run.generators) / self.steps).clamp(max=1.0)
        grids = [inversion_grid(float(ti), float(te), self.steps, len(denoiser.sigmas)) for ti, te in zip(t, t_end)]
        eta = self.eta if self.eta_placement == "every_step" else 0.0
        x_inv = ddim_invert(denoiser, x, grids, self.cfg, eta, run.generators)
        sigma_end = to_device_of(sigma_at(denoiser.sigmas, t_end), x)
        a_end, b_end = (per_item(c, x) for c in denoiser.coefficients(sigma_end))
        if self.variant == "renoise":
            return (x_inv - a_end * x) / b_end
        a, b = (per_item(c, x) for c in denoiser.coefficients(to_device_of(sigma_at(denoiser.sigmas, t), x)))
        fed = x_inv * ((a**2 + b**2) / (a_end**2 + b_end**2)).sqrt()
        return (fed - a * x) / b


def ddim_sample(denoiser: Denoiser, noise: Tensor, steps: int, cfg: float = 1.0,
                progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Deterministic DDIM from pure noise at t = 1 down the fractions (n−1)/n, …, 1/n and then to σ = 0, where
    the state is the model's last x0-prediction — as KSampler ends. progress(done, steps) after each step."""
    n = len(noise)
    levels = [sigma_at(denoiser.sigmas, torch.full((n,), k / steps)).to(noise) for k in range(steps, 0, -1)]
    x = per_item(denoiser.coefficients(levels[0])[1], noise) * noise
    for k, sigma in enumerate(levels):
        with torch.inference_mode():
            x0 = predict(denoiser, x, sigma, cfg)["cfg"]
        x0 = x0.clone().to(noise)
        if k + 1 < steps:
            a, b = (per_item(c, x) for c in denoiser.coefficients(sigma))
            a_to, b_to = (per_item(c, x) for c in denoiser.coefficients(levels[k + 1]))
            x = ddim_step(x0, eps_from_x0(x, x0, a, b), a_to, b_to)
        else:
            x = x0
        if progress is not None:
            progress(k + 1, steps)
    return x
