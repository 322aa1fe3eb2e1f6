"""Image -> object mask, the shape `*s` learns: one module per source of a mask.

`alpha` (the image's own cut-out), `rembg_model` (a salient-object network through rembg),
`prompted` (Segment Anything, or the classical methods started by clicks and a box), `prompts`
(points and a box), `fallback` (classical, no weights), `texture` (the object on a busy
background: smooth where the background is not), `region` (grown from a click), `clusters` (the
box's colours against the ring around it), `cleanup` (specks, holes, which object), `given` (masks
a person supplies), `preview` (the tinted overlay), and `extract` (which answers, in which order).
"""

from .extract import METHODS, MaskResult, extract_mask, needs_fetch
from .given import binary_mask, check_mask, load_mask
from .preview import overlay, tinted_layer
from .prompts import Prompts, parse_prompts
from .rembg_model import DEFAULT_REMBG_MODEL

__all__ = [
    "DEFAULT_REMBG_MODEL",
    "METHODS",
    "MaskResult",
    "Prompts",
    "binary_mask",
    "check_mask",
    "extract_mask",
    "load_mask",
    "needs_fetch",
    "overlay",
    "parse_prompts",
    "tinted_layer",
]
