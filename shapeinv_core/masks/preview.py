"""What a person looks at to judge a mask: the photo with the object tinted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..images import ImageSource, open_image
from .alpha import flatten
from .given import binary_mask


def overlay(image: ImageSource, mask: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """RGB preview: the object tinted orange, the background dimmed, so a wrong mask is obvious."""
    image = flatten(open_image(image))
    inside = binary_mask(mask, image.size)[..., None]
    rgb = np.asarray(image, dtype=np.float32)
    tint = np.array([255, 120, 0], dtype=np.float32)
    shown = np.where(inside, 0.55 * rgb + 0.45 * tint, 0.5 * rgb + 0.5 * 40)
    return Image.fromarray(shown.clip(0, 255).astype(np.uint8), mode="RGB")
