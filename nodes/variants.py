"""The loss nodes of the variants since SDS, a node each: CSD Loss, ISM Loss, SDS-Bridge Loss and ASD Loss."""
from comfy_api.latest import io

from ..distill import recipes
from .checks import check_conditioning, check_widgets, widget_message
from .defaults import defaults
from .sds import check_timesteps, timestep_inputs
from .types import CATEGORY, DistillLoss, DistillLossType

CSD, ISM, BRIDGE, ASD = (defaults(r) for r in (recipes.csd, recipes.ism, recipes.sds_bridge, recipes.asd))

CSD_NEGATIVE_PROMPT = "oversaturated color, ugly, tiling, low quality, noisy"
BRIDGE_TARGET_SUFFIX = ", detailed high resolution, high quality, sharp"
BRIDGE_SOURCE_SUFFIX = (", oversaturated, smooth, pixelated, cartoon, foggy, hazy, blurry, bad structure, noisy, "
                        "malformed")


def prior_inputs() -> list:
    return [
        io.Model.Input("model", tooltip="The diffusion model used as the prior, with its LoRAs and patches applied."),
        io.Conditioning.Input("positive", tooltip="What the result should show (CLIP Text Encode)."),
        io.Conditioning.Input("negative", tooltip="The unconditional branch: usually the empty prompt."),
    ]


def cfg_input(default: float, tooltip: str) -> io.Float.Input:
    return io.Float.Input("cfg", default=default, min=1.0, max=200.0, step=0.5, round=0.01,
                          tooltip="Guidance scale in the standard form ε̂_u + cfg·(ε̂_c − ε̂_u). " + tooltip)


def validate(node, t_min, t_max) -> bool | str:
    return widget_message(node, t_min=t_min, t_max=t_max) or check_timesteps(t_min, t_max)


class CSDLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillCSDLoss",
            display_name="CSD Loss",
            category=CATEGORY,
            description="Classifier Score Distillation (Yu et al. 2023): only the classifier direction ε̂_c − ε̂_∅ of "
                        "SDS, no sampled noise; over the first part of the run the empty prompt gives way to a "
                        "negative prompt. The defaults are its csd-if config. Connect to Optimize Latent or Image.",
            inputs=[
                *prior_inputs(),
                io.Conditioning.Input("csd_negative",
                                      tooltip=f"The negative prompt the direction turns away from after the ramp; its "
                                              f"config's: \"{CSD_NEGATIVE_PROMPT}\"."),
                io.Float.Input("scale", default=CSD["scale"], min=0.01, max=100.0, step=0.1, round=0.01,
                               tooltip="s in g = s·(ε̂_c − ε̂_ref). Its code uses 1 (and normalizes the gradient); "
                                       "with Adam/AdamW the scale hardly matters, with SGD it sets the step."),
                io.Float.Input("ramp", default=CSD["ramp"], min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the run over which ε̂_ref goes linearly from the unconditional "
                                       "branch to csd_negative (its config: steps 0–5000 of 10 000 = 0.5); 0 uses "
                                       "csd_negative from the start."),
                io.Float.Input("late_t_max", default=CSD["late_t_max"], min=0.0, max=1.0, step=0.01,
                               tooltip="t_max after the ramp (its config: 0.98 → 0.5 at step 5000): late steps "
                                       "refine details at lower noise. At or above t_max it changes nothing."),
                *timestep_inputs(CSD, "'uniform' (w = 1, as CSD's config)"),
            ],
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float, late_t_max: float) -> bool | str:
        message = widget_message(cls, t_min=t_min, t_max=t_max, late_t_max=late_t_max)
        if message:
            return message
        if t_min is not None and late_t_max is not None and late_t_max <= t_min:
            return f"late_t_max ({late_t_max}) must be above t_min ({t_min}): it is the largest level after the ramp."
        return check_timesteps(t_min, t_max)

    @classmethod
    def execute(cls, model, positive, negative, csd_negative, scale, ramp, late_t_max, weighting, t_min, t_max,
                t_schedule, grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_conditioning("negative", negative, positive)
        check_conditioning("csd_negative", csd_negative, positive)
        loss = recipes.csd(scale=scale, ramp=ramp, late_t_max=late_t_max, weighting=weighting, t_min=t_min,
                           t_max=t_max, t_schedule=t_schedule, grad_clip=grad_clip)
        conds = {"positive": positive, "negative": negative, "csd_negative": csd_negative}
        return io.NodeOutput(DistillLoss(model, conds, loss))


class ISMLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillISMLoss",
            display_name="ISM Loss (LucidDreamer)",
            category=CATEGORY,
            description="Interval Score Matching (LucidDreamer): instead of the sampled noise, compares the guided "
                        "prediction at x_t with the unconditional one at x_s, both reached by DDIM inversion of the "
                        "latent (s = t − delta_t), so the target is consistent and details stay sharp. A few more "
                        "model calls per step. The defaults are LucidDreamer's.",
            inputs=[
                *prior_inputs(),
                cfg_input(ISM["cfg"], "LucidDreamer's 7.5 is already this form."),
                io.Float.Input("delta_t", default=ISM["delta"], min=0.001, max=0.99, step=0.01, round=0.001,
                               tooltip="The interval t − s as a fraction of the schedule (LucidDreamer's δ = 80 "
                                       "timesteps of 1000 = 0.08)."),
                io.Float.Input("inversion_interval", default=ISM["interval"], min=0.01, max=1.0, step=0.01,
                               tooltip="Step of the unconditional DDIM inversion from the latent up to s (its 200 "
                                       "timesteps = 0.2): a step at t costs about ⌈(t − delta_t)/interval⌉ + 1 "
                                       "extra model calls."),
                *timestep_inputs(ISM, "'sdi' (√((1 − ᾱ_t)/ᾱ_t), as LucidDreamer)"),
            ],
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        return validate(cls, t_min, t_max)

    @classmethod
    def execute(cls, model, positive, negative, cfg, delta_t, inversion_interval, weighting, t_min, t_max, t_schedule,
                grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_conditioning("negative", negative, positive)
        loss = recipes.ism(cfg=cfg, delta=delta_t, interval=inversion_interval, weighting=weighting, t_min=t_min,
                           t_max=t_max, t_schedule=t_schedule, grad_clip=grad_clip)
        return io.NodeOutput(DistillLoss(model, {"positive": positive, "negative": negative}, loss))


class SDSBridgeLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillSDSBridgeLoss",
            display_name="SDS-Bridge Loss",
            category=CATEGORY,
            description="SDS-Bridge (McAllister et al. 2024): SDS first, then a bridge from the current image's "
                        "distribution, described by the prompt with an 'oversaturated, blurry' suffix, to the prompt "
                        "with a 'detailed, sharp' suffix: less saturation and more detail than SDS at its cfg. The "
                        "defaults are its 2D experiments'.",
            inputs=[
                *prior_inputs(),
                io.Conditioning.Input("bridge_target", tooltip=f"The prompt followed by \"{BRIDGE_TARGET_SUFFIX}\" "
                                                               "(its code's target suffix)."),
                io.Conditioning.Input("bridge_source", tooltip=f"The prompt followed by \"{BRIDGE_SOURCE_SUFFIX}\" "
                                                               "(its code's source suffix)."),
                cfg_input(BRIDGE["cfg"], "SDS-Bridge uses 40 in 2D (already this form), in both stages."),
                io.Float.Input("stage_two", default=BRIDGE["stage_two"], min=0.0, max=1.0, step=0.01,
                               tooltip="Fraction of the run after which the bridge replaces SDS (its step 500 of "
                                       "1000 = 0.5); 0 bridges from the start."),
                *timestep_inputs(BRIDGE, "'sds' (1 − ᾱ_t, as its code)"),
            ],
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        return validate(cls, t_min, t_max)

    @classmethod
    def execute(cls, model, positive, negative, bridge_target, bridge_source, cfg, stage_two, weighting, t_min, t_max,
                t_schedule, grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_conditioning("negative", negative, positive)
        check_conditioning("bridge_target", bridge_target, positive)
        check_conditioning("bridge_source", bridge_source, positive)
        loss = recipes.sds_bridge(cfg=cfg, stage_two=stage_two, weighting=weighting, t_min=t_min, t_max=t_max,
                                  t_schedule=t_schedule, grad_clip=grad_clip)
        conds = {"positive": positive, "negative": negative, "bridge_target": bridge_target,
                 "bridge_source": bridge_source}
        return io.NodeOutput(DistillLoss(model, conds, loss))


class ASDLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillASDLoss",
            display_name="ASD Loss (ScaleDreamer)",
            category=CATEGORY,
            description="Asynchronous Score Distillation (ScaleDreamer): compares the guided prediction at t with "
                        "the prompt's own prediction a little higher in noise (t + shift·(t − t_min)), both noised "
                        "with the same noise, instead of with the noise itself. The defaults are ScaleDreamer's.",
            inputs=[
                *prior_inputs(),
                cfg_input(ASD["cfg"], "ScaleDreamer's 7.5 is already this form."),
                io.Float.Input("shift", default=ASD["shift"], min=0.0, max=1.0, step=0.01,
                               tooltip="Δ = shift·(t − t_min): how far above t the second prediction is (its "
                                       "plus_ratio 0.1)."),
                *timestep_inputs(ASD, "'sds' (1 − ᾱ_t, as its code)"),
            ],
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        return validate(cls, t_min, t_max)

    @classmethod
    def execute(cls, model, positive, negative, cfg, shift, weighting, t_min, t_max, t_schedule,
                grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_conditioning("negative", negative, positive)
        loss = recipes.asd(cfg=cfg, shift=shift, weighting=weighting, t_min=t_min, t_max=t_max,
                           t_schedule=t_schedule, grad_clip=grad_clip)
        return io.NodeOutput(DistillLoss(model, {"positive": positive, "negative": negative}, loss))
