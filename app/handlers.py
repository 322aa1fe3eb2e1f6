"""Event handlers: turn component values into `Backend` calls and results into component values.

Each public method is one named API endpoint (its argument names are the client's parameter
names). A `ShapeInvError` becomes a `gr.Error` with the same message, so the page and the
client show the fix instead of a traceback.
"""

from __future__ import annotations

import functools

import gradio as gr
from PIL import Image

from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import ShapeInvError
from shapeinv_core.jobs import FINISHED, RUNNING, validate_job_id

from .backend import Backend
from .plots import loss_plot


def user_errors(function):
    """Show `ShapeInvError`s to the user as they are written; anything else stays a server error."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except ShapeInvError as error:
            raise gr.Error(str(error), print_exception=False) from error

    return wrapper


def checked_image(**options) -> gr.Image:
    """A `gr.Image` that answers a file Pillow cannot open with a message instead of a bare 'Error'.

    The check wraps the instance's `preprocess`; a subclass would make Gradio write a .pyi stub
    next to this module at import time.
    """
    image = gr.Image(**options)
    original = image.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            name = getattr(payload, "orig_name", None) or "The upload"
            raise gr.Error(f"{name} is not an image this app can read ({type(error).__name__}). "
                           "Upload a PNG, JPEG or WebP photo.", print_exception=False) from error

    image.preprocess = preprocess
    return image


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


def _at_least(path, side: int) -> Image.Image | None:
    """A small preview (the tiny model's 64 px) enlarged with visible pixels, so it is not a speck."""
    if path is None:
        return None
    image = Image.open(path)
    if image.width >= side:
        return image
    scale = -(-side // image.width)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _editor_value(mask: Image.Image) -> dict:
    picture = mask.convert("RGB")
    return {"background": picture, "layers": [], "composite": picture}


class Handlers:
    def __init__(self, backend: Backend):
        self.backend = backend

    # --- image and mask -----------------------------------------------------------------------
    @user_errors
    def extract_mask(self, image: str | None):
        """Photo -> (overlay, editor picture, mask, note on the method used)."""
        if image is None:
            return None, None, None, ""
        picture = self.backend.read_image(image)
        result = self.backend.extract_mask(picture)
        note = f"Mask made with **{result.method}**." + (f" {result.note}" if result.note else "")
        note += " Correct it below with the brush (white adds, black removes) or upload a mask."
        return self.backend.overlay(picture, result.mask), _editor_value(result.mask), result.mask, note

    @user_errors
    def edit_mask(self, image: str | None, painted: dict | None):
        """The corrected mask from the editor -> (overlay, mask)."""
        if image is None or not painted or painted.get("composite") is None:
            return gr.skip(), gr.skip()
        picture = self.backend.read_image(image)
        mask = self.backend.mask_from_painting(painted["composite"], picture)
        return self.backend.overlay(picture, mask), mask

    @user_errors
    def upload_mask(self, image: str | None, mask_file: str | None):
        """An uploaded mask -> (overlay, editor picture, mask, note)."""
        if mask_file is None:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        picture = self.backend.read_image(image)
        mask = self.backend.read_mask(mask_file, picture)
        return self.backend.overlay(picture, mask), _editor_value(mask), mask, "Using the uploaded mask."

    # --- jobs ---------------------------------------------------------------------------------
    @user_errors
    def start_inversion(self, image: str | None, mask: str | None, mask_weight: float, steps: int,
                        class_word: str, initializer: str, num_vectors: int, learning_rate: float,
                        batch_size: int, resolution: int, seed: int, map_resolution: int, attention_layers: str,
                        map_norm: str, init_reg: float, checkpoint_every: int):
        """Queue an inversion; the mask is extracted automatically when none is given."""
        picture = self.backend.read_image(image)
        object_mask = self.backend.read_mask(mask, picture)
        config = self.backend.inversion_config(
            mask_weight=float(mask_weight), steps=steps, class_word=class_word.strip(),
            initializer=initializer.strip(), num_vectors=num_vectors, learning_rate=float(learning_rate),
            batch_size=batch_size, resolution=resolution, seed=seed, map_resolution=map_resolution,
            attention_layers=attention_layers, map_norm=map_norm, init_reg=float(init_reg),
            checkpoint_every=checkpoint_every,
        )
        job = self.backend.submit(picture, object_mask, config)
        return job.id, self.backend.status(job.id), gr.Timer(active=True)

    @user_errors
    def job_status(self, job_id: str):
        """(status dict, headline, progress bar, loss terms, loss plot, preview, attention, downloads, timer)."""
        return self._status_outputs(job_id)

    def poll_job(self, job_id: str):
        """`job_status` for the page's timer: a bad id stops the polling with a note, not an error a second."""
        try:
            return self._status_outputs(job_id)
        except ShapeInvError as error:
            return {}, str(error), "", "", None, None, None, None, gr.Timer(active=False)

    def _status_outputs(self, job_id: str):
        if not job_id or not job_id.strip():
            return {}, "", "", "", None, None, None, None, gr.Timer(active=False)
        status = self.backend.status(job_id)
        sample, attention = self.backend.previews(status["id"])
        finished = status["status"] in FINISHED
        return (
            status,
            self.backend.describe(status),
            self._progress(status),
            self._losses(status),
            loss_plot(self.backend.log(status["id"])),
            _at_least(sample, 256),
            str(attention) if attention else None,
            [str(path) for path in self.backend.downloads(status["id"])] or None,
            gr.Timer(active=not finished),
        )

    @user_errors
    def cancel_job(self, job_id: str):
        """Cancel a queued job now, a running one after its current step (its checkpoint is kept)."""
        job = self.backend.cancel(validate_job_id(job_id))
        status = self.backend.status(job.id)
        note = "Stopping after the current step ..." if job.status == RUNNING else self.backend.describe(status)
        return status, note

    @staticmethod
    def _progress(status: dict) -> str:
        if status["status"] == "queued":
            return f"<p>Waiting: number {status['queue_position']} in the queue.</p>"
        step, total = status["step"], max(status["total_steps"], 1)
        return (f'<progress value="{step}" max="{total}" style="width:100%;height:1.2em"></progress>'
                f"<p>step {step} / {total} &middot; elapsed {_duration(status['elapsed_seconds'])}"
                f" &middot; remaining {_duration(status['remaining_seconds'])}</p>")

    @staticmethod
    def _losses(status: dict) -> str:
        if status["loss"] is None:
            return ""
        return (f"loss **{status['loss']:.4f}** = denoising {status['diffusion_loss']:.4f} "
                f"+ weight x mask {status['mask_loss']:.4f}")

    # --- edits --------------------------------------------------------------------------------
    @user_errors
    def generate(self, job_id: str, concept_file: str | None, prompts: str, num_images: int, seed: int,
                 steps: int, guidance: float):
        """Images for one prompt per line -> (gallery of (image, caption), note on where they were saved)."""
        config = GenerationConfig(num_images=int(num_images), seed=int(seed), steps=int(steps),
                                  guidance=float(guidance)).validate()
        saved = self.backend.generate(job_id, concept_file, prompts, config)
        gallery = [(str(path), f"{result.prompt} (seed {result.seed})") for path, result in saved]
        folder = saved[0][0].parent.relative_to(self.backend.data_dir) if saved else ""
        return gallery, f"{len(saved)} images, saved in `{folder}` in the server's data folder."

    # --- page load ----------------------------------------------------------------------------
    def on_load(self, request: gr.Request):
        """`?job=ID` shows that job (and keeps polling it); a bad id gets a message, not a crash."""
        job_id = (request.query_params.get("job") or "").strip() if request else ""
        if not job_id:
            return "", gr.Timer(active=False), ""
        try:
            self.backend.store.get(validate_job_id(job_id))
        except ShapeInvError as error:
            return "", gr.Timer(active=False), str(error)
        return job_id, gr.Timer(active=True), ""

    def model_status(self):
        """(status line, timer): polled until the model is ready or has failed."""
        worker = self.backend.worker
        line = worker.status_line()
        if worker.state == "failed":
            line = f"**{line}**"
        return line, gr.Timer(active=worker.state == "loading")

    @staticmethod
    def job_link_js() -> str:
        """Put ?job=ID in the address bar, so reloading or sharing the page shows the job again."""
        return ("(id) => { if (id) { const u = new URL(window.location.href); "
                "u.searchParams.set('job', id); window.history.replaceState(null, '', u); } }")

