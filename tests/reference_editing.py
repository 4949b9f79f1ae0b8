"""DDS and PDS written from their authors' codes directly on diffusers: the independent side of test_parity_editing.py.

- DDS: google/prompt-to-prompt ``DDS_zeroshot.ipynb`` (``DDSLoss.get_dds_loss``, ``image_optimization``):
  z_t = √ᾱ_t·z + √(1 − ᾱ_t)·ε with one ε and t for source and target, one forward of both latents under
  [null, text], CFG ε̂_u + s·(ε̂_c − ε̂_u) with s = 7.5, a v-prediction read as ε̂ = √ᾱ_t·v + √(1 − ᾱ_t)·z_t,
  grad = ε̂_tgt − ε̂_src (its alpha_exp = sigma_exp = 0); SGD lr 0.1 on 2000·Σ(z_tgt·grad)/(H·W).
- PDS: KAIST-Visual-AI-Group/PDS ``pds/pds.py`` (``PDS.__call__``, ``compute_posterior_mean``): a DDIMScheduler
  with 500 inference steps, t and t_prev consecutive levels of that grid (t − 2), β_t = scheduler.betas[t],
  α_t = scheduler.alphas[t], ᾱ from alphas_cumprod, σ_t = √((1 − ᾱ_prev)/(1 − ᾱ_t)·β_t); per branch
  x_t = add_noise(x, ε, t), CFG ε̂_u + s·(ε̂_c − ε̂_u), x̂0 = (x_t − √(1 − ᾱ_t)·ε̂)/√ᾱ_t,
  μ = c0·x̂0 + c1·x_t with c0 = √ᾱ_prev·β_t/(1 − ᾱ_t), c1 = √α_t·(1 − ᾱ_prev)/(1 − ᾱ_t),
  z = (add_noise(x, ε_prev, t_prev) − μ)/σ_t; grad = z_tgt − z_src.
Nothing here imports the pack.
"""
import torch
from torch import Tensor

from reference_diffusers import DDPMPrior


def eps_rows(prior: DDPMPrior, latents: list[Tensor], contexts: list[Tensor], t: int) -> list[Tensor]:
    """ε̂ of each latent under its own context, all in one forward, read as the prior's prediction type."""
    batch = len(latents[0])
    inputs = torch.cat(latents)
    context = torch.cat([c.expand(batch, -1, -1) for c in contexts]).to(inputs)
    with torch.no_grad():
        out = prior.unet(inputs, torch.full((len(inputs),), t), encoder_hidden_states=context).sample
    return [prior.eps_x0(o, x, t)[0] for o, x in zip(out.chunk(len(latents)), latents)]


def dds_gradient(prior: DDPMPrior, z_tgt: Tensor, z_src: Tensor, t: int, eps: Tensor, c_tgt: Tensor, c_src: Tensor,
                 uncond: Tensor, guidance_scale: float = 7.5) -> Tensor:
    """The notebook's grad = CFG(ε̂ at the target's z_t under the target prompt) − CFG(ε̂ at the source's under its)."""
    abar = prior.alpha_bar(t)
    zt_src, zt_tgt = (abar.sqrt() * z + (1 - abar).sqrt() * eps for z in (z_src, z_tgt))
    u_src, u_tgt, e_src, e_tgt = eps_rows(prior, [zt_src, zt_tgt, zt_src, zt_tgt], [uncond, uncond, c_src, c_tgt], t)
    return (u_tgt + guidance_scale * (e_tgt - u_tgt)) - (u_src + guidance_scale * (e_src - u_src))


def dds_sgd_step(z_tgt: Tensor, grad: Tensor, lr: float = 0.1) -> Tensor:
    """One step of the notebook's optimizer: torch's SGD on 2000·Σ(z_tgt·grad)/(H·W), grad held fixed."""
    z = z_tgt.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([z], lr=lr)
    (2000 * (z * grad).sum() / (z.shape[2] * z.shape[3])).backward()
    optimizer.step()
    return z.detach()


def pds_gradient(prior: DDPMPrior, x_tgt: Tensor, x_src: Tensor, t: int, eps: Tensor, eps_prev: Tensor,
                 c_tgt: Tensor, c_src: Tensor, uncond: Tensor, guidance_scale: float, betas: Tensor) -> Tensor:
    """pds.py's grad at timestep t of its 500-level grid (t_prev = t − 2); ``betas``: the scheduler's β table."""
    abar = prior.scheduler.alphas_cumprod.to(betas)
    t_prev = t - 2
    beta_t, alpha_t, abar_t, abar_prev = betas[t], 1 - betas[t], abar[t], abar[t_prev]
    sigma_t = ((1 - abar_prev) / (1 - abar_t) * beta_t).sqrt()
    z = []
    for latent, cond in ((x_tgt, c_tgt), (x_src, c_src)):
        x_t = prior.noised(latent, eps, t)
        e_c, e_u = prior.eps(x_t, t, [cond, uncond])
        e = e_u + guidance_scale * (e_c - e_u)
        x0 = (x_t - (1 - abar_t).sqrt() * e) / abar_t.sqrt()
        c0 = abar_prev.sqrt() * beta_t / (1 - abar_t)
        c1 = alpha_t.sqrt() * (1 - abar_prev) / (1 - abar_t)
        z.append((prior.noised(latent, eps_prev, t_prev) - (c0 * x0 + c1 * x_t)) / sigma_t)
    return z[0] - z[1]


def sd_betas() -> Tensor:
    """SD's scaled-linear β table (what DDIMScheduler.betas holds in float32), in float64 from its definition."""
    return torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
