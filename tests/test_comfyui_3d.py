"""Optimize 3D in a real ComfyUI with tiny EPS / v / flow models and a tiny AutoencoderKL: every loss of the pack
distills a scene, each camera sees its view's prompt in the step's one forward, the same seed gives the same
VOXEL, an interrupt stops within a step, bad inputs are refused by name, and ComfyUI's own VoxelToMesh puts the
exported surface where the scene's is."""
import math

import pytest
import torch

from comfy_harness import conditioning, interrupt_at, pack, run_node, tiny_model, tiny_vae

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

SMALL = dict(steps=1, learning_rate=0.05, render_size=16, grid=8, samples_per_ray=16, cameras_per_step=1,
             native_size=64, seed=0, elevation_min=-10.0, elevation_max=45.0, distance_min=1.5, distance_max=2.0,
             fovy_min=40.0, fovy_max=70.0, turntable_frames=2, turntable_size=16, turntable_elevation=15.0)
VIEW_SEEDS = {"front": 11, "side": 12, "back": 13, "overhead": 14}
POSITIVE, NEGATIVE = 1, 2


def view_prompts():
    return run_node("Distill3DViewPrompts", prompt="", **{v: conditioning(s) for v, s in VIEW_SEEDS.items()}).args[0]


def sds_loss(model, cfg=100.0, **kw):
    return run_node("DistillSDSLoss", model=model, positive=conditioning(POSITIVE), negative=conditioning(NEGATIVE),
                    cfg=cfg, weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0,
                    **kw).args[0]


def nfsd_loss(model):
    return run_node("DistillNFSDGuidance", model=model, positive=conditioning(POSITIVE),
                    negative=conditioning(NEGATIVE), nfsd_negative=conditioning(3), cfg=7.5, threshold=0.2,
                    weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0).args[0]


def sdi_loss(model):
    noise = run_node("DistillDDIMInvertNoise", inversion_steps=2, inversion_cfg=-6.5, eta=0.3,
                     eta_placement="every_step", tau_jitter=True, variant="inverted", refresh_every=1).args[0]
    return run_node("DistillSDSLoss", model=model, positive=conditioning(POSITIVE), negative=conditioning(NEGATIVE),
                    cfg=8.5, weighting="auto", t_min=0.2, t_max=0.98, t_schedule="linear_anneal", grad_clip=0.0,
                    noise=noise).args[0]


def lmc_loss(model):
    corrector = pack("distill.corrector").SpectralCorrector(torch.ones(4, 2, 2), torch.tensor([0.2, 0.8]))
    correctors = pack("nodes.correctors")
    link = correctors.LoadedCorrector("tiny.safetensors", corrector, correctors.what_it_models(model))
    return sds_loss(model, cfg=8.0, corrector=link)


LOSSES = {"sds": sds_loss, "nfsd": nfsd_loss, "sdi": sdi_loss, "lmc_sds": lmc_loss}


def optimize_3d(loss, vae=None, views="prompts", **kw):
    args = SMALL | dict(vae=vae or tiny_vae(), loss=loss) | kw
    if views == "prompts":
        args["views"] = view_prompts()
    elif views is not None:
        args["views"] = views
    return run_node("DistillOptimize3D", **args).args


def watched(model):
    """A clone whose UNet calls record (input shape, cond_or_uncond, c_crossattn, inference mode, output grad)."""
    calls = []
    m = model.clone()

    def wrapper(apply, args):
        out = apply(args["input"], args["timestep"], **args["c"])
        calls.append((tuple(args["input"].shape), list(args["cond_or_uncond"]), args["c"]["c_crossattn"],
                      torch.is_inference_mode_enabled(), out.requires_grad))
        return out

    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


@pytest.mark.parametrize("loss,kind", [("sds", "eps"), ("sds", "v"), ("sds", "flow"), ("nfsd", "eps"),
                                       ("sdi", "v"), ("lmc_sds", "flow")])
def test_every_loss_distills_a_scene_into_a_voxel_a_turntable_and_a_plot(loss, kind):
    model, calls = watched(tiny_model(kind))
    voxel, turntable, plot = optimize_3d(LOSSES[loss](model))
    start = pack("distill.scene").VoxelScene(SMALL["grid"]).voxel()
    assert voxel.data.shape == (1, 8, 8, 8) and 0 <= voxel.data.min() and voxel.data.max() <= 1
    assert (voxel.data[0] - start).abs().max() > 1e-4  # the loss's gradient reached the grid through VAE and renderer
    assert turntable.shape == (2, 16, 16, 3) and 0 <= turntable.min() and turntable.max() <= 1
    assert plot.ndim == 4 and plot.shape[-1] == 3
    assert calls and all(inference and not grad for *_, inference, grad in calls)
    assert all(p.grad is None for p in model.model.diffusion_model.parameters())


def test_each_camera_sees_its_views_prompt_in_the_steps_one_forward():
    """Cameras above 60° are all 'overhead': every positive row the UNet sees is that view's prompt, the negative
    rows the loss's negative; without views every camera sees the loss's positive."""
    high = dict(elevation_min=61.0, elevation_max=80.0, cameras_per_step=2)
    for views, expected in (("prompts", VIEW_SEEDS["overhead"]), (None, POSITIVE)):
        model, calls = watched(tiny_model("eps"))
        optimize_3d(sds_loss(model), views=views, **high)
        assert [shape[0] for shape, *_ in calls] == [2 * 2] * SMALL["steps"]
        for _, order, context, *_ in calls:
            rows = context.chunk(len(order))
            for branch, chunk in zip(order, rows):
                seed = expected if branch == 0 else NEGATIVE
                assert all(torch.equal(row, conditioning(seed)[0][0][0]) for row in chunk)


def test_the_same_seed_gives_a_bit_identical_voxel():
    loss, vae = sds_loss(tiny_model("eps")), tiny_vae()
    a, ta, _ = optimize_3d(loss, vae=vae, seed=5)
    b, tb, _ = optimize_3d(loss, vae=vae, seed=5)
    c, _, _ = optimize_3d(loss, vae=vae, seed=6)
    assert torch.equal(a.data, b.data) and torch.equal(ta, tb) and not torch.equal(a.data, c.data)


def test_interrupt_stops_within_one_step():
    import comfy.model_management

    model, calls = watched(tiny_model("eps"))
    with interrupt_at(2), pytest.raises(comfy.model_management.InterruptProcessingException):
        optimize_3d(sds_loss(model), steps=50)
    assert len(calls) == 2


@pytest.mark.parametrize("node", ["DistillDDSLoss", "DistillPDSLoss"])
def test_editing_losses_are_refused_naming_the_loss(node):
    model, calls = watched(tiny_model("eps"))
    loss = run_node(node, model=model, reference={"samples": torch.zeros(1, 4, 8, 8)}, source=conditioning(3),
                    target=conditioning(POSITIVE), negative=conditioning(NEGATIVE), cfg=7.5, weighting="auto",
                    t_min=0.05, t_max=0.95, t_schedule="uniform", grad_clip=0.0).args[0]
    with pytest.raises(ValueError, match="loss: DDS and PDS edit a reference image.*use SDS, NFSD, SDI"):
        optimize_3d(loss)
    assert calls == []


@pytest.mark.parametrize("vae,message", [
    (lambda: tiny_vae(taesd=True), "vae: TAESD cannot pass gradients"),
    (lambda: tiny_vae(channels=16), "vae: it encodes to 16-channel latents .* 4-channel latents"),
])
def test_a_vae_that_cannot_serve_the_model_is_refused(vae, message):
    with pytest.raises(ValueError, match=message):
        optimize_3d(sds_loss(tiny_model("eps")), vae=vae())


@pytest.mark.parametrize("settings,message", [
    (dict(grid=4), "grid: 4 is outside its range"),
    (dict(render_size=4096), "render_size: 4096 is outside its range"),
    (dict(elevation_min=50.0, elevation_max=10.0), r"elevation_min: 50.0 is above elevation_max \(10.0\)"),
    (dict(fovy_min=80.0), r"fovy_min: 80.0 is above fovy_max \(70.0\)"),
])
def test_settings_out_of_range_are_named(settings, message):
    with pytest.raises(ValueError, match=message):
        optimize_3d(sds_loss(tiny_model("eps")), **settings)


def ellipsoid_scene(resolution, radii):
    """A scene whose density is 200 per unit inside the ellipsoid x²/a² + y²/b² + z²/c² < 1 and ~0 outside."""
    scene_module = pack("distill.scene")
    scene = scene_module.VoxelScene(resolution)
    centres = scene_module.cell_centres(resolution)
    inside = ((centres / torch.tensor(radii)) ** 2).sum(-1) < 1
    sigma = torch.where(inside, 200.0, 1e-3)
    raw = sigma + torch.log(-torch.expm1(-sigma))  # softplus⁻¹
    with torch.no_grad():
        scene.density.copy_((raw - scene_module.blob_bias(centres))[None, None])
    return scene


def ellipsoid_distance(points, radii):
    """Distance of points [N, 3] from the ellipsoid's surface, to first order: |f| / ‖∇f‖ with f = Σ x²/a² − 1."""
    r = torch.tensor(radii, dtype=points.dtype)
    f = ((points / r) ** 2).sum(-1) - 1
    return f.abs() / (2 * points / r ** 2).norm(dim=-1)


@pytest.mark.parametrize("algorithm,shift", [("basic", 0.0), ("surface net", -1.0)])
def test_voxel_to_mesh_puts_the_surface_of_a_known_scene_within_two_voxels(algorithm, shift):
    """An axis-aligned ellipsoid with three different radii: a mesh with x, y or z swapped or mirrored would miss
    it by far more than two voxels. Shift: surface net's vertices lie a voxel further along +x, +y, +z (per the
    core's convention), so they are moved back by one voxel of the [−1, 1] box before comparing."""
    from comfy_extras.nodes_hunyuan3d import VOXEL, VoxelToMesh

    resolution, radii = 32, (0.8, 0.45, 0.6)
    voxel = VOXEL(ellipsoid_scene(resolution, radii).voxel().detach()[None])
    mesh = VoxelToMesh().decode(voxel, algorithm, 0.6)[0]
    vertices = mesh.vertices[0].double() + shift / resolution
    voxel_size = 2 / resolution
    assert len(vertices) > 100
    to_surface = ellipsoid_distance(vertices, radii)
    g = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(2000, 3, generator=g, dtype=torch.float64), dim=-1)
    on_surface = directions / ((directions / torch.tensor(radii, dtype=torch.float64)) ** 2).sum(-1, True).sqrt()
    to_mesh = torch.cdist(on_surface, vertices).min(1).values
    chamfer = 0.5 * (to_surface.mean() + to_mesh.mean())
    assert chamfer < 2 * voxel_size and to_surface.max() < 2 * voxel_size and to_mesh.max() < 2 * voxel_size, (
        chamfer / voxel_size, to_surface.max() / voxel_size, to_mesh.max() / voxel_size)
    assert math.isclose(vertices[:, 0].max().item(), radii[0], abs_tol=voxel_size)  # x is the widest: not swapped


def test_core_voxel_to_mesh_at_its_default_threshold_meshes_the_nodes_voxel():
    """One step from the starting blob on the node's default grid: VoxelToMesh's own default threshold (0.6) finds a
    surface in the VOXEL (one cell of a 32³ grid stops under half the light: the VOXEL is a fixed layer's opacity)."""
    from comfy_extras.nodes_hunyuan3d import VoxelToMesh

    voxel, _, _ = optimize_3d(sds_loss(tiny_model("eps")), grid=pack("nodes.optimize_3d").DEFAULTS.grid)
    default = VoxelToMesh.INPUT_TYPES()["required"]["threshold"][1]["default"]
    for algorithm in ("surface net", "basic"):
        assert len(VoxelToMesh().decode(voxel, algorithm, default)[0].vertices[0]) > 0, algorithm


def test_one_node_step_on_a_fake_cuda_device_keeps_scene_renders_rays_and_optimizer_state_there(monkeypatch):
    """Optimize 3D's whole path (ComfyUI's loader, sampling machinery and calc_cond_batch, the view prompts, the VAE
    with gradients, the 3D loop) with the model and the VAE loaded on a fake CUDA device (fake_cuda.py; their
    offload device too, as fake parameters cannot go back to the CPU). Patched, only what fake tensors cannot do:
    the CUDA runtime's free-memory query, and the preview image (it reads pixel values) is recorded instead."""
    import comfy.model_management as mm
    from fake_cuda import CUDA, fake_cuda, on_cuda

    optimize_scene_module = pack("distill.optimize_scene")
    node_module = pack("nodes.optimize_3d")
    adams, rendered, previews = [], [], []

    class RecordingAdam(torch.optim.Adam):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            adams.append(self)

    def recording_render(scene, rays, *args, **kwargs):
        rendered.append((rays.origins, rays.directions, *args[1:2]))
        return render(scene, rays, *args, **kwargs)

    render = optimize_scene_module.render
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    monkeypatch.setattr(optimize_scene_module, "render", recording_render)
    monkeypatch.setattr(node_module, "preview", lambda renders: previews.append(renders))
    monkeypatch.setattr(mm, "get_free_memory", lambda dev=None, torch_free_too=False: (2 ** 34,) * 2 if torch_free_too
                        else 2 ** 34)
    model, vae = tiny_model("eps"), tiny_vae()
    model.load_device = model.offload_device = CUDA
    vae.device = vae.patcher.load_device = vae.patcher.offload_device = CUDA
    with fake_cuda():
        voxel, turntable, _ = optimize_3d(sds_loss(model), vae=vae)
        state = [v for s in adams[-1].state.values() for v in s.values() if v.ndim > 0]
        scene = [p for group in adams[-1].param_groups for p in group["params"]]
    assert len(adams) == 1 and len(state) == 2 * len(scene) and len(previews) == SMALL["steps"]
    assert on_cuda(*scene, *state, *previews, *(t for call in rendered[:SMALL["steps"]] for t in call))
