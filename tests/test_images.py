"""open_image: every Pillow mode normalised, EXIF rotation applied, bombs and non-images refused."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from shapeinv_core.errors import InputError
from shapeinv_core.files.images import MAX_PIXELS, fit_within, open_image


def _gradient(width=40, height=30):
    x = np.linspace(0, 1, width)[None, :].repeat(height, 0)
    return x


def test_rgb_passes_through(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (10, 200, 30)).save(path)
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (20, 10) and image.getpixel((3, 3)) == (10, 200, 30)


@pytest.mark.parametrize(
    "mode, expect_mode",
    [("L", "RGB"), ("1", "RGB"), ("P", "RGB"), ("CMYK", "RGB"), ("LA", "RGBA"), ("RGBA", "RGBA"), ("PA", "RGBA")],
)
def test_8bit_modes_become_rgb_or_rgba(tmp_path, mode, expect_mode):
    base = Image.new("RGBA" if expect_mode == "RGBA" else "RGB", (16, 8), (200, 100, 50, 128))
    image = base.convert(mode)
    if mode == "PA":  # no common file format stores PA: the in-memory path
        out = open_image(image)
    else:
        path = tmp_path / ("a.jpg" if mode == "CMYK" else "a.png")
        image.save(path)
        out = open_image(path)
    assert out.mode == expect_mode and out.size == (16, 8)


def test_palette_with_transparency_keeps_alpha(tmp_path):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (0, 0, 5, 10))
    image.info["transparency"] = 1
    path = tmp_path / "p.png"
    image.save(path, transparency=1)
    out = open_image(path)
    assert out.mode == "RGBA"
    alpha = np.asarray(out.getchannel("A"))
    assert alpha[:, :5].max() == 0 and alpha[:, 5:].min() == 255


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = (_gradient() * 65535).astype(np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)  # saved as a 16-bit PNG, read back as I;16 or I
    out = np.asarray(open_image(path).convert("L")).astype(int)
    assert out[0, 0] == 0 and out[0, -1] == 255 and 100 < out[0, 20] < 160


@pytest.mark.parametrize("mode, scale", [("I", 65535), ("F", 1.0), ("I;16", 65535)])
def test_wide_modes_in_memory(mode, scale):
    values = _gradient() * scale
    image = Image.fromarray(values.astype(np.float32), mode="F")
    image = image if mode == "F" else image.convert(mode)
    out = np.asarray(open_image(image).convert("L")).astype(int)
    assert out[0, 0] == 0 and out[0, -1] == 255


def test_exif_orientation_is_applied(tmp_path):
    # stored 40 wide x 20 high, left half red; orientation 6 = rotate 90 degrees clockwise to view
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    out = open_image(path)
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[5, 10], np.asarray(out)[35, 10]
    assert top[0] > 200 and bottom[2] > 200  # the stored left (red) is now on top


def test_non_image_is_refused_clearly(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not an image at all")
    with pytest.raises(InputError, match="not an image"):
        open_image(path)
    with pytest.raises(InputError, match="not found"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="not an image"):
        open_image(b"\x00\x01garbage")


def _png_header_only(width, height):
    """A PNG whose header claims width x height: a decompression bomb as Pillow sees it."""

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(50_000, 50_000))
    with pytest.raises(InputError, match="megapixels"):
        open_image(path)
    with pytest.raises(InputError, match="megapixels"):
        open_image(io.BytesIO(path.read_bytes()).getvalue())
    assert 50_000 * 50_000 > MAX_PIXELS


def test_pixel_limit_is_a_setting(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(InputError, match="Resize"):
        open_image(path, max_pixels=5_000)


def test_fit_within_only_shrinks():
    image = Image.new("RGB", (3000, 1500))
    assert fit_within(image, 1024).size == (1024, 512)
    assert fit_within(Image.new("RGB", (100, 50)), 1024).size == (100, 50)
