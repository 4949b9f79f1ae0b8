"""A denoiser known in closed form: Gaussian latents with a power-law spectrum.

Each conditioning branch is a Gaussian N(μ_branch, C) whose covariance C is diagonal in the orthonormal
2-D Fourier basis with eigenvalues λ_k = (1 + |k|·n)^(−α). The exact x0-prediction (MMSE) at
x_σ = a·x + b·ε is the per-frequency Wiener filter x̂0 = μ + λ/(λ + s²)·(x_σ/a − μ), s = b/a.
"""
import torch
from torch import Tensor

from distill.schedule import flow_coefficients, sd3_sigmas, sd15_sigmas, ve_coefficients


def power_spectrum(shape: tuple[int, ...], alpha: float = 2.0) -> Tensor:
    c, h, w = shape
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    return ((1 + k * max(h, w)) ** -alpha).expand(c, h, w).clone()


def fourier_filter(x: Tensor, gain: Tensor) -> Tensor:
    return torch.fft.ifft2(gain * torch.fft.fft2(x, norm="ortho"), norm="ortho").real


class GaussianDenoiser:
    """Implements distill.Denoiser exactly for the prior above; counts its evaluations."""

    def __init__(self, shape=(4, 16, 16), alpha=2.0, means: dict[str, Tensor] | None = None, flow=False):
        self.spectrum = power_spectrum(shape, alpha)
        self.means = means if means is not None else {"positive": torch.zeros(shape), "negative": torch.zeros(shape)}
        self.flow = flow
        self.sigmas = sd3_sigmas() if flow else sd15_sigmas()
        self.one_t_per_batch = False
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def coefficients(self, sigma):
        return flow_coefficients(sigma) if self.flow else ve_coefficients(sigma)

    def sample(self, n: int, branch: str = "positive", generator: torch.Generator | None = None) -> Tensor:
        white = torch.randn((n, *self.spectrum.shape), generator=generator)
        return self.means[branch] + fourier_filter(white, self.spectrum.sqrt())

    def x0(self, x_noisy: Tensor, sigma: Tensor, branch: str) -> Tensor:
        a, b = (c.view(-1, 1, 1, 1) for c in self.coefficients(sigma))
        s2 = (b / a) ** 2
        mu = self.means[branch]
        return mu + fourier_filter(x_noisy / a - mu, self.spectrum / (self.spectrum + s2))

    def __call__(self, requests, sigma):
        names = [r.branches() for r in requests]
        self.calls.append((sum(len(r.x_noisy) * len(n) for r, n in zip(requests, names)),
                           tuple(b for n in names for b in n)))
        results = []
        for r, branches in zip(requests, names):
            out = {n: self.x0(r.x_noisy, sigma, n) for n in branches}
            guided = "negative" in out and r.positive != "negative"
            out["cfg"] = out["negative"] + r.cfg * (out[r.positive] - out["negative"]) if guided else out[r.positive]
            results.append(out)
        return results
