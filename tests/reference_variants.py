"""CSD, ISM, SDS-Bridge and ASD as their authors' codes compute them, written directly on diffusers: the independent
side of test_parity_variants.py (helpers and the DDPM view from ``reference_diffusers``).

Every convention is the authors' code's, never the pack's:
- CSD (CVMI-Lab/Classifier-Score-Distillation ``deep_floyd_simple_guidance.py``, ``configs/csd-if.yaml``):
  g = w·(cond·ε̂_text + uncond·ε̂_neg + null·ε̂_null + noise·ε) with threestudio's linear schedules of the config:
  uncond 0 → −1 and null −1 → 0 over steps 0…5000, cond 1, noise 0; weighting "uniform".
- ISM (EnVision-Research/LucidDreamer ``guidance/sd_utils.py`` ``add_noise_with_cfg`` and ``train_step``): a
  DDIMScheduler set to 1000 steps, indices i ↦ timesteps 1…1000 (its ``timesteps`` flipped: steps_offset 1); x
  noised with ε to timesteps[start], walked by unconditional DDIM (η = 0) in steps of 200 indices to s = i_t − 80,
  one more step s → t; g = √((1 − ᾱ_t)/ᾱ_t)·(ε̂_u + 7.5·(ε̂_c − ε̂_u) − ε̂_∅(x_s, s)) (its CFG is the standard form).
  Its target is the UNet's raw output, ε for its ε-prediction models; for v-prediction this reads the ε of
  DDIMScheduler's own conversion (the paper's ε̂).
- SDS-Bridge (davidmcall/SDS-Bridge ``2D_experiments/guidance.py``): ``sds_loss`` w·(ε̂_u + s·(ε̂_c − ε̂_u) − ε) and
  ``bridge_stage_two`` w·s·(ε̂_tgt − ε̂_src), w = 1 − ᾱ_t.
- ASD (theEricMa/ScaleDreamer ``stable_diffusion_asd_guidance.py``): t⁺ = t + ⌊clamp(0.1·(t − min_step), 0,
  999 − t)⌋ clamped to [1, 999]; x_t and x_t⁺ from add_noise with the same ε; g = (1 − ᾱ_t)·(ε̂_u + s·(ε̂_c − ε̂_u)
  at x_t − ε̂_c(x_t⁺, t⁺)).
Nothing here imports the pack.
"""
import torch
from diffusers import DDIMScheduler
from torch import Tensor

from reference_diffusers import SD_SCHEDULER, DDPMPrior


def threestudio_ramp(value, step: int) -> float:
    """threestudio's ``C``: [start_step, start_value, end_value, end_step] → linear in the step, clamped."""
    start_step, start, end, end_step = value
    return start + (end - start) * max(min(1.0, (step - start_step) / (end_step - start_step)), 0.0)


def csd_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, text: Tensor, null: Tensor, negative: Tensor,
                 step: int, uncond_scale=(0, -0.0, -1, 5000), null_scale=(0, -1, 0.0, 5000)) -> Tensor:
    """CSD with csd-if's scales at global step ``step``; the prompt processor's "uncond" is the negative prompt and
    "null" the empty one. Uniform weighting; the gradient before its optional normalization."""
    e_text, e_null, e_neg = prior.eps(prior.noised(x, eps, t), t, [text, null, negative])
    return (e_text + threestudio_ramp(uncond_scale, step) * e_neg + threestudio_ramp(null_scale, step) * e_null)


def lucid_timesteps() -> Tensor:
    """LucidDreamer's ``self.timesteps``: DDIMScheduler.set_timesteps(1000) flipped, index i ↦ timestep i + 1."""
    scheduler = DDIMScheduler(**SD_SCHEDULER)
    scheduler.set_timesteps(1000)
    return torch.flip(scheduler.timesteps, dims=(0,))


def ddim_to(prior: DDPMPrior, out: Tensor, x: Tensor, t: int, t_next: int) -> Tensor:
    """LucidDreamer's ``ddim_step`` at η = 0 from t to t_next (upward here): √ᾱ_next·x̂0 + √(1 − ᾱ_next)·ε̂."""
    eps, x0 = prior.eps_x0(out, x, t)
    abar = prior.alpha_bar(t_next)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def ism_gradient(prior: DDPMPrior, x: Tensor, ind_t: int, eps: Tensor, cond: Tensor, uncond: Tensor,
                 guidance_scale: float = 7.5, delta_t: int = 80, xs_delta_t: int = 200, xs_inv_steps: int = 5,
                 start_clean: bool = False) -> Tensor:
    """LucidDreamer's ISM gradient at index ind_t (timestep ind_t + 1). ``start_clean`` starts the walk from the clean
    latent instead of add_noise(x, ε, timesteps[start]) (SDI's convention; a plausible porting error)."""
    steps = lucid_timesteps()
    ind_s = max(ind_t - delta_t, 0)
    ind = max(ind_s - xs_delta_t * xs_inv_steps, 0)
    state = x if start_clean else prior.noised(x, eps, int(steps[ind]))
    for _ in range(xs_inv_steps):
        (out,) = prior.outputs(state, int(steps[ind]), [uncond])
        nxt = min(ind + xs_delta_t, ind_s)
        state = ddim_to(prior, out, state, int(steps[ind]), int(steps[nxt]))
        ind = nxt
        if ind == ind_s:
            break
    s, t = int(steps[ind_s]), int(steps[ind_t])
    (out_s,) = prior.outputs(state, s, [uncond])
    target = prior.eps_x0(out_s, state, s)[0]
    x_t = ddim_to(prior, out_s, state, s, t)
    e_u, e_c = prior.eps(x_t, t, [uncond, cond])
    abar = prior.alpha_bar(t)
    return ((1 - abar) / abar).sqrt() * (e_u + guidance_scale * (e_c - e_u) - target)


def bridge_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, cond: Tensor, uncond: Tensor, target: Tensor,
                    source: Tensor, cfg_scale: float = 40.0, stage_two: bool = True) -> Tensor:
    """SDS-Bridge's ``bridge_stage_two`` (or, stage_two False, its ``sds_loss``) at timestep t."""
    x_t = prior.noised(x, eps, t)
    w = 1 - prior.alpha_bar(t)
    if stage_two:
        e_tgt, e_src = prior.eps(x_t, t, [target, source])
        return w * cfg_scale * (e_tgt - e_src)
    e_c, e_u = prior.eps(x_t, t, [cond, uncond])
    return w * (e_u + cfg_scale * (e_c - e_u) - eps)


def asd_t_plus(t: int, min_step: int, plus_ratio: float = 0.1) -> int:
    plus = min(max(plus_ratio * (t - min_step), 0.0), 1000 - t - 1)
    return min(max(t + int(plus), 1), 999)


def asd_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, cond: Tensor, uncond: Tensor,
                 guidance_scale: float = 7.5, min_step: int = 20, guided_second: bool = False) -> Tensor:
    """ScaleDreamer's ASD gradient at timestep t. ``guided_second`` applies CFG to the second prediction too (a
    plausible porting error: its code evaluates the prompt alone there)."""
    t_plus = asd_t_plus(t, min_step)
    e_c, e_u = prior.eps(prior.noised(x, eps, t), t, [cond, uncond])
    second_c, second_u = prior.eps(prior.noised(x, eps, t_plus), t_plus, [cond, uncond])
    second = second_u + guidance_scale * (second_c - second_u) if guided_second else second_c
    return (1 - prior.alpha_bar(t)) * (e_u + guidance_scale * (e_c - e_u) - second)
