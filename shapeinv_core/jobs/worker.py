"""The one background thread that owns the model: inversion jobs one at a time, edits in between.

A diffusers pipeline is not thread-safe, and an inversion changes it (it adds the placeholder
token, hooks the token embedding, swaps the cross-attention processors). So every use of the
model happens on this thread. Edit requests are queued to it and served between two steps of
the running inversion (from `should_stop`, which the loop calls before each step), so a user
waits seconds for an image even while someone else's concept is being learned.

Serving an edit in the middle of an inversion must not disturb it. Three things make that so:
- the edit's concept is installed under a fresh token (`<shapeinv-gen-N>`), never the placeholder
  being trained, and no token is removed until the inversion ends: removing one rebuilds the
  embedding module (dropping the training hook) and renumbers the tokens added after it;
- the cross-attention layers get the plain processor back for the edit (the training one would
  record maps and assumes the training resolution);
- the training loop keeps its own noise scheduler, so `generate()` replacing `pipe.scheduler` is harmless.

A sweep job (one `*s` per mask weight, learned together by `shapeinv_core.generation.sweep`) follows the same
rules for its whole run: edits are served between its steps and, while it draws and measures its
images, between one weight and the next (from `on_phase`); a cancel or a shutdown raises
`Cancelled` there too, and the next run of the job resumes from the weights' checkpoints.

The CLIP model that scores edits (CLIP-T) is loaded here as well, lazily, the first time it is
needed, and kept; when it cannot be loaded the reason is kept instead and CLIP-T stays empty.

Nobody can capture the thread, and a flaky machine loses no job:
- between two steps the worker serves edits for at most `serve_budget` seconds (always at least
  one), so a burst of requests delays training by seconds, not minutes; an edit that has not
  finished within `edit_timeout` seconds (waiting included) is dropped with a message;
- while it holds a job, a heartbeat thread renews the job's lease in the store; if this process
  dies, another start (or another worker) requeues the job once the lease runs out;
- a full disk pauses the job (its phase says so) until a test write succeeds again, then the
  job resumes from its last checkpoint; nothing is marked failed for want of space;
- if the final state cannot be written, the job is left running without a heartbeat, so the
  lease hands it back to the queue and the rerun resumes from the final checkpoint.
"""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import queue
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path

from ..config import GenerationConfig
from ..errors import DiskFullError, InputError, ModelLoadError, ShapeInvError
from ..evaluation.metrics import DEFAULT_CLIP_MODEL, ClipScorer, load_clip_scorer
from ..generation.generate import GeneratedImage, check_prompts, generate
from ..generation.sweep import sweep
from ..method.attention import MapCaptureProcessor, cross_attention_layers
from ..method.concept import Concept, remove_tokens
from ..method.inversion import Cancelled, StepReport, pad_to_square
from ..method.previews import attention_figure
from ..method.workflow import learn
from ..models.families import FAMILY_NAMES, family_of_pipe, freeze_text
from ..models.loading import LoadedModel, load_model, native_resolution, quiet_library_logs
from .store import CANCELLED, DEFAULT_LEASE_SECONDS, DONE, FAILED, SWEEP, Job, JobStore, StoreBusy, drawing_progress

log = logging.getLogger(__name__)

LOADING, READY, LOAD_FAILED = "loading", "ready", "failed"
PREVIEW_DIR = "previews"
ATTENTION_PREVIEW = "attention.png"
SAMPLE_PREVIEW = "sample.png"
# What a visitor reads when CLIP-T cannot be had (under the edit table, on a sweep).
CLIP_UNAVAILABLE = ("CLIP-T is left empty: this server has no CLIP model to score with. Whoever runs it finds the "
                    "cause and the fix in its terminal.")
PAUSED_FOR_EDIT = "paused while an edit is drawn (the job goes on after it)"
PAUSED_DISK_FULL = ("paused: the server's disk is full. The job waits here and resumes from its last checkpoint "
                    "by itself once there is space again")


class _Pace:
    """Wall seconds since the previous step (the first: since the job began here), for the time estimates.

    A step's own compute time leaves out what this server also does between steps (previews at
    checkpoints, attention pictures, edits served): after a Resume, one step's compute time promised
    a quarter of the time the job then took.
    """

    def __init__(self) -> None:
        self.last = time.monotonic()

    def lap(self) -> float:
        now = time.monotonic()
        seconds, self.last = now - self.last, now
        return seconds


class _LeaseLost(Exception):
    """Another worker requeued this job after our heartbeat lapsed: stop without touching its state."""


def is_disk_full(error: BaseException) -> bool:
    """ENOSPC or EDQUOT from Python, SQLite (`DiskFullError`) or a library that only words it (safetensors)."""
    if isinstance(error, DiskFullError):
        return True
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


class Worker:
    """Start with `start()`; ask for images with `generate()`; jobs come from the `JobStore` queue.

    `preview_every`: steps between attention pictures. `preview_steps`: sampling steps of the
    preview image made at each checkpoint from the checkpoint's vectors (0: no preview image).
    `clip_model`: the CLIP model for CLIP-T of edits and sweeps (a hub id, a folder, `tiny`, or None).
    `lease`: seconds without a heartbeat after which the store hands this worker's job to another.
    `serve_budget`: seconds of edits served between two training steps. `edit_timeout`: the most
    an edit request may take, waiting included. `space_retry`: seconds between tries on a full disk.
    """

    def __init__(self, store: JobStore, model: str = "tiny", device: str = "auto", dtype: str = "auto",
                 preview_every: int = 5, preview_steps: int = 20,
                 loader: Callable[..., LoadedModel] = load_model, clip_model: str | None = DEFAULT_CLIP_MODEL,
                 lease: float = DEFAULT_LEASE_SECONDS, serve_budget: float = 3.0, edit_timeout: float = 300.0,
                 space_retry: float = 10.0):
        self.store = store
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.lease, self.serve_budget, self.edit_timeout, self.space_retry = lease, serve_budget, edit_timeout, \
            space_retry
        self.model_name, self.device, self.dtype = model, device, dtype
        self.clip_model = clip_model
        self._clip: tuple[ClipScorer | None, str | None] | None = None  # (scorer, reason) once tried
        self.preview_every, self.preview_steps = preview_every, preview_steps
        self._loader = loader
        self.model: LoadedModel | None = None
        self.state = LOADING
        self.error: str | None = None
        self.current_job: str | None = None
        self._requests: queue.Queue[tuple[Callable[[], object], Future]] = queue.Queue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._gen_ids = itertools.count(1)
        self._inverting = False
        self._pending_tokens: list[str] = []  # edit tokens to remove once the inversion is over
        self._lease_lost = threading.Event()
        self.paused: str | None = None  # why the current job waits (a full disk), also when the database cannot say

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> Worker:
        """Requeue jobs a dead process left running, then load the model and work in the background."""
        resumed = self.store.requeue_interrupted()
        if resumed:
            log.info("resuming interrupted jobs: %s", ", ".join(resumed))
        self._thread = threading.Thread(target=self._main, name="shapeinv-worker", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; a running job is checkpointed and requeued for the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Tell the worker a job was queued (it also polls, so this only saves latency)."""
        self._wake.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def status_line(self) -> str:
        """One line for the page; a model given as a local folder is named by its last part, not its path."""
        name = Path(self.model_name).name if Path(self.model_name).is_absolute() else self.model_name
        if self.state == LOADING:
            return f"Loading the model {name} ... (masks can be made meanwhile)"
        if self.state == LOAD_FAILED:
            return f"The model {name} failed to load: {self.error}"
        pipe = self.model.pipe
        kind = f"{FAMILY_NAMES[family_of_pipe(pipe)]}, {native_resolution(pipe)} px"
        return f"Model {name} ({kind}) ready on {self.model.device} ({str(self.model.dtype).replace('torch.', '')})."

    # --- requests from other threads --------------------------------------------------------
    def generate(self, concept: Concept, prompts: list[str], config: GenerationConfig,
                 timeout: float | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
        """Images for `prompts`, made on the worker thread (between inversion steps if one runs).

        `on_progress(done, total)` is called on the worker thread after each sampling step (over all images).
        The request is dropped with an `InputError` once `timeout` (default `edit_timeout`) seconds
        have passed, whether it is still waiting or stopped between two batches of images.
        """
        prompts = check_prompts(prompts, concept.token)
        config = config.validate()
        if self.state == LOAD_FAILED:
            raise ModelLoadError(f"No model to generate with: {self.error}")
        limit = self.edit_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        return self.call(lambda: self._generate_now(concept, prompts, config, deadline, on_progress), limit,
                         late=f"Your images were not ready within {limit:.0f} s (the server is busy). "
                              "Ask for fewer images or sampling steps, or try again later.")

    def clip_t(self, images: list, prompts: list[str], timeout: float | None = None) -> tuple[list | None, str | None]:
        """(CLIP-T per image, None), or (None, why not) when no CLIP model can be had; on the worker thread."""
        def score():
            scorer, reason = self._clip_scorer()
            return (scorer.clip_t(images, prompts), None) if scorer else (None, reason)

        return self.call(score, timeout)

    def call(self, function: Callable[[], object], timeout: float | None = None, late: str | None = None):
        """Run `function` on the worker thread once the model is loaded; return its result.

        After `timeout` seconds a request that has not started is withdrawn and `InputError(late)`
        raised (a `TimeoutError` without `late`); one that has started is waited for.
        """
        future: Future = Future()
        self._requests.put((function, future))
        self._wake.set()
        try:
            return future.result(timeout)
        except FutureTimeout:
            if not future.cancel():  # already running: it stops at its own deadline
                return future.result()
            if late is None:
                raise
            raise InputError(late) from None

    # --- the thread -------------------------------------------------------------------------
    def _main(self) -> None:
        quiet_library_logs()
        try:
            self.model = self._loader(self.model_name, device=self.device, dtype=self.dtype)
            self.state = READY
        except ModelLoadError as error:
            self.state, self.error = LOAD_FAILED, str(error)
            log.error("%s", error)  # one line in the terminal: the cause and the fixes
        except Exception as error:  # an unexpected failure must still reach the page
            log.exception("model load failed")
            self.state, self.error = LOAD_FAILED, f"{type(error).__name__}: {error}"
        self._ready.set()
        while not self._stopping.is_set():
            try:
                self._serve_requests()
                job = self.store.claim_next(self.name, self.lease) if self.state == READY else None
                if job is not None:
                    self._run_job(job)
                    continue
            except Exception:  # e.g. the database on a full disk: keep serving, try again shortly
                log.exception("worker loop")
            self._wake.wait(0.5)
            self._wake.clear()
        self._serve_requests()

    def _serve_requests(self, budget: float | None = None) -> None:
        """Serve waiting requests; with a `budget` (seconds), stop after the first one that ends past it."""
        deadline = None if budget is None else time.monotonic() + budget
        served = 0
        while deadline is None or served == 0 or time.monotonic() < deadline:
            served += 1
            try:
                function, future = self._requests.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self.state != READY:
                    raise ModelLoadError(f"No model to work with: {self.error}")
                future.set_result(function())
            except BaseException as error:  # the caller gets it; the worker carries on
                future.set_exception(error)

    def _run_job(self, job: Job) -> None:
        self.current_job = job.id
        self._lease_lost.clear()
        beating = threading.Event()
        heart = threading.Thread(target=self._beat, args=(job.id, beating), name="shapeinv-heartbeat", daemon=True)
        heart.start()
        try:
            self._settle(job)
        except _LeaseLost:
            log.warning("job %s: lease lost, another worker took it over", job.id)
        except Exception:  # the state could not be written: no heartbeat from here on, the lease requeues it
            log.exception("job %s: could not record its state; it will be requeued when its lease runs out", job.id)
        finally:
            beating.set()
            self.current_job = None
            self.paused = None

    def _settle(self, job: Job) -> None:
        """Run the job to its end, then record how it ended (a failed write is left to the lease)."""
        try:
            self._run_until_done(job)
            outcome = (DONE, None)
        except Cancelled as stopped:
            if self._lease_lost.is_set():
                raise _LeaseLost from stopped
            # no cancel asked: the server is shutting down; run it again, from its checkpoint, at the next start
            outcome = (CANCELLED, str(stopped)) if self.store.cancel_requested(job.id) else None
        except (StoreBusy, DiskFullError, sqlite3.Error):
            raise  # the job's state cannot be written now: not the job's fault
        except ShapeInvError as error:
            outcome = (FAILED, str(error))
        except Exception as error:
            log.exception("job %s failed", job.id)
            outcome = (FAILED, f"Internal error ({type(error).__name__}). The run folder keeps its checkpoints; "
                               "report this with the server's log.")
        if outcome is None:
            self.store.requeue(job.id)
        else:
            self.store.finish(job.id, *outcome)

    def _run_until_done(self, job: Job) -> None:
        """Run the job; on a full disk, wait for space and resume it from its last checkpoint."""
        while True:
            try:
                (self._sweep if job.kind == SWEEP else self._invert)(job)
                return
            except Exception as error:
                if not is_disk_full(error):
                    raise
                log.warning("job %s paused: disk full (%s)", job.id, error)
                self._wait_for_space(job)

    def _wait_for_space(self, job: Job) -> None:
        """Pause on a full disk: say so (if the database can), serve edits, retry a test write every few seconds."""
        self.paused = PAUSED_DISK_FULL
        try:
            self.store.update_phase(job.id, PAUSED_DISK_FULL)
        except Exception:  # the database may be on the same full disk; the status keeps its last words
            log.warning("job %s: could not record the pause", job.id)
        probe = self.store.job_dir(job.id) / ".space-probe"
        while True:
            waited = time.monotonic() + self.space_retry
            while time.monotonic() < waited:
                if self._should_stop_on_a_full_disk(job):
                    raise Cancelled("Stopped while paused on a full disk; the job can be resumed.")
                self._wake.wait(min(0.5, self.space_retry))
                self._wake.clear()
            try:
                probe.write_bytes(b"\0" * 65536)
                probe.unlink()
                self.store.update_phase(job.id, None)
            except Exception as error:
                probe.unlink(missing_ok=True)
                if not is_disk_full(error):
                    raise
                continue
            self.paused = None
            log.info("job %s: disk space is back, resuming", job.id)
            return

    def _should_stop_on_a_full_disk(self, job: Job) -> bool:
        """`_should_stop`, but a database that cannot even be read on the full disk means 'carry on waiting'."""
        try:
            return self._should_stop(job)
        except Exception as error:
            if not is_disk_full(error):
                raise
            return self._stopping.is_set()

    def _beat(self, job_id: str, done: threading.Event) -> None:
        """Renew the job's lease every quarter lease while this worker thread lives and holds it."""
        while not done.wait(self.lease / 4):
            if self._thread is not None and not self._thread.is_alive():
                return
            try:
                if not self.store.heartbeat(job_id, self.name):
                    self._lease_lost.set()
                    return
            except Exception:  # busy or full: try again at the next beat; the lease is long
                log.warning("job %s: heartbeat not recorded", job_id)

    def _should_stop(self, job: Job) -> bool:
        """Called between steps: serve waiting edits (for a few seconds at most; the job's page says it is paused
        meanwhile), then say whether to stop."""
        if not self._requests.empty():
            before, self.paused = self.paused, PAUSED_FOR_EDIT
            self._record_phase(job.id, PAUSED_FOR_EDIT)  # in the store too: the Ray engine's pages read it there
            try:
                self._serve_requests(self.serve_budget)
            finally:
                self.paused = before
                self._record_phase(job.id, None)
        return self._stopping.is_set() or self._lease_lost.is_set() or self.store.cancel_requested(job.id)

    def _record_phase(self, job_id: str, phase: str | None) -> None:
        """A note for the job's page; a busy or full database only loses the note, never the job."""
        try:
            self.store.update_phase(job_id, phase)
        except Exception:  # noqa: BLE001 - the in-memory `paused` still tells this process's pages
            log.warning("job %s: phase %r not recorded", job_id, phase)

    def _invert(self, job: Job) -> None:
        run = self.store.run(job.id)
        previews = run.path / PREVIEW_DIR
        image, mask, config = run.inputs()
        _, square_mask = pad_to_square(image, mask)
        previews.mkdir(exist_ok=True)

        pace = _Pace()

        def on_step(report: StepReport) -> None:
            self.store.update_progress(job.id, report.step, report.total_steps, pace.lap(),
                                       report.loss, report.diffusion_loss, report.mask_loss)
            if report.step % self.preview_every == 0 or report.step == report.total_steps:
                _save_atomic(attention_figure(report.attention[0], square_mask), previews / ATTENTION_PREVIEW)
            if self.preview_steps and (report.step % config.checkpoint_every == 0
                                       or report.step == report.total_steps):
                self._sample_preview(run, config, previews / SAMPLE_PREVIEW)

        self._inverting = True
        try:
            learn(self.model, image, mask, config, run.path, on_step=on_step,
                  should_stop=lambda: self._should_stop(job))
        finally:
            self._inverting = False
            self._remove_pending_tokens()

    def _sweep(self, job: Job) -> None:
        """One `*s` per weight in shared passes, then images, metrics, grid and plot (resumes from checkpoints)."""
        folder = self.store.sweep_folder(job.id)
        image, mask, spec = folder.inputs()
        # Loaded once for the app's lifetime, shared with edits; before the pace starts, so that loading it is
        # not timed as the first step (a sweep of few steps would make it this server's step time).
        scorer, clip_note = self._clip_scorer()
        pace = _Pace()
        drawing: list[float] = []  # when the drawing of the pictures began

        def on_step(report: StepReport) -> None:
            self.store.update_progress(job.id, report.step, report.total_steps, pace.lap(),
                                       report.loss, report.diffusion_loss, report.mask_loss)
            self.store.update_terms(job.id, [{"weight": weight, **vars(terms)}
                                             for weight, terms in zip(spec.weights, report.terms)])

        def on_phase(text: str) -> None:  # between weights while drawing: edits wait no longer than one weight
            self.store.update_phase(job.id, text)
            progress = drawing_progress(text)
            if progress is not None:  # the drawing's pace, for the estimates of what waits behind sweeps
                if not drawing:
                    drawing.append(time.monotonic())
                self.store.update_drawing(job.id, progress[0], time.monotonic() - drawing[0])
            if self._should_stop(job):
                raise Cancelled(f"Stopped while {text}; the sweep can be resumed.")

        self._inverting = True  # the whole sweep: tokens of edits served meanwhile go when it ends
        try:
            result = sweep(self.model, image, mask, spec.base, spec.weights, spec.prompts, folder.path,
                           generation=spec.generation, seeds=spec.seeds, clip_model=None, clip_scorer=scorer,
                           mask_method=spec.mask_method, on_step=on_step, on_phase=on_phase,
                           should_stop=lambda: self._should_stop(job))
        finally:
            self._inverting = False
            self._remove_pending_tokens()
            remove_tokens(self.model.pipe, spec.base.placeholder)  # drawing its images left the last *s installed
        self.store.update_phase(job.id, None)
        self.store.set_note(job.id, clip_note or result.clip_note)

    def _clip_scorer(self) -> tuple[ClipScorer | None, str | None]:
        """(scorer, None) or (None, reason); tried once, on this thread, then kept."""
        if self._clip is None:
            if not self.clip_model:
                self._clip = (None, "No CLIP model is configured; CLIP-T is left empty.")
            else:
                scorer, reason = load_clip_scorer(self.clip_model, device=str(self.model.device))
                if reason:  # the cause and the operator's fixes (commands, flags) go to the terminal only
                    log.warning("%s", reason)
                self._clip = (scorer, CLIP_UNAVAILABLE if reason else None)
        return self._clip

    # --- edits ------------------------------------------------------------------------------
    def _generate_now(self, concept: Concept, prompts: list[str], config: GenerationConfig,
                      deadline: float | None = None,
                      on_progress: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
        token = f"<shapeinv-gen-{next(self._gen_ids)}>"
        renamed = [prompt.replace(concept.token, token) for prompt in prompts]

        def in_time(done: int, total: int) -> None:
            if deadline is not None and done < total and time.monotonic() > deadline:
                raise InputError(f"Stopped after {done} of {total} images: the request ran out of time. Ask for "
                                 "fewer images or sampling steps.")

        try:
            with _plain_cross_attention(self.model.pipe.unet):
                results = generate(self.model, dataclasses.replace(concept, token=token), renamed, config,
                                   on_image=in_time, on_sampling_step=on_progress)
        finally:
            if self._inverting:
                self._pending_tokens.append(token)
                freeze_text(self.model.pipe)  # a resized embedding comes back trainable
            else:
                remove_tokens(self.model.pipe, token)
        by_renamed = dict(zip(renamed, prompts))
        return [dataclasses.replace(result, prompt=by_renamed[result.prompt]) for result in results]

    def _remove_pending_tokens(self) -> None:
        for token in self._pending_tokens:
            remove_tokens(self.model.pipe, token)
        self._pending_tokens = []

    def _sample_preview(self, run, config, path: Path) -> None:
        """One image of the preview prompt (the training prompt by default) with the latest checkpoint's vectors."""
        loaded = run.load_checkpoint()
        if loaded is None:
            return
        step, state = loaded
        concept = Concept.from_checkpoint(config, step, state)
        try:
            [result] = self._generate_now(concept, [config.preview_prompt or config.prompt()],
                                          GenerationConfig(steps=self.preview_steps, seed=config.seed))
        except ShapeInvError as error:  # a preview must never fail the job
            log.warning("preview failed: %s", error)
            return
        _save_atomic(result.image, path)


@contextmanager
def _plain_cross_attention(unet) -> Iterator[None]:
    """Give cross-attention layers that capture maps for training the default processor for a while."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    swapped = {name: module.processor for name, module in cross_attention_layers(unet).items()
               if isinstance(module.processor, MapCaptureProcessor)}
    layers = cross_attention_layers(unet)
    try:
        for name in swapped:
            layers[name].set_processor(AttnProcessor2_0())
        yield
    finally:
        for name, processor in swapped.items():
            layers[name].set_processor(processor)


def _save_atomic(image, path: Path) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    image.save(tmp)
    tmp.replace(path)


def wait_for(store: JobStore, job_id: str, timeout: float = 300.0, poll: float = 0.2) -> Job:
    """Block until the job has finished (done, failed or cancelled); for scripts and tests."""
    deadline = time.monotonic() + timeout
    while True:
        job = store.get(job_id)
        if job.finished_state:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job.status} after {timeout:.0f} s (step {job.step})")
        time.sleep(poll)
