"""Edit prompts with `*s` -> images, with a learned concept loaded into the pipeline."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image

from .concept import Concept, install_tokens
from .config import GenerationConfig
from .errors import InputError
from .models import LoadedModel


@dataclass
class GeneratedImage:
    prompt: str
    seed: int
    image: Image.Image


def check_prompts(prompts: list[str], placeholder: str) -> list[str]:
    """Refuse prompts that do not use the learned word, showing how to write one."""
    prompts = [prompt.strip() for prompt in prompts if prompt and prompt.strip()]
    if not prompts:
        raise InputError(f"No prompt given. Write one that uses {placeholder}, e.g. "
                         f"'a red chair in the shape of {placeholder}'.")
    for prompt in prompts:
        if placeholder not in prompt:
            raise InputError(
                f"The prompt {prompt!r} does not use the learned word {placeholder}, so it would ignore the "
                f"shape. Write it like 'a leopard-print chair in the shape of {placeholder}'."
            )
    return prompts


def generate(model: LoadedModel, concept: Concept, prompts: list[str], config: GenerationConfig | None = None,
             on_image: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
    """`num_images` images per prompt, in batches; image i of a prompt uses seed `seed + i`.

    Per-image seeds make every image reproducible on its own, whatever the batch size.
    `on_image(done, total)` is called after each batch.
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
    results: list[GeneratedImage] = []
    for start in range(0, len(work), config.batch_size):
        batch = work[start:start + config.batch_size]
        output = pipe(
            prompt=[prompt for prompt, _ in batch],
            negative_prompt=[config.negative_prompt] * len(batch) if config.negative_prompt else None,
            num_inference_steps=config.steps,
            guidance_scale=config.guidance,
            height=height,
            width=width,
            generator=[torch.Generator().manual_seed(seed) for _, seed in batch],
        )
        results += [GeneratedImage(prompt, seed, image) for (prompt, seed), image in zip(batch, output.images)]
        if on_image is not None:
            on_image(len(results), len(work))
    return results


def slug(text: str, limit: int = 48) -> str:
    """A file-name-safe version of a prompt, for naming saved images."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "prompt"


def _check_dimensions(pipe, concept: Concept) -> None:
    expected = pipe.text_encoder.get_input_embeddings().weight.shape[-1]
    if concept.vectors.shape[-1] != expected:
        raise InputError(
            f"This concept has {concept.vectors.shape[-1]}-dimensional vectors but the model's text encoder "
            f"uses {expected}. Load the model it was learned with ({concept.model or 'see concept.json'})."
        )


def _sampling_scheduler(pipe):
    """DPM-Solver++ (multistep): good images in 20-30 steps, from the model's own noise schedule."""
    from diffusers import DPMSolverMultistepScheduler

    if isinstance(pipe.scheduler, DPMSolverMultistepScheduler):
        return pipe.scheduler
    return DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
