"""What runs inside one Ray actor: the embedded worker, unchanged, fed by the head instead of SQLite.

The actor owns one loaded pipeline through an ordinary `Worker`, so an inversion, a sweep, the
previews and edits between steps run exactly the code they run in the embedded mode. Only the
worker's store is different: a `RelayStore`, which
- hands the worker the one job the head gave this actor, with its folder copied into a scratch
  folder from the bytes the head sent (inputs, settings, checkpoints to resume from);
- turns every state change the worker records (progress, loss terms, phase, note, finished,
  requeued) into an event, together with the files the worker changed since the last event;
- answers `cancel_requested` and `heartbeat` from what the head told it.

The head collects the events (`next_events`) and replays them on its real store and folder.
This module does not import Ray: the engine makes the class an actor with `ray.remote`.
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
from pathlib import Path

from ..config import GenerationConfig
from ..files.runs import RunFolder
from ..generation.generate import GeneratedImage
from ..method.concept import Concept
from .mirror import FolderChanges, FolderMirror, write_files
from .store import Job, SweepFolder, validate_job_id
from .worker import Worker

# The store calls the worker makes to record a job's state; the head replays them on its store.
RELAYED = ("update_progress", "update_terms", "update_phase", "update_drawing", "set_note", "finish", "requeue")
FINAL = ("finish", "requeue")
ENDED = "ended"  # the worker let go of the job (after `finish`/`requeue`, or without either: lease lost)

Event = tuple[str, tuple, FolderChanges]


class RelayStore:
    """The part of `JobStore` a `Worker` uses, for one job at a time, in a scratch folder."""

    def __init__(self, scratch: Path):
        self.jobs_dir = Path(scratch) / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._handed: queue.Queue[Job] = queue.Queue()
        self._events: queue.Queue[Event] = queue.Queue()
        self._mirror: FolderMirror | None = None
        self._lock = threading.Lock()  # one event at a time, so changes are never split between two events
        self.cancelled: set[str] = set()
        self.released: set[str] = set()

    # --- from the head -------------------------------------------------------------------------
    def hand(self, job: Job, files: dict[str, bytes]) -> None:
        """Lay out the job's folder from the head's bytes and queue it for the worker (a fresh start for the job)."""
        self.cancelled.discard(job.id)
        self.released.discard(job.id)
        shutil.rmtree(self.jobs_dir, ignore_errors=True)  # the previous job's copy: the head has it all
        folder = self.job_dir(job.id)
        folder.mkdir(parents=True)
        write_files(folder, files)
        self._mirror = FolderMirror(folder)
        self._handed.put(job)

    def take_events(self, timeout: float) -> list[Event]:
        """Events since the last call; waits up to `timeout` seconds for the first one."""
        try:
            events = [self._events.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    # --- what the worker calls -----------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / validate_job_id(job_id)

    def run(self, job_id: str) -> RunFolder:
        return RunFolder(self.job_dir(job_id))

    def sweep_folder(self, job_id: str) -> SweepFolder:
        return SweepFolder(self.job_dir(job_id))

    def requeue_interrupted(self) -> list[str]:
        return []  # the head's store requeues jobs of a dead head

    def claim_next(self, worker: str = "", lease: float = 0.0) -> Job | None:
        try:
            return self._handed.get_nowait()
        except queue.Empty:
            return None

    def heartbeat(self, job_id: str, worker: str = "") -> bool:
        return job_id not in self.released

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self.cancelled

    def update_progress(self, *args) -> None:
        self._relay("update_progress", args)

    def update_terms(self, *args) -> None:
        self._relay("update_terms", args)

    def update_phase(self, *args) -> None:
        self._relay("update_phase", args)

    def update_drawing(self, *args) -> None:
        self._relay("update_drawing", args)

    def set_note(self, *args) -> None:
        self._relay("set_note", args)

    def finish(self, *args) -> None:
        self._relay("finish", args)

    def requeue(self, *args) -> None:
        self._relay("requeue", args)

    def ended(self, job_id: str) -> None:
        self._relay(ENDED, (job_id,))

    def _relay(self, name: str, args: tuple) -> None:
        with self._lock:
            changes = self._mirror.changes() if self._mirror is not None else FolderChanges()
            self._events.put((name, args, changes))


class _RelayedWorker(Worker):
    """The embedded worker, saying when it lets go of a job and letting the head take a job back."""

    def _run_job(self, job: Job) -> None:
        try:
            super()._run_job(job)
        finally:
            self.store.ended(job.id)

    def release(self, job_id: str) -> None:
        """The head lost the job's lease: stop at the next step and record nothing (as a lost lease does)."""
        self.store.released.add(job_id)
        if self.current_job == job_id:
            self._lease_lost.set()


class ModelActor:
    """One model on one GPU (or a share of the CPUs): runs the jobs and edits the head sends it."""

    def __init__(self, model: str, device: str = "auto", dtype: str = "auto", **worker_options):
        self.scratch = Path(tempfile.mkdtemp(prefix="shapeinv-actor-"))
        self.relay = RelayStore(self.scratch)
        self.sampling: dict[str, tuple[int, int]] = {}  # request -> (steps done, total) of generates running now
        self.worker = _RelayedWorker(self.relay, model=model, device=device, dtype=dtype, **worker_options).start()

    def ready(self, timeout: float | None = None) -> dict:
        """Wait for the model to load; its state, error and the page's status line."""
        self.worker.wait_ready(timeout)
        return {"state": self.worker.state, "error": self.worker.error, "status": self.worker.status_line(),
                "name": self.worker.name}

    def hand(self, job: Job, files: dict[str, bytes]) -> None:
        self.relay.hand(job, files)
        self.worker.wake()

    def next_events(self, timeout: float = 1.0) -> list[Event]:
        return self.relay.take_events(timeout)

    def cancel(self, job_id: str) -> None:
        self.relay.cancelled.add(job_id)

    def release(self, job_id: str) -> None:
        self.worker.release(job_id)

    def generate(self, concept: Concept, prompts: list[str], config: GenerationConfig,
                 timeout: float | None = None, request: str | None = None) -> list[GeneratedImage]:
        """The worker's images; with a `request` name, its sampling steps are kept for `generate_progress`."""
        def on_progress(done: int, total: int) -> None:
            self.sampling[request] = (done, total)

        try:
            return self.worker.generate(concept, prompts, config, timeout, on_progress if request else None)
        finally:
            self.sampling.pop(request, None)

    def generate_progress(self, request: str) -> tuple[int, int] | None:
        """(sampling steps done, total) of a running `generate` (the actor is threaded: this answers meanwhile)."""
        return self.sampling.get(request)

    def clip_t(self, images: list, prompts: list[str], timeout: float | None = None) -> tuple[list | None, str | None]:
        return self.worker.clip_t(images, prompts, timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step: a running job is checkpointed and requeued (its events say so)."""
        self.worker.stop(timeout)
        shutil.rmtree(self.scratch, ignore_errors=True)

    def resident_bytes(self) -> int:
        """This process's resident memory (for the bench)."""
        with open(f"/proc/{os.getpid()}/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
