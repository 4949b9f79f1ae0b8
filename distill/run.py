"""Per-run state of one optimization: where it is, its random streams, and what a noise source caches."""
from dataclasses import dataclass, field

import numpy as np
import torch


def item_generators(seed: int, batch: int) -> list[torch.Generator]:
    """Independent CPU generators, one per batch item, derived from one seed (numpy's SeedSequence)."""
    states = [s.generate_state(1, np.uint64)[0] for s in np.random.SeedSequence(seed).spawn(batch)]
    return [torch.Generator().manual_seed(int(s)) for s in states]


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
