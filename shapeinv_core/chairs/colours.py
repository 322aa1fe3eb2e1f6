"""The names of the colours a picture shows, by HSV rules (no learning): the toy world's colour words.

The shape evaluation asks whether an edit followed "red" with `dominant_colour`; the varied views of
`--appearance varied` use `colour_names` to keep a re-coloured view away from the photo's own colour.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import InputError

OTHER = "other"  # grey, or a hue between the named ones


def colour_names(pixels: np.ndarray) -> np.ndarray:
    """Name each RGB pixel (uint8 [..., 3]): one of COLOURS, or OTHER (mid grey)."""
    rgb = pixels.astype(np.float32) / 255
    value = rgb.max(axis=-1)
    spread = value - rgb.min(axis=-1)
    saturation = np.where(value > 0, spread / np.maximum(value, 1e-6), 0)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(spread, 1e-6)
    hue = np.where(value == r, (g - b) / safe % 6, np.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60
    names = np.full(value.shape, OTHER, dtype=object)
    chromatic = (saturation >= 0.3) & (value >= 0.22)
    bins = ((15, "red"), (40, "orange"), (70, "yellow"), (170, "green"), (255, "blue"), (330, "purple"), (361, "red"))
    lower = 0.0
    for upper, name in bins:
        names[chromatic & (hue >= lower) & (hue < upper)] = name
        lower = upper
    names[value < 0.22] = "black"
    names[~chromatic & (value >= 0.55) & (saturation < 0.3)] = "white"
    return names


def dominant_colour(image: Image.Image, mask: Image.Image | np.ndarray) -> str:
    """The most frequent colour name among the object's pixels (OTHER when grey wins or the mask is empty)."""
    pixels = np.asarray(image.convert("RGB"))
    inside = np.asarray(mask) > 127
    if inside.shape != pixels.shape[:2]:
        raise InputError(f"The mask is {inside.shape[::-1]} but the image is {pixels.shape[1::-1]}; resize it first.")
    if not inside.any():
        return OTHER
    names, counts = np.unique(colour_names(pixels[inside]), return_counts=True)
    return str(names[counts.argmax()])
