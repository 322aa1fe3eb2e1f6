"""The pictures and the table of a weight sweep: a labelled image grid, the trade-off plot, metrics.csv.

Drawn with Pillow alone (no matplotlib) so the library, the CLI and the app need nothing more
to show a sweep. The grid answers "what does each weight draw for each prompt?"; the plot
answers "which weight keeps the shape without losing the edit?".
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import InputError

BACKGROUND = (255, 255, 255)
TEXT_COLOR = (25, 25, 25)
EMPTY_CELL = (230, 230, 230)
GRID_COLOR = (235, 235, 235)
AXIS_COLOR = (60, 60, 60)
LINE_COLOR = (185, 185, 185)
MARKER_COLOR = (31, 119, 180)

METRICS_COLUMNS = ("weight", "prompt", "seed", "image", "mask_iou", "clip_t", "clip_i")
_FLOAT_COLUMNS = ("weight", "mask_iou", "clip_t", "clip_i")
_INT_COLUMNS = ("seed",)

X_TITLE = "CLIP-T (editability)"
Y_TITLE = "Mask-IoU (shape fidelity)"


def load_font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at `size` pixels (a fixed small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        return ImageFont.load_default()


# --- the image grid ----------------------------------------------------------------------------


def image_grid(rows: Sequence[Sequence[Image.Image | None]], row_labels: Sequence[str], col_labels: Sequence[str],
               cell: int = 256) -> Image.Image:
    """A contact sheet: one row per `rows` entry, labelled on the left and on top.

    Each image is fitted into a `cell` x `cell` square (aspect kept, centred); `None` leaves a grey
    cell, so a failed generation does not shift the others. Labels wrap to fit.
    """
    n_cols = max((len(row) for row in rows), default=0)
    if len(row_labels) != len(rows):
        raise ValueError(f"image_grid got {len(rows)} rows but {len(row_labels)} row labels; give one label per row.")
    if len(col_labels) != n_cols:
        raise ValueError(f"image_grid got {n_cols} columns but {len(col_labels)} column labels; "
                         "give one label per column.")
    if cell < 16:
        raise ValueError(f"cell must be at least 16 pixels; got {cell}.")
    font = load_font(max(12, cell // 12))
    pad = max(4, cell // 32)
    line_height = _line_height(font)

    row_lines = [_wrap(str(label), font, cell) for label in row_labels]
    col_lines = [_wrap(str(label), font, cell) for label in col_labels]
    widest = max((font.getlength(line) for lines in row_lines for line in lines), default=0)
    label_width = math.ceil(widest) + 2 * pad if widest else 0
    header_height = max((len(lines) for lines in col_lines), default=0) * line_height
    header_height += 2 * pad if header_height else 0

    width = label_width + n_cols * (cell + pad) + pad
    height = header_height + len(rows) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for c, lines in enumerate(col_lines):
        x = label_width + pad + c * (cell + pad) + cell / 2
        top = header_height - pad - len(lines) * line_height
        _draw_lines(draw, lines, font, x, top, line_height, anchor="center")
    for r, row in enumerate(rows):
        y = header_height + pad + r * (cell + pad)
        lines = row_lines[r]
        _draw_lines(draw, lines, font, label_width - pad, y + (cell - len(lines) * line_height) / 2, line_height,
                    anchor="right")
        for c in range(n_cols):
            x = label_width + pad + c * (cell + pad)
            image = row[c] if c < len(row) else None
            sheet.paste(_fit(image, cell), (x, y))
    return sheet


def _fit(image: Image.Image | None, cell: int) -> Image.Image:
    """The image inside a cell-sized square: aspect kept, transparency flattened onto white."""
    square = Image.new("RGB", (cell, cell), EMPTY_CELL)
    if image is None:
        return square
    if "A" in image.getbands():
        flat = Image.new("RGB", image.size, BACKGROUND)
        flat.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        image = flat
    fitted = ImageOps.contain(image.convert("RGB"), (cell, cell), Image.Resampling.LANCZOS)
    square.paste(fitted, ((cell - fitted.width) // 2, (cell - fitted.height) // 2))
    return square


def _wrap(text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy word wrap to `width` pixels; a word longer than a line is broken between characters."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        current = ""
        for word in paragraph.split():
            candidate = f"{current} {word}" if current else word
            if font.getlength(candidate) <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            current = ""
            for char in word:
                if current and font.getlength(current + char) > width:
                    lines.append(current)
                    current = ""
                current += char
        lines.append(current)
    return lines


def _line_height(font: ImageFont.ImageFont) -> int:
    box = font.getbbox("Hgjy")
    return int(box[3] - min(box[1], 0)) + 4


def _draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], font, x: float, top: float, line_height: int,
                anchor: str) -> None:
    """Draw lines from `top` down; `x` is the centre (anchor='center'), right or left edge."""
    for i, line in enumerate(lines):
        if anchor == "center":
            left = x - font.getlength(line) / 2
        elif anchor == "right":
            left = x - font.getlength(line)
        else:
            left = x
        draw.text((left, top + i * line_height), line, fill=TEXT_COLOR, font=font)


# --- the trade-off plot ------------------------------------------------------------------------


def tradeoff_plot(points: Sequence[tuple[str, float | None, float | None]], title: str | None = None,
                  size: tuple[int, int] = (720, 540), axes: tuple[str, str] | None = None,
                  connect: bool = True, errors: Sequence[float | None] | None = None) -> Image.Image:
    """Mean Mask-IoU against mean CLIP-T, one labelled point per weight (`(label, clip_t, mask_iou)`).

    `errors`: one standard error of each point's y (or None), drawn as a bar of +-1 SE and counted in the range.

    Without CLIP-T for every point (no CLIP model), Mask-IoU is plotted against the weights in the
    given order instead, and the title says so. Points without Mask-IoU are listed under the plot.
    """
    points = [(str(label), x, y) for label, x, y in points]
    by_weight = any(x is None for _, x, _ in points)
    if by_weight:
        placed = [(label, float(i), y) for i, (label, _, y) in enumerate(points)]
        title = title or "Mask-IoU by mask weight (CLIP-T not available)"
    else:
        placed = [(label, float(x), y) for label, x, y in points]
        title = title or "Shape fidelity vs. editability"
    shown = [(label, x, float(y)) for label, x, y in placed if y is not None and math.isfinite(float(y))]
    missing = [label for label, _, y in placed if y is None or not math.isfinite(float(y))]

    width, height = size
    font = load_font(max(12, height // 34))
    small = load_font(max(11, height // 42))
    text_h = _line_height(font)
    left, right = 3 * text_h + int(small.getlength("0.000")), width - 2 * text_h
    top, bottom = 2 * text_h + 10, height - 3 * text_h - (text_h if missing else 0)
    plot = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(plot)
    _draw_lines(draw, [title], font, width / 2, 8, text_h, anchor="center")

    spread = {label: float(error) for (label, _, _), error in zip(points, errors or []) if error is not None}
    x_range = (-0.5, len(points) - 0.5) if by_weight else _padded_range([x for _, x, _ in shown])
    y_range = _padded_range([y + sign * spread.get(label, 0.0) for label, _, y in shown for sign in (-1, 1)])

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x_range[0]) / (x_range[1] - x_range[0]) * (right - left)
        py = bottom - (y - y_range[0]) / (y_range[1] - y_range[0]) * (bottom - top)
        return px, py

    x_ticks = [(float(i), label) for i, (label, _, _) in enumerate(points)] if by_weight else _ticks(x_range)
    for value, text in x_ticks:
        px, _ = to_pixel(value, y_range[0])
        draw.line([(px, top), (px, bottom)], fill=GRID_COLOR)
        draw.line([(px, bottom), (px, bottom + 5)], fill=AXIS_COLOR)
        _draw_lines(draw, [text], small, px, bottom + 8, text_h, anchor="center")
    for value, text in _ticks(y_range):
        _, py = to_pixel(x_range[0], value)
        draw.line([(left, py), (right, py)], fill=GRID_COLOR)
        draw.line([(left - 5, py), (left, py)], fill=AXIS_COLOR)
        _draw_lines(draw, [text], small, left - 8, py - text_h / 2, text_h, anchor="right")
    draw.line([(left, top), (left, bottom), (right, bottom)], fill=AXIS_COLOR, width=2)
    x_title, y_title = axes or (X_TITLE, Y_TITLE)
    x_title = "mask weight" if by_weight else x_title
    _draw_lines(draw, [x_title], font, (left + right) / 2, bottom + 8 + text_h, text_h, anchor="center")
    _paste_vertical_text(plot, y_title, font, center=(text_h // 2 + 4, (top + bottom) / 2))
    if missing:
        _draw_lines(draw, ["no Mask-IoU: " + ", ".join(missing)], small, left, height - text_h - 4, text_h,
                    anchor="left")

    pixels = [(label, *to_pixel(x, y)) for label, x, y in shown]
    if connect and len(pixels) > 1:  # the points of a sweep, in weight order; unrelated settings stay apart
        draw.line([(px, py) for _, px, py in pixels], fill=LINE_COLOR, width=2)
    radius = max(4, height // 90)
    for (label, x, y), (_, px, _) in zip(shown, pixels):
        if label in spread:
            (_, low), (_, high) = to_pixel(x, y - spread[label]), to_pixel(x, y + spread[label])
            draw.line([(px, low), (px, high)], fill=LINE_COLOR, width=2)
            draw.line([(px - radius, low), (px + radius, low)], fill=LINE_COLOR, width=2)
            draw.line([(px - radius, high), (px + radius, high)], fill=LINE_COLOR, width=2)
    for _, px, py in pixels:
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=MARKER_COLOR)
    for label, px, py in pixels:
        label_x = px + radius + 4
        if label_x + small.getlength(label) > width - 4:
            label_x = px - radius - 4 - small.getlength(label)
        draw.text((label_x, py - radius - text_h + 2), label, fill=TEXT_COLOR, font=small)
    return plot


def _padded_range(values: list[float]) -> tuple[float, float]:
    """The data range with 10% room on each side, at least +-0.02 (scores this close differ by noise, and
    finer ticks would need six decimals); a fixed +-0.05 around a single value."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    room = max((high - low) * 0.1, 0.02) if high > low else 0.05
    return low - room, high + room


def _ticks(value_range: tuple[float, float], target: int = 5) -> list[tuple[float, str]]:
    """Round-numbered ticks (steps of 1, 2 or 5 x 10^k) inside the range, about `target` of them, with labels."""
    low, high = value_range
    exponent = math.floor(math.log10((high - low) / target))
    steps = [m * 10.0 ** e for e in range(exponent + 1, exponent - 2, -1) for m in (5, 2, 1)]
    for step in steps:  # the coarsest round step that gives at least target - 1 ticks
        first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
        if last - first + 1 >= target - 1:
            break
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [(k * step, f"{k * step:.{decimals}f}") for k in range(first, last + 1)]


def _paste_vertical_text(image: Image.Image, text: str, font, center: tuple[float, float]) -> None:
    """Text rotated 90 degrees (reading bottom-up), centred at `center`: the y-axis title."""
    box = font.getbbox(text)
    label = Image.new("RGB", (int(box[2]) + 4, _line_height(font)), BACKGROUND)
    ImageDraw.Draw(label).text((2, 0), text, fill=TEXT_COLOR, font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (int(center[0] - label.width / 2), int(center[1] - label.height / 2)))


# --- metrics.csv -------------------------------------------------------------------------------


def write_metrics_csv(path: str | Path, rows: Sequence[dict]) -> None:
    """Write `metrics.csv` (columns `METRICS_COLUMNS`); None and NaN become empty cells. Floats are exact."""
    unknown = sorted({key for row in rows for key in row} - set(METRICS_COLUMNS))
    if unknown:
        raise ValueError(f"metrics rows have unknown columns {unknown}; the columns are {list(METRICS_COLUMNS)}.")
    path = Path(path)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: _cell(row.get(column)) for column in METRICS_COLUMNS})
    os.replace(partial, path)  # readers (the app) never see half a file


def read_metrics_csv(path: str | Path) -> list[dict]:
    """Read `metrics.csv` back: floats and int seeds typed, empty cells as None."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Metrics file not found: {path}. Run `shapeinv sweep` first, or check the folder.")
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [column for column in METRICS_COLUMNS if column not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path} is not a shapeinv metrics.csv: columns {missing} are missing. "
                             "Re-run the sweep to write it again.")
        return [{column: _parse(column, row[column]) for column in reader.fieldnames} for row in reader]


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "item"):  # numpy and torch scalars -> Python numbers
        value = value.item()
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return str(value)


def _parse(column: str, text: str | None):
    if text is None or text == "":
        return None
    if column in _FLOAT_COLUMNS:
        return float(text)
    if column in _INT_COLUMNS:
        return int(text)
    return text
