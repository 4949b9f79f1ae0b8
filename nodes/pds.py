"""The "PDS Loss" node: Posterior Distillation Sampling editing (Koo et al., CVPR 2024)."""
from comfy_api.latest import io

from ..distill import recipes
from .checks import check_widgets, widget_message
from .dds import editing_inputs, editing_loss
from .defaults import defaults
from .sds import check_timesteps
from .types import CATEGORY, DistillLossType

PDS = defaults(recipes.pds)


class PDSLoss(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillPDSLoss",
            display_name="PDS Loss",
            category=CATEGORY,
            description="Posterior Distillation Sampling: edits an image by matching the noise a denoising step "
                        "would need for the edited image under the target prompt to the one the original needs "
                        "under the source prompt, so the edit stays close to the original. Connect to Optimize "
                        "Latent or Optimize Image.",
            inputs=editing_inputs(PDS, "Guidance scale of both prompts, standard form ε̂_u + cfg·(ε̂_c − ε̂_u); "
                                       "PDS uses 100 (its posterior step weighs guidance little).",
                                  "'uniform' (PDS has no w(t))"),
            outputs=[DistillLossType.Output(display_name="loss")],
        )

    @classmethod
    def validate_inputs(cls, t_min: float, t_max: float) -> bool | str:
        problem = widget_message(cls, t_min=t_min, t_max=t_max) or check_timesteps(t_min, t_max)
        if problem is True and t_min is not None:
            try:
                recipes.check_pds_t_min(t_min)
            except ValueError as error:
                return str(error)
        return problem

    @classmethod
    def execute(cls, model, reference, source, target, negative, cfg, weighting, t_min, t_max, t_schedule,
                grad_clip) -> io.NodeOutput:
        check_widgets(cls, locals())
        return editing_loss(recipes.pds, model, reference, source, target, negative, cfg, weighting, t_min, t_max,
                            t_schedule, grad_clip)
