"""An exact multi-view prior: K known coloured scenes, rendered by an analytic ray tracer, as a mixture per camera.

The scenes are unions of boxes and spheres with flat colours. Their images come from closed-form ray–box
(slab) and ray–sphere (quadratic) intersections, the colour of the nearest hit, averaged over s × s sub-pixel
rays (a box filter), on a background — nothing of the pack's volume renderer. At camera c the positive branch
is the mixture prior of distill/mixture.py over the K scenes' images, and its denoiser is exact (``mixture_x0``).

Which images a camera sees (``views``):
- "camera": the K scenes from camera c itself — the multi-view prior a 3D-consistent model would be;
- "front": from camera c turned to azimuth 0 — a camera-blind prior that shows every camera the front views,
  the setting of the multi-face (Janus) failure of a text-to-image prior;
- "prompt": from every turn of camera c (azimuth steps of ``PROMPT_STEP`` degrees, starting at its own azimuth)
  that has c's view label — what a text model conditioned on "PROMPT, side view" knows: the object from any
  azimuth that prompt covers (both sides for "side"), not the exact angle. The steps start at c's own azimuth
  because the label's azimuth marginal is continuous and so contains c's own view; a fixed grid would drop it.
The unconditional branch "negative" is the K scenes from camera c turned to azimuths 0, 90, 180 and 270 (the
object, from a direction it does not know), "nfsd_negative" those images blurred by one pixel.
"""
from typing import Callable, NamedTuple

import kornia
import torch
from torch import Tensor

from .cameras import CameraRanges, Cameras, Rays, view_labels, wrap_azimuth
from .corrector import SpectralCorrector, collect_triplets, fit_spectral
from .denoiser import Request
from .inversion import ddim_sample
from .mixture import MixtureDenoiser, evaluate_requests, mixture_x0
from .schedule import flow_coefficients, sd3_sigmas, sd15_sigmas, ve_coefficients

VIEW_MODES = ("camera", "front", "prompt")
PROMPT_STEP = 10.0


class Box(NamedTuple):
    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    colour: tuple[float, float, float]


class Sphere(NamedTuple):
    centre: tuple[float, float, float]
    radius: float
    colour: tuple[float, float, float]


def ray_box(rays: Rays, box: Box) -> Tensor:
    """Distance along each ray to its first entry into the box, inf on a miss (slab method)."""
    c = rays.origins.new_tensor(box.centre)
    h = rays.origins.new_tensor(box.half)
    t1 = (c - h - rays.origins) / rays.directions
    t2 = (c + h - rays.origins) / rays.directions
    near = torch.minimum(t1, t2).amax(-1)
    far = torch.maximum(t1, t2).amin(-1)
    return torch.where((far >= near) & (near > 0), near, torch.inf)


def ray_sphere(rays: Rays, sphere: Sphere) -> Tensor:
    """Distance to the nearer root of ‖o + t·d − c‖ = r (unit d), inf on a miss."""
    oc = rays.origins - rays.origins.new_tensor(sphere.centre)
    b = (oc * rays.directions).sum(-1)
    disc = b**2 - ((oc**2).sum(-1) - sphere.radius**2)
    t = -b - disc.clamp(min=0).sqrt()
    return torch.where((disc >= 0) & (t > 0), t, torch.inf)


def trace(scene: list[Box | Sphere], cameras: Cameras, size: int, background: tuple[float, float, float],
          supersample: int = 2) -> Tensor:
    """Images [B, 3, size, size] of one scene, each pixel the mean of supersample² sub-pixel rays."""
    rays = cameras.to(torch.float32).rays(size * supersample, size * supersample)
    hits = torch.stack([ray_box(rays, p) if isinstance(p, Box) else ray_sphere(rays, p) for p in scene])
    colours = torch.tensor([list(background)] + [list(p.colour) for p in scene])
    nearest = hits.amin(0)
    index = torch.where(torch.isfinite(nearest), hits.argmin(0) + 1, 0)
    image = colours[index].permute(0, 3, 1, 2)
    return torch.nn.functional.avg_pool2d(image, supersample)


FIGURES = [
    [Sphere((0.0, 0.0, 0.0), 0.585, (0.85, 0.15, 0.1)),
     Box((0.0, 0.13, 0.585), (0.156, 0.13, 0.156), (0.95, 0.85, 0.1)),
     Sphere((0.546, 0.325, -0.13), 0.208, (0.1, 0.3, 0.9))],
    [Box((0.0, -0.065, 0.0), (0.429, 0.429, 0.429), (0.15, 0.65, 0.2)),
     Sphere((0.0, 0.065, 0.494), 0.208, (0.9, 0.2, 0.8)),
     Box((-0.52, -0.195, 0.13), (0.104, 0.234, 0.104), (0.1, 0.75, 0.85))],
    [Sphere((0.0, -0.065, 0.0), 0.52, (0.15, 0.25, 0.8)),
     Box((0.13, 0.39, 0.325), (0.195, 0.104, 0.156), (0.95, 0.5, 0.1)),
     Sphere((-0.13, 0.0, -0.546), 0.182, (0.2, 0.2, 0.2))],
]
"""Three asymmetric figures: a body, a marker on its front (+z) and one on a side or the back."""


def view_cameras(cameras: Cameras, views: str) -> list[Cameras]:
    """For each camera, the cameras whose images its positive branch mixes (see the module docstring)."""
    if views == "camera":
        return [cameras[i] for i in range(len(cameras))]
    if views == "front":
        return [cameras[i].with_azimuth(torch.zeros(1)) for i in range(len(cameras))]
    if views != "prompt":
        raise ValueError(f"views must be one of {', '.join(VIEW_MODES)}, got {views!r}.")
    turns = torch.arange(0.0, 360.0, PROMPT_STEP)
    out = []
    for i, label in enumerate(view_labels(cameras)):
        c = cameras[i]
        around = Cameras(*(v.repeat(len(turns)) for v in (c.elevation, c.azimuth, c.distance, c.fovy)))
        around = around.with_azimuth(around.azimuth + turns)
        out.append(around[torch.tensor([other == label for other in view_labels(around)])])
    return out


class PerItemMixture:
    """A Denoiser whose item i has mixtures of its own: ``branches`` maps a name to a function giving one
    [K_i, C, H, W] per item, called when the branch is first evaluated."""

    def __init__(self, branches: dict[str, Callable[[], list[Tensor]]], width: float, flow: bool = False):
        self.branches, self.cached = branches, {}
        self.width, self.flow = width, flow
        self.sigmas = sd3_sigmas() if flow else sd15_sigmas()
        self.one_t_per_batch = False

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return flow_coefficients(sigma) if self.flow else ve_coefficients(sigma)

    def means(self, branch: str) -> list[Tensor]:
        if branch not in self.branches:
            raise ValueError(f"this prior has no branch {branch!r}; it has {', '.join(self.branches)}.")
        if branch not in self.cached:
            self.cached[branch] = [m.flatten(1).double() for m in self.branches[branch]()]
        return self.cached[branch]

    def x0(self, x_noisy: Tensor, sigma: Tensor, branch: str) -> Tensor:
        means = self.means(branch)
        if len(x_noisy) != len(means):
            raise ValueError(f"batch of {len(x_noisy)} for a prior of {len(means)} cameras.")
        a, b = self.coefficients(sigma.double())
        return torch.cat([mixture_x0(x_noisy[i:i + 1], m.to(x_noisy.device), self.width, a[i:i + 1], b[i:i + 1])
                          for i, m in enumerate(means)])

    def __call__(self, requests: list[Request], sigma: Tensor) -> list[dict[str, Tensor]]:
        return evaluate_requests(self.x0, requests, sigma)


class SceneMixturePrior:
    """The exact ViewPrior of K scenes (default ``FIGURES``) at the model's native size in pixels; images in [0, 1]
    on `background`, as the renders the loss sees (encode = identity)."""

    def __init__(self, native: int, views: str = "camera", scenes: list[list[Box | Sphere]] = FIGURES,
                 width: float = 0.02, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 supersample: int = 2, flow: bool = False):
        if views not in VIEW_MODES:
            raise ValueError(f"views must be one of {', '.join(VIEW_MODES)}, got {views!r}.")
        self.native, self.views, self.scenes = native, views, scenes
        self.width, self.background, self.supersample, self.flow = width, background, supersample, flow

    def images(self, cameras: Cameras) -> Tensor:
        """The K scenes from each camera: [K·N, 3, native, native], scene-major."""
        return torch.cat([trace(s, cameras, self.native, self.background, self.supersample) for s in self.scenes])

    def for_cameras(self, cameras: Cameras) -> PerItemMixture:
        cameras = cameras.to("cpu")

        def positive():
            return [self.images(c) for c in view_cameras(cameras, self.views)]

        def negative():
            turned = [Cameras(*(v.repeat(4) for v in (c.elevation, c.azimuth, c.distance, c.fovy)))
                      for c in (cameras[i] for i in range(len(cameras)))]
            return [self.images(t.with_azimuth(t.azimuth + torch.arange(4) * 90.0)) for t in turned]

        def blurred():
            return [kornia.filters.gaussian_blur2d(n, (5, 5), (1.0, 1.0)) for n in negative()]

        return PerItemMixture({"positive": positive, "negative": negative, "nfsd_negative": blurred},
                              self.width, self.flow)


class SceneScore(NamedTuple):
    """How a distilled scene compares with the prior's figures on held-out views (see ``score``)."""

    psnr: float
    consistency: float
    multi_face: float
    picks: list[int]


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """Peak signal-to-noise ratio of images in [0, 1] over their last three dimensions, in dB."""
    return -10 * torch.log10((a - b).pow(2).mean((-3, -2, -1)))


def score(renders: Tensor, cameras: Cameras, prior: SceneMixturePrior) -> SceneScore:
    """renders [N, 3, S, S] of a scene from held-out cameras at the prior's native size S. Each view picks the figure
    it is nearest to (highest PSNR against that figure's image there); psnr is the mean over the views against
    the figure most views pick; consistency the share of views that pick it (1: no view shows another figure);
    multi_face the share of the views from behind (|azimuth| > 90°) that are nearer to that figure's front
    (the same camera turned to azimuth 0) than to its view from there: a face where the back should be."""
    truth = prior.images(cameras).view(len(prior.scenes), len(cameras), *renders.shape[1:])
    fronts = prior.images(cameras.with_azimuth(torch.zeros(len(cameras))))
    fronts = fronts.view(len(prior.scenes), len(cameras), *renders.shape[1:])
    per_view = psnr(renders[None].float().cpu(), truth)
    picks = per_view.argmax(0)
    chosen = int(picks.mode().values)
    behind = wrap_azimuth(cameras.azimuth).abs() > 90
    closer_to_front = psnr(renders.float().cpu(), fronts[chosen]) > per_view[chosen]
    return SceneScore(per_view[chosen].mean().item(), (picks == chosen).double().mean().item(),
                      closer_to_front[behind].double().mean().item(), picks.tolist())


def fit_corrector(prior: SceneMixturePrior, cameras: int = 8, seed: int = 0) -> SpectralCorrector:
    """LMC-SDS's corrector for this prior as Train LMC Corrector fits one (a spectral fit on triplets from the
    prior's own DDIM samples), the prior being the mixture of the figures' images from `cameras` training cameras."""
    g = torch.Generator().manual_seed(seed)
    images = prior.images(CameraRanges().sample(cameras, g))
    unconditional = MixtureDenoiser({"positive": images}, prior.width, prior.flow)
    samples = ddim_sample(unconditional, torch.randn((16, *images.shape[1:]), generator=g), 30)
    data = collect_triplets(unconditional, samples, 32, g)
    return fit_spectral(data.z, data.z_hat, data.t)
