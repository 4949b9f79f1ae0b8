"""LMC correctors on the analytic prior, where the true bias b(z, t) = E_ε[ẑ_t] is a per-frequency gain."""
import time

import torch
from torch import nn

from analytic import GaussianDenoiser, fourier_filter
from rng import replay_draws
from distill import Evaluation, Run, ScoreDistillation, fixed_noise, item_generators, lmc_direction
from distill.corrector import (UNetCorrector, collect_triplets, corrector_loss, fit_residual, fit_spectral,
                              radial_bands, train_unet)
from distill.schedule import sigma_at

SHAPE = (4, 16, 16)
T = [0.05, 0.1, 0.25, 0.5, 0.75, 0.95]


def true_bias(den, z, t):
    """E_ε[ẑ_t] of the zero-mean Wiener denoiser: λ/(λ + σ²) per frequency, applied to z."""
    s = sigma_at(den.sigmas, t).float().view(-1, 1, 1, 1)
    return fourier_filter(z, den.spectrum / (den.spectrum + s**2))


def errors(den, corrector) -> list[float]:
    """Relative L2 error of the corrector's output against the true bias, per t."""
    z = den.sample(64, generator=torch.Generator().manual_seed(99))
    out = []
    for t in T:
        tt = torch.full((len(z),), t, dtype=torch.float64)
        b = true_bias(den, z, tt)
        with torch.no_grad():
            out.append(((corrector(z, tt) - b).norm() / b.norm()).item())
    return out


def report(name, errs):
    print(f"{name}: " + " ".join(f"t={t}: {100 * e:.1f}%" for t, e in zip(T, errs)))


def test_spectral_corrector_recovers_the_true_bias():
    den = GaussianDenoiser(SHAPE)
    g = torch.Generator().manual_seed(0)
    bins, per_bin = 49, 128  # 128 triplets per t bin on average, each from an antithetic pair: 256 model calls
    data = collect_triplets(den, den.sample(bins * per_bin, generator=g), 1, g, batch=2048)
    spectral = fit_spectral(data.z, data.z_hat, data.t, t_bins=bins)
    errs, identity = errors(den, spectral), errors(den, lambda z, t: z)
    report("spectral (49 bins x 128 pairs)", errs)
    report("identity", identity)
    assert all(e < 0.05 for t, e in zip(T, errs) if t <= 0.5)
    assert all(e < 0.10 for t, e in zip(T, errs) if t > 0.5)


def per_band_fit(z, z_hat, t, t_bins, bands, t_range=(0.02, 0.98)):
    """The gains as fit_spectral first computed them, band by band in a Python loop: the reference."""
    edges = torch.linspace(*t_range, t_bins + 1, dtype=torch.float64)
    idx = (torch.bucketize(t.double(), edges) - 1).clamp(0, t_bins - 1)
    band = radial_bands(z.shape[-2], z.shape[-1], bands)
    Z, Zh = torch.fft.fft2(z.double(), norm="ortho"), torch.fft.fft2(z_hat.double(), norm="ortho")
    num = torch.zeros(z.shape[1], bands, t_bins, dtype=torch.float64)
    den = torch.zeros_like(num)
    cross, power = (Zh * Z.conj()).real, Z.abs() ** 2
    for k in range(bands):
        mask = band == k
        num[:, k].index_add_(1, idx, cross[..., mask].sum(-1).T)
        den[:, k].index_add_(1, idx, power[..., mask].sum(-1).T)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(num)).float()


def test_the_vectorised_spectral_fit_equals_the_per_band_loop():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(40, 4, 16, 12, generator=g)
    z_hat = 0.7 * z + 0.1 * torch.randn(z.shape, generator=g)
    t = 0.6 * torch.rand(40, generator=g, dtype=torch.float64)  # some below t_min; the bins above 0.6 stay empty
    reference = per_band_fit(z, z_hat, t, t_bins=7, bands=10)
    assert torch.allclose(fit_spectral(z, z_hat, t, t_bins=7, bands=10).gains, reference, rtol=1e-6, atol=0)
    assert (reference == 1).any() and (reference != 1).any()


def test_fit_residual_is_zero_for_the_true_bias_and_the_spectral_fit_beats_the_identity_everywhere():
    """The analytic denoiser is linear, so an antithetic pair's mean ẑ_t is exactly the true bias: its
    residual vanishes. The least-squares gains can only do better than gain 1 (the identity) per bin."""
    den = GaussianDenoiser(SHAPE)
    g = torch.Generator().manual_seed(0)
    data = collect_triplets(den, den.sample(1024, generator=g), 2, g, batch=2048)
    exact = fit_residual(lambda z, t: true_bias(den, z, t), data, bands=8, t_bins=6)
    spectral = fit_residual(fit_spectral(data.z, data.z_hat, data.t), data, bands=8, t_bins=6)
    identity = fit_residual(lambda z, t: z, data, bands=8, t_bins=6)
    print("spectral fit, relative residual per band (rows) and t bin:\n", spectral.numpy().round(4))
    assert exact.shape == (8, 6) and exact.max() < 1e-6  # float32 rounding
    assert (spectral < identity).all() and spectral.max() < 0.05
    assert identity[:, -1].mean() > identity[:, 0].mean()  # the higher t, the blurrier ẑ_t: the identity's residual grows


def test_unet_corrector_trained_by_the_pack_beats_the_identity():
    den = GaussianDenoiser(SHAPE)
    g = torch.Generator().manual_seed(0)
    start = time.time()
    data = collect_triplets(den, den.sample(8192, generator=g), 1, g, batch=2048)
    torch.manual_seed(0)
    net = UNetCorrector(4, filters=16)
    losses = train_unet(net, data, steps=1500, lr=3e-3)
    seconds = time.time() - start
    errs, identity = errors(den, net), errors(den, lambda z, t: z)
    report(f"unet ({seconds:.0f} s on CPU, 1500 steps)", errs)
    report("identity", identity)
    assert losses[-1] < losses[0]
    assert all(e < 0.10 for t, e in zip(T, errs) if t <= 0.25)
    assert all(e < i for t, e, i in zip(T, errs, identity) if t >= 0.1)


def test_corrector_loss_is_minimised_by_the_true_bias_at_its_own_scale():
    # E_ε‖ẑ_t − b̂‖² = ‖E[ẑ_t] − b̂‖² + const: the exact bias beats the same bias rescaled either way.
    den = GaussianDenoiser(SHAPE)
    z = den.sample(1, generator=torch.Generator().manual_seed(1)).expand(2048, *SHAPE)
    t = torch.full((len(z),), 0.5, dtype=torch.float64)
    s = sigma_at(den.sigmas, t).float().view(-1, 1, 1, 1)
    z_hat = den.x0(z + s * torch.randn(z.shape, generator=torch.Generator().manual_seed(2)), s.flatten(), "positive")
    b = true_bias(den, z, t)
    exact = corrector_loss(b, z_hat).item()
    assert exact < corrector_loss(0.9 * b, z_hat).item() and exact < corrector_loss(1.1 * b, z_hat).item()


class Bias(nn.Module):
    """The exact corrector of the zero-mean Gaussian prior: b̂(z, t) = E_ε[ẑ_t]."""

    def __init__(self, den):
        super().__init__()
        self.den = den

    def forward(self, z, t):
        return true_bias(self.den, z, t)


def test_lmc_term_has_zero_mean_on_clean_data_with_the_exact_bias():
    """The property that settles eq. 10's reading. On the data manifold, with the exact bias b = E_ε[ẑ_t], the
    pack's L_lmc = b − ẑ_t averages to zero over ε: no pull away from clean data. Eq. 10's rescaling applied per
    sample, σ(ẑ_t)/σ(b)·(b − μ(b)) + μ(b) − ẑ_t, averages to (E[σ(ẑ_t)]/σ(b) − 1)·(b − μ(b)) instead: ẑ_t is b plus
    zero-mean noise, so σ(ẑ_t) > σ(b) and the coefficient is positive, growing with t; the loss then shrinks
    the image's contrast towards μ(b)."""
    den = GaussianDenoiser(SHAPE)
    z = den.sample(1, generator=torch.Generator().manual_seed(3))
    n, dims = 4096, (1, 2, 3)
    for t_value in (0.1, 0.3, 0.5):
        t = torch.full((n,), t_value, dtype=torch.float64)
        s = sigma_at(den.sigmas, t).float().view(-1, 1, 1, 1)
        x = z.expand(n, *SHAPE)
        z_hat = den.x0(x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(4)), s.flatten(), "negative")
        zero = torch.zeros_like(x)  # L_cond vanishes: ε̂_cfg = ε̂_u
        ev = Evaluation(x, zero, t, torch.ones_like(s), 1.0, {"negative": z_hat}, {"cfg": zero, "negative": zero})
        g = lmc_direction(ev, Bias(den))
        b = true_bias(den, x[:1], t[:1])
        centred = b - b.mean(dims, keepdim=True)
        mc_error = g.std(0).norm() / n**0.5
        assert g.mean(0).norm() < 4 * mc_error, t_value
        normalized = z_hat.std(dims, keepdim=True) / b.std(dims, keepdim=True) * centred + b.mean(dims, keepdim=True)
        coefficient = ((normalized - z_hat).mean(0) * centred[0]).sum() / centred.pow(2).sum()
        print(f"t={t_value}: mean L_lmc {g.mean(0).norm():.2e} (MC error {mc_error:.2e}); per-sample eq. 10 "
              f"reading: coefficient {coefficient:.2f}")
        assert coefficient > 0.3 and (normalized - z_hat).mean(0).norm() > 20 * mc_error


class Gain(nn.Module):
    """A known corrector: b̂(z, t) = (1 − t)·z."""

    def forward(self, z, t):
        return (1 - t.float()).view(-1, 1, 1, 1) * z


def lmc_prior():
    g = torch.Generator().manual_seed(1)
    return GaussianDenoiser(SHAPE, means={"positive": torch.randn(SHAPE, generator=g), "negative": torch.zeros(SHAPE)})


def test_lmc_gradient_equals_the_closed_form_for_a_known_corrector():
    den = lmc_prior()
    x = den.sample(3, "positive", torch.Generator().manual_seed(2))
    loss = ScoreDistillation(direction=lambda ev: lmc_direction(ev, Gain()), extra=("negative",), cfg=8.0,
                             weighting="uniform")
    gens = item_generators(4, 3)
    t, eps = replay_draws(loss, gens, x.shape)
    g = loss.gradient(den, x, Run(gens))

    s = sigma_at(den.sigmas, t).float().view(-1, 1, 1, 1)
    x_t = x + s * eps
    z_hat = fourier_filter(x_t, den.spectrum / (den.spectrum + s**2))  # unconditional x̂0 (zero mean)
    e_u = fourier_filter(x_t, s / (den.spectrum + s**2))
    e_c = fourier_filter(x_t - den.means["positive"], s / (den.spectrum + s**2))
    b = (1 - t.float()).view(-1, 1, 1, 1) * x
    expected = (b - z_hat + 8.0 * (e_c - e_u)) / 8.0
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-4 * expected.abs().max())


def test_fixed_noise_is_one_per_run_and_seed_and_lmc_keeps_fresh_noise():
    den = lmc_prior()
    x = torch.zeros(2, *SHAPE)
    loss = ScoreDistillation(direction=lambda ev: lmc_direction(ev, Gain()), extra=("negative",), cfg=8.0,
                             weighting="uniform", noise=fixed_noise, resample=("negative",))
    runs = {seed: Run(item_generators(seed, 2), steps=3) for seed in (0, 1)}
    seen = {0: [], 1: []}
    for seed, run in runs.items():
        for step in range(3):
            run.step = step
            loss.gradient(den, x, run)
            seen[seed].append(fixed_noise(den, x, None, 8.0, run))  # the field the loss cut its ε from
    assert all(torch.equal(n, seen[0][0]) for n in seen[0]) and all(torch.equal(n, seen[1][0]) for n in seen[1])
    assert not torch.equal(seen[0][0], seen[1][0])
    assert not torch.equal(seen[0][0][0], seen[0][0][1])
    # L_lmc's ẑ comes from a freshly noised latent in the same call: one call per step, batch 3·B
    assert den.calls == [(6, ("positive", "negative", "negative"))] * 6
