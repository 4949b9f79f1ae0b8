"""The reference codes' random draws and schedules, written from their conventions: the independent side of
test_parity_draws.py. Nothing here imports the pack.

- threestudio ``stable_diffusion_guidance.py`` / ``stable_diffusion_sdi_guidance.py``: min_step = int(1000·p_min),
  max_step = int(1000·p_max), t = randint(min_step, max_step + 1) per batch item; weighting_strategy "sds"
  (1 − ᾱ_t), "uniform" (1), "fantasia3d" (ᾱ_t^0.5·(1 − ᾱ_t)).
- SDI's inversion target: last_t = min(t + δ, 999) with δ = int(random() · 1000 // inversion_n_steps); its
  t_anneal sets min and max to (p_max − p_min)·(1 − global_step/trainer_max_steps) + p_min at every step (so
  t = int(1000·that)); it inverts afresh in every call.
- LMC-SDS (Alldieck et al. §4, "Increasing Sample Diversity"): ε fixed over the optimization in L_cond only,
  sampled afresh in L_lmc.
"""
from fractions import Fraction

import torch
from torch import Tensor

from reference_diffusers import DDPMPrior, guided

LEVELS = 1000


def uniform_timestep_law(min_step_percent: float, max_step_percent: float) -> dict[int, Fraction]:
    """threestudio's t = randint(int(1000·p_min), int(1000·p_max) + 1): each timestep of the range, equally likely."""
    lo, hi = int(LEVELS * min_step_percent), int(LEVELS * max_step_percent)
    return {k: Fraction(1, hi - lo + 1) for k in range(lo, hi + 1)}


def sdi_delta_law(inversion_n_steps: int = 10) -> dict[int, Fraction]:
    """SDI's δ = int(random() · 1000 // n): random() ∈ [0, 1) makes it 0 … 1000/n − 1, equally likely."""
    top = LEVELS // inversion_n_steps
    return {d: Fraction(1, top) for d in range(top)}


def sdi_inversion_target(t: int, delta: int) -> int:
    """SDI's last inversion timestep: min(t + δ, 999)."""
    return min(t + delta, LEVELS - 1)


def sdi_annealed_timestep(global_step: float, trainer_max_steps: int, min_step_percent: float,
                          max_step_percent: float) -> int:
    """SDI's t_anneal: t = int(1000·[(p_max − p_min)·(1 − global_step/trainer_max_steps) + p_min])."""
    percent = (max_step_percent - min_step_percent) * (1 - global_step / trainer_max_steps) + min_step_percent
    return int(LEVELS * percent)


def weight(prior: DDPMPrior, t: int, strategy: str) -> Tensor:
    """threestudio's w(t) for its weighting_strategy."""
    abar = prior.alpha_bar(t)
    return {"sds": 1 - abar, "uniform": torch.ones_like(abar), "fantasia3d": abar**0.5 * (1 - abar)}[strategy]


def weighted_sds_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, cond: Tensor, uncond: Tensor,
                          guidance_scale: float, strategy: str) -> Tensor:
    """threestudio SDS with its weighting_strategy: w(t)·(ε̂ − ε), its CFG at x_t = add_noise(x, ε, t)."""
    e_c, e_u = prior.eps(prior.noised(x, eps, t), t, [cond, uncond])
    return weight(prior, t, strategy) * (guided(e_c, e_u, guidance_scale) - eps)


def lmc_fixed_noise_gradient(prior: DDPMPrior, x: Tensor, t: int, fixed: Tensor, fresh: Tensor, cond: Tensor,
                             uncond: Tensor, bias: Tensor, omega: float) -> Tensor:
    """LMC-SDS with ε fixed in L_cond only: (b̂ − ẑ_t(x + fresh ε) + ω·(ε̂_c − ε̂_u)(x + fixed ε)) / ω."""
    x_fixed, x_fresh = prior.noised(x, fixed, t), prior.noised(x, fresh, t)
    e_c, e_u = prior.eps(x_fixed, t, [cond, uncond])
    (out_u,) = prior.outputs(x_fresh, t, [uncond])
    z_hat = prior.eps_x0(out_u, x_fresh, t)[1]
    return (bias - z_hat + omega * (e_c - e_u)) / omega
