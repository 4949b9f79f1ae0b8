"""Small plots as ComfyUI IMAGEs, drawn with Pillow: loss and gradient norm per step, and a corrector's fit."""
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..distill import History

WIDTH, PANEL, HEAT, MARGIN = 512, 160, 260, 28


def _panel(draw: ImageDraw.ImageDraw, top: int, values: list[float], title: str, color: tuple[int, int, int]):
    logs = [math.log10(v) if v > 0 else float("nan") for v in values]
    finite = [v for v in logs if math.isfinite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    box = (MARGIN, top + MARGIN, WIDTH - 8, top + PANEL - 8)
    draw.rectangle(box, outline=(90, 90, 90))
    draw.text((MARGIN, top + 8), f"{title}  (log10, {lo:.2f} to {hi:.2f})", fill=(220, 220, 220))
    n = max(len(values) - 1, 1)
    points = [(box[0] + (box[2] - box[0]) * i / n, box[3] - (box[3] - box[1]) * (v - lo) / (hi - lo))
              for i, v in enumerate(logs) if math.isfinite(v)]
    if len(points) > 1:
        draw.line(points, fill=color, width=2)
    elif points:
        draw.ellipse([points[0][0] - 2, points[0][1] - 2, points[0][0] + 2, points[0][1] + 2], fill=color)


def _heat_map(draw: ImageDraw.ImageDraw, top: int, values: torch.Tensor, title: str,
              t_range: tuple[float, float]) -> None:
    """values [bands, t_bins] as colours on a log10 scale: t left to right, frequency band bottom to top."""
    logs = np.log10(values.double().clamp_min(1e-12).numpy()[::-1])
    finite = logs[np.isfinite(values.numpy()[::-1])]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    box = (MARGIN + 28, top + MARGIN, WIDTH - 64, top + HEAT - 24)
    draw.text((MARGIN, top + 8), title, fill=(220, 220, 220))
    rows, cols = logs.shape
    for r in range(rows):
        for c in range(cols):
            x0, x1 = (box[0] + (box[2] - box[0]) * k // cols for k in (c, c + 1))
            y0, y1 = (box[1] + (box[3] - box[1]) * k // rows for k in (r, r + 1))
            known = np.isfinite(values.numpy()[::-1][r, c])
            draw.rectangle((x0, y0, x1, y1), fill=_colour((logs[r, c] - lo) / (hi - lo)) if known else (60, 60, 60))
    draw.rectangle(box, outline=(90, 90, 90))
    draw.text((box[0], box[3] + 4), f"t {t_range[0]:g}", fill=(200, 200, 200))
    draw.text((box[2] - 40, box[3] + 4), f"t {t_range[1]:g}", fill=(200, 200, 200))
    draw.text((MARGIN - 20, box[1]), "high f", fill=(200, 200, 200))
    draw.text((MARGIN - 20, box[3] - 12), "low f", fill=(200, 200, 200))
    bar = (WIDTH - 52, box[1], WIDTH - 40, box[3])
    for y in range(bar[1], bar[3]):
        draw.line((bar[0], y, bar[2], y), fill=_colour(1 - (y - bar[1]) / max(bar[3] - bar[1] - 1, 1)))
    draw.text((bar[0] - 4, bar[1] - 14), f"{10 ** hi:.0e}", fill=(200, 200, 200))
    draw.text((bar[0] - 4, bar[3] + 4), f"{10 ** lo:.0e}", fill=(200, 200, 200))


VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


def _colour(x: float) -> tuple[int, int, int]:
    x = min(max(x, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(x), len(VIRIDIS) - 2)
    return tuple(int(v) for v in VIRIDIS[i] + (VIRIDIS[i + 1] - VIRIDIS[i]) * (x - i))


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def _image(panels: list[tuple[list[float], str, tuple[int, int, int]]]) -> torch.Tensor:
    img = Image.new("RGB", (WIDTH, len(panels) * PANEL), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for i, (values, title, color) in enumerate(panels):
        _panel(draw, i * PANEL, values, title, color)
    return _to_tensor(img)


def history_image(history: History) -> torch.Tensor:
    """IMAGE [1, H, W, 3] in 0..1: the loss proxy ½‖g‖²/B and the gradient norm per step."""
    return _image([(history.loss, "loss proxy 0.5*|g|^2/B per step", (255, 170, 60)),
                   (history.grad_norm, "gradient norm |g| per step", (90, 180, 255))])


def fit_image(residual: torch.Tensor, losses: list[float], t_range: tuple[float, float]) -> torch.Tensor:
    """IMAGE [1, H, W, 3] in 0..1 of how well a corrector fits its training triplets: the relative residual
    per frequency band and t (fit_residual), under the training loss L_k per step when it was trained."""
    img = Image.new("RGB", (WIDTH, HEAT + (PANEL if losses else 0)), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    mean = residual[torch.isfinite(residual)].mean().item() if torch.isfinite(residual).any() else float("nan")
    _heat_map(draw, 0, residual, f"relative residual |b - z_hat|^2/|z_hat|^2 per band and t (mean {mean:.2g})",
              t_range)
    if losses:
        _panel(draw, HEAT, losses, "L_k per training step", (255, 170, 60))
    return _to_tensor(img)
