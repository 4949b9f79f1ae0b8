"""The quality scores are calibrated: real images score 1, exact samples of the prior lie where its width puts them."""
import math

import pytest
import torch

from distill import ddim_sample
from distill.mixture import shapes_prior
from distill.quality import band_power, contrast, distance_to_source, fidelity, mean_distance, scores
from distill.shapes import CLASSES, make_shapes

TRAIN, HELD_OUT = make_shapes(64, seed=0), make_shapes(64, seed=1)


@pytest.mark.parametrize("prompt", CLASSES)
def test_held_out_images_score_one(prompt):
    """New images of the class are as far from the dataset as its images from each other, as diverse, as
    contrasted, with the same spectrum: every score 1 up to the spread of 64 draws (within 15%, 25% per band),
    and each is recognised as its class."""
    s = scores(HELD_OUT.of(prompt), TRAIN, prompt)
    assert s.adherence == 1
    for value in (s.fidelity, s.diversity, s.std, s.max_abs):
        assert 0.85 < value < 1.15
    for value in s.band_power:
        assert 0.75 < value < 1.3


def test_scores_follow_scaling_and_collapse():
    """Twice the image: twice the std and max |x|, four times the power in every band; one image repeated:
    no diversity; an image of the dataset: fidelity 0."""
    rings = TRAIN.of("ring")
    (s1, m1), (s2, m2) = contrast(rings), contrast(2 * rings)
    assert s2 == pytest.approx(2 * s1) and m2 == pytest.approx(2 * m1)
    assert torch.allclose(band_power(2 * rings), 4 * band_power(rings))
    assert mean_distance(rings[:1].expand(5, -1, -1, -1)) == 0
    assert fidelity(rings[:3], rings).abs().max() < 1e-6


def test_distance_to_source_is_in_units_of_the_class_nearest_neighbour_distance():
    """An edit that replaced each image by its nearest other image of the class has median distance exactly 1
    (the class's median nearest-neighbour distance, by definition); an edit that changed nothing, 0."""
    squares = TRAIN.of("square")
    d = torch.cdist(squares.flatten(1), squares.flatten(1)).fill_diagonal_(float("inf"))
    nearest_other = squares[d.argmin(1)]
    assert distance_to_source(nearest_other, squares, squares).median().item() == pytest.approx(1, rel=1e-6)
    assert distance_to_source(squares, squares, squares).max() == 0


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_ddim_samples_lie_within_the_component_width_of_an_image(flow):
    """DDIM at cfg 1 samples the prior, so every result lies within a component's reach of one of its images.

    Once one component N(μ, s0²I) holds the posterior (VE view, σ the level b/a), a DDIM step σ → σ′ maps
    x − μ to (s0² + σσ′)/(s0² + σ²)·(x − μ), never more than the exact flow's √((s0² + σ′²)/(s0² + σ²))
    (Cauchy–Schwarz), and the flow carries N(μ, (s0² + σ²)I) to N(μ, (s0² + σ′²)I); the last step, to σ′ = 0,
    returns the x0-prediction. So ‖x − μ‖ ≤ s0·(√d + 3): a χ_d variable exceeds √d + 3 with probability
    below e^(−4.5).
    """
    s0, n = 0.02, 16
    den = shapes_prior(TRAIN, "square", width=s0, flow=flow)
    x = ddim_sample(den, torch.randn((n, 3, 32, 32), generator=torch.Generator().manual_seed(0)), 50)
    distance = torch.cdist(x.flatten(1).double(), TRAIN.of("square").flatten(1).double()).min(1).values
    assert (distance < s0 * (math.sqrt(x[0].numel()) + 3)).all()
