"""The app's state, and what the page's events do, without Gradio.

`Backend` holds the data folder, its job store, the engine that runs the jobs, the limits and the
outbox through which files reach Gradio. What it does for each part of the page is in that
feature's own module, and `Backend` is made of them:

- `app.mask.backend`: the photo and its mask;
- `app.learn.backend`: learning *s as a job: settings, queue, status, cancel, resume, estimates;
- `app.sweeps.backend`: a sweep over mask weights, its results and downloads;
- `app.edit.backend`: drawing with a *s, its scores, the concept's files and the run's zip;
- `app.runs.backend`: My runs, a run restored, read-only share links.

One object rather than one per feature: the features share the store and the worker, and build on
each other (a sweep is queued as a job is; restoring a sweep reads its concepts).

The handlers only convert between components and these calls, so everything here can be used (and
tested) from plain Python. Errors a user can fix are `ShapeInvError`s with the fix in the text.
Every call about a job takes the caller's `owner` token and reads the job through
`JobStore.owned`, so a stranger with a job id learns nothing. Files go to Gradio through
`outbox()` (a private temporary copy), never straight from the data folder, which the web server
does not serve at all. A housekeeping thread bounds the data folder (`retention`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from shapeinv_core.evaluation.metrics import DEFAULT_CLIP_MODEL
from shapeinv_core.jobs import JobStore, new_owner_token, validate_owner
from shapeinv_core.jobs.engines import EMBEDDED, create_engine
from shapeinv_core.jobs.folders import hold_data_folder, new_outbox
from shapeinv_core.jobs.retention import DEFAULT_KEEP_DAYS, clean_data_folder

from .edit.backend import EditBackend
from .learn.backend import LearnBackend
from .mask.backend import MaskBackend
from .runs.backend import RunsBackend
from .sweeps.backend import SweepBackend

log = logging.getLogger(__name__)


@dataclass
class Limits:
    """What one visitor may ask for. Uploads above `max_upload` are refused by the server itself."""

    max_upload: str = "20mb"
    max_pixels: int = 40_000_000
    max_side: int = 1024  # larger photos are shrunk on upload: the model sees 512 px anyway
    max_steps: int = 3000
    max_images: int = 8  # prompts x images per prompt, per request
    max_prompt_chars: int = 500  # per prompt (the text encoder reads 77 tokens anyway)
    max_queued: int = 20
    max_queued_per_owner: int = 3
    max_weights: int = 8  # concepts one sweep learns together
    max_sweep_images: int = 48  # weights x prompts x images per prompt
    edit_timeout: float = 300.0  # seconds an edit request may take, waiting included
    keep_days: float = DEFAULT_KEEP_DAYS  # finished jobs, edits and exports older than this are deleted
    max_disk_gb: float | None = None  # the data folder's budget; new jobs are refused beyond it

    def describe(self) -> str:
        """The limits in one paragraph, for the foot of the page."""
        budget = f" Data folder budget {self.max_disk_gb:g} GB." if self.max_disk_gb else ""
        return (f"Limits: uploads up to {self.max_upload}, images up to {self.max_pixels / 1e6:.0f} megapixels, "
                f"{self.max_steps} steps per job, {self.max_images} images per request, "
                f"{self.max_weights} weights and {self.max_sweep_images} images per sweep, "
                f"{self.max_queued} jobs waiting ({self.max_queued_per_owner} per person). Finished jobs are "
                f"deleted after {self.keep_days:g} days.{budget}")


@dataclass
class Backend(MaskBackend, LearnBackend, SweepBackend, EditBackend, RunsBackend):
    """The app's state: the data folder, its job store and the model-owning worker; the features' calls on it."""

    data_dir: Path
    model: str = "tiny"
    device: str = "auto"
    dtype: str = "auto"
    limits: Limits = field(default_factory=Limits)
    preview_every: int = 5
    preview_steps: int = 20
    clip_model: str | None = DEFAULT_CLIP_MODEL
    clean_every: float = 600.0  # seconds between housekeeping passes
    outbox_max_age: float = 3600.0  # Gradio copies a served file at once; the private copy can go soon
    engine: str = EMBEDDED  # or "ray": one Ray actor per GPU (shapeinv_core.jobs.ray_engine)
    ray_address: str | None = None  # a Ray cluster to join; None: a local Ray
    workers: int | None = None  # Ray actors (default: one per GPU)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        self._data_lock = hold_data_folder(self.data_dir)  # a second server on this folder is refused here
        self.store = JobStore(self.data_dir, max_queued=self.limits.max_queued,
                              max_queued_per_owner=self.limits.max_queued_per_owner)
        # The one place the engine is chosen: the embedded worker thread, or Ray actors (`--engine ray`).
        self.worker = create_engine(self.engine, self.store, ray_address=self.ray_address, workers=self.workers,
                                    model=self.model, device=self.device, dtype=self.dtype,
                                    preview_every=self.preview_every, preview_steps=self.preview_steps,
                                    clip_model=self.clip_model, edit_timeout=self.limits.edit_timeout)
        self.outbox_dir, self._outbox_lock = new_outbox()  # the outboxes of servers that died are removed
        self._stop_cleaning = threading.Event()

    def start(self) -> Backend:
        self.worker.start()
        threading.Thread(target=self._housekeeping, name="shapeinv-housekeeping", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop_cleaning.set()
        self.worker.stop()
        shutil.rmtree(self.outbox_dir, ignore_errors=True)
        self._outbox_lock.close()
        self._data_lock.close()  # another server may have the data folder now

    def clean(self, now: float | None = None) -> None:
        """One housekeeping pass: old finished jobs, edits and exports; old private copies of served files."""
        clean_data_folder(self.store, self.limits.keep_days, (self.data_dir / "edits", self.data_dir / "exports"),
                          now=now)
        cutoff = (time.time() if now is None else now) - self.outbox_max_age
        for folder in list(self.outbox_dir.iterdir()) if self.outbox_dir.is_dir() else []:
            if folder.is_dir() and folder != self.gradio_cache and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def _housekeeping(self) -> None:
        while True:
            try:
                self.clean()
            except Exception:  # a busy database or a vanished file: the next pass tries again
                log.exception("housekeeping")
            if self._stop_cleaning.wait(self.clean_every):
                return

    def outbox(self, path: Path | None) -> str | None:
        """A private temporary copy of a data-folder file for Gradio to serve (it copies it into its cache)."""
        if path is None:
            return None
        folder = self.outbox_dir / secrets.token_hex(16)
        folder.mkdir(parents=True)
        return str(shutil.copy2(path, folder / Path(path).name))

    @property
    def gradio_cache(self) -> Path:
        """Where a server process keeps Gradio's copies of served files (Gradio ages them; they go with the outbox)."""
        return self.outbox_dir / "gradio"

    def picture(self, image: Image.Image | None, name: str = "picture") -> str | None:
        """A picture for the page as a file written once per content, never rewritten while it may be served.

        Gradio writes a returned PIL image to one cache path per content at every call, truncating the
        file while another response may still be sending it: the blank loss plot of every queued job broke
        1 poll in 30 under 20 clients. A file path is copied into Gradio's cache once, atomically.
        """
        if image is None:
            return None
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        folder = self.outbox_dir / f"picture-{hashlib.sha256(data).hexdigest()[:32]}"
        path = folder / f"{name}.png"
        if path.is_file():
            os.utime(folder)  # still handed out: the outbox's cleaning keeps it
            return str(path)
        folder.mkdir(parents=True, exist_ok=True)
        staging = folder / f".{secrets.token_hex(8)}.tmp"
        staging.write_bytes(data)
        os.replace(staging, path)
        return str(path)

    @staticmethod
    def owner_token(owner: str | None) -> str:
        """The caller's owner token, checked; a new one when the caller brings none (it is returned to them)."""
        return validate_owner(owner) if owner and owner.strip() else new_owner_token()
