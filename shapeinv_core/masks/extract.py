"""Image -> binary object mask: the shape `*s` learns.

`extract_mask` tries, in order (method="auto"):
  1. the image's own alpha channel, when it has real transparency (a cut-out);
  2. with prompts (points on the object or the background, a box): Segment Anything, when its
     weights are on disk or can be fetched (`prompted`);
  3. rembg (default `birefnet-general`, fetched on first use when online; see `rembg_model`);
     320-px models such as `u2netp` are sharpened by GrabCut at the photo's resolution;
  4. the classical method that needs no weights (`fallback`), seeded by the prompts if any,
     with a one-line note saying why the stronger methods were not used.
Of several separate objects, the one under the prompts is kept, else the most central large one
(`cleanup`). A result below 1 % or above 95 % of the frame is an error that says how to help
(point, box, paint or upload), never a silent near-empty mask. A mask the user gives
(`given.load_mask`) always wins over all of them. Masks are computed at a bounded size (large
photos would make the work slow, not better) and returned at the image's full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import ImageSource, fit_within, open_image
from .alpha import flatten, usable_alpha
from .cleanup import clean_mask
from .fallback import WORK_SIDE as FALLBACK_SIDE
from .fallback import fallback_mask, refine_soft_mask
from .given import check_mask
from .prompted import SamMissing, classical_mask, sam_mask, sam_needs_fetch
from .prompts import Prompts
from .rembg_model import DEFAULT_REMBG_MODEL, RembgModelMissing, is_low_resolution, rembg_soft_mask
from .rembg_model import needs_fetch as rembg_needs_fetch

METHODS = ("auto", "alpha", "sam", "rembg", "fallback")
WORK_SIDE = 1024  # rembg's largest input size; masks are computed at most this large
MIN_COVERAGE = 0.01  # an automatic mask smaller than this share of the frame is not an object
MAX_COVERAGE = 0.95  # ... nor one larger than this: it is the background, or everything
HOW_TO_HELP = (
    "Point at the object (click it in the app, --point X,Y in the CLI), draw a box around it "
    "(--box X0,Y0,X1,Y1), paint the mask, or upload one (--mask)."
)


@dataclass
class MaskResult:
    """A mask and where it came from; `note` (one line, for the operator) says why this method, if not the best."""

    mask: Image.Image  # mode 'L', 0/255, the image's size (after EXIF rotation)
    method: str  # "alpha", "sam", "rembg" or "fallback"
    note: str | None = None
    prompted: bool = False  # the object was chosen by the prompts


def extract_mask(
    image: ImageSource,
    method: str = "auto",
    rembg_model: str | None = None,
    max_side: int = WORK_SIDE,
    prompts: Prompts | None = None,
    fetch: bool = True,
) -> MaskResult:
    """The object mask of `image` (see the module docstring for the order of methods).

    `rembg_model` is a rembg model name (default `DEFAULT_REMBG_MODEL`) or a path to a custom
    U^2-Net-style .onnx file inside rembg's model folder. `prompts` (image pixels) say which object;
    `fetch=False` never downloads a model. Raises `InputError` for a method that cannot run (no
    transparency, no model) or when the mask found is (nearly) empty or (nearly) fills the frame.
    """
    if method not in METHODS:
        raise InputError(f"Unknown mask method {method!r}. Use one of: {', '.join(METHODS)}.")
    image = open_image(image)
    prompts = prompts or Prompts()
    prompts.check_inside(image.size)
    if method in ("auto", "alpha"):
        alpha = usable_alpha(image)
        if alpha is not None:
            return _alpha_result(alpha, prompts)
        if method == "alpha":
            raise InputError("The image has no transparent background. Use --method auto, rembg or fallback.")
    if method == "sam" and not prompts:
        raise InputError("The sam method needs a prompt: --point X,Y on the object or --box X0,Y0,X1,Y1 around it.")
    work = fit_within(flatten(image), max_side)
    local = prompts.scaled(work.width / image.width)
    notes = []
    if prompts and method in ("auto", "sam"):
        try:
            return _result(sam_mask(work, local, fetch), image.size, "sam", local)
        except SamMissing as missing:
            if method == "sam":
                raise
            notes.append(str(missing).split(". ")[0])
    if method in ("auto", "rembg"):
        model = rembg_model or DEFAULT_REMBG_MODEL
        try:
            soft = rembg_soft_mask(work, model, fetch)
        except RembgModelMissing as missing:
            if method == "rembg":
                raise
            notes.append(str(missing))
        else:
            binary = refine_soft_mask(work, soft) if is_low_resolution(model) else soft >= 128
            found = clean_mask(binary, local)
            if found.any() or method == "rembg":
                return _result(found, image.size, "rembg", local, note=_join(notes) or None)
            notes.append(f"rembg's {model!r} mask had nothing under the points or box")
    small = fit_within(work, FALLBACK_SIDE)
    small_prompts = prompts.scaled(small.width / image.width)
    binary = classical_mask(small, small_prompts) if prompts else fallback_mask(small)
    note = f"Made with the classical fallback{' seeded by the prompts' if prompts else ''}: {_join(notes)}"
    return _result(binary, image.size, "fallback", small_prompts, note=note if notes else None)


def needs_fetch(prompted: bool = False, rembg_model: str | None = None) -> bool:
    """Whether `extract_mask(method="auto")` would download a model first (so a page can say so)."""
    return (prompted and sam_needs_fetch()) or rembg_needs_fetch(rembg_model or DEFAULT_REMBG_MODEL)


def _alpha_result(alpha: np.ndarray, prompts: Prompts) -> MaskResult:
    """The cut-out as it is; with prompts, only the object under them (a cut-out of several things)."""
    if prompts:
        chosen = clean_mask(alpha, prompts)
        if chosen.any():
            alpha = chosen
    mask = Image.fromarray(alpha.astype(np.uint8) * 255, mode="L")
    check_mask(np.asarray(mask))
    return MaskResult(mask=mask, method="alpha", prompted=bool(prompts))


def _result(binary: np.ndarray, size: tuple[int, int], method: str, prompts: Prompts, note: str | None = None
            ) -> MaskResult:
    """Keep the chosen object, scale to the image's size, and refuse a (nearly) empty or full mask."""
    binary = clean_mask(binary, prompts)
    mask = Image.fromarray(binary.astype(np.uint8) * 255, mode="L")
    if mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0)
    check_coverage(np.asarray(mask), method)
    return MaskResult(mask=mask, method=method, note=note, prompted=bool(prompts))


def check_coverage(mask: np.ndarray, method: str) -> None:
    """Refuse an automatic mask that is (nearly) empty or (nearly) the whole frame, saying how to help."""
    coverage = float((np.asarray(mask) > 127).mean())
    share = f"{100 * coverage:.1f} % of the photo"
    if coverage < MIN_COVERAGE:
        state = "is empty" if coverage == 0 else f"is nearly empty ({share})"
        raise InputError(f"The automatic mask ({method}) {state}, so it is not the object. {HOW_TO_HELP}")
    if coverage > MAX_COVERAGE:
        raise InputError(f"The automatic mask ({method}) covers {share}: that is the background, not the object. "
                         f"{HOW_TO_HELP}")


def _join(notes: list[str]) -> str:
    return "; ".join(note.rstrip(".") for note in notes) + "." if notes else ""
