"""Masks from prompts: the object a person pointed at, not the most eye-catching one.

Segment Anything answers when its weights are there: rembg's `sam` session (ViT-B, the quantised
ONNX pair, about 100 MB), fetched on first use like the other rembg models. Chosen over
transformers' `SamModel` because it shares everything the automatic mask already has: the same
onnxruntime, the same model folder and offline rule, `rembg d sam` to fetch it, no torch model
to keep in memory beside Stable Diffusion, and an 8-bit encoder that is quick on a CPU.

Without SAM's weights the classical methods answer, in the order `extract` tries them: the
fallback seeded by the prompts (the box becomes the frame, so its margin is the background the
fallback assumes; clicked points become pixels GrabCut must keep as object or as background), then
GrabCut started by the prompts alone (`grabcut_mask`), then, for clicks, the region grown from them
(`region`), then colours (`clusters`). Of what each finds,
the part under the prompts is kept (`cleanup.choose_object`). Each works on the box and a margin
around it, at most 512 px large: a box is also a zoom.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

from ..errors import InputError, first_line
from ..files.images import fit_within
from .fallback import GRABCUT_ITERATIONS, fallback_mask, refine_edges
from .fallback import WORK_SIDE as FALLBACK_SIDE
from .prompts import Prompts, seed_discs
from .region import grown_mask
from .rembg_model import RembgModelMissing, find_file, offline_reason, rembg_home

SAM_MODEL = "sam_vit_b_01ec64"
SAM_FILES = (f"{SAM_MODEL}.encoder.quant.onnx", f"{SAM_MODEL}.decoder.quant.onnx")
SEED_RADIUS = 0.012  # a click marks a disc of this share of the image side as certain
BOX_MARGIN = 0.04  # the box is widened by this share of its side, so its border is background
GRABCUT_MARGIN = 0.25  # GrabCut from the box learns the background's colours from this much around it


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
    """Boolean mask (image size) from the classical fallback, seeded by the prompts (no weights).

    The box (widened by `BOX_MARGIN`) becomes the frame, so its margin is the background the
    fallback assumes; clicked points become pixels GrabCut must keep as object or background."""
    return _in_region(image, prompts, BOX_MARGIN, _seeded_fallback)


def grabcut_mask(image: Image.Image, prompts: Prompts) -> np.ndarray:
    """Boolean mask (image size) from GrabCut started by the prompts alone: outside the box is
    background, inside it is probably object (the textbook use); clicks are fixed seeds. It needs
    no background colour model, so it answers where the object has the wall's colours (white on white)."""
    return _in_region(image, prompts, GRABCUT_MARGIN, _grabcut)


def region_mask(image: Image.Image, prompts: Prompts) -> np.ndarray:
    """Boolean mask (image size) of the regions grown from the clicked points (`region`)."""
    return _in_region(image, prompts, BOX_MARGIN, grown_mask)


def _seeded_fallback(crop: Image.Image, prompts: Prompts) -> np.ndarray:
    shape = (crop.height, crop.width)
    radius = max(2.0, SEED_RADIUS * max(shape))
    return fallback_mask(crop, object_seeds=seed_discs(prompts.points, shape, radius),
                         background_seeds=seed_discs(prompts.background_points, shape, radius))


def _grabcut(crop: Image.Image, prompts: Prompts) -> np.ndarray:
    shape = (crop.height, crop.width)
    radius = max(2.0, SEED_RADIUS * max(shape))
    init = np.full(shape, cv2.GC_PR_BGD, dtype=np.uint8)
    if prompts.box:
        init[:] = cv2.GC_BGD
        x0, y0 = max(int(prompts.box[0]), 0), max(int(prompts.box[1]), 0)
        init[y0:int(np.ceil(prompts.box[3])), x0:int(np.ceil(prompts.box[2]))] = cv2.GC_PR_FGD
    init[seed_discs(prompts.points, shape, radius)] = cv2.GC_FGD
    init[seed_discs(prompts.background_points, shape, radius)] = cv2.GC_BGD
    if not ((init == cv2.GC_BGD) | (init == cv2.GC_PR_BGD)).any():
        return np.zeros(shape, dtype=bool)
    rgb = np.asarray(crop.convert("RGB"))
    models = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), init, None, *models, GRABCUT_ITERATIONS,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # too few pixels on one side for a colour model
        return np.zeros(shape, dtype=bool)
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    return refine_edges((init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD), lab)


def _in_region(image: Image.Image, prompts: Prompts, margin: float,
               method: Callable[[Image.Image, Prompts], np.ndarray]) -> np.ndarray:
    """Run `method` on the box widened by `margin` (of its longer side), or on the whole frame without
    a box, at most `FALLBACK_SIDE` large; the answer is pasted back at the image's size."""
    if not (prompts.points or prompts.box):
        raise InputError("Background points alone do not say which object you mean: add a point on it or a box.")
    width, height = image.size
    x0, y0, x1, y1 = 0, 0, width, height
    if prompts.box:
        pad = margin * max(prompts.box[2] - prompts.box[0], prompts.box[3] - prompts.box[1])
        x0, y0 = max(int(prompts.box[0] - pad), 0), max(int(prompts.box[1] - pad), 0)
        x1, y1 = min(int(np.ceil(prompts.box[2] + pad)), width), min(int(np.ceil(prompts.box[3] + pad)), height)
    crop = image.crop((x0, y0, x1, y1))
    small = fit_within(crop, FALLBACK_SIDE)
    found = method(small, prompts.shifted(x0, y0).scaled(small.width / crop.width))
    if small.size != crop.size:
        layer = Image.fromarray(found.astype(np.uint8) * 255).resize(crop.size, Image.Resampling.BILINEAR)
        found = np.asarray(layer) > 127
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = found
    return mask
