"""The sweep's pictures and table: grid geometry and labels, one plotted point per weight, metrics.csv round-trip."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shapeinv_core.errors import InputError
from shapeinv_core.evaluation.report import (
    EMPTY_CELL,
    MARKER_COLOR,
    METRICS_COLUMNS,
    X_TITLE,
    Y_TITLE,
    _tradeoff_figure,
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
# The figure is checked through its matplotlib artists (data coordinates, before rasterising); one test
# ties the figure to the returned image's pixels.

SWEEP = [("0", 0.352, 0.56), ("0.1", 0.360, 0.646), ("0.5", 0.330, 0.70), ("1.0", 0.300, 0.74)]


def figure_of(points, title=None, size=(720, 540), axes=None, connect=True, errors=None):
    return _tradeoff_figure(points, title, size, axes, connect, errors)


def drawn(figure, gid):
    """The figure's artists with this gid (points, connect, errors, missing)."""
    return figure.findobj(lambda artist: artist.get_gid() == gid)


def plotted(figure):
    """The plotted points' data coordinates, one (x, y) row per marker, in drawing order."""
    (points,) = drawn(figure, "points")
    return np.column_stack([points.get_xdata(), points.get_ydata()]).reshape(-1, 2)


def same(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=float).reshape(-1, 2),
                               np.asarray(expected, dtype=float).reshape(-1, 2), atol=1e-12)
    return True


def labels_of(figure):
    """The point labels: the axes' annotations, with the data point each belongs to."""
    return [(text.get_text(), tuple(text.xy)) for text in figure.axes[0].texts]


def test_tradeoff_plot_places_each_labelled_point_at_its_scores_and_joins_them_in_order():
    figure = figure_of(SWEEP)
    assert same(plotted(figure), [(x, y) for _, x, y in SWEEP])
    assert [label for label, _ in labels_of(figure)] == [label for label, _, _ in SWEEP]
    assert same([xy for _, xy in labels_of(figure)], [(x, y) for _, x, y in SWEEP])  # each label at its point
    (line,) = drawn(figure, "connect")  # the sweep's line visits the points in weight order, not sorted by x
    assert same(np.column_stack([line.get_xdata(), line.get_ydata()]), [(x, y) for _, x, y in SWEEP])
    ax = figure.axes[0]
    (x_low, x_high), (y_low, y_high) = ax.get_xlim(), ax.get_ylim()
    assert all(x_low < x < x_high and y_low < y < y_high for _, x, y in SWEEP)
    assert figure.get_suptitle() == "Shape fidelity vs. editability"
    assert (ax.get_xlabel(), ax.get_ylabel()) == (X_TITLE, Y_TITLE)
    assert drawn(figure, "missing") == [] and drawn(figure, "errors") == []
    assert drawn(figure_of(SWEEP, connect=False), "connect") == []  # unrelated settings stay apart


def test_tradeoff_plot_keeps_titles_axes_and_labels_given_and_inside_the_picture():
    points = [("left", 0.1, 0.2), ("far-right-setting-with-a-long-name", 0.9, 0.3)]
    figure = figure_of(points, title="my title", axes=("followed", "specificity"))
    ax = figure.axes[0]
    assert (figure.get_suptitle(), ax.get_xlabel(), ax.get_ylabel()) == ("my title", "followed", "specificity")
    renderer = figure.canvas.get_renderer()
    for text in ax.texts:  # the label of a point near the right edge turns left instead of running off
        box = text.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= figure.bbox.width, text.get_text()
    assert ax.get_position().width > 0.8  # ... rather than squeezing the plot to make room for it


def test_tradeoff_plot_image_shows_each_point_where_the_figure_puts_it():
    image = tradeoff_plot(SWEEP)
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (720, 540)
    figure = figure_of(SWEEP)
    for x, y in plotted(figure):
        px, py = figure.axes[0].transData.transform((x, y))
        row, column = round(image.height - py), round(px)  # the figure's y runs up, the image's down
        centre = np.asarray(image)[row - 1:row + 2, column - 1:column + 2]
        assert np.all(centre == MARKER_COLOR), (x, y)
    ink = np.asarray(image.convert("L")) < 128  # titles, ticks and labels drawn, not a blank frame
    assert ink.sum() > 2000
    assert tradeoff_plot(SWEEP, size=(600, 400)).size == (600, 400)


def test_tradeoff_plot_without_clip_t_plots_against_the_weights_in_order_and_says_so():
    points = [("0.5", None, 0.70), ("0", None, 0.56), ("1.0", None, None), ("0.1", 0.33, 0.74)]
    figure = figure_of(points)
    ax = figure.axes[0]
    assert same(plotted(figure), [(0, 0.70), (1, 0.56), (3, 0.74)])  # each at its weight's place, as given
    assert [(tick.get_position()[0], tick.get_text()) for tick in ax.get_xticklabels()] == [
        (0, "0.5"), (1, "0"), (2, "1.0"), (3, "0.1")]
    assert [label for label, _ in labels_of(figure)] == ["0.5", "0", "0.1"]
    assert ax.get_xlabel() == "mask weight"
    assert "CLIP-T not available" in figure.get_suptitle()
    assert [text.get_text() for text in drawn(figure, "missing")] == ["no Mask-IoU: 1.0"]


def test_tradeoff_plot_lists_points_without_a_y_value_under_the_plot():
    points = [("a", 0.30, 0.5), ("b", 0.31, None), ("c", 0.32, math.nan), ("d", 0.33, 0.6)]
    figure = figure_of(points)
    assert same(plotted(figure), [(0.30, 0.5), (0.33, 0.6)])
    assert [label for label, _ in labels_of(figure)] == ["a", "d"]
    assert [text.get_text() for text in drawn(figure, "missing")] == ["no Mask-IoU: b, c"]
    (note,) = drawn(figure, "missing")
    assert note.get_position()[1] < figure.axes[0].get_position().y0  # under the plot
    assert "no value: b, c" in [t.get_text() for t in drawn(figure_of(points, axes=("x", "y")), "missing")]


def test_tradeoff_plot_error_bars_span_one_standard_error_each_way():
    points = [("a", 0.6, 0.05), ("b", 0.8, 0.15), ("c", 0.7, 0.10)]
    figure = figure_of(points, connect=False, errors=[0.03, None, 0.01])
    (bars,) = drawn(figure, "errors")
    segments = bars.get_segments()  # one vertical segment per point with an error, y - SE to y + SE
    assert len(segments) == 2
    assert same(segments[0], [(0.6, 0.02), (0.6, 0.08)]) and same(segments[1], [(0.7, 0.09), (0.7, 0.11)])
    low, high = figure.axes[0].get_ylim()
    assert low < 0.02 and high > 0.15  # the bars count in the range
    plain = tradeoff_plot(points, connect=False)
    assert plain.tobytes() != tradeoff_plot(points, connect=False, errors=[0.03, None, 0.01]).tobytes()


def test_tradeoff_plot_survives_a_single_point_and_no_points():
    one = figure_of([("0.1", 0.35, 0.7)])
    assert same(plotted(one), [(0.35, 0.7)]) and drawn(one, "connect") == []
    assert one.axes[0].get_ylim() == pytest.approx((0.65, 0.75))  # a fixed room around a single value
    none = figure_of([])
    assert plotted(none).shape == (0, 2) and labels_of(none) == []
    assert tradeoff_plot([]).size == tradeoff_plot([("0.1", 0.35, 0.7)]).size == (720, 540)


def test_tradeoff_ticks_of_close_scores_are_round_numbers_with_at_most_two_decimals():
    figure = figure_of([("0", 0.35210, 0.6000), ("1", 0.35214, 0.6001)])
    for axis in (figure.axes[0].xaxis, figure.axes[0].yaxis):
        labels = [tick.get_text() for tick in axis.get_ticklabels()]
        assert len(labels) >= 3 and all(len(label.split(".")[-1]) <= 2 for label in labels), labels
        assert axis.get_offset_text().get_text() == ""


def test_importing_the_report_does_not_import_matplotlib():
    code = "import sys, shapeinv_core.evaluation.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


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
