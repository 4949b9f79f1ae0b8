"""Where corrector files live, how a node refers to one, and the check against the model it meets."""
from dataclasses import dataclass
from pathlib import Path

import folder_paths
import psutil
from comfy.model_patcher import ModelPatcher
from torch import nn

from ..distill.corrector_file import PARTIAL, CorrectorFileError, load_corrector

FOLDER = "lmc_correctors"
MAX_NAME_BYTES = 200
"""Room for the temporary file's longer name within the usual 255-byte limit of file names."""
PACK_WEIGHTS = Path(__file__).resolve().parents[1] / "corrector_weights"


def register_folder() -> None:
    """models/lmc_correctors and the pack's corrector_weights/, safetensors only."""
    paths = [str(Path(folder_paths.models_dir) / FOLDER), str(PACK_WEIGHTS)]
    known, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    folder_paths.folder_names_and_paths[FOLDER] = (list(dict.fromkeys(known + paths)), {".safetensors"})


def user_folder() -> Path:
    """Where trained correctors are written: the first registered folder (models/lmc_correctors)."""
    return Path(folder_paths.get_folder_paths(FOLDER)[0])


@dataclass(frozen=True)
class LoadedCorrector:
    """An LMC_CORRECTOR link: the corrector network and its file's metadata."""

    name: str
    module: nn.Module
    metadata: dict[str, str]


def check_name(name: str) -> None:
    if "/" in name or "\\" in name or ".." in name or "\0" in name:
        raise CorrectorFileError(f"{name!r}: a corrector is named by its file name alone, without folders or "
                                 f"'..'; put the file in models/{FOLDER}/.")


def name_problem(name: str) -> str | None:
    """What keeps name from being a new corrector's file name in models/lmc_correctors; None if nothing."""
    try:
        check_name(name)
    except CorrectorFileError as e:
        return str(e)
    if not name.endswith(".safetensors") or name.startswith(".") or len(name) == len(".safetensors"):
        return (f"{name!r} must be a name ending in .safetensors and not starting with '.', e.g. "
                "my_model_corrector.safetensors.")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"{name[:40]!r}… is longer than {MAX_NAME_BYTES} bytes; choose a shorter name."
    if any(c in name for c in '<>:"|?*') or any(ord(c) < 32 for c in name) or name != name.strip():
        return (f"{name!r} contains a character that file names cannot hold on every system (control characters, "
                '<>:"|?* or leading/trailing spaces); choose a plain name.')
    return None


def new_file(name: str, overwrite: bool) -> Path:
    """Where a corrector named name is written; refuses an existing file unless overwrite, and removes the
    temporary files that saves killed midway left behind."""
    folder = user_folder()
    path = folder / name
    for entry in (folder.iterdir() if folder.is_dir() else ()):
        found = PARTIAL.fullmatch(entry.name)
        if found and not psutil.pid_exists(int(found["pid"])):
            entry.unlink(missing_ok=True)
    if path.exists() and not overwrite:
        raise CorrectorFileError(f"filename: {name} already exists in models/{FOLDER}/; choose another name, or "
                                 "turn on overwrite to replace it.")
    return path


def load(name: str) -> LoadedCorrector:
    check_name(name)
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise CorrectorFileError(f"{name}: no such file in models/{FOLDER}/ or the pack's corrector_weights/.")
    module, metadata = load_corrector(path)
    return LoadedCorrector(name, module, metadata)


def what_it_models(model: ModelPatcher) -> dict[str, str]:
    """What a corrector for this model records: ComfyUI's class of the model family (supported_models), its
    ModelType and its latent space (latent format class and channels)."""
    latent_format = model.get_model_object("latent_format")
    return {"model_family": type(model.get_model_object("model_config")).__name__,
            "model_type": model.get_model_object("model_type").name, "latent_format": type(latent_format).__name__,
            "latent_channels": str(latent_format.latent_channels)}


def check_corrector_fits(corrector: LoadedCorrector, model: ModelPatcher) -> None:
    """A corrector models one model's bias: refused unless it was made for this model family, model type and latent
    space. (A fine-tune or LoRA of the same family cannot be told apart; its bias may differ.)"""
    wanted, meta = what_it_models(model), corrector.metadata
    for field, what in (("model_family", "the {} model family"), ("model_type", "{} models"),
                        ("latent_format", "the {} latent space"), ("latent_channels", "{}-channel latents")):
        if meta[field] != wanted[field]:
            raise ValueError(f"corrector: {corrector.name} was made for {what.format(meta[field])} but this model is "
                             f"{wanted['model_family']} ({wanted['model_type']}, {wanted['latent_format']} latents, "
                             f"{wanted['latent_channels']} channels); a corrector models one model's bias, so make "
                             "one for this model with Train LMC Corrector.")
