"""rembg as a mask source: only ever with a model already on disk, never a download.

Default model: `birefnet-general`. Among rembg's general-purpose models it gives the best object
masks: BiRefNet works at 1024 x 1024 with a high-resolution refinement stage and leads the
dichotomous-segmentation benchmarks (DIS5K) that reward thin structures, i.e. chair legs, slats
and the gaps between them. `isnet-general-use` (IS-Net, the DIS5K baseline, 1024 px, 170 MB) is
the lighter choice; `u2net` works at 320 px and blurs legs away; `bria-rmbg` (rembg's own default)
is licensed for non-commercial use only. The price of BiRefNet is size (about 1 GB) and speed on
CPU (seconds per image), acceptable for a mask computed once per learned shape.

A missing model is fetched by rembg itself on first use (a GitHub release file, progress bar in the
terminal, saved where rembg looks and used from then on), but only when fetching can work: never
with `SHAPEINV_OFFLINE=1` or `HF_HUB_OFFLINE=1` (the switch Stable Diffusion's loading already
obeys), and never when github.com cannot be reached (checked once per process with a 3 s
connection attempt), so an offline server falls back at once instead of stalling. The model file
is located first, exactly where rembg 2.0.x looks, and rembg is imported (slow: about a second)
only when there is a file or a fetch to do.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError, first_line

DEFAULT_REMBG_MODEL = "birefnet-general"
CUSTOM_SESSION = "u2net_custom"  # used for a path to an .onnx file (U^2-Net-style: 320 px, ImageNet norm)
LOW_RESOLUTION = ("u2net", "u2netp", "u2net_human_seg", "silueta")  # 320-px input: masks need refining
OFFLINE_SWITCHES = ("SHAPEINV_OFFLINE", "HF_HUB_OFFLINE")
MODEL_HOST = ("github.com", 443)  # rembg's models are release files of its GitHub repository


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
    return find_file(model, f"{model}.onnx")


def find_file(session: str, filename: str) -> Path | None:
    """A file of rembg session `session` where rembg looks for it (its model folder, then the old flat one)."""
    for path in (rembg_home() / "models" / session / filename, _legacy_home() / filename):
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


def offline_reason(host: tuple[str, int] = MODEL_HOST, what: str = "rembg's models") -> str | None:
    """Why a model must not be fetched now (one short clause), or None when fetching can work.

    `host` is where the model would come from (rembg's release server by default, the hub for CLIP)."""
    for name in OFFLINE_SWITCHES:
        if os.getenv(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name}={os.environ[name]} is set"
    if not _reachable(*host):
        return f"{host[0]} (where {what} are) cannot be reached"
    return None


@functools.lru_cache(maxsize=4)
def _reachable(host: str, port: int) -> bool:
    """One short connection attempt per process: a closed network answers at once or not at all."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return True
    except OSError:
        return False


def needs_fetch(model: str = DEFAULT_REMBG_MODEL) -> bool:
    """True when using `model` now means downloading it first (it is missing and fetching can work)."""
    return not model.endswith(".onnx") and model_file(model) is None and offline_reason() is None


def rembg_soft_mask(image: Image.Image, model: str = DEFAULT_REMBG_MODEL, fetch: bool = True) -> np.ndarray:
    """uint8 HxW object probability (0..255) from rembg, at the image's size.

    A missing model is fetched first when `fetch` and `offline_reason()` allow it. Raises
    `RembgModelMissing` when it is missing and not fetched, `InputError` for an unknown model.
    """
    path = model_file(model)
    if path is None:
        reason = "fetching was turned off" if not fetch else offline_reason()
        if model.endswith(".onnx"):
            raise RembgModelMissing(f"The custom rembg model {model} does not exist. {download_hint(model)}")
        if reason:
            raise RembgModelMissing(
                f"rembg model {model!r} is not on disk, and it was not fetched because {reason}. {download_hint(model)}"
            )
        print(f"Fetching rembg model {model!r} once into {rembg_home() / 'models' / model} ...", file=sys.stderr)
    session = _session(model, str(path) if path else None)
    mask = session.predict(image.convert("RGB"))[0].convert("L")
    if mask.size != image.size:
        mask = mask.resize(image.size, Image.Resampling.BILINEAR)
    return np.asarray(mask)


def is_low_resolution(model: str) -> bool:
    """U^2-Net-style models see the photo at 320 px: their masks are blurry and fill gaps between parts."""
    return model.endswith(".onnx") or model in LOW_RESOLUTION


@functools.lru_cache(maxsize=2)
def _session(model: str, path: str | None):
    """A rembg session (rembg fetches a missing named model here); cached: building one loads the network."""
    from rembg import new_session  # slow import: only when a model is really there or wanted
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
    if path is not None and session_class.resolve_existing(f"{model}.onnx") is None:  # rembg disagrees
        raise RembgModelMissing(f"rembg model {model!r} is not where rembg looks. {download_hint(model)}")
    if path is not None:
        return new_session(model)
    try:
        return new_session(model)  # fetches the model first
    except Exception as error:  # a fetch that failed half-way: network, disk, checksum
        raise RembgModelMissing(
            f"Fetching rembg model {model!r} failed ({first_line(error)}). {download_hint(model)}"
        ) from error
