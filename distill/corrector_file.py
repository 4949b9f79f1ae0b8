"""Corrector files: safetensors with metadata, never a pickle.

Metadata (all strings), each field checked before any tensor is read or any network is built:
format_version "3"; kind unet | spectral; what the corrector models: model_family (ComfyUI's supported_models
class of the model, e.g. SD15, SDXL, Flux, Lumina2), model_type (its ModelType: EPS, V_PREDICTION, FLUX, …),
latent_channels and latent_format (its latent space, e.g. SD15, SDXL, SD3, Flux); t_min < t_max, fractions of the
schedule; architecture, a JSON object of the kind's sizes (see ARCHITECTURE); and the training summary: steps,
final_loss, images.
The sizes must be those of the tensors, whose shapes must be exactly those of a network of these sizes.
"""
import json
import math
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from .corrector import SpectralCorrector, UNetCorrector

FORMAT_VERSION = "3"
"""3: the file names the model family and model type it models. Versions 1 and 2 named only the latent space, which
families share (Flux and Lumina2 both use Flux's), so they are refused: nothing in them says which model they model."""
REQUIRED = ("format_version", "kind", "model_family", "model_type", "latent_channels", "latent_format", "t_min",
            "t_max", "architecture", "steps", "final_loss", "images")
ARCHITECTURE = {"unet": {"channels": 256, "levels": 6, "filters": 1024},
                "spectral": {"channels": 256, "bands": 4096, "t_bins": 4096}}
"""Each kind's sizes and the largest value each may take (every size is at least 1; t_bins at least 2)."""
MAX_COUNT = 10**12
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
"""A class or enum name of ComfyUI's: model_family, model_type, latent_format."""
PARTIAL = re.compile(r"\.(?P<name>.+\.safetensors)\.(?P<pid>\d+)\.partial")
"""Temporary files of saves in progress: .NAME.PID.partial, beside the file they become."""


class CorrectorFileError(ValueError):
    """A corrector file that cannot be used or written; the message names the file, the field and the reason."""


def partial_name(name: str) -> str:
    return f".{name}.{os.getpid()}.partial"


def save_corrector(path: str | os.PathLike, corrector: nn.Module, *, model_family: str, model_type: str,
                   latent_format: str, t_range: tuple[float, float], steps: int, final_loss: float, images: int,
                   overwrite: bool = False) -> None:
    """Writes the file whole or not at all: into a temporary file beside it, then renamed over it. An
    existing file is replaced only with overwrite; a failed save leaves neither it changed nor a temporary file."""
    path = Path(path)
    kind = "unet" if isinstance(corrector, UNetCorrector) else "spectral"
    metadata = {
        "format_version": FORMAT_VERSION, "kind": kind, "model_family": model_family, "model_type": model_type,
        "latent_channels": str(corrector.config["channels"]),
        "latent_format": latent_format, "t_min": str(t_range[0]), "t_max": str(t_range[1]),
        "architecture": json.dumps(corrector.config), "steps": str(steps), "final_loss": repr(float(final_loss)),
        "images": str(images),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in corrector.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(partial_name(path.name))
    try:
        save_file(tensors, str(temp), metadata=metadata)
        with temp.open("rb") as f:
            os.fsync(f.fileno())
        if not overwrite and path.exists():
            raise CorrectorFileError(f"{path.name}: a corrector of this name already exists; choose another name "
                                     "or allow overwriting it.")
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _fail(name: str, field: str, reason: str):
    raise CorrectorFileError(f"{name}: {field}: {reason}")


def _integer(name: str, field: str, text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"[0-9]{1,13}", text) or not low <= int(text) <= high:
        _fail(name, field, f"{text[:40]!r} is not a whole number from {low} to {high}.")
    return int(text)


def _fraction(name: str, field: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        _fail(name, field, f"{text[:40]!r} is not a number from 0 to 1 (a fraction of the noise schedule).")
    return value


def _architecture(name: str, kind: str, text: str) -> dict[str, int]:
    try:
        config = json.loads(text)
    except ValueError:
        _fail(name, "architecture", f"not JSON: {text[:40]!r}.")
    caps = ARCHITECTURE[kind]
    if not isinstance(config, dict) or set(config) != set(caps):
        _fail(name, "architecture", f"a {kind} corrector's is a JSON object of exactly {', '.join(caps)}; "
                                    f"the file has {text[:80]!r}.")
    for key, cap in caps.items():
        low = 2 if key == "t_bins" else 1
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= cap:
            _fail(name, "architecture", f"{key} {value!r} is not a whole number from {low} to {cap}.")
    return config


def check_metadata(name: str, metadata: dict[str, str]) -> tuple[str, dict[str, int]]:
    """The kind and sizes the metadata declares, every field checked against the format; raises for the first
    field that breaks it."""
    version = metadata.get("format_version")
    if version in ("1", "2"):
        _fail(name, "format_version", f"{version}: made by an earlier version of the pack, which recorded only the "
                                      "latent space, not the model the corrector models (Flux and Lumina2 share "
                                      "one); make it again for your model with Train LMC Corrector (the spectral "
                                      "kind takes seconds).")
    missing = [k for k in REQUIRED if k not in metadata]
    if missing:
        _fail(name, "metadata", f"lacks {', '.join(missing)}; make correctors with Train LMC Corrector or the "
                                "pack's training command, which write it.")
    if version != FORMAT_VERSION:
        _fail(name, "format_version", f"{version[:40]!r} is not {FORMAT_VERSION}, the one this pack reads.")
    kind = metadata["kind"]
    if kind not in ARCHITECTURE:
        _fail(name, "kind", f"{kind[:40]!r} is not a corrector kind ({' or '.join(ARCHITECTURE)}).")
    channels = _integer(name, "latent_channels", metadata["latent_channels"], 1, ARCHITECTURE[kind]["channels"])
    for field, examples in (("model_family", "SD15, SDXL, Flux, Lumina2"), ("model_type", "EPS, V_PREDICTION, FLUX"),
                            ("latent_format", "SD15, SDXL, SD3, Flux")):
        if not NAME.fullmatch(metadata[field]):
            _fail(name, field, f"{metadata[field][:40]!r} is not a name of ComfyUI's ({examples}, …).")
    t_min, t_max = (_fraction(name, k, metadata[k]) for k in ("t_min", "t_max"))
    if t_min >= t_max:
        _fail(name, "t_min", f"{t_min} is not below t_max ({t_max}).")
    _integer(name, "steps", metadata["steps"], 0, MAX_COUNT)
    _integer(name, "images", metadata["images"], 0, MAX_COUNT)
    try:
        float(metadata["final_loss"])
    except ValueError:
        _fail(name, "final_loss", f"{metadata['final_loss'][:40]!r} is not a number.")
    sizes = _architecture(name, kind, metadata["architecture"])
    if sizes["channels"] != channels:
        _fail(name, "latent_channels", f"{channels}, but its architecture says {sizes['channels']} channels.")
    return kind, sizes


def _sizes_of_tensors(name: str, kind: str, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
    """The network sizes read off the tensors' shapes."""
    def shape(key: str, ndim: int) -> tuple[int, ...]:
        if key not in shapes or len(shapes[key]) != ndim:
            _fail(name, "tensors", f"a {kind} corrector has a {ndim}-D tensor {key}; the file's is "
                                   f"{list(shapes[key]) if key in shapes else 'missing'}.")
        return shapes[key]

    if kind == "unet":
        levels = len({key.split(".")[1] for key in shapes if key.startswith("down.")})
        filters = shape("down.0.convs.0.weight", 4)[0]
        return {"channels": shape("out.weight", 4)[0], "levels": levels, "filters": filters}
    channels, bands, t_bins = shape("gains", 3)
    return {"channels": channels, "bands": bands, "t_bins": t_bins}


def _network(kind: str, sizes: dict[str, int], tensors: dict[str, torch.Tensor] | None = None) -> nn.Module:
    if kind == "unet":
        return UNetCorrector(sizes["channels"], sizes["levels"], sizes["filters"])
    if tensors is None:
        return SpectralCorrector(torch.empty(sizes["channels"], sizes["bands"], sizes["t_bins"]),
                                 torch.empty(sizes["t_bins"]))
    return SpectralCorrector(tensors["gains"].float(), tensors["t_centers"].float())


def check_shapes(name: str, kind: str, sizes: dict[str, int], shapes: dict[str, tuple[int, ...]]) -> None:
    """The tensors must have the declared sizes and exactly the shapes of that network (compared on the meta
    device: nothing is allocated)."""
    found = _sizes_of_tensors(name, kind, shapes)
    for key, value in found.items():
        if value != sizes[key]:
            _fail(name, "architecture", f"says {key} {sizes[key]} but the tensors have {value}.")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in _network(kind, sizes).state_dict().items()}
    for key in sorted(set(expected) | set(shapes)):
        if key not in shapes:
            _fail(name, "tensors", f"{key} is missing.")
        if key not in expected:
            _fail(name, "tensors", f"{key} is not part of a {kind} corrector.")
        if shapes[key] != expected[key]:
            _fail(name, "tensors", f"{key} has shape {list(shapes[key])}; a {kind} corrector of these sizes needs "
                                   f"{list(expected[key])}.")


def check_values(name: str, tensors: dict[str, torch.Tensor]) -> None:
    for key, value in tensors.items():
        if not value.is_floating_point():
            _fail(name, "tensors", f"{key} is {value.dtype}, not floating point.")
        if not torch.isfinite(value).all():
            _fail(name, "tensors", f"{key} contains NaN or infinite values.")
    centers = tensors.get("t_centers")
    if centers is not None and not (bool((centers[1:] > centers[:-1]).all()) and 0 <= centers[0] and centers[-1] <= 1):
        _fail(name, "t_centers", "not strictly ascending within [0, 1]; the gains cannot be interpolated in t.")


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
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            kind, sizes = check_metadata(name, metadata)
            check_shapes(name, kind, sizes, shapes)
            tensors = {k: f.get_tensor(k) for k in shapes}
    except CorrectorFileError:
        raise
    except (SafetensorError, OSError, ValueError) as e:
        raise CorrectorFileError(f"{name}: not a readable safetensors file (truncated or corrupt?): {e}") from e
    check_values(name, tensors)
    corrector = _network(kind, sizes, tensors)
    corrector.load_state_dict(tensors)
    return corrector.eval().requires_grad_(False), metadata
