"""The recipes: what each method's node settings build, checked against what the method's reference code does."""
import torch

from analytic import GaussianDenoiser
from distill import DDIMInversion, Run, item_generators, recipes
from distill.corrector import SpectralCorrector

SHAPE = (4, 16, 16)


def test_auto_weighting_is_each_methods_own():
    gain = SpectralCorrector(torch.ones(4, 2, 2), torch.tensor([0.2, 0.8]))
    assert recipes.sds().weighting == "sds"  # DreamFusion's 1 − ᾱ
    assert recipes.sdi().weighting == "sdi"  # SDI's code: x − x̂0 = σ_t·(ε̂ − κ)
    assert recipes.lmc_sds(gain).weighting == "uniform"  # LMC-SDS's paper
    assert recipes.nfsd().weighting == "sds"
    assert recipes.sds(weighting="fantasia3d", noise=DDIMInversion()).weighting == "fantasia3d"


class Recording(GaussianDenoiser):
    """Remembers the last latent it was given and its guided x0-prediction there."""

    def __call__(self, requests, sigma):
        out = super().__call__(requests, sigma)
        self.seen = requests[0].x_noisy.clone(), out[0]["cfg"].clone()
        return out


def test_sdi_update_is_the_latent_minus_the_models_x0_at_the_latent_it_was_given():
    # SDI's reference code sets target = x̂0(model input) and steps along x − target: with the recipe's
    # defaults the pack's g must be exactly that difference, whatever the variant and eta placement.
    g = torch.Generator().manual_seed(1)
    den = Recording(SHAPE, means={"positive": torch.randn(SHAPE, generator=g), "negative": torch.zeros(SHAPE)})
    x = den.sample(2, "positive", g) * 0.5
    for noise in (DDIMInversion(), DDIMInversion(variant="renoise", eta_placement="end")):
        grad = recipes.sdi(noise=noise).gradient(den, x, Run(item_generators(0, 2), steps=10))
        _, x0 = den.seen
        assert torch.allclose(x - grad, x0, atol=1e-5 * x0.abs().max())
