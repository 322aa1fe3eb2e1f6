"""Opening user images safely: any file Pillow reads, upright, in RGB or RGBA."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError


def open_image(source: str | Path | Image.Image) -> Image.Image:
    """Open an image file (or take a PIL image) upright, as RGB or RGBA."""
    if isinstance(source, Image.Image):
        image = source
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"Image not found: {path}. Check the path.")
        try:
            image = Image.open(path)
            image.load()
        except (UnidentifiedImageError, OSError) as error:
            raise InputError(f"{path} is not an image Pillow can read ({error}). Use a PNG, JPEG or WebP file.") from error
    image = ImageOps.exif_transpose(image)
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")
