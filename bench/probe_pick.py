"""How often does `initializer="auto"` pick the chair's own family word? The shipped probe against stronger ones.

    python bench/probe_pick.py --model toy --set main --out bench/shape/probe_pick.csv

`auto` starts `*s` from the seat word with the lowest denoising loss on the photo. The differences it ranks
are a fraction of a percent (bench/RESULTS.md, the loss probe), so the probe's own noise decides some
picks. Variants, on the same chairs as `shape_eval.py` and each a row per chair:
  A  the shipped probe: the photo (view 0), 16 (timestep, noise) pairs;
  B  the photo, 128 pairs (more noise draws, one look);
  C  the first 8 training views, each with its look named, 16 pairs each (128 rows, 8 looks).
With --words, also the proportion words (a toy model trained on them, such as v3): after C's family word,
each pair of opposites ("low"/"tall", ...) is tried in front of it, and a word is kept when it lowers C's
loss; a row per chair says the picked words and the chair's own (`shape_words`).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shape_eval import CHAIR_SETS, eval_chairs  # noqa: E402

from shapeinv_core.chairs.toy_world import FAMILY_PHRASES  # noqa: E402
from shapeinv_core.config import InversionConfig  # noqa: E402
from shapeinv_core.method.concept import initializer_vectors, install_tokens, remove_tokens  # noqa: E402
from shapeinv_core.method.inversion import (  # noqa: E402
    _freeze,
    _training_scheduler,
    starting_word,
    training_inputs,
    training_text_encoders,
    views_probe_loss,
)
from shapeinv_core.method.probe import (  # noqa: E402
    best_word,
    initializer_candidates,
    known_phrases,
    proportion_words,
)
from shapeinv_core.models.loading import load_model, quiet_library_logs  # noqa: E402

# variant -> (views, (timestep, noise) pairs per view)
VARIANTS = {"A": (1, 16), "B": (1, 128), "C": (8, 16)}


def picks(model, chair: dict, config: InversionConfig, with_words: bool = False) -> dict[str, str]:
    """Each variant's chosen word for one chair."""
    pipe = model.pipe
    token_ids = install_tokens(pipe, config.placeholder,
                               initializer_vectors(pipe, starting_word(config), config.num_vectors))
    try:
        inputs = training_inputs(pipe, model.device, chair["image"], chair["mask"], config, token_ids)
        scheduler, encoders = _training_scheduler(pipe), training_text_encoders(pipe, model.dtype)
        words = list(dict.fromkeys(known_phrases(pipe.tokenizer, initializer_candidates(config.class_word))))
        chosen = {}
        for name, (views, pairs) in VARIANTS.items():
            loss = views_probe_loss(pipe, encoders, inputs, config, scheduler, views, pairs)
            chosen[name], _ = best_word(words, loss)
            if name == "C" and with_words:
                chosen["C+words"] = " ".join(proportion_words(chosen["C"], loss, pipe.tokenizer))
        return chosen
    finally:
        remove_tokens(pipe, config.placeholder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="the toy model, or a toy pipeline folder")
    parser.add_argument("--set", default="main", choices=list(CHAIR_SETS))
    parser.add_argument("--per-family", type=int, default=None, help="default: 3 for main, 1 otherwise")
    parser.add_argument("--out", type=Path, required=True, help="CSV; rows are appended per chair")
    parser.add_argument("--words", action="store_true", help="also pick proportion words (C+words)")
    args = parser.parse_args()
    os.environ.setdefault("U2NET_HOME", str(Path.home() / ".cache" / "shapeinv-test-weights"))
    torch.set_num_threads(1)
    quiet_library_logs()
    model = load_model(args.model, device="cpu")
    _freeze(model.pipe)
    config = replace(InversionConfig(resolution=64, balance_every=0), appearance="varied",
                     initializer="auto").validate()
    per_family = args.per_family or (3 if args.set == "main" else 1)
    new = not args.out.exists()
    with open(args.out, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["model", "set", "chair", "family", "variant", "picked", "right"])
        for chair in eval_chairs(per_family, 0, CHAIR_SETS[args.set]):
            for name, word in picks(model, chair, config, args.words).items():
                own = " ".join(chair["shape_words"][:2]) if name == "C+words" else FAMILY_PHRASES[chair["family"]]
                right = int(word == own)
                writer.writerow([args.model, args.set, chair["index"], chair["family"], name, word, right])
            handle.flush()
            print(f"chair {chair['index']} ({chair['family']}) done", flush=True)


if __name__ == "__main__":
    main()
