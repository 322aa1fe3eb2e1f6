"""A mask from colours alone: the colours inside the box that the ring outside it lacks.

The last classical try when a box (or a click) says where the object is and both GrabCuts found
nothing: the pixels inside the box and in a ring around it are grouped into a few colours
(k-means in Lab); a colour much commoner inside the box than in the ring is the object's. With
clicks and no box, the colours under the clicks are the object's, and only the region joined to a
click is kept. It knows nothing of edges or texture, so it is coarse; it is never empty when the
object's colours differ from its surroundings.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .prompts import Prompts, seed_discs

COLOURS = 8  # k-means colours of the box and its ring
RING = 0.15  # the ring's width, as a share of the box's longer side
INSIDE_RATIO = 4.0  # a colour this many times commoner (share of pixels) inside the box than in the ring ...
MIN_SHARE = 0.01  # ... and covering at least this share of the box is the object's
SAMPLES = 20000  # pixels k-means looks at
SEED_RADIUS = 0.012  # a click stands for a disc of this share of the image side


def cluster_mask(image: Image.Image, prompts: Prompts) -> np.ndarray:
    """Boolean mask (image size) of the box's own colours, or of the clicked colours joined to a click."""
    lab = cv2.cvtColor(np.asarray(image.convert("RGB")).astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    height, width = lab.shape[:2]
    labels, count = _colour_labels(lab, _region(prompts, width, height))
    if prompts.box:
        x0, y0, x1, y1 = _box_pixels(prompts.box, width, height)
        inside = np.zeros((height, width), dtype=bool)
        inside[y0:y1, x0:x1] = True
        ring = _region(prompts, width, height) & ~inside
        share_in = np.bincount(labels[inside], minlength=count) / max(int(inside.sum()), 1)
        share_ring = np.bincount(labels[ring], minlength=count) / max(int(ring.sum()), 1)
        own = (share_in >= MIN_SHARE) & (share_in >= INSIDE_RATIO * share_ring)
        mask = own[labels] & inside
    else:
        radius = max(2.0, SEED_RADIUS * max(width, height))
        clicked = np.unique(labels[seed_discs(prompts.points, (height, width), radius)])
        mask = np.isin(labels, clicked)
        _, parts = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        touched = np.unique([parts[int(y), int(x)] for x, y in prompts.points])
        mask = np.isin(parts, touched[touched > 0])
    for x, y in prompts.background_points:  # a clicked background colour is never the object's
        mask &= labels != labels[min(int(y), height - 1), min(int(x), width - 1)]
    kernel = np.ones((3, 3), np.uint8)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool)


def _region(prompts: Prompts, width: int, height: int) -> np.ndarray:
    """The box with its ring (the whole frame without a box)."""
    region = np.zeros((height, width), dtype=bool)
    if not prompts.box:
        region[:] = True
        return region
    x0, y0, x1, y1 = prompts.box
    ring = RING * max(x1 - x0, y1 - y0)
    x0, y0, x1, y1 = _box_pixels((x0 - ring, y0 - ring, x1 + ring, y1 + ring), width, height)
    region[y0:y1, x0:x1] = True
    return region


def _box_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = max(int(box[0]), 0), max(int(box[1]), 0)
    return x0, y0, min(int(np.ceil(box[2])), width), min(int(np.ceil(box[3])), height)


def _colour_labels(lab: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, int]:
    """Every pixel's nearest of `COLOURS` k-means colours of the region (fixed seed: same answer each time)."""
    samples = lab[region]
    rng = np.random.default_rng(0)
    if len(samples) > SAMPLES:
        samples = samples[rng.choice(len(samples), SAMPLES, replace=False)]
    count = min(COLOURS, len(samples))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(samples.astype(np.float32), count, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    flat = lab.reshape(-1, 3)
    nearest = np.argmin(((flat[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    return nearest.reshape(lab.shape[:2]), count
