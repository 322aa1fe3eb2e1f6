"""A mask without any downloaded weights: background colour model + GrabCut.

Used when rembg's model is not on disk. It assumes what most product-style photos give: the
image border is background, and the background is smooth (plain or gradient) or made of a few
colours. A background busy at a fine scale (confetti, a patterned rug) is handed to `texture`,
which tells the object by its smoothness instead of its colour. A grainy photo is denoised first
(non-local means, strength from the measured grain), so sensor noise on a busy wall does not drown
the object. Pixels are scored by how far their colour is from the background there; shadows (same
hue, darker, with soft edges, or fenced in by the chair's own edges like a shadow cast between the
legs) are discounted, and GrabCut settles the uncertain pixels using colour models of both sides
and the image's edges. Points the user clicked can be given as seeds (`object_seeds`,
`background_seeds`): GrabCut keeps them fixed. Cluttered rooms are beyond it without such seeds:
use rembg, or click/box the object.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from .texture import smooth_object

WORK_SIDE = 512  # GrabCut time grows with pixels; chair legs are still 2+ px wide at this size
BORDER_FRACTION = 0.02  # the outer strip assumed to be background
PALETTE_COLOURS = 6  # k-means colours of the border, for backgrounds made of a few colours
SHADOW_DARKEST = 0.2  # a same-hue pixel down to this share of the background's brightness may be shadow
GRABCUT_ITERATIONS = 4
LIT_REACH = 9  # a shadow's rim pixel this close (window side) to the lit background shows how soft its edge is
SHARP_STEP = 5.0  # Lab lightness change per pixel that no soft shadow edge reaches
GRAINY = 2.5  # estimated noise (0..255 grey levels) above which the photo is denoised first; clean JPEGs are ~1
WHOLE = 0.9  # a mask whose largest part holds this share of it is one object
HIGHLIGHT_MAX = 0.01  # an enclosed hole up to this share of the frame may be a highlight on the object ...
HIGHLIGHT_SOFT = 0.25  # ... when the lightness step across its rim is below this share of its contrast


def fallback_mask(
    image: Image.Image, object_seeds: np.ndarray | None = None, background_seeds: np.ndarray | None = None
) -> np.ndarray:
    """RGB PIL image -> boolean mask at the image's size (True = object).

    `object_seeds` / `background_seeds`: boolean HxW arrays of pixels known to be object / background
    (clicked points); they override the colour model and make GrabCut run even when it finds nothing.
    """
    raw = np.asarray(image.convert("RGB"))
    busy = smooth_object(raw.astype(np.float32) / 255.0, _border(raw.shape[:2]))
    if busy is not None:  # a busy background: texture, not colour, tells the object apart
        smooth, background_coloured = busy
        lab = cv2.cvtColor(raw.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
        return refine_edges(smooth, lab) & (smooth | ~background_coloured)
    rgb = denoise(raw).astype(np.float32) / 255.0
    distance = background_distance(rgb)
    low, high = _thresholds(distance)
    init = np.full(distance.shape, cv2.GC_PR_BGD, dtype=np.uint8)
    init[distance >= high] = cv2.GC_PR_FGD
    init[distance < low] = cv2.GC_BGD
    init[distance >= 2 * high] = cv2.GC_FGD
    init[_border(distance.shape)] = cv2.GC_BGD
    if object_seeds is not None:
        init[object_seeds] = cv2.GC_FGD
    if background_seeds is not None:
        init[background_seeds] = cv2.GC_BGD
    if not (init == cv2.GC_PR_FGD).any() and not (init == cv2.GC_FGD).any():
        return np.zeros(distance.shape, dtype=bool)
    bgr = cv2.cvtColor((rgb * 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(bgr, init, None, bgd_model, fgd_model, GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # a GMM needs a few samples of each side; without them keep the colour prior
        return distance >= high
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    return fill_highlights(refine_edges((init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD), lab), lab)


def refine_soft_mask(image: Image.Image, soft: np.ndarray) -> np.ndarray:
    """A blurry network mask (0..255) made sharp at the photo's resolution by GrabCut.

    Low-resolution salient-object models (U^2-Net at 320 px) get the object right and its outline
    wrong: the gap between a backrest and the seat comes back filled, thin legs blurred. Their
    mask only says where the object probably is; the colour models of both sides then decide each
    pixel, and pixels the network is sure are background stay background. When that breaks one
    object into pieces (stripes of the wall's colour), the network's own mask is returned.
    """
    rgb = np.asarray(image.convert("RGB"))
    init = np.full(soft.shape, cv2.GC_PR_BGD, dtype=np.uint8)
    init[soft >= 128] = cv2.GC_PR_FGD
    init[soft < 16] = cv2.GC_BGD
    if not (init == cv2.GC_PR_FGD).any() or not (init == cv2.GC_BGD).any():
        return soft >= 128
    bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    try:
        cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), init, None, bgd_model, fgd_model,
                    GRABCUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
    except cv2.error:
        return soft >= 128
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
    refined = refine_edges((init == cv2.GC_FGD) | (init == cv2.GC_PR_FGD), lab)
    network = soft >= 128
    if largest_part_share(network) >= WHOLE and largest_part_share(refined) < WHOLE:
        # GrabCut broke one object into pieces: its colours are the background's too (white
        # stripes or checks on a white wall). The network's outline is blurry but whole.
        return network
    return refined


def fill_highlights(mask: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Fill the holes that are highlights on the object, not gaps through it.

    A glossy rail catches the light in a patch as pale as a grey wall, so the colour model cuts a
    hole there. A gap between slats has sharp edges (the slats' outlines); a highlight fades into
    the wood over several pixels. So an enclosed hole whose rim is soft (the lightness step across
    it is small beside the hole's contrast with the object around it) is filled, but only above the
    object's middle: below it, fenced in by the legs, a soft-edged patch is the seat's shadow on the
    floor (light comes from above, as `_soft_edged` assumes).
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=4)
    h, w = mask.shape
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    x1, y1 = x0 + stats[:, cv2.CC_STAT_WIDTH], y0 + stats[:, cv2.CC_STAT_HEIGHT]
    enclosed = (x0 > 0) & (y0 > 0) & (x1 < w) & (y1 < h) & (stats[:, cv2.CC_STAT_AREA] < HIGHLIGHT_MAX * mask.size)
    if not enclosed[1:].any():
        return mask
    lightness = lab[..., 0]
    gx, gy = cv2.Sobel(lightness, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(lightness, cv2.CV_32F, 0, 1, ksize=3)
    step = np.hypot(gx, gy) / 8
    small, wide = np.ones((3, 3), np.uint8), np.ones((7, 7), np.uint8)
    ring = cv2.dilate(mask.astype(np.uint8), small) > cv2.erode(mask.astype(np.uint8), small)  # the edge band
    around = cv2.dilate((~mask).astype(np.uint8), wide).astype(bool) & mask  # object pixels near any hole
    rows = np.nonzero(mask.any(axis=1))[0]
    middle = (rows.min() + rows.max()) / 2
    enclosed &= y0 + stats[:, cv2.CC_STAT_HEIGHT] / 2 < middle
    filled = mask.copy()
    for label in np.nonzero(enclosed)[0]:
        hole = labels == label
        near = cv2.dilate(hole.astype(np.uint8), wide).astype(bool)
        rim = near & ring
        contrast = abs(float(np.median(lightness[hole])) - float(np.median(lightness[near & around])))
        if rim.any() and float(np.median(step[rim])) < HIGHLIGHT_SOFT * contrast:
            filled |= hole
    return filled


def largest_part_share(mask: np.ndarray, connectivity: int = 8) -> float:
    """The share of the mask's pixels in its largest connected part (0 for an empty mask)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=connectivity)
    if count <= 1:
        return 0.0
    areas = stats[1:, cv2.CC_STAT_AREA]
    return float(areas.max() / areas.sum())


def noise_level(rgb: np.ndarray) -> float:
    """Standard deviation of the sensor noise (grey levels), from a Laplacian that cancels smooth
    content (Immerkaer 1996); the median keeps real edges from counting as noise."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    return float(np.median(np.abs(cv2.filter2D(gray, -1, kernel))) * 1.4826 / 6)


def denoise(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB, non-local-means denoised when it is grainy (strength follows the measured noise)."""
    sigma = noise_level(rgb)
    if sigma <= GRAINY:
        return rgb
    strength = 1.2 * sigma
    return cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(rgb), None, strength, strength, 5, 15)


def refine_edges(mask: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """Decide the 1-px edge band by coverage, as an exact mask does: a band pixel is object when
    its colour is at least halfway from the local background colour to the local object colour.

    GrabCut cuts where the contrast is highest, about half a pixel inside an anti-aliased edge;
    on a 3-px chair leg that alone costs a third of its area.
    """
    kernel = np.ones((3, 3), np.uint8)
    inner = cv2.erode(mask.astype(np.uint8), kernel)
    outer = 1 - cv2.dilate(mask.astype(np.uint8), kernel)
    band = (inner == 0) & (outer == 0)
    object_colour, object_count = _local_mean(lab, inner)
    background_colour, background_count = _local_mean(lab, outer)
    step = object_colour - background_colour
    alpha = ((lab - background_colour) * step).sum(axis=2) / np.maximum((step**2).sum(axis=2), 1e-6)
    decided = band & (object_count > 0) & (background_count > 0) & ((step**2).sum(axis=2) > 9.0)
    refined = mask.copy()
    refined[decided] = alpha[decided] >= 0.5
    return refined


def _local_mean(lab: np.ndarray, where: np.ndarray, size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Mean Lab colour of the `where` pixels in a size x size window, and how many there were."""
    weight = where.astype(np.float32)
    count = cv2.boxFilter(weight, -1, (size, size), normalize=False)
    total = cv2.boxFilter(lab * weight[..., None], -1, (size, size), normalize=False)
    return total / np.maximum(count, 1e-6)[..., None], count


def background_distance(rgb: np.ndarray) -> np.ndarray:
    """Per pixel: how unlike the background it is (Lab distance, soft shadows discounted)."""
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
    border = _border(lab.shape[:2])
    smooth = _smooth_background(lab, border)
    distance = np.minimum(np.linalg.norm(lab - smooth, axis=2), _palette_distance(lab, border))
    low, _ = _thresholds(distance)
    shadow = _shadow_distance(lab, smooth)
    candidates = (distance >= low) & (shadow < 0.5 * distance)  # better explained as shadow
    soft = _soft_edged(candidates, lab, distance)
    # judged a shadow by its edge, a region's darkness is no evidence of an object any more
    return np.where(soft, _shadow_distance(lab, smooth, darkness=0.0), distance).astype(np.float32)


def _soft_edged(candidates: np.ndarray, lab: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """The shadow-coloured regions whose edges are soft, i.e. real shadows.

    A grey seat on a white wall has the colour of a shadow, but its edge is a step as high as
    the seat is dark; a shadow's edge climbs the same height over many pixels. Regions are first
    cut apart along sharp edges, so a grey chair touching its own shadow is judged apart from it.
    A region that meets the lit background nowhere has no edge to judge: below the middle of the
    object (a shadow cast between the legs, fenced in by the seat, the legs and a stretcher) it
    counts as shadow, above it (a grey back panel inside a wooden frame) as object.
    """
    lightness = lab[..., 0]
    gx = cv2.Sobel(lightness, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(lightness, cv2.CV_32F, 0, 1, ksize=3) / 8
    step = np.hypot(gx, gy)
    kernel = np.ones((3, 3), np.uint8)
    sharp = cv2.dilate((step >= SHARP_STEP).astype(np.uint8), kernel).astype(bool)
    regions = candidates & ~sharp
    count, labels = cv2.connectedComponents(regions.astype(np.uint8), connectivity=8)
    if count <= 1:
        return regions
    rim = regions & ~cv2.erode(regions.astype(np.uint8), kernel).astype(bool)
    # Only where the region meets the lit background (across the cut-out edge band) says what its edge
    # is: a shadow cast between the legs meets the chair's sharp edges on every side and the lit wall nowhere.
    low, high = _thresholds(distance)
    lit = (distance < low) & ~candidates
    rim = (rim & cv2.dilate(lit.astype(np.uint8), np.ones((LIT_REACH, LIT_REACH), np.uint8)).astype(bool)).ravel()
    reach = cv2.dilate(step, np.ones((5, 5), np.uint8)).ravel()  # across the cut-out edge band
    flat = labels.ravel()
    inside = flat > 0
    height = _median_by_label(flat[inside], distance.ravel()[inside], count)
    sharpness = _median_by_label(flat[rim], reach[rim], count)
    # Fenced in on every side, a region is shadow only below the middle of the object: light comes from
    # above, so a seat casts its shadow between the legs, while a grey back panel inside its frame is object.
    rows = np.nonzero((distance >= high).any(axis=1))[0]
    middle = (rows.min() + rows.max()) / 2 if len(rows) else 0.0
    centre_row = np.bincount(flat, weights=np.repeat(np.arange(labels.shape[0]), labels.shape[1]), minlength=count)
    soft = centre_row / np.maximum(np.bincount(flat, minlength=count), 1) > middle
    measured = np.isfinite(sharpness) & (height > 0)
    soft[measured] = sharpness[measured] < 0.25 * height[measured]
    soft[0] = False
    return soft[labels]


def _median_by_label(labels: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    result = np.full(count, np.nan)
    if len(labels) == 0:
        return result
    order = np.argsort(labels, kind="stable")
    labels, values = labels[order], values[order]
    starts = np.searchsorted(labels, np.arange(count))
    ends = np.searchsorted(labels, np.arange(count), side="right")
    for label in np.nonzero(ends > starts)[0]:
        result[label] = np.median(values[starts[label]:ends[label]])
    return result


def _border(shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    width = max(2, round(BORDER_FRACTION * max(h, w)))
    border = np.zeros((h, w), dtype=bool)
    border[:width], border[-width:], border[:, :width], border[:, -width:] = True, True, True, True
    return border


def _smooth_background(lab: np.ndarray, border: np.ndarray) -> np.ndarray:
    """A bilinear colour field fitted to the border: plain walls and gradients, not patterns."""
    h, w = border.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xx, yy = xx / max(w - 1, 1), yy / max(h - 1, 1)
    basis = np.stack([np.ones_like(xx), xx, yy, xx * yy], axis=-1)
    a, b = basis[border], lab[border]
    keep = np.ones(len(a), dtype=bool)
    for _ in range(3):  # robust: ignore border pixels where the object touches the frame
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
        residual = np.linalg.norm(a @ coef - b, axis=1)
        keep = residual <= max(2.5 * float(np.median(residual)), 2.0)
    return (basis.reshape(-1, 4) @ coef).reshape(h, w, 3).astype(np.float32)


def _palette_distance(lab: np.ndarray, border: np.ndarray) -> np.ndarray:
    """Distance to the nearest of a few border colours: two-tone backgrounds (wall and floor)."""
    samples = lab[border].astype(np.float32)
    k = min(PALETTE_COLOURS, len(samples))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, _, centres = cv2.kmeans(samples, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    flat = lab.reshape(-1, 1, 3)
    return np.linalg.norm(flat - centres[None], axis=2).min(axis=1).reshape(lab.shape[:2])


def _shadow_distance(lab: np.ndarray, background: np.ndarray, darkness: float = 10.0) -> np.ndarray:
    """Distance that treats 'the background, darker, same hue' as close: soft floor shadows.

    `darkness` adds this much per unit of lost brightness, so that of two same-hue pixels the
    darker is the less likely shadow."""
    ratio = (lab[..., 0] + 1.0) / (background[..., 0] + 1.0)
    # Less light scales X, Y, Z alike, so L + 16, a and b all shrink by its cube root: undo that
    # before comparing chroma (a saturated wall's shadow keeps more chroma than L's own ratio says).
    chroma_ratio = (lab[..., 0] + 16.0) / (background[..., 0] + 16.0)
    chroma = np.linalg.norm(lab[..., 1:] - background[..., 1:] * chroma_ratio[..., None], axis=2)
    shadow_like = (ratio >= SHADOW_DARKEST) & (ratio <= 1.0)
    return np.where(shadow_like, chroma + darkness * (1.0 - ratio), np.inf).astype(np.float32)


def _thresholds(distance: np.ndarray) -> tuple[float, float]:
    """Background/object thresholds from how much the border itself varies (noise, JPEG)."""
    noise = float(np.percentile(distance[_border(distance.shape)], 95))
    low = max(4.0, 2.0 * noise)
    return low, max(10.0, 2.5 * low)
