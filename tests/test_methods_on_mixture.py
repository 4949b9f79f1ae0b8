"""What each method does on the exact mixture prior, as its math predicts (derivations in the docstrings).

On the shapes prior every image μ_j is a component N(μ_j, s0²I); up to levels where the noise reaches the
distance between images (σ of several units here), x_σ = μ_j + σε keeps all the posterior weight on μ_j,
in the class's mixture and in the unconditional one alike, and on blur(μ_j) in the blurred copy. There
x̂0(μ_j + σε) = μ_j + s0²/(s0² + σ²)·σε and ε̂ = σ²/(s0² + σ²)·ε exactly (VE view, a = 1, b = σ).
"""
import torch
from torch import nn

from distill import DDIMInversion, Run, Settings, ddim_sample, item_generators, optimize, recipes
from distill.corrector import collect_triplets, fit_spectral
from distill.mixture import MixtureDenoiser, shapes_prior
from distill.quality import fidelity
from distill.schedule import sigma_at
from distill.shapes import make_shapes
from rng import copies, replay_draws

TRAIN = make_shapes(64, seed=0)
S0 = 0.02


def replayed_gradient(loss, den, x, seed=0):
    """The loss's gradient at x with the t and ε it drew, and the σ of those t."""
    gens = item_generators(seed, len(x))
    t, eps = replay_draws(loss, gens, x.shape)
    g = loss.gradient(den, x, Run(gens))
    return g, sigma_at(den.sigmas, t).double().view(-1, 1, 1, 1), eps


def test_nfsd_sharpens_real_images_above_its_threshold_and_adds_the_sampled_noise_below():
    """NFSD's step is w·(ε̂_cfg − [t ≥ threshold]·ε̂_neg). On an image μ of the class the class and the
    unconditional predictions agree, so cfg drops out, and:
    - at or above the threshold, w·(ε̂_u − ε̂_neg) = w·(x̂0_neg − x̂0_u)/σ = w·σ/(s0² + σ²)·(blur(μ) − μ):
      the ε terms cancel, and the step moves μ along its own high-pass μ − blur(μ), whatever the noise —
      no real image is a fixed point, NFSD sharpens for as long as it runs;
    - below it, w·ε̂_u = w·σ²/(s0² + σ²)·ε: the sampled noise itself, which SDS would subtract.
    """
    den = shapes_prior(TRAIN, "square", width=S0)
    x = TRAIN.of("square")[:6]
    w = lambda s: s**2 / (1 + s**2)  # noqa: E731  (the "sds" weighting 1 − ᾱ in the VE view)

    above = recipes.nfsd(t_min=0.25, t_max=0.5)
    g, s, _ = replayed_gradient(above, den, x)
    high_pass = x - TRAIN.blurred(1.0).of("square")[:6]
    expected = -w(s) * s / (S0**2 + s**2) * high_pass
    assert torch.allclose(g.double(), expected, atol=1e-4 * expected.abs().max())

    below = recipes.nfsd(t_min=0.02, t_max=0.19)
    g, s, eps = replayed_gradient(below, den, x)
    expected = w(s) * s**2 / (S0**2 + s**2) * eps
    assert torch.allclose(g.double(), expected, atol=1e-4 * expected.abs().max())


def norm_ranks(x, images):
    """For each result, the rank (0 = least) by norm, among the images, of the image nearest to it."""
    flat = images.flatten(1).double()
    rank = flat.norm(dim=1).argsort().argsort()
    return rank[torch.cdist(x.flatten(1).double(), flat).argmin(1)]


def test_sds_seeks_the_least_norm_images_where_ddim_samples_them_all():
    """SDS's step, averaged over its fresh ε, is w·(a/b)·(x − E_ε[x̂0(a·x + b·ε)]): a pull toward the posterior
    mean, in which image k weighs ∝ exp(−‖x_σ − a·μ_k‖²/2v) = exp((a⟨x_σ, μ_k⟩ − a²‖μ_k‖²/2)/v)·const.
    From a start nearly orthogonal to every image (zero, or N(0, I) noise in 3072 dimensions), the cross
    term averages out over ε and −a²‖μ_k‖²/2v remains: the images of least norm (on a zero background: the
    faintest and smallest) hold the most weight at every level, each step moves x toward them, which raises
    their weight further. SDS ends on one of them: it climbs to a mode of the noised prior. DDIM instead
    carries one noise along the probability-flow ODE, whose end point is distributed as the prior itself.
    So every SDS result sits on an image of the class's least-norm quarter; DDIM's spread over all of them.
    """
    den = shapes_prior(TRAIN, "disc", width=S0)
    images = TRAIN.of("disc")
    quarter = len(images) // 4
    for start in (torch.zeros(8, 3, 32, 32), torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))):
        x, _ = optimize(start, recipes.sds(cfg=1.0), den, Settings(steps=200))
        assert (fidelity(x, images) < 0.1).all()  # on an image
        assert (norm_ranks(x, images) < quarter).all()
    sampled = ddim_sample(den, torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1)), 30)
    assert (norm_ranks(sampled, images) >= quarter).sum() >= 8  # 12 expected


def test_lmc_corrector_fitted_on_the_prior_is_the_identity_until_images_mix():
    """LMC's corrector estimates the bias b(z, t) = E_ε[ẑ_t(a·z + b·ε)]. For z = μ_j, while μ_j holds the
    posterior, ẑ_t = μ_j + s0²/(s0² + σ²)·σε and the bias is μ_j itself: the denoiser is unbiased on the data,
    so the least-squares gain is 1 in every band. That lasts while the logit gap ‖μ_j − μ_k‖²/2σ² ≳ 10, i.e. σ
    below ~4 (t ≈ 0.6 on SD1.5) for images 17–20 apart; near the top of the schedule ẑ_t is about the prior's
    mean whatever z, and the gain falls toward 0. The pack's spectral fit (Train LMC Corrector's defaults: 16
    of the prior's own DDIM samples, 64 antithetic pairs each, ~21 per t bin) must find that, up to its
    own sampling noise at the few frequencies of the outermost bands.
    """
    unconditional = MixtureDenoiser({"positive": TRAIN.images}, S0)
    g = torch.Generator().manual_seed(0)
    samples = ddim_sample(unconditional, torch.randn((16, 3, 32, 32), generator=g), 50)
    data = collect_triplets(unconditional, samples, 64, g)
    corrector = fit_spectral(data.z, data.z_hat, data.t)
    low = corrector.t_centers <= 0.55
    deviation = (corrector.gains[:, :, low] - 1).abs()
    assert deviation.median() < 0.005 and deviation.max() < 0.08
    assert corrector.gains[:, :, -1].mean() < 0.3


def test_sdi_inverts_a_real_image_to_the_stationary_noise_and_follows_one_path_from_one_start():
    """SDI replaces ε by κ from DDIM inversion of x; with κ stationary, κ = ε̂(a·x + b·κ), its step
    σ_t·(ε̂ − κ) = x − x̂0(a·x + b·κ) vanishes. For x = μ_j the stationary κ is 0 (ε̂(μ_j) = 0: μ_j is its own
    x0-prediction while it holds the posterior, in the class's mixture and the unconditional one, so at any
    inversion cfg), and the inversion stays at μ_j: κ ≈ 0 (only the walk's start x·√(1 + σ_min²) moves it, by
    ~4·10⁻⁴·x) instead of a noise of norm √d ≈ 55, and real images are fixed points of SDI.
    κ is a function of x: seeds enter only through η and τ. Without them every seed from one start follows
    one path, where SDS's seeds part at once.
    """
    den = shapes_prior(TRAIN, "ring", width=S0)
    x = TRAIN.of("ring")[:6]
    exact = DDIMInversion(eta=0.0, jitter=False)
    for t in (0.2, 0.4, 0.6):
        kappa = exact.infer(den, x, torch.full((6,), t, dtype=torch.float64), Run(item_generators(0, 6)))
        assert kappa.flatten(1).norm(dim=1).max() < 0.01 * 55
        g = recipes.sdi(t_min=t, t_max=t + 1e-6, noise=exact).gradient(den, x, Run(item_generators(0, 6)))
        assert (g.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)).max() < 1e-4

    zero = torch.zeros(3, 3, 32, 32)
    settings = Settings(steps=20)
    sdi, _ = optimize(zero, recipes.sdi(noise=exact), den, settings)
    assert torch.equal(sdi[0], sdi[1]) and torch.equal(sdi[0], sdi[2])
    sds, _ = optimize(zero, recipes.sds(cfg=8.5, t_min=0.2, t_schedule="linear_anneal"), den, settings)
    assert torch.pdist(sds.flatten(1)).min() > 0.1


class IdentityCorrector(nn.Module):
    def forward(self, z, t):
        return z


def test_lmc_fixed_noise_cannot_steer_where_one_image_holds_the_posterior():
    """LMC-SDS with fixed noise keeps ε fixed only in L_cond = w·(ε̂_cfg − ε̂_u) = ω·w·(a/b)·(x̂0_u − x̂0_c) at
    x + σ·ε_fixed. On an image μ of the class, while μ holds the posterior of the class's mixture and of the
    unconditional one, x̂0_c = x̂0_u: L_cond is 0 whatever ε_fixed, and with the corrector that is exact there
    (the identity, see above) the step is [μ − x̂0_u(μ + σ·ε_fresh)]/ω = −s0²σ/(s0² + σ²)·ε_fresh/ω, with
    no trace of the seed's fixed ε. Fixed noise can only diversify at levels where images mix. (A wider
    component, s0 = 0.1, keeps that small step well above float32's rounding of x̂0 times ω·a/b.)
    """
    s0 = 0.1
    den = shapes_prior(TRAIN, "bar", width=s0)
    x = TRAIN.of("bar")[:6]
    loss = recipes.lmc_sds(IdentityCorrector(), fixed_noise=True, t_min=0.1, t_max=0.5)
    gens = item_generators(3, len(x))
    draws = [(torch.rand((), generator=g, dtype=torch.float64), torch.randn(x.shape[1:], generator=g),
              torch.randn(x.shape[1:], generator=g)) for g in copies(gens)]
    u, _, fresh = (torch.stack(d) for d in zip(*draws))
    g = loss.gradient(den, x, Run(gens))
    s = sigma_at(den.sigmas, loss.t_min + (loss.t_max - loss.t_min) * u).double().view(-1, 1, 1, 1)
    expected = -s0**2 * s / (s0**2 + s**2) * fresh / loss.cfg
    assert torch.allclose(g.double(), expected, atol=1e-3 * expected.abs().max())
