"""Clean-up of a raw binary mask, tuned for chairs.

A chair is one big part plus thin legs, slats and arms, with real gaps between them. So: keep
the largest component and whatever else lies within its reach (a leg cut off at a thin joint),
drop specks, and fill only holes too small to be a gap between two parts.
"""

from __future__ import annotations

import cv2
import numpy as np

SPECK_FRACTION = 0.0002  # components smaller than this share of the frame are noise (52 px at 512 x 512)
HOLE_FRACTION = 0.0003  # holes smaller than this share of the frame are noise (79 px at 512 x 512)
NEAR_FRACTION = 0.05  # parts this far (share of the image side) outside the main part's box still count


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean HxW mask -> cleaned boolean mask (the main object, no specks, small holes filled)."""
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return mask
    mask = keep_main_object(mask)
    return fill_small_holes(mask)


def keep_main_object(mask: np.ndarray) -> np.ndarray:
    """The largest component, plus non-speck components near it (or nearly as large)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    main = int(np.argmax(areas)) + 1
    x, y, w, h = (int(v) for v in stats[main, :4])
    margin = NEAR_FRACTION * max(mask.shape)
    speck = SPECK_FRACTION * mask.size
    keep = np.zeros(count, dtype=bool)
    for label in range(1, count):
        lx, ly, lw, lh, area = (int(v) for v in stats[label])
        near = lx < x + w + margin and lx + lw > x - margin and ly < y + h + margin and ly + lh > y - margin
        keep[label] = label == main or area >= 0.25 * areas.max() or (near and area >= speck)
    return keep[labels]


def fill_small_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed by the object that are smaller than HOLE_FRACTION of the frame.

    Size alone separates noise from gaps: the gap between two slats or under an arm rest is
    hundreds of pixels at the working size, a noise hole a few dozen.
    """
    background = (~mask).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    h, w = mask.shape
    small = stats[:, cv2.CC_STAT_AREA] < max(4.0, HOLE_FRACTION * mask.size)
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    enclosed = (x0 > 0) & (y0 > 0) & (x1 < w) & (y1 < h)
    fill = small & enclosed
    fill[0] = False  # label 0 is the object itself
    return mask | fill[labels]
