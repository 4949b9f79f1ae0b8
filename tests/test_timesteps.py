import pytest
import torch

from distill import item_generators
from distill.timesteps import sample_fractions


@pytest.mark.parametrize("schedule", ["linear_anneal", "sqrt_anneal"])
def test_anneals_fall_monotonically_from_t_max_to_t_min(schedule):
    gens = item_generators(0, 2)
    t = torch.stack([sample_fractions(schedule, 0.2, 0.98, p, gens) for p in torch.linspace(0, 1, 50).tolist()])
    assert (t[:, 0] == t[:, 1]).all()
    assert (t[1:, 0] < t[:-1, 0]).all()
    assert t[0, 0].item() == pytest.approx(0.98) and t[-1, 0].item() == pytest.approx(0.2)


def test_sqrt_anneal_falls_faster_early_than_linear():
    gens = item_generators(0, 1)
    assert sample_fractions("sqrt_anneal", 0.02, 0.98, 0.25, gens) < sample_fractions("linear_anneal", 0.02, 0.98, 0.25, gens)


def test_uniform_is_seeded_per_item():
    a = sample_fractions("uniform", 0.02, 0.98, 0.0, item_generators(3, 4))
    b = sample_fractions("uniform", 0.02, 0.98, 0.0, item_generators(3, 4))
    c = sample_fractions("uniform", 0.02, 0.98, 0.0, item_generators(4, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.tolist())) == 4


def test_unknown_schedule_is_named():
    with pytest.raises(ValueError, match="t_schedule"):
        sample_fractions("cubic", 0.02, 0.98, 0.0, item_generators(0, 1))
