"""Every core path with the model on a (fake) CUDA device: no tensor or module is left on the CPU.

ComfyUI hands the pack latents and predictions on the model's GPU, while generators and σ tables stay
on the CPU. The analytic prior stands in for the model with its predictions on cuda (see fake_cuda.py
for what fake tensors check and what they stand in for).
"""
import sys
from collections import Counter

import pytest
import torch
from torch import nn

from analytic import GaussianDenoiser
from fake_cuda import CUDA, fake_cuda, on_cuda
from distill import DDIMInversion, Run, Settings, ddim_sample, item_generators, optimize, recipes
from distill.corrector import SpectralCorrector, UNetCorrector, collect_triplets, fit_spectral, train_unet
from distill.image import PatchSchedule, latent_view
from distill.optimize import OPTIMIZERS

SHAPE = (4, 16, 16)


def cuda_prior() -> GaussianDenoiser:
    """The analytic prior with its predictions on cuda and its σ table on the CPU, as ComfyDenoiser's."""
    g = torch.Generator().manual_seed(1)
    means = {name: torch.randn(SHAPE, generator=g) for name in ("positive", "negative", "nfsd_negative")}
    den = GaussianDenoiser(SHAPE, means=means)
    den.spectrum = den.spectrum.to(CUDA)
    den.means = {k: v.to(CUDA) for k, v in den.means.items()}
    return den


def spectral_corrector() -> SpectralCorrector:
    g = torch.Generator().manual_seed(2)
    return SpectralCorrector(1 + 0.1 * torch.randn(SHAPE[0], 8, 5, generator=g), torch.linspace(0.1, 0.9, 5))


CORRECTORS = {"spectral": spectral_corrector, "unet": lambda: UNetCorrector(SHAPE[0], filters=8)}

LOSSES = {
    "sds": lambda: recipes.sds(),
    "nfsd": lambda: recipes.nfsd(),
    "lmc_spectral": lambda: recipes.lmc_sds(spectral_corrector()),
    "lmc_unet": lambda: recipes.lmc_sds(CORRECTORS["unet"]()),
    "lmc_fixed_noise": lambda: recipes.lmc_sds(spectral_corrector(), fixed_noise=True),
}


def gradient_on_cuda(loss) -> torch.Tensor:
    with fake_cuda():
        x = torch.zeros(2, *SHAPE, device=CUDA)
        return loss.gradient(cuda_prior(), x, Run(item_generators(0, 2), steps=3))


@pytest.mark.parametrize("name", LOSSES)
def test_every_loss_direction_stays_on_the_model_device(name):
    assert on_cuda(gradient_on_cuda(LOSSES[name]()))


@pytest.mark.parametrize("eta_placement", ["end", "every_step"])
@pytest.mark.parametrize("variant", ["renoise", "inverted"])
def test_ddim_inversion_stays_on_the_model_device(variant, eta_placement):
    noise = DDIMInversion(steps=4, variant=variant, eta_placement=eta_placement)
    assert on_cuda(gradient_on_cuda(recipes.sdi(noise=noise)))


def test_ddim_sampling_stays_on_the_model_device():
    with fake_cuda():
        x = ddim_sample(cuda_prior(), torch.randn(2, *SHAPE).to(CUDA), steps=3)
    assert on_cuda(x)


@pytest.mark.parametrize("kind", CORRECTORS)
def test_a_corrector_loaded_on_the_cpu_runs_on_the_model_device(kind):
    corrector = CORRECTORS[kind]()
    with fake_cuda():
        z = torch.randn(3, *SHAPE, device=CUDA)
        b = corrector.to(z.device)(z, torch.tensor([0.05, 0.5, 0.95], dtype=torch.float64))
    assert on_cuda(b)


def cuda_triplets():
    den = cuda_prior()
    return collect_triplets(den, torch.randn(3, *SHAPE).to(CUDA), 4, torch.Generator().manual_seed(0), batch=8)


def test_triplets_are_collected_on_the_model_device():
    with fake_cuda():
        data = cuda_triplets()
    assert on_cuda(data.z, data.z_hat)


def test_the_spectral_fit_runs_and_its_corrector_applies_on_the_model_device():
    with fake_cuda():
        data = cuda_triplets()
        corrector = fit_spectral(data.z, data.z_hat, data.t, t_bins=5, bands=8)
        b = corrector(data.z, data.t)
    assert on_cuda(corrector.gains, b)


def test_a_unet_made_on_the_cpu_trains_on_the_model_device():
    net = UNetCorrector(SHAPE[0], filters=8)
    with fake_cuda():
        losses = train_unet(net, cuda_triplets(), steps=2, batch=4)
    assert len(losses) == 2 and on_cuda(*net.parameters())


@pytest.fixture
def optimizers(monkeypatch):
    """The optimizers optimize() makes, recorded."""
    made = []
    for name, cls in OPTIMIZERS.items():
        recorded = type(cls.__name__, (cls,), {"__init__": lambda self, *a, _cls=cls, **k: (_cls.__init__(self, *a, **k),
                                                                                           made.append(self))[0]})
        monkeypatch.setitem(OPTIMIZERS, name, recorded)
    return made


def optimizer_state(opt) -> list[torch.Tensor]:
    return [v for state in opt.state.values() for k, v in state.items() if k != "step"]


def test_one_optimization_step_keeps_the_latent_and_the_optimizer_state_on_the_model_device(optimizers):
    with fake_cuda():
        x, history = optimize(torch.zeros(2, *SHAPE, device=CUDA), recipes.sds(), cuda_prior(), Settings(steps=1))
    state = optimizer_state(optimizers[0])
    assert on_cuda(x, *state) and len(state) == 2 and len(history.loss) == 1


def test_optimization_steps_through_the_pixel_view_stay_on_the_model_device(optimizers):
    encoder = nn.Conv2d(3, SHAPE[0], 2, stride=2)
    schedule = PatchSchedule(native=2 * SHAPE[1], whole_image_steps=1, patches=2)  # step 0 whole, step 1 patches
    with fake_cuda():
        pixels = torch.full((1, 3, 4 * SHAPE[1], 4 * SHAPE[1]), 0.5, device=CUDA)
        x, _ = optimize(pixels, recipes.sds(), cuda_prior(), Settings(steps=2, clamp=(0.0, 1.0)),
                        view=latent_view(schedule, encoder.to(CUDA)))
    assert on_cuda(x, *optimizer_state(optimizers[0]))


def sdi():
    return recipes.sdi(noise=DDIMInversion(steps=4))


@pytest.mark.parametrize("make_loss", [recipes.sds, LOSSES["lmc_fixed_noise"], sdi], ids=["sds", "lmc_fixed_noise", "sdi"])
def test_the_loop_makes_the_host_wait_for_the_device_only_at_its_checks(make_loss, monkeypatch):
    """Per step nothing is read on the host, copied to it, or copied to the device in a way that waits: the host
    waits for the latent's check, once per CHECK_EVERY steps for the gradients' checks, and once for the history
    (CHECK_EVERY set to 2 here, to keep the runs short)."""
    monkeypatch.setattr(sys.modules["distill.optimize"], "CHECK_EVERY", 2)  # the module, not distill's function

    def waits(steps):
        loss = make_loss()
        with fake_cuda() as mode:
            prior, x = cuda_prior(), torch.zeros(2, *SHAPE, device=CUDA)
            mode.host_waits.clear()  # the test's own copies to the device
            optimize(x, loss, prior, Settings(steps=steps))
        return mode.host_waits

    once = Counter(waits(1))  # the latent's check, the last gradient checks and the history; moving a corrector
    assert once["copy to the CPU"] == 2 and once["read on the host"] == 1
    assert Counter(waits(2)) == once
    assert Counter(waits(4)) - once == Counter({"copy to the CPU": 1})
