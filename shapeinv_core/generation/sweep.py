"""The mask-weight sweep: one `*s` per weight, learned together, then edited and measured.

Writes into SWEEP_DIR one run folder per weight (the normal layout, plus its images),
`grid.png` (rows = weights, columns = prompts), `metrics.csv` and `tradeoff.png`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from ..config import GenerationConfig, InversionConfig
from ..errors import InputError
from ..evaluation.metrics import DEFAULT_CLIP_MODEL, ClipScorer, generated_mask_iou, load_clip_scorer, strip_placeholder
from ..evaluation.report import image_grid, tradeoff_plot, write_metrics_csv
from ..files.runs import RunFolder
from ..method.inversion import StepCallback, invert_many, pad_to_square
from ..method.tuning import tune_lora
from ..method.workflow import finish
from ..models.loading import LoadedModel
from .generate import check_prompts, generate

DEFAULT_WEIGHTS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
DEFAULT_PROMPTS = (
    "a photo of chair in the shape of *s",
    "a leopard-print chair in the shape of *s",
    "a red chair in the shape of *s",
)


@dataclass
class SweepResult:
    folder: Path
    rows: list[dict]  # one per generated image: weight, prompt, seed, image, mask_iou, clip_t, clip_i
    clip_note: str | None  # why CLIP-T/CLIP-I are empty, when they are


def run_folder_name(weight: float) -> str:
    """`weight_0.1`: the shortest text that reads back as exactly `weight`, so no two weights share a folder.

    (0.1 and 0.1001, or 0 and 1e-300, once both wrote `weight_0.1` / `weight_0`.) A whole number
    drops its '.0': `weight_0`, `weight_1`. `weight_of_folder` reverses it.
    """
    text = repr(float(weight))
    return f"weight_{text[:-2] if text.endswith('.0') else text}"


def weight_of_folder(name: str) -> float | None:
    """The weight whose run folder is called `name`, or None when `run_folder_name` never writes that name."""
    if not name.startswith("weight_"):
        return None
    try:
        weight = float(name.removeprefix("weight_"))
    except ValueError:
        return None
    return weight if math.isfinite(weight) and run_folder_name(weight) == name else None


def sweep(model: LoadedModel, image: Image.Image, mask: Image.Image, base: InversionConfig,
          weights: list[float], prompts: list[str], folder: str | Path,
          generation: GenerationConfig | None = None, seeds: list[int] | None = None,
          clip_model: str | None = DEFAULT_CLIP_MODEL, clip_scorer: ClipScorer | None = None, mask_method: str = "auto",
          on_step: StepCallback | None = None, on_phase: Callable[[str], None] | None = None,
          should_stop: Callable[[], bool] | None = None, rows_per_pass: int | None = None) -> SweepResult:
    """Learn one concept per weight in shared passes, generate every prompt with each, measure.

    CLIP-T/CLIP-I use `clip_scorer` when given (e.g. the app's, loaded once), else `clip_model`.
    """
    if not weights or len(set(weights)) != len(weights):
        raise InputError("Give one or more distinct mask weights, e.g. --weights 0,0.1,0.5.")
    prompts = check_prompts(list(prompts), base.placeholder)
    generation = (generation or GenerationConfig()).validate()
    seeds = seeds or [generation.seed]
    folder = Path(folder)
    announce = on_phase or (lambda text: None)

    configs = [replace(base, mask_weight=weight).validate() for weight in weights]
    runs = [RunFolder(folder / run_folder_name(weight)) for weight in weights]
    for run, config in zip(runs, configs):
        run.start(image, mask, config)
    announce(f"learning {len(weights)} concepts together")
    concepts = invert_many(model, image, mask, configs, runs, on_step, should_stop, rows_per_pass)
    if base.tune == "lora":  # each weight's LoRA phase on its own: adapters do not share a batched pass
        for index, (weight, run) in enumerate(zip(weights, runs)):
            announce(f"LoRA phase for weight {weight}")
            concepts[index] = tune_lora(model, image, mask, concepts[index], run, on_step, should_stop)
    for run, concept in zip(runs, concepts):
        finish(run, concept, image, mask)

    # Measure against what the model saw: the photo and its mask padded to a square.
    square_image, square_mask = pad_to_square(image, mask)
    if clip_scorer is not None:
        scorer, clip_note = clip_scorer, None
    elif clip_model:
        scorer, clip_note = load_clip_scorer(clip_model, device=str(model.device))
    else:
        scorer, clip_note = None, "No CLIP model was asked for; CLIP-T and CLIP-I are left empty."

    rows: list[dict] = []
    total = len(weights) * len(seeds) * len(prompts) * generation.num_images
    drawn = 0
    for weight, run, concept in zip(weights, runs, concepts):
        announce(f"drawing images: {drawn} of {total} done (weight {weight:g} next)")
        images = []
        for seed in seeds:
            def progress(done: int, _: int, before: int = drawn + len(images), weight: float = weight) -> None:
                announce(f"drawing images: {before + done} of {total} done (weight {weight:g})")

            images += generate(model, concept, prompts, replace(generation, seed=seed), on_image=progress)
        drawn += len(images)
        image_dir = run.path / "images"
        image_dir.mkdir(exist_ok=True)
        clip_t = scorer.clip_t([r.image for r in images], [strip_placeholder(r.prompt, base.placeholder)
                                                           for r in images]) if scorer else [None] * len(images)
        clip_i = scorer.clip_i([r.image for r in images], square_image) if scorer else [None] * len(images)
        for index, result in enumerate(images):
            name = f"p{prompts.index(result.prompt):02d}_seed{result.seed}.png"
            result.image.save(image_dir / name)
            rows.append({
                "weight": weight, "prompt": result.prompt, "seed": result.seed,
                "image": str((image_dir / name).relative_to(folder)),
                "mask_iou": generated_mask_iou(result.image, square_mask, method=mask_method),
                "clip_t": clip_t[index], "clip_i": clip_i[index],
            })

    announce("writing the report")
    write_report(folder, rows, weights, prompts)
    return SweepResult(folder, rows, clip_note)


def write_report(folder: Path, rows: list[dict], weights: list[float], prompts: list[str]) -> None:
    """`metrics.csv`, `grid.png` (each weight's first image per prompt, read back from its file) and `tradeoff.png`.

    Also how the Ray engine joins the parts of a sweep whose weights were learned on several actors.
    """
    write_metrics_csv(folder / "metrics.csv", rows)
    grid_rows = [[_first_image(folder, rows, weight, prompt) for prompt in prompts] for weight in weights]
    image_grid(grid_rows, row_labels=[f"weight {w:g}" for w in weights], col_labels=prompts).save(folder / "grid.png")
    tradeoff_plot(tradeoff_points(rows, weights)).save(folder / "tradeoff.png")


def _first_image(folder: Path, rows: list[dict], weight: float, prompt: str) -> Image.Image:
    row = next(row for row in rows if row["weight"] == weight and row["prompt"] == prompt)
    with Image.open(folder / row["image"]) as image:
        return image.convert("RGB")


def tradeoff_points(rows: list[dict], weights: list[float]) -> list[tuple[str, float | None, float | None]]:
    """(weight label, mean CLIP-T, mean Mask-IoU) per weight: what `tradeoff.png` and the page's chart plot."""
    return [(f"{w:g}", _mean(rows, w, "clip_t"), _mean(rows, w, "mask_iou")) for w in weights]


def _mean(rows: list[dict], weight: float, column: str) -> float | None:
    values = [row[column] for row in rows if row["weight"] == weight and row[column] is not None]
    return sum(values) / len(values) if values else None
