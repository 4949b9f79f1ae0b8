"""The shapes dataset and its exact mixture prior, checked against brute force and closed forms."""
import pytest
import torch
from torch.distributions import MultivariateNormal

from distill.denoiser import Request, predict
from distill.mixture import MixtureDenoiser, shapes_prior
from distill.schedule import sigma_at
from distill.shapes import CLASSES, make_shapes


def brute_force_x0(x_noisy, means, width, a, b):
    """E[x | x_σ] from each component's joint Gaussian of (x, x_σ), written with full covariance matrices:
    weights ∝ N(x_σ; a·μ_k, a²s0²I + b²I) by explicit densities, means μ_k + Σ_xy·Σ_yy⁻¹·(x_σ − a·μ_k)."""
    d = means[0].numel()
    eye = torch.eye(d, dtype=torch.float64)
    out = []
    for xi, ai, bi in zip(x_noisy.flatten(1).double(), a, b):
        cov_yy, cov_xy = (ai**2 * width**2 + bi**2) * eye, ai * width**2 * eye
        log_p, posterior_means = [], []
        for mu in means.flatten(1).double():
            log_p.append(MultivariateNormal(ai * mu, covariance_matrix=cov_yy).log_prob(xi))
            posterior_means.append(mu + cov_xy @ torch.linalg.solve(cov_yy, xi - ai * mu))
        w = torch.softmax(torch.stack(log_p), 0)
        out.append((w[:, None] * torch.stack(posterior_means)).sum(0))
    return torch.stack(out).view(x_noisy.shape)


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_mixture_x0_equals_the_explicit_gaussian_posterior(flow):
    data = make_shapes(3, size=8, channels=2, seed=4)
    den = MixtureDenoiser({"positive": data.images}, width=0.05, flow=flow)
    g = torch.Generator().manual_seed(0)
    t = torch.tensor([0.0, 0.01, 0.05, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    sigma = sigma_at(den.sigmas, t)
    a, b = den.coefficients(sigma.double())
    clean = data.images[torch.randint(len(data.images), (len(t),), generator=g)]
    # on-manifold (noised data) and off-manifold (pure noise) inputs
    for x_noisy in (a.view(-1, 1, 1, 1) * clean + b.view(-1, 1, 1, 1) * torch.randn(clean.shape, generator=g),
                    torch.randn(clean.shape, generator=g)):
        x_noisy = x_noisy.float()
        ours = den([Request(x_noisy)], sigma)[0]["positive"]
        expected = brute_force_x0(x_noisy, data.images, 0.05, a, b)
        assert torch.allclose(ours.double(), expected, atol=1e-5, rtol=1e-5)


def test_shapes_are_sharp_edged_balanced_and_reproducible():
    data = make_shapes(5, seed=3)
    assert data.images.shape == (5 * len(CLASSES), 3, 32, 32)
    assert torch.equal(data.images, make_shapes(5, seed=3).images)
    assert not torch.equal(data.images, make_shapes(5, seed=4).images)
    for prompt in CLASSES:
        assert len(data.of(prompt)) == 5
    for image in data.images:  # one colour on a zero background: two values per channel, no ramps
        for channel in image:
            assert len(channel.unique()) == 2


def test_prior_branches_are_the_class_all_images_and_the_blurred_copy():
    """At the flow table's last level a = 0: x_σ carries nothing of x, so x̂0 is each branch's mean image."""
    data = make_shapes(4, seed=0)
    den = shapes_prior(data, "ring", flow=True)
    sigma = torch.ones(2)
    out = predict(den, torch.randn(2, 3, 32, 32), sigma, cfg=3.0, extra=("nfsd_negative",))
    ring, everything = data.of("ring").mean(0), data.images.mean(0)
    assert torch.allclose(out["positive"], ring.expand(2, -1, -1, -1), atol=1e-6)
    assert torch.allclose(out["negative"], everything.expand(2, -1, -1, -1), atol=1e-6)
    assert torch.allclose(out["nfsd_negative"], data.blurred(1.0).images.mean(0).expand(2, -1, -1, -1), atol=1e-6)
    assert torch.allclose(out["cfg"], everything + 3.0 * (ring - everything), atol=1e-5)


def test_denoising_a_slightly_noisy_image_returns_it():
    """At σ ≪ the distance between images, one component holds all the weight: x̂0 = μ_k + s0²/(s0² + σ²)·σε."""
    data = make_shapes(4, seed=0)
    den = shapes_prior(data, "bar", width=0.02)
    sigma = den.sigmas[:1].expand(4)
    eps = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    bars = data.of("bar")
    x0 = predict(den, bars + sigma[0] * eps, sigma, 1.0)["positive"]
    s2 = 0.02**2
    assert torch.allclose(x0, bars + s2 / (s2 + sigma[0] ** 2) * sigma[0] * eps, atol=1e-5)


def test_an_unknown_branch_or_prompt_is_named():
    data = make_shapes(1)
    with pytest.raises(ValueError, match="prompt must be one of disc, square, bar, ring, got 'cat'"):
        shapes_prior(data, "cat")
    with pytest.raises(ValueError, match="no branch 'nope'"):
        shapes_prior(data, "disc").x0(torch.zeros(1, 3, 32, 32), torch.ones(1), "nope")
