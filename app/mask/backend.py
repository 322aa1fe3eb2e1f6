"""The photo and its mask, without Gradio: uploads read within the limits, the automatic mask, clicks and painting.

A part of `app.backend.Backend` (its `limits`); the learning and restoring features read their
photo and mask through these calls too, so every way in is held to the same limits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shapeinv_core import masks
from shapeinv_core.errors import InputError
from shapeinv_core.files.images import check_object_size, fit_within, open_image

ASSETS = Path(__file__).resolve().parent.parent.parent / "assets"


def example_images() -> list[str]:
    """The project's own example photos (not their masks), offered under the photo."""
    return [str(path) for path in sorted(ASSETS.glob("*.png")) if not path.stem.endswith("_mask")]


class MaskBackend:
    """Reading a photo and finding, correcting or loading its mask."""

    def read_image(self, path: str | Path | None) -> Image.Image:
        """An uploaded photo, upright, 8-bit, within the pixel limit, shrunk to `max_side`.

        `info["photo_size"]` keeps the upload's own size: points and boxes are given in its pixels.
        """
        if path is None:
            raise InputError("No image yet. Upload a photo of one chair (PNG, JPEG or WebP), or click an example.")
        image = open_image(path, max_pixels=self.limits.max_pixels)
        picture = fit_within(image, self.limits.max_side)
        picture.info["photo_size"] = image.size
        return picture

    @staticmethod
    def prompts(picture: Image.Image, points: str | None = None, background_points: str | None = None,
                box: str | None = None) -> masks.Prompts:
        """Points and a box written in the photo's own pixels, as prompts in `picture`'s pixels."""
        prompts = masks.parse_prompts(points, background_points, box)
        width = picture.info.get("photo_size", picture.size)[0]
        return prompts.scaled(picture.width / width) if prompts and width != picture.width else prompts

    @staticmethod
    def photo_point(picture: Image.Image, x: float, y: float) -> tuple[float, float]:
        """A click on the shown picture, in the photo's own pixels (rounded: a click is not sub-pixel)."""
        scale = picture.info.get("photo_size", picture.size)[0] / picture.width
        return round(x * scale), round(y * scale)

    def extract_mask(self, image: Image.Image, prompts: masks.Prompts | None = None) -> masks.MaskResult:
        """The automatic mask; the operator's note (why this method, paths, commands) goes to the terminal."""
        result = masks.extract_mask(image, method="auto", prompts=prompts)
        if result.note:
            print(f"mask: {result.note}", file=sys.stderr)
        return result

    @staticmethod
    def mask_model_needs_fetch(prompted: bool) -> bool:
        """Whether the next automatic mask first downloads a model (first use on this server)."""
        return masks.needs_fetch(prompted)

    @staticmethod
    def mask_note(result: masks.MaskResult) -> str:
        """What the visitor is told: what made the mask, how far to trust it, what to do if it is wrong."""
        fix = "Wrong object? Click on the chair. Parts missing or extra? Paint them in the mask editor below."
        if result.method == "alpha":
            return "Your photo's transparent background is the mask. " + fix
        if result.method == "sam":
            return "Segment Anything outlined the object you pointed at. " + fix
        if result.method == "rembg":
            return ("An AI background remover found the object" + (" you pointed at" if result.prompted else "")
                    + ". It is usually right on photos of one object; check thin legs and gaps. " + fix)
        better = (f" A better mask needs the AI model: whoever runs this server can fetch it once with "
                  f"`{result.fetch}`." if result.fetch else "")
        if result.prompted:
            return ("Found from your clicks by a simple colour-based method (no AI model on this server). "
                    "Add points on missed parts, background points on wrong ones, or two clicks for a box. " + fix
                    + better)
        return ("Found by a simple colour-based method (no AI model on this server): good on plain backgrounds, "
                "unreliable on busy ones. " + fix + better)

    def read_mask(self, path: str | Path | None, image: Image.Image) -> Image.Image:
        """An uploaded (or edited) mask, at the image's size, 0/255; extracted automatically if None."""
        if path is None:
            try:
                return check_object_size(self.extract_mask(image).mask)
            except InputError as error:  # the methods tried and the CLI's flags are for the terminal
                print(f"mask: {error}", file=sys.stderr)
                raise InputError("No chair was found in this photo automatically, so there is no mask to learn "
                                 "from. Click on the chair in the picture beside the photo, paint it under 'Correct "
                                 "the mask', or upload a mask there.") from None
        return check_object_size(masks.load_mask(open_image(path, max_pixels=self.limits.max_pixels), image.size))

    @staticmethod
    def mask_from_painting(layer: Image.Image | np.ndarray, image: Image.Image) -> Image.Image:
        """The editor's tinted mask layer (painted = opaque-ish, erased = transparent) as a 0/255 mask."""
        layer = Image.fromarray(np.asarray(layer)) if isinstance(layer, np.ndarray) else layer
        if layer.mode not in ("RGBA", "LA"):
            return masks.load_mask(layer.convert("L"), image.size)
        painted = (np.asarray(layer.getchannel("A")) > 0).astype(np.uint8) * 255
        return masks.load_mask(Image.fromarray(painted, mode="L"), image.size)

    @staticmethod
    def same_mask(mask: Image.Image, other: str | Path) -> bool:
        """Whether two masks of one picture are the same pixels."""
        return bool(np.array_equal(np.asarray(mask) > 127, masks.binary_mask(other, mask.size)))

    @staticmethod
    def editor_value(image: Image.Image, mask: Image.Image) -> dict:
        """The mask editor's content: the photo underneath, the mask as a tinted see-through layer on it."""
        return {"background": image.convert("RGB"), "layers": [masks.tinted_layer(mask, image.size)],
                "composite": None}

    @staticmethod
    def overlay(image: Image.Image, mask: Image.Image, prompts: masks.Prompts | None = None) -> Image.Image:
        return masks.overlay(image, mask, prompts)
