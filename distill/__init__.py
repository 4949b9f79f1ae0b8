"""Score distillation in pure PyTorch: schedules, losses and the optimization loop.

The model is seen only through ``Denoiser``; nothing here imports ComfyUI.
"""
from .denoiser import Denoiser
from .editing import dds, dds_direction, pds, pds_direction
from .inversion import ETA_PLACEMENTS, VARIANTS, DDIMInversion, ddim_invert, ddim_sample, ddim_step
from .losses import (WEIGHTINGS, Evaluation, ScoreDistillation, fixed_noise, lmc_direction, nfsd_direction,
                     normalize_to, sds_direction, target_loss)
from .optimize import LR_SCHEDULES, OPTIMIZERS, History, Settings, optimize
from .run import Run, Window, item_generators
from .timesteps import T_SCHEDULES

__all__ = [
    "DDIMInversion", "ETA_PLACEMENTS", "VARIANTS", "ddim_invert", "ddim_sample", "ddim_step",
    "Denoiser", "Evaluation", "History", "LR_SCHEDULES", "OPTIMIZERS", "Run", "ScoreDistillation", "Settings",
    "T_SCHEDULES", "WEIGHTINGS", "Window", "dds", "dds_direction", "fixed_noise", "item_generators", "lmc_direction", "nfsd_direction", "normalize_to", "optimize", "pds", "pds_direction", "sds_direction", "target_loss",
]
