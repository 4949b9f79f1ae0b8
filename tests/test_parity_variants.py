"""Parity of CSD, ISM, SDS-Bridge and ASD with their authors' codes, written on diffusers (``reference_variants``).

The setting and the tolerance are test_parity.py's: the same small UNet in ComfyUI (through the nodes and the pack's
evaluation path) and in diffusers, t fixed, every random draw of the pack replayed, and the pack within 2⁴·R of the
float64 reference, R the float32 reference's own distance from it. Each test also checks that one plausible
convention error of a port lies outside that tolerance. Steps later in a run (CSD's ramp, SDS-Bridge's second stage)
fix t with t_max = t_min + 10⁻¹² (one uniform draw, replayed).
"""
import pytest
import torch

import reference_variants as ref
from comfy_harness import conditioning, pack, run_node
from rng import copies
from test_parity import NEGATIVE, POSITIVE, SHAPE, C, U, assert_parity, at_timestep, models, normals, reference

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

CSD_NEGATIVE, TARGET, SOURCE = conditioning(3), conditioning(4), conditioning(5)
NEG, TGT, SRC = (c[0][0] for c in (CSD_NEGATIVE, TARGET, SOURCE))


@pytest.fixture(scope="module", autouse=True)
def release_models():
    yield
    models.cache_clear()


def fixed_timestep(k: int) -> dict:
    """Timestep inputs that put any step of a run at timestep k of 1000 (fraction k/999), with one uniform draw."""
    return dict(t_min=k / 999, t_max=k / 999 + 1e-12, t_schedule="uniform", grad_clip=0.0)


def pack_step(loss, steps: int = 1, step: int = 0, seed: int = 0) -> dict:
    """The pack's gradient at one step of a run of ``steps``: g, the model-space latent x and copies of the item
    generators before the step."""
    distill, evaluation = pack("distill"), pack("nodes.evaluation")
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)) / 0.18215
    seen = {}

    def run(denoiser, x):
        gens = distill.item_generators(seed, len(x))
        seen["draws"] = copies(gens)
        seen["g"] = loss.loss.gradient(denoiser, x, distill.Run(gens, steps=steps, step=step))
        seen["x"] = x.clone()
        return x

    with torch.inference_mode():
        evaluation.run_with_model(loss.model, loss.conds, latent, seed, run)
    return seen


def csd_node(kind: str, timesteps: dict):
    return run_node("DistillCSDLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE,
                    csd_negative=CSD_NEGATIVE, scale=1.0, ramp=0.5, late_t_max=1.0, weighting="auto",
                    **timesteps).args[0]


@pytest.mark.parametrize("kind,step", [("eps", 0), ("eps", 2500), ("v", 2500), ("v", 6000)])
def test_csd_gradient_matches_csd_if_config(kind, step):
    """A run of 10 001 steps at step k is csd-if's global step k: the empty prompt gives way to the negative one over
    steps 0…5000 (ramp 0.5), w = 1. Error tried: the ramp read as a switch at step 5000 (ε̂_neg from the start)."""
    seen = pack_step(csd_node(kind, fixed_timestep(300)), steps=10_001, step=step)
    (eps,) = normals(seen["draws"], 1, uniforms=1)
    expected = reference(kind, ref.csd_gradient, seen["x"], 300, eps, C, U, NEG, step)
    tol = assert_parity(seen["g"], expected)
    if step == 2500:
        switched = reference(kind, ref.csd_gradient, seen["x"], 300, eps, C, U, NEG, 5000)[1]
        assert (switched - expected[1]).abs().max() > 4 * tol


def ism_node(kind: str, k: int):
    return run_node("DistillISMLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE, cfg=7.5,
                    delta_t=0.08, inversion_interval=0.2, weighting="auto", **at_timestep(k)).args[0]


@pytest.mark.parametrize("kind,k", [("eps", 60), ("eps", 500), ("v", 500), ("eps", 980)])
def test_ism_gradient_matches_lucid_dreamer(kind, k):
    """Timestep k is LucidDreamer's index k − 1: at 500 the walk 1 → 201 → 401 → 420, then 420 → 500; at 60 it has
    no step (s = 1, its first level); at 980 four. Error tried: the walk from the clean latent (SDI's start) instead
    of x noised with ε to timestep 1."""
    seen = pack_step(ism_node(kind, k))
    (eps,) = normals(seen["draws"], 1)
    expected = reference(kind, ref.ism_gradient, seen["x"], k - 1, eps, C, U)
    tol = assert_parity(seen["g"], expected)
    clean = reference(kind, ref.ism_gradient, seen["x"], k - 1, eps, C, U, start_clean=True)[1]
    assert (clean - expected[1]).abs().max() > 4 * tol


def bridge_node(kind: str, timesteps: dict):
    return run_node("DistillSDSBridgeLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE,
                    bridge_target=TARGET, bridge_source=SOURCE, cfg=40.0, stage_two=0.5, weighting="auto",
                    **timesteps).args[0]


@pytest.mark.parametrize("kind,step", [("eps", 499), ("eps", 500), ("v", 500)])
def test_sds_bridge_gradient_matches_its_2d_code(kind, step):
    """A run of 1000 steps: step 499 is sds_loss at cfg 40, step 500 bridge_stage_two. Error tried: threestudio's CFG
    form ε̂_c + s·(ε̂_c − ε̂_u) in the first stage (cfg 41 here)."""
    seen = pack_step(bridge_node(kind, fixed_timestep(700)), steps=1000, step=step)
    (eps,) = normals(seen["draws"], 1, uniforms=1)
    two = step >= 500
    expected = reference(kind, ref.bridge_gradient, seen["x"], 700, eps, C, U, TGT, SRC, 40.0, two)
    tol = assert_parity(seen["g"], expected)
    if not two:
        other_form = reference(kind, ref.bridge_gradient, seen["x"], 700, eps, C, U, TGT, SRC, 41.0, two)[1]
        assert (other_form - expected[1]).abs().max() > 4 * tol


def asd_node(kind: str, k: int):
    return run_node("DistillASDLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE, cfg=7.5,
                    shift=0.1, weighting="auto", **at_timestep(k)).args[0]


@pytest.mark.parametrize("kind,k", [("eps", 500), ("v", 960)])
def test_asd_gradient_matches_scale_dreamer(kind, k):
    """t_min 0 (min_step 0): t⁺ = 550 for 500, and 999 (clamped to the top) for 960; the second prediction in the
    same batched forward at its own level. Error tried: CFG on the second prediction too."""
    seen = pack_step(asd_node(kind, k))
    (eps,) = normals(seen["draws"], 1)
    expected = reference(kind, ref.asd_gradient, seen["x"], k, eps, C, U, 7.5, 0)
    tol = assert_parity(seen["g"], expected)
    guided = reference(kind, ref.asd_gradient, seen["x"], k, eps, C, U, 7.5, 0, True)[1]
    assert (guided - expected[1]).abs().max() > 4 * tol
