"""The research's experiments on the toy world (not a test): textual inversion of held-out chairs.

    python bench/toy_experiments.py --chairs 8 --seeds 4              # the recorded run
    python bench/toy_experiments.py --chairs 1 --seeds 1 --steps 10   # a quick look

For each held-out chair (a family never rendered for training: round back or ladder back) and
each map normalisation, all mask weights are learned together with the project's `invert_many`
(one batched UNet pass per step), then every prompt is generated with each `*s` over several
seeds with the project's `generate`. Each image is measured once, on the mask the project's
extractor finds in it:
  - Mask-IoU against the input mask (shape kept: reconstruction and edits);
  - colour followed / pattern followed for edit prompts (the toy world's exact CLIP-T);
  - `*s` alone and the template prompt show what `*s` carries by itself.
Also records each weight's first/last mask loss and diffusion loss (the map's scale).
Writes OUT/rows.csv, OUT/summary.md (means and spreads), grids and a trade-off plot per norm.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.chairs.colours import dominant_colour  # noqa: E402
from shapeinv_core.chairs.toy_world import HELD_OUT_FAMILIES, render_toy_chair  # noqa: E402
from shapeinv_core.config import GenerationConfig, InversionConfig  # noqa: E402
from shapeinv_core.evaluation.metrics import mask_iou  # noqa: E402
from shapeinv_core.evaluation.report import image_grid, tradeoff_plot  # noqa: E402
from shapeinv_core.files.runs import RunFolder  # noqa: E402
from shapeinv_core.generation.generate import generate  # noqa: E402
from shapeinv_core.generation.sweep import DEFAULT_WEIGHTS, run_folder_name  # noqa: E402
from shapeinv_core.method.inversion import invert_many  # noqa: E402
from shapeinv_core.method.workflow import finish  # noqa: E402
from shapeinv_core.models.loading import load_model, native_resolution, quiet_library_logs  # noqa: E402
from shapeinv_core.toy.checks import PatternClassifier, one_object  # noqa: E402

# (prompt, asked colour, asked pattern): None = nothing asked
PROMPTS = (
    ("a photo of chair in the shape of *s", None, None),
    ("a red chair in the shape of *s", "red", None),
    ("a leopard-print chair in the shape of *s", None, "leopard"),
    ("a blue striped chair in the shape of *s", "blue", "striped"),
    ("*s", None, None),
)


def held_out_chairs(count: int) -> list:
    """Plain chairs of the held-out families in varied colours (the inputs to invert)."""
    colours = ("white", "green", "orange", "purple", "black", "yellow")
    return [render_toy_chair(30_000 + i, family=HELD_OUT_FAMILIES[i % 2], colour=colours[i % len(colours)],
                             pattern="plain", background="plain") for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--chairs", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--norms", default="none,max")
    parser.add_argument("--weights", default=",".join(f"{w:g}" for w in DEFAULT_WEIGHTS),
                        help="mask weights for map_norm none (default: the research's list)")
    parser.add_argument("--max-weights", default=None, help="mask weights for map_norm max (default: --weights)")
    parser.add_argument("--prompts", default=None, help="indices into PROMPTS to run, e.g. 0,1,2 (default: all)")
    parser.add_argument("--steps", type=int, default=60, help="inversion steps")
    parser.add_argument("--batch", type=int, default=2, help="timesteps per step")
    parser.add_argument("--lr", type=float, default=InversionConfig.learning_rate)
    parser.add_argument("--sample-steps", type=int, default=12)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/toy-experiments"))
    parser.add_argument("--pictures", type=Path, default=Path("bench/toy"), help="where grids and plots go")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    quiet_library_logs()
    norms = args.norms.split(",")
    weights_for = {norm: [float(w) for w in (args.weights if norm == "none" or not args.max_weights
                                              else args.max_weights).split(",")] for norm in norms}
    chosen = PROMPTS if args.prompts is None else [PROMPTS[int(i)] for i in args.prompts.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    args.pictures.mkdir(parents=True, exist_ok=True)

    classifier = PatternClassifier.cached()
    model = load_model(args.model, device="cpu")
    base = InversionConfig(resolution=native_resolution(model.pipe), steps=args.steps, batch_size=args.batch,
                           learning_rate=args.lr, checkpoint_every=max(args.steps, 1)).research_form()  # as recorded
    generation = GenerationConfig(num_images=args.seeds, steps=args.sample_steps, guidance=args.guidance,
                                  batch_size=16)
    prompts = [p for p, _, _ in chosen]
    rows, losses = [], []
    began = time.perf_counter()
    for chair_index, chair in enumerate(held_out_chairs(args.chairs)):
        for norm in norms:
            folder = args.out / f"chair{chair_index}" / norm
            norm_weights = weights_for[norm]
            configs = [replace(base, mask_weight=w, map_norm=norm).validate() for w in norm_weights]
            runs = [RunFolder(folder / run_folder_name(w)) for w in norm_weights]
            for run, config in zip(runs, configs):
                run.start(chair.image, chair.mask, config)
            concepts = invert_many(model, chair.image, chair.mask, configs, runs)
            grid = []
            for weight, run, concept in zip(norm_weights, runs, concepts):
                finish(run, concept, chair.image, chair.mask)
                losses.append({"chair": chair_index, "norm": norm, "weight": weight, **_loss_ends(run.path)})
                images = generate(model, concept, prompts, generation)
                checks = [one_object(result.image) for result in images]
                masks = [c.mask for c in checks]
                found = classifier.predict([r.image for r, m in zip(images, masks) if m is not None],
                                           [m for m in masks if m is not None])
                found_iter = iter(found)
                for result, check in zip(images, checks):
                    _, colour, pattern = chosen[prompts.index(result.prompt)]
                    has_mask = check.mask is not None
                    rows.append({
                        "chair": chair_index, "family": chair.family, "norm": norm, "weight": weight,
                        "prompt": result.prompt, "seed": result.seed,
                        "mask_iou": mask_iou(chair.mask, check.mask) if has_mask else 0.0,
                        "colour_asked": colour or "", "colour_found": dominant_colour(result.image, check.mask)
                        if has_mask else "none",
                        "pattern_asked": pattern or "", "pattern_found": next(found_iter) if has_mask else "none",
                    })
                grid.append([next(r.image for r in images if r.prompt == p) for p in prompts])
            if chair_index < 2:
                image_grid([[chair.image] + row for row in grid], [f"w {w:g}" for w in norm_weights],
                           ["input"] + prompts, cell=96).save(args.pictures / f"grid_chair{chair_index}_{norm}.png",
                                                               optimize=True)
            print(f"chair {chair_index} ({chair.family}) norm {norm}: {time.perf_counter() - began:.0f} s", flush=True)
        # after every chair, so stopping early still leaves a summary of the chairs done
        _write_csv(args.out / "rows.csv", rows)
        (args.out / "losses.json").write_text(json.dumps(losses, indent=1))
        summary = summarise(rows, losses, weights_for, norms, prompts)
        (args.out / "summary.md").write_text(summary)
    print(summary)
    for norm in norms:
        points = []
        for w in weights_for[norm]:
            edits = [r for r in rows if r["norm"] == norm and r["weight"] == w
                     and (r["colour_asked"] or r["pattern_asked"])]
            followed = statistics.mean(_followed(r) for r in edits) if edits else None
            iou = statistics.mean(r["mask_iou"] for r in edits) if edits else None
            points.append((f"{w:g}", followed, iou))
        tradeoff_plot(points, title=f"edits, map_norm {norm}: Mask-IoU vs. edit followed").save(
            args.pictures / f"tradeoff_{norm}.png", optimize=True)


def _followed(row: dict) -> float:
    """1 when every asked attribute is found (colour and/or pattern), else 0."""
    ok = True
    if row["colour_asked"]:
        ok &= row["colour_found"] == row["colour_asked"]
    if row["pattern_asked"]:
        ok &= row["pattern_found"] == row["pattern_asked"]
    return float(ok)


def _loss_ends(run_path: Path) -> dict:
    records = [json.loads(line) for line in (run_path / "log.jsonl").read_text().splitlines() if line.strip()]
    first, last = records[0], records[-1]
    return {"mask_first": first["mask_loss"], "mask_last": last["mask_loss"],
            "diffusion_first": first["diffusion_loss"], "diffusion_last": last["diffusion_loss"]}


def _mean_sd(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def summarise(rows: list[dict], losses: list[dict], weights_for: dict[str, list[float]], norms: list[str],
              prompts: list[str]) -> str:
    """Markdown: Mask-IoU (mean ± sd over chairs x seeds) and edit-followed rates per norm, weight, prompt."""
    chairs = len({r["chair"] for r in rows})
    seeds = len({r["seed"] for r in rows})
    out = [f"{chairs} held-out chairs x {seeds} seeds per cell; Mask-IoU mean ± sd over chairs x seeds; "
           "'followed' = share of images where every asked colour/pattern is found.\n"]
    for norm in norms:
        out.append(f"\n### map_norm {norm}\n")
        edits = [p for p, colour, pattern in PROMPTS if (colour or pattern) and p in prompts]
        header = "| weight | " + " | ".join(f"IoU: {p}" for p in prompts) + " | "
        header += " | ".join(f"followed: {p}" for p in edits) + " | mask loss first -> last | diffusion loss last |"
        out += [header, "|---" * (len(prompts) + len(edits) + 3) + "|"]
        for w in weights_for[norm]:
            cell = [r for r in rows if r["norm"] == norm and r["weight"] == w]
            ious = [_mean_sd([r["mask_iou"] for r in cell if r["prompt"] == p]) for p in prompts]
            followed = []
            for p in edits:
                cells = [r for r in cell if r["prompt"] == p]
                followed.append(f"{statistics.mean(_followed(r) for r in cells):.0%}" if cells else "-")
            ls = [x for x in losses if x["norm"] == norm and x["weight"] == w]
            mask_first = statistics.mean(x["mask_first"] for x in ls) if ls else float("nan")
            mask_last = statistics.mean(x["mask_last"] for x in ls) if ls else float("nan")
            diffusion = statistics.mean(x["diffusion_last"] for x in ls) if ls else float("nan")
            out.append(f"| {w:g} | " + " | ".join(ious) + " | " + " | ".join(followed)
                       + f" | {mask_first:.4f} -> {mask_last:.4f} | {diffusion:.4f} |")
    return "\n".join(out) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
