"""How a node's settings become a loss: each method's defaults and the choices "auto" makes.

The nodes map their widgets to these calls and nothing else, so the tests, the benchmarks and Python users
build exactly the losses the nodes build. cfg is always the standard form ε̂_u + cfg·(ε̂_c − ε̂_u); t is a
fraction of the model's own noise schedule (see ``schedule``).
"""
from dataclasses import replace
from functools import partial

from torch import Tensor, nn

from .editing import PDS_GRID, dds_direction, pds_direction
from .inversion import DDIMInversion
from .losses import NoiseSource, ScoreDistillation, lmc_direction, nfsd_direction, sds_direction
from .losses import fixed_noise as fixed_noise_source
from .variants import ISMInversion, asd_direction, bridge_direction, csd_direction, ism_direction


def resolve_weighting(weighting: str, noise: NoiseSource | None = None, corrector: nn.Module | None = None) -> str:
    """w(t) for "auto": "uniform" for LMC-SDS (its paper), "sdi" with DDIM-inverted noise (the reference code's
    x − x̂0 = σ_t·(ε̂ − κ)), else DreamFusion's "sds" (1 − ᾱ_t). Any other value is taken as it is."""
    if weighting != "auto":
        return weighting
    if corrector is not None:
        return "uniform"
    return "sdi" if isinstance(noise, DDIMInversion) else "sds"


def sds(cfg: float = 101.0, weighting: str = "auto", t_min: float = 0.02, t_max: float = 0.98,
        t_schedule: str = "uniform", grad_clip: float = 0.0, noise: NoiseSource | None = None,
        corrector: nn.Module | None = None, fixed_noise: bool = False) -> ScoreDistillation:
    """SDS (DreamFusion's ω = 100, which is cfg 101 in the standard form): with a DDIM-inverted ``noise`` it is SDI, with a ``corrector`` LMC-SDS, whose
    ``fixed_noise`` keeps one ε per item in L_cond for the whole run and a fresh one in L_lmc."""
    if fixed_noise and noise is not None:
        raise ValueError("fixed_noise: it fixes the noise itself, so it cannot be combined with a noise input; "
                         "turn it off or disconnect noise.")
    lmc = corrector is not None
    return ScoreDistillation(
        direction=partial(lmc_direction, corrector=corrector) if lmc else sds_direction,
        extra=("negative",) if lmc else (), resample=("negative",) if lmc and fixed_noise else (),
        noise=fixed_noise_source if fixed_noise else noise, cfg=cfg,
        weighting=resolve_weighting(weighting, noise, corrector), t_min=t_min, t_max=t_max, t_schedule=t_schedule,
        grad_clip=grad_clip)


def sdi(cfg: float = 8.5, t_min: float = 0.2, t_max: float = 0.98, t_schedule: str = "linear_anneal",
        noise: DDIMInversion | None = None, **settings) -> ScoreDistillation:
    """SDI as its reference code runs it: guidance 7.5 (cfg 8.5 here), t annealed linearly 0.98 → 0.2, noise from
    DDIM inversion (``DDIMInversion()``'s defaults: 10 steps, guidance −7.5 = cfg −6.5, η 0.3)."""
    return sds(cfg=cfg, t_min=t_min, t_max=t_max, t_schedule=t_schedule,
               noise=DDIMInversion() if noise is None else noise, **settings)


def lmc_sds(corrector: nn.Module, cfg: float = 8.0, **settings) -> ScoreDistillation:
    """LMC-SDS with the paper's synthesis ω = 8 (editing: 15), weighting "auto" = uniform."""
    return sds(cfg=cfg, corrector=corrector, **settings)


def nfsd(cfg: float = 7.5, threshold: float = 0.2, weighting: str = "auto", t_min: float = 0.02, t_max: float = 0.98,
         t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """NFSD with its nominal scale 7.5; the domain direction switches at ``threshold`` (0.2 = t 200 of 1000).
    The negative prompt is the branch "nfsd_negative"."""
    return ScoreDistillation(direction=partial(nfsd_direction, threshold=threshold), extra=("nfsd_negative",), cfg=cfg,
                             weighting=resolve_weighting(weighting), t_min=t_min, t_max=t_max,
                             t_schedule=t_schedule, grad_clip=grad_clip)


def dds(reference: Tensor, cfg: float = 7.5, weighting: str = "auto", t_min: float = 0.05, t_max: float = 0.95,
        t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """DDS as its notebook runs it: cfg 7.5, t ∈ [50, 950) of 1000, weighting "auto" = uniform (w = 1).
    ``reference``: the image being edited, model-space latents [1 or B, C, H, W]; the source prompt is the
    branch "source", the target prompt "positive"."""
    return ScoreDistillation(direction=dds_direction, reference=reference, cfg=cfg,
                             weighting="uniform" if weighting == "auto" else weighting, t_min=t_min, t_max=t_max,
                             t_schedule=t_schedule, grad_clip=grad_clip)


def check_pds_t_min(t_min: float) -> None:
    """PDS compares each level t with the one a step of its grid below: t_min must leave such a level."""
    if t_min < 1 / PDS_GRID:
        raise ValueError(f"t_min ({t_min}) must be at least {1 / PDS_GRID} for PDS: it compares each level t with "
                         f"the one a step of its {PDS_GRID}-level grid below (0.02 is PDS's own).")


def pds(reference: Tensor, cfg: float = 100.0, weighting: str = "auto", t_min: float = 0.02, t_max: float = 0.98,
        t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """PDS as its authors run it: cfg 100, t ∈ [0.02, 0.98], no w(t) ("auto" = uniform); branches as ``dds``."""
    check_pds_t_min(t_min)
    return ScoreDistillation(direction=pds_direction, reference=reference, cfg=cfg,
                             weighting="uniform" if weighting == "auto" else weighting, t_min=t_min, t_max=t_max,
                             t_schedule=t_schedule, grad_clip=grad_clip)


def csd(scale: float = 1.0, ramp: float = 0.5, late_t_max: float = 0.5, weighting: str = "auto", t_min: float = 0.02,
        t_max: float = 0.98, t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """CSD as its csd-if config runs it: w = 1 ("auto" = uniform), g = s·(ε̂_c − ε̂_ref) with ε̂_ref going from the
    unconditional branch to "csd_negative" over the first ``ramp`` of the run, after which t_max drops to
    ``late_t_max`` (its 0.98 → 0.5 at step 5000 of 10 000; at or above t_max it stays). s = 1 as its cond_scale."""
    common = dict(cfg=1.0, weighting="uniform" if weighting == "auto" else weighting, t_min=t_min,
                  t_schedule=t_schedule, grad_clip=grad_clip)
    late = ScoreDistillation(direction=partial(csd_direction, scale=scale, ramp=0.0), extra=("csd_negative",),
                             t_max=min(late_t_max, t_max), **common)
    if ramp <= 0:
        return late
    return ScoreDistillation(direction=partial(csd_direction, scale=scale, ramp=ramp),
                             extra=("negative", "csd_negative"), t_max=t_max, after=(ramp, late), **common)


def ism(cfg: float = 7.5, delta: float = 0.08, interval: float = 0.2, weighting: str = "auto", t_min: float = 0.02,
        t_max: float = 0.5, t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """ISM as LucidDreamer runs it: guidance 7.5 (its CFG is the standard form), t ≤ 0.5, x_s by unconditional DDIM
    inversion in steps of 0.2 and x_t one step δ = 0.08 above it, "auto" = "sdi" (√((1 − ᾱ_t)/ᾱ_t))."""
    return ScoreDistillation(direction=ism_direction, noise=ISMInversion(delta, interval), cfg=cfg,
                             weighting="sdi" if weighting == "auto" else weighting, t_min=t_min, t_max=t_max,
                             t_schedule=t_schedule, grad_clip=grad_clip)


def sds_bridge(cfg: float = 40.0, stage_two: float = 0.5, weighting: str = "auto", t_min: float = 0.02,
               t_max: float = 0.98, t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """SDS-Bridge as its 2D generate.py runs it: SDS at cfg 40, then from ``stage_two`` of the run (its step 500 of
    1000) w(t)·cfg·(ε̂_target − ε̂_source) with the branches "bridge_target" and "bridge_source"; "auto" = "sds"."""
    weighting = "sds" if weighting == "auto" else weighting
    stage_one = sds(cfg=cfg, weighting=weighting, t_min=t_min, t_max=t_max, t_schedule=t_schedule, grad_clip=grad_clip)
    two = replace(stage_one, direction=partial(bridge_direction, scale=cfg), cfg=1.0, positive="bridge_target",
                  extra=("bridge_source",))
    return replace(stage_one, after=(stage_two, two))


def asd(cfg: float = 7.5, shift: float = 0.1, weighting: str = "auto", t_min: float = 0.02, t_max: float = 0.98,
        t_schedule: str = "uniform", grad_clip: float = 0.0) -> ScoreDistillation:
    """ASD as ScaleDreamer runs it: guidance 7.5 (standard form), the prompt's prediction at t + 0.1·(t − t_min) with
    the same ε as the comparison, "auto" = "sds" (1 − ᾱ_t)."""
    return ScoreDistillation(direction=asd_direction, shift=shift, cfg=cfg,
                             weighting="sds" if weighting == "auto" else weighting, t_min=t_min, t_max=t_max,
                             t_schedule=t_schedule, grad_clip=grad_clip)
