"""Opening user images safely: any file Pillow reads, upright, in 8-bit RGB or RGBA.

Users upload phone photos (EXIF-rotated), scans (CMYK, 16-bit), cut-outs (RGBA, palette with a
transparent colour) and now and then something that is not an image or is a decompression bomb.
Everything downstream (masks, the VAE) then only ever sees 8-bit RGB or RGBA the right way up.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

# 100 megapixels: above any phone camera in common use (a 12000 x 8000 photo is 96 MP), far
# below what would exhaust memory once converted to float tensors.
MAX_PIXELS = 100_000_000

ImageSource = str | Path | bytes | Image.Image | np.ndarray
# An object under a thousandth of the photo (16x16 px of 512x512) fills less than a cell of the 16x16 map grid.
MIN_OBJECT_SHARE = 0.001


def open_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open a path, bytes, PIL image or HxW(x3/4) uint8 array; return it upright as RGB or RGBA.

    Alpha is kept whenever the image has any (an opaque alpha too): whether it is usable as a mask
    is for `masks` to decide. Raises `InputError` for a missing file, a non-image, or an image
    larger than `max_pixels`.
    """
    image = _open(source, max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make a good image unusable
        pass
    return to_8bit_rgb(image)


def to_8bit_rgb(image: Image.Image) -> Image.Image:
    """Normalise any Pillow mode to 8-bit RGB, or RGBA when the image carries transparency.

    16-bit and float images are scaled, not clipped, so a 16-bit scan does not come out white.
    """
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    has_alpha = "A" in mode or mode.endswith("a") or (mode == "P" and "transparency" in image.info)
    if mode == "P" and image.palette is not None and image.palette.mode == "RGBA":
        has_alpha = True
    if mode in ("LA", "La", "PA", "RGBa", "RGBX"):
        image = image.convert("RGBA")
        return image if has_alpha else image.convert("RGB")
    try:
        return image.convert("RGBA" if has_alpha else "RGB")
    except ValueError as error:
        message = f"Images in Pillow mode {mode!r} are not supported ({error}). Save it as PNG or JPEG."
        raise InputError(message) from error


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """The image shrunk (never enlarged) so that its longer side is at most `max_side`."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _open(source: ImageSource, max_pixels: int) -> Image.Image:
    if isinstance(source, Image.Image):
        _check_pixels(source.size, max_pixels, "The image")
        return source
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, bytes):
        name, stream = "The uploaded data", io.BytesIO(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"Image not found: {path}. Check the path.")
        name, stream = path.name, path  # the name only: a server's upload folder is nobody's business
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse both the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(stream)
            _check_pixels(image.size, max_pixels, name)  # before decoding a single pixel
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{name} is too large to open safely ({error}). Resize it below 100 megapixels.") from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{name} is not an image Pillow can read ({error}). Use a PNG, JPEG or WebP file.") from error
    return image


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width * height > max_pixels:
        raise InputError(
            f"{name} is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than the "
            f"{max_pixels / 1e6:.0f} MP allowed (a decompression bomb or a huge scan). Resize it first."
        )
    if width == 0 or height == 0:
        raise InputError(f"{name} has no pixels ({width}x{height}). Use a real photo.")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4)):
        array = array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array
        if array.dtype != np.uint8:
            array = _scale_to_uint8(array)
        return Image.fromarray(np.ascontiguousarray(array))
    raise InputError(f"An image array must be HxW, HxWx3 or HxWx4, not {array.shape}. Pass an RGB image.")


def _scale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map 16-bit, 32-bit or float pixel values to 0..255 by the range they were stored in."""
    values = array.astype(np.float64)
    top = float(np.nanmax(values)) if values.size else 0.0
    if array.dtype.kind == "f" and top <= 1.0:
        values = values * 255.0  # float images in 0..1
    elif top > 255:
        values = values / 257.0  # 16-bit data (65535 -> 255)
    return np.nan_to_num(values).clip(0, 255).round().astype(np.uint8)


def check_object_size(mask: Image.Image) -> Image.Image:
    """Refuse a mask whose object is a speck: too few pixels to give the attention map a shape to follow.

    (The empty and the whole-frame mask are `masks.check_mask`'s.)
    """
    white = np.asarray(mask.convert("L")) > 127
    share = float(white.mean())
    if 0 < share < MIN_OBJECT_SHARE:
        count = int(white.sum())
        raise InputError(f"The mask's object is a speck ({count} pixel{'s' if count > 1 else ''}, {share:.3%} of "
                         "the picture); "
                         f"it must cover at least {MIN_OBJECT_SHARE:.1%} to carry a shape. Make the whole object "
                         "white in the mask.")
    return mask
