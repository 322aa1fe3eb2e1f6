"""The Edit section's events: Generate (with a job's, a sweep weight's or an uploaded *s), its scores, the run's zip.

Component values in, `EditBackend` calls, component values out. Drawing waits for the worker, so
`generate` shows the sampling steps done and the time left while it waits.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import gradio as gr

from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError
from shapeinv_core.jobs import validate_job_id

from ..display import format_duration, table
from ..errors import user_errors
from ..values import real, text, whole
from .backend import Edit

EDIT_METRICS_COLUMNS = ["prompt", "seed", "image", "mask_iou", "clip_t"]


def _sampling_progress(steps_done: dict) -> tuple[tuple[int, int] | float, str]:
    """(value, text) for gr.Progress while images are drawn: steps done of all, and the time left at this pace."""
    if "now" not in steps_done:
        return 0.0, "waiting for the model (a running job finishes its current step first)"
    done, total, now = steps_done["now"]
    first, since = steps_done["first"]
    seconds = (now - since) / (done - first) * (total - done) if done > first else None
    left = f", about {format_duration(seconds)} left" if seconds is not None else ""
    return (done, total), f"sampling step {done} of {total}{left}"


class EditHandlers:
    """Handlers of editing with a *s; a part of `app.handlers.Handlers` (its `backend`)."""

    @user_errors
    def generate(self, job_id: str, concept_file: str | None, prompts: str, num_images: int, seed: int,
                 steps: int, guidance: float, shape_steps: float = 1.0, shape_order: str = "first",
                 owner: str | None = None, progress=gr.Progress()):  # noqa: B008 - Gradio's way to ask for progress
        """Images for one prompt per line -> (gallery of (image, caption), note on where they were saved).

        `job_id` is a job's id or a sweep's `SWEEP_ID/weight_0.1`. The images are kept for
        `edit_metrics` (per session), which the page calls next. `shape_steps`: the fraction of the
        sampling steps the prompt with *s conditions (the rest: the prompt without its *s phrase).
        """
        config = GenerationConfig(num_images=whole(num_images, "Images per prompt", 1, self.backend.limits.max_images),
                                  seed=whole(seed, "Seed"), steps=whole(steps, "Sampling steps", 1, 100),
                                  guidance=real(guidance, "Guidance"), shape_steps=real(shape_steps, "Shape steps"),
                                  shape_order=text(shape_order, "Shape order")).validate()
        steps_done: dict = {}

        def on_progress(done: int, total: int) -> None:  # on the worker thread
            steps_done.setdefault("first", (done, time.monotonic()))
            steps_done["now"] = (done, total, time.monotonic())

        with ThreadPoolExecutor(1) as pool:
            request = pool.submit(self.backend.generate, text(job_id, "Concept"), concept_file,
                                  text(prompts, "Prompts"), config, owner, on_progress)
            while True:
                try:
                    saved = request.result(timeout=0.25)
                    break
                except FutureTimeout:
                    progress(*_sampling_progress(steps_done))
        gallery = [(self.backend.outbox(edit.path), f"{edit.prompt} (seed {edit.seed})") for edit in saved]
        kept = "with the job ('Zip the whole run' takes them along)" if saved and saved[0].source else "on the server"
        return gallery, f"{len(saved)} images, kept {kept} for {self.backend.limits.keep_days:g} days.", saved

    @staticmethod
    def keep_gallery():
        """After a refused Generate: the images and the note shown before it stay as they were."""
        return gr.skip(), gr.skip()

    @user_errors
    def edit_metrics(self, edits: list[Edit] | None, owner: str | None = None):
        """(table of Mask-IoU and CLIP-T per image of this session's last `generate`, note on missing scores)."""
        rows, note = self.backend.edit_metrics(edits or [], owner)
        return table(rows, EDIT_METRICS_COLUMNS) if rows else None, note

    @user_errors
    def run_zip(self, job_id: str, owner: str | None = None):
        """The whole run folder (a sweep's too) as a zip made now, with every edit so far."""
        if not text(job_id, "Job id").strip():
            raise InputError("No run is shown to zip: start or open a job first (a sweep is zipped under Compare "
                             "weights).")
        return self.backend.outbox(self.backend.run_zip(validate_job_id(job_id), owner))
