"""Corrector files: safetensors with metadata, never a pickle.

Metadata (all strings): format_version, kind (unet | spectral), latent_channels, latent_format (the
model family's latent space, e.g. SD15, SDXL, SD3, Flux), t_min, t_max, architecture (JSON of the
kind's config), and the training summary: steps, final_loss, images.
"""
import json
import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .corrector import SpectralCorrector, UNetCorrector

FORMAT_VERSION = "2"
"""2: U-Net correctors predict the bias at its own scale (least squares); version 1 trained them in eq. 10's
normalized space, which leaves the scale free, so version-1 U-Nets are refused. Spectral fits are the same in both."""
REQUIRED = ("format_version", "kind", "latent_channels", "latent_format", "t_min", "t_max", "architecture",
            "steps", "final_loss", "images")


class CorrectorFileError(ValueError):
    """A corrector file that cannot be used; the message names the file and the reason."""


def save_corrector(path: str | os.PathLike, corrector: nn.Module, *, latent_format: str, t_range: tuple[float, float],
                   steps: int, final_loss: float, images: int) -> None:
    kind = "unet" if isinstance(corrector, UNetCorrector) else "spectral"
    metadata = {
        "format_version": FORMAT_VERSION, "kind": kind, "latent_channels": str(corrector.config["channels"]),
        "latent_format": latent_format, "t_min": str(t_range[0]), "t_max": str(t_range[1]),
        "architecture": json.dumps(corrector.config), "steps": str(steps), "final_loss": repr(float(final_loss)),
        "images": str(images),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in corrector.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)


def load_corrector(path: str | os.PathLike) -> tuple[nn.Module, dict[str, str]]:
    """The corrector and its metadata; refuses anything but a complete safetensors file of this format."""
    path = Path(path)
    name = path.name
    if path.suffix != ".safetensors":
        raise CorrectorFileError(f"{name}: corrector files must be .safetensors; other formats can run code "
                                 "when loaded (pickle) and are never opened by this pack.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CorrectorFileError(f"{name}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    missing = [k for k in REQUIRED if k not in metadata]
    if missing:
        raise CorrectorFileError(f"{name}: metadata lacks {', '.join(missing)}; make correctors with Train LMC "
                                 "Corrector or the pack's training command, which write it.")
    if metadata["format_version"] == "1" and metadata["kind"] == "unet":
        raise CorrectorFileError(f"{name}: a version-1 U-Net corrector, trained in eq. 10's normalized space, does not "
                                 "predict the bias at its own scale; train it again with Train LMC Corrector.")
    if metadata["format_version"] not in ("1", FORMAT_VERSION):
        raise CorrectorFileError(f"{name}: format_version {metadata['format_version']} is not {FORMAT_VERSION}, "
                                 "the one this pack reads.")
    config = json.loads(metadata["architecture"])
    try:
        if metadata["kind"] == "unet":
            corrector = UNetCorrector(config["channels"], config["levels"], config["filters"])
        elif metadata["kind"] == "spectral":
            corrector = SpectralCorrector(tensors["gains"], tensors["t_centers"])
        else:
            raise CorrectorFileError(f"{name}: unknown corrector kind {metadata['kind']!r} (unet or spectral).")
        corrector.load_state_dict(tensors)
    except (KeyError, RuntimeError) as e:
        raise CorrectorFileError(f"{name}: its tensors do not fit its metadata: {e}") from e
    if corrector.config["channels"] != int(metadata["latent_channels"]):
        raise CorrectorFileError(f"{name}: metadata says {metadata['latent_channels']} latent channels but the "
                                 f"weights have {corrector.config['channels']}.")
    return corrector.eval().requires_grad_(False), metadata
