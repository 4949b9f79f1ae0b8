"""The "DDIM-Invert Noise" node: SDI's noise, inferred by DDIM inversion of the current latent."""
from comfy_api.latest import io

from ..distill import DDIMInversion
from .checks import check_widgets
from .types import CATEGORY, DistillNoiseType


class DDIMInvertNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillDDIMInvertNoise",
            display_name="DDIM-Invert Noise",
            category=CATEGORY,
            description="SDI (Lukoianov et al. 2024): instead of fresh random noise, each step's noise is found "
                        "by DDIM inversion of the current latent up to the step's noise level, with the loss's "
                        "own model and prompts. Connect to the noise input of SDS Loss; use t_schedule "
                        "linear_anneal (0.98 → 0.2) and cfg 7.5 there.",
            inputs=[
                io.Int.Input("inversion_steps", default=10, min=1, max=1000,
                             tooltip="Grid of the inversion over the whole schedule; a step at noise level t "
                                     "costs about inversion_steps·t + 1 extra model calls. 10 suffices (paper §6.2)."),
                io.Float.Input("inversion_cfg", default=-7.5, min=-30.0, max=30.0, step=0.1, round=0.01,
                               tooltip="CFG of the inversion, standard form. Negative is right: −7.5 with a "
                                       "forward cfg of 7.5 is the paper's best; 0 over-saturates (ISM), +7.5 drifts."),
                io.Float.Input("eta", default=0.3, min=0.0, max=2.0, step=0.01,
                               tooltip="Weight of extra random noise added to the inferred noise (0 = none)."),
                io.Combo.Input("eta_placement", options=["end", "every_step"], default="end",
                               tooltip="'end': once, on the inferred noise (paper); 'every_step': at every "
                                       "inversion step, as a forward diffusion step would add it (reference code)."),
                io.Boolean.Input("tau_jitter", default=True,
                                 tooltip="End the inversion at t + τ, τ random within one inversion step, so the "
                                         "grid does not always land on the same levels."),
                io.Combo.Input("variant", options=["renoise", "inverted"], default="renoise",
                               tooltip="'renoise' (paper, default): read the noise off the inverted latent and "
                                       "noise the clean latent with it at t, so the model sees a latent of the level "
                                       "it is told. 'inverted' (reference code): give the model the inverted latent "
                                       "itself, labelled t; with tau_jitter it carries a little more noise than t."),
                io.Int.Input("refresh_every", default=1, min=1, max=1000,
                             tooltip="Re-invert every k optimization steps and reuse the noise in between: "
                                     "about k times fewer inversion calls. 1 = the paper."),
            ],
            outputs=[DistillNoiseType.Output(display_name="noise")],
        )

    @classmethod
    def execute(cls, inversion_steps, inversion_cfg, eta, eta_placement, tau_jitter, variant,
                refresh_every) -> io.NodeOutput:
        check_widgets(cls, locals())
        return io.NodeOutput(DDIMInversion(steps=inversion_steps, cfg=inversion_cfg, eta=eta,
                                           eta_placement=eta_placement, jitter=tau_jitter, variant=variant,
                                           refresh_every=refresh_every))
