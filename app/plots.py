"""The loss plot of a running job from the run's log.jsonl: as data for the page's charts, and as a
picture drawn with Pillow for API clients (`job_status` returns it, as it always has).

Two panels, each with its own scale, because the terms differ by an order of magnitude: the
denoising loss (the whole image) above, the mask loss (attention map vs. mask) below. Each panel
shows the raw loss faintly and a smoothed curve over it (the raw loss of one random timestep per
step is noisy), on an axis at least a fifth of the loss's size tall, so noise does not look like swings.
"""

from __future__ import annotations

import pandas as pd
from PIL import Image, ImageDraw

from shapeinv_core.evaluation.report import AXIS_COLOR, BACKGROUND, GRID_COLOR, TEXT_COLOR, load_font

PANELS = (("diffusion_loss", "denoising loss", (31, 119, 180)), ("mask_loss", "mask loss", (214, 39, 40)))
# The page's charts in the picture's colours: each term's raw loss faint, its smoothed curve strong.
DENOISING_COLOURS = {"raw": "#a5c8e1", "smoothed": "#1f77b4"}
MASK_COLOURS = {"raw": "#f3bebe", "smoothed": "#d62728"}
MIN_SPAN = 0.2  # the axis spans at least this fraction of the largest value shown


def smoothed(values: list[float], span: int | None = None) -> list[float]:
    """Exponential moving average with a span of about a tenth of the run (at least 1: no smoothing)."""
    span = span or max(1, len(values) // 10)
    alpha = 2 / (span + 1)
    out, level = [], None
    for value in values:
        level = value if level is None else alpha * value + (1 - alpha) * level
        out.append(level)
    return out


def axis_range(values: list[float]) -> tuple[float, float]:
    """low, high for a panel: the data with a little room, widened to `MIN_SPAN` x the top value (not below 0)."""
    low, high = min(values), max(values)
    need = MIN_SPAN * max(abs(high), abs(low), 1e-12)
    if high - low < need:
        middle = (high + low) / 2
        low, high = middle - need / 2, middle + need / 2
        if low < 0 <= min(values):
            low, high = 0.0, need
    room = (high - low) * 0.05
    return low - room, high + room


def _faint(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    return tuple(round(c + (255 - c) * 0.7) for c in colour)


def loss_plot(records: list[dict], width: int = 520, height: int = 300) -> Image.Image:
    """A picture of the loss terms per step; an empty frame with a note before the first step."""
    plot = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(plot)
    font = load_font(12)
    if not records:
        draw.text((12, height // 2 - 6), "the loss plot appears after the first step", fill=TEXT_COLOR, font=font)
        return plot
    left, right, top, gap = 58, 10, 6, 26
    panel_height = (height - top - gap * len(PANELS)) // len(PANELS)
    steps = [record["step"] for record in records]
    first, last = min(steps), max(max(steps), min(steps) + 1)
    for index, (key, title, colour) in enumerate(PANELS):
        y0 = top + index * (panel_height + gap) + 14
        y1 = y0 + panel_height - 14
        values = [float(record[key]) for record in records]
        smooth = smoothed(values)
        low, high = axis_range(values)
        draw.text((left, y0 - 14), f"{title}: {smooth[-1]:.4f} (smoothed; raw faint)", fill=colour, font=font)
        draw.rectangle((left, y0, width - right, y1), outline=AXIS_COLOR)
        for fraction in (0.25, 0.5, 0.75):
            y = y1 - fraction * (y1 - y0)
            draw.line((left + 1, y, width - right - 1, y), fill=GRID_COLOR)
        for fraction in (0.0, 0.5, 1.0):
            label = f"{low + fraction * (high - low):.3g}"
            draw.text((4, y1 - fraction * (y1 - y0) - 6), label, fill=TEXT_COLOR, font=font)

        def point(step: int, value: float, y0=y0, y1=y1, low=low, high=high) -> tuple[float, float]:
            x = left + (step - first) / (last - first) * (width - right - left)
            return x, y1 - (value - low) / (high - low) * (y1 - y0)

        if len(values) == 1:
            x, y = point(steps[0], values[0])
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
            continue
        draw.line([point(step, value) for step, value in zip(steps, values)], fill=_faint(colour), width=1)
        draw.line([point(step, value) for step, value in zip(steps, smooth)], fill=colour, width=2)
    draw.text((left, height - 16), f"step {first}", fill=TEXT_COLOR, font=font)
    label = f"step {max(steps)}"
    draw.text((width - right - draw.textlength(label, font=font), height - 16), label, fill=TEXT_COLOR, font=font)
    return plot


def loss_frames(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The page's two loss charts (gr.LinePlot), one per term, each on its own scale as in `loss_plot`:
    columns step, loss and curve ("raw" or "smoothed"); empty frames before the first step."""
    steps = [int(record["step"]) for record in records]
    frames = []
    for key, _, _ in PANELS:
        values = [float(record[key]) for record in records]
        frames.append(pd.DataFrame({"step": steps * 2, "loss": values + smoothed(values),
                                    "curve": ["raw"] * len(values) + ["smoothed"] * len(values)}))
    return frames[0], frames[1]


def tradeoff_frame(points: list[tuple[str, float | None, float | None]]) -> pd.DataFrame:
    """The sweep's trade-off chart (gr.ScatterPlot) from `sweep.tradeoff_points`: one row per weight with its
    mean CLIP-T (empty when it was not measured) and Mask-IoU."""
    return pd.DataFrame(points, columns=["weight", "clip_t", "mask_iou"]).astype({"clip_t": float, "mask_iou": float})
