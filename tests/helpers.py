"""Shared helpers for the core tests: a tiny model built once per test session, simple inputs.

The tiny pipeline is a real diffusers pipeline with random weights, written to a temporary
folder and loaded back through the local-folder path real models use (nothing is mocked).
"""

from __future__ import annotations

import functools
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from shapeinv_core.config import InversionConfig
from shapeinv_core.models.loading import LoadedModel, load_model
from shapeinv_core.models.tiny import build_tiny_pipeline

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the network (.ci/run sets it too)

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="shapeinv-tests-"))


@functools.cache
def tiny_folder(prediction_type: str = "epsilon") -> Path:
    return build_tiny_pipeline(_SESSION_DIR / f"tiny-{prediction_type}", prediction_type=prediction_type)


def tiny_model(prediction_type: str = "epsilon") -> LoadedModel:
    """A fresh pipeline each call (inversion mutates the tokenizer), from the cached folder."""
    return load_model(str(tiny_folder(prediction_type)), device="cpu")


def chair_like(size: tuple[int, int] = (64, 64)) -> tuple[Image.Image, Image.Image]:
    """A crude chair (seat, back, two legs) on white, and its exact mask."""
    width, height = size
    image = Image.new("RGB", size, "white")
    mask = Image.new("L", size, 0)
    boxes = [
        (0.30, 0.15, 0.40, 0.60),  # back
        (0.30, 0.50, 0.72, 0.60),  # seat
        (0.30, 0.60, 0.36, 0.90),  # front leg
        (0.66, 0.60, 0.72, 0.90),  # back leg
    ]
    for box in boxes:
        xy = [box[0] * width, box[1] * height, box[2] * width, box[3] * height]
        ImageDraw.Draw(image).rectangle(xy, fill=(120, 70, 30))
        ImageDraw.Draw(mask).rectangle(xy, fill=255)
    return image, mask


def small_config(**changes) -> InversionConfig:
    """Settings sized for a 2-core CPU: 64 px, a few steps; the research form (the photo alone, *s from
    'chair', no LoRA phase) unless a test asks for the defaults' varied views, 'auto' start or LoRA phase."""
    settings = {"resolution": 64, "steps": 4, "batch_size": 2, "checkpoint_every": 2, "appearance": "photo",
                "initializer": "chair", "tune": "none", **changes}
    return InversionConfig(**settings).validate()


def open_app(page, url: str, timeout_ms: int = 300_000) -> None:
    """Load the app in a browser page and wait until Gradio has mounted it (its status line exists).

    Waits for a condition, with a limit for a busy machine: in a CI run at load 20 the first page of
    the session stayed at Gradio's "Loading..." for over 90 s.
    """
    page.goto(url, timeout=timeout_ms)
    page.locator("#model-status").wait_for(state="attached", timeout=timeout_ms)


def wait_until(condition, what: str = "condition", timeout: float = 300.0, poll: float = 0.05):
    """Poll `condition()` until it is truthy and return its value; the limit is generous for a busy CI machine."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(poll)
    return value


def serve(data: Path, port: int, log: Path, model: str = "tiny") -> subprocess.Popen:
    """`python -m app` as a separate process, its terminal written to `log`; returns once its API answers."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("GRADIO_TEMP_DIR", None)  # the session app's own cache: a served process keeps its own
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "--model", model, "--device", "cpu", "--data", str(data), "--port", str(port)],
        cwd=root, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT,
    )

    def answers() -> bool:
        assert process.poll() is None, f"the app exited: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, "the app to start", poll=0.5)
    return process


def python_warnings(terminal: str) -> list[str]:
    """Lines of a process's output that are Python warnings (`UserWarning:`, `DependencyWarning:`, ...)."""
    return [line for line in terminal.splitlines() if re.search(r"\b[A-Z]\w*Warning\b", line)]


def overlay_picture(page) -> Image.Image:
    """The mask overlay the page shows now (once its image has loaded), fetched as the browser got it."""
    page.wait_for_function("() => { const i = document.querySelector('#overlay img');"
                           " return i && i.complete && i.naturalWidth > 0; }")
    return Image.open(io.BytesIO(page.request.get(page.locator("#overlay img").get_attribute("src")).body()))


def tinted(overlay: Image.Image, photo: Path) -> np.ndarray:
    """Where the overlay shows the object: closer to the photo tinted orange than to the photo dimmed."""
    shown = np.asarray(overlay.convert("RGB")).astype(float)
    rgb = np.asarray(Image.open(photo).convert("RGB")).astype(float)
    as_object = 0.55 * rgb + 0.45 * np.array([255, 120, 0])
    as_background = 0.5 * rgb + 20
    return np.abs(shown - as_object).sum(axis=2) < np.abs(shown - as_background).sum(axis=2)
