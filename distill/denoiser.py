"""How the losses see a diffusion model: one batched evaluation of several conditioning branches."""
from typing import Protocol, Sequence

from torch import Tensor


class Denoiser(Protocol):
    sigmas: Tensor
    """The model's noise levels, ascending (see ``schedule``)."""

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) per item [B] with x_σ = a·x + b·ε for this model's parameterization."""

    def __call__(
        self, x_noisy: Tensor, sigma: Tensor, cfg: float, extra: Sequence[str] = ()
    ) -> dict[str, Tensor]:
        """x0-predictions of the noisy latents [B, ...] at per-item σ [B], in ONE batched evaluation.

        Keys: "positive"; "negative" unless cfg == 1 and it is not in ``extra`` (the unconditional
        branch is then skipped); every name in ``extra``; and "cfg", the guided prediction
        negative + cfg·(positive − negative) with whatever CFG patches the host applies.
        """
