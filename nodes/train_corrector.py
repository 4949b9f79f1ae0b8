"""Training an LMC corrector for a loaded model: the "Train LMC Corrector" node and the command line.

Both call ``train_for_model``: triplets (z, ẑ_t, t) from the model's unconditional branch through the
pack's evaluation path, then a closed-form spectral fit or U-Net training, then a safetensors file.
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

import comfy.model_management
import comfy.utils
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..distill import ddim_sample
from ..distill.corrector import collect_triplets, fit_spectral, new_unet, train_unet
from ..distill.corrector_file import save_corrector
from . import correctors
from .evaluation import run_with_model
from .plot import curve_image
from .types import CATEGORY, LMCCorrectorType

T_RANGE = (0.02, 0.98)


def folder_images(folder: str, size: int) -> torch.Tensor:
    """IMAGE [N, size, size, 3] of every image file in folder, centre-cropped and resized."""
    if not Path(folder).is_dir():
        raise ValueError(f"folder: {folder} is not a folder; give the full path of a folder of images.")
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})
    if not paths:
        raise ValueError(f"folder: no .png/.jpg/.webp images in {folder}.")
    images = [ImageOps.fit(Image.open(p).convert("RGB"), (size, size)) for p in paths]
    return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images]))


def train_for_model(model: ModelPatcher, unconditional: list, latents: torch.Tensor | None, *, kind: str,
                    pairs: int, steps: int, seed: int, filename: str, sample_count: int = 16,
                    sample_size: int = 64, progress=None) -> tuple[Path, list[float]]:
    """Fit or train a corrector on the model's unconditional predictions; returns its file and L_k per step.

    latents: raw VAE-space latents of the user's images, or None to let the model sample
    ``sample_count`` latents itself (DDIM, 50 steps). progress(phase, done, total) reports each phase
    ("sampling", "collecting", "training"); an exception from it (an interrupt) while training still
    saves what the U-Net has learned.
    """
    def report(phase):
        return None if progress is None else lambda done, total: progress(phase, done, total)

    latent_format = model.get_model_object("latent_format")
    generator = torch.Generator().manual_seed(seed)
    found = {}

    def collect(denoiser, x):
        if latents is None:
            x = ddim_sample(denoiser, torch.randn(x.shape, generator=generator).to(x), 50,
                            progress=report("sampling"))
        found["triplets"] = collect_triplets(denoiser, x, pairs, generator, T_RANGE, progress=report("collecting"))
        return x

    start = latents
    if start is None:
        start = torch.zeros(sample_count, latent_format.latent_channels, sample_size, sample_size)
    run_with_model(model, {"positive": unconditional}, start, seed, collect)
    data = found["triplets"]

    def save(corrector, losses: list[float]) -> Path:
        path = correctors.user_folder() / filename
        save_corrector(path, corrector, latent_format=type(latent_format).__name__, t_range=T_RANGE,
                       steps=len(losses), final_loss=losses[-1] if losses else float("nan"), images=len(start))
        return path

    if kind == "spectral":
        return save(fit_spectral(data.z, data.z_hat, data.t, t_range=T_RANGE), []), []
    with torch.inference_mode(False):
        net, losses = new_unet(latent_format.latent_channels, seed), []

    training = report("training")

    def on_step(step, loss):
        losses.append(loss)
        if training is not None:
            training(step + 1, steps)

    try:
        train_unet(net, data, steps, seed=seed, on_step=on_step)
    finally:
        path = save(net, losses)
    return path, losses


class TrainLMCCorrector(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillTrainLMCCorrector",
            display_name="Train LMC Corrector",
            category=CATEGORY,
            description="Makes an LMC corrector for this model's latent space from its own unconditional "
                        f"predictions and saves it to models/{correctors.FOLDER}/. Give it images (with the VAE) "
                        "or a folder of images; with neither, the model samples its own latents.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model the corrector is for (its latent space and its bias)."),
                io.Conditioning.Input("unconditional", tooltip="The unconditional prompt: CLIP Text Encode of an "
                                                               "empty string with this model's CLIP."),
                io.Combo.Input("kind", options=["spectral", "unet"], default="spectral",
                               tooltip="'spectral': per band and t a gain, fitted in closed form in seconds. "
                                       "'unet': the paper's small U-Net, trained for `steps`."),
                io.String.Input("filename", default="my_model_corrector.safetensors",
                                tooltip=f"File name in models/{correctors.FOLDER}/ (no folders)."),
                io.Int.Input("pairs_per_latent", default=64, min=1, max=4096,
                             tooltip="Training triplets per latent, each from a pair of model calls (ε and −ε) "
                                     "at a random t in [0.02, 0.98]."),
                io.Int.Input("steps", default=3000, min=1, max=1000000,
                             tooltip="U-Net training steps (Adam, batch 64); ignored by the spectral kind."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                             tooltip="Seeds the noise, the timesteps and the training."),
                io.Image.Input("images", optional=True, tooltip="Images of the kind you will optimize; needs vae."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE, to encode images or the folder's."),
                io.String.Input("folder", default="", optional=True,
                                tooltip="A folder of images to use instead of (or with no) images input; they are "
                                        "centre-cropped to image_size."),
                io.Int.Input("image_size", default=512, min=64, max=4096, step=8, optional=True,
                             tooltip="Pixel size of folder images, and of the model's own samples when neither "
                                     "images nor folder is given."),
            ],
            outputs=[LMCCorrectorType.Output(display_name="corrector"),
                     io.Image.Output(display_name="loss_curve", tooltip="L_k per training step (U-Net).")],
        )

    @classmethod
    def validate_inputs(cls, filename: str, **_) -> bool | str:
        try:
            correctors.check_name(filename)
        except ValueError as e:
            return str(e)
        return filename.endswith(".safetensors") or f"filename: {filename} must end in .safetensors."

    @classmethod
    def execute(cls, model, unconditional, kind, filename, pairs_per_latent, steps, seed, images=None, vae=None,
                folder="", image_size=512) -> io.NodeOutput:
        if folder:
            images = folder_images(folder, image_size)
        if images is not None and vae is None:
            raise ValueError("vae: images (or a folder) need the model's VAE to become latents; connect it.")
        latents = vae.encode(images[..., :3]) if images is not None else None
        pbar = comfy.utils.ProgressBar(1)

        def progress(phase, done, total):
            pbar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        correctors.check_name(filename)
        _, losses = train_for_model(model, unconditional, latents, kind=kind, pairs=pairs_per_latent, steps=steps,
                                    seed=seed, filename=filename, sample_size=image_size // 8, progress=progress)
        return io.NodeOutput(correctors.load(filename), curve_image(losses, "L_k per training step"))
