"""Files other Stable Diffusion tools load as they are: the concept named after the object.

AUTOMATIC1111 and ComfyUI name an embedding after its file (`embeddings/oak-chair.safetensors`
is written `oak-chair` in a prompt), so every `learned_embeds.safetensors` would collide. Each run
therefore also writes `NAME.safetensors` with the single key `emb_params` (both tools read it;
diffusers reads any single-key file, with `token=`), for SDXL the keys `clip_l` and `clip_g` (what
both tools read for SDXL embeddings), and, when it has a LoRA,
`NAME-lora.safetensors` in kohya's key naming (`<lora:NAME-lora:1>` in AUTOMATIC1111).
"""

from __future__ import annotations

import re
from pathlib import Path

from safetensors.torch import save_file

from ..config import RESERVED_NAMES
from ..errors import InputError
from ..files.modes import like_other_files
from .concept import SDXL_KEYS, Concept
from .lora import kohya_state

DEFAULT_NAME = "shape-concept"


def name_from_photo(path: str | Path | None) -> str:
    """'Oak Chair (2).JPG' -> 'oak-chair-2': a word a prompt can hold, from the photo's file name."""
    stem = Path(path).stem if path else ""
    name = re.sub(r"[^a-z0-9_]+", "-", stem.lower()).strip("-_")[:64]
    return name if name and name not in RESERVED_NAMES else DEFAULT_NAME


def file_name(name: str | None, photo: str | Path | None, words: tuple[str, ...]) -> str:
    """NAME of NAME.safetensors: `name` if given, else made from the photo's file name.

    A concept named after its class word or initializer (`words`) would take that word over in
    AUTOMATIC1111 and ComfyUI (every "chair" in a prompt would become the concept): a given name is
    refused, a name from the photo ('chair.jpg') gets '-shape' added.
    """
    taken = {word.strip().lower() for word in words if word}
    if name:
        if name.lower() in taken:
            raise InputError(f"The file name {name!r} is the class word or the initializer: other tools would read "
                             f"every {name!r} in a prompt as this concept. Choose another, e.g. '{name}-shape'.")
        return name
    made = name_from_photo(photo)
    return f"{made}-shape" if made in taken else made


def concept_name(concept: Concept) -> str:
    return concept.settings.name or DEFAULT_NAME


def named_files(folder: Path, name: str, with_lora: bool) -> list[Path]:
    """The tool files for concept NAME in `folder`: NAME.safetensors [, NAME-lora.safetensors]."""
    files = [folder / f"{name}.safetensors"]
    if with_lora:
        files.append(folder / f"{name}-lora.safetensors")
    return files


def write_named_files(folder: Path, concept: Concept) -> list[Path]:
    """Write `named_files` of `concept` into `folder`; returns their paths."""
    files = named_files(folder, concept_name(concept), bool(concept.lora))
    parts = concept.parts()
    tensors = dict(zip(SDXL_KEYS, parts)) if len(parts) == 2 else {"emb_params": parts[0]}
    save_file(tensors, str(files[0]))
    if concept.lora:
        save_file(kohya_state(concept.lora), str(files[1]))
    like_other_files(*files)
    return files
