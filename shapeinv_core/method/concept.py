"""The learned `*s`: its vectors, the settings that made it, and where it came from.

On disk a concept is diffusers' textual-inversion format, `learned_embeds.safetensors` holding
`{token: tensor[num_vectors, dim]}`, so `pipe.load_textual_inversion(folder, token="*s")` works in
plain diffusers, plus `concept.json` with the provenance this project adds. A concept tuned
with LoRA also has `pytorch_lora_weights.safetensors` (diffusers' LoRA file, see lora.py).
A bare file in AUTOMATIC1111's single-key form (`emb_params`) is named after the file, as there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import MAX_VECTORS, InversionConfig, from_dict, to_dict
from ..errors import InputError
from ..files.runs import EMBEDS_FILE, WIDTHS_KEY
from ..models.families import encoder_widths, freeze_text, split_vectors, text_pairs
from ..models.loading import BUILD_LOCK
from .lora import LORA_FILE, load_lora, save_lora

EMBEDS_FILE_2 = "learned_embeds_2.safetensors"  # SDXL's second encoder, as diffusers' SDXL example writes it
SDXL_KEYS = ("clip_l", "clip_g")  # AUTOMATIC1111/Forge and ComfyUI's one-file SDXL embedding
CONCEPT_FILE = "concept.json"
A1111_KEYS = ("emb_params",)  # AUTOMATIC1111/ComfyUI: the word is the file's name, not the key
MAX_CONCEPT_BYTES = 1_000_000  # 16 vectors of 4096 floats and a header fit; a concept file is ~4 KB


@dataclass
class Concept:
    token: str
    vectors: torch.Tensor  # [num_vectors, dim], float32 on CPU; SDXL: both encoders' rows side by side
    settings: InversionConfig = field(default_factory=InversionConfig)
    model: str | None = None
    model_revision: str | None = None
    steps_done: int = 0
    final_losses: dict[str, float] = field(default_factory=dict)
    version: str = __version__
    attention_map: torch.Tensor | None = field(default=None, repr=False, compare=False)  # not saved
    lora: dict[str, torch.Tensor] | None = field(default=None, repr=False, compare=False)  # peft naming (lora.py)
    initializer_used: str | None = None  # the word *s started from (what initializer "auto" chose)
    widths: tuple[int, ...] | None = None  # each text encoder's part of `dim` (SDXL: 768, 1280); None: one encoder

    @classmethod
    def from_checkpoint(cls, config: InversionConfig, step: int, state: dict[str, torch.Tensor]) -> Concept:
        """A run's checkpoint (`RunFolder.load_checkpoint`) as a concept, e.g. for a preview or an early download."""
        widths = tuple(int(width) for width in state[WIDTHS_KEY].tolist()) if WIDTHS_KEY in state else None
        return cls(token=config.placeholder, vectors=state["vectors"], settings=config, steps_done=step, widths=widths)

    def parts(self) -> list[torch.Tensor]:
        """The vectors of each text encoder: [num_vectors, width] each."""
        vectors = self.vectors.detach().float().cpu()
        return [part.contiguous() for part in split_vectors(vectors, list(self.widths or [vectors.shape[-1]]))]

    def save(self, folder: str | Path) -> Path:
        """Write `learned_embeds.safetensors` (SDXL: and `learned_embeds_2.safetensors`) and `concept.json` into
        `folder` (atomically each)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        parts = self.parts()
        for name, part in zip((EMBEDS_FILE, EMBEDS_FILE_2), parts):
            _atomic(folder / name, lambda tmp, part=part: save_file({self.token: part}, tmp))
        if len(parts) == 1:  # a folder reused for an SD concept must not keep an SDXL one's second half
            (folder / EMBEDS_FILE_2).unlink(missing_ok=True)
        info = {
            "token": self.token,
            "num_vectors": int(self.vectors.shape[0]),
            "dim": int(self.vectors.shape[1]),
            "encoder_dims": [int(part.shape[1]) for part in parts],
            "initializer": self.initializer_used or self.settings.initializer,
            "class_word": self.settings.class_word,
            "template": self.settings.template,
            "settings": to_dict(self.settings),
            "model": self.model,
            "model_revision": self.model_revision,
            "steps_done": self.steps_done,
            "final_losses": self.final_losses,
            "shapeinv_version": self.version,
        }
        if self.lora:
            save_lora(folder, self.lora)
        else:  # a folder reused for a concept without LoRA must not keep an old one
            (folder / LORA_FILE).unlink(missing_ok=True)
        _atomic(folder / CONCEPT_FILE, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=2) + "\n"))
        return folder

    @classmethod
    def load(cls, source: str | Path) -> Concept:
        """Load a concept folder (or a bare `learned_embeds.safetensors` made elsewhere).

        Everything is checked before use: the file's size, one tensor, 1 to 16 finite vectors.
        Messages name the file, not its folder (an upload's folder is the server's business).
        """
        source = Path(source)
        embeds = source / EMBEDS_FILE if source.is_dir() else source
        if not embeds.is_file():
            raise InputError(
                f"No learned concept in {source}: {EMBEDS_FILE} is missing. Run `shapeinv invert IMAGE -o "
                f"{source}` first, or point at a folder (or .safetensors file) that holds a learned *s."
            )
        name = embeds.name
        tensors = _read_tensors(embeds)
        widths = None
        if set(tensors) == set(SDXL_KEYS):  # AUTOMATIC1111/ComfyUI's SDXL file: the word is the file's name
            token = embeds.stem
            vectors, widths = _joined(name, token, [_checked_vectors(name, token, tensors[key]) for key in SDXL_KEYS])
        elif len(tensors) != 1:
            raise InputError(f"{name} holds {len(tensors)} tensors; a textual-inversion file holds exactly one "
                             "(the learned word's vectors), or clip_l and clip_g for SDXL.")
        else:
            token, vectors = next(iter(tensors.items()))
            if token in A1111_KEYS:
                token = embeds.stem
            vectors = _checked_vectors(name, token, vectors)
        second = embeds.parent / EMBEDS_FILE_2
        if embeds.name == EMBEDS_FILE and second.is_file():  # diffusers' SDXL pair
            other = _read_tensors(second)
            if len(other) != 1 or next(iter(other)) != token:
                raise InputError(f"{EMBEDS_FILE_2} does not hold the word {token!r} of {name}; the two files of "
                                 "an SDXL concept come from one run. Use both files of the same run.")
            vectors, widths = _joined(name, token, [vectors, _checked_vectors(EMBEDS_FILE_2, token,
                                                                               next(iter(other.values())))])
        concept_json = embeds.parent / CONCEPT_FILE
        if not concept_json.is_file() or embeds.name != EMBEDS_FILE:
            return cls(token=token, vectors=vectors, settings=InversionConfig(placeholder=token), widths=widths)
        try:
            info: dict[str, Any] = json.loads(concept_json.read_text())
            settings = from_dict(InversionConfig, info.get("settings", {}))
            steps_done = int(info.get("steps_done", 0))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError, TypeError, ValueError) as error:
            raise InputError(f"{CONCEPT_FILE} beside {name} is damaged ({type(error).__name__}). Delete it to use "
                             "the vectors alone, or re-run the inversion.") from error
        return cls(
            token=token,
            vectors=vectors,
            settings=settings,
            model=info.get("model"),
            model_revision=info.get("model_revision"),
            steps_done=steps_done,
            final_losses=info.get("final_losses", {}),
            version=info.get("shapeinv_version", __version__),
            lora=load_lora(embeds.parent),
            initializer_used=info.get("initializer") if isinstance(info.get("initializer"), str) else None,
            widths=widths,
        )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A small safetensors file's tensors, or `InputError` saying it is too big or unreadable."""
    size = path.stat().st_size
    if size > MAX_CONCEPT_BYTES:
        raise InputError(f"{path.name} is {size / 1e6:.1f} MB; a learned concept is a few kB (at most "
                         f"{MAX_VECTORS} vectors). Use the learned_embeds.safetensors of a textual inversion.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"{path.name} is not a readable safetensors file. Use the learned_embeds.safetensors "
                         "that an inversion wrote (re-run it if the file is damaged).") from error


def _joined(name: str, token: str, parts: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """SDXL's two encoders' vectors side by side, and each one's width; they must have as many vectors."""
    if len({part.shape[0] for part in parts}) != 1:
        raise InputError(f"{name}: the two text encoders' parts of {token!r} have different numbers of vectors "
                         f"({', '.join(str(part.shape[0]) for part in parts)}); they must match.")
    return torch.cat(parts, dim=-1), tuple(int(part.shape[1]) for part in parts)


def _checked_vectors(name: str, token: str, vectors: torch.Tensor) -> torch.Tensor:
    """[num_vectors, dim] float32, or `InputError` saying what is wrong with the file's tensor."""
    if not token.strip() or len(token) > 100:
        raise InputError(f"{name} names its word {token[:40]!r}; a learned word is 1-100 characters, e.g. '*s'.")
    if not vectors.is_floating_point():
        raise InputError(f"{name} holds {vectors.dtype} numbers; a learned concept holds floating-point vectors.")
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise InputError(f"{name} holds a tensor of shape {list(vectors.shape)}; a learned concept is "
                         "[vectors, dim] (e.g. [1, 768]) or [dim].")
    if vectors.shape[0] > MAX_VECTORS:
        raise InputError(f"{name} holds {vectors.shape[0]} vectors; a learned word has 1 to {MAX_VECTORS}. "
                         "Use the learned_embeds.safetensors of a textual inversion.")
    vectors = vectors.float()
    if not torch.isfinite(vectors).all():
        raise InputError(f"{name} holds NaN or infinite numbers (a run that diverged?). Use an earlier checkpoint, "
                         "or learn it again with a lower learning rate.")
    return vectors


def _atomic(path: Path, write) -> None:
    """Write through a temporary file so a crash never leaves a half-written file behind."""
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    os.replace(tmp, path)


# --- tokens in the tokenizer and text encoder ------------------------------------------------

def placeholder_tokens(token: str, num_vectors: int) -> list[str]:
    """diffusers' multi-vector naming: '*s', '*s_1', '*s_2', ..."""
    return [token] + [f"{token}_{index}" for index in range(1, num_vectors)]


def install_tokens(pipe, token: str, vectors: torch.Tensor) -> list[int]:
    """Add `token` (with `vectors` as its embedding rows) to the pipeline, replacing any earlier one.

    Uses diffusers' own loader so that prompts are expanded ('*s' -> '*s *s_1 ...') the same way
    everywhere. SDXL gets each encoder's part of the vectors (see `families`). Returns the token
    ids in the first tokenizer, one per vector.
    """
    if f"{token.lower()}</w>" in pipe.tokenizer.get_vocab():
        raise InputError(
            f"Cannot use {token!r} as the placeholder: it is a word the model already knows, and every prompt "
            "using that word would change. Pick a string that is not a word, such as '*s' or '<my-chair>'."
        )
    with BUILD_LOCK:  # growing a table makes a new embedding module: never while another thread loads a model
        remove_tokens(pipe, token)
        pairs = text_pairs(pipe)
        parts = split_vectors(vectors.detach().cpu().float(), encoder_widths(pipe))
        for (tokenizer, encoder), part in zip(pairs, parts):
            # Grow the table ourselves without transformers' "mean resizing", which fits a Gaussian to
            # all 49k rows (slow, noisy in the log, and the rows are overwritten at once anyway).
            encoder.resize_token_embeddings(len(tokenizer) + vectors.shape[0], mean_resizing=False)
            try:
                pipe.load_textual_inversion({token: part.contiguous()}, token=token, tokenizer=tokenizer,
                                            text_encoder=encoder)
            except ValueError as error:
                raise InputError(
                    f"Cannot use {token!r} as the placeholder: {error}. Pick a string that is not a word, such as "
                    "'*s' or '<my-chair>'."
                ) from error
        freeze_text(pipe)
    return pipe.tokenizer.convert_tokens_to_ids(placeholder_tokens(token, vectors.shape[0]))


def remove_tokens(pipe, token: str) -> None:
    """Remove `token` and its extra vectors ('*s_1', ...) if an earlier concept installed them."""
    for tokenizer, encoder in text_pairs(pipe):
        vocab = tokenizer.get_added_vocab()  # never the model's own words
        if token not in vocab:
            continue
        present = [token]
        index = 1
        while f"{token}_{index}" in vocab:
            present.append(f"{token}_{index}")
            index += 1
        with BUILD_LOCK:  # shrinking the table makes a new embedding module too
            pipe.unload_textual_inversion(present, tokenizer=tokenizer, text_encoder=encoder)
    freeze_text(pipe)


def initializer_vectors(pipe, word: str, num_vectors: int) -> torch.Tensor:
    """Starting vectors: the initializer's token embeddings (mean-filled if the counts differ), every encoder's
    rows side by side."""
    parts = []
    for tokenizer, encoder in text_pairs(pipe):
        ids = tokenizer(word, add_special_tokens=False).input_ids
        if not ids:
            raise InputError(f"The initializer {word!r} has no tokens. Use a plain word such as 'chair'.")
        rows = encoder.get_input_embeddings().weight.detach().float().cpu()[ids]
        parts.append(rows.clone() if len(ids) == num_vectors else rows.mean(dim=0, keepdim=True).repeat(num_vectors, 1))
    return torch.cat(parts, dim=-1)
