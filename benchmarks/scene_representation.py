"""Voxel grid or tri-plane for the 3D scene: quality and cost side by side, measured in one run.

Each representation is fitted photometrically (MSE of albedo renders against the analytic ray tracer's images of
one figure of distill/scene_mixture.py) with the pack's renderer, Adam, the same cameras (dreamfusion-sd ranges,
one per step), steps, render size and samples. Reported: held-out PSNR on a turntable at azimuths between the
usual ones, seconds per step (forward + backward + Adam), parameters. The tri-plane is EG3D's: three axis-aligned
feature planes sampled with grid_sample, summed, and decoded by a small MLP into density and albedo logits (with
the same blob bias and activations as the voxel scene).

    python benchmarks/scene_representation.py [--steps 300]
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from distill.cameras import CameraRanges, turntable  # noqa: E402
from distill.render import FieldSample, render  # noqa: E402
from distill.run import item_generators  # noqa: E402
from distill.scene import VoxelScene, blob_bias  # noqa: E402
from distill.scene_mixture import FIGURES, trace  # noqa: E402

SIZE, SAMPLES, BACKGROUND = 32, 48, (1.0, 1.0, 1.0)


class TriPlane(nn.Module):
    def __init__(self, resolution: int, channels: int = 16, hidden: int = 64, generator=None):
        super().__init__()
        self.planes = nn.Parameter(0.1 * torch.randn(3, channels, resolution, resolution, generator=generator))
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, 4))

    def forward(self, points):
        coords = torch.stack([points[:, [0, 1]], points[:, [0, 2]], points[:, [1, 2]]])[:, :, None]
        features = F.grid_sample(self.planes, coords, align_corners=False, padding_mode="border").sum(0)[..., 0].T
        raw = self.mlp(features)
        return FieldSample(F.softplus(raw[:, 0] + blob_bias(points)), torch.sigmoid(raw[:, 1:]),
                           torch.zeros_like(points))


def psnr(a, b):
    return (-10 * torch.log10(((a - b) ** 2).mean())).item()


def fit(field: nn.Module, lr: float, steps: int, figure) -> tuple[float, float]:
    generator = item_generators(0, 1)[0]
    opt = torch.optim.Adam(field.parameters(), lr=lr, betas=(0.9, 0.99), eps=1e-15)
    background = torch.tensor(BACKGROUND)
    start = time.perf_counter()
    for _ in range(steps):
        cameras = CameraRanges().sample(1, generator)
        target = trace(figure, cameras, SIZE, BACKGROUND)
        out = render(field, cameras.rays(SIZE, SIZE), SAMPLES, background, generator=generator)
        loss = F.mse_loss(out.rgb, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    per_step = (time.perf_counter() - start) / steps
    held_out = turntable(8, 15.0)
    held_out = held_out.with_azimuth(held_out.azimuth + 22.5)
    with torch.no_grad():
        ours = render(field, held_out.rays(SIZE, SIZE), 96, background).rgb
    return psnr(ours, trace(figure, held_out, SIZE, BACKGROUND)), per_step


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    candidates = [
        ("voxel 32³", lambda: VoxelScene(32), 0.1),
        ("voxel 48³", lambda: VoxelScene(48), 0.1),
        ("tri-plane 64², 16 ch, MLP 64", lambda: TriPlane(64, generator=torch.Generator().manual_seed(0)), 0.01),
        ("tri-plane 128², 16 ch, MLP 64", lambda: TriPlane(128, generator=torch.Generator().manual_seed(0)), 0.01),
    ]
    for name, make, lr in candidates:
        quality, per_step = [], []
        for figure in FIGURES:
            field = make()
            q, t = fit(field, lr, args.steps, figure)
            quality.append(q)
            per_step.append(t)
        params = sum(p.numel() for p in field.parameters())
        rows.append((name, sum(quality) / len(quality), min(quality), sum(per_step) / len(per_step), params))
    print(f"{args.steps} steps, one camera per step, {SIZE}² renders, {SAMPLES} samples per ray, Adam")
    print("| representation | held-out PSNR (mean of 3 figures) | worst figure | s / step | parameters |")
    print("| --- | --- | --- | --- | --- |")
    for name, mean, worst, per_step, params in rows:
        print(f"| {name} | {mean:.1f} dB | {worst:.1f} dB | {per_step:.3f} | {params:,} |")


if __name__ == "__main__":
    main()
