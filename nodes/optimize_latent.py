"""The "Optimize Latent" node: runs a DISTILL_LOSS on a latent batch."""
import torch

import comfy.model_management
import comfy.utils
import latent_preview
from comfy_api.latest import io

from ..distill import LR_SCHEDULES, OPTIMIZERS, Settings, optimize
from ..distill.optimize import check_mask
from .checks import check_latent, check_mask_input, check_widgets
from .evaluation import run_with_model
from .plot import history_image
from .types import CATEGORY, DistillLoss, DistillLossType


class OptimizeLatent(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillOptimizeLatent",
            display_name="Optimize Latent",
            category=CATEGORY,
            description="Optimizes a latent batch with a score-distillation loss instead of sampling it. "
                        "Each batch item gets its own noise stream; the same seed gives the same result. A noise "
                        "mask on the latent (Set Latent Noise Mask) limits the edit to the masked region.",
            inputs=[
                io.Latent.Input("latent", tooltip="The starting latent (Empty Latent Image, or VAE Encode of an "
                                                  "image to edit). Its channels must match the loss's model. With a "
                                                  "noise mask (Set Latent Noise Mask) only the masked region changes, "
                                                  "soft masks partly; the rest stays exactly as it was."),
                DistillLossType.Input("loss", tooltip="The loss to minimize: SDS Loss or another node of this pack."),
                io.Int.Input("steps", default=500, min=1, max=10000,
                             tooltip="Optimization steps; each costs one batched model evaluation."),
                io.Float.Input("learning_rate", default=0.1, min=0.0001, max=10.0, step=0.001,
                               tooltip="Step size in latent units (Adam: 0.01–0.1 is usual for latents; sgd: the "
                                       "DDS notebook's 0.1)."),
                io.Combo.Input("optimizer", options=list(OPTIMIZERS), default="adamw",
                               tooltip="'adam' or 'adamw' (weight decay 0.01) with threestudio's betas (0.9, 0.99) "
                                       "and eps 1e-15; 'adam_torch': Adam at PyTorch's defaults, betas (0.9, 0.999), "
                                       "eps 1e-8 (PDS's notebook, without AdamW's decay); 'sgd': plain SGD on the "
                                       "DDS notebook's loss 2000·Σ(z·g)/(H·W), a step of lr·2000/(H·W)·g. Adam "
                                       "steps every element by about lr whatever its gradient's size, so editing "
                                       "with DDS moves even what both prompts share; sgd leaves it."),
                io.Combo.Input("lr_schedule", options=list(LR_SCHEDULES), default="cosine",
                               tooltip="'cosine' decays the learning rate to 0 over the run; 'constant' keeps it."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the timesteps and noise; the same seed and inputs give the same latent."),
                io.Float.Input("l2_to_init", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Weight of a ½‖x − x_start‖² pull back to the starting latent; "
                                       "use it for editing (0 = off)."),
            ],
            outputs=[io.Latent.Output(display_name="latent"),
                     io.Image.Output(display_name="loss_plot",
                                     tooltip="Loss proxy ½‖g‖²/B and gradient norm per step (log scale).")],
        )

    @classmethod
    def execute(cls, latent, loss: DistillLoss, steps, learning_rate, optimizer, lr_schedule, seed,
                l2_to_init) -> io.NodeOutput:
        check_widgets(cls, locals())
        samples = check_latent(loss.model, latent)
        mask = None
        if "noise_mask" in latent:  # resized to the latent as KSampler's prepare_mask does
            mask = check_mask_input(latent["noise_mask"], len(samples), "latent: its noise_mask", samples.ndim == 5)
            mask = comfy.utils.reshape_mask(mask, samples.shape).to(samples)
            check_mask("latent: its noise_mask, resized to the latent (one cell per 8 pixels),", mask)
        settings = Settings(steps=steps, lr=learning_rate, optimizer=optimizer, lr_schedule=lr_schedule,
                            l2_to_init=l2_to_init, seed=seed)
        preview = latent_preview.prepare_callback(loss.model, steps)

        def on_step(step, x):
            preview(step, x, x, steps)
            comfy.model_management.throw_exception_if_processing_interrupted()

        histories = []

        def run(denoiser, x):
            out, history = optimize(x, loss.loss, denoiser, settings, on_step,
                                    mask=None if mask is None else mask.to(x))
            histories.append(history)
            return out

        out = run_with_model(loss.model, loss.conds, samples, seed, run).to(samples.device)
        if mask is not None:  # the latent's own values where nothing was optimized, not their model-space round trip
            out = torch.where(mask > 0, out, samples)
        result = dict(latent)
        result["samples"] = out.to(comfy.model_management.intermediate_device())
        return io.NodeOutput(result, history_image(histories[0]))
