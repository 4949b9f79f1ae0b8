"""Parity with an independent reference: the pack's losses in ComfyUI against threestudio-style code on diffusers.

One small random UNet runs twice with the same weights: in ComfyUI, through the pack's nodes and its evaluation
path (run_with_model, the loss's gradient), and in diffusers (``reference_diffusers``: UNet2DConditionModel with a
DDIMScheduler, or FlowMatchEulerDiscreteScheduler for flow), which follows the reference codes' conventions. t is
fixed (linear_anneal at its first step gives t_max; a pack t of k/999 is timestep k) and every random draw of the
pack — ε, SDI's jitter and η noises — is replayed from its per-item generators and handed to the reference.

Tolerance, from float32 arithmetic. The pack and the reference are two float32 evaluations (unit roundoff
u = 2⁻²⁴) of the same math, differing in operation order, in the path (ComfyUI works in σ-space and reads ε̂ off
its x0-prediction) and in their noise tables (diffusers' ᾱ is a float32 cumulative product; 1 − ᾱ near t = 0 loses
up to u/β₁ ≈ 2¹⁰·u to cancellation). The exact value is the same reference evaluated in float64 with its schedule
recomputed from the definition (``float64_twin``); the float32 reference's distance from it, R, is what float32
rounding does to this very computation — the network's depth, the guidance scale's amplification, the chain of
SDI's inversion steps included. The pack must lie within 2⁴·R of the exact value, allowing its different order
and path a few more roundings per operation (measured: the pack's distance stays below 2.2·R in every test).
A convention error moves results by far more: each test that could hide one also checks that the reference under
the other convention (the other CFG form, the other side of NFSD's threshold) lies outside the tolerance. Measured
for issue 11's SDI and LMC conventions, each alone: 1 − ᾱ_t instead of σ_t, the forward step's variance, the
inverted latent at the scale of t + δ, eq. 10's rescaling in the loss put the pack 500 to 90 000 tolerances away.
"""
import dataclasses
import functools

import pytest
import torch
from torch import Tensor, nn

import reference_diffusers as ref
from comfy_harness import conditioning, pack, run_node, tiny_model
from rng import copies

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]

ROUNDINGS = 2.0**4
SHAPE = (2, 4, 16, 16)
POSITIVE, NEGATIVE, NFSD_NEGATIVE = conditioning(1), conditioning(2), conditioning(3)
C, U, NEG = (c[0][0] for c in (POSITIVE, NEGATIVE, NFSD_NEGATIVE))


@functools.cache
def models(kind: str):
    """(ComfyUI ModelPatcher, the float32 reference prior, its float64 twin) for "eps", "v" or "flow", with weights
    at a trained network's scale — norms 1, small biases, weights N(0, 1/fan_in) — so that every prediction is of
    order 1 and the prompt changes it by as much (tiny_model's uniform 0.05 leaves ε̂_c − ε̂_u near 10⁻³ of ε̂)."""
    model = tiny_model(kind)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.model.diffusion_model.named_parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:
                p.copy_(torch.ones_like(p) if name.endswith("weight") else 0.02 * torch.randn(p.shape, generator=g))
    unet = ref.diffusers_unet(model)
    prediction = {"eps": "epsilon", "v": "v_prediction"}
    prior = ref.FlowPrior(unet) if kind == "flow" else ref.DDPMPrior(unet, prediction[kind])
    return model, prior, ref.float64_twin(prior)


def reference(kind: str, fn, *args, **kwargs) -> tuple[Tensor, Tensor]:
    """fn on the float32 reference and on its float64 twin (tensor arguments cast to float64)."""
    _, prior, twin = models(kind)

    def double(a):
        return a.double() if isinstance(a, Tensor) else [double(i) for i in a] if isinstance(a, list) else a

    return fn(prior, *args, **kwargs), fn(twin, *map(double, args), **{k: double(v) for k, v in kwargs.items()})


def assert_parity(actual: Tensor, expected: tuple[Tensor, Tensor]) -> float:
    """|pack − exact| ≤ 2⁴·R, R = max |float32 reference − exact|; returns the tolerance."""
    ref32, exact = expected
    tol = ROUNDINGS * (ref32.double() - exact).abs().max().item()
    err = (actual.double() - exact).abs().max().item()
    assert err <= tol, f"max |pack − reference| = {err:.3g} > tolerance {tol:.3g} (16 float32 roundings)"
    return tol


def at_timestep(k: int) -> dict:
    """Timestep inputs that put the loss's first step at timestep k of 1000 (fraction k/999)."""
    return dict(t_min=0.0, t_max=k / 999, t_schedule="linear_anneal", grad_clip=0.0)


def pack_step(loss, seed: int = 0) -> dict:
    """The pack's gradient at a loss's first step: g, the model-space latent x, and copies of the item generators
    as they were before the step (to replay its draws)."""
    distill, evaluation = pack("distill"), pack("nodes.evaluation")
    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)) / 0.18215
    seen = {}

    def run(denoiser, x):
        gens = distill.item_generators(seed, len(x))
        seen["draws"] = copies(gens)
        seen["g"] = loss.loss.gradient(denoiser, x, distill.Run(gens))
        seen["x"] = x.clone()
        return x

    with torch.inference_mode():
        evaluation.run_with_model(loss.model, loss.conds, latent, seed, run)
    return seen


def normals(generators: list[torch.Generator], count: int, uniforms: int = 0) -> list[Tensor]:
    """The next ``count`` N(0, I) draws [B, ...] of the items, after each item's next ``uniforms`` U[0, 1) draws."""
    per_item = []
    for g in generators:
        for _ in range(uniforms):
            torch.rand((), generator=g, dtype=torch.float64)
        per_item.append([torch.randn(SHAPE[1:], generator=g) for _ in range(count)])
    return [torch.stack(draws) for draws in zip(*per_item)]


@pytest.fixture(scope="module", autouse=True)
def release_models():
    """Drop the cached models while ComfyUI is still importable (a ModelPatcher detaches when collected)."""
    yield
    models.cache_clear()


def test_diffusers_unet_carries_comfyui_weights():
    model, prior, twin = models("eps")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([3.0, 700.0])
    ctx = torch.cat([C, U])
    with torch.no_grad():
        comfyui = model.model.diffusion_model(x, t, context=ctx)
        diffusers = prior.unet(x, t, encoder_hidden_states=ctx).sample
        exact = twin.unet(x.double(), t, encoder_hidden_states=ctx.double()).sample
    assert_parity(comfyui, (diffusers, exact))


def sds_node(kind: str, cfg: float, k: int, weighting: str = "auto"):
    return run_node("DistillSDSLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE, cfg=cfg,
                    weighting=weighting, **at_timestep(k)).args[0]


@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("cfg,guidance_scale", [(7.5, 6.5), (101.0, 100.0)])
@pytest.mark.parametrize("k", [30, 960])
def test_sds_gradient_matches_threestudio(kind, cfg, guidance_scale, k):
    """threestudio's guidance_scale s is cfg s + 1 here; w = 1 − ᾱ_t."""
    seen = pack_step(sds_node(kind, cfg, k))
    (eps,) = normals(seen["draws"], 1)
    expected = reference(kind, ref.sds_gradient, seen["x"], k, eps, C, U, guidance_scale)
    tol = assert_parity(seen["g"], expected)
    other_form = reference(kind, ref.sds_gradient, seen["x"], k, eps, C, U, guidance_scale + 1)[1]
    assert (other_form - expected[1]).abs().max() > 4 * tol


@pytest.mark.parametrize("cfg,guidance_scale", [(7.5, 6.5), (101.0, 100.0)])
@pytest.mark.parametrize("k", [30, 960])
def test_flow_sds_gradient_matches_flow_matching_scheduler(cfg, guidance_scale, k):
    """ComfyUI's flow model tells the UNet 1000·σ and reads its output as ε − x0, as FlowMatchEulerDiscreteScheduler
    does (shift 3); weighting uniform here, the default's w and the other methods on flow in test_parity_flow.py."""
    seen = pack_step(sds_node("flow", cfg, k, weighting="uniform"))
    (eps,) = normals(seen["draws"], 1)
    expected = reference("flow", ref.flow_sds_gradient, seen["x"], k, eps, C, U, guidance_scale)
    assert_parity(seen["g"], expected)


@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("k", [199, 200])
def test_nfsd_gradient_matches_paper(kind, k):
    """Threshold 0.2 of the schedule is the paper's t < 200: timestep 199 below, 200 above."""
    loss = run_node("DistillNFSDGuidance", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE,
                    nfsd_negative=NFSD_NEGATIVE, cfg=7.5, threshold=0.2, weighting="auto", **at_timestep(k)).args[0]
    seen = pack_step(loss)
    (eps,) = normals(seen["draws"], 1)
    expected = reference(kind, ref.nfsd_gradient, seen["x"], k, eps, C, U, NEG, 7.5)
    tol = assert_parity(seen["g"], expected)
    prior = models(kind)[2]
    x_t = prior.noised(seen["x"].double(), eps.double(), k)
    (e_neg,) = prior.eps(x_t, k, [NEG.double()])
    assert ((1 - prior.alpha_bar(k)) * e_neg).abs().max() > 4 * tol  # δ_D on the other side of the threshold


SDI_CASES = [("inverted", "every_step", "eps"), ("inverted", "every_step", "v"), ("renoise", "end", "eps"),
             ("renoise", "end", "v"), ("inverted", "end", "eps"), ("renoise", "every_step", "eps")]
"""(variant, eta placement, prediction): the reference code's, the paper's Alg. 2, and the two mixed ones."""


def sdi_step(kind: str, k: int, variant: str, placement: str, jitter: bool, seed: int = 0) -> dict:
    """The pack's SDI step in the reference code's numbers, standard form: cfg 8.5 (its 7.5), inversion −6.5
    (its −7.5), η 0.3, 10 inversion steps, weighting auto; seen["noise"] is what its noise source returned."""
    noise = run_node("DistillDDIMInvertNoise", inversion_steps=10, inversion_cfg=-6.5, eta=0.3,
                     eta_placement=placement, tau_jitter=jitter, variant=variant, refresh_every=1).args[0]
    loss = run_node("DistillSDSLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE, cfg=8.5,
                    weighting="auto", noise=noise, **at_timestep(k)).args[0]
    seen = {}

    def recorded(*args):
        seen["noise"] = noise(*args)
        return seen["noise"]

    loss = dataclasses.replace(loss, loss=dataclasses.replace(loss.loss, noise=recorded))
    return seen | pack_step(loss, seed)


def sdi_reference(prior, x, k: int, variant: str, placement: str, delta: int, draws: list[Tensor]) -> Tensor:
    """The reference's update x − x̂0 with guidance 7.5, inversion guidance −7.5 and η 0.3, stacked with the noise
    it subtracts, (x_t − √ᾱ_t·x)/√(1 − ᾱ_t) for the latent x_t the UNet is given told t."""
    every = placement == "every_step"
    cond, uncond = C.to(x), U.to(x)
    x_inv, kappa = ref.sdi_invert(prior, x, k, cond, uncond, -7.5, 10, eta=0.3 if every else 0.0,
                                  step_noise=draws if every else None, delta=delta)
    x_t = ref.sdi_model_input(prior, x, k, x_inv, kappa, variant, eta=0.3, end_noise=None if every else draws[0])
    abar = prior.alpha_bar(k)
    noise = (x_t - abar.sqrt() * x) / (1 - abar).sqrt()
    return torch.stack([ref.sdi_update(prior, x, k, cond, uncond, x_t, 7.5), noise])


def assert_sdi_parity(kind: str, seen: dict, k: int, variant: str, placement: str, jitter: bool, delta: int):
    steps = len(ref.sdi_inversion_timesteps(models(kind)[1], k, 10, delta)) - 1
    draws = normals(seen["draws"], steps if placement == "every_step" else 1, uniforms=int(jitter))
    update, noise = zip(*(r.unbind() for r in reference(kind, sdi_reference, seen["x"], k, variant, placement,
                                                         delta, draws)))
    assert_parity(seen["noise"], noise)
    assert_parity(seen["g"], update)


@pytest.mark.parametrize("variant,placement,kind", SDI_CASES)
def test_sdi_noise_and_update_match_threestudio(variant, placement, kind):
    """At t = 500 without jitter: the walk 0 → 1 → 101 → … → 401 → 500, its noise, and the update
    x − x̂0 = σ_t·(ε̂ − κ) (weighting auto = "sdi")."""
    seen = sdi_step(kind, 500, variant, placement, jitter=False)
    assert_sdi_parity(kind, seen, 500, variant, placement, jitter=False, delta=0)


def seed_jittering_to_the_top(k: int) -> int:
    """A seed whose every item draws τ with k/999 + τ/10 > 1 (with margin), so the walk ends at timestep 999."""
    distill = pack("distill")
    for seed in range(100):
        tau = torch.stack([torch.rand((), generator=g, dtype=torch.float64)
                           for g in distill.item_generators(seed, SHAPE[0])])
        if (k / 999 + tau / 10 > 1.01).all():
            return seed
    raise AssertionError("no seed among 100 jitters every item past the top")


@pytest.mark.parametrize("variant,placement,kind", SDI_CASES[:4])
def test_sdi_with_jitter_feeds_the_level_above_t(variant, placement, kind):
    """At t = 949 with τ past the top, the whole ten-step walk 0 → 1 → 101 → … → 901 → 999 (δ = 50): "inverted"
    gives the UNet that DDPM-scale latent told 949, "renoise" re-noises x at 949 with its κ."""
    k = 949
    seen = sdi_step(kind, k, variant, placement, jitter=True, seed=seed_jittering_to_the_top(k))
    assert_sdi_parity(kind, seen, k, variant, placement, jitter=True, delta=999 - k)


def test_shipped_sdi_workflow_runs_the_reference_settings():
    """example_workflows/sdi_text_to_image with the tiny model at t = 500 (τ jitter off to fix the walk): its cfg, inversion
    cfg, η, variant and placement in the standard form must be the paper's 7.5 / −7.5 / 0.3 of the reference code."""
    import json

    from comfy_harness import PACK_ROOT
    from headless.workflow import find_node

    prompt = json.loads((PACK_ROOT / "example_workflows/api/sdi_text_to_image.json").read_text())
    inputs = {name: prompt[find_node(prompt, name)]["inputs"] for name in ("DistillDDIMInvertNoise", "DistillSDSLoss")}
    inversion = {k: v for k, v in inputs["DistillDDIMInvertNoise"].items() if not isinstance(v, list)}
    noise = run_node("DistillDDIMInvertNoise", **(inversion | {"tau_jitter": False})).args[0]
    settings = {k: v for k, v in inputs["DistillSDSLoss"].items() if k in ("cfg", "weighting", "grad_clip")}
    loss = run_node("DistillSDSLoss", model=models("eps")[0], positive=POSITIVE, negative=NEGATIVE, noise=noise,
                    **(settings | at_timestep(500))).args[0]
    seen = pack_step(loss)
    variant, placement = inversion["variant"], inversion["eta_placement"]
    steps = len(ref.sdi_inversion_timesteps(models("eps")[1], 500, 10)) - 1
    draws = normals(seen["draws"], steps if placement == "every_step" else 1)
    update, _ = zip(*(r.unbind() for r in reference("eps", sdi_reference, seen["x"], 500, variant, placement, 0,
                                                    draws)))
    assert inversion["inversion_steps"] == 10 and inversion["refresh_every"] == 1
    assert_parity(seen["g"], update)


class FixedBias(nn.Module):
    """A corrector that predicts one given b̂ whatever it is asked."""

    def __init__(self, bias: Tensor):
        super().__init__()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.bias.to(x)


@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("k", [100, 900])
def test_lmc_direction_matches_paper(kind, k):
    """ω = 8 in the paper's (standard) form; b̂ with another mean and spread than ẑ_t, used as given."""
    bias = 0.5 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)) + 0.2
    correctors, model = pack("nodes.correctors"), models(kind)[0]
    corrector = correctors.LoadedCorrector("fixed", FixedBias(bias), correctors.what_it_models(model))
    loss = run_node("DistillSDSLoss", model=model, positive=POSITIVE, negative=NEGATIVE, cfg=8.0,
                    weighting="auto", corrector=corrector, **at_timestep(k)).args[0]
    seen = pack_step(loss)
    (eps,) = normals(seen["draws"], 1)
    assert_parity(seen["g"], reference(kind, ref.lmc_gradient, seen["x"], k, eps, C, U, bias, 8.0))
