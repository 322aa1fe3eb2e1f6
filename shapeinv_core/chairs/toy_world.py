"""Training images for the toy world: chairs with a known family, colour and pattern, exact masks, captions.

Sibling of `draw.py` (which draws the app's photo-like examples): the same anti-aliased polygon
painting and backgrounds, but the chair's family, colour and pattern are chosen explicitly so that a
caption can say them. Deterministic from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .draw import SUPERSAMPLE, _background, _bar, _contrasting_wall, _downsample, _paint, _Part, _shadow_map

IMAGE_SIZE = 64

COLOURS = {
    "red": (0.85, 0.12, 0.10), "orange": (0.95, 0.50, 0.08), "yellow": (0.95, 0.85, 0.15),
    "green": (0.15, 0.62, 0.20), "blue": (0.12, 0.30, 0.85), "purple": (0.50, 0.18, 0.70),
    "black": (0.08, 0.08, 0.08), "white": (0.95, 0.95, 0.95),
}
PATTERNS = ("plain", "striped", "checkered", "leopard", "wooden")
PATTERN_WORDS = {"plain": "plain", "striped": "striped", "checkered": "checkered", "leopard": "leopard-print",
                 "wooden": "wooden"}
TRAIN_FAMILIES = ("straight", "slatted", "armchair", "stool", "bar")
HELD_OUT_FAMILIES = ("round", "ladder")  # never rendered for training: the inversion experiments' chairs
FAMILIES = TRAIN_FAMILIES + HELD_OUT_FAMILIES
FAMILY_PHRASES = {"straight": "chair", "slatted": "slatted chair", "armchair": "armchair", "stool": "stool",
                  "bar": "bar chair", "round": "chair", "ladder": "chair"}
BACKGROUNDS = ("plain", "gradient", "texture")

# Each family's range for a chair's main proportions, as a share of the image side. A chair in the lowest
# third of its family's range gets the first word, in the top third the second: a caption can then say
# "a tall narrow stool", and a word learned by inversion has a direction for this chair's own proportions.
SEAT_HEIGHTS = {"bar": (0.42, 0.50), "stool": (0.28, 0.38), "armchair": (0.18, 0.24)}
BACK_HEIGHTS = {"bar": (0.12, 0.18), "armchair": (0.22, 0.30), "ladder": (0.34, 0.42)}
DEFAULT_SEAT_HEIGHT, DEFAULT_BACK_HEIGHT = (0.24, 0.30), (0.26, 0.36)
PROPORTION_WORDS = {"seat_height": ("low", "tall"), "seat_width": ("narrow", "wide"),
                    "back_height": ("lowback", "highback")}


@dataclass
class ToyChair:
    image: Image.Image  # RGB
    mask: Image.Image  # L, 0/255, exact
    family: str
    colour: str
    pattern: str
    proportions: dict[str, float]  # where this chair sits in its family's range, 0..1 (see PROPORTION_WORDS)

    @property
    def shape_words(self) -> tuple[str, ...]:
        return proportion_words(self.family, self.proportions)


def render_toy_chair(seed: int, family: str | None = None, colour: str | None = None, pattern: str | None = None,
                     size: int = IMAGE_SIZE, background: str | None = None) -> ToyChair:
    """One chair; any attribute left as None is drawn from the seed (families: training ones only)."""
    rng = np.random.default_rng(seed)
    family = family or str(rng.choice(TRAIN_FAMILIES))
    colour = colour or str(rng.choice(list(COLOURS)))
    pattern = pattern or str(rng.choice(PATTERNS))
    background = background or str(rng.choice(BACKGROUNDS))
    for name, value, allowed in (("family", family, FAMILIES), ("colour", colour, tuple(COLOURS)),
                                 ("pattern", pattern, PATTERNS), ("background", background, BACKGROUNDS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, not {value!r}")
    base = np.asarray(COLOURS[colour])
    big = size * SUPERSAMPLE
    parts, shadow, proportions = _geometry(rng, family, float(size))

    canvas = _background(rng, big, background, _contrasting_wall(rng, base))
    canvas *= 1.0 - _shadow_map(shadow, big)[..., None]
    shading = np.zeros_like(canvas)
    coverage = np.zeros((big, big), dtype=np.float32)
    for part in parts:
        _paint(shading, coverage, part)
    surface = paint_pattern(rng, pattern, base, big)
    covered = coverage[..., None] > 0
    canvas = np.where(covered, (shading / SHADE_SCALE) * surface, canvas) * rng.uniform(0.85, 1.1)

    image = _downsample(canvas.astype(np.float32)) + rng.normal(0.0, 1.0 / 255, (size, size, 3)).astype(np.float32)
    rgb = Image.fromarray((image.clip(0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    mask = (_downsample(coverage[..., None])[..., 0] > 0.5).astype(np.uint8) * 255
    return ToyChair(rgb, Image.fromarray(mask, mode="L"), family, colour, pattern, proportions)


def proportion_words(family: str, proportions: dict[str, float]) -> tuple[str, ...]:
    """The words for the proportions at either end of the family's range (a middling one has none)."""
    words = []
    for name, (low_word, high_word) in PROPORTION_WORDS.items():
        if name == "back_height" and family == "stool":
            continue  # a stool has no back
        share = proportions[name]
        if share < 1 / 3:
            words.append(low_word)
        elif share > 2 / 3:
            words.append(high_word)
    return tuple(words)


def caption(family: str, colour: str, pattern: str, rng: np.random.Generator,
            shape_words: tuple[str, ...] = ()) -> str:
    """A caption from the attributes, with words sometimes left out so each can be prompted alone.

    At most two of the `shape_words` (proportion words) are said, so every caption fits the toy model's
    20-token context.
    """
    said = [word for word in shape_words if rng.random() < 0.7][:2]
    words = []
    if rng.random() < 0.85:
        words.append(colour)
    if pattern != "plain" or rng.random() < 0.3:
        if rng.random() < 0.9:
            words.append(PATTERN_WORDS[pattern])
    family = FAMILY_PHRASES[family] if rng.random() < 0.8 else "chair"
    if rng.random() < 0.25:  # teaches "X chair in the shape of <family>", the inversion template's form
        subject = " ".join(words + ["chair"])
        return f"a photo of {subject} in the shape of {_with_article(said + [family])}"
    return f"{'a photo of ' if rng.random() < 0.5 else ''}{_with_article(said + words + [family])}"


def _with_article(words: list[str]) -> str:
    return f"{'an' if words[0][0] in 'aeiou' else 'a'} {' '.join(words)}"


SHADE_SCALE = 0.8  # parts are painted as grey levels scaled down, so highlights are not clipped


def _grey(level: float) -> np.ndarray:
    return np.full(3, level * SHADE_SCALE)


def _geometry(rng: np.random.Generator, family: str, s: float) -> tuple[list[_Part], tuple, dict[str, float]]:
    """Parts back to front, the shadow ellipse (cx, cy, rx, ry, strength) in output pixels, and the proportions."""
    u = rng.uniform
    wide = family == "armchair"
    width_range = (0.42, 0.52) if wide else (0.30, 0.42)
    seat_w = u(*width_range) * s
    depth = u(0.06, 0.11) * s
    skew = u(-0.06, 0.06) * s
    seat_h, seat_share = _draw_for(rng, family, SEAT_HEIGHTS, DEFAULT_SEAT_HEIGHT)
    back_h, back_share = _draw_for(rng, family, BACK_HEIGHTS, DEFAULT_BACK_HEIGHT)
    seat_h, back_h = seat_h * s, back_h * s
    proportions = {"seat_height": seat_share, "seat_width": _share(seat_w / s, width_range),
                   "back_height": back_share}
    seat_t = u(0.04, 0.06) * s * (1.6 if wide else 1.0)
    leg_w = u(0.035, 0.05) * s * (1.3 if wide else 1.0)
    floor_y = u(0.88, 0.93) * s
    cx = s / 2 + u(-0.03, 0.03) * s - skew / 2
    light = u(0.25, 0.45) * (1 if rng.random() < 0.5 else -1)

    fl = np.array([cx - seat_w / 2, floor_y - seat_h])
    fr = np.array([cx + seat_w / 2, floor_y - seat_h])
    narrow = u(0.02, 0.05) * s
    bl = fl + np.array([skew + narrow, -depth])
    br = fr + np.array([skew - narrow, -depth])
    inset = leg_w * 0.6
    back_floor = floor_y - depth
    tone, dark = u(0.9, 1.05), 0.72
    parts: list[_Part] = []

    def bar(p0, p1, width, level=tone, shade=light):
        parts.append(_bar(np.asarray(p0, float), np.asarray(p1, float), width, _grey(level), shade))

    def panel(points, level, axis=(0.0, 1.0), shade=0.2):
        parts.append(_Part([tuple(map(float, p)) for p in points], _grey(level), axis, shade))

    top_l = bl + np.array([inset, -back_h])
    top_r = br + np.array([-inset, -back_h])
    lo_l, lo_r = bl + np.array([inset, 0]), br + np.array([-inset, 0])
    bar((bl[0] + inset, back_floor), (bl[0] + inset, bl[1]), leg_w)  # back legs
    bar((br[0] - inset, back_floor), (br[0] - inset, br[1]), leg_w)
    if family != "stool":
        bar(lo_l, top_l, leg_w * 1.1)  # back posts
        bar(lo_r, top_r, leg_w * 1.1)
        rail_t = u(0.05, 0.08) * s
        if family in ("straight", "armchair", "bar"):
            low = u(0.0, 0.35) if family != "bar" else 0.0
            a, b = lo_l + (top_l - lo_l) * low, lo_r + (top_r - lo_r) * low
            panel([top_l, top_r, b, a], 0.95)
        elif family == "slatted":
            bar(top_l + np.array([0, rail_t / 2]), top_r + np.array([0, rail_t / 2]), rail_t, tone, 0.0)
            count = int(rng.integers(2, 4))
            for i in range(1, count + 1):
                f = i / (count + 1)
                bar(lo_l + (lo_r - lo_l) * f, top_l + (top_r - top_l) * f, leg_w * 0.9)
        elif family == "ladder":
            for f in np.linspace(0.35, 1.0, int(rng.integers(3, 5))):
                bar(lo_l + (top_l - lo_l) * f, lo_r + (top_r - lo_r) * f, rail_t * 0.7, tone, 0.0)
        elif family == "round":
            centre = (top_l + top_r) / 2 + np.array([0.0, back_h * 0.05])
            rx, ry = np.hypot(*(top_r - top_l)) / 2 * u(1.05, 1.25), back_h * u(0.35, 0.45)
            angles = np.linspace(0, 2 * np.pi, 40, endpoint=False)
            panel([centre + np.array([rx * np.cos(a), ry * np.sin(a)]) for a in angles], 0.95)
    if family in ("stool", "bar"):  # footrest
        y = floor_y - u(0.35, 0.5) * seat_h
        bar((fl[0] + inset, y), (fr[0] - inset, y), leg_w * 0.8, dark, 0.0)

    panel([fl, fr, br, bl], 1.1, shade=0.15)  # seat top (lit) and front face
    panel([fl, fr, (fr[0], fr[1] + seat_t), (fl[0], fl[1] + seat_t)], 0.75, (1.0, 0.0))
    bar((fl[0] + inset, fl[1] + seat_t), (fl[0] + inset, floor_y), leg_w)
    bar((fr[0] - inset, fr[1] + seat_t), (fr[0] - inset, floor_y), leg_w)
    if family == "armchair":
        arm_h = u(0.35, 0.5) * back_h
        for front_pt, back_pt in ((fl, top_l), (fr, top_r)):
            arm_front = front_pt + np.array([0.0, -arm_h])
            back_at = np.array([back_pt[0], arm_front[1] - depth])
            bar(front_pt, arm_front, leg_w * 1.2)
            bar(arm_front, back_at, leg_w * 1.4, 1.05, 0.0)
    shadow = (cx + skew / 2, floor_y - depth / 2, seat_w * u(0.6, 0.8), depth * 0.8 + 0.03 * s, u(0.25, 0.45))
    return parts, shadow, proportions


def _draw_for(rng: np.random.Generator, family: str, ranges: dict, default: tuple[float, float]) -> tuple[float, float]:
    """A draw from the family's range and its share of that range. Every family's range is drawn, in a fixed
    order, so a seed renders the same chair as it did before the ranges were named (the evaluation sets are
    fixed by render seeds)."""
    draws = {name: rng.uniform(*bounds) for name, bounds in ranges.items()}
    fallback = rng.uniform(*default)
    value = draws.get(family, fallback)
    return value, _share(value, ranges.get(family, default))


def _share(value: float, bounds: tuple[float, float]) -> float:
    return (value - bounds[0]) / (bounds[1] - bounds[0])


def paint_pattern(rng: np.random.Generator, pattern: str, base: np.ndarray, big: int) -> np.ndarray:
    """The chair's surface colour at every (supersampled) pixel: base colour plus the pattern."""
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / SUPERSAMPLE  # in output pixels
    second = base * 0.4 if base.max() > 0.3 else np.full(3, 0.6)
    if pattern == "plain":
        return np.broadcast_to(base, (big, big, 3)).astype(np.float32)
    if pattern == "striped":
        angle = rng.choice([0.0, np.pi / 2, np.pi / 4, -np.pi / 4])
        along = np.cos(angle) * xx + np.sin(angle) * yy
        on = ((along / rng.uniform(5.0, 7.0) + rng.random()) % 1.0) < 0.4
    elif pattern == "checkered":
        cell = rng.uniform(3.5, 5.0)
        on = ((np.floor(xx / cell + rng.random()) + np.floor(yy / cell + rng.random())) % 2) == 1
    elif pattern == "leopard":
        on = np.zeros((big, big), dtype=bool)
        ring = np.zeros((big, big), dtype=bool)
        for _ in range(int(big * big / SUPERSAMPLE**2 / 22)):
            cy, cx = rng.uniform(0, big / SUPERSAMPLE, 2)
            r = rng.uniform(1.0, 1.8)
            d = np.hypot(xx - cx, (yy - cy) * rng.uniform(0.8, 1.25))
            ring |= (d < r) & (d > r * 0.5)
            on |= d < r
        dark = np.full(3, 0.10) if base.max() > 0.3 else np.full(3, 0.6)
        inner = base * 0.75
        surface = np.where(ring[..., None], dark, np.where(on[..., None], inner, base))
        return surface.astype(np.float32)
    else:  # wooden: wavy grain lines along one axis
        horizontal = rng.random() < 0.5
        a, b = (yy, xx) if horizontal else (xx, yy)
        wave = np.sin((a + 1.2 * np.sin(b / rng.uniform(4, 8) + rng.random() * 6)) * 2 * np.pi / rng.uniform(2.5, 3.5))
        level = 0.78 + 0.22 * (wave > 0.3)
        return (base * level[..., None]).astype(np.float32)
    return np.where(on[..., None], second, base).astype(np.float32)
