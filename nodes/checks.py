"""Early, named checks of node inputs against the model they will be used with."""
from torch import Tensor

from comfy.model_patcher import ModelPatcher


def check_latent_fits(model: ModelPatcher, samples: Tensor, input_name: str = "latent") -> None:
    expected = model.get_model_object("latent_format").latent_channels
    if samples.ndim < 4 or samples.shape[1] != expected:
        family = type(model.model.model_config).__name__
        got = samples.shape[1] if samples.ndim >= 2 else "no"
        raise ValueError(
            f"{input_name}: this latent has {got} channels but the model ({family}) works on {expected}. "
            "Make the latent for this model: an empty latent of its family (Empty Latent Image for SD1.x/SDXL, "
            "EmptySD3LatentImage for SD3/Flux) or VAE Encode with the model's own VAE."
        )


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
