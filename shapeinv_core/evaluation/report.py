"""The pictures and the table of a weight sweep: a labelled image grid, the trade-off plot, metrics.csv.

The grid is a small Pillow contact sheet (labels that wrap, grey cells for missing images); the plot
is drawn with matplotlib's Agg canvas, imported only when a plot is drawn so that importing the
library stays light. The grid answers "what does each weight draw for each prompt?"; the plot
answers "which weight keeps the shape without losing the edit?".
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import InputError

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
    """Mean Mask-IoU against mean CLIP-T, one labelled point per weight (`(label, clip_t, mask_iou)`), as an image.

    `errors`: one standard error of each point's y (or None), drawn as a bar of +-1 SE and counted in the range.
    `axes`: the x and y titles; `connect`: a line through the points in the given order (a sweep's weights).

    Without CLIP-T for every point (no CLIP model), Mask-IoU is plotted against the weights in the
    given order instead, and the title says so. Points without Mask-IoU are listed under the plot.
    Drawn with matplotlib's Agg canvas (no GUI, no pyplot state), imported here so importing the
    library stays light.
    """
    canvas = _tradeoff_figure(points, title, size, axes, connect, errors).canvas  # matplotlib's Agg canvas
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    return image if image.size == tuple(size) else image.resize(size, Image.Resampling.LANCZOS)


def _tradeoff_figure(points: Sequence[tuple[str, float | None, float | None]], title: str | None,
                     size: tuple[int, int], axes: tuple[str, str] | None, connect: bool,
                     errors: Sequence[float | None] | None):
    """The matplotlib Figure `tradeoff_plot` rasterises; its artists carry gids (points, connect, errors, missing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = [(str(label), x, y) for label, x, y in points]
    spread = [None if error is None else float(error) for error in (errors or [])]
    spread += [None] * (len(points) - len(spread))
    by_weight = any(x is None for _, x, _ in points)
    if by_weight:
        placed = [(label, float(i), y, e) for i, ((label, _, y), e) in enumerate(zip(points, spread))]
        title = title or "Mask-IoU by mask weight (CLIP-T not available)"
    else:
        placed = [(label, float(x), y, e) for (label, x, y), e in zip(points, spread)]
        title = title or "Shape fidelity vs. editability"
    shown = [(label, x, float(y), e) for label, x, y, e in placed if y is not None and math.isfinite(float(y))]
    missing = [label for label, _, y, _ in placed if y is None or not math.isfinite(float(y))]

    width, height = size
    dpi = 100 * height / 540  # text and markers grow with the picture, as at the default 720 x 540 at 100 dpi
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=_rgb(BACKGROUND))
    FigureCanvasAgg(figure)  # rasterises without a GUI; the layout below measures text with its renderer
    ax = figure.add_subplot()
    x_range = (-0.5, len(points) - 0.5) if by_weight else _padded_range([x for _, x, _, _ in shown])
    y_range = _padded_range([y + sign * (e or 0.0) for _, _, y, e in shown for sign in (-1, 1)])
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    x_ticks = [(float(i), label) for i, (label, _, _) in enumerate(points)] if by_weight else _ticks(x_range)
    ax.set_xticks([value for value, _ in x_ticks], [text for _, text in x_ticks])
    y_ticks = _ticks(y_range)
    ax.set_yticks([value for value, _ in y_ticks], [text for _, text in y_ticks])
    ax.grid(True, color=_rgb(GRID_COLOR), linewidth=0.8)
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines[["left", "bottom"]].set_color(_rgb(AXIS_COLOR))
    ax.tick_params(colors=_rgb(AXIS_COLOR), labelcolor=_rgb(TEXT_COLOR))
    x_title, y_title = axes or (X_TITLE, Y_TITLE)
    figure.suptitle(title, color=_rgb(TEXT_COLOR), fontsize="large", wrap=True)  # centred on the picture
    ax.set_xlabel("mask weight" if by_weight else x_title, color=_rgb(TEXT_COLOR))
    ax.set_ylabel(y_title, color=_rgb(TEXT_COLOR))

    xs, ys = [x for _, x, _, _ in shown], [y for _, _, y, _ in shown]
    if connect and len(shown) > 1:  # the points of a sweep, in weight order; unrelated settings stay apart
        ax.plot(xs, ys, color=_rgb(LINE_COLOR), linewidth=2, zorder=1, gid="connect")
    barred = [(x, y, e) for _, x, y, e in shown if e is not None]
    if barred:
        bars = ax.errorbar([x for x, _, _ in barred], [y for _, y, _ in barred], yerr=[e for _, _, e in barred],
                           fmt="none", ecolor=_rgb(LINE_COLOR), elinewidth=2, capsize=5, capthick=2, zorder=2)
        bars.lines[2][0].set_gid("errors")  # the vertical bars: one segment per point, y - SE to y + SE
    ax.plot(xs, ys, linestyle="none", marker="o", markersize=9, color=_rgb(MARKER_COLOR), zorder=3, gid="points")
    for label, x, y, _ in shown:  # up and to the right; to the left near the right edge, so the label stays inside
        left = (x - x_range[0]) / (x_range[1] - x_range[0]) > 0.8
        ax.annotate(label, (x, y), xytext=(-7 if left else 7, 7), textcoords="offset points",
                    ha="right" if left else "left", va="bottom", fontsize="small", color=_rgb(TEXT_COLOR),
                    zorder=4)
    note = None
    if missing:  # under the plot, in line with the y axis
        note = figure.text(0.01, 0.015, ("no Mask-IoU: " if axes is None else "no value: ") + ", ".join(missing),
                           ha="left", va="bottom", fontsize="small", color=_rgb(TEXT_COLOR), gid="missing", wrap=True)
    figure.tight_layout(rect=(0, 0.06 if note else 0, 1, 1))
    if note:
        note.set_x(ax.get_position().x0)
    return figure


def _rgb(color: tuple[int, int, int]) -> tuple[float, float, float]:
    """A Pillow 0-255 colour as matplotlib's 0-1 triple (the same colours as the grid and the app's loss plot)."""
    return tuple(channel / 255 for channel in color)


def _padded_range(values: list[float]) -> tuple[float, float]:
    """The data range with 10% room on each side, at least +-0.02 (scores this close differ by noise, and
    finer ticks would need six decimals); a fixed +-0.05 around a single value."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    room = max((high - low) * 0.1, 0.02) if high > low else 0.05
    return low - room, high + room


def _ticks(value_range: tuple[float, float], target: int = 5) -> list[tuple[float, str]]:
    """About `target` round-numbered ticks inside the range (matplotlib's MaxNLocator: steps of 1, 2 or 5 x 10^k),
    each labelled with as many decimals as the step needs."""
    from matplotlib.ticker import MaxNLocator

    low, high = value_range
    values = [float(v) for v in MaxNLocator(nbins=target + 1, steps=[1, 2, 5, 10], min_n_ticks=target - 1)
              .tick_values(low, high)]
    step = values[1] - values[0]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    inside = [round(v, decimals) for v in values if low - step * 1e-6 <= v <= high + step * 1e-6]
    return [(v, f"{v:.{decimals}f}") for v in inside]


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
