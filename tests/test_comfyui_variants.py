"""CSD, ISM, SDS-Bridge and ASD Loss in a real ComfyUI: in Optimize Latent and Optimize Image, on EPS, v-prediction and
flow models, and in Optimize 3D; each step's branches in one batched forward (ISM's inversion calls before it), no
graph kept."""
import pytest
import torch

from comfy_harness import conditioning, pack, run_node, tiny_model, tiny_vae
from test_comfyui_image import optimize_image, watched

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

TIMESTEPS = dict(weighting="auto", t_min=0.02, t_max=0.98, t_schedule="uniform", grad_clip=0.0)
PROMPTS = dict(positive=conditioning(1), negative=conditioning(2))
LOSSES = {
    "DistillCSDLoss": dict(csd_negative=conditioning(3), scale=1.0, ramp=0.5, late_t_max=0.5),
    "DistillISMLoss": dict(cfg=7.5, delta_t=0.08, inversion_interval=0.2, t_max=0.5),
    "DistillSDSBridgeLoss": dict(bridge_target=conditioning(4), bridge_source=conditioning(5), cfg=40.0,
                                 stage_two=0.5),
    "DistillASDLoss": dict(cfg=7.5, shift=0.1),
}
BRANCHES = {"DistillCSDLoss": (3, 2), "DistillSDSBridgeLoss": (2, 2), "DistillASDLoss": (3, 3)}
"""Branch evaluations in a step's one forward, (first half of the run, second half)."""


def loss(node_id: str, model):
    return run_node(node_id, model=model, **PROMPTS, **(TIMESTEPS | LOSSES[node_id])).args[0]


LATENT_CASES = [(n, "eps") for n in LOSSES] + [(n, k) for n in ("DistillISMLoss", "DistillASDLoss")
                                                 for k in ("v", "flow")]
"""Every loss on EPS; ISM and ASD, which step between noise levels, also on v and flow (the others meet flow in
Optimize Image below)."""


@pytest.mark.parametrize("node_id,kind", LATENT_CASES)
def test_variant_optimizes_a_latent_with_one_forward_per_step(node_id, kind):
    model, calls = watched(tiny_model(kind))
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    out, _ = run_node("DistillOptimizeLatent", latent={"samples": latent}, loss=loss(node_id, model), steps=4,
                      learning_rate=0.1, optimizer="adamw", lr_schedule="cosine", seed=0, l2_to_init=0.0).args
    assert torch.isfinite(out["samples"]).all() and (out["samples"] - latent).abs().max() > 1e-3
    assert all(inference and not grad for _, inference, grad in calls)
    if node_id in BRANCHES:
        first, second = BRANCHES[node_id]
        assert [shape[0] for shape, _, _ in calls] == [first, first, second, second]
    else:  # ISM: the walk to s and the step s → t, one call each, then the 2-branch forward
        assert len(calls) > 4 and calls[-1][0][0] == 2


@pytest.mark.parametrize("node_id", list(LOSSES))
def test_variant_optimizes_an_image_on_a_flow_model(node_id):
    model, calls = watched(tiny_model("flow"))
    image = torch.rand((1, 64, 64, 3), generator=torch.Generator().manual_seed(7))
    out, _ = optimize_image(loss(node_id, model), vae=tiny_vae(), image=image, steps=2)
    assert out.shape == image.shape and (out - image).abs().max() > 1e-3
    assert calls and all(inference and not grad for _, inference, grad in calls)


@pytest.mark.parametrize("node_id", list(LOSSES))
def test_variant_distills_a_scene_in_optimize_3d(node_id):
    """Both stages of each loss (2 steps: progress 0 and 0.5) reach the voxel grid through the VAE and the renderer."""
    from test_comfyui_3d import SMALL, optimize_3d

    voxel, turntable, _ = optimize_3d(loss(node_id, tiny_model("eps")), steps=2)
    start = pack("distill.scene").VoxelScene(SMALL["grid"]).voxel()
    assert torch.isfinite(voxel.data).all() and (voxel.data[0] - start).abs().max() > 1e-4
    assert torch.isfinite(turntable).all()
