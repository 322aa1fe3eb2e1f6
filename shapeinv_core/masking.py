"""Image -> binary object mask (placeholder until the mask-extraction work lands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .errors import InputError
from .images import open_image


def load_mask(source: str | Path | Image.Image, size: tuple[int, int]) -> Image.Image:
    """A user-supplied mask, resized to `size` (width, height), as mode 'L' with values 0/255."""
    image = open_image(source)
    if "A" in image.getbands() and np.asarray(image.getchannel("A")).min() < 255:
        gray = image.getchannel("A")
    else:
        gray = image.convert("L")
    if gray.size != tuple(size):
        gray = gray.resize(size, Image.Resampling.BILINEAR)
    mask = (np.asarray(gray) > 127).astype(np.uint8) * 255
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
