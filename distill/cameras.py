"""Cameras around the scene: sampling as threestudio's dreamfusion-sd, turntables, view labels, pinhole rays.

World axes: y is up, the object's front faces +z, x is its left-to-right as seen from the front (right-handed,
glTF's convention, so an exported mesh stands upright and faces the viewer in ComfyUI's 3D viewer). A camera
at elevation e, azimuth a (degrees) and distance d sits at d·(cos e·sin a, sin e, cos e·cos a) and looks at
the origin: azimuth 0 is the front view, 90 the view from +x, ±180 the back; azimuth grows counter-clockwise
seen from above, as threestudio's does about its z-up axis. fovy is the full vertical field of view.
"""
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

VIEWS = ("front", "side", "back", "overhead")
"""threestudio's view-dependent prompt suffixes, in its order."""


class Rays(NamedTuple):
    """origins and unit directions [B, H, W, 3], in world coordinates."""

    origins: Tensor
    directions: Tensor


@dataclass(frozen=True)
class Cameras:
    """B cameras looking at the origin: elevation, azimuth and fovy in degrees, distance in world units, each [B]."""

    elevation: Tensor
    azimuth: Tensor
    distance: Tensor
    fovy: Tensor

    def __len__(self) -> int:
        return len(self.azimuth)

    def __getitem__(self, index) -> "Cameras":
        return Cameras(*(v[index].reshape(-1) for v in (self.elevation, self.azimuth, self.distance, self.fovy)))

    def to(self, *args, **kwargs) -> "Cameras":
        return Cameras(*(v.to(*args, **kwargs) for v in (self.elevation, self.azimuth, self.distance, self.fovy)))

    def with_azimuth(self, azimuth: Tensor) -> "Cameras":
        return Cameras(self.elevation, azimuth.to(self.azimuth), self.distance, self.fovy)

    def frames(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(position, right, up, forward) [B, 3]: the camera's centre and its orthonormal image axes."""
        e, a = torch.deg2rad(self.elevation), torch.deg2rad(self.azimuth)
        ce, se, ca, sa = e.cos(), e.sin(), a.cos(), a.sin()
        outward = torch.stack([ce * sa, se, ce * ca], -1)
        right = torch.stack([ca, torch.zeros_like(ca), -sa], -1)
        forward = -outward
        return self.distance[:, None] * outward, right, torch.linalg.cross(right, forward), forward

    def rays(self, height: int, width: int) -> Rays:
        """One ray through each pixel centre of a height × width image, row 0 at the top."""
        position, right, up, forward = self.frames()
        tan = torch.tan(torch.deg2rad(self.fovy) / 2)[:, None, None, None]
        rows = (torch.arange(height, dtype=position.dtype, device=position.device) + 0.5) / height
        cols = (torch.arange(width, dtype=position.dtype, device=position.device) + 0.5) / width
        v = (1 - 2 * rows)[None, :, None, None] * tan
        u = (2 * cols - 1)[None, None, :, None] * tan * (width / height)
        directions = forward[:, None, None] + u * right[:, None, None] + v * up[:, None, None]
        directions = directions / torch.linalg.vector_norm(directions, dim=-1, keepdim=True)
        return Rays(position[:, None, None].expand_as(directions), directions)


@dataclass(frozen=True)
class CameraRanges:
    """Where training cameras are drawn from: threestudio's dreamfusion-sd defaults (configs/dreamfusion-sd.yaml).

    Each range is uniform; the azimuths of one step's cameras are stratified over (−180, 180] as threestudio's
    batch_uniform_azimuth does: camera i of B draws from the i-th of B equal sectors.
    """

    distance: tuple[float, float] = (1.5, 2.0)
    fovy: tuple[float, float] = (40.0, 70.0)
    elevation: tuple[float, float] = (-10.0, 45.0)
    azimuth: tuple[float, float] = (-180.0, 180.0)

    def __post_init__(self):
        for name, (lo, hi) in vars(self).items():
            if not lo <= hi:
                raise ValueError(f"camera {name} range is inverted: {lo} > {hi}; give it as (min, max).")
        if not (0 < self.fovy[0] and self.fovy[1] < 180):
            raise ValueError(f"camera fovy must lie within (0°, 180°), got {self.fovy}.")
        if not (-90 < self.elevation[0] and self.elevation[1] < 90):
            raise ValueError(f"camera elevation must lie within (−90°, 90°), got {self.elevation}.")
        if not self.distance[0] > 0:
            raise ValueError(f"camera distance must be positive, got {self.distance}.")

    def sample(self, count: int, generator: torch.Generator) -> Cameras:
        """`count` cameras from one CPU generator (float32, on the CPU)."""
        u = torch.rand((count, 4), generator=generator, dtype=torch.float64)

        def spread(col, lo_hi):
            return lo_hi[0] + (lo_hi[1] - lo_hi[0]) * col

        sector = (torch.arange(count, dtype=torch.float64) + u[:, 1]) / count
        values = (spread(u[:, 0], self.elevation), spread(sector, self.azimuth), spread(u[:, 2], self.distance),
                  spread(u[:, 3], self.fovy))
        return Cameras(*(v.float() for v in values))


def turntable(count: int, elevation: float = 15.0, distance: float = 2.0, fovy: float = 70.0) -> Cameras:
    """`count` cameras at equal azimuth steps from the front (0°) counter-clockwise, at one elevation; distance 2
    and fovy 70° are dreamfusion-sd's evaluation camera."""
    full = lambda v: torch.full((count,), float(v))  # noqa: E731
    return Cameras(full(elevation), torch.arange(count) * (360.0 / count), full(distance), full(fovy))


def wrap_azimuth(azimuth: Tensor) -> Tensor:
    """Azimuth in (−180°, 180°]."""
    return 180 - torch.remainder(180 - azimuth, 360)


def view_labels(cameras: Cameras) -> list[str]:
    """threestudio's view of each camera: overhead above 60° elevation, else front / back within 45° of azimuth
    0 / 180, else side (its ``view_dependent_prompting`` thresholds)."""
    a = wrap_azimuth(cameras.azimuth.double().cpu())
    e = cameras.elevation.double().cpu()
    labels = []
    for elevation, azimuth in zip(e.tolist(), a.tolist()):
        if elevation > 60:
            labels.append("overhead")
        elif abs(azimuth) < 45:
            labels.append("front")
        elif abs(azimuth) > 135:
            labels.append("back")
        else:
            labels.append("side")
    return labels
