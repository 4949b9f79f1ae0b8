"""The pack's custom ComfyUI types and what travels on their links."""
from dataclasses import dataclass

from comfy.model_patcher import ModelPatcher
from comfy_api.latest import io

from ..distill import ScoreDistillation

DistillLossType = io.Custom("DISTILL_LOSS")
DistillNoiseType = io.Custom("DISTILL_NOISE")
LMCCorrectorType = io.Custom("LMC_CORRECTOR")
DistillViewsType = io.Custom("DISTILL_VIEWS")

CATEGORY = "score_distillation"


@dataclass(frozen=True)
class DistillLoss:
    """A DISTILL_LOSS link: the model and conditionings to evaluate, and the core loss applied to them."""

    model: ModelPatcher
    conds: dict[str, list]
    loss: ScoreDistillation
