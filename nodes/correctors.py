"""Where corrector files live, how a node refers to one, and the check against the model it meets."""
from dataclasses import dataclass
from pathlib import Path

import folder_paths
from comfy.model_patcher import ModelPatcher
from torch import nn

from ..distill.corrector_file import CorrectorFileError, load_corrector

FOLDER = "lmc_correctors"
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
    if "/" in name or "\\" in name or ".." in name:
        raise CorrectorFileError(f"{name}: a corrector is named by its file name alone, without folders or '..'; "
                                 f"put the file in models/{FOLDER}/.")


def load(name: str) -> LoadedCorrector:
    check_name(name)
    path = folder_paths.get_full_path(FOLDER, name)
    if path is None:
        raise CorrectorFileError(f"{name}: no such file in models/{FOLDER}/ or the pack's corrector_weights/.")
    module, metadata = load_corrector(path)
    return LoadedCorrector(name, module, metadata)


def check_corrector_fits(corrector: LoadedCorrector, model: ModelPatcher) -> None:
    latent_format = model.get_model_object("latent_format")
    channels, family = latent_format.latent_channels, type(latent_format).__name__
    meta = corrector.metadata
    if int(meta["latent_channels"]) != channels:
        raise ValueError(f"corrector: {corrector.name} was made for {meta['latent_channels']}-channel latents but "
                         f"this model's have {channels}; train a corrector for this model (Train LMC Corrector).")
    if meta["latent_format"] != family:
        raise ValueError(f"corrector: {corrector.name} was made for the {meta['latent_format']} latent space but "
                         f"this model uses {family}; train a corrector for this model (Train LMC Corrector).")
