"""The optimized 3D scene: density and albedo on a voxel grid, sampled trilinearly with grid_sample.

Why a voxel grid and not a tri-plane: fitted photometrically with the same renderer, cameras and 150 steps
(benchmarks/scene_representation.py, one figure, a loaded 2-core CPU), a 32³ grid (131k parameters) reached 31.0 dB
held out at 7.4 s/step, a 64² 16-channel tri-plane with an MLP decoder (198k) 31.1 dB at 7.0 s/step, a 24³ grid
30.1 dB at 5.9 s/step: a tie in quality and cost. The grid wins on what the tie leaves: it is ComfyUI's VOXEL as
it stands (no decoder to evaluate for the export), each cell is its own parameter (no decoder whose shared weights
couple distant points), and its resolution is the one knob a user sets.

Layout: parameters [1, C, D, H, W] on cell centres; index [d, h, w] holds the cell centred at world
(x, y, z) = (−1 + (2w + 1)/R, −1 + (2h + 1)/R, −1 + (2d + 1)/R), grid_sample's align_corners=False
convention: the W axis is world x, H is y (up), D is z (towards the front). ComfyUI's VoxelToMesh ("basic")
puts voxel [d, h, w] at exactly that place, its xyz being the reversed index; "surface net" half a voxel
further along +x, +y and +z.

Density σ = softplus(raw + blob(p)) per world unit, threestudio's "blob_magic3d" bias blob(p) = 10·(1 − ‖p‖/0.5)
(a ball of radius ½ to start from); albedo = sigmoid(raw). Normals are −∇σ/‖∇σ‖, ∇σ by central differences
of σ at the cell centres, sampled like the rest.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .render import BOUND, FieldSample

VOXEL_LAYER = 2 * BOUND / 8

BLOB_SCALE = 10.0
BLOB_STD = 0.5


def blob_bias(points: Tensor) -> Tensor:
    """threestudio's blob_magic3d density bias at points [..., 3]."""
    return BLOB_SCALE * (1 - torch.linalg.vector_norm(points, dim=-1) / BLOB_STD)


def cell_centres(resolution: int, dtype=torch.float32, device=None) -> Tensor:
    """World positions [D, H, W, 3] (x, y, z) of the cells of a resolution³ grid over [−1, 1]³."""
    c = (2 * torch.arange(resolution, dtype=dtype, device=device) + 1) / resolution - 1
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    return torch.stack([x, y, z], -1) * BOUND


def colours_at(colours: Tensor, points: Tensor) -> Tensor:
    """Colours [N, C] of a cell-centred grid [1, C, D, H, W] (the module's layout) at world points [N, 3],
    trilinear, clamped to the border cells like the renderer's samples."""
    at = F.grid_sample(colours, points.reshape(1, -1, 1, 1, 3) / BOUND, align_corners=False, padding_mode="border")
    return at.reshape(colours.shape[1], -1).T


def surface_net_points(vertices: Tensor, resolution: int) -> Tensor:
    """World positions [N, 3] of VoxelToMesh "surface net" vertices of a resolution³ VOXEL: the core puts them
    half a cell (1/resolution of its [−1, 1] box) further along +x, +y and +z."""
    return (vertices - 1 / resolution) * BOUND


class VoxelScene(nn.Module):
    """density [1, 1, R, R, R] and albedo [1, 3, R, R, R] logits; a generator draws the albedo logits ~ N(0, 1)
    (a random scene) on the CPU, without one they start at 0 (grey); both are then moved to `device`."""

    def __init__(self, resolution: int, generator: torch.Generator | None = None, device=None):
        super().__init__()
        if not 2 <= resolution <= 512:
            raise ValueError(f"grid resolution must be within [2, 512], got {resolution}.")
        shape = (1, 3, resolution, resolution, resolution)
        albedo = torch.zeros(shape) if generator is None else torch.randn(shape, generator=generator)
        self.density = nn.Parameter(torch.zeros(1, 1, *shape[2:]).to(device))
        self.albedo = nn.Parameter(albedo.to(device))

    @property
    def resolution(self) -> int:
        return self.density.shape[-1]

    def density_grid(self) -> Tensor:
        """σ at the cell centres, [D, H, W] (see the module docstring for the axes), per world unit."""
        centres = cell_centres(self.resolution, self.density.dtype, self.density.device)
        return F.softplus(self.density[0, 0] + blob_bias(centres))

    def albedo_grid(self) -> Tensor:
        """The albedo in 0..1 at the cell centres, [1, 3, D, H, W]."""
        return torch.sigmoid(self.albedo)

    def voxel(self) -> Tensor:
        """The VOXEL export [D, H, W]: at each cell centre the opacity 1 − exp(−σ·VOXEL_LAYER) of a layer 1/8 of
        the box thick, in [0, 1]: VoxelToMesh's threshold reads as the share of light that layer stops, the same
        for every grid resolution, and its default 0.6 finds the starting blob (σ = softplus(10·(1 − r/0.5))) as
        a sphere of radius 0.32."""
        return 1 - torch.exp(-self.density_grid() * VOXEL_LAYER)

    def forward(self, points: Tensor) -> FieldSample:
        sigma = self.density_grid()
        gradient = torch.stack(torch.gradient(sigma, spacing=2 * BOUND / self.resolution), 0)  # d/dz, d/dy, d/dx
        grids = torch.cat([self.density, self.albedo, gradient.flip(0)[None]], 1)
        at = F.grid_sample(grids, points.reshape(1, -1, 1, 1, 3) / BOUND, align_corners=False, padding_mode="border")
        at = at.reshape(grids.shape[1], -1).T
        density = F.softplus(at[:, 0] + blob_bias(points))
        normal = -F.normalize(at[:, 4:7], dim=-1, eps=1e-12)
        return FieldSample(density, torch.sigmoid(at[:, 1:4]), normal)
