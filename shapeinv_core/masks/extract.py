"""Image -> binary object mask: the shape `*s` learns.

`extract_mask` tries, in order (method="auto"):
  1. the image's own alpha channel, when it has real transparency (a cut-out);
  2. with prompts (points on the object or the background, a box): Segment Anything, when its
     weights are on disk or can be fetched (`prompted`);
  3. rembg (default `birefnet-general`, fetched on first use when online; see `rembg_model`);
     320-px models such as `u2netp` are sharpened by GrabCut at the photo's resolution;
  4. the classical method that needs no weights (`fallback`), with a one-line note saying why the
     stronger methods were not used. With prompts it is a chain, each tried when the one before
     found nothing in the box (or under the points): the fallback seeded by the prompts, GrabCut
     started from the prompts alone, the region grown from the clicks, colour clustering (the box's
     colours against the ring around it), then (auto only) rembg's small `u2netp` when its weights
     are on disk; then one refusal naming them all.
Of several separate objects, the one under the prompts is kept, else the most central large one
(`cleanup`). A result below 1 % (with a box: and below 3 % of the box) or above 95 % of the frame is an error
that says how to help (point, box, paint or upload), never a silent near-empty mask. A mask the user gives
(`given.load_mask`) always wins over all of them. Masks are computed at a bounded size (large
photos would make the work slow, not better) and returned at the image's full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError
from ..files.images import ImageSource, fit_within, open_image
from .alpha import flatten, usable_alpha
from .cleanup import clean_mask
from .clusters import cluster_mask
from .fallback import WORK_SIDE as FALLBACK_SIDE
from .fallback import fallback_mask, refine_soft_mask
from .given import check_mask
from .prompted import SamMissing, classical_mask, grabcut_mask, region_mask, sam_mask, sam_needs_fetch
from .prompts import Prompts
from .rembg_model import DEFAULT_REMBG_MODEL, RembgModelMissing, is_low_resolution, rembg_soft_mask
from .rembg_model import model_file as rembg_model_file
from .rembg_model import needs_fetch as rembg_needs_fetch

METHODS = ("auto", "alpha", "sam", "rembg", "fallback")
WORK_SIDE = 1024  # rembg's largest input size; masks are computed at most this large
MIN_COVERAGE = 0.01  # an automatic mask smaller than this share of the frame is not an object
MAX_COVERAGE = 0.95  # ... nor one larger than this: it is the background, or everything
MIN_BOX_SHARE = 0.03  # with a box, a mask this share of the box is an object even below MIN_COVERAGE of the frame
SECOND_NETWORK = "u2netp"  # with prompts, tried after the classical methods when its weights are on disk (4.6 MB)
CLASSICAL_STEPS = (  # with prompts and no network's answer, tried in turn until one finds the object
    ("the classical fallback seeded by the prompts", classical_mask, False),  # (name, method, only for clicks)
    ("GrabCut started from the prompts", grabcut_mask, False),
    ("the region grown from the clicks", region_mask, True),
    ("colour clustering", cluster_mask, False),
)
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
    fetch: str | None = None  # the command that would fetch the stronger model(s) skipped for lack of weights


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
    notes, missing_models = [], []
    if prompts and method in ("auto", "sam"):
        try:
            return _result(sam_mask(work, local, fetch), image.size, "sam", local)
        except SamMissing as missing:
            if method == "sam":
                raise
            notes.append(str(missing).split(". ")[0] + " (`rembg d sam` fetches it)")
            missing_models.append("sam")
    model = rembg_model or DEFAULT_REMBG_MODEL
    if method in ("auto", "rembg"):
        try:
            soft = rembg_soft_mask(work, model, fetch)
        except RembgModelMissing as missing:
            if method == "rembg":
                raise
            notes.append(str(missing))
            if not model.endswith(".onnx"):  # a custom file is not fetched by name
                missing_models.append(model)
        else:
            binary = refine_soft_mask(work, soft) if is_low_resolution(model) else soft >= 128
            found = clean_mask(binary, local)
            if method == "rembg" or (found.any() and not prompts) or fills(found, local):
                return _result(found, image.size, "rembg", local, note=_join(notes) or None,
                               fetch=_fetch(missing_models))
            notes.append(f"rembg's {model!r} mask had nothing under the points or box")
    if not prompts:
        small = fit_within(work, FALLBACK_SIDE)
        note = f"Made with the classical fallback: {_join(notes)}" if notes else None
        return _result(fallback_mask(small), image.size, "fallback", Prompts(), note=note,
                       fetch=_fetch(missing_models))
    return _offline_chain(work, image.size, local, method == "auto" and model != SECOND_NETWORK, notes,
                          _fetch(missing_models))


def _offline_chain(work: Image.Image, size: tuple[int, int], prompts: Prompts, try_network: bool, notes: list[str],
                   fetch: str | None) -> MaskResult:
    """With prompts and no network's answer: each of `CLASSICAL_STEPS` in turn until one fills a fair
    part of the box (or frame), then `SECOND_NETWORK` when `try_network` and its file is on disk, then
    one refusal that names every method tried and the command for the stronger models."""
    tried = []
    for name, step, clicks_only in CLASSICAL_STEPS:
        if clicks_only and not prompts.points:
            continue
        found = clean_mask(step(work, prompts), prompts)
        if fills(found, prompts):
            done = f"Made with {name}" + (f" ({', '.join(tried)} found nothing)" if tried else "")
            note = f"{done}: {_join(notes)}" if notes else f"{done}." if tried else None
            return _result(found, size, "fallback", prompts, note=note, fetch=fetch)
        tried.append(name)
    if try_network and rembg_model_file(SECOND_NETWORK) is not None:
        found = clean_mask(refine_soft_mask(work, rembg_soft_mask(work, SECOND_NETWORK, fetch=False)), prompts)
        if fills(found, prompts):
            done = f"Made with rembg's {SECOND_NETWORK!r} ({', '.join(tried)} found nothing)"
            note = f"{done}: {_join(notes)}" if notes else f"{done}."
            return _result(found, size, "rembg", prompts, note=note, fetch=fetch)
        tried.append(f"rembg's {SECOND_NETWORK!r}")
    where = "inside the box" if prompts.box else "under the points"
    stronger = f" A stronger model may find it: fetch it once with `{fetch}`." if fetch else ""
    raise InputError(f"No object found {where}: tried {', '.join(tried)}.{stronger} Draw the box closer around the "
                     "object, click on it, paint the mask, or upload one (--mask).")


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


def _result(binary: np.ndarray, size: tuple[int, int], method: str, prompts: Prompts, note: str | None = None,
            fetch: str | None = None) -> MaskResult:
    """Keep the chosen object, scale to the image's size, and refuse a (nearly) empty or full mask."""
    binary = clean_mask(binary, prompts)
    mask = Image.fromarray(binary.astype(np.uint8) * 255, mode="L")
    box = prompts.scaled(size[0] / binary.shape[1]).box if prompts.box else None
    if mask.size != tuple(size):
        mask = mask.resize(tuple(size), Image.Resampling.BILINEAR).point(lambda v: 255 if v > 127 else 0)
    check_coverage(np.asarray(mask), method, box)
    return MaskResult(mask=mask, method=method, note=note, prompted=bool(prompts), fetch=fetch)


def _fetch(models: list[str]) -> str | None:
    """The command that fetches the models that were missing (rembg's command line takes several)."""
    return f"rembg d {' '.join(models)}" if models else None


def fills(mask: np.ndarray, prompts: Prompts) -> bool:
    """Whether a mask is an object, not a speck (a fair part of the box or of the frame) nor the background."""
    coverage = float(mask.mean())
    if coverage > MAX_COVERAGE:
        return False
    in_box = prompts.box is not None and mask.sum() >= MIN_BOX_SHARE * _box_area(prompts.box, mask.shape)
    return in_box or coverage >= MIN_COVERAGE


def _box_area(box: tuple[float, float, float, float], shape: tuple[int, int]) -> float:
    height, width = shape
    return max(min(box[2], width) - max(box[0], 0), 1.0) * max(min(box[3], height) - max(box[1], 0), 1.0)


def check_coverage(mask: np.ndarray, method: str, box: tuple[float, float, float, float] | None = None) -> None:
    """Refuse an automatic mask that is (nearly) empty or (nearly) the whole frame, saying how to help.

    With a box, a fair part of the box is enough too: a small chair boxed in a large photo is fine."""
    coverage = float((np.asarray(mask) > 127).mean())
    share = f"{100 * coverage:.1f} % of the photo"
    if box is not None and coverage < MIN_COVERAGE:
        in_box = float((np.asarray(mask) > 127).sum()) / _box_area(box, np.asarray(mask).shape)
        if in_box < MIN_BOX_SHARE:
            state = "is empty" if coverage == 0 else f"is nearly empty ({100 * in_box:.1f} % of the box)"
            raise InputError(f"The automatic mask ({method}) {state}, so it is not the object. {HOW_TO_HELP}")
    elif coverage < MIN_COVERAGE:
        state = "is empty" if coverage == 0 else f"is nearly empty ({share})"
        raise InputError(f"The automatic mask ({method}) {state}, so it is not the object. {HOW_TO_HELP}")
    if coverage > MAX_COVERAGE:
        raise InputError(f"The automatic mask ({method}) covers {share}: that is the background, not the object. "
                         f"{HOW_TO_HELP}")


def _join(notes: list[str]) -> str:
    return "; ".join(note.rstrip(".") for note in notes) + "." if notes else ""
