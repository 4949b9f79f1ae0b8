"""An exact, non-linear prior: a mixture of narrow Gaussians, one per image, whose denoiser is in closed form.

Each branch (a prompt) is the mixture (1/K)·Σ_k N(μ_k, s0²·I) over its images μ_k. At x_σ = a·x + b·ε the
component k is N(a·μ_k, v·I) with v = a²s0² + b², so the exact x0-prediction (the posterior mean) is

    w = softmax_k(−‖x_σ − a·μ_k‖² / 2v),   E[x|x_σ] = Σ_k w_k·(μ_k + (a·s0²/v)·(x_σ − a·μ_k)),

each term the Wiener posterior mean of its component. Expanding ‖x_σ − a·μ_k‖² = ‖x_σ‖² − 2a⟨x_σ, μ_k⟩ +
a²‖μ_k‖², the first term is common to all k, so one matrix product gives every logit (kept in float64).
"""
from typing import Callable, Sequence

import torch
from torch import Tensor

from .denoiser import Request
from .schedule import flow_coefficients, sd3_sigmas, sd15_sigmas, ve_coefficients
from .shapes import Shapes


def evaluate_requests(x0: Callable[[Tensor, Tensor, str], Tensor], requests: Sequence[Request],
                      sigma: Tensor) -> list[dict[str, Tensor]]:
    """Every request's branches from an exact x0(x_noisy, σ, branch), at its own σ where it has one, and "cfg"."""
    results = []
    for r in requests:
        level = sigma if r.sigma is None else r.sigma
        out = {n: x0(r.x_noisy, level, n) for n in r.branches()}
        guided = "negative" in out and r.positive != "negative"
        out["cfg"] = out["negative"] + r.cfg * (out[r.positive] - out["negative"]) if guided else out[r.positive]
        results.append(out)
    return results


def mixture_x0(x_noisy: Tensor, means: Tensor, width: float, a: Tensor, b: Tensor) -> Tensor:
    """E[x | x_σ] for x ~ (1/K)·Σ_k N(μ_k, width²·I), x_σ = a·x + b·ε: x_noisy [B, ...], means [K, D] float64
    (the flattened images), a, b [B]."""
    x = x_noisy.flatten(1).double()
    a, b = a.to(x)[:, None], b.to(x)[:, None]
    v = a**2 * width**2 + b**2
    half_norms = 0.5 * torch.linalg.vector_norm(means, dim=1) ** 2
    logits = (a * (x @ means.T) - a**2 * half_norms) / v
    m = torch.softmax(logits, dim=1) @ means
    return (m + a * width**2 / v * (x - a * m)).to(x_noisy).view_as(x_noisy)


class MixtureDenoiser:
    """Implements distill.Denoiser exactly for one narrow-Gaussian mixture per branch.

    ``branches`` maps a branch name to the images [K, C, H, W] of its mixture. The σ table is SD1.5's
    (VE view, x_σ = x + σ·ε: EPS and v-prediction models alike, as the pack sees both) or, with flow,
    SD3's (x_σ = (1 − σ)·x + σ·ε).
    """

    def __init__(self, branches: dict[str, Tensor], width: float, flow: bool = False):
        self.means = {name: images.flatten(1).double() for name, images in branches.items()}
        self.width = width
        self.flow = flow
        self.sigmas = sd3_sigmas() if flow else sd15_sigmas()
        self.one_t_per_batch = False

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return flow_coefficients(sigma) if self.flow else ve_coefficients(sigma)

    def x0(self, x_noisy: Tensor, sigma: Tensor, branch: str) -> Tensor:
        """The exact x0-prediction of one branch at per-item σ [B]."""
        if branch not in self.means:
            raise ValueError(f"this prior has no branch {branch!r}; it has {', '.join(self.means)}.")
        a, b = self.coefficients(sigma.double())
        return mixture_x0(x_noisy, self.means[branch], self.width, a, b)

    def __call__(self, requests: list[Request], sigma: Tensor) -> list[dict[str, Tensor]]:
        return evaluate_requests(self.x0, requests, sigma)


def shapes_prior(data: Shapes, prompt: str, width: float = 0.02, flow: bool = False,
                 negative_blur: float = 1.0) -> MixtureDenoiser:
    """The prior of a Shapes dataset prompted with one class: "positive" = that class's images,
    "negative" = all images (the unconditional prior), "nfsd_negative" = all images blurred by
    ``negative_blur`` pixels (NFSD's "blurry, low quality" prompt)."""
    return MixtureDenoiser({"positive": data.of(prompt), "negative": data.images,
                            "nfsd_negative": data.blurred(negative_blur).images}, width, flow)
