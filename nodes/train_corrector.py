"""Training an LMC corrector for a loaded model: the "Train LMC Corrector" node and the command line.

Both call ``train_for_model``: triplets (z, ẑ_t, t) from the model's unconditional branch through the
pack's evaluation path, then a closed-form spectral fit or U-Net training, then a safetensors file.
"""
from pathlib import Path, PureWindowsPath

import folder_paths
import numpy as np
import torch
from PIL import Image, ImageOps

import comfy.model_management
import comfy.sample
import comfy.utils
from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..distill import ddim_sample
from ..distill.corrector import collect_triplets, fit_residual, fit_spectral, new_unet, train_unet
from ..distill.corrector_file import save_corrector
from . import correctors
from .checks import check_image, check_widgets
from .evaluation import run_with_model
from .plot import fit_image
from .types import CATEGORY, LMCCorrectorType

T_RANGE = (0.02, 0.98)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def input_directory() -> Path:
    return Path(folder_paths.get_input_directory()).resolve()


def input_folder(name: str) -> Path:
    """The folder `name` inside ComfyUI's input directory: a relative path without '..' whose every part,
    links resolved, stays inside it. Paths outside are refused before anything is looked up."""
    parts = name.replace("\\", "/").split("/")
    if "\0" in name or Path(name).is_absolute() or PureWindowsPath(name).anchor or ".." in parts:
        raise ValueError(f"folder: {name!r} is not a subfolder name; give a folder inside ComfyUI's input "
                         "directory by its name (e.g. corrector_photos), without a leading '/', a drive or '..'.")
    base = input_directory()
    folder = (base / name).resolve()
    if not folder.is_relative_to(base) or not folder.is_dir():
        raise ValueError(f"folder: there is no folder {name!r} in ComfyUI's input directory; put your images in "
                         f"input/{name}/ and give its name.")
    return folder


def folder_images(folder: Path, size: int, inside: Path | None = None) -> torch.Tensor:
    """IMAGE [N, size, size, 3] of every image file in folder, centre-cropped and resized; with `inside`,
    files whose links lead out of that folder are refused."""
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"folder: no .png/.jpg/.webp images in {folder.name}.")
    images = []
    for path in paths:
        if inside is not None and not path.resolve().is_relative_to(inside):
            raise ValueError(f"folder: {folder.name}/{path.name} links outside ComfyUI's input directory; copy the "
                             "image into the folder instead.")
        try:
            with Image.open(path) as image:
                images.append(ImageOps.fit(image.convert("RGB"), (size, size)))
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise ValueError(f"folder: {folder.name}/{path.name} is not a readable image ({e}); remove or "
                             "replace it.") from e
    return torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) / 255.0 for i in images]))


def train_for_model(model: ModelPatcher, unconditional: list, latents: torch.Tensor | None, *, kind: str,
                    pairs: int, steps: int, seed: int, filename: str, sample_count: int = 16,
                    sample_size: int = 64, progress=None,
                    overwrite: bool = False) -> tuple[Path, list[float], torch.Tensor]:
    """Fit or train a corrector on the model's unconditional predictions; returns its file, L_k per step
    (none for the spectral kind) and its relative residual on the triplets per band and t (fit_residual).

    latents: raw VAE-space latents of the user's images (image latents become one frame each for a video model),
    or None to let the model sample ``sample_count`` latents itself (DDIM, 50 steps). progress(phase, done, total)
    reports each phase ("sampling", "collecting", "training"); an exception from it (an interrupt) stops the run
    and saves nothing. The file is written whole or not at all, over an existing one only with overwrite.
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

    frames = (1,) * (latent_format.latent_dimensions - 2)  # a video model's samples: one frame each
    start = latents
    if start is None:
        start = torch.zeros(sample_count, latent_format.latent_channels, *frames, sample_size, sample_size)
    start = comfy.sample.fix_empty_latent_channels(model, start)
    run_with_model(model, {"positive": unconditional}, start, seed, collect)
    data = found["triplets"]

    def save(corrector, losses: list[float]) -> Path:
        path = correctors.user_folder() / filename
        models = correctors.what_it_models(model)
        save_corrector(path, corrector, model_family=models["model_family"], model_type=models["model_type"],
                       latent_format=models["latent_format"], t_range=T_RANGE, steps=len(losses),
                       final_loss=losses[-1] if losses else float("nan"), images=len(start), overwrite=overwrite)
        return path

    if kind == "spectral":
        spectral = fit_spectral(data.z, data.z_hat, data.t, t_range=T_RANGE)
        return save(spectral, []), [], fit_residual(spectral, data, t_range=T_RANGE)
    with torch.inference_mode(False):
        net, losses = new_unet(latent_format.latent_channels, seed), []

    training = report("training")

    def on_step(step, loss):
        losses.append(loss)
        if training is not None:
            training(step + 1, steps)

    train_unet(net, data, steps, seed=seed, on_step=on_step)
    return save(net, losses), losses, fit_residual(net, data, t_range=T_RANGE)


def encode_images(vae, images: torch.Tensor) -> torch.Tensor:
    """VAE Encode of each image on its own: a video VAE (Wan's, Qwen-Image's) takes a batch as the frames of one
    clip, so each image is encoded alone, as a clip of one frame [1, C, 1, h, w]."""
    if vae.latent_dim == 3:
        return torch.cat([vae.encode(image[None, ..., :3]) for image in images])
    return vae.encode(images[..., :3])


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
                                tooltip=f"File name in models/{correctors.FOLDER}/ (no folders), ending in "
                                        ".safetensors. An existing file is kept unless overwrite is on."),
                io.Int.Input("pairs_per_latent", default=64, min=1, max=4096,
                             tooltip="Training triplets per latent, each from a pair of model calls (ε and −ε) "
                                     "at a random t in [0.02, 0.98]."),
                io.Int.Input("steps", default=3000, min=1, max=1000000,
                             tooltip="U-Net training steps (Adam, batch 64); ignored by the spectral kind."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="Seeds the noise, the timesteps and the training; it stays as set, so that "
                                     "queueing again does not train again."),
                io.Image.Input("images", optional=True, tooltip="Images of the kind you will optimize; needs vae."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE, to encode images or the folder's."),
                io.String.Input("folder", default="", optional=True,
                                tooltip="Instead of the images input: a folder of images inside ComfyUI's input "
                                        "directory, by its name (e.g. corrector_photos for input/corrector_photos); "
                                        "they are centre-cropped to image_size."),
                io.Int.Input("image_size", default=512, min=64, max=4096, step=8, optional=True,
                             tooltip="Pixel size of folder images, and of the model's own samples when neither "
                                     "images nor folder is given."),
                io.Boolean.Input("overwrite", default=False, optional=True,
                                 tooltip="Replace an existing corrector of this filename. Off: an existing file "
                                         "is never touched. A failed or interrupted run never replaces anything."),
            ],
            outputs=[LMCCorrectorType.Output(display_name="corrector"),
                     io.Image.Output(display_name="fit_plot",
                                     tooltip="How well the corrector fits the model: its relative residual per "
                                             "frequency band and t (0 = exact), and for the U-Net L_k per step.")],
        )

    @classmethod
    def validate_inputs(cls, filename: str) -> bool | str:
        return filename is None or correctors.name_problem(filename) or True

    @classmethod
    def execute(cls, model, unconditional, kind, filename, pairs_per_latent, steps, seed, images=None, vae=None,
                folder="", image_size=512, overwrite=False) -> io.NodeOutput:
        check_widgets(cls, locals())
        problem = correctors.name_problem(filename)
        if problem:
            raise ValueError(f"filename: {problem}")
        if folder and images is not None:
            raise ValueError("folder: both a folder and the images input are given; use one of them.")
        if images is not None:
            check_image(images, "images")
        if (folder or images is not None) and vae is None:
            raise ValueError("vae: images (or a folder) need the model's VAE to become latents; connect it.")
        source = input_folder(folder) if folder else None
        correctors.new_file(filename, overwrite)
        if source is not None:
            images = folder_images(source, image_size, inside=input_directory())
        latents = encode_images(vae, images) if images is not None else None
        pbar = comfy.utils.ProgressBar(1)

        def progress(phase, done, total):
            pbar.update_absolute(done, total)
            comfy.model_management.throw_exception_if_processing_interrupted()

        _, losses, residual = train_for_model(model, unconditional, latents, kind=kind, pairs=pairs_per_latent,
                                              steps=steps, seed=seed, filename=filename,
                                              sample_size=image_size // 8, progress=progress, overwrite=overwrite)
        return io.NodeOutput(correctors.load(filename), fit_image(residual, losses, T_RANGE))
