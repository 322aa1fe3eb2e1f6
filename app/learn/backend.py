"""Learning *s, without Gradio: the form's settings checked, a job queued, its state read, stopped, resumed.

A part of `app.backend.Backend` (its store, worker, limits and data folder). A sweep is learned as
a job is: the sweeps feature queues it with `submit` and reads it with `status` and `describe`.
Every call about a job reads it through `JobStore.owned`, so a stranger with a job id learns nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from shapeinv_core.config import InversionConfig, load_json
from shapeinv_core.errors import InputError, ModelLoadError
from shapeinv_core.jobs import (
    ATTENTION_PREVIEW,
    DONE,
    PREVIEW_DIR,
    QUEUED,
    RUNNING,
    SAMPLE_PREVIEW,
    SWEEP,
    Job,
    SweepSpec,
)
from shapeinv_core.jobs.estimates import run_seconds, seconds_until_start
from shapeinv_core.jobs.retention import check_budget
from shapeinv_core.models.loading import ModelLayout, check_for_model, model_layout

from ..display import counted, format_duration, in_line

NOT_TIMED = "Duration: no run has been timed on this server yet; the first run's progress shows its pace."


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class LearnBackend:
    """One job's life: settings, queue, status, cancel, resume, the duration estimate."""

    def inversion_config(self, **settings) -> InversionConfig:
        """Settings from the form; `steps` is held to the server's limit."""
        config = InversionConfig(**settings)
        for name in ("num_vectors", "map_resolution", "batch_size", "seed", "resolution", "checkpoint_every",
                     "steps", "balance_every", "lora_rank", "lora_steps"):
            setattr(config, name, int(getattr(config, name)))
        if config.total_steps() > self.limits.max_steps:
            raise InputError(f"{config.total_steps()} steps (LoRA phase included) is more than this server allows "
                             f"({self.limits.max_steps}). Ask for fewer steps, or run the CLI on your own GPU.")
        check_for_model(config.validate(), self.layout)
        return config

    @property
    def layout(self) -> ModelLayout | None:
        """The served model's shapes from its config files (read once known), so settings are checked before
        queueing; None while they cannot be read yet (the tiny model before its first load wrote it)."""
        if not hasattr(self, "_layout"):
            layout = model_layout(self.model)
            if layout is None and self.worker.state == "loading":  # its files may not be there yet: ask again
                return None
            self._layout = layout
        return self._layout

    def check_room(self, owner: str) -> None:
        """Refuse a new job early (before reading uploads): a failed model, a full queue, the disk budget."""
        if self.worker.state == "failed":  # the page says so plainly; the terminal gets the cause and fixes again
            raise ModelLoadError(f"A job was asked for, but the model did not load: {self.worker.error}")
        self.store.check_room(owner)
        check_budget(self.data_dir, self.limits.max_disk_gb)

    def submit(self, image: Image.Image, mask: Image.Image, config: InversionConfig | SweepSpec,
               owner: str) -> Job:
        """Queue an inversion (an `InversionConfig`) or a sweep (a `SweepSpec`) for `owner`; wake the worker."""
        self.check_room(owner)
        create = self.store.create_sweep if isinstance(config, SweepSpec) else self.store.create
        job = create(image, mask, config, owner=owner)
        self.worker.wake()
        return job

    def cancel(self, job_id: str, owner: str | None) -> Job:
        """Cancel one of `owner`'s jobs: a queued one now, a running one after its current step."""
        return self.store.cancel(self.store.owned(job_id, owner).id)

    def status(self, job_id: str, owner: str | None) -> dict:
        """Everything a status page or a program needs about one of `owner`'s jobs, JSON-ready (no paths)."""
        job = self.store.owned(job_id, owner)
        elapsed = None if job.started is None else (job.finished or time.time()) - job.started
        run = self.store.run(job.id)
        return {
            "id": job.id,
            "status": job.status,
            "queue_position": self.store.queue_position(job.id),
            "start_in_seconds": _rounded(seconds_until_start(self.store, job.id)),  # None until a step was timed
            "step": job.step,
            "total_steps": job.total_steps,
            "elapsed_seconds": _rounded(elapsed),
            "remaining_seconds": _rounded(job.remaining_seconds()),
            "loss": job.loss,
            "diffusion_loss": job.diffusion_loss,
            "mask_loss": job.mask_loss,
            "error": job.error,
            "resumed": job.resumes,
            "has_concept": run.has_concept(),
            "kind": job.kind,
            # a sweep after its steps: which weight it is drawing; a job paused on a full disk: why
            "phase": self.worker.paused if self.worker.paused and self.worker.current_job == job.id else job.phase,
            "terms": job.term_list(),  # a sweep: the latest loss terms of each weight's *s
            "grad_ratio": self._latest_balance(run),  # |grad(weight x mask term)| / |grad(denoising)|
            "note": job.note,
        }

    def describe(self, status: dict) -> str:
        """One line for people: where the job stands and what to do next."""
        state = status["status"]
        if state == QUEUED:
            waiting = "" if self.worker.state == "ready" else f" {self.worker.status_line()}"
            start = status.get("start_in_seconds")
            when = f", starts in about {format_duration(start)}" if start is not None else ""
            return f"Job {status['id']}: waiting, {in_line(status['queue_position'])}{when}.{waiting}"
        sweep = status.get("kind") == SWEEP
        if state == RUNNING and sweep:  # learning all weights' *s, then drawing and measuring weight by weight
            phase = status["phase"] or "starting"
            if status["step"] < status["total_steps"]:
                return f"Sweep {status['id']}: {phase}, step {status['step']} of {status['total_steps']}."
            return f"Sweep {status['id']}: {phase} ..."
        if state == RUNNING and status["phase"]:  # e.g. paused on a full disk
            return f"Job {status['id']}: {status['phase']} (step {status['step']} of {status['total_steps']})."
        if state == RUNNING:
            return f"Job {status['id']}: learning *s, step {status['step']} of {status['total_steps']}."
        if state == DONE and sweep:
            return f"Sweep {status['id']}: done. Compare below; take a weight's *s to the Edit section."
        if state == DONE:
            return f"Job {status['id']}: done. Type edit prompts below, or download the concept."
        if state == "failed":
            return f"Job {status['id']}: failed. {status['error']}"
        return f"Job {status['id']}: cancelled. {status['error'] or ''}".strip()

    @staticmethod
    def _latest_balance(run) -> float | None:
        """The newest gradient ratio in a run's log (measured every `balance_every` steps), or None."""
        for record in reversed(run.read_log()):
            if record.get("grad_ratio") is not None:
                return record["grad_ratio"]
        return None

    def resume(self, job_id: str, owner: str | None) -> Job:
        """Queue a cancelled or failed job of `owner` again; it continues from its last checkpoint."""
        job = self.store.owned(job_id, owner)
        self.check_room(owner)
        job = self.store.resume(job.id)
        self.worker.wake()
        return job

    def duration_estimate(self, config: InversionConfig) -> str:
        """A sentence on how long a run with `config` takes here, from the steps timed on this server."""
        seconds, runs = run_seconds(self.store, config)
        if seconds is None:
            return NOT_TIMED
        return (f"Duration: about {format_duration(seconds)} of learning at this server's pace "
                f"(measured on {counted(runs, 'earlier run')}), plus any wait in the queue.")

    def settings(self, job: Job) -> tuple[InversionConfig, SweepSpec | None]:
        """(the job's inversion settings, a sweep's shared ones; its spec, or None for a single run)."""
        if job.kind == SWEEP:
            spec = self.store.sweep_folder(job.id).spec()
            return spec.base, spec
        return load_json(InversionConfig, self.store.run(job.id).config_path), None

    def log(self, job_id: str, owner: str | None) -> list[dict]:
        """The job's log.jsonl records (one per step), for the loss plot."""
        return self.store.run(self.store.owned(job_id, owner).id).read_log()

    def previews(self, job_id: str, owner: str | None) -> tuple[Path | None, Path | None]:
        """The latest sample image and attention picture of a job (None until written)."""
        job_id = self.store.owned(job_id, owner).id
        folder = self.store.job_dir(job_id) / PREVIEW_DIR
        sample, attention = folder / SAMPLE_PREVIEW, folder / ATTENTION_PREVIEW
        final = self.store.job_dir(job_id) / "attention.png"
        return (sample if sample.is_file() else None,
                final if final.is_file() else attention if attention.is_file() else None)
