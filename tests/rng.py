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


def replay_draws(loss, generators: list[torch.Generator], shape) -> tuple[torch.Tensor, torch.Tensor]:
    """The t and ε a uniform-t loss is about to draw from these generators (t ~ U[t_min, t_max], then ε,
    per item), read from copies so the generators themselves are left as they are."""
    ts, eps = [], []
    for g in copies(generators):
        ts.append(loss.t_min + (loss.t_max - loss.t_min) * torch.rand((), generator=g, dtype=torch.float64))
        eps.append(torch.randn(tuple(shape[1:]), generator=g))
    return torch.stack(ts), torch.stack(eps)
