"""A small loss / gradient-norm plot as a ComfyUI IMAGE, drawn with Pillow."""
import math

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..distill import History

WIDTH, PANEL, MARGIN = 512, 160, 28


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


def _image(panels: list[tuple[list[float], str, tuple[int, int, int]]]) -> torch.Tensor:
    img = Image.new("RGB", (WIDTH, len(panels) * PANEL), (24, 24, 24))
    draw = ImageDraw.Draw(img)
    for i, (values, title, color) in enumerate(panels):
        _panel(draw, i * PANEL, values, title, color)
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)[None]


def history_image(history: History) -> torch.Tensor:
    """IMAGE [1, H, W, 3] in 0..1: the loss proxy ½‖g‖²/B and the gradient norm per step."""
    return _image([(history.loss, "loss proxy 0.5*|g|^2/B per step", (255, 170, 60)),
                   (history.grad_norm, "gradient norm |g| per step", (90, 180, 255))])


def curve_image(values: list[float], title: str) -> torch.Tensor:
    """IMAGE [1, H, W, 3] of one curve (log scale); empty when there are no values."""
    return _image([(values, title, (255, 170, 60))])
