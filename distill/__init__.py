"""Score distillation in pure PyTorch: schedules, losses and the optimization loop.

The model is seen only through ``Denoiser``; nothing here imports ComfyUI.
"""
from .denoiser import Denoiser
from .inversion import ETA_PLACEMENTS, VARIANTS, DDIMInversion, ddim_invert, ddim_sample, ddim_step
from .losses import (WEIGHTINGS, Evaluation, ScoreDistillation, fixed_noise, lmc_direction, nfsd_direction,
                     normalize_to, sds_direction, target_loss)
from .optimize import LR_SCHEDULES, OPTIMIZERS, History, Settings, optimize
from .run import Run, item_generators
from .timesteps import T_SCHEDULES

__all__ = [
    "DDIMInversion", "ETA_PLACEMENTS", "VARIANTS", "ddim_invert", "ddim_sample", "ddim_step",
    "Denoiser", "Evaluation", "History", "LR_SCHEDULES", "OPTIMIZERS", "Run", "ScoreDistillation", "Settings",
    "T_SCHEDULES", "WEIGHTINGS", "fixed_noise", "item_generators", "lmc_direction", "nfsd_direction", "normalize_to", "optimize", "sds_direction", "target_loss",
]
