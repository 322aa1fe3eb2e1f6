"""Each new knob between shape and editability beside the research's form (not a test; run by hand).

    python bench/bench_control.py --model toy --steps 300 --seeds 0 1 2 3        # the figures (toy world)
    python bench/bench_control.py --model tiny --resolution 64 --steps 4 --sample-steps 3 \
        --attention-res 8 --lora-steps 2 --images assets/chair_01.png             # proves it runs (noise)

For every photo (with its `_mask.png` beside it) and every variant, one `*s` is learned with the
project's own `learn` and drawn with `generate`:

  research      mask weight 0.1, the research's loss (the baseline row)
  attn-res      only the layers with --attention-res grid side feed the map (Break-A-Scene: 16)
  masked-loss   denoising loss on the object only (background_weight 0, Break-A-Scene)
  outside       the mask term penalises only attention outside the mask (MagiCapture)
  shape-steps   the research's *s, drawn with the *s prompt for the first half of the steps only
  lora          the research's *s, then a LoRA phase on the cross-attention keys/values

Measured per variant, mean over photos x seeds: Mask-IoU of the reconstruction prompt and of the
edits against the input mask (shape kept), colour accuracy of the edits (the asked colour is the
commonest named colour inside the generated object: prompt followed), and the logged gradient
ratio |grad(weight x mask term)| / |grad(denoising term)| at the last step. On random weights
(`tiny`) the numbers are noise; only a trained model (`--model toy`) gives figures to record.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.config import GenerationConfig, InversionConfig  # noqa: E402
from shapeinv_core.evaluation.metrics import mask_iou  # noqa: E402
from shapeinv_core.files.images import open_image  # noqa: E402
from shapeinv_core.files.runs import RunFolder  # noqa: E402
from shapeinv_core.generation.generate import generate  # noqa: E402
from shapeinv_core.masks import extract_mask, load_mask  # noqa: E402
from shapeinv_core.method.inversion import pad_to_square  # noqa: E402
from shapeinv_core.method.workflow import learn  # noqa: E402
from shapeinv_core.models.loading import load_model, quiet_library_logs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECONSTRUCTION = "a photo of chair in the shape of *s"
COLOURS = {"red": (200, 30, 30), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40),
           "black": (20, 20, 20), "white": (235, 235, 235)}
EDIT_COLOURS = ("red", "blue", "green")


def variants(args) -> list[tuple[str, dict, dict]]:
    """(name, inversion setting changes, generation setting changes) per row of the table."""
    return [
        ("research", {}, {}),
        (f"attn-res {args.attention_res}", {"attention_res": args.attention_res}, {}),
        ("masked-loss", {"background_weight": 0.0}, {}),
        ("outside", {"mask_form": "outside"}, {}),
        ("shape-steps 0.5", {}, {"shape_steps": 0.5}),
        ("lora", {"tune": "lora", "lora_steps": args.lora_steps, "lora_lr": 1e-4}, {}),  # as recorded
    ]


def colour_name(image, mask: np.ndarray) -> str | None:
    """The commonest named colour (nearest of COLOURS) among the object's pixels; None without an object."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)[mask]
    if len(pixels) == 0:
        return None
    references = np.array(list(COLOURS.values()), dtype=np.float32)
    nearest = np.argmin(((pixels[:, None, :] - references[None]) ** 2).sum(-1), axis=1)
    return list(COLOURS)[int(np.bincount(nearest, minlength=len(COLOURS)).argmax())]


def measure(image, square_mask, asked: str | None) -> tuple[float, bool | None]:
    """(Mask-IoU against the input mask, whether the asked colour is the object's colour)."""
    try:
        generated = extract_mask(image, method="auto").mask
    except Exception:  # no object found: nothing of the shape was kept, no colour to read
        return 0.0, (False if asked else None)
    iou = mask_iou(square_mask, generated)
    if asked is None:
        return iou, None
    return iou, colour_name(image, np.asarray(generated.convert("L")) > 127) == asked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="toy")
    parser.add_argument("--images", nargs="+", type=Path,
                        default=sorted(p for p in (ROOT / "assets").glob("chair_*.png") if "_mask" not in p.name))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lora-steps", type=int, default=100)
    parser.add_argument("--sample-steps", type=int, default=25)
    parser.add_argument("--resolution", type=int, help="training resolution (default: InversionConfig's)")
    parser.add_argument("--attention-res", default="16")
    parser.add_argument("--mask-weight", type=float, default=0.1)
    parser.add_argument("--out", type=Path, help="keep run folders and images here (default: a temp folder)")
    args = parser.parse_args()

    quiet_library_logs()
    model = load_model(args.model, device="auto")
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-control-"))
    base = InversionConfig(mask_weight=args.mask_weight, steps=args.steps, balance_every=max(1, args.steps // 10),
                           checkpoint_every=max(args.steps, args.lora_steps)).research_form()  # as recorded
    if args.resolution:
        base = replace(base, resolution=args.resolution)
    prompts = [RECONSTRUCTION] + [f"a {colour} chair in the shape of *s" for colour in EDIT_COLOURS]

    rows = []
    for name, inversion_changes, generation_changes in variants(args):
        for photo in args.images:
            image = open_image(photo)
            mask = load_mask(photo.with_name(photo.stem + "_mask.png"), image.size)
            square_mask = pad_to_square(image, mask)[1]
            for seed in args.seeds:
                config = replace(base, seed=seed, **inversion_changes).validate()
                folder = out / name.replace(" ", "_") / f"{photo.stem}_seed{seed}"
                concept = learn(model, image, mask, config, folder)
                ratios = [r["grad_ratio"] for r in RunFolder(folder).read_log() if r.get("grad_ratio") is not None]
                generation = GenerationConfig(steps=args.sample_steps, seed=seed, **generation_changes)
                for result in generate(model, concept, prompts, generation):
                    asked = next((c for c in EDIT_COLOURS if f"a {c} chair" in result.prompt), None)
                    iou, colour_ok = measure(result.image, square_mask, asked)
                    rows.append({"variant": name, "photo": photo.stem, "seed": seed, "prompt": result.prompt,
                                 "mask_iou": iou, "colour_ok": colour_ok, "grad_ratio": ratios[-1] if ratios else None})
                print(f"{name:16s} {photo.stem} seed {seed}: done", file=sys.stderr)

    with (out / "bench_control.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"model {args.model}, {len(args.images)} photos x {len(args.seeds)} seeds, {args.steps} steps, "
          f"mask weight {args.mask_weight}; rows in {out / 'bench_control.csv'}\n")
    print("| variant | Mask-IoU reconstruction | Mask-IoU edits | colour accuracy of edits | gradient ratio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, _, _ in variants(args):
        mine = [row for row in rows if row["variant"] == name]
        recon = [row["mask_iou"] for row in mine if row["prompt"] == RECONSTRUCTION]
        edits = [row for row in mine if row["prompt"] != RECONSTRUCTION]
        ratio = [row["grad_ratio"] for row in mine if row["grad_ratio"] is not None]
        print(f"| {name} | {statistics.mean(recon):.3f} | {statistics.mean(r['mask_iou'] for r in edits):.3f} | "
              f"{statistics.mean(float(r['colour_ok']) for r in edits):.2f} | "
              f"{statistics.median(ratio) if ratio else float('nan'):.3g} |")


if __name__ == "__main__":
    main()
