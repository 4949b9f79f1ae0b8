"""SDS on the analytic Gaussian prior: the pack's gradient against closed forms."""
import pytest
import torch

from analytic import GaussianDenoiser, fourier_filter
from distill import Run, ScoreDistillation, Settings, item_generators, optimize, target_loss
from distill.optimize import CHECK_EVERY
from distill.schedule import sigma_at
from rng import replay_draws

SHAPE = (4, 16, 16)


def class_means(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"positive": torch.randn(SHAPE, generator=g), "negative": torch.zeros(SHAPE)}


def closed_form_eps(den, x, eps, sigma_eff, branch):
    """ε̂ of the Wiener denoiser in the VE view: per frequency σ/(λ + σ²)·(x + σε − μ)."""
    s = sigma_eff.view(-1, 1, 1, 1)
    return fourier_filter(x + s * eps - den.means[branch], s / (den.spectrum + s**2))


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("cfg", [1.0, 7.5, 100.0])
def test_sds_gradient_equals_closed_form(flow, cfg):
    den = GaussianDenoiser(SHAPE, means=class_means(), flow=flow)
    x = den.sample(3, "positive", torch.Generator().manual_seed(2)) * 0.5
    loss = ScoreDistillation(cfg=cfg, weighting="sds")
    gens = item_generators(7, 3)
    t, eps = replay_draws(loss, gens, x.shape)
    g = loss.gradient(den, x, Run(gens))

    sigma = sigma_at(den.sigmas, t).float()
    if flow:  # (1 − σ)x + σε = (1 − σ)(x + σ/(1 − σ)·ε): the VE level σ/(1 − σ) with the same ε
        sigma_eff = sigma / (1 - sigma)
    else:
        sigma_eff = sigma
    e_c = closed_form_eps(den, x, eps, sigma_eff, "positive")
    e_u = closed_form_eps(den, x, eps, sigma_eff, "negative")
    w = (sigma_eff**2 / (1 + sigma_eff**2)).view(-1, 1, 1, 1)
    expected = w * (e_u + cfg * (e_c - e_u) - eps)
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_weighting_ratios_are_one_minus_alpha_bar_and_fantasia3d():
    den = GaussianDenoiser(SHAPE, means=class_means())
    x = den.sample(4, "positive", torch.Generator().manual_seed(3))
    grads = {w: ScoreDistillation(cfg=7.5, weighting=w).gradient(den, x, Run(item_generators(5, 4)))
             for w in ("sds", "uniform", "fantasia3d")}
    t, _ = replay_draws(ScoreDistillation(), item_generators(5, 4), x.shape)
    abar = (1 / (1 + sigma_at(den.sigmas, t) ** 2)).float().view(-1, 1, 1, 1)
    assert torch.allclose(grads["sds"], (1 - abar) * grads["uniform"], rtol=1e-5, atol=1e-6)
    assert torch.allclose(grads["fantasia3d"], abar.sqrt() * (1 - abar) * grads["uniform"], rtol=1e-5, atol=1e-6)


def test_cfg_one_evaluates_only_the_positive_branch():
    den = GaussianDenoiser(SHAPE, means=class_means())
    x = torch.zeros(2, *SHAPE)
    ScoreDistillation(cfg=1.0).gradient(den, x, Run(item_generators(0, 2)))
    ScoreDistillation(cfg=7.5).gradient(den, x, Run(item_generators(0, 2)))
    assert den.calls == [(2, ("positive",)), (4, ("positive", "negative"))]


def test_timesteps_stay_in_range():
    den = GaussianDenoiser(SHAPE)
    loss = ScoreDistillation(t_min=0.3, t_max=0.6)
    t, _ = replay_draws(loss, item_generators(0, 512), (512, *SHAPE))
    assert 0.3 <= t.min() and t.max() <= 0.6
    assert t.max() - t.min() > 0.29  # the whole range is used
    sigma = sigma_at(den.sigmas, t)
    assert den.sigmas[299] <= sigma.min() and sigma.max() <= den.sigmas[600]


def test_a_non_finite_gradient_stops_the_run_naming_step_t_and_cause():
    class Broken(GaussianDenoiser):
        def x0(self, x_noisy, sigma, branch):
            out = super().x0(x_noisy, sigma, branch)
            if branch == "positive":
                out[0, 0, 0, 0] = float("nan")
            return out

    den, x = Broken(SHAPE, means=class_means()), torch.zeros(2, *SHAPE)
    gens = item_generators(0, 2)
    t, _ = replay_draws(ScoreDistillation(), gens, x.shape)
    run = Run(gens, steps=10, step=3)
    with pytest.raises(ValueError, match=rf"step 4: .* at t = {t[0].item():.3f}; the model's prediction \(positive\)"):
        ScoreDistillation(cfg=7.5).gradient(den, x, run)
    with pytest.raises(ValueError, match=r"step 1: .*the guidance overflowed \(cfg inf\)"):
        ScoreDistillation(cfg=float("inf")).gradient(GaussianDenoiser(SHAPE, means=class_means()), x, Run(item_generators(0, 2)))


def test_a_gradient_that_breaks_mid_run_is_reported_at_its_step_by_the_next_check():
    """The loop reads its checks every CHECK_EVERY steps: the error still names the step where it broke."""
    class BrokenFromStep4(GaussianDenoiser):
        positive_calls = 0

        def x0(self, x_noisy, sigma, branch):
            out = super().x0(x_noisy, sigma, branch)
            if branch == "positive":
                self.positive_calls += 1
                if self.positive_calls >= 4:
                    out[1] = float("nan")
            return out

    den = BrokenFromStep4(SHAPE, means=class_means())
    with pytest.raises(ValueError, match=r"^step 4: the gradient is NaN or infinite at t = [0-9.]+; the model's "
                                         r"prediction \(positive\)"):
        optimize(torch.zeros(2, *SHAPE), ScoreDistillation(cfg=7.5), den, Settings(steps=3 * CHECK_EVERY))
    assert den.positive_calls == CHECK_EVERY


def test_gradient_is_clipped():
    den = GaussianDenoiser(SHAPE, means=class_means())
    g = ScoreDistillation(cfg=100.0, grad_clip=0.5).gradient(den, torch.zeros(1, *SHAPE), Run(item_generators(0, 1)))
    assert g.abs().max() == 0.5


def test_target_trick_delivers_g_over_batch():
    x = torch.randn(3, *SHAPE, requires_grad=True)
    g = torch.randn(3, *SHAPE)
    loss = target_loss(x, g)
    loss.backward()
    # x − (x − g) rounds at float32 precision of |x| + |g|, about 1e-6 here
    assert torch.allclose(x.grad, g / 3, atol=1e-6)
    assert loss.item() == pytest.approx(0.5 * g.pow(2).sum().item() / 3, rel=1e-5)


@pytest.mark.parametrize("t_min,t_max", [(0.5, 0.5), (0.7, 0.2), (-0.1, 0.5), (0.2, 1.5)])
def test_bad_timestep_range_names_the_inputs(t_min, t_max):
    with pytest.raises(ValueError, match="t_min .* t_max"):
        ScoreDistillation(t_min=t_min, t_max=t_max)


def nfsd_loss(threshold=0.2, cfg=7.5, **kw):
    from functools import partial

    from distill import nfsd_direction

    return ScoreDistillation(direction=partial(nfsd_direction, threshold=threshold), extra=("nfsd_negative",),
                             cfg=cfg, **kw)


def nfsd_prior():
    means = class_means()
    means["nfsd_negative"] = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    return GaussianDenoiser(SHAPE, means=means)


@pytest.mark.parametrize("t_min,t_max,above", [(0.02, 0.19, False), (0.2, 0.98, True)], ids=["below", "above"])
def test_nfsd_gradient_equals_closed_form_on_each_side_of_the_threshold(t_min, t_max, above):
    den = nfsd_prior()
    x = den.sample(3, "positive", torch.Generator().manual_seed(2)) * 0.5
    loss = nfsd_loss(threshold=0.2, t_min=t_min, t_max=t_max)
    gens = item_generators(7, 3)
    t, eps = replay_draws(loss, gens, x.shape)
    g = loss.gradient(den, x, Run(gens))
    sigma = sigma_at(den.sigmas, t).float()
    e = {b: closed_form_eps(den, x, eps, sigma, b) for b in ("positive", "negative", "nfsd_negative")}
    domain = e["negative"] - e["nfsd_negative"] if above else e["negative"]  # eq. 6
    w = (sigma**2 / (1 + sigma**2)).view(-1, 1, 1, 1)
    expected = w * (domain + 7.5 * (e["positive"] - e["negative"]))  # eq. 7
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())
    assert den.calls == [(9, ("positive", "negative", "nfsd_negative"))]


def test_nfsd_threshold_is_decided_per_item():
    den = nfsd_prior()
    x = torch.zeros(64, *SHAPE)
    loss = nfsd_loss(threshold=0.5, weighting="uniform")
    gens = item_generators(3, 64)
    t, eps = replay_draws(loss, gens, x.shape)
    assert (t < 0.5).any() and (t >= 0.5).any()
    g = loss.gradient(den, x, Run(gens))
    sigma = sigma_at(den.sigmas, t).float()
    e = {b: closed_form_eps(den, x, eps, sigma, b) for b in ("positive", "negative", "nfsd_negative")}
    above = (t >= 0.5).float().view(-1, 1, 1, 1)
    expected = e["negative"] - above * e["nfsd_negative"] + 7.5 * (e["positive"] - e["negative"])
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_nfsd_gradient_ignores_the_sampled_noise():
    # Above the threshold every term of eq. 7 is a difference of predictions; on the Gaussian prior each
    # such difference is independent of x_t, so two different ε give the same g up to float32 rounding
    # of the cfg-scaled ε̂ terms: a few ulps of (1 + cfg)·|g|. SDS, which subtracts ε, keeps its
    # low-frequency part (λ ≫ σ² there) and differs by far more.
    den = nfsd_prior()
    x = den.sample(2, "positive", torch.Generator().manual_seed(2))
    loss = nfsd_loss(threshold=0.2, t_min=0.3, t_max=0.3 + 1e-6, weighting="uniform")
    g1 = loss.gradient(den, x, Run(item_generators(1, 2)))
    g2 = loss.gradient(den, x, Run(item_generators(2, 2)))
    ulps = 4 * torch.finfo(torch.float32).eps * (1 + 7.5) * g1.abs().max()
    assert (g1 - g2).abs().max() < ulps
    sds = ScoreDistillation(cfg=7.5, t_min=0.3, t_max=0.3 + 1e-6, weighting="uniform")
    assert (sds.gradient(den, x, Run(item_generators(1, 2))) - sds.gradient(den, x, Run(item_generators(2, 2)))).abs().max() > 100 * ulps


def test_nfsd_direction_is_bit_identical_for_two_sampled_noises_at_the_same_predictions():
    from distill import Evaluation, nfsd_direction, sds_direction

    g = torch.Generator().manual_seed(0)
    x, n1, n2 = (torch.randn(2, *SHAPE, generator=g) for _ in range(3))
    eps = {k: torch.randn(2, *SHAPE, generator=g) for k in ("cfg", "positive", "negative", "nfsd_negative")}
    t, w = torch.tensor([0.1, 0.6], dtype=torch.float64), torch.full((2, 1, 1, 1), 0.7)
    first, second = (Evaluation(x, n, t, w, 7.5, {}, eps) for n in (n1, n2))
    assert torch.equal(nfsd_direction(first, 0.2), nfsd_direction(second, 0.2))
    assert not torch.equal(sds_direction(first), sds_direction(second))
