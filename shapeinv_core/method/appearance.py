"""Appearance-invariant views: the photo's object re-drawn in many named looks, its geometry kept.

Textual inversion learns whatever explains the photo best, and a chair's colour and pattern
explain about 8 times more of the denoising loss than its shape does (DESIGN.md). So `*s`
learns the look. Here every training view replaces the object's own texture with a random
named colour and pattern (and the background with a random wall), keeps the silhouette and
the shading's part edges, and the prompt names the look it was given ("a photo of a red
striped chair in the shape of *s"). The one thing constant across the views, and left for
`*s` to explain, is the shape.

The shading is estimated from the photo alone (all a user has): luminance inside the mask,
with the texture's dark details closed over (a grey closing: a dilation then an erosion) at a
scale below a part's width, then normalised so a dark chair does not teach "dark". A Gaussian
blur or a flat fill lose the part edges that tell a stool from a chair (both were measured).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..chairs.colours import OTHER, colour_names
from ..chairs.draw import SUPERSAMPLE, WALL_COLOURS
from ..chairs.toy_world import COLOURS, PATTERN_WORDS, PATTERNS, paint_pattern

PATTERN_UNIT = 64  # patterns are drawn on a 64-unit canvas and resized: stripes ~1/11 of the image wide


@dataclass
class View:
    """One training view: the image, and the look words the prompt names ('' for none)."""

    image: Image.Image
    look: str


def estimate_shading(image: Image.Image, mask: np.ndarray) -> np.ndarray:
    """HxW shading in about 0.35..1.25 inside the mask (1 = the object's lit parts); 1 outside.

    The closing fills dark texture details (stripes, spots, checks) narrower than the kernel
    with the brightness around them; a step between two parts is wider than the kernel, so it stays.
    """
    inside = np.asarray(mask) > 127
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
    luminance = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    side = max(inside.shape)
    size = max(3, int(round(side / 21)) | 1)  # 3 px at 64 px, 25 px at 512 px: under a leg's width
    kernel = np.ones((size, size), np.uint8)
    dilated = cv2.dilate(np.where(inside, luminance, 0.0).astype(np.float32), kernel)
    closed = cv2.erode(np.where(inside, dilated, 10.0).astype(np.float32), kernel)
    if not inside.any():
        return np.ones_like(luminance)
    reference = max(float(np.percentile(closed[inside], 90)), 1e-3)
    shading = (closed / reference).clip(0.35, 1.25)
    return np.where(inside, shading, 1.0).astype(np.float32)


def redraw(image: Image.Image, mask: np.ndarray, colour: str, pattern: str, wall: tuple[float, float, float],
           rng: np.random.Generator, shading: np.ndarray | None = None) -> Image.Image:
    """The object in `colour` and `pattern` over the estimated shading, on a plain `wall`."""
    inside = (np.asarray(mask) > 127)[..., None]
    height, width = inside.shape[:2]
    shading = estimate_shading(image, mask) if shading is None else shading
    big = PATTERN_UNIT * SUPERSAMPLE
    surface = paint_pattern(rng, pattern, np.asarray(COLOURS[colour]), big)
    surface = cv2.resize(surface, (width, height), interpolation=cv2.INTER_AREA)
    tone = rng.uniform(0.85, 1.05)  # the exposure varies too, so brightness is not part of the shape
    pixels = np.where(inside, shading[..., None] * surface * tone, np.asarray(wall, dtype=np.float32))
    pixels = pixels + rng.normal(0.0, 1.0 / 255, pixels.shape)
    return Image.fromarray((pixels.clip(0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")


def describe_look(image: Image.Image, mask: np.ndarray) -> str:
    """The photo's own look in the view vocabulary: its dominant named colour, or '' when unclear."""
    inside = np.asarray(mask) > 127
    if not inside.any():
        return ""
    names, counts = np.unique(colour_names(np.asarray(image.convert("RGB"))[inside]), return_counts=True)
    best = str(names[counts.argmax()])
    return "" if best == OTHER or counts.max() < 0.4 * inside.sum() else best


def look_words(colour: str, pattern: str) -> str:
    """'red striped', 'blue leopard-print'; a plain pattern is left unsaid, as people write it."""
    return colour if pattern == "plain" else f"{colour} {PATTERN_WORDS[pattern]}"


def appearance_views(image: Image.Image, mask: np.ndarray, count: int, seed: int = 0) -> list[View]:
    """The photo itself (its own look named) and `count - 1` re-drawn views, deterministic from `seed`.

    Colours and patterns cycle through every combination before any repeats, so a short bank
    still covers the vocabulary evenly.
    """
    rng = np.random.default_rng(seed)
    shading = estimate_shading(image, mask)
    combinations = [(colour, pattern) for colour in COLOURS for pattern in PATTERNS]
    order = rng.permutation(len(combinations))
    views = [View(image.convert("RGB"), describe_look(image, mask))]
    for index in range(count - 1):
        colour, pattern = combinations[order[index % len(combinations)]]
        wall = WALL_COLOURS[int(rng.integers(len(WALL_COLOURS)))]
        views.append(View(redraw(image, mask, colour, pattern, wall, rng, shading), look_words(colour, pattern)))
    return views
