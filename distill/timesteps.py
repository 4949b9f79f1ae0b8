"""Per-item timestep sampling over an optimization run (schedule fractions, see ``schedule``)."""
import torch
from torch import Tensor

from .run import uniform

T_SCHEDULES = ("uniform", "linear_anneal", "sqrt_anneal")


def sample_fractions(
    schedule: str, t_min: float, t_max: float, progress: float, generators: list[torch.Generator],
    shared: bool = False,
) -> Tensor:
    """Schedule fractions t [B] for one step, ``progress`` = step / (steps − 1) ∈ [0, 1].

    uniform: t ~ U[t_min, t_max] per item (DreamFusion); linear_anneal: t = t_max − (t_max − t_min)·p
    (SDI); sqrt_anneal: t = t_max − (t_max − t_min)·√p (HiFA). The anneals are the same for every item;
    ``shared`` gives every item the first item's uniform draw (each item's stream still advances).
    """
    if schedule == "uniform":
        t = t_min + (t_max - t_min) * uniform(generators)
        return t[:1].expand(len(t)).clone() if shared else t
    if schedule == "linear_anneal":
        p = progress
    elif schedule == "sqrt_anneal":
        p = progress**0.5
    else:
        raise ValueError(f"t_schedule must be one of {', '.join(T_SCHEDULES)}, got {schedule!r}.")
    return torch.full((len(generators),), t_max - (t_max - t_min) * p, dtype=torch.float64)
