"""A mask on a busy background: the object is what stays smooth where the background never does.

On fine-grained coloured noise (confetti, a patterned rug, gravel) every colour of the object can
also be a fleck of the background, so a colour model of the border finds nothing. What tells them
apart is texture: from any pixel of a plain-coloured chair some short straight line stays on one
colour (along a leg, across the seat), while from a pixel of the background every line crosses
flecks. `roughness` is that test: the least colour spread along short rays in many directions, so
thin legs, slat ends and corners pass as well as the seat does. The line length is chosen from the
border (long enough that the background's flecks never fit one), and the smooth/rough split from the
picture itself (Otsu on the log of the roughness: the object's mode and the background's). On a
rug of a few colours, flecks of one colour can merge into a patch smooth enough to pass; colours
common on such a palette-like border are therefore never the object's (`common_colours`), and a
smooth patch no longer than a couple of rays is a fleck (`_drop_flecks`).

It answers only when the border really is busy and a smooth region stands out from it; grain that
covers object and wall alike (sensor noise) is the fallback's denoising's job, not this one.
"""

from __future__ import annotations

import cv2
import numpy as np

RAY_LENGTHS = (9, 13, 19, 27)  # pixels at the 512-px working size; the shortest the border allows is used
RAY_DIRECTIONS = 32  # 11.25 degrees apart: a ray follows a thin leg at any angle for its whole length
BUSY = 8.0  # Lab spread along a ray that a plain wall (noise, JPEG) never reaches: the border is busy above it
ROUGH_BORDER = 25  # ... when at most this percentile of its pixels is smoother (a few flecks may repeat)
COLOUR_BIN = 6.0  # Lab units per histogram bin, for "is this colour common on the border"
COMMON = 0.02  # a colour shared (within a bin or so) by this share of the border is the background's ...
PALETTE_BINS, PALETTE_SHARE = 12, 0.2  # ... when the border is a palette: its 12 commonest bins hold 20 % of it
SMOOTH_CONTRAST = 1.8  # the border's typical roughness is at least this many times the smooth/rough split
FLECK_RAYS = 2  # a separate smooth patch shorter than this many rays ...
FLECK_SHARE = 0.05  # ... and smaller than this share of the largest one is a fleck, not a part
MIN_SMOOTH = 0.005  # a smooth region smaller than this share of the frame is no object


def smooth_object(rgb: np.ndarray, border: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(object, background-coloured): boolean masks of the smooth object on a busy background and of
    the pixels whose colour is common on the border; None when the background is not busy.

    `rgb`: HxWx3 float 0..1; `border`: the pixels assumed to be background.
    """
    lab = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2Lab)
    local = cv2.blur(lab * lab, (5, 5)) - cv2.blur(lab, (5, 5)) ** 2
    if np.median(np.sqrt(np.maximum(local.sum(axis=2), 0))[border]) < BUSY:
        return None  # a plain or smooth wall: the colour model's case
    by_length = roughness(lab, RAY_LENGTHS)
    for length in RAY_LENGTHS:  # the shortest rays that no fleck of the background holds
        rough = by_length[length]
        if np.percentile(rough[border], ROUGH_BORDER) >= BUSY:
            break
    split = _otsu_log(rough)
    if np.median(rough[border]) < SMOOTH_CONTRAST * split:
        return None  # grain on everything alike, or no smooth region
    common = common_colours(lab, border)
    smooth = (rough < split) & ~common
    smooth[border] = False
    smooth = _drop_flecks(smooth, length)
    if smooth.mean() < MIN_SMOOTH:
        return None
    return smooth, common


def roughness(lab: np.ndarray, lengths: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Per pixel and per ray length: the least colour spread (Lab standard deviation) along a ray of
    that many pixels starting at it, over `RAY_DIRECTIONS` directions.

    One walk per direction serves every length: the ray's sums grow a pixel at a time (shifted
    copies of the image, cheaper than a filter per length), and are read when a length is reached.
    """
    reach = max(lengths)
    height, width = lab.shape[:2]
    channels = np.concatenate([lab, (lab * lab).sum(axis=2, keepdims=True)], axis=2)
    padded = np.pad(channels, ((reach, reach), (reach, reach), (0, 0)), mode="reflect")
    least = {length: np.full((height, width), np.inf, np.float32) for length in lengths}
    for angle in np.linspace(0, 2 * np.pi, RAY_DIRECTIONS, endpoint=False):
        total = np.zeros_like(channels)
        count, last = 0, None
        for step in range(reach + 1):
            dx, dy = round(step * np.cos(angle)), round(step * np.sin(angle))
            if (dx, dy) != last:
                total += padded[reach + dy:reach + dy + height, reach + dx:reach + dx + width]
                count, last = count + 1, (dx, dy)
            if step in least:
                mean = total[..., :3] / count
                spread = total[..., 3] / count - (mean * mean).sum(axis=2)
                np.minimum(least[step], spread, out=least[step])
    return {length: np.sqrt(np.maximum(spread, 0.0)) for length, spread in least.items()}


def _drop_flecks(smooth: np.ndarray, length: int) -> np.ndarray:
    """Without the smooth patches that are flecks: no longer than about two rays and small beside the
    largest part. A leg cut off from the seat is long; a fleck that happened to hold a ray is not."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(smooth.astype(np.uint8), connectivity=8)
    if count <= 1:
        return smooth
    extent = stats[:, [cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]].max(axis=1)
    area = stats[:, cv2.CC_STAT_AREA]
    keep = (extent >= FLECK_RAYS * length) | (area >= FLECK_SHARE * area[1:].max())
    keep[0] = False
    return keep[labels]


def common_colours(lab: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Pixels whose colour is common on the border: a rug's few colours, even where its flecks merge
    into a smooth patch. Counted in Lab bins, each with its neighbours (a colour near a bin edge).

    Only a border made of a palette has common colours: flecks of every hue, blended where they
    meet, spread over thousands of bins, and the dense middle of that spread may be the chair's colour."""
    index = _colour_bins(lab)
    counts = np.zeros(_BINS, np.float32)
    np.add.at(counts, tuple(index[border].T), 1.0)
    commonest = np.sort(counts, axis=None)[::-1][:PALETTE_BINS].sum() / max(int(border.sum()), 1)
    if commonest < PALETTE_SHARE:
        return np.zeros(lab.shape[:2], dtype=bool)
    padded = np.pad(counts, 1)
    near = sum(padded[i:i + _BINS[0], j:j + _BINS[1], k:k + _BINS[2]]
               for i in range(3) for j in range(3) for k in range(3))
    share = near / max(int(border.sum()), 1)
    return share[tuple(np.moveaxis(index, -1, 0))] >= COMMON


_BINS = (int(100 // COLOUR_BIN) + 1, int(256 // COLOUR_BIN) + 1, int(256 // COLOUR_BIN) + 1)


def _colour_bins(lab: np.ndarray) -> np.ndarray:
    """HxWx3 integer bin of each Lab colour."""
    shifted = lab + np.array([0.0, 128.0, 128.0], np.float32)
    return np.clip((shifted // COLOUR_BIN).astype(int), 0, np.array(_BINS) - 1)


def _otsu_log(values: np.ndarray) -> float:
    """The Otsu split of log(values): between a smooth and a rough mode, whatever their scale."""
    logs = np.log1p(values)
    scaled = np.clip(logs / max(float(logs.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    level, _ = cv2.threshold(scaled, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(np.expm1(level / 255 * max(float(logs.max()), 1e-6)))
