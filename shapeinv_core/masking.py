"""Image -> binary object mask: the shape `*s` learns.

`extract_mask` tries, in order (method="auto"):
  1. the image's own alpha channel, when it has real transparency (a cut-out);
  2. rembg, when its model file is on disk (default `birefnet-general`, see `mask_rembg`);
  3. a classical fallback that needs no weights (`mask_fallback`), with a note saying how to
     get rembg's model.
A mask the user gives (`load_mask`) always wins over all of them. Masks are computed at a bounded
size (large photos would make the work slow, not better) and returned at the image's full size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .images import ImageSource, fit_within, open_image
from .mask_cleanup import clean_mask
from .mask_fallback import WORK_SIDE as FALLBACK_SIDE
from .mask_fallback import fallback_mask
from .mask_rembg import DEFAULT_REMBG_MODEL, RembgModelMissing, download_hint, rembg_soft_mask

METHODS = ("auto", "alpha", "rembg", "fallback")
WORK_SIDE = 1024  # rembg's largest input size; masks are computed at most this large
MIN_TRANSPARENT = 0.005  # an alpha channel counts as a cut-out when this share of pixels is transparent

__all__ = ["DEFAULT_REMBG_MODEL", "METHODS", "MaskResult", "check_mask", "extract_mask", "load_mask", "overlay"]


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
        alpha = _usable_alpha(image)
        if alpha is not None:
            return _result(alpha, image.size, "alpha", note=None, clean=False)
        if method == "alpha":
            raise InputError("The image has no transparent background. Use --method auto, rembg or fallback.")
    work = fit_within(_flatten(image), max_side)
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


def overlay(image: ImageSource, mask: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """RGB preview: the object tinted orange, the background dimmed, so a wrong mask is obvious."""
    image = _flatten(open_image(image))
    inside = binary_mask(mask, image.size)[..., None]
    rgb = np.asarray(image, dtype=np.float32)
    tint = np.array([255, 120, 0], dtype=np.float32)
    shown = np.where(inside, 0.55 * rgb + 0.45 * tint, 0.5 * rgb + 0.5 * 40)
    return Image.fromarray(shown.clip(0, 255).astype(np.uint8), mode="RGB")


def load_mask(source: str | Path | Image.Image, size: tuple[int, int]) -> Image.Image:
    """A user-supplied mask, resized to `size` (width, height), as mode 'L' with values 0/255.

    A mask with real transparency is read from its alpha channel, any other from its brightness.
    """
    mask = binary_mask(source, size).astype(np.uint8) * 255
    check_mask(mask)
    return Image.fromarray(mask, mode="L")


def check_mask(mask: np.ndarray) -> None:
    """Refuse masks that cannot describe a shape: empty, or covering (nearly) the whole frame."""
    coverage = float((np.asarray(mask) > 127).mean())
    if coverage == 0.0:
        raise InputError("The mask is empty (no white pixels). Draw or upload a mask with the object in white.")
    if coverage > 0.98:
        raise InputError(
            "The mask covers the whole image, so it carries no shape. "
            "Draw or upload a mask with the object in white and the background in black."
        )


def binary_mask(source: str | Path | Image.Image | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Boolean HxW mask at `size` from any mask image: alpha if it is a cut-out, else brightness.

    The one rule for reading a mask, used for user masks, overlays and Mask-IoU alike.
    """
    image = open_image(source)
    alpha = _usable_alpha(image)
    gray = Image.fromarray(alpha.astype(np.uint8) * 255) if alpha is not None else image.convert("L")
    if gray.size != tuple(size):
        gray = gray.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(gray) > 127


def _usable_alpha(image: Image.Image) -> np.ndarray | None:
    """alpha > 127 when the image has real transparency; None for no alpha or an opaque one."""
    if image.mode != "RGBA":
        return None
    alpha = np.asarray(image.getchannel("A"))
    if (alpha < 128).mean() < MIN_TRANSPARENT:
        return None
    return alpha > 127


def _flatten(image: Image.Image) -> Image.Image:
    """RGB for the colour-based methods; an unusable alpha is composited onto white."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


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
