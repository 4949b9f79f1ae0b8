"""SDS, NFSD, SDI, LMC-SDS, DDS and PDS on a rectified-flow model, written on diffusers: the independent side of
test_parity_flow.py.

The flow side is diffusers' FlowMatchEulerDiscreteScheduler (shift 3, ``reference_diffusers.FlowPrior``): level k is
the scheduler's k-th training timestep counted from the least noise, x_σ = scale_noise(x, timestep, ε) =
(1 − σ)·x + σ·ε, the UNet told timestep = 1000·σ, its output the velocity v = ε − x0, so x̂0 = x_σ − σ·v and
ε̂ = x_σ + (1 − σ)·v. Each method is its reference code's (see ``reference_diffusers``, ``reference_editing``) with
every DDPM quantity taken from the DDPM model of the same signal-to-noise ratio, written out here from (α, σ) =
(1 − σ, σ): ᾱ = α²/(α² + σ²), and that model's (variance-preserving) sample is x_σ/n with n = √(α² + σ²). Where a
reference code indexes timesteps (NFSD's threshold 200, SDI's grid, PDS's t − 2 and β_t), the index is the flow
table's. A DDIM step in (x̂0, ε̂) form, x′ = (1 − σ′)·x̂0 + σ′·ε̂, is the scheduler's Euler step x + (σ′ − σ)·v.
Nothing here imports the pack.
"""
from types import SimpleNamespace

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from reference_diffusers import SD_SCHEDULER, FlowPrior, guided, sdi_inversion_timesteps


def snr_alpha_bar(sigma: Tensor) -> Tensor:
    """ᾱ of the DDPM level with the flow level's SNR α²/σ², α = 1 − σ."""
    return (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)


def timestep(prior: FlowPrior, k: int) -> Tensor:
    return prior.scheduler.timesteps[len(prior.scheduler.timesteps) - 1 - k]


def vp_scale(prior: FlowPrior, k: int) -> Tensor:
    """n = √((1 − σ)² + σ²): the flow sample over the same-SNR DDPM sample."""
    sigma = prior.sigma(k)
    return ((1 - sigma) ** 2 + sigma**2).sqrt()


def noised(prior: FlowPrior, x: Tensor, eps: Tensor, k: int) -> Tensor:
    return prior.scheduler.scale_noise(x, timestep(prior, k).repeat(len(x)), eps)


def velocities(prior: FlowPrior, latents: list[Tensor], k: int, contexts: list[Tensor]) -> list[Tensor]:
    """v̂ of each latent under its context, told level k, in one forward."""
    inputs = torch.cat(latents)
    context = torch.cat([c.expand(len(latents[0]), -1, -1) for c in contexts]).to(inputs)
    with torch.no_grad():
        v = prior.unet(inputs, timestep(prior, k).repeat(len(inputs)), encoder_hidden_states=context).sample
    return list(v.chunk(len(latents)))


def x0_eps(prior: FlowPrior, x_sigma: Tensor, v: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(x̂0, ε̂) = (x_σ − σ·v, x_σ + (1 − σ)·v)."""
    sigma = prior.sigma(k)
    return x_sigma - sigma * v, x_sigma + (1 - sigma) * v


def eps_at(prior: FlowPrior, x_sigma: Tensor, k: int, contexts: list[Tensor]) -> list[Tensor]:
    return [x0_eps(prior, x_sigma, v, k)[1] for v in velocities(prior, [x_sigma] * len(contexts), k, contexts)]


def sds_gradient(prior: FlowPrior, x: Tensor, k: int, eps: Tensor, cond: Tensor, uncond: Tensor,
                 guidance_scale: float, abar_of=snr_alpha_bar) -> Tensor:
    """threestudio SDS, w = 1 − ᾱ ("sds"); ``abar_of``(σ) another ᾱ (a porting error to rule out)."""
    e_c, e_u = eps_at(prior, noised(prior, x, eps, k), k, [cond, uncond])
    return (1 - abar_of(prior.sigma(k))) * (guided(e_c, e_u, guidance_scale) - eps)


def nfsd_gradient(prior: FlowPrior, x: Tensor, k: int, eps: Tensor, cond: Tensor, uncond: Tensor, negative: Tensor,
                  scale: float) -> Tensor:
    """NFSD eq. 7 with w = 1 − ᾱ; δ_D = ε̂_u below level 200 of the table, ε̂_u − ε̂_neg from it on."""
    e_c, e_u, e_neg = eps_at(prior, noised(prior, x, eps, k), k, [cond, uncond, negative])
    domain = e_u if k < 200 else e_u - e_neg
    return (1 - snr_alpha_bar(prior.sigma(k))) * (domain + scale * (e_c - e_u))


def lmc_gradient(prior: FlowPrior, x: Tensor, k: int, eps: Tensor, cond: Tensor, uncond: Tensor, bias: Tensor,
                 omega: float, read_eps: bool = True) -> Tensor:
    """LMC-SDS (b̂ − ẑ_t + ω·(ε̂_c − ε̂_u))/ω, ẑ_t = x_σ − σ·v̂_u (eq. 9; eq. 6b; ω in the standard form);
    ``read_eps`` False takes L_cond on the velocities (the convention to rule out)."""
    x_sigma = noised(prior, x, eps, k)
    v_c, v_u = velocities(prior, [x_sigma, x_sigma], k, [cond, uncond])
    (_, e_c), (z_hat, e_u) = x0_eps(prior, x_sigma, v_c, k), x0_eps(prior, x_sigma, v_u, k)
    cond_term = e_c - e_u if read_eps else v_c - v_u
    return (bias - z_hat + omega * cond_term) / omega


GRID = SimpleNamespace(scheduler=DDIMScheduler(**SD_SCHEDULER))
"""threestudio's SDI grid (DDIMScheduler "leading", steps_offset 1), whose timesteps index the flow table here."""


def sdi_invert(prior: FlowPrior, x: Tensor, k: int, cond: Tensor, uncond: Tensor, guidance_scale: float = -7.5,
               steps: int = 10, eta: float = 0.0, step_noise: list[Tensor] | None = None,
               start_scale: bool = True) -> tuple[Tensor, Tensor]:
    """threestudio SDI ``invert_noise`` on the flow: the clean latent as the DDPM sample of level 0 (flow sample
    n_0·x; ``start_scale`` False takes x itself as the flow sample, the porting error to rule out), Euler/DDIM steps
    up the grid with the CFG velocity, each adding η·√Var·n′·step_noise[i], Var = (1 − ᾱ)/(1 − ᾱ′)·(1 − ᾱ′/ᾱ) DDPM's
    posterior variance between the levels. Returns (x_inv, κ) at the last level, flow scale, x_inv = (1 − σ)·x + σ·κ."""
    grid = sdi_inversion_timesteps(GRID, k, steps)
    state = vp_scale(prior, grid[0]) * x if start_scale else x
    for i, (current, nxt) in enumerate(zip(grid, grid[1:])):
        v = guided(*velocities(prior, [state, state], current, [cond, uncond]), guidance_scale)
        x0, eps = x0_eps(prior, state, v, current)
        sigma_next = prior.sigma(nxt)
        state = (1 - sigma_next) * x0 + sigma_next * eps
        if eta > 0:
            abar, abar_next = snr_alpha_bar(prior.sigma(current)), snr_alpha_bar(sigma_next)
            variance = (1 - abar) / (1 - abar_next) * (1 - abar_next / abar)
            state = state + eta * variance.sqrt() * vp_scale(prior, nxt) * step_noise[i]
    sigma = prior.sigma(grid[-1])
    return state, (state - (1 - sigma) * x) / sigma


def sdi_model_input(prior: FlowPrior, x: Tensor, k: int, x_inv: Tensor, kappa: Tensor, variant: str,
                    eta: float = 0.0, end_noise: Tensor | None = None) -> Tensor:
    """"inverted": the inverted latent's DDPM sample given at level k (flow scale n_k/n_end·x_inv; at δ = 0 x_inv);
    "renoise": scale_noise(x, κ, k); ``end_noise`` adds Alg. 2's η·√(1 − ᾱ_k)·ε_H, DDPM scale, ×n_k."""
    x_t = x_inv if variant == "inverted" else noised(prior, x, kappa, k)
    if end_noise is not None:
        x_t = x_t + eta * (1 - snr_alpha_bar(prior.sigma(k))).sqrt() * vp_scale(prior, k) * end_noise
    return x_t


def sdi_update(prior: FlowPrior, x: Tensor, k: int, cond: Tensor, uncond: Tensor, x_t: Tensor,
               guidance_scale: float = 7.5) -> Tensor:
    """x − x̂0, x̂0 = x_t − σ·v̂ of the CFG velocity at x_t told level k."""
    v = guided(*velocities(prior, [x_t, x_t], k, [cond, uncond]), guidance_scale)
    return x - x0_eps(prior, x_t, v, k)[0]


def dds_gradient(prior: FlowPrior, z_tgt: Tensor, z_src: Tensor, k: int, eps: Tensor, c_tgt: Tensor, c_src: Tensor,
                 uncond: Tensor, guidance_scale: float = 7.5, read_eps: bool = True) -> Tensor:
    """The notebook's CFG(ε̂ at the target's z_t, target prompt) − CFG(ε̂ at the source's z_t, source prompt), both
    scale_noise'd with one ε; ``read_eps`` False compares the velocities instead (the convention to rule out)."""
    zt_src, zt_tgt = noised(prior, z_src, eps, k), noised(prior, z_tgt, eps, k)
    latents = [zt_src, zt_tgt, zt_src, zt_tgt]
    out = velocities(prior, latents, k, [uncond, uncond, c_src, c_tgt])
    if read_eps:
        out = [x0_eps(prior, z, v, k)[1] for z, v in zip(latents, out)]
    u_src, u_tgt, e_src, e_tgt = out
    return (u_tgt + guidance_scale * (e_tgt - u_tgt)) - (u_src + guidance_scale * (e_src - u_src))


def pds_gradient(prior: FlowPrior, x_tgt: Tensor, x_src: Tensor, k: int, eps: Tensor, eps_prev: Tensor,
                 c_tgt: Tensor, c_src: Tensor, uncond: Tensor, guidance_scale: float, vp: bool = True) -> Tensor:
    """pds.py at level k (t_prev = k − 2, β_t = 1 − ᾱ_k/ᾱ_{k−1}: one table step, as scheduler.betas[t]) on the DDPM
    model of the flow's SNR: x_t and x_{t−1} its samples scale_noise(·)/n, x̂0 = x_σ − σ·v̂ of the CFG velocity,
    μ = c0·x̂0 + c1·x_t, z = (x_{t−1} − μ)/σ_t; grad = z_tgt − z_src. ``vp`` False uses the flow samples themselves as
    x_t and x_{t−1} (the porting error to rule out)."""
    abar_t, abar_prev, abar_step = (snr_alpha_bar(prior.sigma(i)) for i in (k, k - 2, k - 1))
    beta_t = 1 - abar_t / abar_step
    sigma_t = ((1 - abar_prev) / (1 - abar_t) * beta_t).sqrt()
    c0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
    c1 = (1 - beta_t).sqrt() * (1 - abar_prev) / (1 - abar_t)
    z = []
    for latent, cond in ((x_tgt, c_tgt), (x_src, c_src)):
        x_sigma = noised(prior, latent, eps, k)
        v_c, v_u = velocities(prior, [x_sigma, x_sigma], k, [cond, uncond])
        x0 = x0_eps(prior, x_sigma, v_u + guidance_scale * (v_c - v_u), k)[0]
        x_t = x_sigma / vp_scale(prior, k) if vp else x_sigma
        x_prev = noised(prior, latent, eps_prev, k - 2)
        x_prev = x_prev / vp_scale(prior, k - 2) if vp else x_prev
        z.append((x_prev - (c0 * x0 + c1 * x_t)) / sigma_t)
    return z[0] - z[1]
