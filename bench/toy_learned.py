"""Has the toy model learned? Prompts with a colour and a pattern -> images -> checks (not a test).

    python bench/toy_learned.py                       # 8 colours x 5 patterns x 3 seeds = 120 images
    python bench/toy_learned.py --model DIR/pipeline  # a model being trained

Measures, on generated images:
  - colour followed: the asked colour is the dominant colour inside the object (mask from the
    project's extractor, `masks.extract_mask`);
  - pattern followed: `checks.PatternClassifier` (trained here on rendered chairs, first tested on
    rendered chairs of held-out families: that accuracy is printed too) finds the asked pattern;
  - one object: the extractor's mask is one object (largest part >= 90 % of it).
Prints markdown (confusion tables) for bench/RESULTS.md, writes a grid picture and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.chairs.colours import dominant_colour  # noqa: E402
from shapeinv_core.chairs.toy_world import COLOURS, PATTERN_WORDS, PATTERNS  # noqa: E402
from shapeinv_core.evaluation.report import image_grid  # noqa: E402
from shapeinv_core.generation.generate import _sampling_scheduler  # noqa: E402
from shapeinv_core.models.loading import load_model, quiet_library_logs  # noqa: E402
from shapeinv_core.toy.checks import (  # noqa: E402
    PatternClassifier,
    confusion_table,
    held_out_test_set,
    one_object,
)


def prompt_for(colour: str, pattern: str) -> str:
    return f"a {colour} chair" if pattern == "plain" else f"a {colour} {PATTERN_WORDS[pattern]} chair"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="DPM-Solver++ steps")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", type=Path, default=Path("bench/toy"))
    parser.add_argument("--classifier-images", type=int, default=2000)
    parser.add_argument("--rembg-model", default=None,
                        help="mask extractor's rembg model, e.g. u2netp with U2NET_HOME holding u2netp.onnx "
                             "(default: the extractor's own choice; offline without weights, the classical fallback)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    quiet_library_logs()
    args.out.mkdir(parents=True, exist_ok=True)

    began = time.perf_counter()
    classifier = PatternClassifier.cached(count=args.classifier_images)
    rendered = held_out_test_set(250)
    predicted = classifier.predict([c.image for c in rendered], [c.mask for c in rendered])
    truth = [c.pattern for c in rendered]
    rendered_accuracy = sum(t == p for t, p in zip(truth, predicted)) / len(truth)
    print(f"pattern classifier on {len(rendered)} rendered held-out-family chairs (exact masks): "
          f"{rendered_accuracy:.1%} ({time.perf_counter() - began:.0f} s incl. training)\n")
    print(confusion_table(truth, predicted, list(PATTERNS)) + "\n")

    model = load_model(args.model, device="cpu")
    pipe = model.pipe
    pipe.scheduler = _sampling_scheduler(pipe)
    work = [(colour, pattern, seed) for colour in COLOURS for pattern in PATTERNS for seed in range(args.seeds)]
    rows = []
    began = time.perf_counter()
    for start in range(0, len(work), 8):
        batch = work[start:start + 8]
        images = pipe(prompt=[prompt_for(c, p) for c, p, _ in batch], num_inference_steps=args.steps,
                      guidance_scale=args.guidance,
                      generator=[torch.Generator().manual_seed(s) for _, _, s in batch]).images
        for (colour, pattern, seed), image in zip(batch, images):
            check = one_object(image, rembg_model=args.rembg_model)
            rows.append({"colour": colour, "pattern": pattern, "seed": seed, "image": image,
                         "one_object": check.one_object, "mask": check.mask,
                         "found_colour": dominant_colour(image, check.mask) if check.mask else "none"})
    seconds = time.perf_counter() - began
    with_mask = [r for r in rows if r["mask"] is not None]
    found = classifier.predict([r["image"] for r in with_mask], [r["mask"] for r in with_mask])
    for row, pattern in zip(with_mask, found):
        row["found_pattern"] = pattern
    for row in rows:
        row.setdefault("found_pattern", "none")

    n = len(rows)
    colour_ok = sum(r["colour"] == r["found_colour"] for r in rows) / n
    pattern_ok = sum(r["pattern"] == r["found_pattern"] for r in rows) / n
    objects = sum(r["one_object"] for r in rows) / n
    rendered_objects = sum(one_object(c.image, rembg_model=args.rembg_model).one_object
                           for c in rendered[:100]) / 100
    print(f"model {args.model}: {n} images, {args.steps} DPM-Solver++ steps, guidance {args.guidance} "
          f"({seconds:.0f} s incl. checks)\n")
    print("| check | generated | rendered chairs (same check) |\n|---|---|---|")
    print(f"| colour followed (dominant colour in the object) | {colour_ok:.1%} | - |")
    print(f"| pattern followed (classifier; chance 20 %) | {pattern_ok:.1%} | {rendered_accuracy:.1%} |")
    print(f"| one object found by the mask extractor | {objects:.1%} | {rendered_objects:.1%} (100 chairs) |\n")
    print("Colour (rows: asked, columns: found):\n")
    print(confusion_table([r["colour"] for r in rows], [r["found_colour"] for r in rows], list(COLOURS)) + "\n")
    print("Pattern (rows: asked, columns: found):\n")
    print(confusion_table([r["pattern"] for r in rows], [r["found_pattern"] for r in rows], list(PATTERNS)))

    grid = [[next(r["image"] for r in rows if r["colour"] == c and r["pattern"] == p and r["seed"] == 0)
             for p in PATTERNS] for c in COLOURS]
    image_grid(grid, row_labels=list(COLOURS), col_labels=[PATTERN_WORDS[p] for p in PATTERNS], cell=96).save(
        args.out / "learned_grid.png", optimize=True)
    summary = {"model": args.model, "images": n, "steps": args.steps, "guidance": args.guidance,
               "colour_followed": colour_ok, "pattern_followed": pattern_ok, "one_object": objects,
               "rendered_one_object": rendered_objects, "classifier_rendered_accuracy": rendered_accuracy}
    (args.out / "learned.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
