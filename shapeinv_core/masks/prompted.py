"""Masks from prompts: the object a person pointed at, not the most eye-catching one.

Segment Anything answers when its weights are there: rembg's `sam` session (ViT-B, the quantised
ONNX pair, about 100 MB), fetched on first use like the other rembg models. Chosen over
transformers' `SamModel` because it shares everything the automatic mask already has: the same
onnxruntime, the same model folder and offline rule, `rembg d sam` to fetch it, no torch model
to keep in memory beside Stable Diffusion, and an 8-bit encoder that is quick on a CPU.

Without SAM's weights the classical method answers, seeded by the prompts: the box becomes the
frame (so its margin is the background the fallback assumes), clicked points become pixels that
GrabCut must keep as object or as background, and of what it finds the part under the prompts is
kept (`cleanup.choose_object`).
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from ..errors import InputError, first_line
from .fallback import fallback_mask
from .prompts import Prompts, seed_discs
from .rembg_model import RembgModelMissing, find_file, offline_reason, rembg_home

SAM_MODEL = "sam_vit_b_01ec64"
SAM_FILES = (f"{SAM_MODEL}.encoder.quant.onnx", f"{SAM_MODEL}.decoder.quant.onnx")
SEED_RADIUS = 0.012  # a click marks a disc of this share of the image side as certain
BOX_MARGIN = 0.04  # the box is widened by this share of its side, so its border is background


class SamMissing(RembgModelMissing):
    """SAM's files are not on disk and cannot be fetched now."""


def sam_hint() -> str:
    return (f"SAM's files go to {rembg_home() / 'models' / 'sam'}; fetch them once with internet access: "
            "`rembg d sam` (or run once online).")


def sam_on_disk() -> bool:
    return all(find_file("sam", name) is not None for name in SAM_FILES)


def sam_needs_fetch() -> bool:
    """True when answering prompts now means downloading SAM first."""
    return not sam_on_disk() and offline_reason() is None


def sam_mask(image: Image.Image, prompts: Prompts, fetch: bool = True) -> np.ndarray:
    """Boolean mask (image size) of the object under the prompts, by Segment Anything through rembg."""
    if not sam_on_disk():
        reason = "fetching was turned off" if not fetch else offline_reason()
        if reason:
            raise SamMissing(f"Segment Anything is not on disk and was not fetched because {reason}. {sam_hint()}")
    session = _sam_session()
    prompt = [{"type": "point", "label": 1, "data": [float(x), float(y)]} for x, y in prompts.points]
    prompt += [{"type": "point", "label": 0, "data": [float(x), float(y)]} for x, y in prompts.background_points]
    if prompts.box:
        prompt.append({"type": "rectangle", "label": 1, "data": [float(v) for v in prompts.box]})
    answer = session.predict(image.convert("RGB"), sam_prompt=prompt)[0].convert("L")
    if answer.size != image.size:
        answer = answer.resize(image.size, Image.Resampling.NEAREST)
    return np.asarray(answer) > 127


@functools.lru_cache(maxsize=1)
def _sam_session():
    """rembg's SAM session (fetching its files when missing); cached: it holds both networks."""
    from rembg import new_session

    try:
        return new_session("sam", sam_model=SAM_MODEL, sam_quant=True)
    except Exception as error:  # a fetch or load that failed: network, disk, checksum, a broken file
        raise SamMissing(f"Segment Anything could not be loaded ({first_line(error)}). {sam_hint()}") from error


def classical_mask(image: Image.Image, prompts: Prompts) -> np.ndarray:
    """Boolean mask (image size) from the classical method, seeded by the prompts (no weights)."""
    if not (prompts.points or prompts.box):
        raise InputError("Background points alone do not say which object you mean: add a point on it or a box.")
    width, height = image.size
    x0, y0, x1, y1 = 0, 0, width, height
    if prompts.box:
        margin = BOX_MARGIN * max(prompts.box[2] - prompts.box[0], prompts.box[3] - prompts.box[1])
        x0, y0 = max(int(prompts.box[0] - margin), 0), max(int(prompts.box[1] - margin), 0)
        x1, y1 = min(int(np.ceil(prompts.box[2] + margin)), width), min(int(np.ceil(prompts.box[3] + margin)), height)
    local = prompts.shifted(x0, y0)
    shape = (y1 - y0, x1 - x0)
    radius = max(2.0, SEED_RADIUS * max(width, height))
    found = fallback_mask(
        image.crop((x0, y0, x1, y1)),
        object_seeds=seed_discs(local.points, shape, radius),
        background_seeds=seed_discs(local.background_points, shape, radius),
    )
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = found
    return mask
