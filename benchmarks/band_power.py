"""Per-band power of SDS, SDI and DDIM sampling on the analytic Gaussian prior, printed and plotted.

On a Gaussian prior the MMSE denoiser is linear (a per-frequency Wiener filter), so score distillation
settles where the expected gradient vanishes; this shows how much power each method leaves per radial
frequency band, against the prior's own spectrum and DDIM samples. It needs only torch and Pillow.

    python benchmarks/band_power.py [--steps 300] [--out benchmarks/out/band_power.png]
"""
import argparse
import math
import sys
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.append(str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parents[1] / "tests"))
from analytic import GaussianDenoiser  # noqa: E402
from distill import DDIMInversion, ScoreDistillation, Settings, ddim_sample, optimize  # noqa: E402
from distill.denoiser import predict  # noqa: E402
from distill.schedule import sigma_at  # noqa: E402

SHAPE, BANDS = (4, 32, 32), 8


def band_index() -> torch.Tensor:
    h, w = SHAPE[1:]
    k = torch.sqrt(torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.fftfreq(w)[None, :] ** 2)
    return (k / k.max() * (BANDS - 1e-6)).floor().long()


def band_power(x: torch.Tensor) -> list[float]:
    power = torch.fft.fft2(x, norm="ortho").abs().pow(2).mean(dim=(0, 1))
    idx = band_index()
    return [power[idx == b].mean().item() for b in range(BANDS)]


def plot(rows: dict[str, list[float]], path: Path) -> None:
    w, h, m = 640, 400, 50
    img = Image.new("RGB", (w, h), (250, 250, 250))
    d = ImageDraw.Draw(img)
    logs = {k: [math.log10(max(v, 1e-12)) for v in vals] for k, vals in rows.items()}
    lo, hi = min(min(v) for v in logs.values()), max(max(v) for v in logs.values())
    d.rectangle((m, m, w - m, h - m), outline=(0, 0, 0))
    d.text((m, 15), f"per-band power (log10 {lo:.1f} to {hi:.1f}) vs radial frequency band", fill=(0, 0, 0))
    colors = [(0, 0, 0), (40, 120, 220), (220, 80, 40), (40, 160, 60)]
    for (name, vals), color, row in zip(logs.items(), colors, range(len(logs))):
        pts = [(m + (w - 2 * m) * i / (BANDS - 1), h - m - (h - 2 * m) * (v - lo) / (hi - lo)) for i, v in enumerate(vals)]
        d.line(pts, fill=color, width=2)
        d.text((w - m - 150, m + 10 + 14 * row), name, fill=color)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "band_power.png")
    args = p.parse_args()
    den = GaussianDenoiser(SHAPE)
    n = 8
    start = predict(den, torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(0)) * sigma_at(den.sigmas, torch.tensor(0.98)),
                    sigma_at(den.sigmas, torch.tensor([0.98] * n)), 1.0)["cfg"]  # x̂0 of pure noise (SDI notebook's start)
    settings = Settings(steps=args.steps, lr=0.05, optimizer="adam", seed=0)
    common = dict(cfg=1.0, weighting="uniform", t_min=0.2, t_max=0.98, t_schedule="linear_anneal")
    sds, _ = optimize(start, ScoreDistillation(**common), den, settings)
    sdi, _ = optimize(start, ScoreDistillation(**common, noise=DDIMInversion(cfg=1.0)), den, settings)
    rows = {"prior spectrum": band_power(den.sample(256, generator=torch.Generator().manual_seed(1))),
            "DDIM sampling (50 steps)": band_power(ddim_sample(den, torch.randn((64, *SHAPE), generator=torch.Generator().manual_seed(2)), 50)),
            "SDS": band_power(sds), "SDI": band_power(sdi)}
    print("band " + " ".join(f"{b:>9d}" for b in range(BANDS)) + "   (power relative to the prior)")
    for name, vals in rows.items():
        print(f"{name:>24s} " + " ".join(f"{v / ref:9.3f}" for v, ref in zip(vals, rows["prior spectrum"])))
    plot(rows, args.out)
    print(f"plot saved to {args.out}")


if __name__ == "__main__":
    main()
