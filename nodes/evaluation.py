"""The pack's one way to evaluate a loaded ComfyUI model: inside a guider, as KSampler does.

``run_with_model`` runs a function inside ``CFGGuider.sample`` through a custom Sampler, so model
loading, LoRA/weight patches, hooks, ControlNets, area/mask conds and the active model_sampling are
prepared exactly as for sampling. ``ComfyDenoiser`` then evaluates every branch of a step in one
``calc_cond_batch`` call and combines positive/negative with ``cfg_function``, so pre- and post-CFG
patches apply — ``sampling_function`` with extra branches.
"""
import math
from typing import Callable, Sequence

import torch
from torch import Tensor

import comfy.samplers
from comfy.model_patcher import ModelPatcher


class ComfyDenoiser:
    """distill.Denoiser over a guider's processed conds (keys: positive, negative, any extra branch)."""

    def __init__(self, guider: comfy.samplers.CFGGuider, model_options: dict):
        self.guider = guider
        self.model_options = model_options
        self.model_sampling = guider.inner_model.model_sampling
        self.sigmas = self.model_sampling.sigmas.detach().float().cpu()

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) read off the model's own noise_scaling: x_σ = a·x + b·ε for every model_sampling type."""
        one = torch.ones(len(sigma), 1, device=sigma.device, dtype=sigma.dtype)
        a = self.model_sampling.noise_scaling(sigma, torch.zeros_like(one), one)
        b = self.model_sampling.noise_scaling(sigma, one, torch.zeros_like(one))
        return a.flatten(), b.flatten()

    def __call__(self, x_noisy: Tensor, sigma: Tensor, cfg: float, extra: Sequence[str] = ()) -> dict[str, Tensor]:
        model, conds, options = self.guider.inner_model, self.guider.conds, self.model_options
        skip_uncond = math.isclose(cfg, 1.0) and not options.get("disable_cfg1_optimization", False)
        uncond = None if skip_uncond and "negative" not in extra else conds.get("negative")
        names = [n for n in extra if n not in ("positive", "negative")]
        branches = [conds.get("positive"), uncond] + [conds[n] for n in names]
        if "sampler_calc_cond_batch_function" in options:
            args = {"conds": branches, "input": x_noisy, "sigma": sigma, "model": model, "model_options": options}
            out = options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(model, branches, x_noisy, sigma, options)
        for fn in options.get("sampler_pre_cfg_function", []):
            args = {"conds": branches, "conds_out": out, "cond_scale": cfg, "timestep": sigma,
                    "input": x_noisy, "sigma": sigma, "model": model, "model_options": options}
            out = fn(args)
        x0 = {"positive": out[0]} | ({"negative": out[1]} if uncond is not None else {}) | dict(zip(names, out[2:]))
        x0["cfg"] = comfy.samplers.cfg_function(
            model, out[0], out[1], cfg, x_noisy, sigma, model_options=options, cond=branches[0], uncond=uncond
        )
        return x0


class _RunSampler(comfy.samplers.Sampler):
    """A Sampler whose 'sampling' is an arbitrary function of (denoiser, model-space latent)."""

    def __init__(self, run: Callable[[ComfyDenoiser, Tensor], Tensor]):
        self.run = run

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        return self.run(ComfyDenoiser(model_wrap, extra_args["model_options"]), latent_image)


def run_with_model(model: ModelPatcher, conds: dict[str, list], latent: Tensor, seed: int,
                   run: Callable[[ComfyDenoiser, Tensor], Tensor]) -> Tensor:
    """Call run(denoiser, model-space latent) inside ComfyUI's sampling machinery; returns its raw-space result.

    ``conds`` maps branch names to CONDITIONING lists; "positive" is required, "negative" is the
    unconditional branch of CFG. The latent enters model space with ``process_latent_in`` (except an
    all-zero latent, as in KSampler) and run's result leaves through ``process_latent_out``.
    """
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({k: v for k, v in conds.items() if v is not None})
    ms = model.get_model_object("model_sampling")
    sigmas = torch.stack([ms.sigma_max, ms.sigma_min]).float().cpu()
    return guider.sample(torch.zeros_like(latent), latent, _RunSampler(run), sigmas, seed=seed)
