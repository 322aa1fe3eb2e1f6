"""The persistent job store: inversion and sweep jobs in SQLite, each with a folder under DATA/jobs/<id>/.

An inversion job's folder has exactly the layout the CLI writes (`runs.RunFolder`), so a run made
in the app works with `shapeinv generate DATA/jobs/<id>` and a crash loses nothing but the steps
after the last checkpoint. A sweep job's folder is what `shapeinv sweep -o` writes (one run
folder per weight, grid.png, metrics.csv, tradeoff.png) plus its inputs and `sweep.json`.
The database only holds what the folder cannot: the queue order, the state and its times, and
the latest progress for status pages. One connection per call keeps it safe to use from the web
server's threads and the worker thread at once.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from PIL import Image

from ..config import GenerationConfig, InversionConfig, from_dict, to_dict
from ..errors import InputError
from ..runs import RunFolder, read_inputs, write_inputs

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
INVERT, SWEEP = "invert", "sweep"
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
SWEEP_RUN = re.compile(r"^weight_[0-9]+(\.[0-9]+)?$")  # `sweep.run_folder_name` of a weight in [0, 1]
DEFAULT_MAX_QUEUED = 20
SWEEP_FILE = "sweep.json"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER NOT NULL DEFAULT 0,
    first_step INTEGER NOT NULL DEFAULT 0,
    run_seconds REAL NOT NULL DEFAULT 0,
    loss REAL,
    diffusion_loss REAL,
    mask_loss REAL,
    resumes INTEGER NOT NULL DEFAULT 0
)
"""
# Columns added after the first release: added to an older database when it is opened.
_ADDED_COLUMNS = {
    "kind": f"TEXT NOT NULL DEFAULT '{INVERT}'",
    "phase": "TEXT",  # what a sweep is doing after its steps (generating, measuring)
    "terms": "TEXT",  # JSON: the latest loss terms of every concept of a sweep
    "note": "TEXT",  # a remark on a finished job, e.g. why the CLIP columns are empty
}


@dataclass
class Job:
    """One row of the store. `run_seconds` counts only time spent stepping (this process)."""

    seq: int
    id: str
    status: str
    created: float
    started: float | None
    finished: float | None
    error: str | None
    cancel_requested: int
    step: int
    total_steps: int
    first_step: int  # the step this process resumed from (for the remaining-time estimate)
    run_seconds: float
    loss: float | None
    diffusion_loss: float | None
    mask_loss: float | None
    resumes: int
    kind: str = INVERT
    phase: str | None = None
    terms: str | None = None
    note: str | None = None

    @property
    def finished_state(self) -> bool:
        return self.status in FINISHED

    def term_list(self) -> list[dict]:
        """The latest loss terms per concept of a sweep (weight, loss, diffusion_loss, mask_loss)."""
        return json.loads(self.terms) if self.terms else []

    def remaining_seconds(self) -> float | None:
        """Time left at this process's pace, or None before two steps have been timed."""
        done = self.step - self.first_step
        if self.status != RUNNING or done < 1 or self.run_seconds <= 0:
            return None
        return self.run_seconds / done * (self.total_steps - self.step)


def validate_job_id(job_id: str) -> str:
    """The id, stripped, if it is one this store could have made; otherwise `InputError`.

    Called before an id is ever joined to a path, so '../x' or 'a/b' never reach the file system.
    """
    text = (job_id or "").strip()
    if not JOB_ID.match(text):
        raise InputError(f"{text[:40]!r} is not a job id. A job id is 12 characters 0-9 a-f, as in ?job=3f2a9c0d1e4b.")
    return text


@dataclass
class SweepSpec:
    """What a sweep job asks for: the shared settings, the weights, the edit prompts, how to draw them."""

    base: InversionConfig
    weights: list[float]
    prompts: list[str]
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    seeds: list[int] | None = None
    mask_method: str = "auto"

    def validate(self) -> SweepSpec:
        self.base.validate()
        self.generation.validate()
        if not self.weights or len(set(self.weights)) != len(self.weights):
            raise InputError("Give one or more distinct mask weights, e.g. 0, 0.1, 0.5.")
        for weight in self.weights:
            if not 0.0 <= weight <= 1.0:
                raise InputError(f"The mask weight {weight:g} is outside 0-1. Use weights such as 0, 0.1, 0.5, 1.")
        return self

    def save(self, path: Path) -> None:
        data = {"base": to_dict(self.base), "weights": self.weights, "prompts": self.prompts,
                "generation": to_dict(self.generation), "seeds": self.seeds, "mask_method": self.mask_method}
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> SweepSpec:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"Cannot read the sweep settings {path}: {error}.") from error
        return cls(base=from_dict(InversionConfig, data["base"]), weights=[float(w) for w in data["weights"]],
                   prompts=list(data["prompts"]), generation=from_dict(GenerationConfig, data["generation"]),
                   seeds=data.get("seeds"), mask_method=data.get("mask_method", "auto")).validate()


class SweepFolder:
    """A sweep job's folder: its inputs and `sweep.json`, then what `shapeinv_core.sweep` writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, image: Image.Image, mask: Image.Image, spec: SweepSpec) -> None:
        write_inputs(self.path, image, mask)
        spec.save(self.path / SWEEP_FILE)

    def inputs(self) -> tuple[Image.Image, Image.Image, SweepSpec]:
        image, mask = read_inputs(self.path, SWEEP_FILE, "sweep folder")
        return image, mask, self.spec()

    def spec(self) -> SweepSpec:
        return SweepSpec.load(self.path / SWEEP_FILE)


class JobStore:
    """Queue and state of inversion and sweep jobs in `DATA/jobs.sqlite3`, folders in `DATA/jobs/`."""

    def __init__(self, data_dir: str | Path, max_queued: int = DEFAULT_MAX_QUEUED):
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "jobs.sqlite3"
        self.max_queued = max_queued
        self._lock = threading.Lock()  # serialises read-modify-write sequences within this process
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)
            present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
            for name, declaration in _ADDED_COLUMNS.items():
                if name not in present:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    # --- paths ------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / validate_job_id(job_id)

    def run(self, job_id: str) -> RunFolder:
        return RunFolder(self.job_dir(job_id))

    def concept_run(self, reference: str) -> tuple[Job, RunFolder]:
        """The run folder a concept reference names: a job id, or `SWEEP_ID/weight_0.1` for one of a sweep's.

        Both parts are checked against their patterns before they are joined to a path.
        """
        text = (reference or "").strip()
        job_id, _, weight_folder = text.partition("/")
        job = self.get(job_id)
        if job.kind != SWEEP:
            if weight_folder:
                raise InputError(f"Job {job.id} is a single run; use its id alone, without /{weight_folder[:20]}.")
            return job, self.run(job.id)
        if not SWEEP_RUN.match(weight_folder):
            raise InputError(f"Job {job.id} is a sweep: name one of its concepts, as in {job.id}/weight_0.1 "
                             "(the 'Edit with this *s' button fills it in).")
        return job, RunFolder(self.job_dir(job.id) / weight_folder)

    # --- creating and reading ---------------------------------------------------------------
    def create(self, image: Image.Image, mask: Image.Image, config: InversionConfig) -> Job:
        """Queue an inversion job and write its inputs; refuse when the queue is full."""
        config.validate()
        return self._queue(INVERT, config.steps, lambda folder: RunFolder(folder).start(image, mask, config))

    def create_sweep(self, image: Image.Image, mask: Image.Image, spec: SweepSpec) -> Job:
        """Queue a sweep job (one `*s` per weight, learned together) and write its inputs."""
        spec.validate()
        return self._queue(SWEEP, spec.base.steps, lambda folder: SweepFolder(folder).start(image, mask, spec))

    def sweep_folder(self, job_id: str) -> SweepFolder:
        return SweepFolder(self.job_dir(job_id))

    def _queue(self, kind: str, total_steps: int, write_inputs) -> Job:
        with self._lock:
            waiting = self.count(QUEUED)
            if waiting >= self.max_queued:
                raise InputError(
                    f"The queue is full ({waiting} jobs are waiting, the limit is {self.max_queued}). "
                    "Try again when some have finished."
                )
            job_id = secrets.token_hex(6)
            folder = self.job_dir(job_id)
            try:
                write_inputs(folder)
                with self._connect() as db:
                    db.execute("INSERT INTO jobs (id, kind, status, created, total_steps) VALUES (?, ?, ?, ?, ?)",
                               (job_id, kind, QUEUED, time.time(), total_steps))
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        job_id = validate_job_id(job_id)
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise InputError(f"There is no job {job_id}. It may belong to another server or data folder.")
        return _job(row)

    def list(self, *states: str) -> list[Job]:
        """Jobs in queue order, optionally only those in `states`."""
        query, args = "SELECT * FROM jobs", ()
        if states:
            query += f" WHERE status IN ({', '.join('?' * len(states))})"
            args = states
        with self._connect() as db:
            return [_job(row) for row in db.execute(query + " ORDER BY seq", args)]

    def count(self, status: str) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def queue_position(self, job_id: str) -> int | None:
        """1 = next to run. Jobs ahead: the queued ones created earlier plus any running one."""
        job = self.get(job_id)
        if job.status != QUEUED:
            return None
        with self._connect() as db:
            ahead = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ? AND seq < ?",
                               (QUEUED, job.seq)).fetchone()[0]
            running = db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (RUNNING,)).fetchone()[0]
        return ahead + running + 1

    # --- the worker's side ------------------------------------------------------------------
    def claim_next(self) -> Job | None:
        """Mark the oldest queued job running and return it (None when the queue is empty)."""
        with self._lock, self._connect() as db:
            row = db.execute("SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = ?, started = COALESCE(started, ?), run_seconds = 0, "
                       "first_step = step WHERE id = ?", (RUNNING, time.time(), row["id"]))
        return self.get(row["id"])

    def requeue_interrupted(self) -> list[str]:
        """At start-up: jobs left 'running' by a dead process go back to the queue, in their old order."""
        with self._lock, self._connect() as db:
            ids = [row["id"] for row in db.execute("SELECT id FROM jobs WHERE status = ?", (RUNNING,))]
            db.execute("UPDATE jobs SET status = ?, resumes = resumes + 1 WHERE status = ?", (QUEUED, RUNNING))
        return ids

    def update_progress(self, job_id: str, step: int, total_steps: int, seconds: float,
                        loss: float, diffusion_loss: float, mask_loss: float) -> None:
        with self._connect() as db:
            db.execute(
                "UPDATE jobs SET step = ?, total_steps = ?, run_seconds = run_seconds + ?, loss = ?, "
                "diffusion_loss = ?, mask_loss = ?, first_step = CASE WHEN run_seconds = 0 THEN ? - 1 "
                "ELSE first_step END WHERE id = ?",
                (step, total_steps, seconds, loss, diffusion_loss, mask_loss, step, validate_job_id(job_id)),
            )

    def update_terms(self, job_id: str, terms: list[dict]) -> None:
        """The latest loss terms of every concept of a sweep, for its status page."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET terms = ? WHERE id = ?", (json.dumps(terms), validate_job_id(job_id)))

    def update_phase(self, job_id: str, phase: str | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET phase = ? WHERE id = ?", (phase, validate_job_id(job_id)))

    def set_note(self, job_id: str, note: str | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE jobs SET note = ? WHERE id = ?", (note, validate_job_id(job_id)))

    def requeue(self, job_id: str) -> None:
        """Put a running job back at its old place in the queue (the server is stopping)."""
        with self._connect() as db:
            db.execute("UPDATE jobs SET status = ? WHERE id = ? AND status = ?",
                       (QUEUED, validate_job_id(job_id), RUNNING))

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"{status!r} is not a final state")
        with self._connect() as db:
            db.execute("UPDATE jobs SET status = ?, finished = ?, error = ? WHERE id = ?",
                       (status, time.time(), error, validate_job_id(job_id)))

    # --- cancelling -------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop after its current step."""
        job_id = validate_job_id(job_id)
        with self._lock, self._connect() as db:
            db.execute("UPDATE jobs SET status = ?, finished = ? WHERE id = ? AND status = ?",
                       (CANCELLED, time.time(), job_id, QUEUED))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = ?", (job_id, RUNNING))
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        with self._connect() as db:
            row = db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (validate_job_id(job_id),)).fetchone()
        return bool(row and row[0])


def _job(row: sqlite3.Row) -> Job:
    return Job(**{column.name: row[column.name] for column in fields(Job)})
