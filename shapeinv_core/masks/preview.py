"""What a person looks at to judge a mask: the photo with the object tinted, and their clicks marked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..files.images import ImageSource, open_image
from .alpha import flatten
from .given import binary_mask
from .prompts import Prompts

TINT = (255, 120, 0)  # the object's colour in every preview (and the mask editor's brush)
LAYER_ALPHA = 150  # how opaque the tinted mask layer is over the photo in the editor
OBJECT_MARK, BACKGROUND_MARK, BOX_MARK = (40, 220, 90), (235, 40, 60), (40, 200, 255)


def overlay(image: ImageSource, mask: str | Path | Image.Image | np.ndarray, prompts: Prompts | None = None
            ) -> Image.Image:
    """RGB preview: the object tinted orange, the background dimmed, so a wrong mask is obvious.

    With prompts (in the image's pixels), object points are marked green, background points red, the box blue.
    """
    image = flatten(open_image(image))
    inside = binary_mask(mask, image.size)[..., None]
    rgb = np.asarray(image, dtype=np.float32)
    tint = np.array(TINT, dtype=np.float32)
    shown = np.where(inside, 0.55 * rgb + 0.45 * tint, 0.5 * rgb + 0.5 * 40)
    preview = Image.fromarray(shown.clip(0, 255).astype(np.uint8), mode="RGB")
    if prompts:
        _mark(preview, prompts)
    return preview


def tinted_layer(mask: str | Path | Image.Image | np.ndarray, size: tuple[int, int]) -> Image.Image:
    """RGBA layer for painting over the photo: the object in see-through orange, the rest transparent."""
    inside = binary_mask(mask, size)
    layer = np.zeros((size[1], size[0], 4), dtype=np.uint8)
    layer[inside] = (*TINT, LAYER_ALPHA)
    return Image.fromarray(layer, mode="RGBA")


def _mark(preview: Image.Image, prompts: Prompts) -> None:
    draw = ImageDraw.Draw(preview)
    radius = max(4, round(max(preview.size) / 90))
    if prompts.box:
        draw.rectangle(prompts.box, outline=BOX_MARK, width=max(2, radius // 2))
    for points, colour in ((prompts.points, OBJECT_MARK), (prompts.background_points, BACKGROUND_MARK)):
        for x, y in points:
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour, outline=(255, 255, 255),
                         width=max(1, radius // 3))
