"""Replaying the pack's per-item random streams in tests."""
import torch


def copies(generators: list[torch.Generator]) -> list[torch.Generator]:
    """Generators in the same state as the given ones, to redraw what the pack is about to draw."""
    out = []
    for g in generators:
        h = torch.Generator()
        h.set_state(g.get_state())
        out.append(h)
    return out
