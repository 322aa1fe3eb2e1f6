"""Mask extraction: fallback quality on procedural chairs, rembg through its real onnxruntime session
(with a tiny model written here), the alpha path, input modes, EXIF, large images, bad masks."""

import os

import numpy as np
import pytest
from PIL import Image

from shapeinv_core.chairs.draw import render_chair
from shapeinv_core.errors import InputError
from shapeinv_core.masks import MaskResult, extract_mask, load_mask, overlay, rembg_model
from shapeinv_core.masks.cleanup import clean_mask

RED = (0.85, 0.12, 0.10)


pytestmark = pytest.mark.usefixtures("empty_rembg_home")


def iou(a, b):
    a, b = np.asarray(a) > 127, np.asarray(b) > 127
    return (a & b).sum() / max((a | b).sum(), 1)


def gap_pixels(exact: np.ndarray) -> np.ndarray:
    """Background pixels between the chair's parts: enclosed holes and the space between the legs,
    at least 2 px away from any part (edges are a matter of IoU, not of gaps)."""
    import cv2

    obj = exact > 127
    far = cv2.distanceTransform((~obj).astype(np.uint8), cv2.DIST_L2, 3) >= 2.5
    rows = np.nonzero(obj.any(axis=1))[0]
    top, bottom = rows.min(), rows.max()
    gaps = np.zeros_like(obj)
    for y in range(top, bottom + 1):
        xs = np.nonzero(obj[y])[0]
        gaps[y, xs.min() : xs.max() + 1] = ~obj[y, xs.min() : xs.max() + 1]
    return gaps & far


# --- fallback -------------------------------------------------------------------------------------

FALLBACK_CASES = [(seed, background) for background in ("plain", "gradient") for seed in range(6)]


@pytest.mark.parametrize("seed, background", FALLBACK_CASES)
def test_fallback_matches_exact_mask_and_keeps_gaps_open(seed, background):
    image, exact = render_chair(seed, size=512, background=background, thin_legs=seed % 2 == 1)
    result = extract_mask(image, method="fallback")
    assert result.method == "fallback" and result.mask.mode == "L" and result.mask.size == image.size
    assert set(np.unique(np.asarray(result.mask))) <= {0, 255}
    assert iou(result.mask, exact) >= 0.90
    gaps = gap_pixels(np.asarray(exact))
    assert gaps.sum() > 500  # the chair really has gaps between legs / slats
    predicted = np.asarray(result.mask) > 127
    assert predicted[gaps].mean() <= 0.02, "gaps between legs/slats were filled"


@pytest.mark.parametrize("seed, background", [(0, "plain"), (1, "plain"), (0, "gradient")])
def test_a_shadow_cast_between_the_legs_stays_out_of_the_mask(seed, background):
    """The seat's shadow on the backdrop, fenced in by the seat, the legs and a stretcher: as dark as a
    dark chair, but the backdrop's hue with nothing sharp between it and the lit wall."""
    image, exact = render_chair(seed, size=512, background=background, thin_legs=seed % 2 == 1, cast_shadow=True)
    predicted = np.asarray(extract_mask(image, method="fallback").mask) > 127
    gaps = gap_pixels(np.asarray(exact))
    assert predicted[gaps].mean() <= 0.02, "the shadow between the legs was taken for the chair"
    assert iou(predicted * 255, exact) >= 0.9


@pytest.mark.parametrize("seed", [4, 7])
def test_a_soft_highlight_on_the_backrest_is_not_a_hole(seed):
    """A glossy backrest catches the light in a patch that fades to the wall's own colour: the colour
    model cuts it out, but its rim is soft, unlike the sharp edges of a real gap between slats."""
    import cv2

    image, exact = render_chair(seed, size=512, background="plain")
    obj = np.asarray(exact) > 127
    inside = cv2.distanceTransform(obj.astype(np.uint8), cv2.DIST_L2, 5)
    rows = np.nonzero(obj.any(axis=1))[0]
    inside[rows.min() + (rows.max() - rows.min()) // 3:] = 0  # the backrest
    y, x = np.unravel_index(np.argmax(inside), inside.shape)
    rgb = np.asarray(image).astype(float)
    wall = rgb[5:20, 5:20].reshape(-1, 3).mean(axis=0)
    yy, xx = np.mgrid[0:512, 0:512]
    glow = np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * (0.5 * inside[y, x]) ** 2))[..., None]
    shiny = Image.fromarray(np.where(obj[..., None], rgb * (1 - glow) + wall * glow, rgb).clip(0, 255).astype(np.uint8))
    predicted = np.asarray(extract_mask(shiny, method="fallback").mask) > 127
    assert predicted[y, x] and iou(predicted * 255, exact) >= 0.985


def test_thin_legs_survive_the_fallback():
    image, exact = render_chair(3, size=512, background="gradient", thin_legs=True)
    predicted = np.asarray(extract_mask(image, method="fallback").mask) > 127
    legs = np.asarray(exact) > 127
    rows = np.nonzero(legs.any(axis=1))[0]
    foot_rows = slice(rows.max() - 30, rows.max() - 5)  # just above the feet: legs only
    assert (predicted[foot_rows] & legs[foot_rows]).sum() >= 0.8 * legs[foot_rows].sum()


def test_refining_a_blurry_network_mask_never_breaks_a_striped_object_into_pieces():
    """Black and white stripes on a white wall: the white stripes have the wall's colour, so GrabCut
    alone keeps only the black ones (five parts, IoU 0.5). The network's whole outline is kept instead."""
    import cv2

    from shapeinv_core.masks.fallback import largest_part_share, refine_soft_mask

    rgb = np.full((128, 128, 3), 236, np.uint8)
    exact = np.zeros((128, 128), bool)
    exact[24:104, 44:84] = True
    dark = (np.arange(128) // 4 % 2 == 0)[:, None] & exact
    rgb[dark] = 24
    soft = cv2.GaussianBlur(cv2.dilate(exact.astype(np.uint8) * 255, np.ones((5, 5), np.uint8)), (0, 0), 2)
    refined = refine_soft_mask(Image.fromarray(rgb), soft)
    assert largest_part_share(refined) == 1.0
    assert (refined & exact).sum() / (refined | exact).sum() >= 0.85


def test_auto_without_rembg_model_uses_fallback_and_says_how_to_get_rembg(empty_rembg_home):
    image, _ = render_chair(1, size=256)
    result = extract_mask(image)
    assert isinstance(result, MaskResult) and result.method == "fallback"
    assert "U2NET_HOME" in result.note and "rembg d birefnet-general" in result.note
    assert str(empty_rembg_home) in result.note
    assert result.fetch == "rembg d birefnet-general"  # for a page that cannot show paths
    assert list(empty_rembg_home.iterdir()) == []  # nothing was downloaded or created


def test_rembg_method_without_model_is_a_clear_error_not_a_download(empty_rembg_home):
    image, _ = render_chair(1, size=128)
    with pytest.raises(InputError, match="not on disk.*rembg d isnet-general-use"):
        extract_mask(image, method="rembg", rembg_model="isnet-general-use")
    assert list(empty_rembg_home.iterdir()) == []


# --- rembg through its real onnxruntime session -------------------------------------------------------


def write_redness_model(folder) -> str:
    """A 1x1 convolution: output = R - B of rembg's normalised input, so red things are 'object'."""
    import onnx
    from onnx import TensorProto, helper

    weight = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, 0.0, -1.0])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])],
        "redness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 320, 320])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = os.path.join(folder, "redness.onnx")
    onnx.save(model, path)
    return path


def test_rembg_path_through_real_session(empty_rembg_home):
    model = write_redness_model(empty_rembg_home)
    image, exact = render_chair(4, size=512, background="gradient", colour=RED)
    result = extract_mask(image, method="rembg", rembg_model=model)
    assert result.method == "rembg" and result.note is None and result.mask.size == image.size
    assert iou(result.mask, exact) >= 0.85  # 320-px model input: edges blur, the shape does not


def test_auto_prefers_rembg_when_its_model_is_on_disk(empty_rembg_home):
    model = write_redness_model(empty_rembg_home)
    image, exact = render_chair(2, size=256, background="plain", colour=RED)
    result = extract_mask(image, rembg_model=model)
    assert result.method == "rembg" and iou(result.mask, exact) >= 0.8


def test_rembg_on_a_large_rotated_photo_returns_full_size_upright_mask(empty_rembg_home, tmp_path):
    model = write_redness_model(empty_rembg_home)
    image, exact = render_chair(6, size=512, background="plain", colour=RED)
    big, big_exact = image.resize((2400, 1800)), exact.resize((2400, 1800))
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated 90 degrees clockwise; the viewer turns it back
    path = tmp_path / "phone.jpg"
    big.transpose(Image.Transpose.ROTATE_270).save(path, exif=exif, quality=92)
    result = extract_mask(path, method="rembg", rembg_model=model)
    assert result.mask.size == (2400, 1800)
    assert iou(result.mask, big_exact) >= 0.85


def test_custom_model_outside_rembg_folder_is_refused(empty_rembg_home, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    model = write_redness_model(outside)
    image, _ = render_chair(2, size=128, colour=RED)
    with pytest.raises(InputError, match="rembg cannot load"):
        extract_mask(image, method="rembg", rembg_model=model)


def test_unknown_rembg_model_lists_the_known_ones(empty_rembg_home):
    fake = empty_rembg_home / "models" / "no-such-model"
    fake.mkdir(parents=True)
    (fake / "no-such-model.onnx").write_bytes(b"")
    image, _ = render_chair(2, size=128)
    with pytest.raises(InputError, match="Unknown rembg model.*birefnet-general"):
        extract_mask(image, method="rembg", rembg_model="no-such-model")


@pytest.mark.parametrize(
    "env", [{"U2NET_HOME": "/x/u2"}, {"REMBG_HOME": "/x/rb"}, {"XDG_DATA_HOME": "/x/xdg"}, {}]
)
def test_model_folders_agree_with_rembg(monkeypatch, env):
    for name in ("U2NET_HOME", "REMBG_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    from rembg.sessions import sessions

    session = sessions["birefnet-general"]
    assert str(rembg_model.rembg_home() / "models" / "birefnet-general") == session.model_dir()
    assert str(rembg_model._legacy_home()) == session.legacy_home()


def test_model_found_in_per_model_and_legacy_folders(empty_rembg_home):
    assert rembg_model.model_file("u2net") is None
    (empty_rembg_home / "u2net.onnx").write_bytes(b"x")  # the old flat layout
    assert rembg_model.model_file("u2net") == empty_rembg_home / "u2net.onnx"
    folder = empty_rembg_home / "models" / "isnet-general-use"
    folder.mkdir(parents=True)
    (folder / "isnet-general-use.onnx").write_bytes(b"x")
    assert rembg_model.model_file("isnet-general-use") == folder / "isnet-general-use.onnx"


# --- alpha, modes, errors -----------------------------------------------------------------------------


def test_alpha_channel_wins_when_it_is_a_real_cutout(tmp_path):
    image, exact = render_chair(8, size=256)
    cutout = image.convert("RGBA")
    cutout.putalpha(exact)
    path = tmp_path / "cutout.png"
    cutout.save(path)
    result = extract_mask(path)
    assert result.method == "alpha" and np.array_equal(np.asarray(result.mask), np.asarray(exact))


def test_opaque_alpha_is_ignored(tmp_path):
    image, exact = render_chair(0, size=256)
    path = tmp_path / "opaque.png"
    image.convert("RGBA").save(path)
    result = extract_mask(path)
    assert result.method == "fallback" and iou(result.mask, exact) >= 0.9
    with pytest.raises(InputError, match="no transparent background"):
        extract_mask(path, method="alpha")


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "I;16", "LA", "RGBA"])
def test_every_image_mode_gives_a_mask(tmp_path, mode):
    image, exact = render_chair(0, size=256, background="plain")
    if mode == "I;16":
        converted = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    elif mode == "P":
        converted = image.quantize(64)  # an adaptive palette, as image editors write them
    elif mode in ("LA", "RGBA"):
        converted = image.convert(mode)
        converted.putalpha(exact)
    else:
        converted = image.convert(mode)
    path = tmp_path / ("chair.jpg" if mode == "CMYK" else "chair.png")
    converted.save(path)
    result = extract_mask(path)
    assert result.mask.size == (256, 256)
    assert result.method == ("alpha" if "A" in mode else "fallback")
    assert iou(result.mask, exact) >= 0.85


def test_large_image_is_processed_bounded_and_returned_full_size():
    image, exact = render_chair(1, size=512, background="gradient")
    big, big_exact = image.resize((3000, 2000), Image.Resampling.BICUBIC), exact.resize((3000, 2000))
    result = extract_mask(big, method="fallback")
    assert result.mask.size == (3000, 2000)
    assert iou(result.mask, big_exact) >= 0.88


def test_nothing_to_find_is_an_error_that_suggests_drawing_a_mask():
    plain = Image.new("RGB", (200, 150), (180, 190, 200))
    with pytest.raises(InputError, match="is empty.*Point at the object.*box.*paint.*upload"):
        extract_mask(plain, method="fallback")


def test_alpha_covering_the_frame_is_an_error():
    image = Image.new("RGBA", (100, 100), (200, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 100, 1))  # 1 % transparent: a cut-out, but of the whole frame
    with pytest.raises(InputError, match="covers the whole image"):
        extract_mask(image)


def test_non_image_and_unknown_method_are_refused(tmp_path):
    path = tmp_path / "chair.png"
    path.write_bytes(b"GIF89a but not really")
    with pytest.raises(InputError, match="not an image"):
        extract_mask(path)
    with pytest.raises(InputError, match="Unknown mask method"):
        extract_mask(Image.new("RGB", (10, 10)), method="magic")


# --- user masks, overlay, clean-up --------------------------------------------------------------------


def test_load_mask_resizes_and_binarises(tmp_path):
    drawn = Image.new("L", (50, 40), 0)
    drawn.paste(200, (10, 10, 30, 30))
    path = tmp_path / "mask.png"
    drawn.save(path)
    mask = load_mask(path, (100, 80))
    assert mask.mode == "L" and mask.size == (100, 80) and set(np.unique(np.asarray(mask))) == {0, 255}
    assert np.asarray(mask)[40, 40] == 255 and np.asarray(mask)[5, 5] == 0


def test_load_mask_reads_alpha_of_a_cutout_and_refuses_empty_or_full(tmp_path):
    cutout = Image.new("RGBA", (40, 40), (255, 255, 255, 0))  # white everywhere: brightness would say 'full'
    cutout.paste((255, 255, 255, 255), (10, 10, 30, 30))
    assert (np.asarray(load_mask(cutout, (40, 40))) > 0).mean() == pytest.approx(0.25)
    with pytest.raises(InputError, match="empty"):
        load_mask(Image.new("L", (20, 20), 0), (20, 20))
    with pytest.raises(InputError, match="covers the whole image"):
        load_mask(Image.new("L", (20, 20), 255), (20, 20))


def test_overlay_tints_the_object_only():
    image, exact = render_chair(0, size=128)
    preview = overlay(image, exact)
    assert preview.mode == "RGB" and preview.size == image.size
    before, after = np.asarray(image).astype(int), np.asarray(preview).astype(int)
    inside = np.asarray(exact) > 127
    assert (after[inside, 0] - after[inside, 2]).mean() > (before[inside, 0] - before[inside, 2]).mean() + 30
    assert after[~inside].mean() < before[~inside].mean()


def test_cleanup_drops_specks_and_small_holes_but_keeps_gaps_and_near_parts():
    mask = np.zeros((512, 512), dtype=bool)
    mask[100:300, 150:350] = True  # the chair body
    mask[150:250, 200:300] = False  # a real gap (10 000 px): stays open
    mask[120:125, 160:165] = False  # a noise hole (25 px): filled
    mask[310:400, 200:204] = True  # a leg cut off just below the body: kept
    mask[20:24, 20:24] = True  # a far speck: dropped
    cleaned = clean_mask(mask)
    assert not cleaned[200, 250] and cleaned[122, 162] and cleaned[350, 202] and not cleaned[22, 22]
