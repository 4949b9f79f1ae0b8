"""The pixel-space view: the paper's schedule of whole image, then random patches on the VAE's 8-pixel grid, what a
loss keeps per image position (fixed noise) following the patches, and the editing reference seen as the image is."""
import pytest
import torch
import torch.nn.functional as F

from kornia.geometry.transform import resize

from analytic import GaussianDenoiser, sd15_sigmas
from distill import DDIMInversion, Run, ScoreDistillation, Settings, Window, fixed_noise, item_generators, optimize
from distill.image import ImageReference, PatchSchedule, check_patch_phase, fit_size, latent_view, patch_corners
from distill.schedule import ve_coefficients


def test_seeded_patches_cover_every_cell_over_a_run():
    h, w, size = 128, 96, 64  # latent cells of a 1024×768 image, 512-pixel patches
    covered = torch.zeros(h, w, dtype=torch.bool)
    gens = item_generators(0, 1)
    for _ in range(350):  # the patch phase of the paper's 500 steps, 2 patches each
        for y, x in patch_corners(h, w, size, 2, gens)[0]:
            covered[y:y + size, x:x + size] = True
    assert covered.all()


def test_patches_are_seeded():
    a = patch_corners(128, 128, 64, 2, item_generators(3, 2))
    b = patch_corners(128, 128, 64, 2, item_generators(3, 2))
    c = patch_corners(128, 128, 64, 2, item_generators(4, 2))
    assert a == b and a != c


def test_whole_image_phase_then_patch_phase_at_native_size():
    schedule = PatchSchedule(native=64, whole_image_steps=2, patches=3)
    pixels = torch.rand(2, 3, 128, 96, requires_grad=True)
    run = Run(item_generators(0, 2), steps=4)
    whole, windows = schedule.view(pixels, run)
    assert whole.shape == (2, 3, 64, 48)
    assert [tuple(w) for w in windows] == [(i, 0, 0, 16, 12, (16, 12)) for i in range(2)]
    run.step = 2
    patches, windows = schedule.view(pixels, run)
    assert patches.shape == (6, 3, 64, 64) and [w.item for w in windows] == [0, 0, 0, 1, 1, 1]
    for patch, w in zip(patches, windows):
        assert (w.height, w.width, w.grid) == (8, 8, (16, 12))
        assert torch.equal(patch, pixels[w.item, :, 8 * w.top:8 * w.top + 64, 8 * w.left:8 * w.left + 64])
    patches.sum().backward()
    assert pixels.grad.abs().sum() > 0


def test_patches_sit_on_the_grid_vae_encode_crops_to():
    # VAE Encode keeps the centred multiple-of-8 part of an image: 8 rows of 21 from row 2.
    pixels = torch.arange(21 * 30, dtype=torch.float32).reshape(1, 1, 21, 30).expand(1, 3, 21, 30)
    patches, windows = PatchSchedule(native=16, whole_image_steps=0, patches=4).view(pixels, Run(item_generators(0, 1)))
    for patch, w in zip(patches, windows):
        assert w.grid == (2, 3)
        assert torch.equal(patch, pixels[0, :, 2 + 8 * w.top:2 + 8 * w.top + 16, 3 + 8 * w.left:3 + 8 * w.left + 16])


def test_fit_size_keeps_aspect_on_multiples_of_8():
    assert fit_size(1024, 768, 512) == (512, 384)
    assert fit_size(300, 1000, 512) == (152, 512)


def pooled(images):
    """A stand-in VAE encoder that is exact on the 8-pixel grid: 8×8 means, 4 channels."""
    return F.avg_pool2d(torch.cat([images, images[:, :1]], 1), 8)


class Flat:
    """A denoiser for any latent size that predicts zeros: these tests look at what reaches the loss, not the model."""

    sigmas = sd15_sigmas()
    one_t_per_batch = False

    def coefficients(self, sigma):
        return ve_coefficients(sigma)

    def __call__(self, requests, sigma):
        return [{name: torch.zeros_like(r.x_noisy) for name in [*r.branches(), "cfg"]} for r in requests]


def seen_by_the_loss(pixels, steps, encode=pooled, **loss):
    """Per step: the windows of the latents the loss saw, and the Evaluation it was given."""
    windows_seen, evaluations = [], []
    view = latent_view(PatchSchedule(native=64, whole_image_steps=2, patches=2), encode)

    def watched(p, run):
        z, windows = view(p, run)
        windows_seen.append(windows)
        return z, windows

    def record(ev):
        evaluations.append(ev)
        return torch.zeros_like(ev.x)

    optimize(pixels, ScoreDistillation(direction=record, cfg=1.0, **loss), Flat(),
             Settings(steps=steps, lr=1e-3, optimizer="adam"), view=watched)
    return list(zip(windows_seen, evaluations))


def test_fixed_noise_is_the_same_at_the_same_image_position_across_steps_and_differs_elsewhere():
    pixels = torch.rand(2, 3, 160, 128, generator=torch.Generator().manual_seed(0))
    seen = seen_by_the_loss(pixels, 12, noise=fixed_noise)
    whole = [ev.noise for _, ev in seen[:2]]
    assert whole[0].shape[-2:] == (8, 6) and torch.equal(whole[0], whole[1])  # the resized image's own ε field
    cells = {}  # (item, row, column) of the latent grid → the ε of every patch that covered it
    for windows, ev in seen[2:]:
        for w, eps in zip(windows, ev.noise):
            for r in range(w.height):
                for c in range(w.width):
                    cells.setdefault((w.item, w.top + r, w.left + c), []).append(eps[:, r, c])
    revisited = [v for v in cells.values() if len(v) > 1]
    assert len(revisited) > 100
    assert all(torch.equal(v[0], other) for v in revisited for other in v[1:])
    assert len({tuple(v[0].tolist()) for v in cells.values()}) == len(cells)  # every place of every item its own ε


def contextual(images):
    """A stand-in encoder with spatial context, as GroupNorm and attention give the SD VAE: 8×8 means plus each
    image's own mean, so that encoding a cut is not cutting the encoding."""
    return pooled(images) + images.mean((1, 2, 3)).view(-1, 1, 1, 1)


def test_reference_is_the_original_image_seen_as_the_optimized_one_is():
    pixels = torch.rand(1, 3, 160, 128, generator=torch.Generator().manual_seed(0))
    ramp = torch.linspace(0, 1, 160).view(1, 1, 160, 1)  # patches of another mean than the whole image
    source = 0.2 * torch.rand(1, 3, 160, 128, generator=torch.Generator().manual_seed(1)) + 0.8 * ramp
    schedule = PatchSchedule(native=64, whole_image_steps=2, patches=2)
    seen = seen_by_the_loss(pixels, 4, contextual, reference=ImageReference(source, schedule, contextual))
    resized = resize(source, (64, 48), antialias=True)
    for _, ev in seen[:2]:  # the whole image at native size: the original resized in pixels, then encoded
        assert torch.equal(ev.reference, contextual(resized))
    for windows, ev in seen[2:]:  # the step's patches cut from the original in pixels, encoded as one batch
        patches = torch.cat([source[:, :, 8 * w.top:8 * w.top + 64, 8 * w.left:8 * w.left + 64] for w in windows])
        assert torch.equal(ev.reference, contextual(patches))
        for w, crop in zip(windows, ev.reference):
            assert not torch.allclose(crop, w.crop(contextual(source)[0], (8, 8)), atol=1e-3)


def test_an_unedited_image_gives_its_reference_bit_for_bit_in_both_phases():
    pixels = torch.rand(1, 3, 160, 128, generator=torch.Generator().manual_seed(0))
    schedule = PatchSchedule(native=64, whole_image_steps=2, patches=2)
    seen = seen_by_the_loss(pixels, 4, contextual, reference=ImageReference(pixels.clone(), schedule, contextual))
    assert all(torch.equal(ev.x, ev.reference) for _, ev in seen)


def test_sdi_reuse_with_a_patch_phase_is_refused_naming_the_inputs():
    schedule = PatchSchedule(native=512, whole_image_steps=200, patches=2)
    reused = ScoreDistillation(noise=DDIMInversion(refresh_every=4))
    with pytest.raises(ValueError, match=r"refresh_every: .* 4 steps.*whole_image_steps \(200 of 500 steps"):
        check_patch_phase(reused, schedule, 768, 1024, 500)
    check_patch_phase(reused, schedule, 768, 1024, 200)  # no patch phase: κ stays where it was inferred
    check_patch_phase(reused, schedule, 512, 512, 500)  # the image is never cut into patches
    check_patch_phase(ScoreDistillation(noise=DDIMInversion(refresh_every=1)), schedule, 768, 1024, 500)


def test_kept_sdi_noise_is_used_only_where_it_was_inferred():
    den = GaussianDenoiser((4, 8, 8))
    inversion = DDIMInversion(steps=4, refresh_every=5, eta=0.0, jitter=False)
    x, t = torch.zeros(2, 4, 8, 8), torch.tensor([0.5, 0.5], dtype=torch.float64)
    here = [Window(0, 0, 0, 8, 8, (16, 16)), Window(0, 8, 8, 8, 8, (16, 16))]
    there = [Window(0, 8, 0, 8, 8, (16, 16)), Window(0, 0, 8, 8, 8, (16, 16))]
    cache, calls = {}, []
    for step, windows in enumerate([here, here, there]):  # steps 0 to 2 of a refresh every 5
        before = len(den.calls)
        inversion(den, x, t, 7.5, Run(item_generators(0, 2), steps=10, step=step, cache=cache, windows=windows))
        calls.append(len(den.calls) - before)
    assert calls[0] > 0 and calls[1] == 0 and calls[2] == calls[0]
