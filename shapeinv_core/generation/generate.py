"""Edit prompts with `*s` -> images, with a learned concept (and its LoRA, if any) loaded into the pipeline.

A shape schedule (`shape_steps`, after ProSpect's finding that early denoising steps set the
structure) lets the prompt with `*s` condition only the first fraction of the steps and the same
prompt without its `*s` phrase the rest, so the shape is set early and the edit decides the look.
A layout schedule (`layout_steps`, Prompt-to-Prompt's self-attention injection, layout.py) draws
each edit beside the reconstruction from the same noise and gives it the reconstruction's
self-attention maps for the first steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from ..config import GenerationConfig, to_dict
from ..errors import InputError
from ..evaluation.metrics import strip_placeholder
from ..method.concept import Concept, install_tokens
from ..method.lora import lora_for_generation
from ..models.families import encoder_widths, prompt_embeddings, text_pairs
from ..models.loading import LoadedModel
from .layout import LayoutSharing, keep_layout
from .shape_guidance import shape_guided


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: Image.Image


MAX_PROMPT_CHARS = 500  # the text encoder reads 77 tokens (about 75 words); longer text would be cut silently
MAX_NORM_RATIO = 100.0  # a concept vector this many times longer than the model's longest word draws black


def check_prompts(prompts: list[str], placeholder: str, max_chars: int = MAX_PROMPT_CHARS) -> list[str]:
    """Refuse prompts that do not use the learned word, showing how to write one, and prompts too long to read."""
    prompts = [prompt.strip() for prompt in prompts if prompt and prompt.strip()]
    if not prompts:
        raise InputError(f"No prompt given. Write one that uses {placeholder}, e.g. "
                         f"'a red chair in the shape of {placeholder}'.")
    for prompt in prompts:
        if len(prompt) > max_chars:
            raise InputError(f"A prompt of {len(prompt)} characters is longer than {max_chars}; the model reads "
                             "about 75 words, the rest would be dropped without a word. Shorten it.")
        if placeholder not in prompt:
            raise InputError(
                f"The prompt {prompt!r} does not use the learned word {placeholder}, so it would ignore the "
                f"shape. Write it like 'a leopard-print chair in the shape of {placeholder}'."
            )
    return prompts


def generate(model: LoadedModel, concept: Concept, prompts: list[str], config: GenerationConfig | None = None,
             on_image: Callable[[int, int], None] | None = None,
             on_sampling_step: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
    """`num_images` images per prompt, in batches; image i of a prompt uses seed `seed + i`.

    Per-image seeds make every image reproducible on its own, whatever the batch size.
    `on_image(done, total)` is called after each batch; `on_sampling_step(done, total)` after each
    denoising step, counted over all batches (for a progress bar while a request draws).
    """
    config = (config or GenerationConfig()).validate()
    prompts = check_prompts(prompts, concept.token)
    pipe = model.pipe
    _check_dimensions(pipe, concept)
    install_tokens(pipe, concept.token, concept.vectors)
    pipe.scheduler = _sampling_scheduler(pipe)
    resolution = concept.settings.resolution
    height, width = config.height or resolution, config.width or resolution

    work = [(prompt, config.seed + index) for prompt in prompts for index in range(config.num_images)]
    switch_at, shape_first = shape_schedule(config)
    layout_until = round(config.layout_steps * config.steps)
    results: list[GeneratedImage] = []
    batches = -(-len(work) // config.batch_size)
    with lora_for_generation(pipe, concept.lora):
        for start in range(0, len(work), config.batch_size):
            batch = work[start:start + config.batch_size]
            with_token = [prompt for prompt, _ in batch]
            without = [strip_placeholder(prompt, concept.token) for prompt in with_token]
            first, then = (with_token, without) if shape_first else (without, with_token)
            if switch_at == 0:
                first = then
            seeds = [seed for _, seed in batch]
            sharing = LayoutSharing(len(batch), layout_until)
            if sharing.active:  # the reconstructions ride in front of the edits, each from its edit's noise
                source = [concept.settings.prompt()] * len(batch)
                first, then, seeds = source + first, source + then, seeds + seeds
            callback = _Callbacks()
            if sharing.active:
                callback.add(sharing)
            if 0 < switch_at < config.steps:
                callback.add(_PromptSwitch(switch_at, prompt_embeddings(pipe, then)))
            if on_sampling_step is not None:
                callback.add(_StepCounter(start // config.batch_size * config.steps, batches * config.steps,
                                          on_sampling_step))
            guided_toward = [strip_placeholder(prompt, concept.token) for prompt in first]
            guiding = shape_guided(pipe, prompt_embeddings(pipe, guided_toward), config.shape_guidance) \
                if config.shape_guidance else nullcontext()
            with keep_layout(pipe.unet, sharing) if sharing.active else nullcontext(), guiding:
                output = pipe(
                    prompt=first,
                    negative_prompt=[config.negative_prompt] * len(first) if config.negative_prompt else None,
                    num_inference_steps=config.steps,
                    guidance_scale=config.guidance,
                    height=height,
                    width=width,
                    generator=[torch.Generator().manual_seed(seed) for seed in seeds],
                    callback_on_step_end=callback if callback else None,
                    callback_on_step_end_tensor_inputs=callback.names(),
                )
            images = output.images[-len(batch):]  # with layout keeping, the reconstructions come first
            results += [GeneratedImage(prompt, seed, image) for (prompt, seed), image in zip(batch, images)]
            if on_image is not None:
                on_image(len(results), len(work))
    return results


def image_info(concept: Concept, config: GenerationConfig, prompt: str, seed: int) -> PngInfo:
    """What a generated PNG records of how it was made: the prompt and seed, the sampling settings, and how its
    `*s` was learned (model, the word it started from, every training setting), so an image says what was done."""
    info = PngInfo()
    info.add_text("prompt", prompt)
    info.add_text("seed", str(seed))
    info.add_text("generation", json.dumps(to_dict(config)))
    info.add_text("concept", json.dumps({"token": concept.token, "model": concept.model,
                                         "initializer_used": concept.initializer_used,
                                         "steps_done": concept.steps_done, "settings": to_dict(concept.settings)}))
    return info


def shape_schedule(config: GenerationConfig) -> tuple[int, bool]:
    """(step after which the prompt switches, whether the *s prompt comes first).

    The *s prompt conditions round(shape_steps x steps) steps: the first ones ("first") or the
    last ones ("last"). A switch at 0 means the second prompt throughout, at `steps` the first.
    """
    with_token = round(config.shape_steps * config.steps)
    if config.shape_order == "first":
        return with_token, True
    return config.steps - with_token, False


class _PromptSwitch:
    """`callback_on_step_end`: after step `at_step`, the text half of the prompt's encodings becomes `embeds`
    (SDXL: its pooled embedding too)."""

    def __init__(self, at_step: int, embeds: dict[str, torch.Tensor]):
        self.at_step, self.embeds = at_step, embeds
        self.names = tuple(embeds)

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        if step + 1 != self.at_step:
            return {}
        changed = {}
        for name, embeds in self.embeds.items():
            current = callback_kwargs[name]
            if pipe.do_classifier_free_guidance:  # [unconditional rows, text rows]
                unconditional = current[: current.shape[0] // 2]
                changed[name] = torch.cat([unconditional, embeds.to(current.dtype)])
            else:
                changed[name] = embeds.to(current.dtype)
        return changed


class _StepCounter:
    """`callback_on_step_end` that reports steps done over all batches."""

    names = ()

    def __init__(self, before: int, total: int, report: Callable[[int, int], None]):
        self.before, self.total, self.report = before, total, report

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        self.report(self.before + step + 1, self.total)
        return {}


class _Callbacks:
    """One `callback_on_step_end` running several in turn; false when empty."""

    def __init__(self):
        self.parts = []

    def add(self, part) -> None:
        self.parts.append(part)

    def names(self) -> list[str]:
        """The tensors the parts read: at least the prompt embeddings, which the pipeline always offers."""
        return list(dict.fromkeys(name for part in self.parts for name in part.names)) or ["prompt_embeds"]

    def __bool__(self) -> bool:
        return bool(self.parts)

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        changed = {}
        for part in self.parts:
            changed.update(part(pipe, step, timestep, callback_kwargs))
        return changed


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe version of a prompt, for naming saved images."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def _check_dimensions(pipe, concept: Concept) -> None:
    """The vectors fit the text encoders: the same widths, and lengths near the model's own words' (finite but
    huge values pass every other check and draw black images)."""
    widths = encoder_widths(pipe)
    if list(concept.widths or [concept.vectors.shape[-1]]) != widths:
        have = "+".join(map(str, concept.widths or [concept.vectors.shape[-1]]))
        raise InputError(
            f"This concept has {have}-dimensional vectors but the model's text encoders use "
            f"{'+'.join(map(str, widths))}. Load the model it was learned with ({concept.model or 'see concept.json'})."
        )
    for (_, encoder), part in zip(text_pairs(pipe), concept.parts()):
        longest = float(encoder.get_input_embeddings().weight.detach().float().norm(dim=-1).max())
        length = float(part.norm(dim=-1).max())
        if not length <= MAX_NORM_RATIO * longest:  # also refuses a length that overflowed to inf
            raise InputError(
                f"This concept's vectors are {length:.3g} long, over {MAX_NORM_RATIO:g} times the longest word of "
                f"this model ({longest:.3g}); they would draw black images. Use a concept learned by textual "
                "inversion for this model (its vectors are about as long as the model's words)."
            )


def _sampling_scheduler(pipe):
    """DPM-Solver++ (multistep): good images in 20-30 steps, from the model's own noise schedule."""
    from diffusers import DPMSolverMultistepScheduler

    if isinstance(pipe.scheduler, DPMSolverMultistepScheduler):
        return pipe.scheduler
    return DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
