"""Shading as threestudio's dreamfusion-sd: albedo only for a warm-up, then a point light (diffuse-with-point-light
material, threestudio/models/materials/diffuse_with_point_light_material.py; light sampling of
threestudio/data/uncond.py, strategy "dreamfusion").

After the warm-up each step is "albedo" with probability 1 − diffuse_prob, else "textureless" (white albedo)
with probability textureless_prob, else "diffuse": colour = albedo·(ambient + diffuse·max(0, n·l)), l the unit
vector to a point light at distance U[0.8, 1.5] along normalize(camera position + N(0, I)); one mode for the
whole batch, as threestudio.
"""
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .cameras import Cameras
from .render import FieldSample, Shader, albedo_shader

MODES = ("albedo", "diffuse", "textureless")


class Lighting(NamedTuple):
    """One step's shading: its mode and a point light per camera [B, 3] (world units)."""

    mode: str
    lights: Tensor


@dataclass(frozen=True)
class Shading:
    """albedo_fraction: the share of the run in albedo only (threestudio: ambient_only_steps 2001 of 10 000)."""

    albedo_fraction: float = 0.2
    diffuse_prob: float = 0.75
    textureless_prob: float = 0.5
    ambient: float = 0.1
    diffuse: float = 0.9
    light_distance: tuple[float, float] = (0.8, 1.5)
    light_perturb: float = 1.0

    def __post_init__(self):
        for name in ("albedo_fraction", "diffuse_prob", "textureless_prob"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"shading {name} must be within [0, 1], got {getattr(self, name)}.")

    def sample(self, progress: float, cameras: Cameras, generator: torch.Generator) -> Lighting:
        """This step's lighting at run progress ∈ [0, 1]; draws the same amount from the generator every step."""
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        jitter = torch.randn((len(cameras), 3), generator=generator)
        distance = torch.rand(len(cameras), generator=generator)
        position = cameras.frames()[0].cpu().float()
        direction = F.normalize(position + self.light_perturb * jitter, dim=-1)
        lo, hi = self.light_distance
        lights = (direction * (lo + (hi - lo) * distance)[:, None]).to(cameras.azimuth)
        if progress < self.albedo_fraction or u[0] > self.diffuse_prob:
            return Lighting("albedo", lights)
        return Lighting("textureless" if u[1] < self.textureless_prob else "diffuse", lights)

    def shader(self, lighting: Lighting) -> Shader:
        """The colour of each sample under `lighting`; the samples of the B cameras come in camera order."""
        if lighting.mode == "albedo":
            return albedo_shader

        def shade(sample: FieldSample, points: Tensor) -> Tensor:
            b = len(lighting.lights)
            to_light = F.normalize(lighting.lights[:, None] - points.reshape(b, -1, 3), dim=-1)
            lambert = (sample.normal.reshape(b, -1, 3) * to_light).sum(-1, keepdim=True).clamp(min=0)
            light = (self.ambient + self.diffuse * lambert).reshape(-1, 1)
            if lighting.mode == "textureless":
                return light.expand(-1, 3)
            return sample.albedo.clamp(0, 1) * light

        return shade
