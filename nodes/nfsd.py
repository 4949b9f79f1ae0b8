"""The "NFSD Guidance" node: noise-free score distillation (Katzir et al., ICLR 2024)."""
from comfy_api.latest import io

from ..distill import recipes
from .checks import check_conditioning, check_widgets, widget_message
from .defaults import defaults
from .guidance import TOOLTIP as GUIDANCE_DISTILLED, warn_if_compounding
from .sds import check_timesteps, timestep_inputs
from .types import CATEGORY, DistillLoss, DistillLossType

NFSD = defaults(recipes.nfsd)

NFSD_NEGATIVE_PROMPT = ("unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, "
                        "low-resolution, gloomy")


class NFSDGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillNFSDGuidance",
            display_name="NFSD Guidance",
            category=CATEGORY,
            description="Noise-Free Score Distillation: SDS without the sampled-noise term, so a nominal cfg "
                        "(7.5) gives detailed results. Usable wherever SDS Loss is.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model used as the prior, with its LoRAs and "
                                                "patches applied."),
                io.Conditioning.Input("positive", tooltip="What the result should show."),
                io.Conditioning.Input("negative", tooltip="The unconditional branch: usually the empty prompt."),
                io.Conditioning.Input("nfsd_negative",
                                      tooltip="The NFSD negative prompt, pushed away from at high noise. The "
                                              f"paper's: \"{NFSD_NEGATIVE_PROMPT}\"."),
                io.Float.Input("cfg", default=NFSD["cfg"], min=1.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Scale s of the condition direction ε̂_c − ε̂_u; NFSD needs only a nominal "
                                       "value (7.5)." + GUIDANCE_DISTILLED),
                io.Float.Input("threshold", default=NFSD["threshold"], min=0.0, max=1.0, step=0.01,
                               tooltip="Below this noise level (a fraction of the model's schedule: 0.2 = t < 200 "
                                       "of 1000) the domain direction is ε̂_u alone; at or above it, ε̂_u − ε̂_neg. "
                                       "A fraction, so it means the same on v-prediction and flow models."),
                *timestep_inputs(NFSD),
            ],
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        return widget_message(cls, t_min=t_min, t_max=t_max) or check_timesteps(t_min, t_max)

    @classmethod
    def execute(cls, model, positive, negative, nfsd_negative, cfg, threshold, weighting, t_min, t_max,
                t_schedule, grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_conditioning("negative", negative, positive)
        check_conditioning("nfsd_negative", nfsd_negative, positive)
        loss = recipes.nfsd(cfg=cfg, threshold=threshold, weighting=weighting, t_min=t_min, t_max=t_max,
                            t_schedule=t_schedule, grad_clip=grad_clip)
        conds = {"positive": positive, "negative": negative, "nfsd_negative": nfsd_negative}
        warn_if_compounding(model, "NFSD Guidance", {"cfg": cfg}, conds)
        return io.NodeOutput(DistillLoss(model, conds, loss))
