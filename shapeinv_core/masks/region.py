"""A mask grown from a click: the pixels reached from it without crossing an edge.

For a click where colour models cannot help, a white shell chair on a white wall: the shell and the
wall share every colour, but a faint outline (a shading step) runs between them. A flood fill from
the click that may step only between near-equal neighbours stops at that outline. How near is
learned per photo: the largest tolerance whose region still stays off the frame's edge (the wall
reaches the edge, the chair in front of it does not). Each click grows its own region.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .prompts import Prompts

TOLERANCES = (0.5, 1, 1.5, 2, 3, 4, 6, 8)  # grey levels between neighbours, smallest first
MAX_SHARE = 0.6  # a region larger than this share of the frame has leaked into the background


def grown_mask(image: Image.Image, prompts: Prompts) -> np.ndarray:
    """Boolean mask (image size): for each clicked point, the region grown from it (empty without points)."""
    rgb = np.asarray(image.convert("RGB"))
    height, width = rgb.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    if not prompts.points:
        return mask
    smooth = cv2.bilateralFilter(rgb, 7, 20, 5)  # JPEG blocks and grain would stop the fill anywhere
    for x, y in prompts.points:
        seed = (min(int(x), width - 1), min(int(y), height - 1))
        best = None
        for tolerance in TOLERANCES:
            region = _fill(smooth, seed, tolerance)
            if best is not None and (_touches_frame(region) or region.mean() > MAX_SHARE):
                break
            best = region
        mask |= best
    for x, y in prompts.background_points:
        if mask[min(int(y), height - 1), min(int(x), width - 1)]:
            return np.zeros_like(mask)  # a background point inside the region: the fill leaked
    return mask


def _fill(rgb: np.ndarray, seed: tuple[int, int], tolerance: float) -> np.ndarray:
    flags = 4 | cv2.FLOODFILL_MASK_ONLY | (255 << 8)
    mask = np.zeros((rgb.shape[0] + 2, rgb.shape[1] + 2), np.uint8)
    cv2.floodFill(rgb.copy(), mask, seed, 0, (tolerance,) * 3, (tolerance,) * 3, flags)
    return mask[1:-1, 1:-1] > 0


def _touches_frame(region: np.ndarray) -> bool:
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())
