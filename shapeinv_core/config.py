"""Validated settings for inversion and generation, with a JSON round-trip.

Settings are plain dataclasses so that a run folder's `config.json` says exactly what was
done, and so that the CLI, the app and a notebook all share one set of defaults.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_PLACEHOLDER = "*s"
DEFAULT_TEMPLATE = "a photo of {cls} in the shape of {token}"
ATTENTION_LAYER_CHOICES = ("all", "down", "mid", "up")
MAP_NORMS = ("none", "max")
MASK_FORMS = ("mse", "outside")
TUNE_CHOICES = ("none", "lora")
SHAPE_ORDERS = ("first", "last")
APPEARANCES = ("photo", "varied")
AUTO_INITIALIZER = "auto"  # initializer: the shape word that explains the photo best (probe.py)
ATTENTION_RESOLUTIONS = (4, 8, 16, 32, 64, 128)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RESERVED_NAMES = ("learned_embeds", "pytorch_lora_weights", "concept", "config")  # files a run folder has
MAX_SEED = 2**32 - 1  # what every random generator involved (torch, numpy) accepts
MAX_VECTORS = 16
MAX_WORD_CHARS = 100  # class word, initializer, placeholder
MAX_TEMPLATE_CHARS = 300


@dataclass
class InversionConfig:
    """How `*s` is learned.

    Defaults: the measured best at keeping a chair's shape through edits (bench/RESULTS.md, "Does *s carry
    *this* chair's shape?"): varied views with their looks named, `*s` started from the shape word that
    explains the photo best, mask weight 0.1, then a short LoRA phase on the cross-attention keys/values.
    `research_form()` gives the research notes' form (DESIGN.md).
    """

    placeholder: str = DEFAULT_PLACEHOLDER
    initializer: str = AUTO_INITIALIZER
    class_word: str = "chair"
    template: str = DEFAULT_TEMPLATE
    num_vectors: int = 1
    mask_weight: float = 0.1
    map_resolution: int = 16
    attention_layers: str = "all"
    map_norm: str = "none"
    attention_res: str = "all"  # "all", or the layers' grid sides at the training resolution, e.g. "16" or "16,32"
    mask_form: str = "mse"  # "mse": the whole map toward the mask; "outside": only attention outside it (MagiCapture)
    background_weight: float = 1.0  # denoising loss weight of background pixels; 1 = whole image, 0 = Break-A-Scene
    # "photo": learn from the photo alone (the research's form); "varied": from the photo and re-drawn views
    # of it in named colours and patterns, each named in the prompt, so the shape is what *s must explain.
    appearance: str = "varied"
    views: int = 32  # the "varied" bank: the photo plus views - 1 re-drawn ones
    # initializer "auto": how many of the views (the photo first) the word probe reads, each with its look named.
    # The photo alone ranks words by its own look as much as by its shape: 8 views pick the chair's own family
    # 33 times in 40 against 27, and edits keep the shape a little better (bench/RESULTS.md, "probe views").
    probe_views: int = 8
    init_reg: float = 0.0
    # AttnDreamBooth's cross-attention regularisation: per layer, the mean and variance of *s's attention map
    # pulled toward those of the class word in the same prompt, so *s attends like an object word (0 = off).
    attention_reg: float = 0.0
    learning_rate: float = 5e-3
    steps: int = 500
    batch_size: int = 4
    seed: int = 0
    resolution: int = 512
    checkpoint_every: int = 50
    balance_every: int = 10  # steps between measurements of the mask/denoising gradient ratio (0: never)
    # "lora": a second phase that also trains low-rank cross-attention key/value updates on the same views.
    # The word alone carries the family and proportions; the LoRA adds this chair's own outline: reconstructions
    # +0.029 and edits +0.013 of specificity on the toy world (bench/RESULTS.md, "A short LoRA phase").
    tune: str = "lora"
    lora_rank: int = 4
    lora_steps: int = 100
    lora_lr: float = 1e-3  # 1e-4 barely moves the weights in 100 steps; 1e-3 for 300 steps drowns red edits
    name: str = ""  # the concept's file name for other tools (NAME.safetensors); "" = "shape-concept"
    preview_prompt: str = ""  # what the app's preview at each checkpoint draws; "" = the training prompt

    def validate(self) -> InversionConfig:
        """Raise `InputError` naming the first bad setting and its allowed range."""
        _check_types(self)
        _check(self.placeholder.strip() == self.placeholder and self.placeholder != "",
               "placeholder must be a non-empty string without surrounding spaces, e.g. '*s'")
        _check(" " not in self.placeholder, "placeholder must be one word, e.g. '*s'")
        _check(self.initializer.strip() != "", "initializer must be a word such as 'chair'")
        for name in ("placeholder", "initializer", "class_word"):
            _check(len(getattr(self, name)) <= MAX_WORD_CHARS, f"{name} must be at most {MAX_WORD_CHARS} characters")
        _check(len(self.template) <= MAX_TEMPLATE_CHARS, f"template must be at most {MAX_TEMPLATE_CHARS} characters")
        _check(not self.preview_prompt or (self.placeholder in self.preview_prompt
                                           and len(self.preview_prompt) <= MAX_TEMPLATE_CHARS),
               f"the preview prompt must use {self.placeholder} (e.g. 'a red chair in the shape of "
               f"{self.placeholder}') and be at most {MAX_TEMPLATE_CHARS} characters; empty: the training prompt")
        _check("{token}" in self.template and _formats(self.template),
               f"template must contain '{{token}}' (and usually '{{cls}}') and no other {{...}} field, "
               f"e.g. '{DEFAULT_TEMPLATE}'")
        _check(1 <= self.num_vectors <= MAX_VECTORS, f"num_vectors must be between 1 and {MAX_VECTORS}")
        for name in ("mask_weight", "init_reg", "attention_reg", "learning_rate"):
            _check(math.isfinite(getattr(self, name)), f"{name} must be a finite number")
        _check(0.0 <= self.mask_weight <= 1.0,
               "mask_weight must be between 0 (plain textual inversion) and 1; 0.1 is the default")
        _check(self.map_resolution in (8, 16, 32, 64), "map_resolution must be 8, 16, 32 or 64")
        _check(self.attention_layers in ATTENTION_LAYER_CHOICES,
               f"attention_layers must be one of {', '.join(ATTENTION_LAYER_CHOICES)}")
        _check(self.map_norm in MAP_NORMS, "map_norm must be 'none' (research form) or 'max' (Break-A-Scene)")
        _check(self.attention_res == "all" or bool(self.map_sides()),
               "attention_res must be 'all' or grid sides such as '16' or '16,32' "
               f"(each one of {', '.join(map(str, ATTENTION_RESOLUTIONS))})")
        _check(self.mask_form in MASK_FORMS, "mask_form must be 'mse' (research form) or 'outside' (MagiCapture)")
        _check(0.0 <= self.background_weight <= 1.0,
               "background_weight must be between 0 (object only, Break-A-Scene) and 1 (whole image, the default)")
        _check(self.appearance in APPEARANCES,
               "appearance must be 'photo' (the photo alone) or 'varied' (re-drawn in named looks)")
        _check(2 <= self.views <= 256, "views must be between 2 and 256; 32 is the default")
        _check(1 <= self.probe_views <= 64, "probe_views must be between 1 (the photo alone) and 64")
        _check(self.balance_every >= 0, "balance_every must be >= 0 (0 never measures the gradient ratio)")
        _check(self.tune in TUNE_CHOICES, "tune must be 'none' (only *s) or 'lora' (also cross-attention LoRA)")
        _check(1 <= self.lora_rank <= 128, "lora_rank must be between 1 and 128; 4 is the default")
        _check(1 <= self.lora_steps <= 100_000, "lora_steps must be between 1 and 100000")
        _check(0.0 < self.lora_lr <= 1.0, "lora_lr must be in (0, 1]; 1e-3 is the default")
        _check(self.name == "" or bool(NAME_PATTERN.match(self.name)),
               "name must be lower-case letters, digits, '-' or '_' (up to 64), e.g. 'oak-chair'")
        _check(self.name not in RESERVED_NAMES, f"name must not be one of {', '.join(RESERVED_NAMES)}")
        _check(0.0 <= self.init_reg <= 100.0, "init_reg must be between 0 (no pull toward the initializer) and 100")
        _check(0.0 <= self.attention_reg <= 1e6,
               "attention_reg must be between 0 (off, the default) and 1e6 (AttnDreamBooth's pull of *s's attention "
               "toward the class word's; on the toy model 1e-4 keeps the shape and 0.01 already drowns it)")
        _check(self.attention_reg == 0.0 or "{cls}" in self.template,
               "attention_reg compares *s's attention with the class word's, so the template must contain '{cls}'")
        _check(0.0 < self.learning_rate <= 1.0, "learning_rate must be in (0, 1]; 5e-3 is the default")
        _check(1 <= self.steps <= 100_000, "steps must be between 1 and 100000")
        _check(1 <= self.batch_size <= 64, "batch_size (timesteps per step) must be between 1 and 64")
        _check(0 <= self.seed <= MAX_SEED, f"seed must be between 0 and {MAX_SEED}")
        _check(self.resolution % 64 == 0 and 64 <= self.resolution <= 1024,
               "resolution must be a multiple of 64 between 64 and 1024 (512 for SD 1.x, 768 for SD 2.x)")
        _check(self.checkpoint_every >= 1, "checkpoint_every must be >= 1")
        return self

    def map_sides(self) -> tuple[int, ...]:
        """The layer grid sides `attention_res` asks for; () for 'all' (or anything unreadable)."""
        if self.attention_res == "all":
            return ()
        try:
            sides = tuple(sorted({int(part) for part in self.attention_res.split(",") if part.strip()}))
        except ValueError:
            return ()
        return sides if sides and all(side in ATTENTION_RESOLUTIONS for side in sides) else ()

    def total_steps(self) -> int:
        """The word's steps plus the LoRA phase's, if it has one: what progress and estimates count."""
        return self.steps + (self.lora_steps if self.tune == "lora" else 0)

    def research_form(self) -> InversionConfig:
        """These settings in the research notes' form: the photo alone, `*s` started from the class word, no LoRA."""
        return dataclasses.replace(self, appearance="photo", initializer=self.class_word, tune="none")

    def prompt(self, look: str = "", token: str | None = None) -> str:
        """The training prompt, e.g. 'a photo of chair in the shape of *s'; a view's `look` goes before the class
        word ('a photo of red striped chair in the shape of *s'); `token` writes other words in place of *s."""
        subject = f"{look} {self.class_word}" if look else self.class_word
        return self.template.format(cls=subject, token=self.placeholder if token is None else token)


@dataclass
class GenerationConfig:
    """How edit prompts are turned into images."""

    negative_prompt: str = ""
    num_images: int = 1
    seed: int = 0
    steps: int = 25
    guidance: float = 7.5
    height: int | None = None
    width: int | None = None
    batch_size: int = 4
    shape_steps: float = 1.0  # fraction of the denoising steps conditioned by the prompt with *s
    shape_order: str = "first"  # "first": *s sets the shape early; "last": the *s prompt takes the last steps
    # Prompt-to-Prompt-style layout keeping: for this fraction of the first steps, each edit's self-attention
    # maps are the reconstruction's ("a photo of chair in the shape of *s", same seed, drawn alongside).
    layout_steps: float = 0.0
    # Shape guidance (shape_guidance.py): a second guidance term toward what *s adds to the prompt (0 = off).
    shape_guidance: float = 0.0

    def validate(self) -> GenerationConfig:
        _check_types(self)
        _check(1 <= self.num_images <= 64, "num_images must be between 1 and 64")
        _check(0 <= self.seed and self.seed + self.num_images - 1 <= MAX_SEED,
               f"seed must be between 0 and {MAX_SEED} (each image of a prompt adds 1 to it)")
        _check(len(self.negative_prompt) <= 1000, "negative_prompt must be at most 1000 characters")
        _check(1 <= self.steps <= 200, "steps must be between 1 and 200; 25 is the default")
        _check(0.0 <= self.guidance <= 30.0, "guidance must be between 0 and 30; 7.5 is the default")
        for name in ("height", "width"):
            value = getattr(self, name)
            _check(value is None or (value % 8 == 0 and 64 <= value <= 2048),
                   f"{name} must be a multiple of 8 between 64 and 2048")
        _check(1 <= self.batch_size <= 64, "batch_size must be between 1 and 64")
        _check(0.0 <= self.shape_steps <= 1.0,
               "shape_steps must be between 0 (never the *s prompt) and 1 (always; the default)")
        _check(0.0 <= self.layout_steps <= 1.0,
               "layout_steps must be between 0 (off, the default) and 1 (every step keeps the reconstruction's layout)")
        _check(self.shape_order in SHAPE_ORDERS, "shape_order must be 'first' (the default) or 'last'")
        _check(0.0 <= self.shape_guidance <= 20.0,
               "shape_guidance must be between 0 (off) and 20 (how much louder *s speaks than the rest of the prompt)")
        return self


_KINDS = {"int": ((int,), "a whole number"), "float": ((int, float), "a number"), "str": ((str,), "text"),
          "int | None": ((int, type(None)), "a whole number or empty")}


def _check_types(config: Any) -> None:
    """Every setting of the declared kind (a JSON file or an API call may bring anything)."""
    for item in dataclasses.fields(config):
        if item.type not in _KINDS:  # a kind this check does not know yet: its own rule in validate() holds
            continue
        kinds, words = _KINDS[item.type]
        value = getattr(config, item.name)
        _check(isinstance(value, kinds) and not isinstance(value, bool),
               f"{item.name} must be {words}, not {value!r:.40}")


def _formats(template: str) -> bool:
    """Whether `template` fills in with only {cls} and {token} (no stray braces or other fields)."""
    try:
        template.format(cls="chair", token="*s")
    except (KeyError, IndexError, ValueError, AttributeError):
        return False
    return True


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(f"Invalid setting: {message}.")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type, data: dict[str, Any]):
    """Build `cls` from a dict, refusing unknown keys so a typo is not silently ignored."""
    if not isinstance(data, dict):
        raise InputError(f"Settings must be a JSON object of name: value pairs, not {type(data).__name__}.")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"Unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return cls(**data).validate()


def save_json(config: Any, path: str | Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")


def load_json(cls: type, path: str | Path):
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"Cannot read settings from {path}: {error}. Fix or delete the file.") from error
    return from_dict(cls, data)
