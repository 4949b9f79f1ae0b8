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


def read_glb(path):
    """POSITION, COLOR_0 and indices of a GLB's one primitive, parsed from its JSON and BIN chunks by hand."""
    import json
    import struct

    import numpy as np

    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<4sII", data)
    assert (magic, version, length) == (b"glTF", 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    gltf = json.loads(data[20:20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    blob = data[28 + json_length:28 + json_length + bin_length]
    assert (json_type, bin_type, len(blob)) == (0x4E4F534A, 0x004E4942, gltf["buffers"][0]["byteLength"])
    dtypes, widths = {5126: np.float32, 5125: np.uint32}, {"VEC3": 3, "SCALAR": 1}

    def accessor(i):
        a = gltf["accessors"][i]
        view = gltf["bufferViews"][a["bufferView"]]
        start = view["byteOffset"] + a.get("byteOffset", 0)
        values = np.frombuffer(blob, dtypes[a["componentType"]], a["count"] * widths[a["type"]], start)
        return values.reshape(a["count"], -1)

    primitive = gltf["meshes"][0]["primitives"][0]
    assert primitive["mode"] == 4
    attributes = primitive["attributes"]
    return accessor(attributes["POSITION"]), accessor(attributes["COLOR_0"]), accessor(primitive["indices"])[:, 0]


def two_colour_voxel(resolution=16):
    """An ellipsoid whose albedo is red where x < 0 and (0, 0, ½) where x > 0, as a Save Coloured GLB input."""
    scene = ellipsoid_scene(resolution, (0.7, 0.5, 0.4))
    x = pack("distill.scene").cell_centres(resolution)[..., 0]
    red, half_blue = torch.tensor([20.0, -20.0, -20.0]), torch.tensor([-20.0, -20.0, 0.0])
    with torch.no_grad():
        scene.albedo.copy_(torch.where((x < 0)[..., None], red, half_blue).permute(3, 0, 1, 2)[None])
    return pack("nodes.save_coloured_glb").ColouredVoxel(scene.voxel().detach()[None], scene.albedo_grid().detach())


@pytest.fixture
def output_folder(tmp_path):
    import folder_paths

    saved = folder_paths.get_output_directory()
    folder_paths.set_output_directory(str(tmp_path))
    yield tmp_path
    folder_paths.set_output_directory(saved)


def test_coloured_glb_puts_core_surface_net_vertices_coloured_by_the_scenes_albedo(output_folder):
    """Positions are VoxelToMesh's surface-net vertices (where Save GLB puts them); each vertex's COLOR_0 is the
    albedo there in linear light: red (1, 0, 0) left of x = 0, sRGB ½ blue (0, 0, 0.2140) right of it."""
    import numpy as np
    from comfy_extras.nodes_hunyuan3d import VoxelToMesh

    voxel = two_colour_voxel()
    out = run_node("DistillSaveColouredGLB", voxel=voxel, threshold=0.6, filename_prefix="mesh/coloured")
    [saved] = out.ui["3d"]
    positions, colours, indices = read_glb(output_folder / saved["subfolder"] / saved["filename"])
    core = VoxelToMesh().decode(voxel, "surface net", 0.6)[0]
    assert torch.equal(torch.from_numpy(positions.copy()), core.vertices[0].float())
    assert torch.equal(torch.from_numpy(indices.astype("int64")), core.faces[0].flatten())
    assert len(positions) > 100 and colours.shape == positions.shape
    x = positions[:, 0] - 1 / 16  # the world x of the vertex (surface net's half-cell offset)
    left, right = colours[x < -0.2], colours[x > 0.2]
    assert len(left) > 20 and len(right) > 20
    assert abs(left - [1.0, 0.0, 0.0]).max() < 1e-4, left
    assert abs(right - [0.0, 0.0, 0.2140]).max() < 1e-4, right
    # between the cell centres x = ∓1/16 the albedo is linear in x: red 1 → 0, blue 0 → ½ (sRGB values)
    share = np.clip(0.5 + 8 * x, 0, 1)
    srgb = np.stack([1 - share, 0 * share, share / 2], -1)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    assert ((share > 0) & (share < 1)).sum() > 10 and abs(colours - linear).max() < 1e-4


def test_coloured_glb_never_overwrites_and_reports_as_core_save_glb(output_folder):
    """A second save, and core Save GLB after it with the same prefix, each get the next counter; the first
    file's bytes stay; the UI entry has core Save GLB's keys; model_file is Preview 3D's path of the file."""
    from comfy_extras.nodes_hunyuan3d import SaveGLB, VoxelToMesh
    from comfy_extras.nodes_load_3d import Preview3D

    voxel = two_colour_voxel()
    first = run_node("DistillSaveColouredGLB", voxel=voxel, threshold=0.6, filename_prefix="mesh/ComfyUI")
    path = output_folder / "mesh" / first.ui["3d"][0]["filename"]
    before = path.read_bytes()
    second = run_node("DistillSaveColouredGLB", voxel=voxel, threshold=0.6, filename_prefix="mesh/ComfyUI")
    core = SaveGLB().save(VoxelToMesh().decode(voxel, "surface net", 0.6)[0], "mesh/ComfyUI")["ui"]["3d"][0]
    names = [first.ui["3d"][0]["filename"], second.ui["3d"][0]["filename"], core["filename"]]
    assert names == ["ComfyUI_00001_.glb", "ComfyUI_00002_.glb", "ComfyUI_00003_.glb"]
    assert path.read_bytes() == before
    assert first.ui == {"3d": [{"filename": names[0], "subfolder": "mesh", "type": "output"}]}
    assert first.ui["3d"][0].keys() == core.keys() and core["subfolder"] == "mesh" and core["type"] == "output"
    assert first.args == ("mesh/ComfyUI_00001_.glb",)
    assert Preview3D().process(first.args[0]) == {"ui": {"result": ["mesh/ComfyUI_00001_.glb", None]}}


def test_optimize_3d_voxel_carries_the_scenes_albedo_into_a_coloured_glb(output_folder):
    voxel, _, _ = optimize_3d(sds_loss(tiny_model("eps")), grid=16)
    assert voxel.colors.shape == (1, 3, 16, 16, 16) and 0 <= voxel.colors.min() and voxel.colors.max() <= 1
    out = run_node("DistillSaveColouredGLB", voxel=voxel, threshold=0.6, filename_prefix="scene")
    positions, colours, _ = read_glb(output_folder / out.ui["3d"][0]["filename"])
    assert len(positions) > 0 and colours.shape == positions.shape


@pytest.mark.parametrize("make,threshold,message", [
    (lambda: __import__("comfy_extras.nodes_hunyuan3d").nodes_hunyuan3d.VOXEL(torch.rand(1, 8, 8, 8)), 0.6,
     "voxel: it carries no colours; connect Optimize 3D's voxel"),
    (lambda: pack("nodes.save_coloured_glb").ColouredVoxel(torch.full((1, 8, 8, 8), 0.1), torch.rand(1, 3, 8, 8, 8)),
     0.6, r"threshold: the voxel has no surface at 0.6 \(its opacity spans 0.1…0.1\); set a threshold inside"),
    (lambda: pack("nodes.save_coloured_glb").ColouredVoxel(torch.zeros(1, 8, 8, 8).index_put_(
        (torch.tensor([0]), torch.tensor([4]), torch.tensor([4]), torch.tensor([4])), torch.tensor(1.0)),
        torch.rand(1, 3, 8, 8, 8)), 0.6, "threshold: the surface at 0.6 crosses fewer than 25 cells"),
])
def test_save_coloured_glb_refuses_a_voxel_without_colours_or_surface_by_name(output_folder, make, threshold,
                                                                              message):
    with pytest.raises(ValueError, match=message):
        run_node("DistillSaveColouredGLB", voxel=make(), threshold=threshold, filename_prefix="mesh/x")
    assert not any(output_folder.rglob("*.glb"))
