"""The "SDS Loss" node: DreamFusion score distillation with a loaded model; SDI with DDIM-Invert Noise, LMC-SDS
with a corrector."""
from comfy_api.latest import io

from ..distill import T_SCHEDULES, WEIGHTINGS, recipes
from .checks import check_conditioning, check_widgets, widget_message
from .correctors import check_corrector_fits
from .defaults import defaults
from .guidance import TOOLTIP as GUIDANCE_DISTILLED, warn_if_compounding
from .types import CATEGORY, DistillLoss, DistillLossType, DistillNoiseType, LMCCorrectorType

SDS = defaults(recipes.sds)


AUTO_WEIGHTING = ("'sds', except 'sdi' with DDIM-Invert Noise and 'uniform' for LMC-SDS (a corrector connected), as "
                  "their papers and codes")


def timestep_inputs(recipe: dict, auto: str = AUTO_WEIGHTING) -> list:
    """t range, schedule, weighting and clip inputs with a recipe's defaults, shared by the loss nodes; ``auto`` says
    what weighting "auto" picks for this node."""
    return [
        io.Combo.Input("weighting", options=["auto", *WEIGHTINGS], default=recipe["weighting"],
                       tooltip="w(t): 'sds' = 1 − ᾱ_t (DreamFusion), 'uniform' = 1, 'fantasia3d' = √ᾱ_t·(1 − ᾱ_t), "
                               "'sdi' = σ_t = √((1 − ᾱ_t)/ᾱ_t) (the DDIM step's own scale, SDI's code). 'auto' = "
                               f"{auto}."),
        io.Float.Input("t_min", default=recipe["t_min"], min=0.0, max=1.0, step=0.01,
                       tooltip="Smallest noise level, as a fraction of the model's noise schedule "
                               "(0 = least noise, 1 = most; 0.02 ≈ timestep 20 of 1000). Works the same "
                               "for EPS, v-prediction and flow models."),
        io.Float.Input("t_max", default=recipe["t_max"], min=0.0, max=1.0, step=0.01,
                       tooltip="Largest noise level, as a fraction of the model's noise schedule; must be "
                               "above t_min."),
        io.Combo.Input("t_schedule", options=list(T_SCHEDULES), default=recipe["t_schedule"],
                       tooltip="'uniform': t drawn in [t_min, t_max] every step (DreamFusion); "
                               "'linear_anneal': t falls linearly from t_max to t_min over the run (SDI); "
                               "'sqrt_anneal': falls with √progress, fast at first (HiFA)."),
        io.Float.Input("grad_clip", default=recipe["grad_clip"], min=0.0, max=100.0, step=0.01,
                       tooltip="Clip every gradient element to ±this value; 0 turns clipping off."),
    ]


def check_timesteps(t_min: float | None, t_max: float | None) -> bool | str:
    if t_min is not None and t_max is not None and t_min >= t_max:
        return f"t_min ({t_min}) must be below t_max ({t_max}): they bound the noise levels the loss samples."
    return True


class SDSLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillSDSLoss",
            display_name="SDS Loss",
            category=CATEGORY,
            description="Score Distillation Sampling (DreamFusion): pulls a latent towards what the model "
                        "would denoise it to under the prompt. Connect to Optimize Latent.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model used as the prior, with its LoRAs and "
                                                "patches applied."),
                io.Conditioning.Input("positive", tooltip="What the result should show (CLIP Text Encode); "
                                                          "ControlNets applied to it take effect."),
                io.Conditioning.Input("negative", tooltip="The unconditional branch of CFG: usually an empty "
                                                          "prompt, or a negative prompt."),
                io.Float.Input("cfg", default=SDS["cfg"], min=1.0, max=200.0, step=0.5, round=0.01,
                               tooltip="Guidance scale in the standard form ε̂_u + cfg·(ε̂_c − ε̂_u). SDS needs "
                                       "it high: the default 101 is DreamFusion's ω = 100 (the paper writes "
                                       "ε̂_c + ω·(ε̂_c − ε̂_u), cfg = ω + 1). SDI: 8.5 (its 7.5); LMC-SDS: 8 "
                                       "synthesis, 15 editing. At 1 the negative branch is skipped." + GUIDANCE_DISTILLED),
                *timestep_inputs(SDS),
                DistillNoiseType.Input("noise", optional=True,
                                       tooltip="Where each step's noise comes from; leave empty for fresh random "
                                               "noise (DreamFusion), or connect DDIM-Invert Noise for SDI."),
                LMCCorrectorType.Input("corrector", optional=True,
                                       tooltip="An LMC Corrector turns this loss into LMC-SDS: the noise term is "
                                               "replaced by b̂(x, t) − x̂0_uncond, so a cfg of 8 (synthesis) to 15 "
                                               "(editing) is enough and results stay sharp."),
                io.Boolean.Input("fixed_noise", default=False, optional=True,
                                 tooltip="Keep one noise per batch item for the whole run in the cfg term (LMC-SDS's "
                                         "diversity option: different seeds give different results); with a "
                                         "corrector its lmc term keeps fresh noise, evaluated in the same batch."),
            ],
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        return widget_message(cls, t_min=t_min, t_max=t_max) or check_timesteps(t_min, t_max)

    @classmethod
    def execute(cls, model, positive, negative, cfg, weighting, t_min, t_max, t_schedule, grad_clip,
                noise=None, corrector=None, fixed_noise=False) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_conditioning("negative", negative, positive)
        if corrector is not None:
            check_corrector_fits(corrector, model)
        inversion = {"inversion_cfg": noise.cfg} if hasattr(noise, "cfg") else {}
        warn_if_compounding(model, "SDS Loss", {"cfg": cfg} | inversion, {"positive": positive, "negative": negative})
        loss = recipes.sds(cfg=cfg, weighting=weighting, t_min=t_min, t_max=t_max, t_schedule=t_schedule,
                           grad_clip=grad_clip, noise=noise, corrector=None if corrector is None else corrector.module,
                           fixed_noise=fixed_noise)
        return io.NodeOutput(DistillLoss(model, {"positive": positive, "negative": negative}, loss))
