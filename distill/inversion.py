"""SDI's noise: DDIM inversion of the current latent up the model's own schedule (Lukoianov et al. 2024).

SDS is a high-variance DDIM: a DDIM step in x0-space is an SDS update whose noise κ solves the
stationary equation κ = ε̂(a·x + b·κ, σ). SDS draws κ at random; SDI approximates it by inverting
DDIM from the clean latent up to the step's noise level.
"""
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .denoiser import Denoiser, predict
from .run import Run, gaussian_noise, uniform
from .schedule import eps_from_x0, per_item, sigma_at

VARIANTS = ("renoise", "inverted")
ETA_PLACEMENTS = ("end", "every_step")


def ddim_step(x0: Tensor, eps: Tensor, a_to: Tensor, b_to: Tensor) -> Tensor:
    """Deterministic DDIM (η = 0) to another level: x′ = a′·x̂0 + b′·ε̂ (in σ-space for EPS: x + (σ′ − σ)·ε̂)."""
    return a_to * x0 + b_to * eps


def inversion_grid(t_end: float, steps: int) -> list[float]:
    """Schedule fractions 0, 1/n, 2/n, … below t_end, then t_end: ≈ int(n·t_end) + 1 model calls."""
    return [j / steps for j in range(steps) if j / steps < t_end] + [t_end]


def ddim_invert(denoiser: Denoiser, x: Tensor, t_end: Tensor, steps: int, cfg: float, eta: float = 0.0,
                generators: list[torch.Generator] | None = None) -> Tensor:
    """The latents x [B, ...] walked by DDIM from the schedule's start up to fractions t_end [B].

    Items with fewer grid points leave the batch when they arrive, so one call evaluates every item
    still walking. eta > 0 adds, at every step, η times the noise a forward diffusion step between
    the two levels would add (the reference code's placement).
    """
    grids = [inversion_grid(float(te), steps) for te in t_end]
    sigmas = denoiser.sigmas
    a0, _ = denoiser.coefficients(sigma_at(sigmas, torch.zeros(len(x))).to(x))
    state = per_item(a0, x) * x
    for k in range(max(len(g) for g in grids) - 1):
        active = [i for i, g in enumerate(grids) if k + 1 < len(g)]
        s_from = sigma_at(sigmas, torch.tensor([grids[i][k] for i in active])).to(x)
        s_to = sigma_at(sigmas, torch.tensor([grids[i][k + 1] for i in active])).to(x)
        xs = state[active]
        a, b = (per_item(c, xs) for c in denoiser.coefficients(s_from))
        a_to, b_to = (per_item(c, xs) for c in denoiser.coefficients(s_to))
        with torch.inference_mode():
            x0 = predict(denoiser, xs, s_from, cfg)["cfg"]
        x0 = x0.clone().to(x)
        nxt = ddim_step(x0, eps_from_x0(xs, x0, a, b), a_to, b_to)
        if eta > 0:
            added = (b_to**2 - (a_to / a * b) ** 2).clamp(min=0).sqrt()
            nxt = nxt + eta * added * gaussian_noise(xs, [generators[i] for i in active])
        state[active] = nxt
    return state


@dataclass(frozen=True)
class DDIMInversion:
    """A noise source for ScoreDistillation: κ from DDIM inversion instead of a fresh Gaussian ε.

    variant "renoise" (the paper, Alg. 2): invert up to t (+ τ), read off κ at that level, and noise
    the clean latent with κ at level t. "inverted" (the reference code): feed the inverted latent
    itself to the model, labelled t. eta adds η·ε_H once at the end (paper) or at every inversion step
    (code). jitter moves the last inversion point to t + τ, τ ~ U[0, 1/steps). refresh_every = k
    re-inverts every k optimization steps and reuses κ in between (1 = the paper).
    """

    steps: int = 10
    cfg: float = -7.5
    eta: float = 0.3
    eta_placement: str = "end"
    jitter: bool = True
    variant: str = "renoise"
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
        kappa = run.cache.get("sdi_kappa")
        if kappa is None or run.step % self.refresh_every == 0:
            kappa = self.infer(denoiser, x, t, run)
            run.cache["sdi_kappa"] = kappa
        if self.eta > 0 and self.eta_placement == "end":
            return kappa + self.eta * gaussian_noise(x, run.generators)
        return kappa

    def infer(self, denoiser: Denoiser, x: Tensor, t: Tensor, run: Run) -> Tensor:
        """κ = (x_inv − a·x)/b at the level that defines it (t + τ for renoise, t for inverted)."""
        t_end = t
        if self.jitter:
            tau = uniform(run.generators)
            t_end = (t + tau / self.steps).clamp(max=1.0)
        eta = self.eta if self.eta_placement == "every_step" else 0.0
        x_inv = ddim_invert(denoiser, x, t_end, self.steps, self.cfg, eta, run.generators)
        level = t_end if self.variant == "renoise" else t
        a, b = (per_item(c, x) for c in denoiser.coefficients(sigma_at(denoiser.sigmas, level).to(x)))
        return (x_inv - a * x) / b


def ddim_sample(denoiser: Denoiser, noise: Tensor, steps: int, cfg: float = 1.0,
                progress: Callable[[int, int], None] | None = None) -> Tensor:
    """Deterministic DDIM from pure noise at t = 1 down the grid 1, (n−1)/n, …, 0: ddim_invert's walk
    reversed, ending as the clean latent (the state at the schedule's start divided by its a).
    progress(done, steps) after each step."""
    grid = inversion_grid(1.0, steps)[::-1]
    sigmas, n = denoiser.sigmas, len(noise)
    levels = [sigma_at(sigmas, torch.full((n,), t)).to(noise) for t in grid]
    coefficients = [tuple(per_item(c, noise) for c in denoiser.coefficients(s)) for s in levels]
    x = coefficients[0][1] * noise
    for k in range(steps):
        (a, b), (a_to, b_to) = coefficients[k], coefficients[k + 1]
        with torch.inference_mode():
            x0 = predict(denoiser, x, levels[k], cfg)["cfg"]
        x0 = x0.clone().to(noise)
        x = ddim_step(x0, eps_from_x0(x, x0, a, b), a_to, b_to)
        if progress is not None:
            progress(k + 1, steps)
    return x / coefficients[-1][0]
