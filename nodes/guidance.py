"""Guidance-distilled models (Flux dev, HunyuanVideo): the guidance scale is an input of the network, so real CFG
on top of it guides twice. The loss nodes say so in the log; see docs/flux.md."""
import logging

from comfy.model_patcher import ModelPatcher

TOOLTIP = (" Guidance-distilled models (Flux dev) are already guided by the prompts' FluxGuidance: use cfg 1 with "
           "FluxGuidance on the positive, or real CFG with FluxGuidance 1 on every prompt (docs/flux.md).")
"""Appended to the tooltips of the loss nodes' cfg inputs and of DDIM-Invert Noise's inversion_cfg."""


def embeds_guidance(model: ModelPatcher) -> bool:
    """True for a model distilled to take the guidance scale as an input: ComfyUI builds its guidance embedder when
    the config's guidance_embed is set (Flux dev, HunyuanVideo; not Flux schnell, Chroma or Lumina2)."""
    params = getattr(model.get_model_object("diffusion_model"), "params", None)
    return bool(getattr(params, "guidance_embed", False))


def compounding_guidance(model: ModelPatcher, node: str, scales: dict[str, float],
                         conditionings: dict[str, list]) -> str | None:
    """What to tell the user when real CFG (any of ``scales`` ≠ 1) runs on a guidance-distilled model whose prompts
    carry another guidance than 1; None otherwise."""
    real = {name: scale for name, scale in scales.items() if scale != 1}
    if not real or not embeds_guidance(model):
        return None
    embedded = {entry[1].get("guidance") for cond in conditionings.values() if cond for entry in cond}
    if embedded == {1.0}:
        return None
    shown = ", ".join("not set (ComfyUI embeds the model's default, 3.5 for Flux dev)" if g is None else f"{g:g}"
                      for g in sorted(embedded, key=lambda g: -1 if g is None else g))
    settings = ", ".join(f"{name} {scale:g}" for name, scale in real.items())
    return (f"{node}: this model is guidance-distilled (it takes the guidance scale as an input, as Flux dev does). "
            f"Each branch is already guided by its prompt's guidance ({shown}), and {settings} applies real CFG on "
            "top, so the two compound (to about their product if the distillation were exact). For the scale you "
            "set, put FluxGuidance 1 on every prompt; or set cfg 1 and FluxGuidance on the positive prompt (half "
            "the model calls, but only scales the model was distilled for). See docs/flux.md.")


def warn_if_compounding(model: ModelPatcher, node: str, scales: dict[str, float], conditionings: dict[str, list]):
    message = compounding_guidance(model, node, scales, conditionings)
    if message:
        logging.warning(message)
