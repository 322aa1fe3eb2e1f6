"""rembg as a mask source: only ever with a model already on disk, never a download.

Default model: `birefnet-general`. Among rembg's general-purpose models it gives the best object
masks: BiRefNet works at 1024 x 1024 with a high-resolution refinement stage and leads the
dichotomous-segmentation benchmarks (DIS5K) that reward thin structures, i.e. chair legs, slats
and the gaps between them. `isnet-general-use` (IS-Net, the DIS5K baseline, 1024 px, 170 MB) is
the lighter choice; `u2net` works at 320 px and blurs legs away; `bria-rmbg` (rembg's own default)
is licensed for non-commercial use only. The price of BiRefNet is size (about 1 GB) and speed on
CPU (seconds per image), acceptable for a mask computed once per learned shape.

rembg downloads a missing model on first use. These machines (and many users' servers) have no
internet, and a download would stall the app, so the model file is located first, exactly where
rembg 2.0.x looks, and rembg is imported (slow: about a second) only when the file is there.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError

DEFAULT_REMBG_MODEL = "birefnet-general"
CUSTOM_SESSION = "u2net_custom"  # used for a path to an .onnx file (U^2-Net-style: 320 px, ImageNet norm)


class RembgModelMissing(InputError):
    """rembg's model file is not on disk, so rembg would try to download it."""


def rembg_home() -> Path:
    """Where rembg 2.0.x keeps models: $U2NET_HOME, else $REMBG_HOME, else $XDG_DATA_HOME/rembg or ~/.rembg."""
    if os.getenv("U2NET_HOME"):
        return _legacy_home()
    xdg = os.getenv("XDG_DATA_HOME")
    default = os.path.join(xdg, "rembg") if xdg else os.path.join("~", ".rembg")
    return Path(os.path.expanduser(os.getenv("REMBG_HOME", default)))


def _legacy_home() -> Path:
    """The flat folder older rembg versions used (~/.u2net); rembg still reads models from it."""
    default = os.path.join(os.getenv("XDG_DATA_HOME", "~"), ".u2net")
    return Path(os.path.expanduser(os.getenv("U2NET_HOME", default)))


def model_file(model: str) -> Path | None:
    """The model's .onnx file if it is on disk (a path to an .onnx file is taken as is), else None."""
    if model.endswith(".onnx"):
        path = Path(model).expanduser()
        return path if path.is_file() else None
    for path in (rembg_home() / "models" / model / f"{model}.onnx", _legacy_home() / f"{model}.onnx"):
        if path.is_file():
            return path
    return None


def download_hint(model: str = DEFAULT_REMBG_MODEL) -> str:
    """How to put the model where rembg finds it, for a user without it."""
    if model.endswith(".onnx"):
        return f"Put the ONNX file inside {rembg_home()} (rembg only loads custom models from there)."
    folder = rembg_home() / "models" / model
    return (
        f"rembg looks for {folder / (model + '.onnx')} (set U2NET_HOME to use another folder). "
        f"Download it once with internet access: `rembg d {model}` (or copy the file there), then run again."
    )


def rembg_soft_mask(image: Image.Image, model: str = DEFAULT_REMBG_MODEL) -> np.ndarray:
    """uint8 HxW object probability (0..255) from rembg, at the image's size.

    Raises `RembgModelMissing` when the model is not on disk, `InputError` for an unknown model.
    """
    path = model_file(model)
    if path is None:
        raise RembgModelMissing(f"rembg model {model!r} is not on disk. {download_hint(model)}")
    session = _session(model, str(path))
    mask = session.predict(image.convert("RGB"))[0].convert("L")
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    return np.asarray(mask)


@functools.lru_cache(maxsize=2)
def _session(model: str, path: str):
    """A rembg session for an on-disk model; cached because building one loads the whole network."""
    from rembg import new_session  # slow import: only when a model is really there
    from rembg.sessions import sessions

    if model.endswith(".onnx"):
        try:
            return new_session(CUSTOM_SESSION, model_path=path)
        except ValueError as error:  # rembg refuses custom models outside its folders
            raise InputError(f"rembg cannot load {path} ({error}). {download_hint(model)}") from error
    session_class = sessions.get(model)
    if session_class is None or not session_class.is_local() or session_class.requires_credentials():
        local = sorted(name for name, cls in sessions.items() if cls.is_local() and not cls.requires_credentials())
        raise InputError(f"Unknown rembg model {model!r}. Use one of: {', '.join(local)}.")
    if session_class.resolve_existing(f"{model}.onnx") is None:  # rembg disagrees on the location
        raise RembgModelMissing(f"rembg model {model!r} is not where rembg looks. {download_hint(model)}")
    return new_session(model)
