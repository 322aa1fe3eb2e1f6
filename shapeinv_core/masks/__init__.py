"""Image -> object mask, the shape `*s` learns: one module per source of a mask.

`alpha` (the image's own cut-out), `rembg_model` (a salient-object network through rembg),
`fallback` (classical, no weights), `cleanup` (specks, holes, the main object), `given` (masks a
person supplies), `preview` (the tinted overlay), and `extract` (which of them answers, in order).
"""

from .extract import METHODS, MaskResult, extract_mask
from .given import binary_mask, check_mask, load_mask
from .preview import overlay
from .rembg_model import DEFAULT_REMBG_MODEL

__all__ = [
    "DEFAULT_REMBG_MODEL",
    "METHODS",
    "MaskResult",
    "binary_mask",
    "check_mask",
    "extract_mask",
    "load_mask",
    "overlay",
]
