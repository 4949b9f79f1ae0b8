"""Score-distillation losses: each is a direction rule plus the one shared evaluation path."""
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Protocol

import torch
from torch import Tensor

from .denoiser import Denoiser
from .run import Run
from .schedule import alpha_bar, eps_from_x0, noised, per_item, sigma_at
from .timesteps import T_SCHEDULES, sample_fractions

WEIGHTINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "sds": lambda abar: 1 - abar,
    "uniform": torch.ones_like,
    "fantasia3d": lambda abar: abar.sqrt() * (1 - abar),
}
"""w(t) as a function of ᾱ_t: DreamFusion's 1 − ᾱ, constant, and Fantasia3D's √ᾱ·(1 − ᾱ)."""


class NoiseSource(Protocol):
    def __call__(self, denoiser: Denoiser, x: Tensor, t: Tensor, cfg: float, run: Run) -> Tensor:
        """The noise [B, ...] of this step for clean latents x at schedule fractions t [B]."""


class Evaluation(NamedTuple):
    """Everything one step of a loss knows: the latent, its noising and the model's predictions."""

    x: Tensor
    noise: Tensor
    t: Tensor
    eps: dict[str, Tensor]


def sds_direction(ev: Evaluation) -> Tensor:
    """DreamFusion eq. 3 without w(t): CFG_ω(x_t) − ε."""
    return ev.eps["cfg"] - ev.noise


def nfsd_direction(ev: Evaluation, threshold: float) -> Tensor:
    """NFSD eq. 7 without w(t): δ_D + s·δ_C = CFG_s − [t ≥ threshold]·ε̂_neg (δ_D of eq. 6, per item).

    Below the threshold δ_D = ε̂_u, above it δ_D = ε̂_u − ε̂_neg; the sampled ε never enters.
    """
    above = per_item((ev.t >= threshold).to(ev.x), ev.x)
    return ev.eps["cfg"] - above * ev.eps["nfsd_negative"]


def gaussian_noise(x: Tensor, generators: list[torch.Generator]) -> Tensor:
    """ε ~ N(0, I), each item drawn from its own generator on the CPU (same seed, same noise anywhere)."""
    return torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(x)


@dataclass(frozen=True)
class ScoreDistillation:
    """A score-distillation loss: timesteps, noising, one model evaluation, a direction, w(t).

    ``direction`` maps an Evaluation to the unweighted gradient; ``extra`` names the conditioning
    branches it needs besides positive/negative. cfg is the standard form ε̂_u + cfg·(ε̂_c − ε̂_u).
    ``noise`` replaces the fresh Gaussian ε of each step (e.g. by DDIM inversion, SDI).
    """

    direction: Callable[[Evaluation], Tensor] = sds_direction
    cfg: float = 100.0
    weighting: str = "sds"
    t_min: float = 0.02
    t_max: float = 0.98
    t_schedule: str = "uniform"
    grad_clip: float = 0.0
    extra: tuple[str, ...] = field(default=())
    noise: NoiseSource | None = None

    def __post_init__(self):
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ValueError(
                f"t_min ({self.t_min}) must be below t_max ({self.t_max}), both within [0, 1]: "
                "they are fractions of the model's noise schedule (0.02 and 0.98 are the usual range)."
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if self.t_schedule not in T_SCHEDULES:
            raise ValueError(f"t_schedule must be one of {', '.join(T_SCHEDULES)}, got {self.t_schedule!r}.")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be ≥ 0 (0 turns clipping off), got {self.grad_clip}.")

    def gradient(self, denoiser: Denoiser, x: Tensor, run: Run) -> Tensor:
        """g on the clean latents x [B, ...]: one batched model evaluation, no graph through the model."""
        t = sample_fractions(self.t_schedule, self.t_min, self.t_max, run.progress, run.generators)
        x = x.detach()
        sigma = sigma_at(denoiser.sigmas, t).to(x)
        a, b = (per_item(c, x) for c in denoiser.coefficients(sigma))
        if self.noise is None:
            noise = gaussian_noise(x, run.generators)
        else:
            noise = self.noise(denoiser, x, t, self.cfg, run)
        x_noisy = noised(x, noise, a, b)
        with torch.inference_mode():
            x0 = denoiser(x_noisy, sigma, self.cfg, self.extra)
        eps = {k: eps_from_x0(x_noisy, v.clone().to(x), a, b) for k, v in x0.items()}
        g = WEIGHTINGS[self.weighting](alpha_bar(a, b)) * self.direction(Evaluation(x, noise, t, eps))
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        if self.grad_clip > 0:
            g = g.clamp(-self.grad_clip, self.grad_clip)
        return g


def target_loss(x: Tensor, g: Tensor) -> Tensor:
    """½‖x − sg(x − g)‖² / B, whose gradient with respect to x is g / B (the target trick)."""
    target = (x - g).detach()
    return 0.5 * (x - target).pow(2).sum() / x.shape[0]
