"""DDIM inversion and SDI on the analytic Gaussian prior, where the probability-flow ODE is solvable."""
import pytest
import torch

from analytic import GaussianDenoiser, fourier_filter
from distill import DDIMInversion, Run, ScoreDistillation, ddim_invert, ddim_step, item_generators
from distill.denoiser import predict
from distill.inversion import inversion_grid
from distill.schedule import eps_from_x0, sigma_at

SHAPE = (4, 16, 16)


def zero_mean_prior(flow=False):
    return GaussianDenoiser(SHAPE, flow=flow)


def ode_solution(den, x, t0, t1):
    """Per frequency, the PF-ODE of a zero-mean Gaussian in the VE view is dx/dσ = σx/(λ + σ²), so
    x(σ1) = x(σ0)·√((λ + σ1²)/(λ + σ0²)); a flow model's state is a·x_VE at σ_VE = b/a."""
    s0, s1 = (sigma_at(den.sigmas, torch.tensor([t])) for t in (t0, t1))
    (a0, b0), (a1, b1) = den.coefficients(s0), den.coefficients(s1)
    v0, v1 = b0 / a0, b1 / a1
    gain = ((den.spectrum + v1**2) / (den.spectrum + v0**2)).sqrt()
    return a1 * fourier_filter(x, gain)


def start_coefficients(den):
    return den.coefficients(sigma_at(den.sigmas, torch.tensor([0.0])))


def start_state(den, x):
    """The walk starts from x as the DDPM-scale sample of the table's first level: state x·√(a0² + b0²)."""
    a0, b0 = start_coefficients(den)
    return x * (a0**2 + b0**2).sqrt()


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_ddim_inversion_converges_to_the_probability_flow_ode(flow):
    den = zero_mean_prior(flow)
    x = den.sample(2, generator=torch.Generator().manual_seed(0))
    exact = ode_solution(den, start_state(den, x) / start_coefficients(den)[0], 0.0, 0.5)
    errors = [relative_error(ddim_invert(den, x, [inversion_grid(0.5, 0.5, n)] * 2, cfg=1.0), exact) for n in (10, 50, 200)]
    print(f"inversion to t=0.5 ({'flow' if flow else 'eps'}): relative error at 10/50/200 steps {errors}")
    # DDIM is Euler in σ-space, first order; near σ_min the high bands (λ ≪ σ²) make the ODE stiff on
    # SD1.x's schedule, so 20x the steps cut the error by less than 20x, but by well over 5x.
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 5


def ddim_sample(den, x_t, grid):
    """DDIM down the grid (fractions, descending) with the exact denoiser."""
    x = x_t
    for t_from, t_to in zip(grid, grid[1:]):
        s_from, s_to = (sigma_at(den.sigmas, torch.tensor([t] * len(x))) for t in (t_from, t_to))
        (a, b), (a_to, b_to) = (tuple(c.view(-1, 1, 1, 1) for c in den.coefficients(s)) for s in (s_from, s_to))
        x0 = predict(den, x, s_from, 1.0)["cfg"]
        x = ddim_step(x0, eps_from_x0(x, x0, a, b), a_to, b_to)
    return x


def test_inversion_then_ddim_sampling_returns_the_latent():
    den = zero_mean_prior()
    x = den.sample(2, generator=torch.Generator().manual_seed(1))
    errors = []
    for n in (10, 50, 200):
        grid = inversion_grid(0.6, 0.6, n)
        back = ddim_sample(den, ddim_invert(den, x, [grid] * 2, cfg=1.0), grid[::-1])
        errors.append(relative_error(back, start_state(den, x)))
    print(f"invert to t=0.6 and sample back: relative error at 10/50/200 steps {errors}")
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 5


def test_sdi_update_with_the_stationary_noise_is_a_ddim_step_in_x0_space():
    # "SDS is a dual process of DDIM": with κ = ε̂(x + σκ, σ) (on this prior κ = σ(x − μ)/λ per
    # frequency), one SGD step of size σ′ on ε̂(x + σ′κ, σ′) − κ is one DDIM step σ → σ′ of the state
    # x + σκ, read in x0-space as the model's x0-prediction at the new state.
    g = torch.Generator().manual_seed(3)
    means = {"positive": torch.randn(SHAPE, generator=g), "negative": torch.zeros(SHAPE)}
    den = GaussianDenoiser(SHAPE, means=means)
    x = den.sample(1, "positive", g) * 0.7
    t, t_next = 0.6, 0.5
    sigma, sigma_next = (sigma_at(den.sigmas, torch.tensor([v])) for v in (t, t_next))
    kappa = fourier_filter(x - means["positive"], sigma / den.spectrum)

    state = x + sigma * kappa
    eps_state = eps_from_x0(state, den.x0(state, sigma, "positive"), 1.0, sigma)
    assert torch.allclose(eps_state, kappa, atol=1e-4 * kappa.abs().max())  # κ is stationary
    moved = state + (sigma_next - sigma) * eps_state
    ddim_x0 = den.x0(moved, sigma_next, "positive")

    loss = ScoreDistillation(cfg=1.0, weighting="sdi", t_min=0.1, t_max=t_next, t_schedule="linear_anneal",
                             noise=lambda denoiser, x, t, cfg, run: kappa)
    sdi_x0 = x - loss.gradient(den, x, Run(item_generators(0, 1)))  # weighting "sdi": g = σ′·(ε̂ − κ)
    assert torch.allclose(sdi_x0, ddim_x0, rtol=1e-5, atol=1e-5 * ddim_x0.abs().max())


def test_model_calls_per_step_are_the_grid_below_t_plus_one():
    den = zero_mean_prior()
    x = torch.zeros(2, *SHAPE)
    inversion = DDIMInversion(steps=10, jitter=False)
    loss = ScoreDistillation(cfg=7.5, t_min=0.2, t_max=0.55, t_schedule="linear_anneal", noise=inversion)
    loss.gradient(den, x, Run(item_generators(0, 2)))
    assert inversion_grid(0.55, 0.55, 10) == [0.0, 1 / 999, 101 / 999, 201 / 999, 301 / 999, 401 / 999, 501 / 999, 0.55]
    assert len(den.calls) == 7 + 1 == int(10 * 0.55) + 2 + 1
    assert all(names == ("positive", "negative") for _, names in den.calls)  # inversion cfg −7.5 needs both


def test_items_leave_the_inversion_batch_when_they_arrive():
    den = zero_mean_prior()
    x = torch.zeros(3, *SHAPE)
    ddim_invert(den, x, [inversion_grid(t, t, 10) for t in (0.15, 0.35, 0.35)], cfg=1.0)
    assert [b for b, _ in den.calls] == [3, 3, 3, 2, 2]


def test_refresh_every_reuses_kappa_between_inversions():
    den = zero_mean_prior()
    x = torch.zeros(1, *SHAPE)
    run = Run(item_generators(0, 1), steps=10)
    inversion = DDIMInversion(steps=10, refresh_every=5, eta=0.0)
    loss = ScoreDistillation(cfg=7.5, t_min=0.5, t_max=0.5 + 1e-9, noise=inversion)
    kappas = []
    for step in range(10):
        run.step = step
        before = len(den.calls)
        loss.gradient(den, x + step, run)
        kappas.append(run.cache["sdi_kappa"])
        assert len(den.calls) - before == (6 + 1 if step % 5 == 0 else 1)
    assert all(k is kappas[0] for k in kappas[:5]) and kappas[5] is not kappas[0]


def test_variants_agree_without_jitter_and_differ_with_it():
    den = zero_mean_prior()
    x = den.sample(1, generator=torch.Generator().manual_seed(2))

    def kappa(**kw):
        return DDIMInversion(eta=0.0, **kw).infer(den, x, torch.tensor([0.5], dtype=torch.float64),
                                                  Run(item_generators(0, 1)))

    assert torch.allclose(kappa(variant="renoise", jitter=False), kappa(variant="inverted", jitter=False))
    assert not torch.allclose(kappa(variant="renoise", jitter=True), kappa(variant="inverted", jitter=True))


@pytest.mark.parametrize("kw,name", [({"steps": 0}, "inversion_steps"), ({"refresh_every": 0}, "refresh_every"),
                                     ({"variant": "x"}, "variant"), ({"eta": -1.0}, "eta")])
def test_bad_inversion_settings_name_the_input(kw, name):
    with pytest.raises(ValueError, match=name):
        DDIMInversion(**kw)
