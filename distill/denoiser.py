"""How the losses see a diffusion model: one batched evaluation of several branches, at one or more latents."""
from typing import NamedTuple, Protocol, Sequence

from torch import Tensor


class Request(NamedTuple):
    """The branches to predict at one noisy latent [B, ...].

    ``positive`` names the conditioning branch guided against "negative" (the unconditional one); "negative"
    is predicted unless cfg == 1 and it is not in ``extra``; every name in ``extra`` is predicted too. ``sigma``
    [B]: this latent's own noise levels, where they differ from the call's (ASD's second level).
    """

    x_noisy: Tensor
    cfg: float = 1.0
    positive: str = "positive"
    extra: tuple[str, ...] = ()
    sigma: Tensor | None = None

    def branches(self) -> list[str]:
        """The branches this request predicts, its positive first."""
        names = [self.positive]
        if (self.cfg != 1 or "negative" in self.extra) and self.positive != "negative":
            names.append("negative")
        return names + [n for n in self.extra if n not in names]


class Denoiser(Protocol):
    sigmas: Tensor
    """The model's noise levels, ascending (see ``schedule``)."""

    one_t_per_batch: bool
    """True when the host decides per-level behaviour (timestep-ranged conditioning, ControlNet ranges,
    hook keyframes) from the batch's first item: then every item of a step must share one t."""

    def coefficients(self, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(a, b) per item [B] with x_σ = a·x + b·ε for this model's parameterization."""

    def __call__(self, requests: Sequence[Request], sigma: Tensor) -> list[dict[str, Tensor]]:
        """x0-predictions for every request at per-item σ [B] (a request's own ``sigma`` where it has one), in ONE
        batched evaluation. Per request: each of its branches under its name, and "cfg", the guided prediction
        negative + cfg·(positive − negative) with whatever CFG patches the host applies (the positive
        prediction itself when "negative" is not predicted)."""


def predict(denoiser: Denoiser, x_noisy: Tensor, sigma: Tensor, cfg: float, extra: Sequence[str] = (),
            positive: str = "positive") -> dict[str, Tensor]:
    """The common case of one latent: ``positive``, "negative" (unless cfg == 1), every extra branch and "cfg"."""
    return denoiser([Request(x_noisy, cfg, positive, tuple(extra))], sigma)[0]
