"""The "DDIM-Invert Noise" node: SDI's noise, inferred by DDIM inversion of the current latent."""
from comfy_api.latest import io

from ..distill import DDIMInversion
from .checks import check_widgets
from .defaults import defaults
from .types import CATEGORY, DistillNoiseType

SDI = defaults(DDIMInversion)


class DDIMInvertNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillDDIMInvertNoise",
            display_name="DDIM-Invert Noise",
            category=CATEGORY,
            description="SDI (Lukoianov et al. 2024): instead of fresh random noise, each step's noise is found "
                        "by DDIM inversion of the current latent up to the step's noise level, with the loss's "
                        "own model and prompts. Connect to the noise input of SDS Loss; use cfg 8.5 (the paper's "
                        "7.5) and t_schedule linear_anneal (0.98 → 0.2) there, weighting auto. The defaults are "
                        "SDI's reference code.",
            inputs=[
                io.Int.Input("inversion_steps", default=SDI["steps"], min=1, max=1000,
                             tooltip="Grid of the inversion over the whole schedule (the reference code's: table "
                                     "indices 0, 1, 101, 201, … for 10); a step at noise level t costs about "
                                     "inversion_steps·t + 2 extra model calls. 10 suffices (paper §6.2)."),
                io.Float.Input("inversion_cfg", default=SDI["cfg"], min=-30.0, max=30.0, step=0.1, round=0.01,
                               tooltip="CFG of the inversion, standard form: −6.5 here is the paper's −7.5 (its code "
                                       "computes ε̂_c + s·(ε̂_c − ε̂_u) = standard form with s + 1). Negative is "
                                       "right: with a forward cfg of 8.5 it is the paper's best; 1 (= its 0) "
                                       "over-saturates (ISM), 8.5 (= its 7.5) drifts. On guidance-distilled models "
                                       "(Flux dev) every branch is also guided by its prompt's FluxGuidance: set it "
                                       "to 1 on every prompt for this scale to mean what it says (docs/flux.md)."),
                io.Float.Input("eta", default=SDI["eta"], min=0.0, max=2.0, step=0.01,
                               tooltip="Weight of extra random noise added to the inferred noise (0 = none)."),
                io.Combo.Input("eta_placement", options=["every_step", "end"], default=SDI["eta_placement"],
                               tooltip="'every_step' (reference code, default): at every inversion step, with the "
                                       "DDPM posterior variance between its two levels; 'end' (paper, Alg. 2): "
                                       "once, on the inferred noise."),
                io.Boolean.Input("tau_jitter", default=SDI["jitter"],
                                 tooltip="End the inversion at t + τ, τ random within one inversion step, so the "
                                         "grid does not always land on the same levels."),
                io.Combo.Input("variant", options=["inverted", "renoise"], default=SDI["variant"],
                               tooltip="'inverted' (reference code, default): give the model the inverted latent "
                                       "itself, at the scale of the level t it is told (with tau_jitter it carries "
                                       "a little more noise than t). 'renoise' (paper, Alg. 2): read the noise off "
                                       "the inverted latent and noise the clean latent with it at t."),
                io.Int.Input("refresh_every", default=SDI["refresh_every"], min=1, max=1000,
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
