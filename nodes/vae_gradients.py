"""A loaded VAE's encoder made usable for autograd, the ComfyUI way (weight wrappers on a clone)."""
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

import comfy.taesd.taesd
from comfy.model_patcher import ModelPatcher

FORWARD_AND_BACKWARD = 3
"""The encoder's forward and backward per image, in units of ComfyUI's forward-only estimate
(``VAE.memory_used_encode``): on the SD VAE the activations autograd keeps are 1.7 of them
(tests/test_comfyui_memory.py measures it), and the backward's own buffers are within one more."""


def _identity(weight: Tensor) -> Tensor:
    return weight


class _Encoder(nn.Module):
    def __init__(self, vae_model: nn.Module):
        super().__init__()
        self.vae_model = vae_model

    def forward(self, x: Tensor) -> Tensor:
        return self.vae_model.encode(x)


def unwrapped_parameters(module: nn.Module) -> list[str]:
    """Parameters of modules outside ComfyUI's casting ops, which weight wrappers do not reach (the Wan VAE's
    RMS_norm gamma)."""
    return [f"{prefix}.{name}".lstrip(".") for prefix, m in module.named_modules()
            if not hasattr(m, "comfy_cast_weights") for name, _ in m.named_parameters(recurse=False)]


def encoder_input_shape(vae, height: int, width: int) -> tuple[int, ...]:
    """The shape the VAE encodes one image in: [1, 3, H, W], or one frame [1, 3, 1, H, W] for a video VAE."""
    return (1, 3, 1, height, width) if vae.latent_dim == 3 else (1, 3, height, width)


def encoder_memory(vae, images: int, height: int, width: int) -> int:
    """Bytes the encoder's forward and backward need for ``images`` images of height × width pixels."""
    return images * FORWARD_AND_BACKWARD * vae.memory_used_encode(encoder_input_shape(vae, height, width),
                                                                   vae.vae_dtype)


def check_vae_fits(vae, model: ModelPatcher) -> None:
    """The VAE encodes to the model's latent space: as many channels, at the same 8 pixels per latent pixel.
    (Two families with equal channels, SD1.x and SDXL, cannot be told apart from the VAE.)"""
    latent_format = model.get_model_object("latent_format")
    channels, scale = vae.latent_channels, vae.downscale_ratio
    if vae.latent_dim != 2 or not isinstance(scale, int):
        raise ValueError("vae: it is a video or audio VAE; connect the image VAE of the model's own checkpoint.")
    if channels != latent_format.latent_channels or scale != 8:
        raise ValueError(f"vae: it encodes to {channels}-channel latents at 1/{scale} of the image's size, but the "
                         f"loss's model works on {latent_format.latent_channels}-channel latents at 1/8 "
                         f"({type(latent_format).__name__}); connect the VAE of the model's own checkpoint.")


@contextmanager
def differentiable_encoder(vae, model: ModelPatcher) -> Iterator[tuple[ModelPatcher, Callable[[Tensor], Tensor]]]:
    """Yields the VAE patcher to load with the model and encode(images [N, 3, h, w] in 0..1) → model-space
    latents on the images' device, differentiable in the images, for use once that patcher is loaded. A video
    VAE (Wan's, which Qwen-Image uses) encodes each image as a clip of one frame: latents [N, C, 1, h/8, w/8].

    Every weight of a clone of the VAE's patcher gets an identity wrapper, so ComfyUI copies the
    (inference-mode) weights at each forward into ordinary tensors that autograd may save. The clone
    is detached afterwards, which removes the wrappers again. The few parameters outside ComfyUI's ops
    (the Wan VAE's norms) are cloned into ordinary tensors for each forward instead.
    """
    if isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD):
        raise ValueError("vae: TAESD cannot pass gradients to the pixels (its weights are plain parameters); "
                         "load the model's full VAE (the checkpoint's VAE output, or VAE Loader).")
    patcher = vae.patcher.clone()
    for name, _ in patcher.model.named_parameters():
        patcher.add_weight_wrapper(name, _identity)
    process_in = model.get_model_object("latent_format").process_in
    encoder = _Encoder(vae.first_stage_model)
    unwrapped = unwrapped_parameters(encoder)

    def encode(images: Tensor) -> Tensor:
        x = vae.process_input(images).to(device=vae.device, dtype=vae.vae_dtype)
        if vae.latent_dim == 3:
            x = x.unsqueeze(2)
        plain = {name: encoder.get_parameter(name).clone() for name in unwrapped}
        return process_in(torch.func.functional_call(encoder, plain, (x,)).to(images.device, torch.float32))

    try:
        yield patcher, encode
    finally:
        patcher.detach()
