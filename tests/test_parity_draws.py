"""Parity of the random draws and schedules with the reference codes (``reference_draws``): which timesteps the pack's
t lands on, SDI's τ jitter, t annealing and re-inversion, LMC-SDS's fixed ε and the fantasia3d weighting.

The draws are read where the model sees them: a recording denoiser on the tiny SD1.5 model's own σ table stands in for
the UNet (it predicts x̂0 = 0), and a σ it is called with is the timestep ComfyUI tells the UNet,
``model_sampling.timestep(σ)``, the nearest table level in log σ. LMC-SDS and fantasia3d run the tiny UNet itself
against the diffusers reference of test_parity, with the pack's draws replayed.
"""
import dataclasses

import numpy as np
import pytest
import torch

import reference_draws as ref
from comfy_harness import pack, run_node
from rng import copies
from test_parity import (NEGATIVE, POSITIVE, SHAPE, C, U, FixedBias, assert_parity, at_timestep, models, normals,
                         pack_step, reference)

pytestmark = [pytest.mark.comfyui, pytest.mark.usefixtures("comfy")]


@pytest.fixture(scope="module", autouse=True)
def release_models():
    """Drop the cached models while ComfyUI is still importable (a ModelPatcher detaches when collected)."""
    yield
    models.cache_clear()


class RecordingDenoiser:
    """The tiny EPS model's σ table with x̂0 = 0 for every branch; ``calls`` holds the σ [B] of each evaluation."""

    one_t_per_batch = False

    def __init__(self):
        self.sampling = models("eps")[0].get_model_object("model_sampling")
        self.sigmas = self.sampling.sigmas.float()
        self.calls = []

    def coefficients(self, sigma):
        return torch.ones_like(sigma), sigma

    def __call__(self, requests, sigma):
        self.calls.append(sigma.clone())
        return [{name: torch.zeros_like(r.x_noisy) for name in [*r.branches(), "cfg"]} for r in requests]

    def told(self, sigma):
        """The timestep ComfyUI tells the UNet at σ."""
        return self.sampling.timestep(sigma).long()

    def level(self, sigma):
        """σ's fractional position in the table (log-linear between levels): the noise level the latent carries."""
        log_sigmas = self.sampling.log_sigmas.double().numpy()
        return torch.from_numpy(np.interp(sigma.double().log().numpy(), log_sigmas, np.arange(len(log_sigmas))))


def sds_loss(**inputs):
    return run_node("DistillSDSLoss", model=models("eps")[0], positive=POSITIVE, negative=NEGATIVE,
                    **({"cfg": 7.5, "weighting": "auto", "grad_clip": 0.0} | inputs)).args[0].loss


def sdi_noise(**inputs):
    defaults = dict(inversion_steps=10, inversion_cfg=-6.5, eta=0.3, eta_placement="every_step", tau_jitter=True,
                    variant="inverted", refresh_every=1)
    return run_node("DistillDDIMInvertNoise", **(defaults | inputs)).args[0]


def ks_distance(samples: torch.Tensor, lo: float, hi: float) -> float:
    """Kolmogorov–Smirnov distance of samples from U[lo, hi]."""
    u = ((samples.double() - lo) / (hi - lo)).sort().values
    n = len(u)
    steps = torch.arange(1, n + 1, dtype=torch.float64) / n
    return max((steps - u).max().item(), (u - (steps - 1 / n)).max().item())


def test_uniform_t_lands_on_threestudios_timesteps_but_its_top_one():
    """t ~ U[0.02, 0.98] (100 000 draws through SDS Loss): the latent's noise level is continuous over table positions
    19.98 … 979.02 (t·999), and the UNet is told the nearest level, so it sees timesteps 20 … 979 — threestudio's
    randint(20, 981) without 980 — each interior one with probability 1/959.04 (threestudio's 1/961), 20 and 979 with
    0.52/959.04 (the half level at each end), at most half a level from the noise it carries (threestudio: none)."""
    loss, denoiser = sds_loss(t_min=0.02, t_max=0.98, t_schedule="uniform"), RecordingDenoiser()
    distill = pack("distill")
    run = distill.Run(distill.item_generators(0, 1000), steps=100)
    x = torch.zeros(1000, 1, 1, 1)
    for run.step in range(run.steps):
        loss.gradient(denoiser, x, run)
    told = torch.cat([denoiser.told(sigma) for sigma in denoiser.calls])
    level = denoiser.level(torch.cat(denoiser.calls))
    threestudio = ref.uniform_timestep_law(0.02, 0.98)
    assert set(told.tolist()) == set(threestudio) - {980}
    assert level.min() >= 19.98 - 1e-3 and level.max() <= 979.02 + 1e-3
    assert ks_distance(level, 19.98, 979.02) < 1.95 / len(level) ** 0.5  # 99.9 % for a continuous uniform
    assert ((level - level.round()).abs() > 1e-3).float().mean() > 0.99  # threestudio's levels are all whole
    assert (level - told).abs().max() <= 0.5 + 1e-3
    law = np.full(960, 1 / 959.04)
    law[[0, -1]] = 0.52 / 959.04
    counts = np.bincount(told.numpy() - 20, minlength=960)
    chi2 = ((counts - len(told) * law) ** 2 / (len(told) * law)).sum()
    assert chi2 < 959 + 5 * (2 * 959) ** 0.5, f"χ² = {chi2:.0f} over 959 degrees of freedom"
    gap = 0.5 * (sum(abs(p - float(threestudio[k])) for k, p in zip(range(20, 980), law)) + float(threestudio[980]))
    assert gap < 0.0021  # total variation from threestudio's law: its timestep 980 and the two half-weight ends


def inversion_ends(monkeypatch, k: int, items: int, seed: int = 0) -> torch.Tensor:
    """Where the pack's SDI walk ends, as table positions (fraction·999), for items at timestep k (τ jitter on)."""
    inversion, distill = pack("distill.inversion"), pack("distill")
    grids = []

    def recorded(denoiser, x, step_grids, *args, **kwargs):
        grids.extend(step_grids)
        return inversion_walk(denoiser, x, step_grids, *args, **kwargs)

    inversion_walk = inversion.ddim_invert
    monkeypatch.setattr(inversion, "ddim_invert", recorded)
    loss = sds_loss(cfg=8.5, noise=sdi_noise(), **at_timestep(k))
    loss.gradient(RecordingDenoiser(), torch.zeros(items, 1, 2, 2), distill.Run(distill.item_generators(seed, items)))
    return torch.tensor([g[-1] for g in grids], dtype=torch.float64) * 999


def test_sdi_tau_jitter_spans_threestudios_delta_continuously(monkeypatch):
    """threestudio's δ = int(random()·1000 // 10) is U{0 … 99}; the pack's τ·999 is U[0, 99.9) (4000 items at
    timestep 500), one draw per item (threestudio: one per call, with its batch of 1)."""
    delta = inversion_ends(monkeypatch, 500, 4000) - 500
    top = max(ref.sdi_delta_law(10)) + 1
    assert delta.min() >= 0 and 99 < delta.max() < 99.9
    assert ks_distance(delta, 0, 99.9) < 1.95 / len(delta) ** 0.5
    assert len(set(delta.tolist())) == len(delta)
    assert set(delta.floor().long().tolist()) == set(range(top))  # whole parts: threestudio's 0 … 99


def test_sdi_tau_jitter_ends_at_the_top_as_often_as_threestudio(monkeypatch):
    """At timestep 949 threestudio's min(949 + δ, 999) is 999 with probability 50/100; the pack's walk ends at the top
    of the table (fraction 1) with probability 1 − 50/99.9 = 0.4995 (measured on 4000 items, within 4σ)."""
    ends = inversion_ends(monkeypatch, 949, 4000)
    threestudio = sum(p for d, p in ref.sdi_delta_law(10).items() if ref.sdi_inversion_target(949, d) == 999)
    at_top = (ends == 999).double().mean().item()
    assert threestudio == 0.5 and abs(at_top - 0.4995) < 4 * (0.25 / len(ends)) ** 0.5
    assert ends.max() == 999 and (ends[ends < 999] < 949 + 50).all()


def annealed_told_timesteps(steps: int) -> list[int]:
    """The timestep the UNet is told in SDS Loss's forward at each step of linear_anneal 0.98 → 0.2 (SDI's node
    settings, DDIM-inverted noise)."""
    distill, denoiser = pack("distill"), RecordingDenoiser()
    loss = sds_loss(cfg=8.5, noise=sdi_noise(), t_min=0.2, t_max=0.98, t_schedule="linear_anneal")
    run, told = distill.Run(distill.item_generators(0, 1), steps=steps), []
    for run.step in range(steps):
        loss.gradient(denoiser, torch.zeros(1, 1, 2, 2), run)
        told.append(denoiser.told(denoiser.calls[-1]).item())
    return told


def test_sdi_anneal_is_threestudios_over_one_step_less():
    """threestudio's t_anneal at global step k of N is int(1000·[0.78·(1 − k/N) + 0.2]): it starts at 980 and stops
    one step's decrement short of 200 (215 for N = 50). The pack's progress k/(N − 1) runs the same line from 979
    (0.98·999) to 200 (0.2·999 = 199.8) at its last step: it is threestudio's at global step k·N/(N − 1), within one
    timestep (999 against 1000 levels per unit). Over threestudio's 10 000 steps the two differ by at most 1.08."""
    steps = 50
    told = annealed_told_timesteps(steps)
    threestudio = [ref.sdi_annealed_timestep(k, steps, 0.2, 0.98) for k in range(steps)]
    assert (told[0], told[-1]) == (979, 200) and (threestudio[0], threestudio[-1]) == (980, 215)
    assert all(b <= a for a, b in zip(told, told[1:]))
    assert all(abs(t - ref.sdi_annealed_timestep(k * steps / (steps - 1), steps, 0.2, 0.98)) <= 1
               for k, t in enumerate(told))
    distill, timesteps = pack("distill"), pack("distill.timesteps")
    n = 10_000
    run = distill.Run(distill.item_generators(0, 1), steps=n)
    pack_t = []
    for run.step in range(n):
        pack_t.append(timesteps.sample_fractions("linear_anneal", 0.2, 0.98, run.progress, run.generators))
    pack_t = torch.cat(pack_t)
    gap = (pack_t * 999 - torch.tensor([ref.sdi_annealed_timestep(k, n, 0.2, 0.98) for k in range(n)])).abs().max()
    assert gap < 1.08


@pytest.mark.parametrize("refresh_every,inverting", [(1, list(range(7))), (3, [0, 3, 6])])
def test_sdi_reinverts_every_refresh_every_steps(monkeypatch, refresh_every, inverting):
    """threestudio inverts afresh in every call: refresh_every 1 (the default) re-inverts at every step, each with a
    new κ; refresh_every 3 (the pack's own saving) re-inverts at steps 0, 3, 6 and returns the same κ in between."""
    inversion, distill = pack("distill.inversion"), pack("distill")
    walks, kappas = [], []
    inversion_walk = inversion.ddim_invert

    def recorded_walk(*args, **kwargs):
        walks.append(run.step)
        return inversion_walk(*args, **kwargs)

    monkeypatch.setattr(inversion, "ddim_invert", recorded_walk)
    noise = sdi_noise(refresh_every=refresh_every)

    def recorded(*args):
        kappas.append(noise(*args))
        return kappas[-1]

    loss = dataclasses.replace(sds_loss(cfg=8.5, noise=noise, t_min=0.2, t_max=0.98, t_schedule="linear_anneal"),
                               noise=recorded)
    run, denoiser = distill.Run(distill.item_generators(0, 2), steps=7), RecordingDenoiser()
    for run.step in range(run.steps):
        loss.gradient(denoiser, torch.ones(2, 1, 2, 2), run)
    assert walks == inverting
    for step, kappa in enumerate(kappas):
        kept = max(s for s in inverting if s <= step)
        assert torch.equal(kappa, kappas[kept])
        if step != kept:
            continue
        assert all(not torch.equal(kappa, kappas[s]) for s in inverting if s < step)


def pack_steps(loss, steps: int, seed: int = 0) -> dict:
    """The pack's gradients at ``steps`` consecutive steps of one run whose t stays at its first step's (progress
    held at 0), the model-space latent x, and copies of the item generators as they were before the first step."""
    distill, evaluation = pack("distill"), pack("nodes.evaluation")

    class HeldRun(distill.Run):
        @property
        def progress(self) -> float:
            return 0.0

    latent = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)) / 0.18215
    seen = {"g": []}

    def run(denoiser, x):
        gens = distill.item_generators(seed, len(x))
        seen["draws"], seen["x"] = copies(gens), x.clone()
        held = HeldRun(gens, steps=steps)
        for held.step in range(steps):
            seen["g"].append(held_loss.gradient(denoiser, x, held))
        return x

    held_loss = loss.loss
    with torch.inference_mode():
        evaluation.run_with_model(loss.model, loss.conds, latent, seed, run)
    return seen


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_lmc_fixed_noise_fixes_epsilon_in_l_cond_only(kind):
    """The paper (§4, Increasing Sample Diversity): ε fixed over the whole optimization in L_cond, sampled afresh in
    L_lmc. Three steps at timestep 300 against the reference with one ε per item in L_cond (drawn at the first step
    from the item's stream) and that step's fresh ε in ẑ_t; fixing ε in both terms lies outside the tolerance."""
    k, steps = 300, 3
    bias = 0.5 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(9)) + 0.2
    correctors, model = pack("nodes.correctors"), models(kind)[0]
    corrector = correctors.LoadedCorrector("fixed", FixedBias(bias), correctors.what_it_models(model))
    loss = run_node("DistillSDSLoss", model=model, positive=POSITIVE, negative=NEGATIVE, cfg=8.0, weighting="auto",
                    corrector=corrector, fixed_noise=True, **at_timestep(k)).args[0]
    seen = pack_steps(loss, steps)
    fixed, *fresh = normals(seen["draws"], 1 + steps)
    for g, eps in zip(seen["g"], fresh):
        expected = reference(kind, ref.lmc_fixed_noise_gradient, seen["x"], k, fixed, eps, C, U, bias, 8.0)
        tol = assert_parity(g, expected)
        both = reference(kind, ref.lmc_fixed_noise_gradient, seen["x"], k, fixed, fixed, C, U, bias, 8.0)[1]
        assert (both - expected[1]).abs().max() > 4 * tol


@pytest.mark.parametrize("kind", ["eps", "v"])
@pytest.mark.parametrize("k", [30, 500, 960])
def test_fantasia3d_weighting_matches_threestudio(kind, k):
    """threestudio's weighting_strategy "fantasia3d": w = ᾱ_t^0.5·(1 − ᾱ_t); "sds" (1 − ᾱ_t) lies outside the
    tolerance even at timestep 30, where √ᾱ_t = 0.99."""
    loss = run_node("DistillSDSLoss", model=models(kind)[0], positive=POSITIVE, negative=NEGATIVE, cfg=7.5,
                    weighting="fantasia3d", **at_timestep(k)).args[0]
    seen = pack_step(loss)
    (eps,) = normals(seen["draws"], 1)
    expected = reference(kind, ref.weighted_sds_gradient, seen["x"], k, eps, C, U, 6.5, "fantasia3d")
    tol = assert_parity(seen["g"], expected)
    sds = reference(kind, ref.weighted_sds_gradient, seen["x"], k, eps, C, U, 6.5, "sds")[1]
    assert (sds - expected[1]).abs().max() > 4 * tol
