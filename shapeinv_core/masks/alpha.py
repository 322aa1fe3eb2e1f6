"""The image's own transparency: a cut-out already is a mask.

Also the one rule for turning an RGBA photo into RGB for the colour-based methods (onto white).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MIN_TRANSPARENT = 0.005  # an alpha channel counts as a cut-out when this share of pixels is transparent


def usable_alpha(image: Image.Image) -> np.ndarray | None:
    """alpha > 127 when the image has real transparency; None for no alpha or an opaque one."""
    if image.mode != "RGBA":
        return None
    alpha = np.asarray(image.getchannel("A"))
    if (alpha < 128).mean() < MIN_TRANSPARENT:
        return None
    return alpha > 127


def flatten(image: Image.Image) -> Image.Image:
    """RGB for the colour-based methods; an unusable alpha is composited onto white."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")
