"""Score-distillation losses: each is a direction rule plus the one shared evaluation path."""
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, NamedTuple, Protocol

import torch
from torch import Tensor, nn

from .corrector import correct
from .denoiser import Denoiser, Request
from .run import Run, Window, gaussian_noise, to_device_of
from .schedule import alpha_bar, eps_from_x0, noised, per_item, sigma_at
from .timesteps import T_SCHEDULES, sample_fractions

WEIGHTINGS: dict[str, Callable[[Tensor], Tensor]] = {
    "sds": lambda abar: 1 - abar,
    "uniform": torch.ones_like,
    "fantasia3d": lambda abar: abar.sqrt() * (1 - abar),
    "sdi": lambda abar: ((1 - abar) / abar).sqrt(),
}
"""w(t) as a function of ᾱ_t: DreamFusion's 1 − ᾱ, constant, Fantasia3D's √ᾱ·(1 − ᾱ), and SDI's σ_t =
√((1 − ᾱ)/ᾱ), with which w·(ε̂ − κ) = x − x̂0: the DDIM step's own scale, as SDI's reference code updates."""


class NoiseSource(Protocol):
    def __call__(self, denoiser: Denoiser, x: Tensor, t: Tensor, cfg: float,
                 run: Run) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """The noise [B, ...] of this step for clean latents x at schedule fractions t [B]; optionally with the
        ε-predictions it made on the way, by name, which the direction then finds in Evaluation.eps (ISM's)."""


class Evaluation(NamedTuple):
    """Everything one step of a loss knows: the latent, its noising, w(t) and the model's predictions.

    x0 and eps hold one entry per evaluated branch and "cfg" (the guided prediction); a branch that
    the loss re-evaluates at a freshly noised latent appears in x0 as "<branch>@fresh"; the predictions at
    the reference latent (same t and ε) appear in x0 and eps as "<branch>@reference" and "cfg@reference"; the
    positive prediction at the shifted level (same ε, ASD) in x0 and eps as "positive@shifted".
    denoiser gives the model's noise levels to directions that need more than t's; progress is the run's
    step / (steps − 1).
    """

    x: Tensor
    noise: Tensor
    t: Tensor
    w: Tensor
    cfg: float
    x0: dict[str, Tensor]
    eps: dict[str, Tensor]
    reference: Tensor | None = None
    denoiser: Denoiser | None = None
    progress: float = 0.0


class NoisePredictions(dict):
    """ε̂ by name, each computed from its x0-prediction when a direction first reads it (SDS reads only "cfg"):
    ``implied`` holds (x_σ, x̂0, a, b) per name."""

    def __init__(self, implied: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]]):
        super().__init__()
        self.implied = implied

    def __missing__(self, name: str) -> Tensor:
        self[name] = eps = eps_from_x0(*self.implied[name])
        return eps


def sds_direction(ev: Evaluation) -> Tensor:
    """DreamFusion eq. 3: w(t)·(CFG_ω(x_t) − ε)."""
    return ev.w * (ev.eps["cfg"] - ev.noise)


def nfsd_direction(ev: Evaluation, threshold: float) -> Tensor:
    """NFSD eq. 7: w(t)·(δ_D + s·δ_C) = w(t)·(CFG_s − [t ≥ threshold]·ε̂_neg), δ_D of eq. 6 per item.

    Below the threshold δ_D = ε̂_u, above it δ_D = ε̂_u − ε̂_neg; the sampled ε never enters.
    """
    above = per_item(to_device_of(ev.t >= threshold, ev.x), ev.x)
    return ev.w * (ev.eps["cfg"] - above * ev.eps["nfsd_negative"])


def lmc_direction(ev: Evaluation, corrector: nn.Module) -> Tensor:
    """LMC-SDS: (L_lmc + ω·L_cond)/ω = [b̂(x, t) − ẑ_t + w(t)·(CFG_ω − ε̂_u)] / ω  (eq. 9 and §4).

    ẑ_t is the unconditional x0-prediction (at a freshly noised latent when L_cond's ε is fixed); the lmc
    term has no weighting and no Jacobian. b̂ is used as the corrector predicts it: it estimates the bias
    E_ε[ẑ_t] itself, so L_lmc has zero mean on clean data. Eq. 10's rescaling of b̂ to each sample's σ(ẑ_t)
    would add (E[σ(ẑ_t)]/σ(b̂) − 1)·(b̂ − μ(b̂)) to that mean and shrink the result's contrast.
    """
    z_hat = ev.x0.get("negative@fresh", ev.x0["negative"])
    with torch.no_grad():
        b = correct(corrector.to(ev.x.device), ev.x, ev.t)
    return (b - z_hat + ev.w * (ev.eps["cfg"] - ev.eps["negative"])) / ev.cfg


def fixed_noise(denoiser: Denoiser, x: Tensor, t: Tensor, cfg: float, run: Run) -> Tensor:
    """One ε field per item for the whole run (LMC-SDS's diversity option), drawn from the item's stream when first
    needed and cut at each latent's window: a patch gets the same ε wherever it covers the same place. A resized
    whole image has a field of its own size; a latent with a time axis [B, C, T, H, W] has one per frame."""
    crops = []
    for window, g in zip(run.windows_of(x), run.generators):
        window = window.at_scale(x.shape[-2:])
        key = ("fixed_noise", window.item, window.grid)
        if key not in run.cache:
            run.cache[key] = torch.randn((*x.shape[1:-2], *window.grid), generator=g)
        crops.append(window.crop(run.cache[key], x.shape[-2:]))
    return to_device_of(torch.stack(crops), x)


def reference_at(reference: Tensor, windows: list[Window], size: tuple[int, int]) -> Tensor:
    """The reference latents [R, C, (T,) H, W] where each latent the loss sees lies: its item's (or the one) reference
    cut at the window, resized with it in the whole-image phase."""
    items = max(w.item for w in windows) + 1
    if len(reference) not in (1, items):
        raise ValueError(f"reference: it holds {len(reference)} latents for a batch of {items}; give one reference "
                         "latent, or one per item of the batch being optimized.")
    grid = windows[0].grid
    if tuple(reference.shape[-2:]) != tuple(grid):
        raise ValueError(
            f"reference: its latent is {reference.shape[-1] * 8}×{reference.shape[-2] * 8} pixels but the one being "
            f"optimized is {grid[1] * 8}×{grid[0] * 8}; encode the image you are editing (VAE Encode) as the reference."
        )
    return torch.stack([w.crop(reference[w.item if len(reference) > 1 else 0], size) for w in windows])


def check_frames(reference: Tensor, x: Tensor) -> None:
    """A reference must have the optimized latent's rank and, with a time axis, its frames."""
    if reference.shape[2:-2] != x.shape[2:-2]:
        have = f"{reference.shape[2]} frames" if reference.ndim == 5 else "no time axis"
        want = f"{x.shape[2]} frames" if x.ndim == 5 else "none"
        raise ValueError(f"reference: it has {have} but the latent being optimized has {want}; encode what you are "
                         "editing with the model's own VAE as the reference, and start from the same latent.")


@dataclass(frozen=True)
class ScoreDistillation:
    """A score-distillation loss: timesteps, noising, one model evaluation, a direction, w(t).

    ``direction`` maps an Evaluation to the gradient; ``extra`` names the conditioning branches it
    needs besides ``positive`` (the guided branch, "positive" unless a stage compares two others) and "negative".
    cfg is the standard form ε̂_u + cfg·(ε̂_c − ε̂_u). ``noise``
    replaces the fresh Gaussian ε of each step (DDIM inversion for SDI, a fixed ε for LMC-SDS);
    ``resample`` names branches also evaluated at a latent noised with a fresh ε, in the same batch.
    ``reference`` (model-space latents [R, C, H, W], the image being edited) is noised with the same t and ε
    and evaluated under the branch "source" at the same cfg, in the same batch (DDS, PDS); a callable reference
    gives the latents at the step's windows itself (``image.ImageReference``: the original pixels, encoded).
    ``shift`` > 0 also evaluates "positive" at the same ε one level higher, t + shift·(t − t_min) (ASD), in the
    same batch. ``after`` = (p, loss): from progress p on, steps are that loss's (a second stage: SDS-Bridge, CSD).
    """

    direction: Callable[[Evaluation], Tensor] = sds_direction
    cfg: float = 100.0
    weighting: str = "sds"
    t_min: float = 0.02
    t_max: float = 0.98
    t_schedule: str = "uniform"
    grad_clip: float = 0.0
    extra: tuple[str, ...] = field(default=())
    noise: NoiseSource | None = None
    resample: tuple[str, ...] = field(default=())
    reference: Tensor | Callable[[list[Window], tuple[int, int]], Tensor] | None = None
    positive: str = "positive"
    shift: float = 0.0
    after: "tuple[float, ScoreDistillation] | None" = None

    def __post_init__(self):
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ValueError(
                f"t_min ({self.t_min}) must be below t_max ({self.t_max}), both within [0, 1]: "
                "they are fractions of the model's noise schedule (0.02 and 0.98 are the usual range)."
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}.")
        if self.t_schedule not in T_SCHEDULES:
            raise ValueError(f"t_schedule must be one of {', '.join(T_SCHEDULES)}, got {self.t_schedule!r}.")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be ≥ 0 (0 turns clipping off), got {self.grad_clip}.")
        if self.shift < 0:
            raise ValueError(f"shift must be ≥ 0, got {self.shift}.")

    def gradient(self, denoiser: Denoiser, x: Tensor, run: Run) -> Tensor:
        """g on the clean latents x [B, ...]: one batched model evaluation, no graph through the model."""
        if self.after is not None and run.progress >= self.after[0]:
            return self.after[1].gradient(denoiser, x, run)
        t = sample_fractions(self.t_schedule, self.t_min, self.t_max, run.progress, run.generators,
                             shared=denoiser.one_t_per_batch)
        x = x.detach()
        sigma = to_device_of(sigma_at(denoiser.sigmas, t), x)
        a, b = (per_item(c, x) for c in denoiser.coefficients(sigma))
        seen = {}
        if self.noise is None:
            noise = gaussian_noise(x, run.generators)
        else:
            noise = self.noise(denoiser, x, t, self.cfg, run)
            if isinstance(noise, tuple):
                noise, seen = noise
        x_noisy = noised(x, noise, a, b)
        requests = [Request(x_noisy, self.cfg, self.positive, self.extra)]
        reference = None
        if self.reference is not None:
            at = self.reference if callable(self.reference) else partial(reference_at, self.reference)
            reference = to_device_of(at(run.windows_of(x), x.shape[-2:]), x)
            check_frames(reference, x)
            reference_noisy = noised(reference, noise, a, b)
            requests.append(Request(reference_noisy, self.cfg, "source"))
        if self.resample:
            fresh = noised(x, gaussian_noise(x, run.generators), a, b)
            requests.append(Request(fresh, 1.0, self.resample[0], self.resample[1:]))
        if self.shift > 0:
            sigma_up = sigma_at(denoiser.sigmas, (t + self.shift * (t - self.t_min)).clamp(max=1.0)).to(x)
            a_up, b_up = (per_item(c, x) for c in denoiser.coefficients(sigma_up))
            shifted = noised(x, noise, a_up, b_up)
            requests.append(Request(shifted, 1.0, "positive", sigma=sigma_up))
        with torch.inference_mode():
            out = denoiser(requests, sigma)
        x0 = {k: v.clone().to(x) for k, v in out[0].items()}
        eps = NoisePredictions({k: (x_noisy, v, a, b) for k, v in x0.items()})
        if reference is not None:
            at_reference = {f"{k}@reference": v.clone().to(x) for k, v in out[1].items()}
            x0 |= at_reference
            eps.implied |= {k: (reference_noisy, v, a, b) for k, v in at_reference.items()}
        if self.resample:
            x0 |= {f"{k}@fresh": out[len(requests) - 1 - (self.shift > 0)][k].clone().to(x) for k in self.resample}
        if self.shift > 0:
            x0["positive@shifted"] = out[-1]["positive"].clone().to(x)
            eps.implied["positive@shifted"] = (shifted, x0["positive@shifted"], a_up, b_up)
        eps |= {k: v.to(x) for k, v in seen.items()}
        w = WEIGHTINGS[self.weighting](alpha_bar(a, b))
        ev = Evaluation(x, noise, t, w, self.cfg, x0, eps, reference, denoiser, run.progress)
        g = self.direction(ev)
        check_gradient(g, ev, run)
        if self.grad_clip > 0:
            g = g.clamp(-self.grad_clip, self.grad_clip)
        return g


class PendingCheck(NamedTuple):
    """One step's gradient check, not yet read on the host: finite holds, on the device, whether each item's
    gradient and then each branch's prediction is finite (read off its sum, which a NaN or infinity anywhere makes
    non-finite)."""

    step: int
    t: Tensor
    cfg: float
    branches: tuple[str, ...]
    finite: Tensor


def check_gradient(g: Tensor, ev: Evaluation, run: Run) -> None:
    """Stops a run whose gradient is not finite, naming the step, the t and the likely cause (never a silent zero):
    at once, or, where run.checks is a list, when the loop reads the checks it holds."""
    branches = tuple(k for k in ev.x0 if k != "cfg")
    finite = torch.cat([g.flatten(1).sum(1), torch.stack([ev.x0[k].sum() for k in branches])]).isfinite()
    check = PendingCheck(run.step, ev.t, ev.cfg, branches, finite)
    if run.checks is None:
        raise_if_not_finite([check])
    else:
        run.checks.append(check)


def raise_if_not_finite(checks: list[PendingCheck]) -> None:
    """Reads the checks in one host read; raises for the first step whose gradient is not finite."""
    if not checks:
        return
    flags = torch.cat([c.finite for c in checks]).cpu().tolist()
    start = 0
    for c in checks:
        items, ok = flags[start:start + len(c.t)], flags[start + len(c.t):start + len(c.t) + len(c.branches)]
        start += len(c.t) + len(c.branches)
        if all(items):
            continue
        levels = ", ".join(f"{v:.3f}" for v, fine in zip(c.t.tolist(), items) if not fine)
        broken = [k for k, fine in zip(c.branches, ok) if not fine]
        if broken:
            cause = (f"the model's prediction ({', '.join(broken)}) is NaN or infinite: a broken model or patch, or "
                     "half-precision overflow (try ComfyUI's --force-fp32)")
        else:
            cause = f"the guidance overflowed (cfg {c.cfg}); lower cfg"
        raise ValueError(f"step {c.step + 1}: the gradient is NaN or infinite at t = {levels}; {cause}.")


def target_loss(x: Tensor, g: Tensor) -> Tensor:
    """½‖x − sg(x − g)‖² / B, whose gradient with respect to x is g / B (the target trick)."""
    target = (x - g).detach()
    return 0.5 * (x - target).pow(2).sum() / x.shape[0]
