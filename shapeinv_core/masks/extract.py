"""Image -> binary object mask: the shape `*s` learns.

`extract_mask` tries, in order (method="auto"):
  1. the image's own alpha channel, when it has real transparency (a cut-out);
  2. rembg, when its model file is on disk (default `birefnet-general`, see `rembg_model`);
  3. a classical fallback that needs no weights (`fallback`), with a note saying how to
     get rembg's model.
A mask the user gives (`given.load_mask`) always wins over all of them. Masks are computed at a bounded
size (large photos would make the work slow, not better) and returned at the image's full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import ImageSource, fit_within, open_image
from .alpha import flatten, usable_alpha
from .cleanup import clean_mask
from .fallback import WORK_SIDE as FALLBACK_SIDE
from .fallback import fallback_mask
from .given import check_mask
from .rembg_model import DEFAULT_REMBG_MODEL, RembgModelMissing, download_hint, rembg_soft_mask

METHODS = ("auto", "alpha", "rembg", "fallback")
WORK_SIDE = 1024  # rembg's largest input size; masks are computed at most this large


@dataclass
class MaskResult:
    """A mask and where it came from; `note` tells the user how to get a better one, if any."""

    mask: Image.Image  # mode 'L', 0/255, the image's size (after EXIF rotation)
    method: str  # "alpha", "rembg" or "fallback"
    note: str | None = None


def extract_mask(
    image: ImageSource, method: str = "auto", rembg_model: str | None = None, max_side: int = WORK_SIDE
) -> MaskResult:
    """The object mask of `image` (see the module docstring for the order of methods).

    `rembg_model` is a rembg model name (default `DEFAULT_REMBG_MODEL`) or a path to a custom
    U^2-Net-style .onnx file inside rembg's model folder. Raises `InputError` for a method that
    cannot run (no transparency, no rembg model) or when the mask found is empty or fills the frame.
    """
    if method not in METHODS:
        raise InputError(f"Unknown mask method {method!r}. Use one of: {', '.join(METHODS)}.")
    image = open_image(image)
    if method in ("auto", "alpha"):
        alpha = usable_alpha(image)
        if alpha is not None:
            return _result(alpha, image.size, "alpha", note=None, clean=False)
        if method == "alpha":
            raise InputError("The image has no transparent background. Use --method auto, rembg or fallback.")
    work = fit_within(flatten(image), max_side)
    note = None
    if method in ("auto", "rembg"):
        model = rembg_model or DEFAULT_REMBG_MODEL
        try:
            soft = rembg_soft_mask(work, model)
            return _result(soft >= 128, image.size, "rembg")
        except RembgModelMissing:
            if method == "rembg":
                raise
            note = (
                f"Made with the classical fallback because rembg's {model!r} model is not on disk; "
                f"it is weaker on busy backgrounds. {download_hint(model)}"
            )
    binary = fallback_mask(fit_within(work, FALLBACK_SIDE))
    return _result(binary, image.size, "fallback", note=note)


def _result(binary: np.ndarray, size: tuple[int, int], method: str, note: str | None = None,
            clean: bool = True) -> MaskResult:
    """Clean at the working size, scale to the image's size, and refuse an empty or full mask."""
    if clean:
        binary = clean_mask(binary)
    mask = Image.fromarray(binary.astype(np.uint8) * 255, mode="L")
    if mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0)
    try:
        check_mask(np.asarray(mask))
    except InputError as error:
        raise InputError(f"The automatic mask ({method}) failed: {error}") from error
    return MaskResult(mask=mask, method=method, note=note)
