"""Pictures that show what the optimisation is doing: the attention map beside the mask."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont


def heatmap(values: np.ndarray) -> np.ndarray:
    """[h, w] values in [0, 1] -> [h, w, 3] uint8, dark blue -> yellow (a readable colour ramp)."""
    values = np.clip(values, 0.0, 1.0)[..., None]
    low, mid, high = np.array([20, 20, 80]), np.array([200, 40, 90]), np.array([255, 230, 60])
    colours = np.where(values < 0.5, low + (mid - low) * values * 2, mid + (high - mid) * (values - 0.5) * 2)
    return colours.astype(np.uint8)


def attention_figure(attention: torch.Tensor, mask: Image.Image, size: int = 256) -> Image.Image:
    """The `*s` attention map (scaled to its max) beside the mask it is pulled toward, labelled."""
    values = attention.detach().float().cpu().numpy()
    peak = float(values.max())
    scaled = values / peak if peak > 0 else values
    left = Image.fromarray(heatmap(scaled)).resize((size, size), Image.Resampling.NEAREST)
    right = mask.convert("L").resize((size, size), Image.Resampling.BILINEAR).convert("RGB")
    label_height = 22
    figure = Image.new("RGB", (2 * size + 8, size + label_height), "white")
    figure.paste(left, (0, label_height))
    figure.paste(right, (size + 8, label_height))
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default(size=14)
    draw.text((4, 3), f"attention of *s (max {peak:.3f})", fill="black", font=font)
    draw.text((size + 12, 3), "object mask", fill="black", font=font)
    return figure
