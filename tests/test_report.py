"""The sweep's pictures and table: grid geometry and labels, one plotted point per weight, metrics.csv round-trip."""

import math

import numpy as np
import pytest
from PIL import Image

from shapeinv_core.errors import InputError
from shapeinv_core.report import (
    EMPTY_CELL,
    MARKER_COLOR,
    METRICS_COLUMNS,
    image_grid,
    read_metrics_csv,
    tradeoff_plot,
    write_metrics_csv,
)

COLORS = [[(250, 0, 0), (0, 250, 0), (0, 0, 250)], [(250, 250, 0), (0, 250, 250), (250, 0, 250)]]


def boxes_of(image, color):
    """Bounding box (left, top, right, bottom) of the pixels that have exactly `color`, or None."""
    hits = np.all(np.asarray(image) == color, axis=-1)
    if not hits.any():
        return None
    ys, xs = np.nonzero(hits)
    return xs.min(), ys.min(), xs.max() + 1, ys.max() + 1


def dark(region):
    return (np.asarray(region).sum(axis=-1) < 200).sum()


# --- the grid --------------------------------------------------------------------------------------


def test_grid_places_each_image_in_its_cell():
    rows = [[Image.new("RGB", (96, 96), color) for color in row] for row in COLORS]
    grid = image_grid(rows, ["w=0", "w=0.1"], ["a photo of chair", "a leopard-print chair", "a red chair"], cell=64)
    boxes = [[boxes_of(grid, color) for color in row] for row in COLORS]
    for r, row in enumerate(boxes):
        for c, (left, top, right, bottom) in enumerate(row):
            assert (right - left, bottom - top) == (64, 64)  # each image fills exactly one cell
            assert left == boxes[0][c][0] and top == row[0][1]  # columns and rows line up
            if c:
                assert left >= row[c - 1][2]  # left to right in the given order
        if r:
            assert row[0][1] >= boxes[r - 1][0][3]  # top to bottom in the given order
    assert grid.width > 3 * 64 and grid.height > 2 * 64


def test_grid_draws_labels_beside_rows_and_above_columns():
    rows = [[Image.new("RGB", (64, 64), color) for color in row] for row in COLORS]
    grid = image_grid(rows, ["w=0", "w=0.1"], ["chair", "leopard-print chair", "red"], cell=64)
    first_cell = boxes_of(grid, COLORS[0][0])
    for row in COLORS:  # text left of every row, at the row's height
        left, top, _, bottom = boxes_of(grid, row[0])
        assert dark(grid.crop((0, top, left, bottom))) > 10
    for color in COLORS[0]:  # text above every column, over the column
        left, top, right, _ = boxes_of(grid, color)
        assert dark(grid.crop((left, 0, right, top))) > 10
    assert dark(grid.crop((0, 0, first_cell[0], first_cell[1]))) == 0  # the corner stays blank
    relabelled = image_grid(rows, ["w=0.5", "w=1.0"], ["chair", "leopard-print chair", "red"], cell=64)
    assert grid.size == relabelled.size and grid.tobytes() != relabelled.tobytes()


def test_grid_keeps_aspect_and_leaves_missing_cells_grey():
    wide = Image.new("RGB", (128, 64), (250, 0, 0))
    grid = image_grid([[wide, None]], ["w=0"], ["a", "b"], cell=64)
    left, top, right, bottom = boxes_of(grid, (250, 0, 0))
    assert (right - left, bottom - top) == (64, 32)  # fitted, not stretched
    band = boxes_of(grid, EMPTY_CELL)
    assert band is not None and band[2] - band[0] >= 64 + 64  # letterbox of cell 1 and the whole empty cell 2


def test_grid_needs_one_label_per_row_and_column():
    cells = [[Image.new("RGB", (8, 8))] * 2]
    with pytest.raises(ValueError, match="row labels"):
        image_grid(cells, [], ["a", "b"])
    with pytest.raises(ValueError, match="column labels"):
        image_grid(cells, ["w=0"], ["a"])


# --- the trade-off plot ------------------------------------------------------------------------------


def marker_centres(image):
    """Centroids of the connected blobs of marker colour, left to right."""
    hits = np.all(np.asarray(image) == MARKER_COLOR, axis=-1)
    todo = set(zip(*np.nonzero(hits)))
    centres = []
    while todo:
        stack, blob = [todo.pop()], []
        while stack:
            y, x = stack.pop()
            blob.append((y, x))
            for step in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if step in todo:
                    todo.remove(step)
                    stack.append(step)
        ys, xs = zip(*blob)
        centres.append((sum(xs) / len(xs), sum(ys) / len(ys)))
    return sorted(centres)


def assert_linear(pixels, values, flip=False):
    """Pixel positions are an increasing (or, for y, decreasing) linear function of the values."""
    scale = (pixels[-1] - pixels[0]) / (values[-1] - values[0])
    assert (scale < 0) if flip else (scale > 0)
    for pixel, value in zip(pixels, values):
        assert pixel == pytest.approx(pixels[0] + scale * (value - values[0]), abs=1.0)


def test_tradeoff_plot_draws_one_point_per_weight_where_it_belongs():
    points = [("0", 0.352, 0.56), ("0.1", 0.360, 0.646), ("0.5", 0.330, 0.70), ("1.0", 0.300, 0.74)]
    plot = tradeoff_plot(points)
    centres = marker_centres(plot)
    assert len(centres) == len(points)
    by_x = sorted(points, key=lambda point: point[1])
    assert_linear([x for x, _ in centres], [point[1] for point in by_x])
    assert_linear([y for _, y in centres], [point[2] for point in by_x], flip=True)
    assert plot.size == (720, 540)


def test_tradeoff_plot_without_clip_t_plots_against_the_weights():
    points = [("0", None, 0.56), ("0.1", None, 0.65), ("0.5", None, 0.70), ("1.0", None, None)]
    plot = tradeoff_plot(points)
    centres = marker_centres(plot)
    assert len(centres) == 3  # the point without Mask-IoU is listed, not drawn
    assert_linear([x for x, _ in centres], [0, 1, 2])  # weights evenly spaced, in the given order
    assert_linear([y for _, y in centres], [0.56, 0.65, 0.70], flip=True)
    with_clip = tradeoff_plot([(label, 0.3 + i / 100, y) for i, (label, _, y) in enumerate(points)])
    title = (0, 0, plot.width, 30)
    assert plot.crop(title).tobytes() != with_clip.crop(title).tobytes()  # the title says which plot it is


def test_tradeoff_plot_error_bars_span_one_standard_error_each_way():
    points = [("a", 0.6, 0.05), ("b", 0.8, 0.15)]
    plain = tradeoff_plot(points, connect=False)
    barred = tradeoff_plot(points, connect=False, errors=[0.03, None])
    (ax, ay), (bx, by) = marker_centres(barred)
    dark = np.asarray(barred.convert("L"))[:, round(ax)] < 200
    top = bottom = round(ay)  # the run of drawn pixels through point a: its marker and its bar
    while dark[top - 1]:
        top -= 1
    while dark[bottom + 1]:
        bottom += 1
    # The y scale from the two markers: 0.10 of specificity is (ay - by) pixels; the bar is +-0.03.
    assert bottom - top == pytest.approx(0.06 / 0.10 * (ay - by), abs=3)
    assert plain.tobytes() != barred.tobytes()


def test_tradeoff_plot_survives_a_single_point_and_no_points():
    assert len(marker_centres(tradeoff_plot([("0.1", 0.35, 0.7)]))) == 1
    assert marker_centres(tradeoff_plot([])) == []


# --- metrics.csv ---------------------------------------------------------------------------------------


def test_metrics_csv_round_trip(tmp_path):
    rows = [
        {"weight": 0.0, "prompt": "a photo of chair in the shape of *s", "seed": 0, "image": "w0/p0_s0.png",
         "mask_iou": 1 / 3, "clip_t": 0.352, "clip_i": 0.9},
        {"weight": 0.1, "prompt": 'a "leopard-print", chair — in the shape of *s', "seed": 12,
         "image": "w0.1/p1_s12.png", "mask_iou": np.float32(0.646), "clip_t": None, "clip_i": math.nan},
        {"weight": 1.0, "prompt": "a red chair", "seed": 3, "mask_iou": 0.0},
    ]
    path = tmp_path / "metrics.csv"
    write_metrics_csv(path, rows)
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(METRICS_COLUMNS)
    back = read_metrics_csv(path)
    assert back[0] == rows[0]  # exact floats
    assert back[1]["prompt"] == rows[1]["prompt"] and back[1]["seed"] == 12
    assert back[1]["mask_iou"] == pytest.approx(0.646, abs=1e-7)
    assert back[1]["clip_t"] is None and back[1]["clip_i"] is None  # missing values are empty cells
    assert back[2] == {"weight": 1.0, "prompt": "a red chair", "seed": 3, "image": None, "mask_iou": 0.0,
                       "clip_t": None, "clip_i": None}
    assert path.read_text(encoding="utf-8").splitlines()[3] == "1.0,a red chair,3,,0.0,,"


def test_metrics_csv_refuses_unknown_and_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="unknown columns"):
        write_metrics_csv(tmp_path / "m.csv", [{"weight": 0.1, "iou": 0.5}])
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="missing"):
        read_metrics_csv(tmp_path / "other.csv")
    with pytest.raises(InputError, match="not found"):
        read_metrics_csv(tmp_path / "nothing.csv")
