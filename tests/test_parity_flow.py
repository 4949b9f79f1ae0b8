"""Parity on a rectified-flow model: the pack's SDS (default weighting), NFSD, SDI, LMC-SDS, DDS and PDS on ComfyUI's
flow model (ModelSamplingDiscreteFlow, shift 3) against ``reference_flow``, each reference code's rule written on
diffusers' FlowMatchEulerDiscreteScheduler with the same UNet weights.

test_parity.py's setting and tolerance (fixed t, the pack's draws replayed, the pack within 2⁴·R of the float64
reference). The reference codes are DDPM codes; on a flow each DDPM quantity is the DDPM model's of the same SNR
(ᾱ = (1 − σ)²/((1 − σ)² + σ²), sample x_σ/√((1 − σ)² + σ²)) and each timestep index the flow table's: the
conventions docs/methods.md states. Each test also checks that a plausible porting error lies outside the tolerance.
Measured: the pack within 1.1·R everywhere but SDI (4.7 to 8.7·R): ComfyUI guides in x0-space, and at the walk's
first level (σ ≈ 0.003) x̂0_c − x̂0_u = −σ·(v̂_c − v̂_u) cancels; the float32 reference guiding there as well lands as
far (4.6 and 6.7·R). Mutations of the flow handling put the pack 10³ to 10⁵ tolerances away: the output read as
x0 − ε, the VE ᾱ = 1/(1 + σ²) in the weightings and PDS, the VE (a, b) = (1, σ); SDI's walk from x itself, 10².
"""
import pytest
import torch

import reference_flow as ref
from comfy_harness import pack, run_node
from test_parity import (NEG, NEGATIVE, NFSD_NEGATIVE, POSITIVE, SHAPE, C, FixedBias, U, assert_parity, at_timestep,
                         models, normals, pack_step, reference, sdi_step, sds_node)
from test_parity_editing import S, editing_step

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]


@pytest.fixture(scope="module", autouse=True)
def release_models():
    yield
    models.cache_clear()


def differs(other, expected, tol: float) -> bool:
    return (other[1] - expected[1]).abs().max() > 4 * tol


@pytest.mark.parametrize("cfg,guidance_scale,k", [(7.5, 6.5, 30), (101.0, 100.0, 960)])
def test_flow_sds_default_weighting_is_one_minus_the_same_snr_alpha_bar(cfg, guidance_scale, k):
    """weighting auto = "sds", w = 1 − ᾱ with ᾱ = (1 − σ)²/((1 − σ)² + σ²). Error tried: ComfyUI's VE relation
    ᾱ = 1/(1 + σ²) applied to the flow's σ."""
    seen = pack_step(sds_node("flow", cfg, k))
    (eps,) = normals(seen["draws"], 1)
    expected = reference("flow", ref.sds_gradient, seen["x"], k, eps, C, U, guidance_scale)
    tol = assert_parity(seen["g"], expected)
    ve = reference("flow", ref.sds_gradient, seen["x"], k, eps, C, U, guidance_scale, lambda s: 1 / (1 + s**2))
    assert differs(ve, expected, tol)


@pytest.mark.parametrize("k", [199, 200])
def test_flow_nfsd_threshold_is_a_fraction_of_the_flow_table(k):
    """Threshold 0.2: level 199 of the flow's table below, 200 above (σ ≈ 0.43, not diffusers' timestep 1000·σ = 200,
    which both levels are above); δ_D on the other side lies outside the tolerance."""
    loss = run_node("DistillNFSDGuidance", model=models("flow")[0], positive=POSITIVE, negative=NEGATIVE,
                    nfsd_negative=NFSD_NEGATIVE, cfg=7.5, threshold=0.2, weighting="auto", **at_timestep(k)).args[0]
    seen = pack_step(loss)
    (eps,) = normals(seen["draws"], 1)
    expected = reference("flow", ref.nfsd_gradient, seen["x"], k, eps, C, U, NEG, 7.5)
    tol = assert_parity(seen["g"], expected)
    twin = models("flow")[2]
    x_sigma = ref.noised(twin, seen["x"].double(), eps.double(), k)
    (e_neg,) = ref.eps_at(twin, x_sigma, k, [NEG.double()])
    assert ((1 - ref.snr_alpha_bar(twin.sigma(k))) * e_neg).abs().max() > 4 * tol


def sdi_reference(prior, x, k: int, variant: str, placement: str, draws: list, start_scale: bool = True):
    """The update x − x̂0 (guidance 7.5, inversion −7.5, η 0.3) stacked with the noise (x_t − (1 − σ)·x)/σ of the
    latent x_t the UNet is given."""
    every = placement == "every_step"
    cond, uncond = C.to(x), U.to(x)
    x_inv, kappa = ref.sdi_invert(prior, x, k, cond, uncond, -7.5, 10, eta=0.3 if every else 0.0,
                                  step_noise=draws if every else None, start_scale=start_scale)
    x_t = ref.sdi_model_input(prior, x, k, x_inv, kappa, variant, eta=0.3, end_noise=None if every else draws[0])
    sigma = prior.sigma(k)
    return torch.stack([ref.sdi_update(prior, x, k, cond, uncond, x_t, 7.5), (x_t - (1 - sigma) * x) / sigma])


@pytest.mark.parametrize("variant,placement", [("inverted", "every_step"), ("renoise", "end")])
def test_flow_sdi_walks_the_same_snr_ddpm_chain(variant, placement):
    """At level 500 without jitter, the walk 0 → 1 → 101 → … → 401 → 500 of the flow's table by Euler (= DDIM in
    (x̂0, ε̂) form) steps, the clean latent as the DDPM sample of level 0; weighting auto = "sdi", σ/(1 − σ). Error
    tried: the walk from x itself as the flow sample of level 0."""
    seen = sdi_step("flow", 500, variant, placement, jitter=False)
    steps = len(ref.sdi_inversion_timesteps(ref.GRID, 500, 10)) - 1
    draws = normals(seen["draws"], steps if placement == "every_step" else 1)
    update, noise = zip(*(r.unbind() for r in reference("flow", sdi_reference, seen["x"], 500, variant, placement,
                                                         draws)))
    assert_parity(seen["noise"], noise)
    tol = assert_parity(seen["g"], update)
    unscaled = [r[0] for r in reference("flow", sdi_reference, seen["x"], 500, variant, placement, draws, False)]
    assert differs(unscaled, update, tol)


def test_flow_lmc_direction_matches_paper():
    """ω = 8, weighting auto = uniform, ẑ_t = x_σ − σ·v̂_u; b̂ a fixed field with its own mean and spread. Error
    tried: L_cond on the velocities (ε̂_c − ε̂_u is (1 − σ)·(v̂_c − v̂_u))."""
    bias = 0.5 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)) + 0.2
    correctors, model = pack("nodes.correctors"), models("flow")[0]
    corrector = correctors.LoadedCorrector("fixed", FixedBias(bias), correctors.what_it_models(model))
    loss = run_node("DistillSDSLoss", model=model, positive=POSITIVE, negative=NEGATIVE, cfg=8.0,
                    weighting="auto", corrector=corrector, **at_timestep(300)).args[0]
    seen = pack_step(loss)
    (eps,) = normals(seen["draws"], 1)
    expected = reference("flow", ref.lmc_gradient, seen["x"], 300, eps, C, U, bias, 8.0)
    tol = assert_parity(seen["g"], expected)
    assert differs(reference("flow", ref.lmc_gradient, seen["x"], 300, eps, C, U, bias, 8.0, False), expected, tol)


def test_flow_dds_compares_the_epsilons_read_off_the_velocity():
    """cfg 7.5, w = 1, ε̂ = x_σ + (1 − σ)·v̂ at each latent. Error tried: the velocities' difference."""
    seen, z_src = editing_step("DistillDDSLoss", "flow", 7.5, 400)
    (eps,) = normals(seen["draws"], 1)
    expected = reference("flow", ref.dds_gradient, seen["x"], z_src, 400, eps, C, S, U, 7.5)
    tol = assert_parity(seen["g"], expected)
    assert differs(reference("flow", ref.dds_gradient, seen["x"], z_src, 400, eps, C, S, U, 7.5, False), expected, tol)


def test_flow_pds_is_the_authors_posterior_on_the_same_snr_ddpm_chain():
    """Level 501 of the flow's table, t − 1 = 499 and β_t from 500, cfg 50; ε_{t−1} any draw (it cancels). Error
    tried: the DDPM formulas on the flow samples themselves."""
    seen, z_src = editing_step("DistillPDSLoss", "flow", 50.0, 501)
    (eps,) = normals(seen["draws"], 1)
    eps_prev = torch.randn(SHAPE, generator=torch.Generator().manual_seed(12))
    expected = reference("flow", ref.pds_gradient, seen["x"], z_src, 501, eps, eps_prev, C, S, U, 50.0)
    tol = assert_parity(seen["g"], expected)
    flow_scale = reference("flow", ref.pds_gradient, seen["x"], z_src, 501, eps, eps_prev, C, S, U, 50.0, False)
    assert differs(flow_scale, expected, tol)
