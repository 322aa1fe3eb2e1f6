"""Does a toy model draw its proportion words? Mean silhouette height and width per prompt (not a test).

    python bench/toy_words.py --model toy --seeds 16 --families stool,chair

Draws "a photo of a <word> <family>" for each proportion word (tall/low seat, wide/narrow seat,
high/low back) on the same seeds and prints the mean height and width in pixels of the segmented
object. A word the model has learned moves the number it names: a "wide" stool comes out wider
than a "narrow" one on the same seeds. The rendered chairs differ by about 4 px per word pair
(see `tests/test_toy.py::test_proportion_words_describe_the_drawn_geometry`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.chairs.toy_world import PROPORTION_WORDS  # noqa: E402
from shapeinv_core.evaluation.metrics import object_silhouette  # noqa: E402
from shapeinv_core.generation.generate import _sampling_scheduler  # noqa: E402
from shapeinv_core.models.loading import load_model, quiet_library_logs  # noqa: E402


def extents(pipe, prompt: str, seeds: int) -> tuple[float, float]:
    """Mean (height, width) in pixels of the object drawn for `prompt` over seeds 0..seeds-1."""
    images = pipe([prompt] * seeds, num_inference_steps=20, guidance_scale=7.5, height=64, width=64,
                  generator=[torch.Generator().manual_seed(seed) for seed in range(seeds)]).images
    masks = [m for m in map(object_silhouette, images) if m is not None]
    return float(np.mean([m.any(axis=1).sum() for m in masks])), float(np.mean([m.any(axis=0).sum() for m in masks]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="the toy model, or a toy pipeline folder")
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--families", default="stool,chair", help="family phrases, comma-separated")
    args = parser.parse_args()
    os.environ.setdefault("U2NET_HOME", str(Path.home() / ".cache" / "shapeinv-test-weights"))
    torch.set_num_threads(1)
    quiet_library_logs()
    pipe = load_model(args.model, device="cpu").pipe
    pipe.scheduler = _sampling_scheduler(pipe)
    for family in args.families.split(","):
        cells = []
        for name, pair in PROPORTION_WORDS.items():
            if family == "stool" and name == "back_height":
                continue  # a stool has no back
            for word in pair:
                height, width = extents(pipe, f"a photo of a {word} {family}", args.seeds)
                cells.append(f"{word}: h {height:.1f} w {width:.1f}")
        print(f"{family}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
