"""The optimization loop: Adam, AdamW or SGD on the latents, driven by a score-distillation gradient."""
import math
from dataclasses import dataclass, replace
from typing import Callable, Protocol

import torch
from torch import Tensor

from .denoiser import Denoiser
from .losses import raise_if_not_finite, target_loss
from .run import Run, Window, item_generators

THREESTUDIO = {"betas": (0.9, 0.99), "eps": 1e-15}
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adam_torch": torch.optim.Adam,
              "sgd": torch.optim.SGD}
OPTIONS = {"adam": THREESTUDIO, "adamw": THREESTUDIO}
"""OPTIMIZERS: name → optimizer; OPTIONS: its settings besides lr, PyTorch's defaults where none. threestudio's Adam
and AdamW (weight decay 0.01); Adam at PyTorch's betas (0.9, 0.999) and eps 1e-8 (the PDS notebook's AdamW without
its weight decay); plain SGD on the DDS notebook's objective (``DDS_SCALE``)."""
DDS_SCALE = 2000.0
"""The DDS notebook minimises 2000·Σ(z·g)/(H·W) with SGD: a step of lr·2000/(H·W)·g per item (0.049·g at lr 0.1
on a 64×64 latent)."""
LR_SCHEDULES = ("constant", "cosine")
CHECK_EVERY = 10
"""Steps between the host reads of the gradients' finiteness checks (and at the last step): the loop never waits
for the device otherwise; an error still names the step where the gradient first broke."""


class Loss(Protocol):
    def gradient(self, denoiser: Denoiser, x: Tensor, run: Run) -> Tensor: ...


@dataclass(frozen=True)
class Settings:
    """Optimizer settings; ``OPTIMIZERS`` names the optimizers and their betas and eps."""

    steps: int = 500
    lr: float = 0.1
    optimizer: str = "adamw"
    lr_schedule: str = "cosine"
    l2_to_init: float = 0.0
    seed: int = 0
    lr_end: float = 0.0
    clamp: tuple[float, float] | None = None

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}.")
        if not self.lr > 0:
            raise ValueError(f"learning rate must be positive, got {self.lr}.")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}.")
        if self.l2_to_init < 0:
            raise ValueError(f"l2_to_init must be ≥ 0, got {self.l2_to_init}.")
        if not 0 <= self.lr_end <= self.lr:
            raise ValueError(f"lr_end must be within [0, learning rate], got {self.lr_end}.")


@dataclass
class History:
    """Per step: the loss proxy ½‖g‖²/B (a gradient-size measure, not convergence) and mean ‖g‖ per item."""

    loss: list[float]
    grad_norm: list[float]


StepCallback = Callable[[int, Tensor], None]
"""Called after every step with (step index, current tensor); raising from it stops the run."""

View = Callable[[Tensor, Run], tuple[Tensor, list[Window]]]
"""Maps the optimized tensor to the latents the loss sees (differentiably), with where each lies in its item."""


def check_finite(name: str, x: Tensor) -> None:
    if not torch.isfinite(x).all():
        raise ValueError(
            f"{name} contains NaN or infinite values; recreate it (e.g. Empty Latent Image or VAE Encode) "
            "or fix the node that produced it."
        )


def check_mask(name: str, mask: Tensor) -> None:
    if not torch.isfinite(mask).all():
        raise ValueError(f"{name} contains NaN or infinite values; make it with a mask node (0 = keep, 1 = edit).")
    if not (mask > 0).any():
        raise ValueError(
            f"{name} is zero everywhere, so nothing would change; paint the region to edit (white = edit; "
            "right-click Load Image → Open in MaskEditor) or remove the mask to edit everything."
        )


def optimize(
    latent: Tensor, loss: Loss, denoiser: Denoiser, settings: Settings, on_step: StepCallback | None = None,
    view: View | None = None, mask: Tensor | None = None,
) -> tuple[Tensor, History]:
    """Minimize the distillation loss over a batch [B, ...]; returns it detached.

    Without a view the batch is latents in model space; with one (e.g. pixels through a VAE encoder) the
    loss sees view(x) and its gradient flows back through the view. settings.clamp keeps x in a range.
    mask (broadcastable to the batch, in [0, 1]) weights every step of x: where it is 0 the result is the
    input bit for bit; the optimizer's own step is masked, since Adam's normalized step and AdamW's decay
    would move x where only the gradient is zero.
    The host reads nothing from the device per step: the history and the gradient checks stay there, the checks
    read every CHECK_EVERY steps, the history at the end.
    """
    check_finite("latent", latent)
    if mask is not None:
        check_mask("mask", mask)
    run = Run(item_generators(settings.seed, latent.shape[0]), settings.steps, checks=[])
    with torch.inference_mode(False), torch.enable_grad():
        init = latent.detach().clone().float()
        x = init.clone().requires_grad_(True)
        weight = None if mask is None else mask.clamp(0, 1).to(x).expand_as(x)
        stats = torch.empty(settings.steps, 2, device=x.device)
        opt = OPTIMIZERS[settings.optimizer]([x], lr=settings.lr, **OPTIONS.get(settings.optimizer, {}))
        for step in range(settings.steps):
            run.step = step
            if settings.lr_schedule == "cosine":
                for group in opt.param_groups:
                    cosine = 0.5 * (1 + math.cos(math.pi * run.progress))
                    group["lr"] = settings.lr_end + (settings.lr - settings.lr_end) * cosine
            z, loss_run = x, run
            if view is not None:
                z, windows = view(x, run)
                loss_run = replace(run, generators=[run.generators[w.item] for w in windows], windows=windows)
            g = loss.gradient(denoiser, z, loss_run)
            scale = DDS_SCALE * z.shape[0] / (z.shape[-2] * z.shape[-1]) if settings.optimizer == "sgd" else 1.0
            if view is None:  # the target loss's gradient g / B, without building its graph
                x.grad = g * (scale / x.shape[0])
            else:
                x.grad = None
                (scale * target_loss(z, g)).backward()
            if settings.l2_to_init > 0:  # of l2·½‖x − x_start‖²/B
                x.grad += settings.l2_to_init * (x.detach() - init) / x.shape[0]
            before = x.detach().clone() if weight is not None else None
            opt.step()
            with torch.no_grad():
                if settings.clamp is not None:
                    x.clamp_(*settings.clamp)
                if weight is not None:
                    x.copy_(torch.where(weight > 0, torch.lerp(before, x, weight), before))
                norms = g.flatten(1).norm(dim=1)
                stats[step] = torch.stack([0.5 * norms.square().sum(), norms.sum()]) / z.shape[0]
            if (step + 1) % CHECK_EVERY == 0 or step + 1 == settings.steps:
                raise_if_not_finite(run.checks)
                run.checks.clear()
            if on_step is not None:
                on_step(step, x.detach())
    loss_proxy, grad_norm = stats.cpu().T.tolist()
    return x.detach(), History(loss_proxy, grad_norm)
