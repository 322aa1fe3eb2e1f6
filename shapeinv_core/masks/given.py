"""Masks someone gives (a file, a painted layer, a reference for Mask-IoU): read, resize, validate.

One rule for reading any mask image: its alpha channel if it is a cut-out, else its brightness.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..files.images import open_image
from .alpha import usable_alpha


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
    alpha = usable_alpha(image)
    gray = Image.fromarray(alpha.astype(np.uint8) * 255) if alpha is not None else image.convert("L")
    if gray.size != tuple(size):
        gray = gray.resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(gray) > 127
