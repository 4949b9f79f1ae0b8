"""Score distillation in pure PyTorch: schedules, losses, recipes and the optimization loop.

The model is seen only through ``Denoiser``; nothing here imports ComfyUI. ``recipes`` builds each
method's loss as the ComfyUI nodes do.
"""
from . import recipes
from .denoiser import Denoiser, Request, predict
from .inversion import ETA_PLACEMENTS, VARIANTS, DDIMInversion, ddim_invert, ddim_sample, ddim_step
from .losses import (WEIGHTINGS, Evaluation, ScoreDistillation, fixed_noise, lmc_direction, nfsd_direction,
                     sds_direction, target_loss)
from .optimize import LR_SCHEDULES, OPTIMIZERS, History, Settings, optimize
from .run import Run, item_generators
from .timesteps import T_SCHEDULES

__all__ = [
    "DDIMInversion", "Denoiser", "ETA_PLACEMENTS", "Evaluation", "History", "LR_SCHEDULES", "OPTIMIZERS", "Request",
    "Run", "ScoreDistillation", "Settings", "T_SCHEDULES", "VARIANTS", "WEIGHTINGS", "ddim_invert", "ddim_sample",
    "ddim_step", "fixed_noise", "item_generators", "lmc_direction", "nfsd_direction", "optimize", "predict", "recipes",
    "sds_direction", "target_loss",
]
