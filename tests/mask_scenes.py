"""Drawn scenes for the mask tests: two chairs in one photo, with each chair's exact mask."""

import numpy as np
from PIL import Image

from shapeinv_core.chairs.draw import CONFETTI, confetti, render_chair


def iou(a, b):
    a, b = np.asarray(a) > 127, np.asarray(b) > 127
    return (a & b).sum() / max((a | b).sum(), 1)


def two_chairs(background: str = "plain"):
    """A 900x512 photo with two different drawn chairs on one wall, and each chair's exact mask.

    The first chair sits in the middle of the frame, the second near the right edge. `background`
    "confetti" puts both on fine-grained coloured flecks instead of the first chair's plain wall."""
    first, first_mask = render_chair(2, size=512, background="plain")
    second, second_mask = render_chair(5, size=512, background="plain", colour=(0.12, 0.30, 0.70))
    canvas = np.empty((512, 900, 3), dtype=np.uint8)
    if background == CONFETTI:
        canvas[:] = (confetti(np.random.default_rng(3), 512, 900) * 255 + 0.5).astype(np.uint8)
    else:
        canvas[:] = np.asarray(first)[5:20, 5:20].reshape(-1, 3).mean(axis=0).astype(np.uint8)
    masks = {}
    for name, (image, mask), left in (("first", (first, first_mask), 194), ("second", (second, second_mask), 560)):
        box = (100, 0, 412, 512)  # the chairs stand in the middle 312 columns of their frames
        part, inside = np.asarray(image.crop(box)), np.asarray(mask.crop(box)) > 127
        region = canvas[:, left : left + 312]
        region[inside] = part[inside]
        full = np.zeros((512, 900), dtype=np.uint8)
        full[:, left : left + 312] = inside * 255
        masks[name] = Image.fromarray(full)
    return Image.fromarray(canvas), masks["first"], masks["second"]


def centre_of(mask):
    ys, xs = np.nonzero(np.asarray(mask) > 127)
    return float(xs.mean()), float(ys.mean())


def bounds(mask, margin=6):
    ys, xs = np.nonzero(np.asarray(mask) > 127)
    return (xs.min() - margin, ys.min() - margin, xs.max() + margin, ys.max() + margin)
