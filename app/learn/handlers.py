"""The learning section's events: Start, the job shown and polled, Cancel, Resume, the duration estimate.

Component values in, `Backend` calls, component values out. The sweeps feature builds on these:
a sweep takes the same settings (`_config`), shows the same progress bar and has the same controls.
"""

from __future__ import annotations

from functools import partial

import gradio as gr
from PIL import Image

from shapeinv_core.config import InversionConfig
from shapeinv_core.errors import ShapeInvError
from shapeinv_core.jobs import CANCELLED, FAILED, FINISHED, QUEUED, RUNNING, drawing_progress, validate_job_id
from shapeinv_core.method.exports import file_name

from ..display import format_duration, in_line
from ..errors import UNEXPECTED, user_errors
from ..plots import axis_range, loss_frames, loss_plot
from ..values import given_id, real, text, whole


def _at_least(path, side: int) -> Image.Image | None:
    """A small preview (the tiny model's 64 px) enlarged with visible pixels, so it is not a speck."""
    if path is None:
        return None
    image = Image.open(path)
    if image.width >= side:
        return image
    scale = -(-side // image.width)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


class LearnHandlers:
    """Handlers of learning one *s; a part of `app.handlers.Handlers` (its `backend`)."""

    @user_errors
    def start_inversion(self, image: str | None, mask: str | None, mask_weight: float, steps: int,
                        class_word: str, initializer: str, num_vectors: int, learning_rate: float,
                        batch_size: int, resolution: int, seed: int, map_resolution: int, attention_layers: str,
                        map_norm: str, init_reg: float, checkpoint_every: int, attention_res: str = "all",
                        mask_form: str = "mse", background_weight: float = 1.0, tune: str = InversionConfig.tune,
                        lora_rank: int = InversionConfig.lora_rank, lora_steps: int = InversionConfig.lora_steps,
                        lora_lr: float = InversionConfig.lora_lr, name: str = "",
                        owner: str | None = None, preview_prompt: str = "", appearance: str = ""):
        """Queue an inversion -> (job id, status, timer, owner token); the mask is extracted when none is given.

        The concept's file name (NAME.safetensors) is `name`, or else made from the photo's file name.
        `preview_prompt` (with *s) is drawn at each checkpoint; empty: the training prompt.
        `appearance`: "varied" (the photo and re-drawn looks, each named) or "photo" (the research's form); empty:
        this server's default. Every setting and limit is checked before the job is queued. Keep the returned `owner`
        token: it is needed to see, cancel, edit with or download the job.
        """
        owner = self.backend.owner_token(owner)
        config = self._config(mask_weight, steps, class_word, initializer, num_vectors, learning_rate, batch_size,
                              resolution, seed, map_resolution, attention_layers, map_norm, init_reg, checkpoint_every,
                              attention_res=text(attention_res, "Attention map sides").strip(),
                              mask_form=text(mask_form, "Mask term"),
                              background_weight=real(background_weight, "Background weight"),
                              tune=text(tune, "Tune"), lora_rank=whole(lora_rank, "LoRA rank"),
                              lora_steps=whole(lora_steps, "LoRA steps"), lora_lr=real(lora_lr, "LoRA learning rate"),
                              name=file_name(text(name, "Name").strip(), image,
                                             (text(class_word, "Class word"), text(initializer, "Initializer"))),
                              preview_prompt=text(preview_prompt, "Preview prompt").strip(),
                              appearance=text(appearance, "Training views") or InversionConfig.appearance)
        self.backend.check_room(owner)
        picture = self.backend.read_image(image)
        object_mask = self.backend.read_mask(mask, picture)
        job = self.backend.submit(picture, object_mask, config, owner)
        return job.id, self.backend.status(job.id, owner), gr.Timer(active=True), owner

    def _config(self, mask_weight, steps, class_word, initializer, num_vectors, learning_rate, batch_size,
                resolution, seed, map_resolution, attention_layers, map_norm, init_reg, checkpoint_every, **more):
        return self.backend.inversion_config(
            mask_weight=real(mask_weight, "Mask weight"), steps=whole(steps, "Steps"),
            class_word=text(class_word, "Class word").strip(), initializer=text(initializer, "Initializer").strip(),
            num_vectors=whole(num_vectors, "Vectors per *s"), learning_rate=real(learning_rate, "Learning rate"),
            batch_size=whole(batch_size, "Timesteps per step"), resolution=whole(resolution, "Resolution"),
            seed=whole(seed, "Seed"), map_resolution=whole(map_resolution, "Attention map grid"),
            attention_layers=text(attention_layers, "Attention layers"), map_norm=text(map_norm, "Map normalisation"),
            init_reg=real(init_reg, "Pull toward the initializer"),
            checkpoint_every=whole(checkpoint_every, "Checkpoint every"),
            **more,
        )

    @user_errors
    def job_status(self, job_id: str, owner: str | None = None):
        """(status dict, headline, progress bar, loss terms, loss plot, preview, attention, downloads, timer)."""
        return self._status_outputs(given_id(job_id, "job", "start_inversion"), owner)

    def poll_job(self, job_id: str, owner: str | None = None):
        """`job_status` for the page's timer: a bad id stops the polling with a note, not an error a second.
        The loss picture is left out: the page shows the loss charts (`loss_charts`), the picture is for API clients."""
        return self._polled(partial(self._status_outputs, picture=False), job_id, owner,
                            stopped=(None, None, None, None))

    @staticmethod
    def _polled(outputs, job_id: str, owner: str | None, stopped: tuple):
        """`outputs(job_id, owner)`, or, when that fails, (no status, a note, `stopped`, a stopped timer): the timer
        must stop, whatever went wrong, and the note says why."""
        try:
            return outputs(job_id, owner)
        except Exception as error:  # noqa: BLE001 - the timer must stop, whatever went wrong
            note = str(error) if isinstance(error, ShapeInvError) else UNEXPECTED
            return {}, note, "", "", *stopped, gr.Timer(active=False)

    def _status_outputs(self, job_id: str, owner: str, picture: bool = True):
        if not job_id or not job_id.strip():
            return {}, "", "", "", None, None, None, None, gr.Timer(active=False)
        status = self.backend.status(job_id, owner)
        job_id = status["id"]
        sample, attention = self.backend.previews(job_id, owner)
        finished = status["status"] in FINISHED
        return (
            status,
            self.backend.describe(status),
            self._progress(status),
            self._losses(status),
            self.backend.picture(loss_plot(self.backend.log(job_id, owner)), "loss") if picture else gr.skip(),
            self.backend.picture(_at_least(sample, 256), "preview"),
            self.backend.outbox(attention),
            [self.backend.outbox(path) for path in self.backend.downloads(job_id, owner)] or None,
            gr.Timer(active=not finished),
        )

    def loss_charts(self, status: dict | None, owner: str | None = None):
        """(denoising chart, mask chart) of the job `status` shows: each term per step, raw and smoothed.

        Fed by the status the page already polled, so an unknown job gives empty charts, not an error a second."""
        records = self.backend.log(status["id"], owner) if status and status.get("id") else []
        # The picture's scale: an axis at least a fifth of the loss tall, so noise does not look like swings.
        return tuple(gr.LinePlot(frame, y_lim=list(axis_range(frame["loss"].tolist())) if len(frame) else None)
                     for frame in loss_frames(records))

    @user_errors
    def resume_job(self, job_id: str, owner: str | None = None):
        """Queue a cancelled or failed job again; it continues from its last checkpoint -> (status, headline, timer)."""
        job = self.backend.resume(validate_job_id(text(job_id, "Job id")), owner)
        status = self.backend.status(job.id, owner)
        return status, self.backend.describe(status), gr.Timer(active=True)

    @user_errors
    def cancel_job(self, job_id: str, owner: str | None = None):
        """Cancel a queued job now, a running one after its current step (its checkpoint is kept)."""
        job = self.backend.cancel(validate_job_id(text(job_id, "Job id")), owner)
        status = self.backend.status(job.id, owner)
        note = "Stopping after the current step ..." if job.status == RUNNING else self.backend.describe(status)
        return status, note

    @staticmethod
    def keep_polling():
        """After Cancel: poll again, so that the job's final state has the last word. Cancel's own answer is read
        while the job still runs; if it lands after the poll that saw the job end (and stopped the timer), the
        page would keep "Stopping after the current step ..." and hide Resume for good."""
        return gr.Timer(active=True)

    @staticmethod
    def lock_start():
        """The first thing a click on Start does: the button goes grey, so a second click makes no second job."""
        return gr.Button(interactive=False)

    @staticmethod
    def show_started(job_id: str):
        """A started job's id into its box, and only then the polling (a poll of an empty box stops it)."""
        return job_id, gr.Timer(active=True)

    @staticmethod
    def job_controls(status: dict | None):
        """(Start, Cancel, Resume) for the shown job: Start waits while it is queued or running, Cancel shows
        only then, Resume only for a cancelled or failed job."""
        state = (status or {}).get("status")
        active = state in (QUEUED, RUNNING)
        return (gr.Button(interactive=not active), gr.Button(visible=active),
                gr.Button(visible=state in (CANCELLED, FAILED)))

    def _estimated_config(self, steps, resolution, batch_size, tune: str = "none", lora_steps=0):
        """The settings an estimate is about, from the form's raw values (a bad one raises, naming its field)."""
        return self.backend.inversion_config(
            steps=whole(steps, "Steps"), resolution=whole(resolution, "Resolution"),
            batch_size=whole(batch_size, "Timesteps per step"), tune=text(tune, "Tune") or "none",
            lora_steps=whole(lora_steps or 1, "LoRA steps"))

    def duration_estimate(self, steps, resolution, batch_size, tune: str = "none", lora_steps=0) -> str:
        """A line under Start: how long such a run takes on this server (from its timed steps)."""
        try:
            config = self._estimated_config(steps, resolution, batch_size, tune, lora_steps)
        except ShapeInvError as error:
            return str(error)
        return self.backend.duration_estimate(config)

    @staticmethod
    def _progress(status: dict) -> str:
        if status["status"] == "queued":
            start = status.get("start_in_seconds")
            when = f"; starts in about {format_duration(start)}" if start is not None else \
                "; its start time is not known yet"
            return f"<p>Waiting: {in_line(status['queue_position'])}{when}.</p>"
        drawing = drawing_progress(status.get("phase"))
        if status["status"] == RUNNING and drawing:  # a sweep after its steps: images drawn so far
            done, total = drawing[0], max(drawing[1], 1)
            return (f'<progress value="{done}" max="{total}" style="width:100%;height:1.2em"></progress>'
                    f"<p>drawing images: {done} / {total} &middot; elapsed "
                    f"{format_duration(status['elapsed_seconds'])}</p>")
        step, total = status["step"], max(status["total_steps"], 1)
        return (f'<progress value="{step}" max="{total}" style="width:100%;height:1.2em"></progress>'
                f"<p>step {step} / {total} &middot; elapsed {format_duration(status['elapsed_seconds'])}"
                + (f" &middot; remaining {format_duration(status['remaining_seconds'])}"
                   if status["status"] == RUNNING else "") + "</p>")

    @staticmethod
    def _losses(status: dict) -> str:
        if status["loss"] is None:
            return ""
        text = (f"loss **{status['loss']:.4f}** = denoising {status['diffusion_loss']:.4f} "
                f"+ weight x mask {status['mask_loss']:.4f}")
        if status.get("grad_ratio") is not None:
            text += (f"  \ngradient ratio mask / denoising **{status['grad_ratio']:.3g}**: how hard the mask "
                     "term pulls on *s next to the denoising term (near 0: the weight hardly bites)")
        return text
