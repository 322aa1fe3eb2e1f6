"""What differs between the model families shapeinv handles: Stable Diffusion 1.x/2.x and SDXL.

One inversion loop serves both; a family only says
- which pipeline class loads it, told from `model_index.json` or a checkpoint's keys, never its name;
- which (tokenizer, text encoder) pairs a prompt goes through: one for SD, two for SDXL;
- what the UNet takes beside the text: nothing for SD; for SDXL the second encoder's pooled
  embedding and the image's sizes (`add_time_ids`: original size, crop corner, target size).

`*s` has one embedding row per vector in *each* encoder, trained together (as kohya's and
diffusers' SDXL scripts do). In the loop the rows sit side by side in one vector of width
768 + 1280 (SDXL) and are split where they enter their encoders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ModelLoadError

SD = "sd"  # Stable Diffusion 1.x / 2.x
SDXL = "sdxl"
SUPPORTED = "Stable Diffusion 1.x/2.x and SDXL (base or fine-tunes)"
FAMILY_NAMES = {SD: "Stable Diffusion 1.x/2.x", SDXL: "SDXL"}

# model_index.json's _class_name -> family; any other class is named in the refusal.
PIPELINE_FAMILIES = {"StableDiffusionPipeline": SD, "StableDiffusionXLPipeline": SDXL}
KNOWN_OTHERS = {
    "StableDiffusionXLImg2ImgPipeline": "an SDXL refiner (it has no first text encoder and cannot draw from text "
                                        "alone)",
    "StableDiffusion3Pipeline": "a Stable Diffusion 3 model",
    "FluxPipeline": "a FLUX model",
    "PixArtAlphaPipeline": "a PixArt model",
    "PixArtSigmaPipeline": "a PixArt model",
    "KandinskyV22Pipeline": "a Kandinsky model",
    "StableCascadePriorPipeline": "a Stable Cascade model",
}
# Key prefixes of single-file checkpoints (the original Stability layouts), most specific first.
CHECKPOINT_KEYS = (
    ("model.diffusion_model.joint_blocks.", "a Stable Diffusion 3 model"),
    ("double_blocks.", "a FLUX model"),
    ("model.diffusion_model.double_blocks.", "a FLUX model"),
    ("conditioner.embedders.1.", SDXL),  # the second (OpenCLIP bigG) text encoder
    ("conditioner.embedders.0.model.", "an SDXL refiner (it has only the OpenCLIP bigG text encoder)"),
    ("cond_stage_model.", SD),
)


def family_of_pipe(pipe) -> str:
    """SDXL when the pipeline has a second text encoder, else SD."""
    return SDXL if getattr(pipe, "text_encoder_2", None) is not None else SD


def family_of_index(index: dict, source: str) -> str:
    """The family from a parsed `model_index.json`, or `ModelLoadError` naming what the model is instead."""
    name = str(index.get("_class_name", ""))
    if name in PIPELINE_FAMILIES:
        return PIPELINE_FAMILIES[name]
    what = KNOWN_OTHERS.get(name, f"a {name or 'pipeline of unknown kind'}")
    raise ModelLoadError(f"{source} is {what}; shapeinv handles {SUPPORTED}.")


def family_of_folder(folder: Path, source: str | None = None) -> str:
    """The family of a diffusers folder (or a hub id's cached snapshot: `source` names it), from its
    `model_index.json`."""
    try:
        index = json.loads((folder / "model_index.json").read_text())
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"{folder.name}/model_index.json cannot be read ({type(error).__name__}); it must be a "
                             "diffusers pipeline folder.") from error
    return family_of_index(index if isinstance(index, dict) else {}, source or folder.name)


def family_of_checkpoint(path: Path) -> str:
    """The family of a single `.safetensors` checkpoint, from its tensor names (the header only, no weights)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ModelLoadError(f"{path.name} is not a readable safetensors checkpoint ({type(error).__name__}).") \
            from error
    for prefix, family in CHECKPOINT_KEYS:
        if any(key.startswith(prefix) for key in keys):
            if family in (SD, SDXL):
                return family
            raise ModelLoadError(f"{path.name} is {family}; shapeinv handles {SUPPORTED}.")
    raise ModelLoadError(f"{path.name} holds no Stable Diffusion UNet and text encoder that shapeinv knows "
                         f"(it handles {SUPPORTED}). Is it a LoRA or an embedding rather than a model?")


def pipeline_class(family: str):
    """The diffusers pipeline class that loads a model of `family`."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    return StableDiffusionXLPipeline if family == SDXL else StableDiffusionPipeline


# --- the text side --------------------------------------------------------------------------

def text_pairs(pipe) -> list[tuple[object, torch.nn.Module]]:
    """(tokenizer, text encoder) for each encoder a prompt goes through, in the UNet's concatenation order."""
    pairs = [(pipe.tokenizer, pipe.text_encoder)]
    if family_of_pipe(pipe) == SDXL:
        pairs.append((pipe.tokenizer_2, pipe.text_encoder_2))
    return pairs


def encoder_widths(pipe) -> list[int]:
    """Each text encoder's token-embedding width: [768] for SD 1.5, [768, 1280] for SDXL."""
    return [encoder.get_input_embeddings().weight.shape[-1] for _, encoder in text_pairs(pipe)]


def split_vectors(vectors: torch.Tensor, widths: list[int]) -> list[torch.Tensor]:
    """[..., sum(widths)] -> one [..., width] part per encoder."""
    return list(torch.split(vectors, widths, dim=-1))


def freeze_text(pipe) -> None:
    """Text encoders and their (possibly resized) token tables are never trained here."""
    for _, encoder in text_pairs(pipe):
        encoder.requires_grad_(False)
        encoder.eval()


@dataclass(frozen=True)
class ImageSizes:
    """SDXL's size conditioning of one training image: the photo's size, the crop's corner, the trained size."""

    original: tuple[int, int]  # (height, width) of the image as given (after padding to a square)
    crop_top_left: tuple[int, int]
    target: tuple[int, int]

    def time_ids(self) -> torch.Tensor:
        """[6] as SDXL's pipelines build `add_time_ids`."""
        return torch.tensor([*self.original, *self.crop_top_left, *self.target], dtype=torch.float32)


def encode_ids(encoders: list[torch.nn.Module], ids: torch.Tensor,
               time_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
    """Token ids [rows, encoders, tokens] -> (the UNet's `encoder_hidden_states`, its `added_cond_kwargs`).

    SD: the encoder's last hidden state. SDXL, as its pipeline encodes a prompt: the penultimate
    hidden state of each encoder side by side, and the second encoder's pooled projection with
    the size ids as the extra conditioning.
    """
    if len(encoders) == 1:
        return encoders[0](ids[:, 0])[0], None
    hidden, pooled = [], None
    for index, encoder in enumerate(encoders):
        output = encoder(ids[:, index], output_hidden_states=True)
        hidden.append(output.hidden_states[-2])
        pooled = output[0]  # the last encoder's projected pooled embedding
    if time_ids is None:
        raise ValueError("SDXL's UNet needs the image's sizes (ImageSizes.time_ids()) beside the prompt.")
    return torch.cat(hidden, dim=-1), {"text_embeds": pooled, "time_ids": time_ids.to(pooled.dtype).expand(
        ids.shape[0], -1)}


def repeat_conditioning(added: dict[str, torch.Tensor] | None, times: int) -> dict[str, torch.Tensor] | None:
    """The extra conditioning of each prompt row repeated for `times` consecutive UNet rows."""
    if added is None:
        return None
    return {key: value.repeat_interleave(times, dim=0) for key, value in added.items()}


def cast_conditioning(added: dict[str, torch.Tensor] | None, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    return None if added is None else {key: value.to(dtype) for key, value in added.items()}


def prompt_embeddings(pipe, prompts: list[str]) -> dict[str, torch.Tensor]:
    """The pipeline's own encoding of `prompts` (no guidance), by the names its step callback uses."""
    if family_of_pipe(pipe) == SDXL:
        embeds, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=pipe._execution_device,
                                                  num_images_per_prompt=1, do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds, "add_text_embeds": pooled}
    return {"prompt_embeds": pipe.encode_prompt(prompts, pipe._execution_device, 1, False)[0]}
