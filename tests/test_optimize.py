"""The optimization loop on the analytic prior: determinism, stationary point, callbacks, bad input."""
import pytest
import torch

from analytic import GaussianDenoiser
from distill import ScoreDistillation, Settings, optimize

SHAPE = (4, 16, 16)


def prior():
    g = torch.Generator().manual_seed(1)
    return GaussianDenoiser(SHAPE, means={"positive": torch.randn(SHAPE, generator=g), "negative": torch.zeros(SHAPE)})


def test_same_seed_is_bit_identical_and_another_seed_differs():
    den = prior()
    x0 = torch.zeros(2, *SHAPE)
    loss = ScoreDistillation(cfg=7.5)
    a, ha = optimize(x0, loss, den, Settings(steps=20, seed=3))
    b, hb = optimize(x0, loss, den, Settings(steps=20, seed=3))
    c, _ = optimize(x0, loss, den, Settings(steps=20, seed=4))
    assert torch.equal(a, b) and ha == hb
    assert not torch.equal(a, c)


def test_batch_items_have_their_own_noise_streams():
    den = prior()
    out, _ = optimize(torch.zeros(2, *SHAPE), ScoreDistillation(cfg=7.5), den, Settings(steps=5))
    assert not torch.equal(out[0], out[1])


def test_sds_settles_at_its_stationary_point():
    # Per frequency E_ε[g] ∝ (x − μ_u) + ω(μ_u − μ_c): SDS's fixed point is x* = μ_u + ω(μ_c − μ_u),
    # whatever σ; with ω = 2 that is twice the positive mean (CFG's overshoot).
    den = prior()
    mu = den.means["positive"]
    x_star = 2 * mu
    loss = ScoreDistillation(cfg=2.0, weighting="uniform", t_min=0.02, t_max=0.5)
    x, hist = optimize(torch.zeros(4, *SHAPE), loss, den, Settings(steps=400, lr=0.05, seed=0))
    start = (0 - x_star).norm()
    assert (x.mean(0) - x_star).norm() < 0.1 * start
    assert len(hist.loss) == len(hist.grad_norm) == 400


def test_l2_to_init_holds_the_latent_near_its_start():
    den = prior()
    x0 = torch.zeros(1, *SHAPE)
    loss = ScoreDistillation(cfg=7.5)
    free, _ = optimize(x0, loss, den, Settings(steps=100))
    held, _ = optimize(x0, loss, den, Settings(steps=100, l2_to_init=1000.0))
    assert held.norm() < 0.2 * free.norm()


def test_callback_sees_every_step_and_can_stop_the_run():
    den = prior()
    seen = []

    class Stop(Exception):
        pass

    def on_step(step, x):
        seen.append(step)
        if step == 4:
            raise Stop

    with pytest.raises(Stop):
        optimize(torch.zeros(1, *SHAPE), ScoreDistillation(cfg=7.5), den, Settings(steps=50), on_step)
    assert seen == [0, 1, 2, 3, 4]
    assert len(den.calls) == 5


def test_runs_under_inference_mode_like_a_comfyui_node():
    den = prior()
    with torch.inference_mode():
        x0 = torch.zeros(1, *SHAPE)
        out, _ = optimize(x0, ScoreDistillation(cfg=7.5), den, Settings(steps=3))
    assert not torch.equal(out, x0)


def test_non_finite_latent_is_refused():
    x = torch.zeros(1, *SHAPE)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="latent contains NaN"):
        optimize(x, ScoreDistillation(), prior(), Settings(steps=1))


@pytest.mark.parametrize("kwargs,name", [({"steps": 0}, "steps"), ({"lr": 0.0}, "learning rate"),
                                         ({"optimizer": "lbfgs"}, "optimizer"), ({"l2_to_init": -1.0}, "l2_to_init")])
def test_bad_settings_name_the_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Settings(**kwargs)


def soft_mask():
    """Zero on the left half, 1 on the right quarter, 0.5 between."""
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 8:12] = 0.5
    mask[..., 12:] = 1.0
    return mask


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_masked_update_leaves_the_unmasked_region_bit_identical(optimizer):
    # AdamW's weight decay and Adam's momentum would move x where the gradient alone were masked; l2_to_init and
    # the gradient still act everywhere.
    den = prior()
    x0 = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    mask = soft_mask()
    out, _ = optimize(x0, ScoreDistillation(cfg=7.5), den, Settings(steps=20, optimizer=optimizer, l2_to_init=1.0),
                      mask=mask)
    assert torch.equal(out[..., :8], x0[..., :8])
    assert (out[..., 8:] != x0[..., 8:]).all()


def test_a_soft_mask_weights_the_step():
    den = prior()
    x0 = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
    free, _ = optimize(x0, ScoreDistillation(cfg=7.5), den, Settings(steps=1, lr=0.1))
    soft, _ = optimize(x0, ScoreDistillation(cfg=7.5), den, Settings(steps=1, lr=0.1), mask=soft_mask())
    step = free - x0
    assert torch.allclose(soft - x0, soft_mask() * step, atol=1e-6)
    assert torch.equal(soft[..., 12:], free[..., 12:])


@pytest.mark.parametrize("value", [0.0, float("nan")], ids=["zero", "nan"])
def test_an_empty_or_broken_mask_is_refused(value):
    with pytest.raises(ValueError, match="mask (is zero everywhere|contains NaN)"):
        optimize(torch.zeros(1, *SHAPE), ScoreDistillation(), prior(), Settings(steps=1),
                 mask=torch.full((1, 1, 16, 16), value))
