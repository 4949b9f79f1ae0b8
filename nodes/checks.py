"""Early, named checks of node inputs: widget values against the node's own schema, tensor shapes, models.

ComfyUI 0.3.64 checks a widget's min/max at /prompt only for constant values of inputs that the
node's validate_inputs does not take, never NaN, and never the options of a V3 combo; ``check_widgets``
checks all of them first thing in execute, and ``widget_message`` gives validate_inputs the same words.
"""
import math
from numbers import Real

from torch import Tensor

import comfy.sample
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

SHOWN_OPTIONS = 12


def _number_problem(spec, value) -> str | None:
    whole = isinstance(spec, io.Int.Input)
    kind = "a whole number" if whole else "a number"
    low = -math.inf if spec.min is None else spec.min
    high = math.inf if spec.max is None else spec.max
    if isinstance(value, bool) or not isinstance(value, int if whole else Real):
        return f"{value!r} is not {kind}; set {kind} from {low} to {high}."
    if not math.isfinite(value):
        return f"{value} is not a finite number; set {kind} from {low} to {high}."
    if not low <= value <= high:
        return f"{value} is outside its range; set {kind} from {low} to {high}."
    return None


def _combo_problem(spec, value) -> str | None:
    if value in spec.options:
        return None
    shown = ", ".join(map(repr, spec.options[:SHOWN_OPTIONS]))
    more = f" (and {len(spec.options) - SHOWN_OPTIONS} more)" if len(spec.options) > SHOWN_OPTIONS else ""
    return f"{value!r} is not one of its options; pick one of {shown}{more}."


def widget_problem(spec, value) -> str | None:
    """What is wrong with a widget value, by its declared type, range and options; None when it is fine."""
    if isinstance(spec, (io.Float.Input, io.Int.Input)):
        return _number_problem(spec, value)
    if isinstance(spec, io.Combo.Input):
        return _combo_problem(spec, value)
    if isinstance(spec, io.Boolean.Input) and not isinstance(value, bool):
        return f"{value!r} is not true or false."
    if isinstance(spec, io.String.Input) and not isinstance(value, str):
        return f"{value!r} is not text."
    return None


def widget_message(node: type[io.ComfyNode], **values) -> str | None:
    """'input: problem' for the first of these values that breaks node's schema; None if none does.
    None values (inputs linked to another node, during validation; optional inputs left out) pass."""
    for spec in node.define_schema().inputs:
        value = values.get(spec.id)
        problem = None if value is None else widget_problem(spec, value)
        if problem:
            return f"{spec.id}: {problem}"
    return None


def check_widgets(node: type[io.ComfyNode], arguments: dict) -> None:
    """Raises for the first widget value among execute's arguments (pass ``locals()``) that breaks node's schema."""
    message = widget_message(node, **{k: v for k, v in arguments.items() if k != "cls"})
    if message:
        raise ValueError(message)


def describe(x) -> str:
    if isinstance(x, Tensor):
        return f"a {x.ndim}-D tensor of shape [{', '.join(map(str, x.shape))}]"
    return f"a {type(x).__name__}, not a tensor"


LATENT_SOURCES = ("Empty Latent Image for SD1.x/SDXL, EmptySD3LatentImage for SD3/Flux/Lumina2/Qwen-Image, Empty "
                  "Hunyuan Latent Video for Wan")


def latent_rank(model: ModelPatcher) -> int:
    """The dimensions of this model's latents: 4 [B, C, H, W], or 5 [B, C, T, H, W] for latents with a time axis."""
    return 2 + model.get_model_object("latent_format").latent_dimensions


def check_latent(model: ModelPatcher, latent, input_name: str = "latent") -> Tensor:
    """The samples of a LATENT for this model as KSampler takes them (comfy.sample.fix_empty_latent_channels):
    [B, C, H, W] or, for a model whose latents have a time axis, [B, C, T, H, W], with C its latent channels;
    an all-zero latent (an empty-latent node's) takes the model's channel count, and an image latent
    [B, C, H, W] given to a video model (Wan, Qwen-Image) becomes its one frame [B, C, 1, H, W]."""
    samples = latent.get("samples") if isinstance(latent, dict) else latent
    family = type(model.model.model_config).__name__
    rank = latent_rank(model)
    if rank not in (4, 5):
        raise ValueError(f"{input_name}: this model ({family}) works on {rank}-D latents (audio); this pack "
                         "optimizes image and video latents. Use a model for images or video.")
    if not isinstance(samples, Tensor) or samples.ndim not in (4, rank) or not samples.is_floating_point():
        axes = "[batch, channels, frames, height, width]" if rank == 5 else "[batch, channels, height, width]"
        raise ValueError(
            f"{input_name}: its samples are {describe(samples)}; this model ({family}) works on {rank}-D latents "
            f"{axes}. Connect a latent made for it: an empty latent of its family ({LATENT_SOURCES}) or VAE "
            "Encode with the model's own VAE.")
    if 0 in samples.shape:
        raise ValueError(f"{input_name}: it is empty (shape {list(samples.shape)}); give it a batch of at least "
                         "one latent with a height and width.")
    expected = model.get_model_object("latent_format").latent_channels
    fixed = comfy.sample.fix_empty_latent_channels(model, samples)
    if fixed.shape[1] != expected:
        raise ValueError(
            f"{input_name}: this latent has {samples.shape[1]} channels (shape {list(samples.shape)}) but the "
            f"model ({family}) works on {expected}. Make the latent for this model: an empty latent of its family "
            f"({LATENT_SOURCES}) or VAE Encode with the model's own VAE.")
    return fixed


def check_image(image, input_name: str = "image") -> Tensor:
    """An IMAGE [B, H, W, C] with B ≥ 1, H, W ≥ 8 (one latent pixel) and C = 3 or 4 (RGB, RGBA)."""
    if not isinstance(image, Tensor) or image.ndim != 4 or not image.is_floating_point():
        raise ValueError(f"{input_name}: it is {describe(image)}; an IMAGE is [batch, height, width, channels]. "
                         "Connect an image (Load Image, VAE Decode).")
    b, h, w, c = image.shape
    if c not in (3, 4):
        raise ValueError(
            f"{input_name}: it has {c} channel{'s' if c != 1 else ''} (shape {list(image.shape)}); this node needs "
            "RGB images. A mask or a grey image becomes RGB with Convert Mask to Image.")
    if b < 1 or h < 8 or w < 8:
        raise ValueError(f"{input_name}: shape {list(image.shape)} is empty or smaller than 8×8 pixels; give it "
                         "at least one image of 8×8 pixels or more.")
    return image


def check_mask_input(mask, batch: int, input_name: str = "mask", frames: bool = False) -> Tensor:
    """A MASK [H, W] or [B, H, W] (a latent's noise_mask also [B, 1, H, W]): one for all images or one per image;
    for a latent with a time axis (``frames``) one per frame, resized along time as KSampler resizes it."""
    if (not isinstance(mask, Tensor) or not 2 <= mask.ndim <= 4 or (mask.ndim == 4 and mask.shape[1] != 1)
            or not mask.is_floating_point() or 0 in mask.shape):
        raise ValueError(f"{input_name}: it is {describe(mask)}; a mask is [height, width] or [batch, height, width]. "
                         "Connect a mask: Load Image's MASK output, Solid Mask, or Set Latent Noise Mask's.")
    if mask.ndim > 2 and len(mask) not in (1, batch) and not frames:
        images = f"{batch} image{'s' if batch != 1 else ''}"
        raise ValueError(f"{input_name}: it holds {len(mask)} masks for {images}; give one mask for all of them or "
                         "one per image.")
    return mask


def check_conditioning(input_name: str, cond: list | None, positive: list, positive_name: str = "positive") -> None:
    """A branch's CONDITIONING must exist and be as wide as positive's (the same text encoder)."""
    if not cond:
        raise ValueError(f"{input_name}: no conditioning is connected; connect a CLIP Text Encode to it.")
    width, expected = cond[0][0].shape[-1], positive[0][0].shape[-1]
    if width != expected:
        raise ValueError(
            f"{input_name}: its conditioning is {width} wide but {positive_name}'s is {expected}; encode it with the "
            f"same CLIP (the same checkpoint's text encoder) as {positive_name}."
        )
