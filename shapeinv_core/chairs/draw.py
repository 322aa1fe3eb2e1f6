"""Procedural chairs with exact masks: the project's own example images and test data.

Real photos cannot be committed and rembg's models cannot be downloaded on test machines, so
the mask extractor is measured on chairs drawn here, where the true mask is known exactly.
Everything is numpy + PIL and deterministic from the seed: the same seed gives the same pixels.

A chair is a set of straight parts (legs, seat, back posts, slats or a panel, stretchers, arms)
drawn back to front at twice the size and box-filtered down, so edges are anti-aliased like a
photo. The floor shadow darkens the background only: it is never part of the mask.

    python -m shapeinv_core.chairs.draw --out assets/      # writes the app's example chairs
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BACKGROUNDS = ("plain", "gradient", "texture")  # the kinds the committed examples cycle through
NOISY = "noisy"  # a busy, grainy wall (blotches of two colours, strong sensor noise): a stress test for masks
NOISY_GRAIN = 0.07  # per-pixel noise (RGB 0..1 standard deviation) of the noisy kind, on chair and wall alike
CAST_SHADOW = 0.45  # how much the seat's cast shadow darkens the backdrop between the legs
CAST_SHADOW_BLUR = 0.015  # its soft edge, as a share of the image side
CONFETTI = "confetti"  # fine-grained coloured noise (confetti, a patterned rug): a new colour every few pixels
CONFETTI_CELLS = (1.5, 2.0, 3.0, 4.0, 6.0)  # fleck sizes in output pixels, one per image
CONFETTI_PALETTES = ("vivid", "rug", "pastel", "earth")

# Base colours (RGB 0..1): woods, metals, plastics and paints.
CHAIR_COLOURS = (
    (0.55, 0.35, 0.18), (0.40, 0.24, 0.12), (0.72, 0.55, 0.35), (0.25, 0.15, 0.08),  # woods
    (0.12, 0.12, 0.13), (0.45, 0.47, 0.50),  # black metal, steel
    (0.80, 0.15, 0.12), (0.12, 0.30, 0.70), (0.15, 0.50, 0.30), (0.90, 0.70, 0.10),  # paints
    (0.55, 0.20, 0.45), (0.10, 0.55, 0.60),
)
WALL_COLOURS = (
    (0.93, 0.93, 0.92), (0.88, 0.90, 0.93), (0.95, 0.92, 0.86), (0.80, 0.84, 0.80),
    (0.70, 0.75, 0.82), (0.60, 0.62, 0.64), (0.95, 0.88, 0.88), (0.30, 0.32, 0.36),
)

SUPERSAMPLE = 3  # odd, so no pixel is exactly half covered: the exact mask is never a coin toss


@dataclass
class _Part:
    polygon: list[tuple[float, float]]  # in output pixels
    colour: np.ndarray  # RGB 0..1
    shade_axis: tuple[float, float]  # unit direction along which brightness changes
    shade: float  # brightness change from one side of the part to the other


def render_chair(
    seed: int,
    size: int = 512,
    background: str = "plain",
    thin_legs: bool = False,
    colour: tuple[float, float, float] | None = None,
    noise: bool = True,
    cast_shadow: bool = False,
) -> tuple[Image.Image, Image.Image]:
    """Draw one chair; return (RGB image, exact mask 'L' 0/255), both `size` x `size`.

    `thin_legs` forces legs and posts 2.5-4 px wide at 512 px: the hardest case for masks.
    `colour` (RGB 0..1) overrides the seeded chair colour; `noise` adds camera noise (tests want
    it; the committed examples do without, so their PNGs stay small). `cast_shadow` adds the seat's
    dark, soft shadow on the backdrop between the legs (a studio light from above): background, not chair.
    """
    if background not in (*BACKGROUNDS, NOISY, CONFETTI):
        raise ValueError(f"background must be one of {(*BACKGROUNDS, NOISY, CONFETTI)}, not {background!r}")
    rng = np.random.default_rng(seed)
    big = size * SUPERSAMPLE
    chair_rgb = np.asarray(CHAIR_COLOURS[rng.integers(len(CHAIR_COLOURS))] if colour is None else colour)
    wall_rgb = _contrasting_wall(rng, chair_rgb)
    parts, shadow, under_seat = _chair_geometry(rng, size, chair_rgb, thin_legs)

    if background == CONFETTI:
        canvas = confetti(rng, big, big, avoid=chair_rgb, scale=SUPERSAMPLE)
    else:
        canvas = _background(rng, big, background, wall_rgb)
    canvas *= 1.0 - _shadow_map(shadow, big)[..., None]
    if cast_shadow:
        canvas *= 1.0 - _cast_shadow_map(under_seat, big, size)[..., None]
    coverage = np.zeros((big, big), dtype=np.float32)
    for part in parts:
        _paint(canvas, coverage, part)

    image = _downsample(canvas)
    if noise:
        image += rng.normal(0.0, 1.2 / 255, image.shape).astype(np.float32)
    if background == NOISY:
        image += rng.normal(0.0, NOISY_GRAIN, image.shape).astype(np.float32)
    rgb = Image.fromarray((image.clip(0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")
    mask = (_downsample(coverage[..., None])[..., 0] > 0.5).astype(np.uint8) * 255
    return rgb, Image.fromarray(mask, mode="L")


def _contrasting_wall(rng: np.random.Generator, chair_rgb: np.ndarray) -> np.ndarray:
    """A wall colour clearly different from the chair, as a photographer would choose."""
    order = rng.permutation(len(WALL_COLOURS))
    for index in order:
        wall = np.asarray(WALL_COLOURS[index])
        if np.abs(wall - chair_rgb).max() > 0.3:
            return wall
    return np.asarray(WALL_COLOURS[order[0]])


def _chair_geometry(
    rng: np.random.Generator, size: int, colour: np.ndarray, thin_legs: bool
) -> tuple[list[_Part], tuple[float, float, float, float, float]]:
    """Parts back to front, the shadow ellipse (cx, cy, rx, ry, strength) and the quadrilateral under
    the seat down to the floor between the legs, in output pixels."""
    u = rng.uniform
    s = float(size)
    seat_w = u(0.26, 0.40) * s
    depth = u(0.05, 0.10) * s  # on-screen rise of the seat's back edge
    skew = u(-0.07, 0.07) * s  # sideways shift of the back edge (3/4 view)
    seat_h = u(0.20, 0.30) * s
    back_h = u(0.20, 0.32) * s
    seat_t = u(0.015, 0.035) * s
    leg_w = (u(2.5, 4.0) / 512 if thin_legs else u(0.007, 0.028)) * s
    floor_y = u(0.84, 0.90) * s
    cx = s / 2 + u(-0.04, 0.04) * s - skew / 2
    splay = u(0.0, 0.02) * s
    light = u(0.25, 0.45) * (1 if rng.random() < 0.5 else -1)  # which side is lit

    fl = np.array([cx - seat_w / 2, floor_y - seat_h])
    fr = np.array([cx + seat_w / 2, floor_y - seat_h])
    narrow = u(0.02, 0.06) * s  # the back edge looks narrower (perspective)
    bl = fl + np.array([skew + narrow, -depth])
    br = fr + np.array([skew - narrow, -depth])
    inset = leg_w * 0.6
    back_floor = floor_y - depth
    lean = np.array([u(-0.01, 0.01) * s, 0.0])

    tone = colour * u(0.85, 1.1)
    dark = colour * 0.7
    parts: list[_Part] = []

    def bar(p0, p1, width, rgb=tone, shade=light):
        parts.append(_bar(np.asarray(p0, float), np.asarray(p1, float), width, rgb, shade))

    # Back legs run from the floor up through the seat into the back posts.
    post_w = leg_w * u(1.0, 1.3)
    top_l = bl + np.array([inset, -back_h]) + lean
    top_r = br + np.array([-inset, -back_h]) + lean
    bar((bl[0] + inset - splay, back_floor), top_l, post_w)
    bar((br[0] - inset + splay, back_floor), top_r, post_w)
    if rng.random() < 0.6:  # side stretchers, front leg to back leg
        k = u(0.25, 0.5)
        y_front, y_back = floor_y - k * seat_h, back_floor - k * (seat_h - seat_t)
        bar((fl[0] + inset, y_front), (bl[0] + inset, y_back), leg_w * 0.8, dark)
        bar((fr[0] - inset, y_front), (br[0] - inset, y_back), leg_w * 0.8, dark)

    # Backrest between the posts: a panel, vertical slats or horizontal rails.
    rail_t = u(0.02, 0.05) * s
    bar(top_l + np.array([0, rail_t / 2]), top_r + np.array([0, rail_t / 2]), rail_t, tone, 0.0)
    style = rng.choice(["panel", "slats", "rails"])
    lo_l, lo_r = bl + np.array([inset, 0]), br + np.array([-inset, 0])
    if style == "panel":
        low = u(0.3, 0.6)
        a, b = lo_l + (top_l - lo_l) * low, lo_r + (top_r - lo_r) * low
        parts.append(_Part([tuple(top_l), tuple(top_r), tuple(b), tuple(a)], tone * 0.95, (0.0, 1.0), 0.2))
    elif style == "slats":
        count = int(rng.integers(2, 6))
        slat_w = max(leg_w * 0.8, u(0.01, 0.03) * s)
        for i in range(1, count + 1):
            f = i / (count + 1)
            bar(lo_l + (lo_r - lo_l) * f, top_l + (top_r - top_l) * f, slat_w)
    else:
        for i in range(int(rng.integers(1, 4))):
            f = 0.3 + 0.2 * i
            bar(lo_l + (top_l - lo_l) * f, lo_r + (top_r - lo_r) * f, leg_w * u(1.0, 2.0), tone, 0.0)

    # Seat: top face (lit) and front face (dark).
    parts.append(_Part([tuple(fl), tuple(fr), tuple(br), tuple(bl)], colour * 1.1, (0.0, 1.0), 0.15))
    front = [tuple(fl), tuple(fr), (fr[0], fr[1] + seat_t), (fl[0], fl[1] + seat_t)]
    parts.append(_Part(front, colour * 0.75, (1.0, 0.0), 0.2))

    # Front legs, then the optional front stretcher and arms.
    bar((fl[0] + inset, fl[1] + seat_t), (fl[0] + inset - splay, floor_y), leg_w)
    bar((fr[0] - inset, fr[1] + seat_t), (fr[0] - inset + splay, floor_y), leg_w)
    if rng.random() < 0.4:
        y = floor_y - u(0.25, 0.45) * seat_h
        bar((fl[0] + inset, y), (fr[0] - inset, y), leg_w * 0.8, dark, 0.0)
    if rng.random() < 0.35:
        arm_h = u(0.25, 0.4) * back_h
        for front_pt, back_pt in ((fl + np.array([inset, 0]), top_l), (fr + np.array([-inset, 0]), top_r)):
            back_at = back_pt + (np.array([back_pt[0], front_pt[1] - depth]) - back_pt) * 0.62
            arm_front = front_pt + np.array([0.0, -arm_h])
            bar(front_pt, arm_front, leg_w)
            bar(arm_front, back_at, leg_w * 1.4, tone * 1.05, 0.0)

    shadow = (cx + skew / 2, floor_y - depth / 2, seat_w * u(0.6, 0.8), depth * 0.8 + 0.02 * s, u(0.25, 0.45))
    narrowing = 0.15 * seat_w
    under_seat = [(fl[0], fl[1] + seat_t), (fr[0], fr[1] + seat_t), (fr[0] - narrowing, floor_y),
                  (fl[0] + narrowing, floor_y)]
    return parts, shadow, under_seat


def _bar(p0: np.ndarray, p1: np.ndarray, width: float, colour: np.ndarray, shade: float) -> _Part:
    """A straight part of `width` from p0 to p1, shaded across its width like a round leg."""
    axis = p1 - p0
    normal = np.array([-axis[1], axis[0]]) / max(float(np.hypot(*axis)), 1e-6)
    h = normal * width / 2
    polygon = [tuple(p0 + h), tuple(p1 + h), tuple(p1 - h), tuple(p0 - h)]
    return _Part(polygon, colour, (float(normal[0]), float(normal[1])), shade)


def _paint(canvas: np.ndarray, coverage: np.ndarray, part: _Part) -> None:
    """Fill the part's polygon with its shaded colour (at the supersampled size)."""
    big = canvas.shape[0]
    points = np.array(part.polygon, dtype=np.float64) * SUPERSAMPLE
    x0, y0 = np.floor(points.min(axis=0)).astype(int).clip(0, big)
    x1, y1 = (np.ceil(points.max(axis=0)).astype(int) + 1).clip(0, big)
    if x1 <= x0 or y1 <= y0:
        return
    layer = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
    ImageDraw.Draw(layer).polygon([(x - x0, y - y0) for x, y in points], fill=255)
    ys, xs = np.nonzero(np.asarray(layer))
    if len(ys) == 0:
        return
    ys, xs = ys + y0, xs + x0
    along = xs * part.shade_axis[0] + ys * part.shade_axis[1]
    span = max(float(along.max() - along.min()), 1.0)
    brightness = 1.0 + part.shade * ((along - along.min()) / span - 0.5)
    canvas[ys, xs] = (part.colour[None, :] * brightness[:, None]).clip(0, 1)
    coverage[ys, xs] = 1.0


def _background(rng: np.random.Generator, big: int, kind: str, wall: np.ndarray) -> np.ndarray:
    """An RGB float canvas: plain colour, smooth two-colour gradient, wall + plank floor, or blotches."""
    if kind == "plain":
        return np.broadcast_to(wall, (big, big, 3)).astype(np.float32).copy()
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    if kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5)) * 1.2 + 0.5
        other = (wall * rng.uniform(0.65, 0.85)).clip(0, 1)
        t = t.clip(0, 1)[..., None]
        return (wall * (1 - t) + other * t).astype(np.float32)
    if kind == NOISY:  # blotches of the wall colour and a second one, grain added after drawing
        other = np.asarray(WALL_COLOURS[rng.integers(len(WALL_COLOURS))]) * rng.uniform(0.6, 1.0)
        t = _value_noise(rng, big)[..., None]
        return (wall * (1 - t) + other * t).clip(0, 1).astype(np.float32)
    # texture: noisy plaster wall above, wooden planks below the horizon
    noise = _value_noise(rng, big)
    canvas = wall * (0.9 + 0.2 * noise)[..., None]
    horizon = rng.uniform(0.55, 0.7)
    floor = np.asarray((0.62, 0.48, 0.33)) * rng.uniform(0.7, 1.1)
    plank = np.floor((xx + 0.15 * yy) * rng.integers(6, 12))
    grain = 0.85 + 0.1 * np.sin(plank * 12.9898) + 0.08 * np.sin(yy * 300 + plank) * noise
    floor_img = floor * grain[..., None]
    below = (yy > horizon)[..., None]
    return np.where(below, floor_img, canvas).clip(0, 1).astype(np.float32)


def confetti(
    rng: np.random.Generator, height: int, width: int, avoid: np.ndarray | None = None, scale: int = 1
) -> np.ndarray:
    """Flecks of colour a few pixels across, each a different colour: confetti or a patterned rug.

    Returns an RGB float (0..1) array height x width. The fleck size (`CONFETTI_CELLS`, in pixels
    times `scale`) and the palette are drawn from `rng`: every hue at full strength ("vivid"), a few
    rug colours, pale ("pastel") or browns and greens ("earth"). Flecks are squares bent out of line
    by a random warp about their own size, so they are irregular, not a grid. Palette colours close
    to `avoid` (the chair's) are left out, as a photographer would; the vivid flecks keep every hue,
    so some have the chair's own colour.
    """
    cell = float(rng.choice(CONFETTI_CELLS)) * scale
    palette = str(rng.choice(CONFETTI_PALETTES))
    rows, cols = int(np.ceil(height / cell)) + 3, int(np.ceil(width / cell)) + 3
    count = rows * cols
    if palette == "vivid":
        colours = _hsv(rng.random(count), rng.uniform(0.6, 1.0, count), rng.uniform(0.35, 1.0, count))
    else:
        if palette == "rug":
            choices = _hsv(rng.random(6), rng.uniform(0.4, 0.9, 6), rng.uniform(0.25, 0.95, 6))
        elif palette == "pastel":
            choices = _hsv(rng.random(8), rng.uniform(0.15, 0.4, 8), rng.uniform(0.8, 1.0, 8))
        else:
            choices = _hsv(rng.uniform(0.05, 0.35, 8), rng.uniform(0.3, 0.8, 8), rng.uniform(0.2, 0.8, 8))
        if avoid is not None:
            far = np.abs(choices - avoid).max(axis=1) > 0.25
            choices = choices[far] if far.sum() >= 2 else choices
        colours = choices[rng.integers(len(choices), size=count)]
    warp = [_random_field(rng, height, width, 2 * cell) * cell for _ in range(2)]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    row = ((yy + warp[0]) / cell).astype(int) + 1
    col = ((xx + warp[1]) / cell).astype(int) + 1
    return colours.reshape(rows, cols, 3)[row.clip(0, rows - 1), col.clip(0, cols - 1)].astype(np.float32)


def _random_field(rng: np.random.Generator, height: int, width: int, period: float) -> np.ndarray:
    """Smooth random values in -1..1 that change over about `period` pixels."""
    grid = rng.uniform(-1, 1, (int(height / period) + 2, int(width / period) + 2)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def _hsv(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """RGB 0..1 (N x 3) from hue, saturation and value in 0..1."""
    hsv = np.stack([hue * 255, saturation * 255, value * 255], axis=-1).astype(np.uint8)[None]
    return np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"), dtype=np.float32)[0] / 255


def _value_noise(rng: np.random.Generator, big: int) -> np.ndarray:
    """Smooth multi-scale noise in 0..1 (upsampled random grids)."""
    total = np.zeros((big, big), dtype=np.float32)
    for cells, weight in ((4, 0.5), (16, 0.3), (64, 0.2)):
        grid = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8), mode="L")
        total += weight * np.asarray(grid.resize((big, big), Image.Resampling.BICUBIC), dtype=np.float32) / 255
    return total


def _shadow_map(shadow: tuple[float, float, float, float, float], big: int) -> np.ndarray:
    """How much the floor is darkened (0..strength): a soft ellipse under the chair."""
    cx, cy, rx, ry = (v * SUPERSAMPLE for v in shadow[:4])
    strength = shadow[4]
    layer = Image.new("L", (big, big), 0)
    ImageDraw.Draw(layer).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=ry * 0.5))
    return np.asarray(layer, dtype=np.float32) / 255 * strength


def _cast_shadow_map(polygon: list[tuple[float, float]], big: int, size: int) -> np.ndarray:
    """How much the backdrop is darkened by the seat's cast shadow: a soft-edged dark quadrilateral."""
    layer = Image.new("L", (big, big), 0)
    ImageDraw.Draw(layer).polygon([(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in polygon], fill=255)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=CAST_SHADOW_BLUR * size * SUPERSAMPLE))
    return np.asarray(layer, dtype=np.float32) / 255 * CAST_SHADOW


def _downsample(array: np.ndarray) -> np.ndarray:
    """Box-filter the supersampled canvas down to the output size (anti-aliasing)."""
    h, w, c = array.shape
    f = SUPERSAMPLE
    return array.reshape(h // f, f, w // f, f, c).mean(axis=(1, 3)).astype(np.float32)


def write_examples(out: str | Path, count: int = 6, size: int = 512) -> list[Path]:
    """Write chair_NN.png and chair_NN_mask.png for the app's examples; return the image paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        background = BACKGROUNDS[index % len(BACKGROUNDS)]
        thin = index % 2 == 1
        image, mask = render_chair(seed=index + 1, size=size, background=background, thin_legs=thin, noise=False)
        path = out / f"chair_{index + 1:02d}.png"
        image.save(path, optimize=True)
        mask.save(out / f"chair_{index + 1:02d}_mask.png", optimize=True)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write procedural example chairs (+ exact masks).")
    parser.add_argument("--out", default="assets", help="folder to write into (default: assets)")
    parser.add_argument("--count", type=int, default=6, help="how many chairs (default: 6)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (default: 512)")
    args = parser.parse_args(argv)
    for path in write_examples(args.out, args.count, args.size):
        print(path)


if __name__ == "__main__":
    main()
