"""The optimization loop for a 3D scene: every step draws cameras, renders, shows the renders to the loss
as Optimize Image's whole-image phase does (resized to the model's native size, then encoded), and steps Adam
on the scene with the loss's gradient plus the regularizers.

Random streams: one CPU generator per camera slot for the loss (t, ε, inversion), as ``optimize`` gives each
batch item, and one more for the cameras, the lighting and the stratified samples; all from the seed, so the
same seed gives the same scene bit for bit on one device.
"""
import math
from dataclasses import dataclass, field
from typing import Callable

import kornia
import torch
from torch import Tensor

from .cameras import CameraRanges, Cameras, turntable
from .image import fit_size
from .inversion import DDIMInversion
from .losses import target_loss
from .optimize import LR_SCHEDULES, History, Loss
from .regularizers import Regularizers
from .render import render
from .run import Run, item_generators
from .scene import VoxelScene
from .scene_prior import CameraBatch, ViewPrior
from .shading import Shading


@dataclass(frozen=True)
class SceneView:
    """What the loss sees of a render [B, 3, h, w] in [0, 1]: it resized (antialiased) so that its longer side
    is the model's native size in pixels, then ``encode``d (the VAE encoder with gradients; the identity for a
    pixel-space prior)."""

    native: int
    encode: Callable[[Tensor], Tensor]

    def __call__(self, rgb: Tensor) -> Tensor:
        size = fit_size(*rgb.shape[-2:], self.native)
        if tuple(rgb.shape[-2:]) != size:
            rgb = kornia.geometry.transform.resize(rgb, size, antialias=True)
        return self.encode(rgb)


@dataclass(frozen=True)
class SceneSettings:
    """steps, Adam's lr (betas (0.9, 0.99), eps 1e-15 as threestudio; "cosine" decays it to 0 as ``optimize``
    does, threestudio keeps it "constant"), cameras per step (threestudio: 1), the
    render's side in pixels (threestudio: 64), samples per ray, the grid's resolution, the background colour."""

    steps: int = 1000
    lr: float = 0.05
    lr_schedule: str = "cosine"
    cameras_per_step: int = 1
    render_size: int = 64
    samples: int = 64
    grid: int = 32
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    cameras: CameraRanges = field(default_factory=CameraRanges)
    shading: Shading = field(default_factory=Shading)
    regularizers: Regularizers = field(default_factory=Regularizers)

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}.")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}.")
        if not 1 <= self.cameras_per_step <= 64:
            raise ValueError(f"cameras per step must be within [1, 64], got {self.cameras_per_step}.")
        if not 8 <= self.render_size <= 1024:
            raise ValueError(f"render size must be within [8, 1024] pixels, got {self.render_size}.")
        if not 2 <= self.grid <= 512:
            raise ValueError(f"grid resolution must be within [2, 512], got {self.grid}.")
        if not 1 <= self.samples <= 4096:
            raise ValueError(f"samples per ray must be within [1, 4096], got {self.samples}.")
        if not all(0 <= c <= 1 for c in self.background) or len(self.background) != 3:
            raise ValueError(f"background must be three values in [0, 1], got {self.background}.")


def check_scene_loss(loss: Loss) -> None:
    """Refuses what a scene cannot give a loss: a reference image (DDS, PDS edit one), and SDI noise kept over
    several steps (the camera changes every step, so it would be inverted from another view)."""
    if getattr(loss, "reference", None) is not None:
        raise ValueError("loss: DDS and PDS edit a reference image and a 3D scene has none to give them; use SDS, "
                         "NFSD, SDI (DDIM-Invert Noise) or LMC-SDS.")
    noise = getattr(loss, "noise", None)
    if isinstance(noise, DDIMInversion) and noise.refresh_every > 1:
        raise ValueError(f"refresh_every: DDIM-Invert Noise would reuse noise inverted from one camera's render for "
                         f"{noise.refresh_every} steps while the camera changes every step; set refresh_every to 1.")


StepCallback = Callable[[int, Tensor], None]
"""Called after every step with (step index, this step's renders [B, 3, H, W] in [0, 1]); raising stops the run."""


def optimize_scene(loss: Loss, prior: ViewPrior, view: SceneView, settings: SceneSettings,
                   device: torch.device | str | None = None,
                   on_step: StepCallback | None = None) -> tuple[VoxelScene, History]:
    """Distills a scene from `prior` with `loss`; the scene, its optimizer state and the renders live on `device`
    (the model's), the generators and the drawn cameras on the CPU."""
    check_scene_loss(loss)
    b = settings.cameras_per_step
    generators = item_generators(settings.seed, b + 1)
    scene_generator = generators[-1]
    run = Run(generators[:b], settings.steps)
    history = History([], [])
    with torch.inference_mode(False), torch.enable_grad():
        scene = VoxelScene(settings.grid, scene_generator, device)
        background = torch.tensor(settings.background).to(scene.density)
        opt = torch.optim.Adam(scene.parameters(), lr=settings.lr, betas=(0.9, 0.99), eps=1e-15)
        for step in range(settings.steps):
            run.step = step
            if settings.lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * run.progress))
            cameras = settings.cameras.sample(b, scene_generator)
            lighting = settings.shading.sample(run.progress, cameras, scene_generator)
            on_device = cameras.to(scene.density.device)
            rays = on_device.rays(settings.render_size, settings.render_size)
            shader = settings.shading.shader(lighting._replace(lights=lighting.lights.to(scene.density.device)))
            out = render(scene, rays, settings.samples, background, shader, scene_generator)
            z = view(out.rgb)
            g = loss.gradient(CameraBatch(prior.for_cameras(cameras), b), z, run)
            objective = target_loss(z, g) + settings.regularizers(out, scene, run.progress)
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            history.loss.append(0.5 * g.pow(2).sum().item() / z.shape[0])
            history.grad_norm.append(g.flatten(1).norm(dim=1).mean().item())
            if on_step is not None:
                on_step(step, out.rgb.detach())
    return scene, history


@torch.no_grad()
def render_views(scene: VoxelScene, cameras: Cameras, size: int, samples: int = 128,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tensor:
    """Albedo renders [N, 3, size, size] in [0, 1] from each camera (one at a time), on the scene's device."""
    device = scene.density.device
    colour = torch.tensor(background).to(scene.density)
    return torch.cat([render(scene, cameras[i].to(device).rays(size, size), samples, colour).rgb
                      for i in range(len(cameras))])


def render_turntable(scene: VoxelScene, count: int, size: int, elevation: float = 15.0, samples: int = 128,
                     background: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tensor:
    """The turntable [count, 3, size, size]: ``cameras.turntable``'s cameras (distance 2, fovy 70°)."""
    return render_views(scene, turntable(count, elevation), size, samples, background)
