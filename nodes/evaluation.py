"""The pack's one way to evaluate a loaded ComfyUI model: inside a guider, as KSampler does.

``run_with_model`` runs a function inside ``CFGGuider.sample`` through a custom Sampler, so model
loading, LoRA/weight patches, hooks, ControlNets, area/mask conds and the active model_sampling are
prepared exactly as for sampling. ``ComfyDenoiser`` then evaluates every branch of a step in one
``calc_cond_batch`` call and combines each guided pair with ``cfg_function``, so pre- and post-CFG
patches apply — ``sampling_function`` with extra branches, and with branches at other latents.
"""
import copy
from typing import Callable, Sequence

import torch
from torch import Tensor

import comfy.model_management
import comfy.model_patcher
import comfy.patcher_extension
import comfy.sampler_helpers
import comfy.samplers
from comfy.model_patcher import ModelPatcher

from ..distill.denoiser import Request

PER_LEVEL_KEYS = ("timestep_start", "timestep_end", "control", "hooks")
"""Cond entries ComfyUI applies by the batch's first timestep (ranges, ControlNet, hook keyframes)."""


def same_conditioning(a: list, b: list) -> bool:
    """Whether two CONDITIONING lists hold the same values: the same link, or e.g. two encodes of one prompt.
    Anything but tensors and plain values (a ControlNet, hooks) counts as the same only if it is the same object."""

    def same(u, v) -> bool:
        if u is v:
            return True
        if isinstance(u, torch.Tensor) and isinstance(v, torch.Tensor):
            return u.shape == v.shape and u.dtype == v.dtype and u.device == v.device and torch.equal(u, v)
        if isinstance(u, (list, tuple)) and isinstance(v, (list, tuple)):
            return type(u) is type(v) and len(u) == len(v) and all(map(same, u, v))
        if isinstance(u, dict) and isinstance(v, dict):
            return u.keys() == v.keys() and all(same(u[k], v[k]) for k in u)
        plain = (str, int, float, bool, type(None))
        return isinstance(u, plain) and isinstance(v, plain) and type(u) is type(v) and u == v

    return same(a, b)


def branch_aliases(conds: dict[str, list]) -> dict[str, str]:
    """Each branch name → the first name whose conditioning is the same (itself when none is)."""
    names = [k for k, v in conds.items() if v is not None]
    return {k: next(j for j in names if j == k or same_conditioning(conds[j], conds[k])) for k in names}


class ComfyDenoiser:
    """distill.Denoiser over a guider's processed conds (keys: positive, negative, any extra branch).

    ``aliases`` maps each branch to the first with the same conditioning: a branch pair at equal latents is
    evaluated once, so identical branches (DDS/PDS with source = target at the reference) get identical numbers,
    not two rows of a batch that may round differently.
    """

    def __init__(self, guider: comfy.samplers.CFGGuider, model_options: dict, aliases: dict[str, str] | None = None):
        self.guider = guider
        self.model_options = model_options
        self.conds = guider.conds
        self.aliases = aliases or {}
        self.model_sampling = guider.inner_model.model_sampling
        self.sigmas = self.model_sampling.sigmas.detach().float().cpu()
        self.one_t_per_batch = any(entry.get(key) is not None for cond in guider.conds.values() for entry in cond
                                   for key in PER_LEVEL_KEYS)

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) read off the model's own noise_scaling: x_σ = a·x + b·ε for every model_sampling type."""
        one = torch.ones(len(sigma), 1, device=sigma.device, dtype=sigma.dtype)
        a = self.model_sampling.noise_scaling(sigma, torch.zeros_like(one), one)
        b = self.model_sampling.noise_scaling(sigma, one, torch.zeros_like(one))
        return a.flatten(), b.flatten()

    def with_branches(self, branches: dict[str, list]) -> "ComfyDenoiser":
        """This denoiser with some branches' processed conds replaced (a camera's conditioning per item, in 3D)."""
        other = copy.copy(self)
        other.conds = self.conds | branches
        other.aliases = {k: v for k, v in self.aliases.items() if k not in branches and v not in branches}
        return other

    def __call__(self, requests: Sequence[Request], sigma: Tensor) -> list[dict[str, Tensor]]:
        model, conds, options = self.guider.inner_model, self.conds, self.model_options
        pairs = [(r, name) for r in requests for name in r.branches()]
        unique, index = self._unique(pairs)
        branches = [conds.get(name) for _, name in unique]
        x_in = requests[0].x_noisy
        moved = {i: r.x_noisy for i, (r, _) in enumerate(unique) if r.x_noisy is not x_in}
        retimed = {i: r.sigma for i, (r, _) in enumerate(unique) if r.sigma is not None}
        if moved or retimed:
            options = _with_inputs(options, moved, retimed, branches, sigma)
        if "sampler_calc_cond_batch_function" in options:
            args = {"conds": branches, "input": x_in, "sigma": sigma, "model": model, "model_options": options}
            out = options["sampler_calc_cond_batch_function"](args)
        else:
            out = comfy.samplers.calc_cond_batch(model, branches, x_in, sigma, options)
        out = [out[i] for i in index]
        branches = [conds.get(name) for _, name in pairs]
        results, start = [], 0
        for r in requests:
            names = r.branches()
            mine, mine_out = branches[start:start + len(names)], list(out[start:start + len(names)])
            start += len(names)
            level = sigma if r.sigma is None else r.sigma
            for fn in options.get("sampler_pre_cfg_function", []):
                args = {"conds": mine, "conds_out": mine_out, "cond_scale": r.cfg, "timestep": level,
                        "input": r.x_noisy, "sigma": level, "model": model, "model_options": options}
                mine_out = fn(args)
            x0 = dict(zip(names, mine_out))
            guided = "negative" in names and r.positive != "negative"
            uncond = x0["negative"] if guided else torch.zeros_like(x0[r.positive])  # as sampling_function at cfg 1
            x0["cfg"] = comfy.samplers.cfg_function(model, x0[r.positive], uncond, r.cfg, r.x_noisy, level,
                                                    model_options=options, cond=mine[0],
                                                    uncond=mine[1] if guided else None)
            results.append(x0)
        return results

    def _unique(self, pairs: list) -> tuple[list, list[int]]:
        """The (request, branch) pairs to evaluate, each branch under its alias, and for every pair its index there:
        a pair whose aliased branch was already asked for at an equal latent and noise level is not evaluated again."""
        unique, index = [], []
        for r, name in pairs:
            alias = self.aliases.get(name, name)
            found = next((i for i, (u, n) in enumerate(unique) if n == alias and u.sigma is r.sigma
                          and (u.x_noisy is r.x_noisy or torch.equal(u.x_noisy, r.x_noisy))), None)
            if found is None:
                found = len(unique)
                unique.append((r, alias))
            index.append(found)
        return unique, index


def _with_inputs(options: dict, moved: dict[int, Tensor], retimed: dict[int, Tensor], branches: list,
                 sigma: Tensor) -> dict:
    """model_options whose model function gives the branches in ``moved`` (by index) their own latent and those in
    ``retimed`` their own noise levels.

    calc_cond_batch cuts every branch's input from one latent at one σ; the wrapper replaces the chunks of the
    moved branches by the same cut (ComfyUI's own area handling) of their latent and the σ of the retimed ones
    (apply_model scales the input and reads the output by it), and recomputes a ControlNet's output on the new
    input, before the one batched forward.
    """
    entries = {entry["uuid"]: entry for cond in branches if cond for entry in cond}
    inner = options.get("model_function_wrapper")

    def wrapper(apply_model, args):
        order, c = args["cond_or_uncond"], args["c"]
        chunks = list(args["input"].chunk(len(order)))
        levels = list(args["timestep"].chunk(len(order)))
        uuids = c["transformer_options"]["uuids"]
        for k, (index, uuid) in enumerate(zip(order, uuids)):
            level = retimed.get(index, sigma)
            if index in moved:
                chunks[k] = comfy.samplers.get_area_and_mult(entries[uuid], moved[index], level).input_x
            if index in retimed:
                levels[k] = level.to(levels[k])
        x = torch.cat(chunks)
        args = args | {"timestep": torch.cat(levels)}
        if c.get("control") is not None:
            control = next(entries[u]["control"] for u in uuids if entries[u].get("control") is not None)
            rest = {k: v for k, v in c.items() if k != "control"}
            c = rest | {"control": control.get_control(x, args["timestep"], rest, len(order), c["transformer_options"])}
        args = args | {"input": x, "c": c}
        if inner is not None:
            return inner(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    return options | {"model_function_wrapper": wrapper}


class _RunSampler(comfy.samplers.Sampler):
    """A Sampler whose 'sampling' is an arbitrary function of (denoiser, model-space latent)."""

    def __init__(self, run: Callable[[ComfyDenoiser, Tensor], Tensor], aliases: dict[str, str]):
        self.run = run
        self.aliases = aliases

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        return self.run(ComfyDenoiser(model_wrap, extra_args["model_options"], self.aliases), latent_image)


def _loading_together(models: list[ModelPatcher], memory: int):
    """A PREPARE_SAMPLING wrapper: ComfyUI's own preparation (sampler_helpers._prepare_sampling's steps), with
    ``models`` in the same load_models_gpu call as the model and its additional models, and ``memory``
    more bytes of working memory in the estimate, so that loading one never evicts another (not even
    with --disable-smart-memory) and the room left on the device covers their work too."""

    def prepare(model: ModelPatcher, noise_shape, conds, model_options=None):
        extra, inference_memory = comfy.sampler_helpers.get_additional_models(conds, model.model_dtype())
        extra += comfy.sampler_helpers.get_additional_models_from_model_options(model_options)
        extra += model.get_nested_additional_models()
        required, minimum = comfy.sampler_helpers.estimate_memory(model, noise_shape, conds)
        comfy.model_management.load_models_gpu([model] + extra + models,
                                               memory_required=required + inference_memory + memory,
                                               minimum_memory_required=minimum + inference_memory + memory)
        return model.model, conds, extra

    def wrapper(executor, *args, **kwargs):
        """The wrappers after this one still run, around this preparation instead of ComfyUI's."""
        rest = comfy.patcher_extension.WrapperExecutor.new_executor(prepare, executor.wrappers, executor.idx + 1)
        return rest.execute(*args, **kwargs)

    return wrapper


def run_with_model(model: ModelPatcher, conds: dict[str, list], latent: Tensor, seed: int,
                   run: Callable[[ComfyDenoiser, Tensor], Tensor], also_load: Sequence[ModelPatcher] = (),
                   memory: int = 0) -> Tensor:
    """Call run(denoiser, model-space latent) inside ComfyUI's sampling machinery; returns its raw-space result.

    ``conds`` maps branch names to CONDITIONING lists; "positive" is required, "negative" is the
    unconditional branch of CFG. The latent enters model space with ``process_latent_in`` (except an
    all-zero latent, as in KSampler) and run's result leaves through ``process_latent_out``; its shape
    sizes the memory estimate. ``also_load``: other models run uses (a VAE), loaded in the same call as
    the model with ``memory`` bytes for their work.
    """
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({k: v for k, v in conds.items() if v is not None})
    if also_load:
        guider.model_options = comfy.model_patcher.create_model_options_clone(model.model_options)
        comfy.patcher_extension.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING,
                                                     "score_distillation", _loading_together(list(also_load), memory),
                                                     guider.model_options, is_model_options=True)
    ms = model.get_model_object("model_sampling")
    sigmas = torch.stack([ms.sigma_max, ms.sigma_min]).float().cpu()
    return guider.sample(torch.zeros_like(latent), latent, _RunSampler(run, branch_aliases(conds)), sigmas, seed=seed)
