"""The "DDS Loss" node: Delta Denoising Score editing (Hertz et al., ICCV 2023); its inputs serve PDS Loss too."""
from comfy_api.latest import io

from ..distill import recipes
from ..distill.optimize import check_finite
from .checks import check_conditioning, check_latent, check_widgets, widget_message
from .defaults import defaults
from .guidance import TOOLTIP as GUIDANCE_DISTILLED, warn_if_compounding
from .sds import check_timesteps, timestep_inputs
from .types import CATEGORY, DistillLoss, DistillLossType

DDS = defaults(recipes.dds)


def editing_inputs(recipe: dict, cfg_tooltip: str, auto: str) -> list:
    """The inputs of an editing loss: the image being edited, its prompt, the target prompt, guidance, timesteps."""
    return [
        io.Model.Input("model", tooltip="The diffusion model used as the prior, with its LoRAs and patches applied."),
        io.Latent.Input("reference", tooltip="The image being edited, encoded (VAE Encode): the edit is measured "
                                             "against it. For Optimize Latent it is usually also the start latent."),
        io.Conditioning.Input("source", tooltip="A prompt describing the reference image as it is "
                                                "(e.g. 'a photo of a cat')."),
        io.Conditioning.Input("target", tooltip="A prompt describing the edited image (e.g. 'a photo of a tiger'); "
                                                "what differs from source is what changes."),
        io.Conditioning.Input("negative", tooltip="The unconditional branch of CFG for both prompts: usually the "
                                                  "empty prompt."),
        io.Float.Input("cfg", default=recipe["cfg"], min=1.0, max=200.0, step=0.5, round=0.01,
                       tooltip=cfg_tooltip + GUIDANCE_DISTILLED),
        *timestep_inputs(recipe, auto),
    ]


def editing_loss(recipe, model, reference, source, target, negative, cfg, weighting, t_min, t_max, t_schedule,
                 grad_clip) -> io.NodeOutput:
    """The DISTILL_LOSS of an editing recipe (recipes.dds or recipes.pds): target is the positive branch, source the
    branch evaluated at the reference latent (model space)."""
    check_conditioning("negative", negative, target, "target")
    check_conditioning("source", source, target, "target")
    samples = check_latent(model, reference, "reference")
    check_finite("reference", samples)
    latent = model.get_model_object("latent_format").process_in(samples.float())
    loss = recipe(latent, cfg=cfg, weighting=weighting, t_min=t_min, t_max=t_max, t_schedule=t_schedule,
                  grad_clip=grad_clip)
    conds = {"positive": target, "negative": negative, "source": source}
    warn_if_compounding(model, f"{recipe.__name__.upper()} Loss", {"cfg": cfg}, conds)
    return io.NodeOutput(DistillLoss(model, conds, loss))


class DDSLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillDDSLoss",
            display_name="DDS Loss",
            category=CATEGORY,
            description="Delta Denoising Score: edits an image by the difference between the target prompt's "
                        "guidance at the image and the source prompt's at the original, both noised alike, so "
                        "what the prompts share (the picture's identity) is left alone. Connect to Optimize "
                        "Latent or Optimize Image.",
            inputs=editing_inputs(DDS, "Guidance scale of both prompts, standard form ε̂_u + cfg·(ε̂_c − ε̂_u); "
                                       "DDS uses 7.5. At 1 the negative branch is skipped.",
                                  "'uniform' (w = 1, as DDS's code)"),
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        return widget_message(cls, t_min=t_min, t_max=t_max) or check_timesteps(t_min, t_max)

    @classmethod
    def execute(cls, model, reference, source, target, negative, cfg, weighting, t_min, t_max, t_schedule,
                grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        return editing_loss(recipes.dds, model, reference, source, target, negative, cfg, weighting, t_min, t_max,
                            t_schedule, grad_clip)
