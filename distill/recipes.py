"""How a node's settings become a loss: each method's defaults and the choices "auto" makes.

The nodes map their widgets to these calls and nothing else, so the tests, the benchmarks and Python users
build exactly the losses the nodes build. cfg is always the standard form ε̂_u + cfg·(ε̂_c − ε̂_u); t is a
fraction of the model's own noise schedule (see ``schedule``).
"""
from functools import partial

from torch import Tensor, nn

from .editing import PDS_GRID, dds_direction, pds_direction
from .inversion import DDIMInversion
from .losses import NoiseSource, ScoreDistillation, lmc_direction, nfsd_direction, sds_direction
from .losses import fixed_noise as fixed_noise_source


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
