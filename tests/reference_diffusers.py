"""threestudio-style score distillation written directly on diffusers: the independent side of test_parity.py.

Every convention here is the reference codes' or the papers', never the pack's:
- DDPM view on SD's discrete schedule (a DDIMScheduler with SD's scheduler_config.json): integer timesteps
  0…999, x_t = scheduler.add_noise(x, ε, t) = √ᾱ_t·x + √(1 − ᾱ_t)·ε, and the UNet is told t itself.
- CFG in threestudio's form ε̂_c + s·(ε̂_c − ε̂_u) (its code without Perp-Neg), the standard form with s + 1.
- SDS: threestudio ``stable_diffusion_guidance.py``; NFSD: Katzir et al. eq. 6–7; SDI: threestudio
  ``stable_diffusion_sdi_guidance.py`` (Lukoianov et al.); LMC-SDS: Alldieck et al. eq. 5–9.
- Flow: diffusers' FlowMatchEulerDiscreteScheduler: x_σ = scale_noise(x, timestep, ε) = σ·ε + (1 − σ)·x, the
  UNet told timestep = 1000·σ, its output the velocity ε − x0.
Nothing here imports the pack; ComfyUI is used only for the key map that gives diffusers the same weights.
"""
import copy

import torch
from diffusers import DDIMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from torch import Tensor

SD_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                    clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
"""SD1.x/2.x's scheduler_config.json, what threestudio loads with DDIMScheduler.from_pretrained."""


def diffusers_unet(patcher) -> UNet2DConditionModel:
    """A ComfyUI SD-family UNet (a ModelPatcher) as diffusers' UNet2DConditionModel with the same weights,
    through ComfyUI's key map ``comfy.utils.unet_to_diffusers``."""
    import comfy.utils

    net = patcher.model.diffusion_model
    c = patcher.model.model_config.unet_config
    per_level = c["num_res_blocks"]
    assert len(set(per_level)) == 1 and max(c["transformer_depth"]) <= 1 and c["transformer_depth_middle"] == 1
    attention = [c["transformer_depth"][i * per_level[i]] > 0 for i in range(len(c["channel_mult"]))]
    widths = [c["model_channels"] * m for m in c["channel_mult"]]
    heads = [c["num_heads"] if c["num_head_channels"] == -1 else w // c["num_head_channels"] for w in widths]
    unet = UNet2DConditionModel(
        sample_size=c["image_size"], in_channels=c["in_channels"], out_channels=c["out_channels"],
        block_out_channels=tuple(widths), layers_per_block=per_level[0], cross_attention_dim=c["context_dim"],
        attention_head_dim=tuple(heads), use_linear_projection=c["use_linear_in_transformer"],
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attention),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attention)),
    )
    comfy_weights = net.state_dict()
    keys = comfy.utils.unet_to_diffusers(c)
    unet.load_state_dict({k: comfy_weights[keys[k]].float() for k in unet.state_dict()})
    return unet.eval().requires_grad_(False)


def guided(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """threestudio's CFG: ε̂_c + s·(ε̂_c − ε̂_u)."""
    return cond + scale * (cond - uncond)


class DDPMPrior:
    """The UNet on SD's schedule with a DDIMScheduler, ε- or v-prediction."""

    def __init__(self, unet: UNet2DConditionModel, prediction_type: str = "epsilon"):
        self.unet = unet
        self.scheduler = DDIMScheduler(**SD_SCHEDULER, prediction_type=prediction_type)

    def alpha_bar(self, t: int) -> Tensor:
        return self.scheduler.alphas_cumprod[t]

    def noised(self, x: Tensor, eps: Tensor, t: int) -> Tensor:
        return self.scheduler.add_noise(x, eps, torch.full((len(x),), t))

    def outputs(self, x_t: Tensor, t: int, contexts: list[Tensor]) -> list[Tensor]:
        """The UNet's raw output for each context at x_t, told timestep t: one batched forward."""
        batch = len(x_t)
        inputs = torch.cat([x_t] * len(contexts))
        context = torch.cat([c.expand(batch, -1, -1) for c in contexts]).to(x_t)
        with torch.no_grad():
            out = self.unet(inputs, torch.full((len(inputs),), t), encoder_hidden_states=context).sample
        return list(out.chunk(len(contexts)))

    def readout(self, t: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(a, b, c, d) with ε̂ = a·out + b·x_t and x̂0 = c·out + d·x_t: how DDIMScheduler.step reads a raw output
        of its prediction_type at timestep t."""
        abar = self.alpha_bar(t)
        if self.scheduler.config.prediction_type == "v_prediction":
            return abar.sqrt(), (1 - abar).sqrt(), -(1 - abar).sqrt(), abar.sqrt()
        return torch.ones(()), torch.zeros(()), -((1 - abar) / abar).sqrt(), 1 / abar.sqrt()

    def eps_x0(self, out: Tensor, x_t: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """(ε̂, x̂0) read off a raw output at x_t."""
        a, b, c, d = self.readout(t)
        return a * out + b * x_t, c * out + d * x_t

    def eps(self, x_t: Tensor, t: int, contexts: list[Tensor]) -> list[Tensor]:
        return [self.eps_x0(o, x_t, t)[0] for o in self.outputs(x_t, t, contexts)]


class FlowPrior:
    """The UNet as a rectified-flow model with diffusers' FlowMatchEulerDiscreteScheduler (shift as SD3's 3)."""

    def __init__(self, unet: UNet2DConditionModel, shift: float = 3.0):
        self.unet = unet
        self.shift = shift
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)

    def sigma(self, index: int) -> Tensor:
        """σ of the scheduler's index-th training timestep counted from the least noise (index 0: σ ≈ 0.003)."""
        return self.scheduler.sigmas[len(self.scheduler.timesteps) - 1 - index]

    def eps(self, x: Tensor, noise: Tensor, index: int, contexts: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """(x_σ, [ε̂ per context]): ε̂ = x_σ + (1 − σ)·v̂, since x_σ = x0 + σ·v for the velocity v = ε − x0."""
        timestep = self.scheduler.timesteps[len(self.scheduler.timesteps) - 1 - index]
        x_sigma = self.scheduler.scale_noise(x, timestep.repeat(len(x)), noise)
        sigma = self.sigma(index)
        inputs = torch.cat([x_sigma] * len(contexts))
        context = torch.cat([c.expand(len(x), -1, -1) for c in contexts]).to(x)
        with torch.no_grad():
            v = self.unet(inputs, timestep.repeat(len(inputs)), encoder_hidden_states=context).sample
        return x_sigma, [x_sigma + (1 - sigma) * vi for vi in v.chunk(len(contexts))]


def float64_twin(prior: DDPMPrior | FlowPrior) -> DDPMPrior | FlowPrior:
    """The same prior in float64, its noise schedule recomputed from the definition (SD's scaled-linear β, SD3's
    shifted σ): the exact values against which the parity tests measure what float32 rounding does."""
    unet = copy.deepcopy(prior.unet).double()
    n = SD_SCHEDULER["num_train_timesteps"]
    if isinstance(prior, FlowPrior):
        twin = FlowPrior(unet, prior.shift)
        s = torch.arange(n, 0, -1, dtype=torch.float64) / n
        twin.scheduler.sigmas = prior.shift * s / (1 + (prior.shift - 1) * s)
        twin.scheduler.timesteps = twin.scheduler.sigmas * n
        return twin
    twin = DDPMPrior(unet, prior.scheduler.config.prediction_type)
    betas = torch.linspace(SD_SCHEDULER["beta_start"] ** 0.5, SD_SCHEDULER["beta_end"] ** 0.5, n,
                           dtype=torch.float64) ** 2
    twin.scheduler.alphas_cumprod = torch.cumprod(1 - betas, 0)
    return twin


def sds_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, cond: Tensor, uncond: Tensor,
                 guidance_scale: float) -> Tensor:
    """threestudio SDS: w(t)·(ε̂ − ε), ε̂ = its CFG at x_t = add_noise(x, ε, t), w = 1 − ᾱ_t ("sds")."""
    e_c, e_u = prior.eps(prior.noised(x, eps, t), t, [cond, uncond])
    return (1 - prior.alpha_bar(t)) * (guided(e_c, e_u, guidance_scale) - eps)


def flow_sds_gradient(prior: FlowPrior, x: Tensor, index: int, eps: Tensor, cond: Tensor, uncond: Tensor,
                      guidance_scale: float) -> Tensor:
    """SDS on a flow model with uniform weighting: ε̂ − ε, ε̂ = CFG of the ε read off the velocity."""
    _, (e_c, e_u) = prior.eps(x, eps, index, [cond, uncond])
    return guided(e_c, e_u, guidance_scale) - eps


def nfsd_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, cond: Tensor, uncond: Tensor, negative: Tensor,
                  scale: float) -> Tensor:
    """NFSD eq. 7: w(t)·(δ_D + s·δ_C) with δ_C = ε̂_c − ε̂_u and (eq. 6) δ_D = ε̂_u for t < 200, else ε̂_u − ε̂_neg;
    w = 1 − ᾱ_t as SDS. ε enters only through x_t."""
    e_c, e_u, e_neg = prior.eps(prior.noised(x, eps, t), t, [cond, uncond, negative])
    domain = e_u if t < 200 else e_u - e_neg
    return (1 - prior.alpha_bar(t)) * (domain + scale * (e_c - e_u))


def sdi_inversion_timesteps(prior: DDPMPrior, t: int, steps: int, delta: int = 0) -> list[int]:
    """threestudio's SDI grid: timestep 0 (its start, ᾱ_0), the scheduler's "leading" timesteps below t (steps_offset
    1: 1, 101, 201, … for 10 steps), then min(t + δ, 999)."""
    prior.scheduler.set_timesteps(steps)
    below = sorted(int(s) for s in prior.scheduler.timesteps if s < t)
    return [0, *below, min(t + delta, prior.scheduler.config.num_train_timesteps - 1)]


def sdi_invert(prior: DDPMPrior, x: Tensor, t: int, cond: Tensor, uncond: Tensor, guidance_scale: float = -7.5,
               steps: int = 10, eta: float = 0.0, step_noise: list[Tensor] | None = None,
               delta: int = 0) -> tuple[Tensor, Tensor]:
    """threestudio SDI ``invert_noise``: the clean latent x, taken as the sample at timestep 0, walked up the grid by
    deterministic DDIM with x̂0 and ε̂ from the CFG prediction; each step adds η·√Var·step_noise[k], Var =
    scheduler._get_variance(next, current) = (1 − ᾱ_cur)/(1 − ᾱ_next)·(1 − ᾱ_next/ᾱ_cur), DDPM's posterior
    variance between the two levels. Returns (x_inv, κ) with κ = (x_inv − √ᾱ·x)/√(1 − ᾱ) at the last level.

    threestudio tells the UNet −99 at the first step (its grid start, below the table); this reference tells it 0,
    the level whose ᾱ both use."""
    grid = sdi_inversion_timesteps(prior, t, steps, delta)
    state = x
    for k, (current, nxt) in enumerate(zip(grid, grid[1:])):
        eps, x0 = prior.eps_x0(guided(*prior.outputs(state, current, [cond, uncond]), guidance_scale), state, current)
        abar_next = prior.alpha_bar(nxt)
        state = abar_next.sqrt() * x0 + (1 - abar_next).sqrt() * eps
        if eta > 0:
            state = state + eta * prior.scheduler._get_variance(nxt, current).sqrt() * step_noise[k]
    abar = prior.alpha_bar(grid[-1])
    return state, (state - abar.sqrt() * x) / (1 - abar).sqrt()


def sdi_model_input(prior: DDPMPrior, x: Tensor, t: int, x_inv: Tensor, kappa: Tensor, variant: str = "inverted",
                    eta: float = 0.0, end_noise: Tensor | None = None) -> Tensor:
    """The latent SDI gives the UNet, told t. variant "inverted" (threestudio): x_inv itself (DDPM scale, level t + δ);
    "renoise" (paper, Alg. 2): add_noise(x, κ, t). ``end_noise`` adds Alg. 2's H(t) = η·√(1 − ᾱ_t)·ε_H."""
    x_t = x_inv if variant == "inverted" else prior.noised(x, kappa, t)
    if end_noise is not None:
        x_t = x_t + eta * (1 - prior.alpha_bar(t)).sqrt() * end_noise
    return x_t


def sdi_update(prior: DDPMPrior, x: Tensor, t: int, cond: Tensor, uncond: Tensor, x_t: Tensor,
               guidance_scale: float = 7.5) -> Tensor:
    """SDI's update x − x̂0 (threestudio: latents − target), x̂0 read off the CFG prediction at x_t told t."""
    out = guided(*prior.outputs(x_t, t, [cond, uncond]), guidance_scale)
    return x - prior.eps_x0(out, x_t, t)[1]


def lmc_gradient(prior: DDPMPrior, x: Tensor, t: int, eps: Tensor, cond: Tensor, uncond: Tensor, bias: Tensor,
                 omega: float) -> Tensor:
    """LMC-SDS (L_lmc + ω·L_cond)/ω: L_lmc = b̂ − ẑ_t (eq. 9, no weighting), ẑ_t the unconditional x0-prediction
    at x_t = add_noise(x, ε, t); L_cond = ε̂_c − ε̂_u (eq. 6b); ω in the paper's (standard) CFG form, eq. 5."""
    x_t = prior.noised(x, eps, t)
    (e_c, _), (e_u, z_hat) = (prior.eps_x0(o, x_t, t) for o in prior.outputs(x_t, t, [cond, uncond]))
    return (bias - z_hat + omega * (e_c - e_u)) / omega
