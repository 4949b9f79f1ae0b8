"""The pixel-space view: the paper's schedule of whole image, then random patches."""
import torch

from distill import Run, item_generators
from distill.image import PatchSchedule, fit_size, patch_corners


def test_seeded_patches_cover_every_pixel_over_a_run():
    h, w, size = 1024, 768, 512
    covered = torch.zeros(h, w, dtype=torch.bool)
    gens = item_generators(0, 1)
    for _ in range(350):  # the patch phase of the paper's 500 steps, 2 patches each
        for y, x in patch_corners(h, w, size, 2, gens)[0]:
            covered[y:y + size, x:x + size] = True
    assert covered.all()


def test_patches_are_seeded():
    a = patch_corners(1024, 1024, 512, 2, item_generators(3, 2))
    b = patch_corners(1024, 1024, 512, 2, item_generators(3, 2))
    c = patch_corners(1024, 1024, 512, 2, item_generators(4, 2))
    assert a == b and a != c


def test_whole_image_phase_then_patch_phase_at_native_size():
    schedule = PatchSchedule(native=64, whole_image_steps=2, patches=3)
    pixels = torch.rand(2, 3, 128, 96, requires_grad=True)
    run = Run(item_generators(0, 2), steps=4)
    whole, gens = schedule.view(pixels, run)
    assert whole.shape == (2, 3, 64, 48) and gens is run.generators
    run.step = 2
    patches, gens = schedule.view(pixels, run)
    assert patches.shape == (6, 3, 64, 64) and len(gens) == 6
    patches.sum().backward()
    assert pixels.grad.abs().sum() > 0


def test_fit_size_keeps_aspect_on_multiples_of_8():
    assert fit_size(1024, 768, 512) == (512, 384)
    assert fit_size(300, 1000, 512) == (152, 512)
