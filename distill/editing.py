"""Editing by distillation: directions that compare the edited latent with a reference (the source image).

Both evaluate the target prompt ("positive") at the optimized latent and the source prompt ("source") at the
reference, noised with the same t and ε, in one batched evaluation (``ScoreDistillation.reference``).
"""
from torch import Tensor

from .losses import Evaluation
from .schedule import alpha_bar, per_item, sigma_at

PDS_GRID = 500
"""The PDS authors' DDIM grid: t − 1 is the previous of 500 levels, two steps of SD's 1000-step table."""
BETA_STEP = 1 / 999
"""β_t's step t′ → t as a fraction of the schedule: one step of the 1000-level table the authors' code reads β from,
whatever the model's own table length (Flux's has 10,000), so that one σ(t) curve gives one PDS step."""
GRID_STEP = 1000 // PDS_GRID * BETA_STEP
"""t − 1 as a fraction of the schedule: one step of PDS's grid, two of the 1000-level table."""


def dds_direction(ev: Evaluation) -> Tensor:
    """DDS (Hertz et al. 2023): w(t)·(CFG_ω(target, z_t) − CFG_ω(source, ẑ_t)), z and ẑ noised with the same t and ε."""
    return ev.w * (ev.eps["cfg"] - ev.eps["cfg@reference"])


def pds_levels(ev: Evaluation) -> tuple[Tensor, Tensor, Tensor]:
    """(ᾱ_t, ᾱ_{t−1}, β_t) per item: t − 1 = t − ``GRID_STEP``, β_t = 1 − ᾱ_t/ᾱ_t′ with t′ = t − ``BETA_STEP`` (on a
    1000-level table: the previous grid level and one table step, as the authors' code takes them), ᾱ of each
    level from the model's (a, b) at σ(t) of its own table."""
    sigmas = ev.denoiser.sigmas.double()
    t = ev.t.double()

    def abar(fraction: Tensor) -> Tensor:
        return alpha_bar(*ev.denoiser.coefficients(sigma_at(sigmas, fraction.clamp(min=0))))

    abar_t = abar(t)
    return abar_t, abar(t - GRID_STEP), 1 - abar_t / abar(t - BETA_STEP)


def pds_direction(ev: Evaluation) -> Tensor:
    """PDS (Koo et al. 2024): w(t)·(z_tgt − z_src), z = (x_{t−1} − μ)/σ_t with μ = c0·x̂0 + c1·x_t the DDPM posterior
    mean, c0 = √ᾱ_{t−1}·β_t/(1 − ᾱ_t), c1 = √(1 − β_t)·(1 − ᾱ_{t−1})/(1 − ᾱ_t), σ_t² = (1 − ᾱ_{t−1})·β_t/(1 − ᾱ_t).

    x_t and x_{t−1} of both branches share ε_t and ε_{t−1} (DDPM scale, x_t = √ᾱ_t·x + √(1 − ᾱ_t)·ε_t), so the
    noises cancel from the difference: g = [(√ᾱ_{t−1} − c1·√ᾱ_t)·(x − x_ref) − c0·(x̂0 − x̂0_ref)]/σ_t. The first
    term, the pull to the source, exists because β_t is one table step while t − 1 is two (the authors' code);
    with the posterior of the grid's own step it would vanish and PDS would be DDS weighted by c0·√(1 − ᾱ_t)/(√ᾱ_t·σ_t).
    """
    abar_t, abar_prev, beta = (per_item(v, ev.x) for v in pds_levels(ev))
    c0 = abar_prev.sqrt() * beta / (1 - abar_t)
    c1 = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar_t)
    sigma = ((1 - abar_prev) * beta / (1 - abar_t)).sqrt()
    pull = ((abar_prev.sqrt() - c1 * abar_t.sqrt()) / sigma).to(ev.x)
    gain = (c0 / sigma).to(ev.x)
    return ev.w * (pull * (ev.x - ev.reference) - gain * (ev.x0["cfg"] - ev.x0["cfg@reference"]))
