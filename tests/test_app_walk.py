"""What a walk through the page found (issue 27), each in a real browser against the session's app (tiny model).

One browser per module; each test opens its own page. Screenshots land in test-artifacts/walk_*.png.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ARTIFACTS, OWNER, example_image
from tests.helpers import open_app
from tests.test_app_browser import CHROMIUM

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian chromium is not installed (apt-get install -y chromium)")


@pytest.fixture()
def page(browser, app_server):
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(f"window.localStorage.setItem('shapeinv-owner', '{OWNER}')")  # the session's jobs
    page = context.new_page()
    page.set_default_timeout(120_000)
    open_app(page, app_server.url)
    expect(page.locator("#model-status")).to_contain_text("ready")
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"walk_{name}.png"), full_page=True)


def pick_example(page, tmp_path) -> None:
    from playwright.sync_api import expect

    image = example_image(tmp_path)
    if image.parent.name == "assets":
        page.locator(f"img[src$='/{image.name}']").first.click()
    else:
        page.locator("#image input[type=file]").set_input_files(str(image))
    expect(page.locator("#overlay img")).to_be_visible()


def test_a_refused_start_leaves_start_usable_and_the_form_as_it_was(page, tmp_path):
    from playwright.sync_api import expect

    pick_example(page, tmp_path)
    steps = page.locator("#steps input")
    steps.fill("0")
    steps.blur()
    # The estimate under Start says it in its line; only Start's refusal is a toast (one mistake, one toast).
    expect(page.locator("#estimate")).to_contain_text(re.compile("steps must be", re.IGNORECASE))
    expect(page.locator(".toast-message-text")).to_have_count(0)
    page.locator("#start").click()
    expect(page.locator(".toast-message-text").filter(has_text="Steps")).to_have_count(1)
    expect(page.locator("#start")).to_be_enabled()
    expect(page.locator("#image img")).to_be_visible()
    expect(page.locator("#overlay img")).to_be_visible()
    expect(steps).to_have_value("0")
    expect(page.locator("#job-id .error")).to_have_count(0)
    shot(page, "1_refused_start")

    steps.fill("2")
    steps.blur()
    page.locator("#start").click()
    expect(page.locator("#job-id textarea")).to_have_value(re.compile(r"^[0-9a-f]{32}$"))


def test_a_file_that_is_not_an_image_is_called_that_and_leaves_no_error_marks(page, tmp_path):
    from playwright.sync_api import expect

    fake = tmp_path / "holiday.jpg"
    fake.write_bytes(bytes(range(256)) * 12)  # random-looking bytes named .jpg
    page.locator("#image input[type=file]").set_input_files(str(fake))
    expect(page.locator(".toast-message-text").filter(has_text="holiday.jpg is not an image")).not_to_have_count(0)
    for box in ("#mask-points", "#mask-background-points", "#mask-box", "#mask-note", "#overlay", "#mask-editor"):
        expect(page.locator(f"{box} .error")).to_have_count(0)
    expect(page.locator("#mask-note")).not_to_contain_text("Finding the object")
    expect(page.locator("#image img")).to_have_count(0)  # no broken picture left in the upload box
    assert "handle_file" not in page.locator(".toast-message-text").first.inner_text()
    shot(page, "2_not_an_image")


def test_when_no_object_is_found_the_photo_is_there_to_click_and_the_painter_opens_on_it(page, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    plain = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (200, 200, 200)).save(plain)  # nothing on it to find
    page.locator("#image input[type=file]").set_input_files(str(plain))
    note = page.locator("#mask-note")
    expect(note).to_contain_text("No chair was found in this photo")
    assert "--" not in note.inner_text(), "the page's words, not the command line's"
    expect(page.locator("#overlay img")).to_be_visible()
    expect(page.locator("#mask-editor canvas").first).to_be_visible()  # the painter is open, on the photo
    expect(page.locator(".toast-message-text")).to_have_count(0)
    shot(page, "3_no_object")
    box = page.locator("#overlay img").bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    expect(page.locator("#mask-points textarea, #mask-points input")).to_have_value(re.compile(r"^\d+,\d+$"))


def test_my_runs_shows_small_whole_thumbnails_with_their_captions_in_view(page, finished_job):
    from playwright.sync_api import expect

    page.get_by_text("My runs").click()
    thumbnails = page.locator("#runs-gallery img")
    expect(thumbnails.first).to_be_visible()
    page.wait_for_function("() => [...document.querySelectorAll('#runs-gallery img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    sizes = thumbnails.evaluate_all("images => images.map(i => [i.naturalWidth, i.naturalHeight])")
    assert all(max(size) <= 160 for size in sizes), sizes
    shown = thumbnails.first.bounding_box()
    assert shown["width"] <= 200 and shown["height"] <= 200, f"a small tile, not a 580 px one: {shown}"
    caption = page.locator("#runs-gallery").get_by_text(re.compile(r"job · weight [\d.]+ · done · \d+ steps"))
    expect(caption.first).to_be_visible()
    shot(page, "4_my_runs")


def test_a_photo_over_the_pixel_limit_is_refused_with_no_stale_note_or_error_marks(page, app_server, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    huge = tmp_path / "huge.png"
    Image.new("L", (9000, 6000), 170).save(huge)  # 54 megapixels, a few kB as PNG: one colour
    assert 54e6 > app_server.backend.limits.max_pixels
    page.locator("#image input[type=file]").set_input_files(str(huge))
    expect(page.locator(".toast-message-text").filter(has_text="54 megapixels")).not_to_have_count(0)
    for box in ("#image", "#mask-points", "#mask-background-points", "#mask-box", "#mask-note", "#overlay",
                "#mask-editor"):
        expect(page.locator(f"{box} .error")).to_have_count(0)
    expect(page.locator("#mask-note")).not_to_contain_text("Finding the object")
    expect(page.locator("#image img")).to_have_count(0)  # the refused photo does not stay in the upload box
    shot(page, "5_huge_photo")


def test_a_mask_over_the_pixel_limit_is_refused_and_the_mask_in_use_stays_without_error_marks(page, tmp_path):
    from PIL import Image
    from playwright.sync_api import expect

    huge = tmp_path / "huge_mask.png"
    Image.new("L", (9000, 6000), 255).save(huge)  # 54 megapixels
    pick_example(page, tmp_path)
    expect(page.locator("#mask-note")).not_to_contain_text("Finding the object")
    in_use = page.locator("#overlay img").get_attribute("src")
    page.get_by_text("Correct the mask").click()
    page.locator("#mask-upload input[type=file]").set_input_files(str(huge))
    expect(page.locator(".toast-message-text").filter(has_text="54 megapixels")).not_to_have_count(0)
    for box in ("#mask-upload", "#mask-note", "#overlay", "#mask-editor"):
        expect(page.locator(f"{box} .error")).to_have_count(0)
    expect(page.locator("#mask-upload img")).to_have_count(0)
    expect(page.locator("#overlay img")).to_have_attribute("src", in_use)
    shot(page, "6_huge_mask")


def test_a_sweep_of_one_step_is_said_to_draw_alike_pictures_for_every_weight(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Compare weights").click()
    estimate = page.locator("#sweep-estimate")
    expect(estimate).to_contain_text("Duration")
    expect(estimate).not_to_contain_text("cannot differ")
    steps = page.locator("#sweep-steps input")
    steps.fill("1")
    steps.blur()
    expect(estimate).to_contain_text("With 1 step, each weight's *s has moved only a little")
    expect(estimate).to_contain_text("the weights cannot differ yet")
    shot(page, "7_one_step_sweep")


def test_a_read_only_link_shows_the_run_to_another_browser_until_its_owner_stops_sharing(page, browser, app_server,
                                                                                        client, finished_job):
    from playwright.sync_api import expect

    client.predict(job_id=finished_job, concept_file=None, prompts="a blue chair in the shape of *s", num_images=1,
                   seed=7, steps=2, guidance=7.5, owner=OWNER, api_name="/generate")  # an edit to show
    open_app(page, f"{app_server.url}?job={finished_job}")
    expect(page.locator("#job-status")).to_contain_text("done")
    page.locator("#share").click()
    link = page.locator("#share-link input, #share-link textarea")
    expect(link).to_have_value(re.compile(r"\?share=[A-Za-z0-9_-]{22,}$"))
    url = link.input_value()
    shot(page, "8_share_owner")

    visitor = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()  # another browser: no secret
    visitor.set_default_timeout(120_000)
    open_app(visitor, url)
    expect(visitor.locator("#job-status")).to_contain_text("A run shared with you, to look at: done")
    expect(visitor.locator("#image img")).to_be_visible()
    expect(visitor.locator("#overlay img")).to_be_visible()
    expect(visitor.locator("#downloads")).to_contain_text(".safetensors")
    expect(visitor.locator("#gallery")).to_contain_text("a blue chair in the shape of *s (seed 7)")
    for control in ("#cancel", "#resume", "#share-row"):
        expect(visitor.locator(control)).to_be_hidden()
    expect(visitor.locator("#job-id textarea")).to_have_value("")  # nothing polled or controlled with the job
    expect(visitor.locator("#edit-concept textarea")).to_have_value("")
    visitor.locator("#generate").click()
    expect(visitor.locator(".toast-message-text").filter(has_text="No concept yet")).not_to_have_count(0)
    expect(visitor.locator("#gallery .error")).to_have_count(0)  # the refusal leaves the shared edits in view
    expect(visitor.locator("#gallery")).to_contain_text("a blue chair in the shape of *s (seed 7)")
    visitor.get_by_text("My runs").click()
    expect(visitor.locator("#runs-note")).to_contain_text("No runs from this browser yet")  # never the owner's
    shot(visitor, "9_share_visitor")

    page.locator("#unshare").click()
    expect(page.locator("#share-note")).to_contain_text("Not shared")
    expect(link).to_have_value("")
    open_app(visitor, url)
    expect(visitor.locator("#job-status")).to_contain_text("owner has stopped sharing it")
    expect(visitor.locator("#image img")).to_have_count(0)
    visitor.context.close()
