"""What a person says about which object they mean: points on it, points on the background, a box.

Coordinates are pixels of the photo as shown (after EXIF rotation), x to the right, y down. The
same `Prompts` come from the CLI (`--point X,Y --background-point X,Y --box X0,Y0,X1,Y1`), the app
(clicks on the photo) and the API (the same text as the CLI, several points separated by `;`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Prompts:
    """Object points, background points and an optional box (x0, y0, x1, y1), in image pixels."""

    points: tuple[Point, ...] = ()
    background_points: tuple[Point, ...] = ()
    box: Box | None = None

    def __bool__(self) -> bool:
        return bool(self.points or self.background_points or self.box)

    def scaled(self, factor: float) -> Prompts:
        """The same prompts on an image resized by `factor`."""
        box = tuple(v * factor for v in self.box) if self.box else None
        return Prompts(_scale(self.points, factor), _scale(self.background_points, factor), box)

    def shifted(self, dx: float, dy: float) -> Prompts:
        """The same prompts on a crop whose top-left corner was at (dx, dy)."""
        box = (self.box[0] - dx, self.box[1] - dy, self.box[2] - dx, self.box[3] - dy) if self.box else None
        return Prompts(_shift(self.points, dx, dy), _shift(self.background_points, dx, dy), box)

    def check_inside(self, size: tuple[int, int]) -> None:
        """Refuse a point or box outside an image of `size` (width, height): it was meant for another photo."""
        width, height = size
        for x, y in self.points + self.background_points:
            if not (0 <= x < width and 0 <= y < height):
                raise InputError(
                    f"The point {_fmt((x, y))} lies outside the {width}x{height} photo. "
                    "Give points in the photo's pixels: x from the left, y from the top."
                )
        if self.box and (self.box[0] >= width or self.box[1] >= height or self.box[2] <= 0 or self.box[3] <= 0):
            raise InputError(f"The box {self.as_text()['box']} lies outside the {width}x{height} photo.")

    def as_text(self) -> dict[str, str]:
        """The prompts as the CLI/API text: {'points': 'x,y; x,y', 'background_points': ..., 'box': 'x0,y0,x1,y1'}."""
        return {
            "points": "; ".join(_fmt(p) for p in self.points),
            "background_points": "; ".join(_fmt(p) for p in self.background_points),
            "box": ",".join(f"{v:g}" for v in self.box) if self.box else "",
        }


def parse_prompts(
    points: str | Iterable[str] | None = None,
    background_points: str | Iterable[str] | None = None,
    box: str | None = None,
) -> Prompts:
    """Prompts from text: each point 'X,Y' (a list, or one string with ';' between points), box 'X0,Y0,X1,Y1'."""
    parsed_box = None
    if box and box.strip():
        values = _numbers(box, 4, "box", "X0,Y0,X1,Y1 (two opposite corners)")
        x0, x1 = sorted((values[0], values[2]))
        y0, y1 = sorted((values[1], values[3]))
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise InputError(f"The box {box.strip()!r} has no area. Give two opposite corners: X0,Y0,X1,Y1.")
        parsed_box = (x0, y0, x1, y1)
    return Prompts(_points(points, "point"), _points(background_points, "background point"), parsed_box)


def seed_discs(points: Iterable[Point], shape: tuple[int, int], radius: float) -> np.ndarray:
    """Boolean HxW array, True within `radius` pixels of any point: a click marks a small area, not one pixel."""
    h, w = shape
    yy, xx = np.ogrid[0:h, 0:w]
    seeds = np.zeros((h, w), dtype=bool)
    for x, y in points:
        seeds |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return seeds


def _points(text: str | Iterable[str] | None, what: str) -> tuple[Point, ...]:
    if text is None:
        return ()
    items = text.split(";") if isinstance(text, str) else list(text)
    return tuple(tuple(_numbers(item, 2, what, "X,Y")) for item in items if item.strip())


def _numbers(text: str, count: int, what: str, form: str) -> list[float]:
    parts = [p for p in text.replace(" ", ",").split(",") if p.strip()]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count or not all(np.isfinite(values)):
        raise InputError(f"Cannot read the {what} {text.strip()!r}. Write it as {form}, in pixels, e.g. "
                         + ("120,340." if count == 2 else "40,60,300,480."))
    return values


def _scale(points: tuple[Point, ...], factor: float) -> tuple[Point, ...]:
    return tuple((x * factor, y * factor) for x, y in points)


def _shift(points: tuple[Point, ...], dx: float, dy: float) -> tuple[Point, ...]:
    return tuple((x - dx, y - dy) for x, y in points)


def _fmt(point: Point) -> str:
    return f"{point[0]:g},{point[1]:g}"
