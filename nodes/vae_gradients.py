"""A loaded VAE's encoder made usable for autograd, the ComfyUI way (weight wrappers on a clone)."""
from contextlib import contextmanager
from typing import Callable, Iterator

from torch import Tensor

import comfy.model_management
import comfy.taesd.taesd
from comfy.model_patcher import ModelPatcher


def _identity(weight: Tensor) -> Tensor:
    return weight


@contextmanager
def differentiable_encoder(vae, model: ModelPatcher) -> Iterator[Callable[[Tensor], Tensor]]:
    """Yields encode(images [N, 3, h, w] in 0..1) → model-space latents, differentiable in the images.

    Every weight of a clone of the VAE's patcher gets an identity wrapper, so ComfyUI copies the
    (inference-mode) weights at each forward into ordinary tensors that autograd may save. The clone
    is detached afterwards, which removes the wrappers again.
    """
    if isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD):
        raise ValueError("vae: TAESD cannot pass gradients to the pixels (its weights are plain parameters); "
                         "load the model's full VAE (the checkpoint's VAE output, or VAE Loader).")
    patcher = vae.patcher.clone()
    for name, _ in patcher.model.named_parameters():
        patcher.add_weight_wrapper(name, _identity)
    comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    process_in = model.get_model_object("latent_format").process_in

    def encode(images: Tensor) -> Tensor:
        x = vae.process_input(images).to(device=vae.device, dtype=vae.vae_dtype)
        return process_in(vae.first_stage_model.encode(x).float())

    try:
        yield encode
    finally:
        patcher.detach()
