"""The photo and mask section's events: a photo in, the mask found, clicked, painted or uploaded.

Component values in, `MaskBackend` calls, component values out. A restored job's photo keeps its
own mask (`restored`): its change event must not find a new one.
"""

from __future__ import annotations

import logging

import gradio as gr
from PIL import Image

from shapeinv_core.errors import InputError

from ..errors import user_errors

log = logging.getLogger(__name__)

NO_OBJECT_FOUND = ("**No chair was found in this photo automatically.** Click on the chair in the picture (or pick "
                   "'a box corner' and click two opposite corners around it), or paint it under 'Correct the mask'.")
CLICK_OBJECT, CLICK_BACKGROUND, CLICK_BOX = "a point on the object", "a point on the background", "a box corner"
CLICK_MODES = (CLICK_OBJECT, CLICK_BACKGROUND, CLICK_BOX)


def _append(points: str | None, point: str) -> str:
    return f"{points.strip()}; {point}" if points and points.strip() else point


class MaskHandlers:
    """Handlers of the photo and its mask; a part of `app.handlers.Handlers` (its `backend`)."""

    def new_photo(self, restored: bool = False):
        """A new photo (or 'clear'): its points, box and pending box corner start afresh (not a restored job's).
        The photo itself is not an input: one that cannot be read must not mark these boxes as errors."""
        if restored:
            return (gr.skip(),) * 4
        return "", "", "", None

    def mask_pending(self, image: str | None, points: str | None = None, background_points: str | None = None,
                     box: str | None = None, restored: bool = False):
        """A word on the page before the mask arrives; a model download on first use takes a while."""
        if image is None or restored:
            return gr.skip()
        if self.backend.mask_model_needs_fetch(any((text or "").strip() for text in (points, background_points, box))):
            return ("Downloading the segmentation model (first use on this server, this can take a few minutes); "
                    "the mask follows.")
        return "Finding the object ..."

    @user_errors
    def extract_mask(self, image: str | None, points: str | None = None, background_points: str | None = None,
                     box: str | None = None, restored: bool = False):
        """Photo (+ object points, background points and a box, as 'x,y; x,y' and 'x0,y0,x1,y1' in the
        photo's pixels) -> (overlay, editor value, mask, note for the visitor).

        When the photo is a restored job's (`restored`, the page's state until this change is handled), its own
        mask stays."""
        if restored:
            return (gr.skip(),) * 4
        if image is None:
            return None, None, None, ""
        picture = self.backend.read_image(image)
        prompts = self.backend.prompts(picture, points, background_points, box)
        try:
            result = self.backend.extract_mask(picture, prompts)
        except InputError as error:  # nothing found: the photo itself to click on, the painter on it, no mask yet
            log.info("mask: %s", error)  # the methods tried, for the terminal
            empty = Image.new("L", picture.size, 0)
            return (self.backend.picture(self.backend.overlay(picture, empty, prompts), "photo"),
                    self.backend.editor_value(picture, empty), None, NO_OBJECT_FOUND)
        return (self.backend.overlay(picture, result.mask, prompts), self.backend.editor_value(picture, result.mask),
                result.mask, self.backend.mask_note(result))

    @staticmethod
    def mask_failed():
        """After a photo that cannot be used (the toast says why): no broken picture, mask or stale note stays."""
        return None, None, None, None, ""

    @staticmethod
    def mask_upload_failed():
        """After an uploaded mask that cannot be used (the toast says why): it leaves the upload box, and the mask
        in use, its picture and its note stay as they were."""
        return None, gr.skip(), gr.skip(), gr.skip(), gr.skip()

    @staticmethod
    def open_painter(image: str | None, mask: str | None):
        """The mask painter opens when a photo is shown but no mask was found, so the object can be painted."""
        return gr.Accordion(open=True) if image is not None and mask is None else gr.skip()

    @user_errors
    def click_photo(self, image: str | None, points: str, background_points: str, box: str, click_mode: str,
                    corner: str | None, evt: gr.SelectData):
        """A click on the tinted photo adds an object point, a background point or a box corner (two clicks
        make a box); the mask follows. -> (points, background points, box, pending corner, mask outputs...)."""
        if image is None:
            return (gr.skip(),) * 8
        picture = self.backend.read_image(image)
        x, y = self.backend.photo_point(picture, *evt.index)
        spot = f"{x},{y}"
        if click_mode == CLICK_BOX and not corner:
            return (points, background_points, box, spot, gr.skip(), gr.skip(), gr.skip(),
                    "Now click the opposite corner of the box.")
        if click_mode == CLICK_BOX:
            box, corner = f"{corner},{spot}", None
        elif click_mode == CLICK_BACKGROUND:
            background_points = _append(background_points, spot)
        else:
            points = _append(points, spot)
        return (points, background_points, box, corner, *self.extract_mask(image, points, background_points, box))

    @user_errors
    def edit_mask(self, image: str | None, painted: dict | None, current: str | None = None):
        """The corrected mask (the editor's tinted layer) -> (overlay, mask); unchanged when nothing was painted
        (the editor also reports its value when it opens: that must not redraw the overlay)."""
        if image is None or not painted or not painted.get("layers"):
            return gr.skip(), gr.skip()
        picture = self.backend.read_image(image)
        try:
            mask = self.backend.mask_from_painting(painted["layers"][0], picture)
        except InputError:  # nothing painted yet (the painter opened on a photo without a mask): not an error
            return gr.skip(), gr.skip()
        if current is not None and self.backend.same_mask(mask, current):
            return gr.skip(), gr.skip()
        return self.backend.overlay(picture, mask), mask

    @user_errors
    def upload_mask(self, image: str | None, mask_file: str | None):
        """An uploaded mask -> (overlay, editor value, mask, note)."""
        if mask_file is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        picture = self.backend.read_image(image)
        mask = self.backend.read_mask(mask_file, picture)
        return (self.backend.overlay(picture, mask), self.backend.editor_value(picture, mask), mask,
                "Using the uploaded mask.")
