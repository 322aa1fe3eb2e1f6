"""The page in a real browser (Playwright driving Debian's Chromium), against the running app."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ARTIFACTS, example_image
from tests.helpers import open_app, overlay_picture, tinted, wait_until

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian chromium is not installed (apt-get install -y chromium)")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture()
def page(browser):
    """A fresh browser profile (its own storage, so its own owner secret) in the session's Chromium."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(120_000)
    yield page
    context.close()


def test_upload_learn_and_edit_in_the_browser(app_server, page, tmp_path):
    from playwright.sync_api import expect

    open_app(page, app_server.url)
    expect(page.locator("#model-status")).to_contain_text("ready")
    image = example_image(tmp_path)
    if image.parent.name == "assets":  # one click on the example
        page.locator(f"img[src$='/{image.name}']").first.click()
    else:
        page.locator("#image input[type=file]").set_input_files(str(image))
    expect(page.locator("#image img")).to_be_visible()
    expect(page.locator("#overlay img")).to_be_visible()
    expect(page.locator("#mask-note")).to_contain_text("colour-based method")

    # Correct the mask: a white stroke across the empty top of the picture adds to the object.
    overlay_before = page.locator("#overlay img").get_attribute("src")
    page.get_by_text("Correct the mask").click()
    canvas = page.locator("#mask-editor canvas").first
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.12
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 50, y + 10, steps=10)
    page.mouse.up()
    expect(page.locator("#overlay img")).not_to_have_attribute("src", overlay_before)
    # The stroke is in the mask once the overlay shows it (opening the editor may redraw the overlay first).
    stroke = (slice(45, 80), slice(225, 290))  # the stroke's rows and columns in the 512 px photo
    wait_until(lambda: tinted(overlay_picture(page), image)[stroke].mean() > 0.3, "the stroke to show in the overlay")

    page.locator("#mask-weight input[type=range]").fill("0.25")
    expect(page.locator("#mask-weight input[type=number]")).to_have_value("0.25")
    page.locator("#steps input").fill("12")  # the form's default views, fewer steps: a 2-core CPU's test
    page.locator("#start").click()
    expect(page.locator("#job-status")).to_contain_text("done", timeout=300_000)
    job_id = page.locator("#job-id textarea").input_value()
    assert re.fullmatch(r"[0-9a-f]{32}", job_id)
    assert f"job={job_id}" in page.url, "the address bar links to the job"
    config = (app_server.data / "jobs" / job_id / "config.json").read_text()
    assert '"mask_weight": 0.25' in config and '"steps": 12' in config, "the form's values reached the job"
    extracted = app_server.backend.extract_mask(app_server.backend.read_image(image)).mask
    used = Image.open(app_server.data / "jobs" / job_id / "mask.png")
    assert not np.asarray(extracted)[stroke].any(), "the stroke is where the automatic mask has nothing"
    assert (np.asarray(used)[stroke] > 127).mean() > 0.3, "the brush stroke was used"
    for chart in ("#denoising-chart", "#mask-chart"):  # the loss charts drew the run's steps
        expect(page.locator(f"{chart} .vega-embed")).to_contain_text("step")
    page.wait_for_function("() => { const i = document.querySelector('#attention img');"
                           " return i && i.complete && i.naturalWidth > 0; }")

    page.locator("#prompts textarea").fill("a red chair in the shape of *s")
    page.locator("#num-images input[type=range]").fill("2")
    page.locator("#generate").click()
    expect(page.locator("#gallery img")).to_have_count(2)
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    for name in ("_seed0.png", "_seed1.png"):  # a row of Mask-IoU and CLIP-T per image
        expect(page.locator("#edit-metrics")).to_contain_text(name)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_finished.png"), full_page=True)

    open_app(page, f"{app_server.url}?job={job_id}")  # the link shows the job again
    expect(page.locator("#job-status")).to_contain_text(f"Job {job_id}: done")
    expect(page.locator("#job-id textarea")).to_have_value(job_id)

    stranger = page.context.browser.new_page()  # another browser profile: another owner secret
    open_app(stranger, f"{app_server.url}?job={job_id}")
    expect(stranger.locator("#job-status")).to_contain_text("There is no job")
    expect(stranger.locator("#job-id textarea")).to_have_value("")
    stranger.context.close()


def test_compare_weights_tab_runs_a_sweep_and_hands_a_concept_to_edit(app_server, page, tmp_path):
    from playwright.sync_api import expect

    open_app(page, app_server.url)
    expect(page.locator("#model-status")).to_contain_text("ready")
    page.locator("#image input[type=file]").set_input_files(str(example_image(tmp_path)))
    expect(page.locator("#overlay img")).to_be_visible()
    page.get_by_role("tab", name="Compare weights").click()
    page.locator("#sweep-weights textarea").fill("0, 0.3")
    page.locator("#sweep-steps input").fill("4")
    page.locator("#sweep-sample-steps input[type=range]").fill("2")
    page.locator("#sweep-prompts textarea").fill("a red chair in the shape of *s")
    page.locator("#start-sweep").click()
    expect(page.locator("#sweep-status")).to_contain_text("done", timeout=300_000)
    page.wait_for_function("() => { const i = document.querySelector('#sweep-grid img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    expect(page.locator("#sweep-table")).to_contain_text("mask_iou")
    expect(page.locator("#sweep-chart .vega-embed")).to_contain_text("Mask-IoU")  # the trade-off chart drew
    sweep_id = page.locator("#sweep-id textarea").input_value()
    assert f"job={sweep_id}" in page.url
    page.locator("#use-concept").click()
    expect(page.locator("#edit-concept textarea")).to_have_value(f"{sweep_id}/weight_0")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_compare.png"), full_page=True)

    open_app(page, f"{app_server.url}?job={sweep_id}")  # a sweep's link opens its tab
    expect(page.locator("#sweep-status")).to_contain_text(f"Sweep {sweep_id}: done")
