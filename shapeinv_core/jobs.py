"""The persistent job store: inversion jobs in SQLite, each with a run folder under DATA/jobs/<id>/.

A job's folder has exactly the layout the CLI writes (`runs.RunFolder`), so a run made in the app
works with `shapeinv generate DATA/jobs/<id>` and a crash loses nothing but the steps after the
last checkpoint. The database only holds what the folder cannot: the queue order, the state and
its times, and the latest progress for status pages. One connection per call keeps it safe to
use from the web server's threads and the worker thread at once.
"""

from __future__ import annotations

import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

from PIL import Image

from .config import InversionConfig
from .errors import InputError
from .runs import RunFolder

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
DEFAULT_MAX_QUEUED = 20

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

    @property
    def finished_state(self) -> bool:
        return self.status in FINISHED

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


class JobStore:
    """Queue and state of inversion jobs in `DATA/jobs.sqlite3`, folders in `DATA/jobs/`."""

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

    # --- creating and reading ---------------------------------------------------------------
    def create(self, image: Image.Image, mask: Image.Image, config: InversionConfig) -> Job:
        """Queue a job and write its inputs; refuse when the queue is full."""
        config.validate()
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
                RunFolder(folder).start(image, mask, config)
                with self._connect() as db:
                    db.execute("INSERT INTO jobs (id, status, created, total_steps) VALUES (?, ?, ?, ?)",
                               (job_id, QUEUED, time.time(), config.steps))
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
    return Job(**{field.name: row[field.name] for field in fields(Job)})
