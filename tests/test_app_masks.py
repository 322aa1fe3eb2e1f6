"""Picking the object on the page: clicks add points, two clicks make a box, the editor paints over
the photo; and the same prompts through the API. Real browser (Playwright + Debian's Chromium)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mask_scenes import bounds, iou, two_chairs
from tests.conftest import ARTIFACTS
from tests.helpers import open_app, overlay_picture, tinted, wait_until

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture
def scene(tmp_path):
    """The two-chair photo as a JPEG (small enough for the test app's upload limit) and both masks."""
    image, central, side = two_chairs()
    path = tmp_path / "two_chairs.jpg"
    image.save(path, quality=92)
    return path, central, side


def point_on(mask) -> tuple[int, int]:
    ys, xs = np.nonzero(np.asarray(mask)[150:300] > 127)  # the seat or the backrest
    return int(np.median(xs)), int(np.median(ys)) + 150


def test_the_note_names_the_method_and_the_command_for_the_better_one(empty_rembg_home):
    """Without rembg's weights the visitor reads what made the mask and how the server gets the AI
    model, in the page's words: one command, no folders (those are for the terminal)."""
    from app.backend import Backend
    from shapeinv_core.chairs.draw import render_chair
    from shapeinv_core.masks import Prompts, extract_mask

    image, exact = render_chair(1, size=256)
    for prompts in (None, Prompts(box=bounds(exact))):
        note = Backend.mask_note(extract_mask(image, prompts=prompts))
        assert "colour-based method" in note and "`rembg d" in note and "birefnet-general`" in note
        assert str(empty_rembg_home) not in note and "U2NET_HOME" not in note


def test_api_extract_mask_takes_points_and_a_box(app_server, client, scene):
    from gradio_client import handle_file

    path, central, side = scene
    x, y = point_on(side)
    _, _, mask, note = client.predict(image=handle_file(str(path)), points=f"{x},{y}", api_name="/extract_mask")
    assert iou(Image.open(mask), side) >= 0.85 and "from your clicks" in note
    _, _, mask, _ = client.predict(image=handle_file(str(path)), box=",".join(map(str, bounds(central))),
                                   api_name="/extract_mask")
    assert iou(Image.open(mask), central) >= 0.85
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Cannot read the point"):
        client.predict(image=handle_file(str(path)), points="here", api_name="/extract_mask")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (apt-get install -y chromium)")
def test_clicks_pick_the_object_and_the_editor_paints_over_the_photo(app_server, browser, scene):
    from playwright.sync_api import expect

    path, central, side = scene
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(60_000)
    open_app(page, app_server.url)
    page.locator("#image input[type=file]").set_input_files(str(path))
    overlay = page.locator("#overlay img")
    expect(overlay).to_be_visible()
    expect(page.locator("#mask-note")).to_contain_text("colour-based method")

    def click(x: float, y: float) -> None:
        box = overlay.bounding_box()
        page.mouse.click(box["x"] + x * box["width"] / 900, box["y"] + y * box["height"] / 512)

    assert iou(tinted(overlay_picture(page), path) * 255, central) >= 0.8  # no prompt: the central chair

    before = overlay.get_attribute("src")
    click(*point_on(side))
    expect(page.locator("#mask-points textarea, #mask-points input")).to_have_value(re.compile(r"^\d+,\d+$"))
    expect(overlay).not_to_have_attribute("src", before)
    expect(page.locator("#mask-note")).to_contain_text("from your clicks")
    assert iou(tinted(overlay_picture(page), path) * 255, side) >= 0.8, "the clicked chair is the mask now"

    page.locator("#clear-clicks").click()
    expect(page.locator("#mask-points textarea, #mask-points input")).to_have_value("")
    expect(page.locator("#mask-note")).to_contain_text("Found by a simple")  # the unprompted mask is back
    page.get_by_label("a box corner").check()
    x0, y0, x1, y1 = bounds(central, margin=12)
    click(x0, y0)
    expect(page.locator("#mask-note")).to_contain_text("opposite corner")
    before = overlay.get_attribute("src")
    click(x1, y1)
    expect(page.locator("#mask-box textarea, #mask-box input")).to_have_value(re.compile(r"^\d+,\d+,\d+,\d+$"))
    expect(overlay).not_to_have_attribute("src", before)
    assert iou(tinted(overlay_picture(page), path) * 255, central) >= 0.8, "the boxed chair is the mask now"

    # The editor: the photo under a tinted layer; opening it leaves the overlay as it was.
    page.get_by_role("button", name=re.compile("Correct the mask")).click()
    canvas = page.locator("#mask-editor canvas").first
    canvas.scroll_into_view_if_needed()
    expect(canvas).to_be_visible()
    expect(overlay).to_be_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    wall = np.asarray(Image.open(path).convert("RGB"))[5:20, 5:20].reshape(-1, 3).mean(axis=0)
    near_wall = (np.abs(shot - wall).sum(axis=2) < 40).mean()
    orange = ((shot[..., 0] - shot[..., 2] > 60) & (shot[..., 0] > 150)).mean()
    assert near_wall > 0.3, "the photo is under the mask layer"
    assert orange > 0.02, "the mask is shown as a tinted layer"
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.1  # an empty corner of the wall
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 20, steps=10)
    page.mouse.up()
    wait_until(lambda: tinted(overlay_picture(page), path)[:150, :300].mean() > 0.02, "the painted stroke in the mask")
    painted = tinted(overlay_picture(page), path)
    page.screenshot(path=str(ARTIFACTS / "mask_editor.png"), full_page=True)
    assert iou(painted[150:] * 255, np.asarray(central)[150:]) >= 0.8, "the rest of the mask is as it was"
    context.close()


def test_the_page_says_when_a_model_is_being_fetched_first(app_server, empty_rembg_home, monkeypatch, scene):
    """Online with no model on disk, the note shown before the mask says a download is under way
    (the network itself is simulated as reachable: this machine has none); offline, it does not."""
    from app.handlers import Handlers
    from shapeinv_core.masks import rembg_model

    handlers, (path, _, _) = Handlers(app_server.backend), scene
    assert handlers.mask_pending(str(path)) == "Finding the object ..."  # SHAPEINV_OFFLINE=1
    monkeypatch.delenv("SHAPEINV_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(rembg_model, "_reachable", lambda host, port: True)
    assert handlers.mask_pending(str(path)).startswith("Downloading the segmentation model")
