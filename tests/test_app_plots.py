"""The pictures' scales and the progress lines: noise must not look like swings, ticks and bars stay readable."""

from __future__ import annotations

import math
import random

from app.plots import axis_range, loss_frames, loss_plot, smoothed, tradeoff_frame
from shapeinv_core.evaluation.report import _padded_range, _ticks
from shapeinv_core.generation.sweep import tradeoff_points


def test_a_flat_noisy_loss_gets_an_axis_a_fifth_of_its_size_and_a_smoothed_curve():
    noise = random.Random(0)
    values = [0.1865 + noise.uniform(-0.0005, 0.0005) for _ in range(100)]
    low, high = axis_range(values)
    assert high - low >= 0.2 * max(values), "a 0.186-0.187 axis would make noise look like swings"
    assert low <= min(values) and high >= max(values)
    smooth = smoothed(values)
    assert max(smooth[20:]) - min(smooth[20:]) < (max(values) - min(values)) / 2, "the smoothed curve is calmer"
    assert axis_range([0.0, 0.0])[0] >= -0.01, "a loss axis does not dip far below 0"
    plot = loss_plot([{"step": i + 1, "diffusion_loss": v, "mask_loss": v / 10} for i, v in enumerate(values)])
    assert plot.size == (520, 300)


def test_the_pages_loss_charts_get_each_terms_raw_and_smoothed_curve_per_step():
    records = [{"step": i + 1, "diffusion_loss": 1.0 - i / 10, "mask_loss": 0.1 + i / 100} for i in range(5)]
    denoising, mask = loss_frames(records)
    assert list(denoising.columns) == ["step", "loss", "curve"]
    for frame, key in ((denoising, "diffusion_loss"), (mask, "mask_loss")):
        raw = frame[frame["curve"] == "raw"]
        assert raw["step"].tolist() == [1, 2, 3, 4, 5] and raw["loss"].tolist() == [r[key] for r in records]
        assert frame[frame["curve"] == "smoothed"]["loss"].tolist() == smoothed([r[key] for r in records])
    assert all(len(frame) == 0 for frame in loss_frames([])), "before the first step: empty charts"


def test_the_pages_tradeoff_chart_has_one_point_per_weight_as_tradeoff_png_does():
    rows = [{"weight": 0.0, "mask_iou": 0.4, "clip_t": 0.30}, {"weight": 0.0, "mask_iou": 0.6, "clip_t": 0.32},
            {"weight": 0.3, "mask_iou": 0.7, "clip_t": None}, {"weight": 0.3, "mask_iou": 0.9, "clip_t": 0.28}]
    frame = tradeoff_frame(tradeoff_points(rows, [0.0, 0.3]))  # the points tradeoff.png is drawn from
    assert frame["weight"].tolist() == ["0", "0.3"]
    assert frame["mask_iou"].tolist() == [0.5, 0.8] and math.isclose(frame["clip_t"][0], 0.31)
    assert math.isclose(frame["clip_t"][1], 0.28), "a missing CLIP-T is left out of the mean, as in tradeoff.png"
    unmeasured = tradeoff_frame(tradeoff_points([{"weight": 1.0, "mask_iou": 0.5, "clip_t": None}], [1.0]))
    assert unmeasured["clip_t"].isna().all() and unmeasured["mask_iou"].tolist() == [0.5]
    assert len(tradeoff_frame([])) == 0


def test_tradeoff_ticks_of_close_scores_need_at_most_two_decimals():
    ticks = _ticks(_padded_range([0.35210, 0.35214]))
    assert all(len(label.split(".")[-1]) <= 2 for _, label in ticks), ticks


def test_a_sweep_drawing_its_images_shows_images_done_of_all_not_a_stalled_step_bar():
    from app.handlers import Handlers

    status = {"status": "running", "phase": "drawing images: 3 of 8 done (weight 0.3)", "step": 4, "total_steps": 4,
              "elapsed_seconds": 40.0, "remaining_seconds": 0.0}
    shown = Handlers._progress(status)
    assert 'value="3" max="8"' in shown and "drawing images: 3 / 8" in shown and "remaining" not in shown
    queued = Handlers._progress({"status": "queued", "queue_position": 2, "start_in_seconds": 125.0})
    assert "1 job ahead of it; starts in about 2:05" in queued, "the running job is the one ahead"


def test_a_job_that_left_the_queue_between_two_reads_is_starting_not_a_crash():
    # The status said queued; by the time its place was read the worker had taken it (place None).
    from app.display import in_line

    assert in_line(None) == "starting"
    assert in_line(1) == "next in line" and in_line(3) == "2 jobs ahead of it"
