"""Does `*s` carry *this* chair's shape through an edit? The shape evaluation on the toy world (not a test).

    python bench/shape_eval.py run --out /tmp/shape-eval --groups plain,varied-auto   # learn, draw, score
    python bench/shape_eval.py summary --out /tmp/shape-eval                           # tables and pictures

Chairs: unseen renders (seeds the toy model never trained on) of every training family, in a
random colour, pattern and background each, and the held-out families (round, ladder) apart.
Each chair's `*s` is learned with every setting, then five prompts are drawn over fixed seeds:
the reconstruction, two colour edits, a pattern edit and `*s` alone. Each image's silhouette
(`metrics.object_silhouette`, validated against rendered masks on every run) is scored against its own chair's mask
and against the masks of the chairs of *other* families: specificity = own IoU minus the mean
other IoU, 0 when `*s` draws the same chair whatever it learned from. Reference rows on the
same chairs and seeds: (a) the prompts without `*s`, (b) the chair's family word instead of
`*s` (the shape told in words), (b+) the family word and this chair's proportion words ("a tall
narrow stool": the chair itself told in words), (c) plain textual inversion ("plain-w0"), (d)
inversion on the chair truly re-rendered in every colour and pattern ("rerendered-w0"), (e) other
rendered chairs of the family ("family-render": a perfect family-level drawer), (e+) other rendered
chairs of the family with the same proportion words ("shape-render": a perfect drawer of the family and
the proportion words, the most a word that learned them can reach).

`run` appends one row per image to OUT/rows.csv and one loss-probe row per chair and setting to
OUT/probe.csv as each (chair, setting) finishes, and skips what is already there: it resumes.
`summary` writes OUT/summary.md (bootstrap standard errors over chairs), the frontier plot and
a picture sheet per chair.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.chairs.colours import dominant_colour  # noqa: E402
from shapeinv_core.chairs.toy_world import (  # noqa: E402
    BACKGROUNDS,
    COLOURS,
    FAMILY_PHRASES,
    HELD_OUT_FAMILIES,
    PATTERNS,
    TRAIN_FAMILIES,
    render_toy_chair,
)
from shapeinv_core.config import GenerationConfig, InversionConfig  # noqa: E402
from shapeinv_core.evaluation.metrics import mask_iou, object_silhouette, shape_specificity, strip_placeholder  # noqa: E402
from shapeinv_core.evaluation.report import image_grid, tradeoff_plot  # noqa: E402
from shapeinv_core.generation.generate import _sampling_scheduler, generate  # noqa: E402
from shapeinv_core.method.appearance import View, look_words  # noqa: E402
from shapeinv_core.method.concept import install_tokens, remove_tokens  # noqa: E402
from shapeinv_core.method.inversion import _training_scheduler, encode_image, invert_many, prepare_inputs  # noqa: E402
from shapeinv_core.method.probe import denoising_loss, probe_batch  # noqa: E402
from shapeinv_core.method.tuning import tune_lora  # noqa: E402
from shapeinv_core.models.loading import load_model, quiet_library_logs  # noqa: E402
from shapeinv_core.toy.checks import PatternClassifier  # noqa: E402

# (kind, prompt, asked colour, asked pattern)
PROMPTS = (
    ("recon", "a photo of chair in the shape of *s", None, None),
    ("red", "a red chair in the shape of *s", "red", None),
    ("blue", "a blue chair in the shape of *s", "blue", None),
    ("leopard", "a leopard-print chair in the shape of *s", None, "leopard"),
    ("alone", "*s", None, None),
)
EDITS = ("red", "blue", "leopard")
# group -> (settings that differ from the defaults, where the views come from, mask weights learned together,
#           sampling settings that differ from the evaluation's)
RESEARCH = {"appearance": "photo", "initializer": "chair"}
DEFAULT = {"appearance": "varied", "initializer": "auto"}  # the defaults since issue 25
SHORT_TEMPLATE = "{cls} in the shape of {token}"
GROUPS = {
    "plain": (RESEARCH, None, (0.0, 0.1), {}),  # (c) and the research's setting
    "auto": ({**RESEARCH, "initializer": "auto"}, None, (0.0, 0.1), {}),
    "varied": ({**RESEARCH, "appearance": "varied"}, None, (0.0, 0.1), {}),
    "varied-auto": (DEFAULT, None, (0.0, 0.1), {}),
    "probe8": ({**DEFAULT, "probe_views": 8}, None, (0.1,), {}),  # 8 named views: the default since 2026-12-07
    # `*s` starts as a phrase: the chair's own proportion and family words, as (b+) says them ("tall wide
    # stool"), or those bench/probe_pick.py --words picked from the photo (--picks; what `auto` now does
    # itself). One vector per token (the phrase itself; the shorter template leaves the toy's 20-token context
    # room for 4 vectors, "short" is its control), or "-mean": one vector, the mean of the phrase's rows.
    "own-words": ({**DEFAULT, "initializer": "<own words>", "template": SHORT_TEMPLATE}, None, (0.1,), {}),
    "short": ({**DEFAULT, "template": SHORT_TEMPLATE}, None, (0.1,), {}),
    "own-words-mean": ({**DEFAULT, "initializer": "<own words>", "num_vectors": 1}, None, (0.1,), {}),
    "picked-words-mean": ({**DEFAULT, "initializer": "<picked words>", "num_vectors": 1}, None, (0.1,), {}),
    "rerendered": ({**RESEARCH, "appearance": "varied"}, "render", (0.0,), {}),  # (d)
    # The knob screen: each the default with one thing changed.
    "heavy": (DEFAULT, None, (0.3, 1.0), {}),
    "map-max": ({**DEFAULT, "map_norm": "max"}, None, (0.1,), {}),
    "outside": ({**DEFAULT, "mask_form": "outside"}, None, (0.1,), {}),
    "object-only": ({**DEFAULT, "background_weight": 0.0}, None, (0.1,), {}),
    "coarse-maps": ({**DEFAULT, "attention_res": "4"}, None, (0.1,), {}),  # the 4x4 grids of a 64 px toy model
    "two-vectors": ({**DEFAULT, "num_vectors": 2}, None, (0.1,), {}),
    "lr-high": ({**DEFAULT, "learning_rate": 2e-2}, None, (0.1,), {}),
    "steps-500": ({**DEFAULT, "steps": 500}, None, (0.1,), {}),  # what the app and CLI run by default
    "long": ({**DEFAULT, "steps": 1000}, None, (0.1,), {}),
    "lora": ({**DEFAULT, "tune": "lora", "lora_lr": 1e-4}, None, (0.1,), {}),
    # The literature methods: AttnDreamBooth's attention regulariser, Prompt-to-Prompt's layout keeping, and
    # ProSpect-style shape steps (the last two only change the sampling of the default's concept).
    "attn-reg": ({**DEFAULT, "attention_reg": 0.01}, None, (0.1,), {}),
    "attn-reg-light": ({**DEFAULT, "attention_reg": 1e-4}, None, (0.1,), {}),
    # AttnDreamBooth's staging: the word first, then LoRA on the cross-attention with the regulariser on.
    "staged": ({**DEFAULT, "tune": "lora", "lora_lr": 1e-4, "attention_reg": 1e-4}, None, (0.1,), {}),
    "layout": (DEFAULT, None, (0.1,), {"layout_steps": 0.5}),
    "shape-half": (DEFAULT, None, (0.1,), {"shape_steps": 0.5}),
    # How far training should move *s from the probe's phrase: the start itself (one step), and a pull back.
    "start-only": ({**DEFAULT, "steps": 1}, None, (0.1,), {}),
    "init-reg-0.1": ({**DEFAULT, "init_reg": 0.1}, None, (0.1,), {}),
    "init-reg-1": ({**DEFAULT, "init_reg": 1.0}, None, (0.1,), {}),
    "shape-guided-2": (DEFAULT, None, (0.1,), {"shape_guidance": 2.0}),
    "shape-guided-5": (DEFAULT, None, (0.1,), {"shape_guidance": 5.0}),
    "negative-class": (DEFAULT, None, (0.1,), {"negative_prompt": "a photo of chair"}),
    # A stronger LoRA phase: more of this chair's own geometry in the weights beside *s.
    "lora-300": ({**DEFAULT, "tune": "lora", "lora_lr": 1e-4, "lora_steps": 300}, None, (0.1,), {}),
    "lora-1e-3": ({**DEFAULT, "tune": "lora", "lora_lr": 1e-3}, None, (0.1,), {}),
    "lora-1e-3-300": ({**DEFAULT, "tune": "lora", "lora_lr": 1e-3, "lora_steps": 300}, None, (0.1,), {}),
    "lora-1e-3-500": ({**DEFAULT, "tune": "lora", "lora_lr": 1e-3, "steps": 500}, None, (0.1,), {}),  # as shipped
}
REFERENCES = ("no-word", "family-word", "shape-words", "family-render", "shape-render")  # (a), (b), (b+), (e), (e+)
FAMILY_RENDER_SEEDS = 43_000_000  # (e): other chairs of the same family, drawn by the renderer (never trained on)
SHAPE_RENDER_SEEDS = 44_000_000  # (e+): the same, searched for chairs with the same proportion words
BASELINE = "plain-w0"  # (c): the chosen setting must beat it on edit specificity by 2 standard errors
# Toy training renders used seeds below 6,000,000; the toy checks the 10M and 20M ranges.
CHAIR_SETS = {"screen": 39_000_000,  # cheap screening of many settings
              "main": 40_000_000,  # confirming the few best, with the references
              "check": 41_000_000}  # a separate check: chairs never looked at while choosing


def eval_chairs(per_family: int, held_out: int, base: int) -> list[dict]:
    """Chairs with every attribute fixed up front, so the renderer can re-draw the same geometry in other looks."""
    rng = np.random.default_rng(base)
    plan = [(family, False) for _ in range(per_family) for family in TRAIN_FAMILIES]
    plan += [(family, True) for _ in range(held_out) for family in HELD_OUT_FAMILIES]
    chairs = []
    for index, (family, is_held_out) in enumerate(plan):
        look = dict(colour=str(rng.choice(list(COLOURS))), pattern=str(rng.choice(PATTERNS)),
                    background=str(rng.choice(BACKGROUNDS)))
        toy = render_toy_chair(base + index, family=family, **look)
        chairs.append({"index": index, "seed": base + index, "family": family, "held_out": is_held_out,
                       "image": toy.image, "mask": toy.mask, "shape_words": toy.shape_words, **look})
    return chairs


def rerendered_views(chair: dict, count: int) -> list[View]:
    """Reference (d): the same chair drawn by the renderer in other colours and patterns, each named."""
    combos = [(c, p) for c in COLOURS for p in PATTERNS if (c, p) != (chair["colour"], chair["pattern"])]
    random.Random(chair["seed"]).shuffle(combos)
    views = [View(chair["image"], look_words(chair["colour"], chair["pattern"]))]
    for colour, pattern in combos[:count - 1]:
        toy = render_toy_chair(chair["seed"], family=chair["family"], colour=colour, pattern=pattern,
                               background=chair["background"])
        assert np.array_equal(np.asarray(toy.mask), np.asarray(chair["mask"])), "re-render changed the geometry"
        views.append(View(toy.image, look_words(colour, pattern)))
    return views


def validate_segmenter(count: int = 60) -> float:
    """Mean IoU of the segmenter against exact masks of rendered chairs (unseen seeds, all families)."""
    families = TRAIN_FAMILIES + HELD_OUT_FAMILIES
    scores = []
    for index in range(count):
        toy = render_toy_chair(42_000_000 + index, family=families[index % len(families)])
        found = object_silhouette(toy.image)
        scores.append(0.0 if found is None else mask_iou(found, toy.mask))
    return float(np.mean(scores))


def draw_references(model, chair: dict, seeds: int, steps: int,
                    names: tuple[str, ...] = REFERENCES) -> dict[str, list[tuple[str, int, Image.Image]]]:
    """(a) the prompts with `*s` taken out, (b) with the family word in its place and (b+) with the family word and
    the chair's proportion words (at most two, as the toy model's captions say them), on the same seeds; (e) the
    renderer's own other chairs of the family, in the asked look: what a perfect family-level drawer scores."""
    pipe = model.pipe
    pipe.scheduler = _sampling_scheduler(pipe)
    out = {}
    for name in names:
        if name in ("family-render", "shape-render"):
            out[name] = family_renders(chair, seeds, same_words=name == "shape-render")
            continue
        said = chair["shape_words"][:2] if name == "shape-words" else ()
        words = family_prompts(FAMILY_PHRASES[chair["family"]], said)
        prompts = [strip_placeholder(p) if name == "no-word" else words[kind] for kind, p, _, _ in PROMPTS]
        work = [(kind, prompt, seed) for (kind, *_), prompt in zip(PROMPTS, prompts) for seed in range(seeds)]
        images = pipe(prompt=[p for _, p, _ in work], num_inference_steps=steps, guidance_scale=7.5,
                      height=64, width=64, generator=[torch.Generator().manual_seed(s) for *_, s in work]).images
        out[name] = [(kind, seed, image) for (kind, _, seed), image in zip(work, images)]
    return out


def family_prompts(phrase: str, shape_words: tuple[str, ...]) -> dict[str, str]:
    """The evaluation's prompts with the shape told in words: "a photo of a tall stool", "a tall red stool"."""
    shape = " ".join((*shape_words, ""))

    def article(text: str) -> str:
        return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"

    return {"recon": f"a photo of {article(shape + phrase)}", "red": f"{article(shape + 'red')} {phrase}",
            "blue": f"{article(shape + 'blue')} {phrase}", "leopard": f"{article(shape + 'leopard-print')} {phrase}",
            "alone": article(shape + phrase)}


def family_renders(chair: dict, seeds: int, same_words: bool = False) -> list[tuple[str, int, Image.Image]]:
    """Reference (e): per prompt and seed, another chair of this chair's family, in the prompt's look (the
    chair's own look where the prompt asks none). It knows the family perfectly and this chair not at all, so
    its specificity is the most a word that carries only the family can reach. With `same_words` (e+), the
    next such chair whose proportion words are this chair's: the most a word that carries the family and the
    proportion words can reach."""
    images = []
    for number, (kind, _, colour, pattern) in enumerate(PROMPTS):
        candidate = SHAPE_RENDER_SEEDS + chair["index"] * 10_000 + number * 1000
        for seed in range(seeds):
            look = {"colour": colour or chair["colour"],
                    "pattern": pattern or ("plain" if colour else chair["pattern"])}
            if not same_words:
                toy = render_toy_chair(FAMILY_RENDER_SEEDS + chair["index"] * 1000 + number * 100 + seed,
                                       family=chair["family"], **look)
            else:
                while (toy := render_toy_chair(candidate, family=chair["family"], **look)).shape_words \
                        != chair["shape_words"]:
                    candidate += 1
                candidate += 1
            images.append((kind, seed, toy.image))
    return images


def probe_losses(model, chair: dict, concept=None) -> dict[str, float]:
    """% change of the photo's denoising loss against 'a photo of chair', for each word (paired, fixed noise)."""
    pipe = model.pipe
    pixels, _ = prepare_inputs(chair["image"], chair["mask"], 64, 16)
    batch = probe_batch(_training_scheduler(pipe), encode_image(pipe, pixels), seed=1, pairs=32)

    def loss(prompt: str) -> float:
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            return denoising_loss(pipe.unet, pipe.text_encoder(ids)[0], batch)

    base = loss("a photo of chair")
    look = look_words(chair["colour"], chair["pattern"])
    result = {"family_word": loss(f"a photo of chair in the shape of a {FAMILY_PHRASES[chair['family']]}"),
              "look_words": loss(f"a photo of {look} chair"), "learned": base}
    if concept is not None:
        install_tokens(pipe, concept.token, concept.vectors)
        try:
            result["learned"] = loss(pipe.maybe_convert_prompt("a photo of chair in the shape of *s", pipe.tokenizer))
        finally:
            remove_tokens(pipe, concept.token)
    return {key: 100.0 * (value / base - 1.0) for key, value in result.items()}


def score(images: list[tuple[str, int, Image.Image]], chair: dict, chairs: list[dict], setting: str,
          classifier: PatternClassifier) -> list[dict]:
    """One row per image: own and other IoU, specificity, colour and pattern found; and the mean IoU with the
    set's other chairs of the *same* family (own minus it says whether this chair, not only its family, was
    drawn)."""
    others = [c["mask"] for c in chairs if c["family"] != chair["family"]]
    siblings = [c["mask"] for c in chairs if c["family"] == chair["family"] and c["index"] != chair["index"]]
    rows = []
    found_masks = [object_silhouette(image) for _, _, image in images]
    with_mask = [(image, mask) for (_, _, image), mask in zip(images, found_masks) if mask is not None]
    patterns = iter(classifier.predict([i for i, _ in with_mask], [m.astype(np.uint8) * 255 for _, m in with_mask]))
    for (kind, seed, image), found in zip(images, found_masks):
        asked = next(p for p in PROMPTS if p[0] == kind)
        own, other = shape_specificity(found, chair["mask"], others) if found is not None else (0.0, 0.0)
        colour = dominant_colour(image, found.astype(np.uint8) * 255) if found is not None else "none"
        pattern = next(patterns) if found is not None else "none"
        followed = (asked[2] is None or colour == asked[2]) and (asked[3] is None or pattern == asked[3])
        family = float("nan")  # a chair alone in its family has no siblings to compare with
        if siblings:
            family = shape_specificity(found, chair["mask"], siblings)[1] if found is not None else 0.0
        rows.append({"chair": chair["index"], "family": chair["family"], "held_out": int(chair["held_out"]),
                     "setting": setting, "prompt": kind, "seed": seed, "own_iou": round(own, 4),
                     "other_iou": round(other, 4), "specificity": round(own - other, 4), "colour": colour,
                     "pattern": pattern, "followed": int(followed), "family_iou": round(family, 4)})
    return rows


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    quiet_library_logs()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "images").mkdir(exist_ok=True)
    done = {(int(r["chair"]), r["setting"]) for r in _read(args.out / "rows.csv")}
    model = load_model(args.model, device="cpu")
    classifier = PatternClassifier.cached()
    print(f"segmenter IoU on rendered chairs: {validate_segmenter():.3f} (60 chairs, all families)", flush=True)
    chairs = eval_chairs(args.per_family, args.held_out, CHAIR_SETS[args.set])
    if "," in args.chairs:
        todo = [chairs[int(index)] for index in args.chairs.split(",") if index]  # "9," is one chair
    else:
        first, _, last = args.chairs.partition(":")
        todo = chairs[int(first or 0):int(last) if last else None]
    todo = todo[::-1 if args.reverse else 1]
    generation = GenerationConfig(num_images=args.seeds, steps=args.sample_steps, guidance=7.5, batch_size=40)
    # Without a LoRA phase unless a group asks for one (the default's since 2026-12-07, "lora-1e-3"), so every
    # group means what it meant when its rows were recorded.
    base = InversionConfig(resolution=64, steps=args.steps, checkpoint_every=args.steps, balance_every=0, tune="none")
    picks = read_picks(args.picks, args.model, args.set)
    began = time.perf_counter()
    for chair in todo:
        learned = {}  # (settings, views, weight) -> concept: sampling-only groups reuse the concept
        chair["image"].save(args.out / "images" / f"c{chair['index']:02d}_input.png")
        missing = tuple(r for r in REFERENCES if (chair["index"], r) not in done)
        if "references" in args.groups and missing:  # a resumed run draws only what it lacks: no duplicate rows
            for name, images in draw_references(model, chair, args.seeds, args.sample_steps, missing).items():
                record(args.out, model, chair, chairs, name, images, None, classifier)
        for group in args.groups:
            if group == "references":
                continue
            changes, views_from, weights, sampling = GROUPS[group]
            names = [f"{group}-w{w:g}" for w in weights]
            if all((chair["index"], name) in done for name in names):
                continue
            changes = phrase_start(changes, chair, picks, model.pipe.tokenizer)
            keys = [(tuple(sorted(changes.items())), views_from, w) for w in weights]
            if all(key in learned for key in keys):
                concepts = [learned[key] for key in keys]
            else:
                configs = [replace(base, mask_weight=w, **changes).validate() for w in weights]
                views = rerendered_views(chair, base.views) if views_from == "render" else None
                concepts = invert_many(model, chair["image"], chair["mask"], configs, views=views)
                if configs[0].tune == "lora":
                    concepts = [tune_lora(model, chair["image"], chair["mask"], c) for c in concepts]
                learned.update(zip(keys, concepts))
            kinds = {p: k for k, p, _, _ in PROMPTS}
            for name, concept in zip(names, concepts):
                drawn = generate(model, concept, [p for _, p, _, _ in PROMPTS], replace(generation, **sampling))
                images = [(kinds[d.prompt], d.seed, d.image) for d in drawn]
                record(args.out, model, chair, chairs, name, images, concept, classifier)
            print(f"chair {chair['index']} ({chair['family']}, {chair['colour']} {chair['pattern']}) {group}: "
                  f"{time.perf_counter() - began:.0f} s", flush=True)


def phrase_start(changes: dict, chair: dict, picks: dict[int, str], tokenizer) -> dict:
    """A group's settings with a phrase start ("<own words>", "<picked words>") made this chair's phrase,
    with one vector per token (so that `*s` starts as exactly that phrase) unless the group sets a count."""
    if changes.get("initializer") not in ("<own words>", "<picked words>"):
        return changes
    if changes["initializer"] == "<own words>":
        phrase = " ".join([*chair["shape_words"][:2], FAMILY_PHRASES[chair["family"]]])
    elif chair["index"] in picks:
        phrase = picks[chair["index"]]
    else:
        raise SystemExit(f"--picks has no C+words row for chair {chair['index']}: run bench/probe_pick.py --words")
    count = changes.get("num_vectors") or len(tokenizer(phrase, add_special_tokens=False).input_ids)
    return {**changes, "initializer": phrase, "num_vectors": count}


def read_picks(path: Path | None, model: str, chair_set: str) -> dict[int, str]:
    """chair -> "<proportion words> <family word>" from bench/probe_pick.py --words rows (variants C, C+words)."""
    if path is None:
        return {}
    rows = [r for r in _read(path) if r["set"] == chair_set and r["model"] == model]
    family = {int(r["chair"]): r["picked"] for r in rows if r["variant"] == "C"}
    words = {int(r["chair"]): r["picked"] for r in rows if r["variant"] == "C+words"}
    return {chair: " ".join([words[chair], family[chair]]).strip() for chair in words}


def record(out: Path, model, chair: dict, chairs: list[dict], name: str, images: list, concept,
           classifier: PatternClassifier) -> None:
    """Score one (chair, setting) and append its rows and its loss probe at once: a stopped run keeps them."""
    rows = score(images, chair, chairs, name, classifier)
    for kind, seed, image in images:
        if seed == 0:
            image.save(out / "images" / f"c{chair['index']:02d}_{name}_{kind}.png")
    probe = {"chair": chair["index"], "family": chair["family"], "held_out": int(chair["held_out"]),
             "setting": name, **probe_losses(model, chair, concept),
             "initializer": concept.initializer_used if concept is not None else ""}
    _append(out / "rows.csv", rows)
    _append(out / "probe.csv", [probe])


def bootstrap(values_by_chair: dict[int, float], draws: int = 2000) -> tuple[float, float]:
    """Mean over chairs and its standard error by resampling chairs."""
    values = np.array(list(values_by_chair.values()))
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, len(values), (draws, len(values)))].mean(axis=1)
    return float(values.mean()), float(means.std())


def per_chair(rows: list[dict], field: str, kinds: tuple[str, ...]) -> dict[int, float]:
    chosen: dict[int, list[float]] = {}
    for row in rows:
        if row["prompt"] in kinds:
            chosen.setdefault(int(row["chair"]), []).append(float(row[field]))
    return {chair: statistics.mean(v) for chair, v in chosen.items()}


def instance_margin(rows: list[dict]) -> dict[int, float]:
    """Per chair, the reconstruction's own IoU minus its IoU with the set's other chairs of the same family:
    above 0 only if *this* chair's proportions were drawn, not just its family's (rows from before this column
    have none)."""
    known = [row for row in rows if row.get("family_iou") not in (None, "", "nan")]
    own, family = per_chair(known, "own_iou", ("recon",)), per_chair(known, "family_iou", ("recon",))
    return {chair: own[chair] - family[chair] for chair in own}


def paired_gains(rows: list[dict], settings: list[str], baseline: str) -> list[str]:
    """Per setting, its edit specificity minus the baseline's on the same chairs and seeds: mean, bootstrap SE
    over chairs, and how many SE that is (the issue's bar: 2), plus colour followed against the prompts without
    `*s` (the bar: within 10 points)."""
    base_edit = per_chair([r for r in rows if r["setting"] == baseline], "specificity", EDITS)
    if not base_edit:
        return []
    words = per_chair([r for r in rows if r["setting"] == "no-word"], "followed", ("red", "blue"))
    lines = [f"\nPaired against {baseline} (per chair: the setting's edit specificity minus {baseline}'s):\n",
             "| setting | edit spec gain | SE | gain / SE | colour followed minus no-word |", "|---|---|---|---|---|"]
    for setting in settings:
        if setting in (baseline, *REFERENCES):
            continue
        cell = [r for r in rows if r["setting"] == setting]
        edit = per_chair(cell, "specificity", EDITS)
        gain, error = bootstrap({chair: edit[chair] - base_edit[chair] for chair in edit if chair in base_edit})
        colour = per_chair(cell, "followed", ("red", "blue"))
        shortfall = statistics.mean(colour[c] - words[c] for c in colour if c in words) if words else float("nan")
        ratio = gain / error if error > 1e-9 else float("nan")
        lines.append(f"| {setting} | {gain:+.3f} | {error:.3f} | {ratio:.1f} | "
                     f"{shortfall:+.0%} |")
    return lines


def summary(args: argparse.Namespace) -> None:
    rows, probes = _read(args.out / "rows.csv"), _read(args.out / "probe.csv")
    left_out = set(args.exclude.split(","))  # e.g. a setting run on fewer chairs, which would shrink the pairing
    rows = [r for r in rows if r["setting"] not in left_out]
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    # Paired: only the chairs every setting has finished (a stopped run leaves some settings ahead).
    common = set.intersection(*({r["chair"] for r in rows if r["setting"] == s} for s in settings))
    rows = [r for r in rows if r["chair"] in common]
    probes = [p for p in probes if p["chair"] in common]
    lines = ["Specificity = IoU with the chair's own mask minus the mean IoU with other families' chairs' masks; "
             "mean ± bootstrap SE over chairs. 'followed' = share of edit images showing the asked colour "
             "(red, blue) or pattern (leopard).\n"]
    points = []
    for held_out, title in ((0, "Unseen chairs of the training families"), (1, "Held-out families (round, ladder)")):
        part = [r for r in rows if int(r["held_out"]) == held_out]
        if not part:
            continue
        chairs = len({r["chair"] for r in part})
        seeds = len({r["seed"] for r in part})
        lines += [f"\n### {title}: {chairs} chairs x {seeds} seeds\n",
                  "| setting | recon own IoU | recon spec | edit spec (red, blue, leopard) | red spec | leopard spec "
                  "| *s alone spec | colour followed | leopard followed | probe: *s explains "
                  "| recon: own minus same-family IoU |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for setting in settings:
            cell = [r for r in part if r["setting"] == setting]
            if not cell:
                continue
            stats = {name: bootstrap(per_chair(cell, field, kinds)) for name, field, kinds in (
                ("own", "own_iou", ("recon",)), ("recon", "specificity", ("recon",)),
                ("edit", "specificity", EDITS), ("red", "specificity", ("red",)),
                ("leopard", "specificity", ("leopard",)), ("alone", "specificity", ("alone",)),
                ("colour", "followed", ("red", "blue")), ("pattern", "followed", ("leopard",)))}
            learned = [float(p["learned"]) for p in probes if p["setting"] == setting and p["setting"] not in REFERENCES
                       and int(p["held_out"]) == held_out]
            fmt = {k: f"{m:+.3f} ± {s:.3f}" for k, (m, s) in stats.items()}
            instance = instance_margin(cell)
            lines.append(f"| {setting} | {stats['own'][0]:.3f} | {fmt['recon']} | **{fmt['edit']}** | {fmt['red']} | "
                         f"{fmt['leopard']} | {fmt['alone']} | {stats['colour'][0]:.0%} | {stats['pattern'][0]:.0%} | "
                         + (f"{statistics.mean(learned):+.1f} %" if learned else "-") + " | "
                         + ("{:+.3f} ± {:.3f}".format(*bootstrap(instance)) if instance else "-") + " |")
            if held_out == 0:
                followed = statistics.mean(per_chair(cell, "followed", EDITS).values())
                points.append((setting, followed, stats["edit"][0], stats["edit"][1]))
        for baseline in args.against.split(","):
            lines += paired_gains(part, settings, baseline)
    family = [p for p in probes if p["setting"] == "no-word"]
    if family:
        lines += ["\n### Loss probe (per chair, % change of the denoising loss against 'a photo of chair')\n",
                  f"- the family word: {statistics.mean(float(p['family_word']) for p in family):+.1f} % (mean of "
                  f"{len(family)} chairs); the colour and pattern words: "
                  f"{statistics.mean(float(p['look_words']) for p in family):+.1f} %",
                  "- per setting, what the learned `*s` explains is the last column above (more negative = more)."]
        chosen = [(p["chair"], p["family"], p.get("initializer")) for p in probes
                  if "auto" in p["setting"] and p["setting"].endswith("-w0")]
        if chosen:
            right = sum(1 for _, family_name, word in chosen if word == FAMILY_PHRASES[family_name])
            lines.append(f"- initializer auto picked the chair's own family word for {right} of {len(chosen)} chairs.")
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    pictures = args.pictures
    pictures.mkdir(parents=True, exist_ok=True)
    tradeoff_plot([point[:3] for point in points],
                  title="shape against editability, unseen training-family chairs (paired; bars: 1 SE)",
                  axes=("edits followed (asked colour or pattern found)", "edit specificity (own - other IoU)"),
                  connect=False, errors=[point[3] for point in points]).save(
        pictures / "frontier.png", optimize=True)
    shown = [s for s in args.show.split(",") if s in settings]
    chair_ids = sorted({int(r["chair"]) for r in rows})
    sheet_rows, labels = [], []
    for chair in chair_ids:
        row = [_image(args.out, f"c{chair:02d}_input.png")]
        for setting in shown:
            row += [_image(args.out, f"c{chair:02d}_{setting}_{kind}.png") for kind in ("recon", "red", "leopard")]
        sheet_rows.append(row)
        labels.append(f"chair {chair}")
    columns = ["input"] + [f"{s}: {k}" for s in shown for k in ("recon", "red", "leopard")]
    image_grid(sheet_rows, labels, columns, cell=80).save(pictures / "sheet.png", optimize=True)
    if args.default in settings:  # the README's picture: one unseen chair per training family, the default setting
        first = {}
        for row in rows:
            if not int(row["held_out"]):
                first.setdefault(row["family"], int(row["chair"]))
        kinds = ("recon", "red", "leopard")
        grid = [[_image(args.out, f"c{c:02d}_input.png")] + [_image(args.out, f"c{c:02d}_{args.default}_{k}.png")
                                                          for k in kinds] for c in first.values()]
        image_grid(grid, list(first), ["photo", "a photo of chair in the shape of *s", "a red chair ...",
                                       "a leopard-print chair ..."], cell=96).save(pictures / "default.png",
                                                                                    optimize=True)


def _image(folder: Path, name: str) -> Image.Image | None:
    path = folder / "images" / name
    return Image.open(path).convert("RGB") if path.is_file() else None


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _append(path: Path, rows: list[dict]) -> None:
    """Append rows (a header first if the file is new); columns of later rows extend nothing, so keep them fixed."""
    if not rows:
        return
    new = not path.is_file()
    if new:
        fields = list(rows[0])
    else:
        with open(path, newline="") as handle:
            fields = next(csv.reader(handle))
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "summary"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/shape-eval"))
    parser.add_argument("--groups", default="references,plain,varied-auto",
                        help=f"comma-separated: references, {', '.join(GROUPS)}")
    parser.add_argument("--per-family", type=int, default=3, help="unseen chairs per training family (5 families)")
    parser.add_argument("--held-out", type=int, default=2, help="chairs per held-out family (round, ladder)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=500, help="inversion steps")
    parser.add_argument("--sample-steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="toy", help="the toy model, or another toy pipeline folder to compare")
    parser.add_argument("--set", choices=tuple(CHAIR_SETS), default="main", help="which chairs (seeds fixed)")
    parser.add_argument("--chairs", default=":",
                        help="a slice of the set to run, e.g. 0:8 (another process: 8:), or a list, e.g. 0,1,2,8,9")
    parser.add_argument("--picks", type=Path, default=None,
                        help="group picked-words: bench/probe_pick.py --words rows for this --model and --set")
    parser.add_argument("--reverse", action="store_true", help="run the slice last chair first (a second process)")
    parser.add_argument("--pictures", type=Path, default=Path("bench/shape"))
    parser.add_argument("--show", default="plain-w0,plain-w0.1,varied-auto-w0.1", help="settings on the picture sheet")
    parser.add_argument("--against", default=BASELINE,
                        help="summary: settings to pair every other against, e.g. plain-w0,varied-auto-w0.1")
    parser.add_argument("--exclude", default="", help="summary: settings to leave out, e.g. long-w0.1")
    parser.add_argument("--default", default="varied-auto-w0.1", help="the setting default.png shows (the default)")
    args = parser.parse_args()
    args.groups = [g for g in args.groups.split(",") if g]
    unknown = [g for g in args.groups if g not in GROUPS and g != "references"]
    if unknown:
        parser.error(f"unknown group(s) {unknown}; choose from references, {', '.join(GROUPS)}")
    os.environ.setdefault("U2NET_HOME", str(Path.home() / ".cache" / "shapeinv-test-weights"))
    run(args) if args.command == "run" else summary(args)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
