"""Mask extraction: median time per image and IoU per method, on procedural chairs and a real photo.

    python bench/bench_masking.py [--seeds 10] [--examples ../shared/examples]

rembg rows appear only for models already on disk (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from shapeinv_core.chairs import BACKGROUNDS, render_chair
from shapeinv_core.masks import extract_mask
from shapeinv_core.masks.rembg_model import DEFAULT_REMBG_MODEL, model_file


def iou(a: Image.Image, b: Image.Image) -> float:
    x, y = np.asarray(a) > 127, np.asarray(b) > 127
    return float((x & y).sum() / max((x | y).sum(), 1))


def measure(method: str, pairs: list[tuple[Image.Image | Path, Image.Image]], **kwargs) -> tuple[float, float, float]:
    """(median ms, mean IoU, min IoU) over the pairs."""
    times, ious = [], []
    for image, exact in pairs:
        start = time.perf_counter()
        result = extract_mask(image, method=method, **kwargs)
        times.append((time.perf_counter() - start) * 1000)
        ious.append(iou(result.mask, exact))
    return statistics.median(times), statistics.mean(ious), min(ious)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--examples", default=str(Path(__file__).resolve().parents[2] / "shared" / "examples"))
    args = parser.parse_args()

    sets = {}
    for background in BACKGROUNDS:
        sets[f"procedural {background} (512 px, {args.seeds} chairs, half thin-legged)"] = [
            render_chair(seed, 512, background, thin_legs=seed % 2 == 1) for seed in range(args.seeds)
        ]
    examples = Path(args.examples)
    truth = examples / "triposr_chair_mask.png"
    if truth.is_file():
        sets["triposr_chair.jpg (512 px, real photo on white)"] = [(examples / "triposr_chair.jpg", Image.open(truth))]
        alpha_set = [(examples / "triposr_chair_rgba.png", Image.open(truth))]
    else:
        alpha_set = []

    rembg_models = [m for m in (DEFAULT_REMBG_MODEL, "isnet-general-use", "u2net") if model_file(m) is not None]
    print("| set | method | ms/image (median) | IoU mean | IoU min |")
    print("| --- | --- | --- | --- | --- |")
    for name, pairs in sets.items():
        rows = [("fallback", {})] + [(f"rembg {m}", {"rembg_model": m}) for m in rembg_models]
        for label, kwargs in rows:
            ms, mean, low = measure(label.split()[0], pairs, **kwargs)
            print(f"| {name} | {label} | {ms:.0f} | {mean:.3f} | {low:.3f} |")
    if alpha_set:
        ms, mean, low = measure("alpha", alpha_set)
        print(f"| triposr_chair_rgba.png | alpha | {ms:.0f} | {mean:.3f} | {low:.3f} |")
    if not rembg_models:
        print(f"\nrembg: no model on disk ({DEFAULT_REMBG_MODEL}, isnet-general-use, u2net), so no rembg rows.")


if __name__ == "__main__":
    main()
