"""The loss plot of a running job, drawn with Pillow from the run's log.jsonl.

Two panels, each with its own scale, because the terms differ by an order of magnitude: the
denoising loss (the whole image) above, the mask loss (attention map vs. mask) below.
"""

from __future__ import annotations

from PIL import Image, ImageDraw

from shapeinv_core.report import AXIS_COLOR, BACKGROUND, GRID_COLOR, TEXT_COLOR, load_font

PANELS = (("diffusion_loss", "denoising loss", (31, 119, 180)), ("mask_loss", "mask loss", (214, 39, 40)))


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
        low, high = min(values), max(values)
        if high - low < 1e-12:
            low, high = low - 0.5 * abs(low or 1) * 0.1, high + 0.5 * abs(high or 1) * 0.1
        draw.text((left, y0 - 14), f"{title}: {values[-1]:.4f}", fill=colour, font=font)
        draw.rectangle((left, y0, width - right, y1), outline=AXIS_COLOR)
        for fraction in (0.25, 0.5, 0.75):
            y = y1 - fraction * (y1 - y0)
            draw.line((left + 1, y, width - right - 1, y), fill=GRID_COLOR)
        draw.text((4, y0 - 2), f"{high:.3g}", fill=TEXT_COLOR, font=font)
        draw.text((4, y1 - 12), f"{low:.3g}", fill=TEXT_COLOR, font=font)

        def point(step: int, value: float, y0=y0, y1=y1, low=low, high=high) -> tuple[float, float]:
            x = left + (step - first) / (last - first) * (width - right - left)
            return x, y1 - (value - low) / (high - low) * (y1 - y0)

        points = [point(step, value) for step, value in zip(steps, values)]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        else:
            draw.line(points, fill=colour, width=2)
    draw.text((left, height - 16), f"step {first}", fill=TEXT_COLOR, font=font)
    label = f"step {max(steps)}"
    draw.text((width - right - draw.textlength(label, font=font), height - 16), label, fill=TEXT_COLOR, font=font)
    return plot
