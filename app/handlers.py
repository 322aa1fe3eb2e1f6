"""Event handlers: turn component values into `Backend` calls and results into component values.

Each public method is one named API endpoint (its argument names are the client's parameter
names). A `ShapeInvError` becomes a `gr.Error` with the same message, so the page and the
client show the fix instead of a traceback; anything unexpected is logged and answered with a
plain sentence, never the exception's text. Every endpoint about a job takes the caller's
`owner` token (the page keeps one per browser; the start endpoints return a new one to clients
that sent none).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import gradio as gr
from PIL import Image

from shapeinv_core.config import GenerationConfig, InversionConfig
from shapeinv_core.errors import InputError, ShapeInvError
from shapeinv_core.exports import file_name
from shapeinv_core.jobs import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    SWEEP,
    drawing_progress,
    validate_job_id,
)
from shapeinv_core.report import METRICS_COLUMNS

from .backend import Backend, Edit, few_steps_note, nearest_research_weight
from .display import format_duration, in_line, table
from .errors import MODEL_UNAVAILABLE, UNEXPECTED, user_errors
from .mask.handlers import MaskHandlers
from .plots import loss_plot
from .values import given_id, real, text, whole

EDIT_METRICS_COLUMNS = ["prompt", "seed", "image", "mask_iou", "clip_t"]

log = logging.getLogger(__name__)


def _at_least(path, side: int) -> Image.Image | None:
    """A small preview (the tiny model's 64 px) enlarged with visible pixels, so it is not a speck."""
    if path is None:
        return None
    image = Image.open(path)
    if image.width >= side:
        return image
    scale = -(-side // image.width)
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def _thumbnail(path, side: int = 160) -> Image.Image:
    """A small, whole picture of a run for My runs (a 512 px photo in a small tile showed a slice of it)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
    return image


# The inversion settings a restored job puts back on the form, in the order of the form's fields.
RESTORED_SETTINGS = ("mask_weight", "steps", "class_word", "initializer", "num_vectors", "learning_rate",
                     "batch_size", "resolution", "seed", "map_resolution", "attention_layers", "map_norm", "init_reg",
                     "checkpoint_every", "attention_res", "mask_form", "background_weight", "tune", "lora_rank",
                     "lora_steps", "lora_lr", "name", "preview_prompt", "appearance")

def _sampling_progress(steps_done: dict) -> tuple[tuple[int, int] | float, str]:
    """(value, text) for gr.Progress while images are drawn: steps done of all, and the time left at this pace."""
    if "now" not in steps_done:
        return 0.0, "waiting for the model (a running job finishes its current step first)"
    done, total, now = steps_done["now"]
    first, since = steps_done["first"]
    seconds = (now - since) / (done - first) * (total - done) if done > first else None
    left = f", about {format_duration(seconds)} left" if seconds is not None else ""
    return (done, total), f"sampling step {done} of {total}{left}"


class Handlers(MaskHandlers):
    def __init__(self, backend: Backend):
        self.backend = backend

    # --- jobs ---------------------------------------------------------------------------------
    @user_errors
    def start_inversion(self, image: str | None, mask: str | None, mask_weight: float, steps: int,
                        class_word: str, initializer: str, num_vectors: int, learning_rate: float,
                        batch_size: int, resolution: int, seed: int, map_resolution: int, attention_layers: str,
                        map_norm: str, init_reg: float, checkpoint_every: int, attention_res: str = "all",
                        mask_form: str = "mse", background_weight: float = 1.0, tune: str = "none",
                        lora_rank: int = 4, lora_steps: int = 100, lora_lr: float = 1e-4, name: str = "",
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
        """`job_status` for the page's timer: a bad id stops the polling with a note, not an error a second."""
        try:
            return self._status_outputs(job_id, owner)
        except Exception as error:  # noqa: BLE001 - the timer must stop, whatever went wrong
            note = str(error) if isinstance(error, ShapeInvError) else UNEXPECTED
            return {}, note, "", "", None, None, None, None, gr.Timer(active=False)

    def _status_outputs(self, job_id: str, owner: str):
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
            self.backend.picture(loss_plot(self.backend.log(job_id, owner)), "loss"),
            self.backend.picture(_at_least(sample, 256), "preview"),
            self.backend.outbox(attention),
            [self.backend.outbox(path) for path in self.backend.downloads(job_id, owner)] or None,
            gr.Timer(active=not finished),
        )

    @user_errors
    def resume_job(self, job_id: str, owner: str | None = None):
        """Queue a cancelled or failed job again; it continues from its last checkpoint -> (status, headline, timer)."""
        job = self.backend.resume(validate_job_id(text(job_id, "Job id")), owner)
        status = self.backend.status(job.id, owner)
        return status, self.backend.describe(status), gr.Timer(active=True)

    @user_errors
    def run_zip(self, job_id: str, owner: str | None = None):
        """The whole run folder (a sweep's too) as a zip made now, with every edit so far."""
        if not text(job_id, "Job id").strip():
            raise InputError("No run is shown to zip: start or open a job first (a sweep is zipped under Compare "
                             "weights).")
        return self.backend.outbox(self.backend.run_zip(validate_job_id(job_id), owner))

    def sweep_files(self, status: dict | None, owner: str | None = None):
        """A finished sweep's concepts, grid, plot and CSV as downloads (None before it is done)."""
        if not status or status.get("status") != "done" or status.get("kind") != SWEEP:
            return None
        try:
            paths = self.backend.sweep_downloads(status["id"], owner)
        except ShapeInvError:
            return None
        return [self.backend.outbox(path) for path in paths] or None

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

    def sweep_duration(self, weights, steps, resolution, batch_size, prompts: str = "", images=1,
                       sample_steps=25) -> str:
        """A line under 'Start the sweep': how long its learning and drawing take on this server, and why a sweep
        of very few steps will draw alike pictures for every weight."""
        try:
            count = len(self.backend.parse_weights(text(weights, "Mask weights")))
            config = self._estimated_config(steps, resolution, batch_size)
            lines = [line for line in text(prompts, "Prompts").splitlines() if line.strip()]
            if not lines:
                raise InputError("No prompts yet: write one per line, each with *s, to draw with every weight.")
            pictures = count * len(lines) * whole(images, "Images per prompt", 1, 4)
            estimate = self.backend.sweep_estimate(config, count, pictures,
                                                   whole(sample_steps, "Sampling steps", 1, 100))
        except ShapeInvError as error:
            return str(error)
        return "\n\n".join(part for part in (estimate, few_steps_note(config.steps)) if part)

    # --- my runs ------------------------------------------------------------------------------
    def my_runs(self, owner: str | None = None):
        """This browser's jobs and sweeps, newest first -> (gallery of (thumbnail, caption), their ids)."""
        try:
            rows = self.backend.runs(owner)
        except ShapeInvError:
            rows = []
        items = []
        for row in rows:
            weights = ", ".join(f"{w:g}" for w in row["weights"])
            what = f"sweep · weights {weights}" if row["kind"] == SWEEP else f"job · weight {weights}"
            took = f" · {format_duration(row['seconds'])}" if row["seconds"] is not None else ""
            when = time.strftime("%d %b %H:%M", time.localtime(row["created"]))
            items.append((self.backend.picture(_thumbnail(row["thumbnail"]), "run") if row["thumbnail"] else None,
                          f"{what} · {row['status']} · {row['steps']} steps{took} · {when}"))
        note = "" if rows else "No runs from this browser yet: the jobs you start appear here."
        return [item for item in items if item[0]], [row["id"] for row in rows if row["thumbnail"]], note

    def open_run(self, ids: list[str] | None, owner: str | None, evt: gr.SelectData):
        """A click in My runs shows that job (a sweep in its tab) -> (job id, timer, sweep id, timer, tab, opened)."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        job_id = (ids or [])[index] if 0 <= index < len(ids or []) else ""
        try:
            job = self.backend.store.owned(validate_job_id(job_id), owner)
        except ShapeInvError:
            return (gr.skip(),) * 6
        if job.kind == SWEEP:
            return gr.skip(), gr.skip(), job.id, gr.Timer(active=True), gr.Tabs(selected="compare"), job.id
        return job.id, gr.Timer(active=True), gr.skip(), gr.skip(), gr.Tabs(selected="learn"), job.id

    def restore(self, job_id: str | None, owner: str | None = None):
        """An opened job's photo, mask, settings and edits back on the page (see `RESTORED` in ui for the order).

        The first output is the page's `restored` flag: the change event of the restored photo (each restore
        serves a fresh copy, so the event always fires) keeps the job's own mask and then clears the flag.
        """
        skip = (gr.skip(),) * self.restore_count
        if not job_id or not job_id.strip():
            return skip
        try:
            restored = self.backend.restore(job_id.strip(), owner)
        except ShapeInvError:
            return skip
        return self._restored_outputs(restored, restored["concept"] or gr.skip())

    def _restored_outputs(self, restored: dict, concept) -> tuple:
        """`restore`'s outputs for what `Backend.restore` read; `concept` goes to the Edit section's concept box."""
        picture = self.backend.read_image(restored["image"])
        mask = self.backend.read_mask(restored["mask"], picture)
        config, spec = restored["config"], restored["spec"]
        own = ("mask_weight", "steps", "name", "preview_prompt")  # a sweep's weights, steps, names are its own
        settings = [gr.skip() if spec and name in own else getattr(config, name) for name in RESTORED_SETTINGS]
        if spec:
            sweep_fields = [", ".join(f"{w:g}" for w in spec.weights), "\n".join(spec.prompts), spec.base.steps,
                            spec.generation.num_images, spec.generation.steps, spec.generation.guidance]
        else:
            sweep_fields = [gr.skip()] * 6
        gallery = [(self.backend.outbox(path), caption) for path, caption in restored["edits"]]
        prompts = "\n".join(restored["prompts"]) or gr.skip()  # the prompts behind the gallery, to draw again
        return (True, self.backend.outbox(restored["image"]), self.backend.overlay(picture, mask),
                self.backend.editor_value(picture, mask), mask, "The mask this job learned from.", *settings,
                *sweep_fields, gallery or None, prompts, concept)

    restore_count = 6 + len(RESTORED_SETTINGS) + 6 + 3

    # --- read-only sharing --------------------------------------------------------------------
    @user_errors
    def share_job(self, job_id: str, owner: str | None = None):
        """A read-only link for the shown job -> (its secret, a note). Whoever opens the page with `?share=SECRET`
        sees the job's photo, mask, concept and edits, and can change nothing. A new link replaces the last."""
        token = self.backend.share(self._shown_job(job_id, "share"), owner)
        return token, ("Anyone with this link sees this run's photo, mask, concept and edits, and can change nothing. "
                       "'Share' again makes a new link and the old one stops working; 'Stop sharing' ends it.")

    @user_errors
    def unshare_job(self, job_id: str, owner: str | None = None):
        """The shown job's read-only link stops working -> (secret, link, note), emptied but for the note."""
        self.backend.unshare(self._shown_job(job_id, "stop sharing"), owner)
        return "", "", "Not shared: the last link now says that sharing has ended."

    @staticmethod
    def _shown_job(job_id: str | None, action: str) -> str:
        if not text(job_id, "Job id").strip():
            raise InputError(f"No job is shown to {action}: start or open one first (a sweep cannot be shared).")
        return validate_job_id(job_id)

    @staticmethod
    def share_controls(status: dict | None):
        """The share buttons show with a single job (not a sweep, not on a visitor's page)."""
        return gr.Row(visible=bool(status and status.get("id") and status.get("kind") != SWEEP))

    @staticmethod
    def forget_share():
        """Another job is shown: the last job's link and note leave the page (the link itself keeps working)."""
        return "", "", ""

    def open_shared(self, share: str | None):
        """`?share=SECRET`: the shared job's photo, mask, settings and edits, its state and its concept to download
        (the `restore` outputs, then headline and downloads); the Edit concept stays empty: nothing is drawn with
        it here. A wrong or ended link gets one message in the headline."""
        skip = (gr.skip(),) * (self.restore_count + 2)
        if not share:
            return skip
        try:
            view = self.backend.shared(share)
        except ShapeInvError as error:
            return *skip[:-2], str(error), None
        downloads = [self.backend.outbox(path) for path in view["downloads"]] or None
        return *self._restored_outputs(view["restored"], gr.skip()), view["line"], downloads

    @user_errors
    def cancel_job(self, job_id: str, owner: str | None = None):
        """Cancel a queued job now, a running one after its current step (its checkpoint is kept)."""
        job = self.backend.cancel(validate_job_id(text(job_id, "Job id")), owner)
        status = self.backend.status(job.id, owner)
        note = "Stopping after the current step ..." if job.status == RUNNING else self.backend.describe(status)
        return status, note

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

    # --- sweeps -------------------------------------------------------------------------------
    @user_errors
    def start_sweep(self, image: str | None, mask: str | None, weights: str, prompts: str, steps: int,
                    num_images: int, sample_steps: int, guidance: float, class_word: str, initializer: str,
                    num_vectors: int, learning_rate: float, batch_size: int, resolution: int, seed: int,
                    map_resolution: int, attention_layers: str, map_norm: str, init_reg: float,
                    checkpoint_every: int, attention_res: str = "all", mask_form: str = "mse",
                    background_weight: float = 1.0, owner: str | None = None, appearance: str = ""):
        """Queue one job that learns a `*s` per mask weight together, then draws and measures every prompt.

        -> (sweep id, status, timer, owner token). The other settings are the single run's (its Advanced section).
        """
        owner = self.backend.owner_token(owner)
        values = self.backend.parse_weights(text(weights, "Mask weights"))
        config = self._config(values[0], steps, class_word, initializer, num_vectors, learning_rate, batch_size,
                              resolution, seed, map_resolution, attention_layers, map_norm, init_reg, checkpoint_every,
                              attention_res=text(attention_res, "Attention map sides").strip(),
                              mask_form=text(mask_form, "Mask term"),
                              background_weight=real(background_weight, "Background weight"),
                              name=file_name(None, image, (text(class_word, "Class word"),
                                                           text(initializer, "Initializer"))),
                              appearance=text(appearance, "Training views") or InversionConfig.appearance)
        generation = GenerationConfig(num_images=whole(num_images, "Images per prompt", 1, 4),
                                      steps=whole(sample_steps, "Sampling steps", 1, 100),
                                      guidance=real(guidance, "Guidance"), seed=config.seed).validate()
        spec = self.backend.sweep_spec(values, text(prompts, "Prompts"), config, generation)
        self.backend.check_room(owner)
        picture = self.backend.read_image(image)
        object_mask = self.backend.read_mask(mask, picture)
        job = self.backend.submit(picture, object_mask, spec, owner)
        return job.id, self.backend.status(job.id, owner), gr.Timer(active=True), owner

    @user_errors
    def sweep_results(self, job_id: str, owner: str | None = None):
        """(status, headline, progress, per-weight losses, grid, trade-off plot, table, concepts, timer).

        The status dict gains `concepts`: [{weight, concept}], where `concept` is what `generate`
        takes as `job_id` to edit with that weight's `*s`. Pictures and table are None until done.
        """
        return self._sweep_outputs(given_id(job_id, "sweep", "start_sweep"), owner)

    def poll_sweep(self, job_id: str, owner: str | None = None):
        """`sweep_results` for the page's timer: a bad id stops the polling with a note."""
        try:
            return self._sweep_outputs(job_id, owner)
        except Exception as error:  # noqa: BLE001 - the timer must stop, whatever went wrong
            note = str(error) if isinstance(error, ShapeInvError) else UNEXPECTED
            return {}, note, "", "", None, None, None, gr.skip(), gr.Timer(active=False)

    def _sweep_outputs(self, job_id: str, owner: str):
        if not job_id or not job_id.strip():
            return {}, "", "", "", None, None, None, gr.skip(), gr.Timer(active=False)
        status = self.backend.status(job_id, owner)
        results = self.backend.sweep_results(status["id"], owner)
        status["concepts"] = [{"weight": weight, "concept": ref} for weight, ref in results["concepts"]]
        finished = status["status"] in FINISHED
        choices = [(f"{weight:g}", ref) for weight, ref in results["concepts"]]
        # Preselect the weight nearest 0.1, the research's best trade-off.
        chosen = nearest_research_weight(results["concepts"])
        notes = [status["note"], few_steps_note(results["steps"]) if status["status"] == DONE else ""]
        headline = "\n\n".join([self.backend.describe(status), *(note for note in notes if note)])
        return (
            status,
            headline,
            self._progress(status),
            self._weight_losses(status),
            self.backend.outbox(results["grid"]),
            self.backend.outbox(results["tradeoff"]),
            table(results["rows"], METRICS_COLUMNS) if results["rows"] else None,
            gr.Dropdown(choices=choices, value=chosen) if finished else gr.skip(),
            gr.Timer(active=not finished),
        )

    @staticmethod
    def _weight_losses(status: dict) -> str:
        if not status["terms"]:
            return ""
        lines = ["| weight | loss | denoising | mask |", "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {t['weight']:g} | {t['loss']:.4f} | {t['diffusion_loss']:.4f} | {t['mask_loss']:.4f} |"
                  for t in status["terms"]]
        return "\n".join(lines)

    @user_errors
    def use_sweep_concept(self, concept: str | None, owner: str | None = None):
        """A sweep's `*s` (`SWEEP_ID/weight_0.1`) -> the Edit section's concept, checked to be there."""
        if not concept:
            raise gr.Error("Pick a weight first; the list fills in when the sweep is done.", print_exception=False)
        job, run = self.backend.store.concept_run(text(concept, "Weight"), owner)
        if not run.has_concept():
            raise gr.Error(f"Sweep {job.id} has no concept {concept} yet.", print_exception=False)
        return concept

    # --- edits --------------------------------------------------------------------------------
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

    # --- page load ----------------------------------------------------------------------------
    def on_load(self, owner: str, request: gr.Request):
        """`?job=ID` shows that job (a sweep in its own tab) and keeps polling it; a bad id gets a message.

        Only this browser's own jobs (its `owner` secret) are shown; another's answers like a missing one.
        `?share=SECRET` is passed on to `open_shared`.
        -> (job id, its timer, headline, sweep id, its timer, selected tab, the id to restore on the form, share).
        """
        job_id = (request.query_params.get("job") or "").strip() if request else ""
        share = (request.query_params.get("share") or "").strip() if request else ""
        nothing = ("", gr.Timer(active=False))
        if not job_id:
            return *nothing, "", *nothing, gr.skip(), "", share
        try:
            job = self.backend.store.owned(validate_job_id(job_id), owner)
        except ShapeInvError as error:
            return *nothing, str(error), *nothing, gr.skip(), "", share
        if job.kind == SWEEP:
            return *nothing, "", job.id, gr.Timer(active=True), gr.Tabs(selected="compare"), job.id, share
        return job.id, gr.Timer(active=True), "", *nothing, gr.skip(), job.id, share

    def model_status(self):
        """(status line, timer): polled until the model is ready or has failed."""
        worker = self.backend.worker
        line = f"**{MODEL_UNAVAILABLE}**" if worker.state == "failed" else worker.status_line()
        return line, gr.Timer(active=worker.state == "loading")
