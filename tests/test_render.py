"""The volume renderer against closed forms, its gradient against finite differences, and the scene's axes.

The closed forms use the geometry of the centre column of a front camera at (0, 0, d): its rays lie in the
y–z plane at angle θ below or above the optical axis, tan θ = v·tan(fovy/2), v the row's height in [−1, 1].
"""
import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from distill.cameras import Cameras
from distill.render import FieldSample, render
from distill.scene import VoxelScene, cell_centres
from distill.shading import Lighting, Shading

D, FOVY, H = 2.0, 60.0, 15


def front_camera(distance=D, fovy=FOVY, azimuth=0.0):
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return Cameras(t(0.0), t(azimuth), t(distance), t(fovy))


def centre_column_angles() -> torch.Tensor:
    """θ of the centre column's rows (positive upwards), row 0 at the top."""
    v = 1 - 2 * (torch.arange(H, dtype=torch.float64) + 0.5) / H
    return torch.atan(v * math.tan(math.radians(FOVY) / 2))


def constant_field(sigma, colour, inside=None):
    def field(points):
        n = len(points)
        mask = torch.ones(n, dtype=points.dtype) if inside is None else inside(points).to(points.dtype)
        rgb = torch.as_tensor(colour, dtype=points.dtype).expand(n, 3) if not callable(colour) else colour(points)
        return FieldSample(sigma * mask, rgb, torch.zeros_like(points))
    return field


def test_a_constant_density_box_transmits_exp_minus_sigma_chord_and_composites_its_colour():
    """The whole box [−1, 1]³ at constant σ: a centre-column ray enters the front face z = 1 at 1/cos θ (d = 2,
    |tan θ| ≤ 1/3 < 1) and leaves by the back face z = −1 at 3/cos θ or the top/bottom face |y| = 1 at 1/|sin θ|:
    chord = min(3/cos θ, 1/|sin θ|) − 1/cos θ; opacity 1 − e^{−σ·chord}, colour c·(1 − e^{−σ·chord}) +
    bg·e^{−σ·chord}."""
    sigma, colour, bg = 1.3, torch.tensor([0.2, 0.7, 0.4], dtype=torch.float64), torch.tensor([1.0, 0.5, 0.0])
    theta = centre_column_angles()
    chord = torch.minimum(3 / theta.cos(), 1 / theta.sin().abs()) - 1 / theta.cos()
    out = render(constant_field(sigma, colour), front_camera().rays(H, H), 64, bg)
    transmittance = torch.exp(-sigma * chord)
    assert torch.allclose(out.opacity[0, 0, :, H // 2], 1 - transmittance, atol=1e-12)
    expected = colour[:, None] * (1 - transmittance) + bg.double()[:, None] * transmittance
    assert torch.allclose(out.rgb[0, :, :, H // 2], expected, atol=1e-12)
    assert torch.allclose(out.weights.sum(-1), out.opacity[:, 0], atol=1e-12)


def test_a_constant_density_sphere_transmits_along_its_chord_within_the_quadrature_step():
    """σ inside the sphere of radius r at the origin: the ray at angle θ passes the centre at distance d·sin θ,
    so chord = 2·√(r² − d²·sin²θ). Samples at interval midpoints, δ apart, measure the chord to within δ (half a
    step at each end): |T − e^{−σ·chord}| ≤ e^{−σ·chord}·(e^{σ·δ} − 1), and the error shrinks with δ."""
    r, sigma = 0.8, 2.0
    theta = centre_column_angles()
    chord = 2 * (r**2 - (D * theta.sin()) ** 2).clamp(min=0).sqrt()
    exact = torch.exp(-sigma * chord)
    errors = []
    for samples in (64, 1024):
        field = constant_field(sigma, (1.0, 0.0, 0.0), lambda p: p.norm(dim=-1) < r)
        out = render(field, front_camera().rays(H, H), samples, torch.zeros(3))
        transmittance = 1 - out.opacity[0, 0, :, H // 2]
        delta = (torch.minimum(3 / theta.cos(), 1 / theta.sin().abs()) - 1 / theta.cos()) / samples
        assert ((transmittance - exact).abs() <= exact * torch.expm1(sigma * delta) + 1e-12).all()
        assert torch.allclose(out.rgb[0, 0, :, H // 2], 1 - transmittance, atol=1e-12)  # red over black
        errors.append((transmittance - exact).abs().max())
    assert errors[1] < errors[0] / 4


def test_two_coloured_layers_composite_front_over_back_over_background():
    """The box at constant σ, colour c1 where z > 0 and c2 where z < 0: the central ray (chord 1 in each half)
    sees c1·(1 − e^{−σ}) + c2·e^{−σ}·(1 − e^{−σ}) + bg·e^{−2σ}."""
    sigma = 0.9
    c1, c2, bg = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.0])
    colour = lambda p: torch.where(p[:, 2:] > 0, c1.to(p), c2.to(p))  # noqa: E731
    out = render(constant_field(sigma, colour), front_camera().rays(H, H), 64, bg)
    e = math.exp(-sigma)
    expected = c1 * (1 - e) + c2 * e * (1 - e) + bg * e * e
    assert torch.allclose(out.rgb[0, :, H // 2, H // 2].float(), expected, atol=1e-6)


def test_render_gradients_match_finite_differences_in_float64():
    """gradcheck of the renders of a 4³ grid (albedo and diffuse shading, stratified samples) in its logits."""
    scene = VoxelScene(4, torch.Generator().manual_seed(0)).double()
    g = torch.Generator().manual_seed(1)
    density = (torch.randn(scene.density.shape, generator=g, dtype=torch.float64) - 8).requires_grad_(True)
    albedo = scene.albedo.detach().clone().requires_grad_(True)
    cameras = Cameras(*(torch.tensor(v, dtype=torch.float64) for v in ([10.0], [30.0], [1.8], [50.0])))
    lighting = Lighting("diffuse", torch.tensor([[1.0, 1.5, 1.0]], dtype=torch.float64))
    for shader in (Shading().shader(Lighting("albedo", lighting.lights)), Shading().shader(lighting)):
        def rgb(d, a):
            field = lambda p: functional_call(scene, {"density": d, "albedo": a}, (p,))  # noqa: E731
            generator = torch.Generator().manual_seed(2)
            return render(field, cameras.rays(3, 3), 8, torch.ones(3, dtype=torch.float64), shader, generator).rgb
        assert torch.autograd.gradcheck(rgb, (density, albedo), eps=1e-6, atol=1e-6, fast_mode=True)


def test_a_cell_renders_where_its_world_position_projects():
    """Cell [6, 6, 6] of an 8³ grid is centred at world (x, y, z) = −1 + 13/8 = 0.625 by the documented layout: from
    the front camera it shows up right of and above the centre; from azimuth 90° (the camera on +x, whose right
    is −z) above and left of it."""
    scene = VoxelScene(8)
    d = h = w = 6
    assert torch.allclose(cell_centres(8)[d, h, w], torch.tensor([0.625, 0.625, 0.625]))
    with torch.no_grad():
        scene.density.fill_(-30.0)
        scene.density[0, 0, d, h, w] = 30.0
    for azimuth, right_of_centre in ((0.0, True), (90.0, False)):
        cams = front_camera(azimuth=azimuth).to(torch.float32)
        opacity = render(scene, cams.rays(33, 33), 128, torch.zeros(3)).opacity[0, 0]
        row, col = divmod(int(opacity.argmax()), 33)
        assert row < 16 and (col > 16) == right_of_centre


def test_the_voxel_export_is_the_opacity_of_an_eighth_of_the_box_whatever_the_grid():
    """voxel() = 1 − exp(−σ·2/8) with σ = softplus(raw + blob) at the cell centres (threestudio's blob_magic3d):
    the same density gives the same values at every resolution, and core VoxelToMesh at its default threshold
    (0.6) finds the starting scene's surface at radius 0.32 on an 8³, a 32³ and a 64³ grid, where one cell of the
finer grids stops under 50% of the light."""
    scene = VoxelScene(6, torch.Generator().manual_seed(0))
    centres = cell_centres(6)
    sigma = F.softplus(10 * (1 - centres.norm(dim=-1) / 0.5))
    assert torch.allclose(scene.voxel(), 1 - torch.exp(-sigma * 2 / 8))
    assert torch.allclose(scene(centres.reshape(-1, 3)).density, sigma.reshape(-1), rtol=1e-5)
    for resolution in (8, 32, 64):
        scene = VoxelScene(resolution)
        radius = cell_centres(resolution).norm(dim=-1)
        inside = scene.voxel() > 0.6
        assert inside.any() and radius[inside].max() < 0.33 < radius[~inside].min() + 2 / resolution, resolution
    for resolution in (32, 64):
        assert (1 - torch.exp(-VoxelScene(resolution).density_grid() * 2 / resolution)).max() < 0.5
