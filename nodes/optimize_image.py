"""The "Optimize Image": pixel-space score distillation through the VAE, with LMC-SDS's patch schedule."""
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..distill import Settings, Window, optimize
from ..distill.image import LATENT_SCALE, ImageReference, PatchSchedule, check_patch_phase, latent_grid, latent_view
from ..distill.losses import reference_at
from ..distill.optimize import check_finite, check_mask
from .checks import check_image, check_mask_input, check_widgets, latent_rank
from .evaluation import run_with_model
from .plot import history_image
from .types import CATEGORY, DistillLoss, DistillLossType
from .vae_gradients import differentiable_encoder, encoder_memory

PREVIEW_SIZE = 512


def preview(pixels: torch.Tensor):
    image = Image.fromarray((pixels[0].detach().movedim(0, -1).clamp(0, 1).cpu().numpy() * 255).astype(np.uint8))
    return ("JPEG", image, PREVIEW_SIZE)


def check_vae_fits(vae, model) -> None:
    """The VAE's latents must have the model's rank: an image VAE for an image model, a video VAE (its images
    one frame each) for a model whose latents have a time axis."""
    rank = latent_rank(model)
    if getattr(vae, "latent_dim", None) not in (2, 3) or vae.latent_dim + 2 != rank:
        family = type(model.model.model_config).__name__
        kind = {4: "an image VAE (AutoencoderKL)", 5: "a video VAE (Wan's, which Qwen-Image uses too)"}.get(
            rank, "one made for it")
        raise ValueError(f"vae: it makes {getattr(vae, 'latent_dim', '?')}-dimensional latents but the model "
                         f"({family}) works on {rank - 2}-dimensional ones; connect the model's own VAE, {kind}.")
    if vae.spacial_compression_encode() != LATENT_SCALE:
        raise ValueError(f"vae: it compresses {vae.spacial_compression_encode()}× but Optimize Image places its "
                         f"patches on a {LATENT_SCALE}-pixel grid (SD, SDXL, SD3, Flux, Wan 2.1 and Qwen-Image VAEs); "
                         "optimize a latent instead (VAE Encode, then Optimize Latent).")


class OptimizeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillOptimizeImage",
            display_name="Optimize Image",
            category=CATEGORY,
            description="Optimizes pixels with a score-distillation loss, through the VAE encoder: images of any "
                        "size, editing with an L2 anchor to the original. First the whole image at the model's "
                        "native size, then random native-size patches (LMC-SDS). Defaults: the paper's synthesis; "
                        "for editing use whole_image_steps 200, l2_to_init 0.1, learning_rate 0.02.",
            inputs=[
                io.Vae.Input("vae", tooltip="The model's full VAE (AutoencoderKL; TAESD cannot pass gradients)."),
                DistillLossType.Input("loss", tooltip="SDS Loss (with or without corrector or DDIM-Invert Noise) "
                                                      "or NFSD Guidance."),
                io.Combo.Input("start", options=["image", "grey"], default="image",
                               tooltip="'image': start from the image input (editing); 'grey': a flat 50% grey "
                                       "image of width × height (synthesis, as the paper)."),
                io.Int.Input("width", default=512, min=64, max=8192, step=8, tooltip="Width of the grey start."),
                io.Int.Input("height", default=512, min=64, max=8192, step=8, tooltip="Height of the grey start."),
                io.Int.Input("steps", default=500, min=1, max=10000, tooltip="Optimization steps."),
                io.Float.Input("learning_rate", default=0.1, min=0.0001, max=1.0, step=0.001,
                               tooltip="Adam step size in pixel units (0..1); paper: 0.1 synthesis, 0.02 editing."),
                io.Float.Input("lr_end", default=0.03, min=0.0, max=1.0, step=0.001,
                               tooltip="The learning rate decays along a cosine to this value at the last step."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the timesteps, the noise and the patches."),
                io.Float.Input("l2_to_init", default=0.0, min=0.0, max=1000.0, step=0.01,
                               tooltip="Weight of a ½‖x − x_start‖² pull to the start image (editing: 0.1)."),
                io.Int.Input("whole_image_steps", default=150, min=0, max=10000,
                             tooltip="Steps on the whole image resized to native_size before patches "
                                     "(paper: 150 synthesis, 200 editing)."),
                io.Int.Input("patches", default=2, min=1, max=16,
                             tooltip="Random native-size patches per image and step after that (paper: 2)."),
                io.Int.Input("native_size", default=512, min=64, max=4096, step=8,
                             tooltip="The model's native resolution in pixels: 512 for SD1.x, 1024 for SDXL/SD3/Flux."),
                io.Image.Input("image", optional=True,
                               tooltip="The start image (start = image). With DDS or PDS Loss it is also the "
                                       "reference: the loss compares each view of the result with the same view "
                                       "of this image (resized or cut, then encoded), so connect the image whose "
                                       "encoding is the loss's reference."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Where the image may change (1 = edit, 0 = keep, soft values partly), at the "
                                      "image's size: e.g. Load Image's mask painted in the MaskEditor. Outside it "
                                      "the result is the start image exactly."),
            ],
            outputs=[io.Image.Output(display_name="image"),
                     io.Image.Output(display_name="loss_plot",
                                     tooltip="Loss proxy ½‖g‖²/B and gradient norm per step (log scale).")],
        )

    @classmethod
    def execute(cls, vae, loss: DistillLoss, start, width, height, steps, learning_rate, lr_end, seed, l2_to_init,
                whole_image_steps, patches, native_size, image=None, mask=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        check_vae_fits(vae, loss.model)
        if start == "image":
            if image is None:
                raise ValueError("image: start is 'image' but no image is connected; connect one or choose 'grey'.")
            pixels = check_image(image)[..., :3].movedim(-1, 1)
        else:
            pixels = torch.full((1, 3, height, width), 0.5)
        check_finite("image", pixels)
        core = loss.loss
        if core.reference is not None:
            if start != "image":
                raise ValueError("start: DDS and PDS edit the image input, which is their reference here; set start "
                                 "to 'image'.")
            grid = latent_grid(*pixels.shape[-2:])[0]
            reference_at(core.reference, [Window(i, 0, 0, *grid, grid) for i in range(len(pixels))], grid)
        if mask is not None:
            mask = comfy.utils.reshape_mask(check_mask_input(mask, len(pixels)), pixels.shape).to(pixels)
            check_mask("mask: it", mask)
        settings = Settings(steps=steps, lr=learning_rate, optimizer="adam", lr_schedule="cosine",
                            l2_to_init=l2_to_init, seed=seed, lr_end=min(lr_end, learning_rate), clamp=(0.0, 1.0))
        schedule = PatchSchedule(native_size, whole_image_steps, patches)
        check_patch_phase(core, schedule, *pixels.shape[-2:], steps)
        pbar = comfy.utils.ProgressBar(steps)

        def on_step(step, x):
            pbar.update_absolute(step + 1, steps, preview(x))
            comfy.model_management.throw_exception_if_processing_interrupted()

        results = []
        channels = loss.model.get_model_object("latent_format").latent_channels
        patch_phase = schedule.has_patch_phase(*pixels.shape[-2:], steps)
        views = len(pixels) * (patches if patch_phase else 1)  # images the loss sees per step, native size at most
        frames = (1,) * (vae.latent_dim - 2)
        placeholder = torch.zeros(views, channels, *frames, native_size // 8, native_size // 8)

        with differentiable_encoder(vae, loss.model) as (vae_patcher, encode):
            def run(denoiser, latent):
                distill = core
                if core.reference is not None:
                    distill = replace(core, reference=ImageReference(pixels.to(latent.device), schedule, encode))
                results.append(optimize(pixels.to(latent.device), distill, denoiser, settings, on_step,
                                        view=latent_view(schedule, encode),
                                        mask=None if mask is None else mask.to(latent.device)))
                return latent

            run_with_model(loss.model, loss.conds, placeholder, seed, run, also_load=[vae_patcher],
                           memory=encoder_memory(vae, views, native_size, native_size))
        out, history = results[0]
        out = out.movedim(1, -1).to(comfy.model_management.intermediate_device())
        return io.NodeOutput(out, history_image(history))
