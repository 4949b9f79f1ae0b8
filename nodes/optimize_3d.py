"""The "Optimize 3D" node: distills a voxel scene with any loss of the pack, seen through the VAE as Optimize
Image's whole-image phase sees pixels, into ComfyUI's own VOXEL, a turntable and the loss plot."""
import torch

import comfy.model_management
import comfy.utils
from comfy_api.latest import io

from ..distill.cameras import CameraRanges
from ..distill.optimize_scene import SceneSettings, SceneView, check_scene_loss, optimize_scene, render_turntable
from ..distill.scene_prior import SameForEveryCamera
from .checks import check_widgets, widget_message
from .evaluation import run_with_model
from .optimize_image import preview
from .plot import history_image
from .save_coloured_glb import ColouredVoxel
from .types import CATEGORY, DistillLoss, DistillLossType, DistillViewsType
from .vae_gradients import check_vae_fits, differentiable_encoder, encoder_memory
from .views import CameraDenoiser, check_views

DEFAULTS = SceneSettings()
RANGES = CameraRanges()
RENDER_BYTES_PER_SAMPLE = 512
"""Working memory per ray sample of a render's forward and backward (the field's inputs, outputs and their
gradients in float32; benchmarks/scene_step.py measures it)."""


def range_inputs(name: str, bounds: tuple[float, float], low: float, high: float, what: str) -> list:
    return [io.Float.Input(f"{name}_{end}", default=value, min=low, max=high, step=0.1,
                           tooltip=f"{end.capitalize()} of the training cameras' {what} (threestudio: "
                                   f"{bounds[0]:g} to {bounds[1]:g}).")
            for end, value in (("min", bounds[0]), ("max", bounds[1]))]


def check_ranges(values: dict) -> bool | str:
    """'NAME_min: …' when a camera range's minimum is above its maximum."""
    for name in ("elevation", "distance", "fovy"):
        low, high = values.get(f"{name}_min"), values.get(f"{name}_max")
        if low is not None and high is not None and low > high:
            return (f"{name}_min: {low} is above {name}_max ({high}); the cameras' {name} is drawn between "
                    f"them, so set {name}_min ≤ {name}_max.")
    return True


def render_memory(settings: SceneSettings) -> int:
    rays = settings.cameras_per_step * settings.render_size ** 2
    return rays * settings.samples * RENDER_BYTES_PER_SAMPLE


class Optimize3D(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DistillOptimize3D",
            display_name="Optimize 3D",
            category=CATEGORY,
            description="Text-to-3D by score distillation (DreamFusion), in pure PyTorch: a density + colour voxel "
                        "grid is rendered from random cameras (threestudio's dreamfusion-sd ranges), each render "
                        "resized to native_size and encoded by the VAE with gradients, and the loss (any text-to-image "
                        "loss of the pack) pulls every view towards the prompt. Connect 3D View Prompts to views against "
                        "the multi-face (Janus) problem. VOXEL → VoxelToMesh → SaveGLB shows it in the 3D viewer, "
                        "Save Coloured GLB → Preview 3D with its colours.",
            inputs=[
                io.Vae.Input("vae", tooltip="The model's full VAE (AutoencoderKL; TAESD cannot pass gradients)."),
                DistillLossType.Input("loss", tooltip="A text-to-image loss: SDS Loss (with or without corrector "
                                                      "or DDIM-Invert Noise), NFSD, CSD, ISM, SDS-Bridge or ASD; "
                                                      "its positive is replaced per camera by views."),
                io.Int.Input("steps", default=DEFAULTS.steps, min=1, max=100000,
                             tooltip="Optimization steps; each renders cameras_per_step views and runs the model "
                                     "once."),
                io.Float.Input("learning_rate", default=DEFAULTS.lr, min=0.0001, max=1.0, step=0.001,
                               tooltip="Adam step size on the grid's density and colour logits."),
                io.Int.Input("render_size", default=DEFAULTS.render_size, min=16, max=512, step=8,
                             tooltip="Side of each training render in pixels (threestudio: 64); it is resized to "
                                     "native_size before the VAE."),
                io.Int.Input("grid", default=DEFAULTS.grid, min=8, max=256, step=1,
                             tooltip="Voxels per side of the scene grid over [−1, 1]³; memory grows with its cube."),
                io.Int.Input("samples_per_ray", default=DEFAULTS.samples, min=8, max=1024,
                             tooltip="Samples along each camera ray (threestudio: 512 with importance sampling)."),
                io.Int.Input("cameras_per_step", default=DEFAULTS.cameras_per_step, min=1, max=16,
                             tooltip="Views rendered and scored per step, in one batched model call "
                                     "(threestudio: 1)."),
                io.Int.Input("native_size", default=512, min=64, max=4096, step=8,
                             tooltip="The model's native resolution: 512 for SD1.x, 1024 for SDXL/SD3/Flux."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Seeds the scene, the cameras, the light, the timesteps and the noise."),
                *range_inputs("elevation", RANGES.elevation, -89.0, 89.0, "elevation in degrees"),
                *range_inputs("distance", RANGES.distance, 0.1, 10.0, "distance from the centre (scene box ±1)"),
                *range_inputs("fovy", RANGES.fovy, 1.0, 179.0, "vertical field of view in degrees"),
                io.Int.Input("turntable_frames", default=24, min=1, max=360,
                             tooltip="Frames of the turntable output, at equal azimuth steps from the front."),
                io.Int.Input("turntable_size", default=256, min=16, max=1024, step=8,
                             tooltip="Side of each turntable frame in pixels."),
                io.Float.Input("turntable_elevation", default=15.0, min=-89.0, max=89.0, step=0.5,
                               tooltip="Elevation of the turntable camera in degrees."),
                DistillViewsType.Input("views", optional=True,
                                       tooltip="3D View Prompts: each camera's own conditioning. Without it every "
                                               "camera sees the loss's positive prompt (multi-face results)."),
            ],
            outputs=[io.Voxel.Output(display_name="voxel",
                                     tooltip="Opacity in 0..1 of a layer 1/8 of the box thick at each cell, "
                                             "[1, D, H, W]: VoxelToMesh (its default threshold 0.6 keeps cells "
                                             "where that layer stops 60% of the light) → SaveGLB; it also "
                                             "carries the albedo for Save Coloured GLB."),
                     io.Image.Output(display_name="turntable",
                                     tooltip="Renders from turntable_frames azimuths: SaveAnimatedWEBP, video."),
                     io.Image.Output(display_name="loss_plot",
                                     tooltip="Loss proxy ½‖g‖²/B and gradient norm per step (log scale).")],
        )

    @classmethod
    def validate_inputs(cls, elevation_min: float, elevation_max: float, distance_min: float, distance_max: float,
                        fovy_min: float, fovy_max: float) -> bool | str:
        values = dict(elevation_min=elevation_min, elevation_max=elevation_max, distance_min=distance_min,
                      distance_max=distance_max, fovy_min=fovy_min, fovy_max=fovy_max)
        return widget_message(cls, **values) or check_ranges(values)

    @classmethod
    def execute(cls, vae, loss: DistillLoss, steps, learning_rate, render_size, grid, samples_per_ray,
                cameras_per_step, native_size, seed, elevation_min, elevation_max, distance_min, distance_max,
                fovy_min, fovy_max, turntable_frames, turntable_size, turntable_elevation,
                views=None) -> io.NodeOutput:
        check_widgets(cls, locals())
        ranges = check_ranges(locals())
        if ranges is not True:
            raise ValueError(ranges)
        check_scene_loss(loss.loss)
        check_vae_fits(vae, loss.model)
        if views is not None:
            check_views(views, loss.conds["positive"])
        cameras = CameraRanges(distance=(distance_min, distance_max), fovy=(fovy_min, fovy_max),
                               elevation=(elevation_min, elevation_max))
        settings = SceneSettings(steps=steps, lr=learning_rate, cameras_per_step=cameras_per_step,
                                 render_size=render_size, samples=samples_per_ray, grid=grid, seed=seed,
                                 cameras=cameras)
        pbar = comfy.utils.ProgressBar(steps)

        def on_step(step, renders):
            pbar.update_absolute(step + 1, steps, preview(renders))
            comfy.model_management.throw_exception_if_processing_interrupted()

        channels = loss.model.get_model_object("latent_format").latent_channels
        latent_shape = (cameras_per_step, channels, native_size // 8, native_size // 8)
        results = []
        with differentiable_encoder(vae, loss.model) as (vae_patcher, encode):
            def run(denoiser, latent):
                prior = (SameForEveryCamera(denoiser) if views is None
                         else CameraDenoiser(denoiser, views, latent_shape, seed))
                with torch.inference_mode(False):
                    results.append(optimize_scene(loss.loss, prior, SceneView(native_size, encode), settings,
                                                  latent.device, on_step))
                return latent

            memory = encoder_memory(vae, cameras_per_step, native_size, native_size) + render_memory(settings)
            run_with_model(loss.model, loss.conds, torch.zeros(latent_shape), seed, run, also_load=[vae_patcher],
                           memory=memory)
        scene, history = results[0]
        device = comfy.model_management.intermediate_device()
        frames = render_turntable(scene, turntable_frames, turntable_size, turntable_elevation,
                                  samples=2 * samples_per_ray)
        voxel = ColouredVoxel(scene.voxel().detach()[None].to(device), scene.albedo_grid().detach().to(device))
        return io.NodeOutput(voxel, frames.movedim(1, -1).to(device), history_image(history))
