"""Per-run state of one optimization: where it is, its random streams, and what a noise source caches."""
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor


def item_generators(seed: int, batch: int) -> list[torch.Generator]:
    """Independent CPU generators, one per batch item, derived from one seed (numpy's SeedSequence)."""
    states = [s.generate_state(1, np.uint64)[0] for s in np.random.SeedSequence(seed).spawn(batch)]
    return [torch.Generator().manual_seed(int(s)) for s in states]


def gaussian_noise(x: Tensor, generators: list[torch.Generator]) -> Tensor:
    """ε ~ N(0, I) shaped like x, each item drawn from its own generator on the CPU (same seed, same noise anywhere)."""
    return torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(x)


def uniform(generators: list[torch.Generator]) -> Tensor:
    """One U[0, 1) draw per item, float64, each from its own generator."""
    return torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])


@dataclass
class Run:
    generators: list[torch.Generator]
    steps: int = 1
    step: int = 0
    cache: dict = field(default_factory=dict)

    @property
    def progress(self) -> float:
        """step / (steps − 1) ∈ [0, 1]: 0 at the first step, 1 at the last."""
        return self.step / max(self.steps - 1, 1)
