"""Noise-level conventions: σ ↔ schedule fraction ↔ ᾱ, and noising / ε̂ round trips."""
import pytest
import torch

from distill.schedule import alpha_bar, eps_from_x0, flow_coefficients, noised, sigma_at, ve_coefficients
from analytic import sd15_sigmas


def test_fraction_endpoints_and_grid_points_are_the_table():
    sigmas = sd15_sigmas()
    assert sigma_at(sigmas, torch.tensor([0.0, 1.0])).tolist() == pytest.approx([sigmas[0].item(), sigmas[-1].item()])
    # t = 0.2 is timestep 200 of 1000 on SD1.x: index 0.2·999 = 199.8, between table entries 199 and 200
    s = sigma_at(sigmas, torch.tensor([0.2]))
    assert sigmas[199] < s < sigmas[200]


def test_sd15_endpoints_match_comfyui():
    sigmas = sd15_sigmas()
    assert sigmas[0].item() == pytest.approx(0.0292, abs=1e-4)
    assert sigmas[-1].item() == pytest.approx(14.61, abs=1e-2)


def test_alpha_bar_is_ddpm_for_ve_and_snr_equivalent_for_flow():
    sigma = torch.tensor([0.1, 1.0, 10.0])
    assert torch.allclose(alpha_bar(*ve_coefficients(sigma)), 1 / (1 + sigma**2))
    s = torch.tensor([0.25, 0.5, 0.75])
    a, b = flow_coefficients(s)
    # x_σ/a = x + (b/a)·ε: the VE level σ_ve = s/(1 − s) has the same ᾱ
    assert torch.allclose(alpha_bar(a, b), 1 / (1 + (s / (1 - s)) ** 2))


@pytest.mark.parametrize("coefficients", [ve_coefficients, flow_coefficients], ids=["eps-v-edm", "flow"])
def test_eps_from_x0_inverts_noising(coefficients):
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 3, 4, 5, 5, generator=g)
    sigma = torch.tensor([0.05, 0.4, 0.9]).view(-1, 1, 1, 1)
    a, b = coefficients(sigma)
    x_noisy = noised(x, eps, a, b)
    assert torch.allclose(eps_from_x0(x_noisy, x, a, b), eps, atol=1e-5)
