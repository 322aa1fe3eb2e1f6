"""Clean-up of a raw binary mask, tuned for chairs, and the choice of one object among several.

A chair is one big part plus thin legs, slats and arms, with real gaps between them. So: keep
the chosen object's main part and whatever else lies within its reach (a leg cut off at a thin
joint), drop specks and other objects, and fill only holes too small to be a gap between two parts.

Which object, when the mask holds several separate ones (a chair and a bottle, two chairs):
  - with prompts, the part under them: it contains an object point, or else most of it lies inside
    the box; a part holding a background point is never chosen;
  - without prompts, the most central large one: of the parts at least half as large as the largest,
    the one whose centre is nearest the photo's centre (people frame what they photograph).
"""

from __future__ import annotations

import cv2
import numpy as np

from .prompts import Prompts

SPECK_FRACTION = 0.0002  # components smaller than this share of the frame are noise (52 px at 512 x 512)
HOLE_FRACTION = 0.0003  # holes smaller than this share of the frame are noise (79 px at 512 x 512)
NEAR_FRACTION = 0.05  # parts this far (share of the image side) outside the main part's box still count
LARGE_SHARE = 0.5  # without prompts, parts at least this share of the largest compete on centrality
IN_BOX_SHARE = 0.6  # a part counts as 'in the box' when this share of its pixels lie inside it


def clean_mask(mask: np.ndarray, prompts: Prompts | None = None) -> np.ndarray:
    """Boolean HxW mask -> cleaned boolean mask (one object, no specks, small holes filled).

    With prompts (in this mask's pixels) and no part under them, the result is empty: the caller
    then knows the mask missed the object that was pointed at.
    """
    mask = np.asarray(mask).astype(bool)
    if not mask.any():
        return mask
    mask = keep_main_object(mask, prompts)
    return fill_small_holes(mask)


def keep_main_object(mask: np.ndarray, prompts: Prompts | None = None) -> np.ndarray:
    """The chosen object's main part (see the module docstring), plus non-speck parts near it."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return mask
    speck = SPECK_FRACTION * mask.size
    main = choose_object(labels, stats, centroids, prompts)
    if main is None:
        return np.zeros_like(mask)
    x, y, w, h = (int(v) for v in stats[main, :4])
    margin = NEAR_FRACTION * max(mask.shape)
    keep = np.zeros(count, dtype=bool)
    for label in range(1, count):
        lx, ly, lw, lh, area = (int(v) for v in stats[label])
        near = lx < x + w + margin and lx + lw > x - margin and ly < y + h + margin and ly + lh > y - margin
        keep[label] = label == main or (near and area >= speck)
    if prompts:
        for px, py in prompts.points:  # every part that was clicked on belongs to the object
            keep[_label_at(labels, px, py)] = True
        for px, py in prompts.background_points:
            keep[_label_at(labels, px, py)] = False
        keep[0] = False
    return keep[labels]


def choose_object(labels: np.ndarray, stats: np.ndarray, centroids: np.ndarray, prompts: Prompts | None) -> int | None:
    """The label of the object to keep, by the rules in the module docstring; None if prompts miss every part."""
    areas = stats[1:, cv2.CC_STAT_AREA].astype(float)
    if prompts and (prompts.points or prompts.box):
        excluded = {_label_at(labels, x, y) for x, y in prompts.background_points}
        for x, y in prompts.points:
            label = _label_at(labels, x, y)
            if label and label not in excluded:
                return label
        if prompts.box and not prompts.points:
            inside = _share_in_box(labels, prompts.box, len(stats))
            candidates = [i for i in range(1, len(stats)) if inside[i] >= IN_BOX_SHARE and i not in excluded]
            if candidates:
                return max(candidates, key=lambda i: areas[i - 1])
        return None
    h, w = labels.shape
    large = [i + 1 for i in np.nonzero(areas >= LARGE_SHARE * areas.max())[0]]
    return min(large, key=lambda i: np.hypot(centroids[i][0] - w / 2, centroids[i][1] - h / 2))


def _label_at(labels: np.ndarray, x: float, y: float) -> int:
    h, w = labels.shape
    return int(labels[min(max(int(y), 0), h - 1), min(max(int(x), 0), w - 1)])


def _share_in_box(labels: np.ndarray, box: tuple[float, float, float, float], count: int) -> np.ndarray:
    """Per label: the share of its pixels inside the box."""
    h, w = labels.shape
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    x1, y1 = min(int(np.ceil(box[2])), w), min(int(np.ceil(box[3])), h)
    total = np.bincount(labels.ravel(), minlength=count).astype(float)
    inside = np.bincount(labels[y0:y1, x0:x1].ravel(), minlength=count).astype(float)
    return inside / np.maximum(total, 1)


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
