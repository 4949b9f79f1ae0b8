"""LMC-SDS's learned manifold corrective b̂(z, t): the denoiser's timestep-dependent bias, modelled.

The one-step denoiser is biased even on the image manifold: its x0-prediction ẑ_t from z_t is a
blurred z. A corrector predicts that bias from the clean z and t, so that L_lmc = b̂(z, t) − ẑ_t
cancels it (Alldieck et al., ECCV 2024). Two kinds share one interface, corrector(z, t) → b̂:
- UNetCorrector, the paper's small U-Net (t as a 10-d frequency encoding on every pixel), trained
  by least squares on the triplets and predicting a residual on top of the identity;
- SpectralCorrector, per channel, radial frequency band and t bin a gain, fitted in closed form by
  least squares from the same triplets and applied with an FFT.
"""
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .denoiser import Denoiser, predict
from .run import to_device_of
from .schedule import noised, per_item, sigma_at

T_ENCODING = 10


def frequency_encoding(t: Tensor) -> Tensor:
    """[B] → [B, 10]: sin and cos of 2^k·π·t for k = 0 … 4."""
    freqs = math.pi * 2.0 ** torch.arange(T_ENCODING // 2, device=t.device, dtype=torch.float32)
    angles = t.float()[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def frames(z: Tensor) -> Tensor:
    """Latents with a time axis [B, C, T, H, W] as images [B·T, C, H, W] (item-major); images as they are."""
    return rearrange(z, "b c f h w -> (b f) c h w") if z.ndim == 5 else z


def correct(corrector: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: Tensor) -> Tensor:
    """b̂(z, t) for latents [B, C, H, W] or, frame by frame at the item's t, [B, C, T, H, W]: a corrector models
    one image's bias, and a video model's (Wan, Qwen-Image) is made from its frames."""
    if z.ndim == 4:
        return corrector(z, t)
    return rearrange(corrector(frames(z), t.repeat_interleave(z.shape[2])), "(b f) c h w -> b c f h w", b=len(z))


def corrector_loss(b: Tensor, z_hat: Tensor) -> Tensor:
    """‖ẑ_t − b̂‖², mean over elements: the paper's first loss (§4.1), minimised by the bias E_ε[ẑ_t] at its own
    scale. Eq. 10 compares b̂ rescaled to each ẑ_t's std, which leaves b̂'s scale free; LMC-SDS uses b̂ as it
    is (see losses.lmc_direction), so the corrector must predict the scale too."""
    return (z_hat - b).pow(2).mean()


class _Block(nn.Module):
    """Two 3×3 Conv/ReLU with circular padding, then a per-channel scale and shift from t's encoding (FiLM).

    Circular padding is the FFT's boundary, the spectral corrector's; with zero padding a 16×16
    latent's border alone costs ~9% of the bias on the periodic analytic prior. On real latents the
    net learns its borders either way."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                                   nn.Conv2d(c_out, c_out, 3, padding=1, padding_mode="circular"), nn.ReLU())
        self.film = nn.Linear(T_ENCODING, 2 * c_out)

    def forward(self, h: Tensor, enc: Tensor) -> Tensor:
        scale, shift = rearrange(self.film(enc), "b (two c) -> two b c 1 1", two=2)
        return self.convs(h) * (1 + scale) + shift


class UNetCorrector(nn.Module):
    """b̂(z, t) = z + U-Net(z, t): 32 filters doubling per level, max-pool down, skips up; t enters as
    the paper's 10-d frequency encoding, concatenated to every input pixel.

    Beyond the paper, so that minutes of training suffice: the net sees each item's latent centred and
    at unit scale; its blocks are also scaled and shifted by t (FiLM); each channel's spatial mean
    takes a separate gain that is a function of t alone: at high t a mean that is off by a percent
    costs more than the whole shape, and a conv net finds such a global gain slowly, a linear map of
    the encoding at once.
    """

    def __init__(self, channels: int, levels: int = 3, filters: int = 32):
        super().__init__()
        self.config = {"channels": channels, "levels": levels, "filters": filters}
        widths = [filters * 2**i for i in range(levels)]
        self.down = nn.ModuleList(_Block(c_in, c_out) for c_in, c_out in zip([channels + T_ENCODING] + widths, widths))
        self.up = nn.ModuleList(_Block(w_deep + w, w) for w_deep, w in zip(widths[:0:-1], widths[-2::-1]))
        self.out = nn.Conv2d(widths[0], channels, 1)
        self.mean_gain = nn.Linear(T_ENCODING, channels)
        for layer in (self.out, self.mean_gain):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        enc = frequency_encoding(t).to(z)
        mean = z.mean(dim=(2, 3), keepdim=True)
        centred = z - mean
        scale = centred.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        h = torch.cat([centred / scale, repeat(enc, "b e -> b e h w", h=z.shape[-2], w=z.shape[-1])], dim=1)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = block(h, enc)
            skips.append(h)
        for block, skip in zip(self.up, skips[-2::-1]):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), enc)
        shape = self.out(h)
        shape = shape - shape.mean(dim=(2, 3), keepdim=True)
        return mean * (1 + self.mean_gain(enc)[..., None, None]) + centred + scale * shape


def radial_bands(h: int, w: int, bands: int, device=None) -> Tensor:
    """Band index [h, w] of every FFT frequency by its radius, evenly over 0 … √½ cycles per pixel."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.fftfreq(w, device=device)[None, :]
    r = torch.sqrt(fy**2 + fx**2) / math.sqrt(0.5)
    return (r * bands).long().clamp(max=bands - 1)


class SpectralCorrector(nn.Module):
    """b̂(z, t) = F⁻¹[g(c, band(k), t)·F(z)], the gain interpolated linearly between t-bin centres."""

    def __init__(self, gains: Tensor, t_centers: Tensor):
        super().__init__()
        self.register_buffer("gains", gains)  # [C, bands, t_bins]
        self.register_buffer("t_centers", t_centers)  # [t_bins], ascending
        self.config = {"channels": gains.shape[0], "bands": gains.shape[1], "t_bins": gains.shape[2]}

    def gain_at(self, t: Tensor) -> Tensor:
        """[B, C, bands] gains at fractions t, linear in t between bin centres, constant beyond them."""
        c, t = self.t_centers, to_device_of(t, self.t_centers).contiguous()
        pos = torch.searchsorted(c, t).clamp(1, len(c) - 1)
        lo = pos - 1
        w = ((t - c[lo]) / (c[pos] - c[lo])).clamp(0, 1)
        g = self.gains
        return rearrange(g[:, :, lo] * (1 - w) + g[:, :, pos] * w, "c k b -> b c k")

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        band = radial_bands(z.shape[-2], z.shape[-1], self.gains.shape[1], z.device)
        gain = self.gain_at(t).to(z)[:, :, band]
        return torch.fft.ifft2(gain * torch.fft.fft2(z, norm="ortho"), norm="ortho").real


def fit_spectral(z: Tensor, z_hat: Tensor, t: Tensor, t_bins: int = 49, bands: int = 32,
                 t_range: tuple[float, float] = (0.02, 0.98)) -> SpectralCorrector:
    """Least-squares gains g = Σ Re(Ẑ·conj(Z)) / Σ |Z|² per channel, band and t bin, from triplets.

    Both sums in one index_add each: every (item, channel, frequency) adds into its (channel, band,
    t bin) cell. On the triplets' device; a cell without power keeps gain 1."""
    _, c, h, w = z.shape
    device = z.device
    edges = torch.linspace(*t_range, t_bins + 1, dtype=torch.float64, device=device)
    centers = (edges[:-1] + edges[1:]) / 2
    t_bin = (torch.bucketize(t.to(device, torch.float64), edges) - 1).clamp(0, t_bins - 1)
    channel_band = torch.arange(c, device=device)[:, None, None] * bands + radial_bands(h, w, bands, device)
    cell = (channel_band * t_bins + t_bin[:, None, None, None]).flatten()
    Z, Zh = torch.fft.fft2(z.double(), norm="ortho"), torch.fft.fft2(z_hat.double(), norm="ortho")
    cross, power = Zh.real * Z.real + Zh.imag * Z.imag, Z.real.square() + Z.imag.square()
    num, den = (torch.zeros(c * bands * t_bins, dtype=torch.float64, device=device).index_add_(0, cell, v.flatten())
                .view(c, bands, t_bins) for v in (cross, power))
    gains = torch.where(den > 0, num / den.clamp_min(1e-30), torch.ones_like(num))
    return SpectralCorrector(gains.float(), centers.float())


@dataclass
class Triplets:
    """Training data of a corrector: clean latents z, the model's ẑ_t from z_t, and t (fractions)."""

    z: Tensor
    z_hat: Tensor
    t: Tensor


def collect_triplets(denoiser: Denoiser, latents: Tensor, pairs: int, generator: torch.Generator,
                     t_range: tuple[float, float] = (0.02, 0.98), batch: int = 16,
                     progress: Callable[[int, int], None] | None = None) -> Triplets:
    """(z, ẑ_t, t) with t ~ U(t_range), ẑ_t the denoiser's "positive" x0-prediction (give it the
    unconditional prompt there) from z_t = a·z + b·ε; each latent gives ``pairs`` triplets, a latent with a time
    axis one per frame for each of them (see ``correct``).
    progress(done, total) after each batch, counting noisy latents evaluated.

    Each triplet's ẑ_t is the mean over an antithetic pair, ε and −ε at the same z and t: an unbiased
    estimate of the bias E_ε[ẑ_t] in which the part linear in ε cancels, which takes most of the
    noise out of the corrector's fit (both signs are equally likely, so nothing is biased).
    """
    z = latents.repeat_interleave(2 * pairs, 0).float()
    t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(len(z) // 2, generator=generator, dtype=torch.float64)
    t = t.repeat_interleave(2)
    eps = torch.randn((len(z) // 2, *z.shape[1:]), generator=generator)
    eps = torch.stack([eps, -eps], dim=1).flatten(0, 1)
    out = []
    for i in range(0, len(z), batch):
        zs, ts, es = z[i:i + batch], t[i:i + batch], eps[i:i + batch].to(z)
        sigma = sigma_at(denoiser.sigmas, ts).to(zs)
        a, b = (per_item(c, zs) for c in denoiser.coefficients(sigma))
        with torch.inference_mode():
            out.append(predict(denoiser, noised(zs, es, a, b), sigma, 1.0)["positive"].clone().to(zs))
        if progress is not None:
            progress(i + len(zs), len(z))
    pair_mean = torch.cat(out).unflatten(0, (-1, 2)).mean(1)
    per_latent = z.shape[2] if z.ndim == 5 else 1
    return Triplets(frames(z[::2]).contiguous(), frames(pair_mean), t[::2].repeat_interleave(per_latent))


def new_unet(channels: int, seed: int) -> UNetCorrector:
    """A U-Net corrector on the CPU whose initial weights are a function of the seed alone, drawn with
    the global CPU generator reseeded (and restored afterwards) from the seed through numpy's
    SeedSequence, so that they do not replay the streams that seed the triplets and the minibatches."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence(seed).generate_state(1, np.uint64)[0]))
        return UNetCorrector(channels)


def fit_residual(corrector: Callable[[Tensor, Tensor], Tensor], data: Triplets, bands: int = 16, t_bins: int = 12,
                 t_range: tuple[float, float] = (0.02, 0.98), batch: int = 64) -> Tensor:
    """[bands, t_bins] relative residual Σ|F(b̂(z, t) − ẑ_t)|² / Σ|F(ẑ_t)|² per radial band and t bin over
    the triplets: 0 where the corrector predicts ẑ_t, 1 where it does no better than 0; NaN in an empty bin.
    Computed where the corrector's weights are; returned on the CPU in float64."""
    weights = [*corrector.parameters(), *corrector.buffers()] if isinstance(corrector, nn.Module) else []
    device = weights[0].device if weights else data.z.device
    edges = torch.linspace(*t_range, t_bins + 1, dtype=torch.float64)
    t_bin = (torch.bucketize(data.t.double().cpu(), edges) - 1).clamp(0, t_bins - 1)
    band = F.one_hot(radial_bands(*data.z.shape[-2:], bands).flatten(), bands).double().to(device)  # [h·w, bands]
    residual = torch.zeros(bands, t_bins, dtype=torch.float64)
    power = torch.zeros_like(residual)
    for i in range(0, len(data.z), batch):
        z, z_hat, t = (x[i:i + batch].to(device) for x in (data.z, data.z_hat, data.t))
        with torch.inference_mode():
            b = corrector(z, t).double()
        for total, x in ((residual, b - z_hat.double()), (power, z_hat.double())):
            per_band = torch.fft.fft2(x, norm="ortho").abs().pow(2).sum(1).flatten(1) @ band  # [B, bands]
            total.index_add_(1, t_bin[i:i + batch], per_band.T.cpu())
    return torch.where(power > 0, residual / power.clamp_min(1e-300), torch.full_like(power, float("nan")))


def train_unet(net: UNetCorrector, data: Triplets, steps: int, lr: float = 1e-3, batch: int = 64,
               seed: int = 0, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam on corrector_loss over random minibatches of the triplets; trains net in place, on the triplets' device
    (an exception from on_step leaves it with what it has learned so far). Returns the loss per step.

    net must have been made outside inference mode; the triplets may come from inside it."""
    g = torch.Generator().manual_seed(seed)
    losses = []
    device = data.z.device
    with torch.inference_mode(False), torch.enable_grad():
        net.to(device)
        z, z_hat, t = data.z.clone(), data.z_hat.clone(), data.t.to(device, copy=True)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
        for step in range(steps):
            idx = torch.randint(len(z), (min(batch, len(z)),), generator=g).to(device)
            loss = corrector_loss(net(z[idx], t[idx]), z_hat[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step(step, losses[-1])
    return losses
