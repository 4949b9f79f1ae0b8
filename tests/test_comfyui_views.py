"""3D View Prompts and the per-camera prior in a real ComfyUI: threestudio's labels, and each camera's own
conditioning in one batched model evaluation."""
import pytest
import torch

from comfy_harness import conditioning, pack, run_node, tiny_model

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

VIEW_SEEDS = {"front": 11, "side": 12, "back": 13, "overhead": 14}


def views(**kw):
    return run_node("Distill3DViewPrompts", prompt="", **{v: conditioning(s) for v, s in VIEW_SEEDS.items()} | kw).args


def cameras(elevation, azimuth):
    n = len(elevation)
    return pack("distill.cameras").Cameras(torch.tensor(elevation), torch.tensor(azimuth), torch.full((n,), 2.0),
                                           torch.full((n,), 60.0))


def test_each_camera_is_given_its_threestudio_views_conditioning():
    prompts, _ = views()
    seen = prompts.at(cameras([0.0, 0.0, 0.0, 61.0, -10.0], [10.0, 90.0, 170.0, 0.0, -100.0]))
    expected = ("front", "side", "back", "overhead", "side")
    assert all(torch.equal(c[0][0], conditioning(VIEW_SEEDS[v])[0][0]) for c, v in zip(seen, expected))


def watched(model):
    calls = []
    m = model.clone()

    def wrapper(apply, args):
        calls.append(tuple(args["input"].shape))
        return apply(args["input"], args["timestep"], **args["c"])

    m.set_model_unet_function_wrapper(wrapper)
    return m, calls


def seen_from(denoiser, prompts, views_of, x, sigma):
    """The predictions at x [N, ...] with item i seen from camera i."""
    camera, Request = pack("nodes.views"), pack("distill").Request
    return camera.CameraDenoiser(denoiser, prompts, x.shape, seed=0).for_cameras(views_of)(
        [Request(x, 7.5, "positive")], sigma)[0]


def test_each_camera_gets_its_views_conditioning_in_one_batched_forward():
    evaluation, camera = pack("nodes.evaluation"), pack("nodes.views")
    model, calls = watched(tiny_model("eps"))
    prompts, _ = views()
    three = cameras([0.0, 10.0, 70.0], [0.0, 180.0, 30.0])
    x = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([1.0, 3.0, 7.0])
    out = {}

    def run(denoiser, latent):
        out["batched"] = seen_from(denoiser, prompts, three, x, sigma)
        out["calls"] = list(calls)
        for i, view in enumerate(["front", "back", "overhead"]):
            only = camera.ViewPrompts({v: prompts.conditionings[view] for v in camera.VIEWS})
            out[view] = seen_from(denoiser, only, three[i], x[i:i + 1], sigma[i:i + 1])
        return latent

    evaluation.run_with_model(model, {"positive": conditioning(1), "negative": conditioning(2)},
                              torch.zeros(3, 4, 8, 8), 0, run)
    assert out["calls"] == [(6, 4, 8, 8)]  # positive and negative of the 3 cameras in one forward
    for i, view in enumerate(["front", "back", "overhead"]):
        for key in ("positive", "negative", "cfg"):
            torch.testing.assert_close(out["batched"][key][i:i + 1], out[view][key], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out["batched"]["positive"][:1], out["back"]["positive"], rtol=1e-3, atol=1e-3)


def test_a_prompt_and_clip_are_needed_for_views_not_connected():
    with pytest.raises(ValueError, match="clip: no CLIP and prompt to encode the side, overhead views"):
        run_node("Distill3DViewPrompts", prompt="a fox", front=conditioning(1), back=conditioning(2))


def test_a_combined_or_controlled_view_conditioning_is_refused_naming_it():
    combined = conditioning(1) + conditioning(2)
    with pytest.raises(ValueError, match="side: it holds 2 conditionings; a view is one prompt"):
        views(side=combined)
    with pytest.raises(ValueError, match="back: it carries area, mask"):
        views(back=[[conditioning(3)[0][0], {"area": (8, 8, 0, 0), "mask": torch.ones(1, 8, 8)}]])


def test_each_views_prompt_is_the_prompt_with_threestudios_suffix():
    import nodes

    from comfy_harness import tiny_clip

    clip = tiny_clip()
    prompts, positive = run_node("Distill3DViewPrompts", prompt="a fox", clip=clip, back=conditioning(3)).args
    for view in ("front", "side", "overhead"):
        expected = nodes.CLIPTextEncode().encode(clip, f"a fox, {view} view")[0]
        assert torch.equal(prompts.conditionings[view][0][0], expected[0][0]), view
    assert prompts.conditionings["back"] is not None and torch.equal(prompts.conditionings["back"][0][0],
                                                                     conditioning(3)[0][0])
    assert torch.equal(positive[0][0], nodes.CLIPTextEncode().encode(clip, "a fox")[0][0][0])
    assert not torch.equal(prompts.conditionings["front"][0][0], positive[0][0])
