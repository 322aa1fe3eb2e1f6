"""Masks on harder scenes: a noisy background, near-empty and near-full results, several objects,
and points/boxes that say which object is meant (classical method seeded by them: no weights here)."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mask_scenes import bounds, centre_of, iou, two_chairs
from shapeinv_core.chairs.draw import CONFETTI, render_chair
from shapeinv_core.errors import InputError
from shapeinv_core.masks import Prompts, extract_mask, parse_prompts
from shapeinv_core.masks.extract import check_coverage

pytestmark = pytest.mark.usefixtures("empty_rembg_home")


# --- the classical fallback on hard backgrounds -----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_chair_on_a_noisy_background_is_found(seed):
    image, exact = render_chair(seed, size=512, background="noisy", thin_legs=seed % 2 == 1)
    result = extract_mask(image, method="fallback")
    assert result.method == "fallback"
    assert iou(result.mask, exact) >= 0.9


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_chair_on_fine_grained_coloured_noise_is_found(seed):
    """Confetti or a patterned rug: every colour of the chair is somewhere in the background, but the
    chair is smooth where the background is not (fleck sizes and palettes vary with the seed)."""
    image, exact = render_chair(seed, size=512, background=CONFETTI, thin_legs=seed % 2 == 1)
    result = extract_mask(image, method="fallback")
    assert iou(result.mask, exact) >= 0.9


def test_a_box_around_the_left_of_two_chairs_on_confetti_returns_it():
    image, left, right = two_chairs(CONFETTI)
    for wanted, other in ((left, right), (right, left)):
        result = extract_mask(image, prompts=Prompts(box=bounds(wanted, margin=12)))
        assert result.method == "fallback" and result.prompted
        assert iou(result.mask, wanted) >= 0.9
        assert (np.asarray(result.mask)[np.asarray(other) > 127] > 127).mean() < 0.02


def test_a_point_on_a_chair_on_confetti_returns_it():
    import cv2

    image, left, right = two_chairs(CONFETTI)
    inside = cv2.distanceTransform((np.asarray(right) > 127).astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(np.argmax(inside), inside.shape)  # the middle of the seat
    result = extract_mask(image, prompts=Prompts(points=((float(x), float(y)),)))
    assert iou(result.mask, right) >= 0.9
    assert (np.asarray(result.mask)[np.asarray(left) > 127] > 127).mean() < 0.02


def test_a_box_with_nothing_in_it_is_refused_naming_what_was_tried():
    image, _, _ = two_chairs()
    with pytest.raises(InputError, match="No object found inside the box: tried the classical fallback seeded by "
                                         "the prompts, GrabCut started from the prompts, colour clustering"):
        extract_mask(image, prompts=Prompts(box=(10, 10, 150, 150)))


def test_a_speck_in_a_box_is_refused():
    image = Image.new("RGB", (300, 300), (200, 205, 210))
    ImageDraw.Draw(image).rectangle((150, 150, 153, 153), fill=(40, 30, 160))  # 0.2 % of the box
    with pytest.raises(InputError, match="No object found inside the box"):
        extract_mask(image, prompts=Prompts(box=(50, 50, 250, 250)))


def test_near_empty_result_is_an_error_naming_the_fixes():
    image = Image.new("RGB", (300, 300), (200, 205, 210))
    ImageDraw.Draw(image).rectangle((140, 140, 153, 153), fill=(40, 30, 160))  # 0.2 % of the frame
    with pytest.raises(InputError, match=r"nearly empty \(0\.\d % of the photo\).*click.*box.*paint.*upload"):
        extract_mask(image, method="fallback")


def test_near_full_result_is_an_error_naming_the_fixes():
    """The fallback cannot produce one (its border is background by construction), a network can."""
    mask = np.full((200, 200), 255, dtype=np.uint8)
    mask[:6] = 0  # 97 % of the frame
    with pytest.raises(InputError, match=r"\(rembg\) covers 97\.0 % of the photo.*click.*box.*paint.*upload"):
        check_coverage(mask, "rembg")
    mask[:12] = 0  # 94 %: accepted
    check_coverage(mask, "rembg")


# --- several objects: which one is kept -----------------------------------------------------------------


def test_without_prompts_the_most_central_large_object_is_kept():
    image, central, side = two_chairs()
    result = extract_mask(image, method="fallback")
    assert iou(result.mask, central) >= 0.9
    assert (np.asarray(result.mask)[np.asarray(side) > 127] > 127).mean() < 0.02


@pytest.mark.parametrize("which", ["first", "second"])
def test_a_point_on_one_of_two_chairs_returns_that_chair(which):
    image, first, second = two_chairs()
    wanted, other = (first, second) if which == "first" else (second, first)
    ys, xs = np.nonzero(np.asarray(wanted)[150:300] > 127)  # a point on the seat or the backrest
    point = (float(np.median(xs)), float(np.median(ys)) + 150)
    assert np.asarray(wanted)[int(point[1]), int(point[0])] > 127
    result = extract_mask(image, prompts=Prompts(points=(point,)))
    assert result.method == "fallback" and result.prompted and "seeded by the prompts" in result.note
    assert iou(result.mask, wanted) >= 0.9
    assert (np.asarray(result.mask)[np.asarray(other) > 127] > 127).mean() < 0.02


def test_a_box_around_the_side_chair_returns_it_not_the_central_one():
    image, central, side = two_chairs()
    result = extract_mask(image, prompts=Prompts(box=bounds(side)))
    assert iou(result.mask, side) >= 0.9
    assert (np.asarray(result.mask)[np.asarray(central) > 127] > 127).mean() < 0.02


def test_a_box_finds_a_chair_the_unprompted_fallback_misses():
    """A chair in a cluttered strip of colourful blocks that touch the border: the fallback's
    'the border is background' fails for the whole photo, but holds for the box around the chair."""
    image, exact = render_chair(7, size=512, background="plain")
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    rng = np.random.default_rng(0)
    for x in range(0, 512, 32):  # blocks all along the top and the bottom, in many colours
        for y0 in (0, 470):
            draw.rectangle((x, y0, x + 30, y0 + 42), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    truth = np.asarray(exact).copy()
    truth[:43], truth[470:] = 0, 0
    with pytest.raises(InputError, match="is empty"):
        extract_mask(canvas)
    x0, y0, x1, y1 = bounds(exact, margin=10)
    result = extract_mask(canvas, prompts=Prompts(box=(x0, max(y0, 44), x1, min(y1, 469))))
    assert iou(result.mask, truth) >= 0.85


def test_background_point_removes_a_part_the_mask_would_keep():
    image, first, second = two_chairs()
    box = (0, 0, 899, 511)
    cx, cy = centre_of(second)
    on_second = next((x, y) for x, y in ((cx, cy), (cx, cy - 40), (cx, cy + 40)) if np.asarray(second)[int(y), int(x)])
    ys, xs = np.nonzero(np.asarray(first)[150:300] > 127)
    on_first = (float(np.median(xs)), float(np.median(ys)) + 150)
    result = extract_mask(image, prompts=Prompts(points=(on_first,), background_points=(on_second,), box=box))
    assert iou(result.mask, first) >= 0.9 and (np.asarray(result.mask)[np.asarray(second) > 127] > 127).mean() < 0.02


# --- prompts as text ------------------------------------------------------------------------------------


def test_prompts_parse_from_cli_and_api_text():
    prompts = parse_prompts(["10,20", "30.5,40"], "5,6; 7,8", "100,90,20,10")
    assert prompts.points == ((10, 20), (30.5, 40)) and prompts.background_points == ((5, 6), (7, 8))
    assert prompts.box == (20, 10, 100, 90)  # corners in any order
    assert parse_prompts(**prompts.as_text()) == prompts
    assert not parse_prompts("", " ", "") and parse_prompts(None, None, None) == Prompts()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points": "12;40"}, "Cannot read the point '12'.*X,Y"),
        ({"box": "1,2,3"}, "Cannot read the box.*X0,Y0,X1,Y1"),
        ({"box": "5,5,5,90"}, "has no area"),
        ({"background_points": "a,b"}, "Cannot read the background point"),
    ],
)
def test_unreadable_prompts_are_refused_with_the_format(kwargs, message):
    with pytest.raises(InputError, match=message):
        parse_prompts(**kwargs)


def test_prompts_outside_the_photo_or_without_an_object_point_are_refused():
    image, _ = render_chair(0, size=128)
    with pytest.raises(InputError, match="outside the 128x128 photo"):
        extract_mask(image, prompts=Prompts(points=((300, 10),)))
    with pytest.raises(InputError, match="Background points alone"):
        extract_mask(image, prompts=Prompts(background_points=((3, 3),)))


# --- the offline chain's later steps, each on its own --------------------------------------------------


def test_grabcut_from_the_box_needs_no_background_colour_model():
    """White on white: a chair a shade lighter than the wall and a faint outline. The fallback's colour
    model sees nothing; GrabCut started from the box alone learns the wall outside the box."""
    import cv2

    from shapeinv_core.masks.prompted import grabcut_mask

    rgb = np.full((300, 300, 3), 226, np.uint8)
    exact = np.zeros((300, 300), np.uint8)
    cv2.ellipse(exact, (150, 130), (60, 80), 0, 0, 360, 1, -1)  # a shell
    exact[200:280:, 110:116], exact[200:280, 184:190] = 1, 1  # two legs
    rgb[exact > 0] = 246
    rgb[(cv2.dilate(exact, np.ones((3, 3), np.uint8)) - exact) > 0] = 200  # its outline
    rgb = np.clip(rgb + np.random.default_rng(0).normal(0, 1.5, rgb.shape), 0, 255).astype(np.uint8)
    image, truth = Image.fromarray(rgb), exact * 255
    with pytest.raises(InputError, match="empty"):
        extract_mask(image, method="fallback")
    assert iou(grabcut_mask(image, Prompts(box=(80, 40, 220, 290))) * 255, truth) >= 0.85


def test_the_region_grown_from_a_click_stops_at_a_faint_outline():
    from shapeinv_core.masks.region import grown_mask

    rgb = np.full((200, 200, 3), 230, np.uint8)
    rgb[60:140, 50:150] = 238  # a panel a shade lighter than the wall ...
    rgb[59, 49:151], rgb[140, 49:151], rgb[59:141, 49], rgb[59:141, 150] = 215, 215, 215, 215  # ... outlined
    found = grown_mask(Image.fromarray(rgb), Prompts(points=((100, 100),)))
    assert found[60:140, 50:150].mean() > 0.95 and found.sum() < 1.1 * 80 * 100


def test_colour_clusters_find_the_box_colours_the_ring_lacks():
    from shapeinv_core.masks.clusters import cluster_mask

    image, exact = render_chair(2, size=256, background=CONFETTI)
    found = cluster_mask(image, Prompts(box=bounds(exact, margin=8)))
    assert iou(found * 255, exact) >= 0.7  # coarse, but the chair and not the flecks


def test_a_point_on_a_speck_is_refused():
    image = Image.new("RGB", (300, 300), (200, 205, 210))
    ImageDraw.Draw(image).rectangle((150, 150, 153, 153), fill=(40, 30, 160))
    with pytest.raises(InputError, match="No object found under the points"):
        extract_mask(image, prompts=Prompts(points=((151, 151),)))


def test_a_small_chair_boxed_in_a_large_photo_is_kept():
    """0.2 % of the frame would be a speck without prompts; a fifth of the box it was drawn around is not."""
    chair, exact = render_chair(3, size=160, background="plain")
    wall = tuple(int(v) for v in np.asarray(chair)[3, 3])
    image, truth = Image.new("RGB", (1400, 1000), wall), Image.new("L", (1400, 1000), 0)
    image.paste(chair, (900, 300)), truth.paste(exact, (900, 300))
    assert (np.asarray(truth) > 127).mean() < 0.01
    x0, y0, x1, y1 = bounds(exact, margin=6)
    result = extract_mask(image, prompts=Prompts(box=(x0 + 900, y0 + 300, x1 + 900, y1 + 300)))
    assert iou(result.mask, truth) >= 0.85
