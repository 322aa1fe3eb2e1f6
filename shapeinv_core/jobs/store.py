"""The persistent job store: inversion and sweep jobs in SQLite, each with a folder under DATA/jobs/<id>/.

An inversion job's folder has exactly the layout the CLI writes (`runs.RunFolder`), so a run made
in the app works with `shapeinv generate DATA/jobs/<id>` and a crash loses nothing but the steps
after the last checkpoint. A sweep job's folder is what `shapeinv sweep -o` writes (one run
folder per weight, grid.png, metrics.csv, tradeoff.png) plus its inputs and `sweep.json`.
The database only holds what the folder cannot: the queue order, the state and its times, the
latest progress for status pages, who owns the job and which worker holds it. One connection per
call keeps it safe to use from the web server's threads and the worker thread at once.

Three rules make it survive a flaky machine and strangers:
- **Busy is not failure.** A database locked by another connection is retried with backoff for up
  to `busy_wait` seconds (default 10 minutes) before `StoreBusy` is raised; a lock delays a job.
- **Leases.** A worker claims a job under its name and keeps beating `heartbeat()`; a job whose
  heartbeat is older than the lease goes back to the queue at the next `claim_next()`, so a dead
  worker never leaves a job "running". Its folder's checkpoints make the rerun a resume.
- **Owners.** `create()` records the SHA-256 of the caller's owner token (never the token), and
  `owned(job_id, token)` is the only way a user-facing caller should read a job: another owner's
  job answers exactly like a missing one. Jobs from before owners existed have none and are open.
  An owner may also hand out a read-only view: `share()` records the SHA-256 of a second, separate
  token, `shared(token)` is the one read it allows, and `unshare()` ends it. A share token is never
  an owner token: it cancels, resumes and edits with nothing.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import re
import secrets
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from PIL import Image

from ..config import GenerationConfig, InversionConfig, from_dict, to_dict
from ..errors import DiskFullError, InputError, ShapeInvError
from ..files.runs import RunFolder, read_inputs, write_inputs
from ..generation.sweep import weight_of_folder

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
FINISHED = (DONE, FAILED, CANCELLED)
INVERT, SWEEP = "invert", "sweep"
JOB_ID = re.compile(r"^([0-9a-f]{32}|[0-9a-f]{12})$")  # 128 random bits; 12 digits: ids from before owners
OWNER_TOKEN = re.compile(r"^[A-Za-z0-9_-]{22,128}$")  # at least 128 bits as URL-safe base64
DEFAULT_MAX_QUEUED = 20
DEFAULT_MAX_QUEUED_PER_OWNER = 3
DEFAULT_LEASE_SECONDS = 120.0  # a job whose worker has not beaten for this long is requeued
DEFAULT_BUSY_WAIT = 600.0  # seconds a locked database is retried before giving up
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
    "owner": "TEXT",  # SHA-256 of the owner's token; NULL: a job from before owners, open to all
    "worker": "TEXT",  # the worker holding a running job
    "heartbeat": "REAL",  # when that worker last said it is alive
    "drawn": "INTEGER NOT NULL DEFAULT 0",  # images a sweep has drawn in this run, after its steps
    "draw_seconds": "REAL NOT NULL DEFAULT 0",  # wall time those images took
    "share": "TEXT",  # SHA-256 of the job's read-only share token; NULL: not shared
}
# A sweep's phase while it draws its pictures, as `shapeinv_core.generation.sweep` announces it.
DRAWING = re.compile(r"^drawing images: (?P<done>\d+) of (?P<total>\d+)")


@dataclass
class Job:
    """One row of the store. `run_seconds`: this process's wall time on the job up to its latest step (the steps
    and what the worker does between them: previews, edits served)."""

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
    owner: str | None = None
    worker: str | None = None
    heartbeat: float | None = None
    drawn: int = 0
    draw_seconds: float = 0.0
    share: str | None = None

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


def drawing_progress(phase: str | None) -> tuple[int, int] | None:
    """(images drawn, images in all) from a sweep's phase while it draws its pictures; None in any other phase."""
    match = DRAWING.match(phase or "")
    return (int(match["done"]), int(match["total"])) if match else None


def validate_job_id(job_id: str) -> str:
    """The id, stripped, if it is one this store could have made; otherwise `InputError`.

    Called before an id is ever joined to a path, so '../x' or 'a/b' never reach the file system.
    """
    text = (job_id or "").strip()
    if not JOB_ID.match(text):
        raise InputError(f"{text[:40]!r} is not a job id. A job id is 32 characters 0-9 a-f, as the start of a job "
                         "returned it.")
    return text


def new_owner_token() -> str:
    """A fresh owner secret (192 random bits), for API clients that did not bring one."""
    return secrets.token_urlsafe(24)


def validate_owner(token: str | None) -> str:
    """The token, stripped, if it is long and plain enough to be a secret; otherwise `InputError`."""
    text = (token or "").strip()
    if not OWNER_TOKEN.match(text):
        raise InputError("The owner token is missing or malformed. Pass the `owner` value the start of your job "
                         "returned (22-128 characters A-Z a-z 0-9 _ -), or leave it empty when starting a job to "
                         "get a new one.")
    return text


def owner_hash(token: str) -> str:
    return hashlib.sha256(validate_owner(token).encode()).hexdigest()


SHARE_ENDED = ("This share link does not open a run: its owner has stopped sharing it, or the link is incomplete. "
               "Ask them for a new link.")


class StoreBusy(ShapeInvError):
    """The job database stayed locked by another program for longer than the store waits."""


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
            if not 0.0 <= weight <= 1.0:  # NaN fails this too
                raise InputError(f"The mask weight {weight:g} is outside 0-1. Use weights such as 0, 0.1, 0.5, 1.")
        return self

    def save(self, path: Path) -> None:
        path.write_text(self.to_json())

    def to_json(self) -> str:
        data = {"base": to_dict(self.base), "weights": self.weights, "prompts": self.prompts,
                "generation": to_dict(self.generation), "seeds": self.seeds, "mask_method": self.mask_method}
        return json.dumps(data, indent=2) + "\n"

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
    """A sweep job's folder: its inputs and `sweep.json`, then what `shapeinv_core.generation.sweep` writes."""

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
    """Queue and state of inversion and sweep jobs in `DATA/jobs.sqlite3`, folders in `DATA/jobs/`.

    `max_queued`: jobs waiting in all; `max_queued_per_owner`: waiting jobs of one owner.
    `busy_wait`: seconds a locked database is retried (with backoff) before `StoreBusy`.
    `lock_timeout`: SQLite's own wait per attempt (short, so the backoff can be seen and logged).
    """

    def __init__(self, data_dir: str | Path, max_queued: int = DEFAULT_MAX_QUEUED,
                 max_queued_per_owner: int = DEFAULT_MAX_QUEUED_PER_OWNER, busy_wait: float = DEFAULT_BUSY_WAIT,
                 lock_timeout: float = 5.0):
        self.data_dir = Path(data_dir)
        self.jobs_dir = self.data_dir / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "jobs.sqlite3"
        self.max_queued, self.max_queued_per_owner = max_queued, max_queued_per_owner
        self.busy_wait, self.lock_timeout = busy_wait, lock_timeout
        self._lock = threading.Lock()  # serialises read-modify-write sequences within this process
        self._transaction(self._create_schema)

    @staticmethod
    def _create_schema(db: sqlite3.Connection) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(_SCHEMA)
        present = {row["name"] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, declaration in _ADDED_COLUMNS.items():
            if name not in present:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {declaration}")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=self.lock_timeout)
        db.row_factory = sqlite3.Row
        try:
            with db:
                yield db
        finally:
            db.close()

    def _transaction(self, action: Callable[[sqlite3.Connection], object]):
        """`action(db)` in one transaction; a locked or busy database is retried with growing pauses.

        A full disk becomes `DiskFullError`; a lock outlasting `busy_wait` becomes `StoreBusy`.
        """
        deadline = time.monotonic() + self.busy_wait
        pause = 0.05
        while True:
            try:
                with self._connect() as db:
                    return action(db)
            except sqlite3.OperationalError as error:
                text = str(error).lower()
                if "full" in text or "disk i/o error" in text:  # SQLite on a full disk says either
                    raise DiskFullError("The server's disk is full, so the job database cannot be written. "
                                        "Free some space (old jobs are deleted after --keep-days); "
                                        "nothing is lost meanwhile.") from error
                if "locked" not in text and "busy" not in text:
                    raise
                if time.monotonic() + pause > deadline:
                    raise StoreBusy(f"The job database has been locked by another program for over "
                                    f"{self.busy_wait:.0f} s. Try again in a minute.") from error
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    def _execute(self, query: str, args: tuple = ()) -> int:
        """One statement in its own (retried) transaction; the number of rows it changed."""
        return self._transaction(lambda db: db.execute(query, args).rowcount)

    def _rows(self, query: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._transaction(lambda db: db.execute(query, args).fetchall())

    # --- paths ------------------------------------------------------------------------------
    def job_dir(self, job_id: str) -> Path:
        return self.jobs_dir / validate_job_id(job_id)

    def run(self, job_id: str) -> RunFolder:
        return RunFolder(self.job_dir(job_id))

    def concept_run(self, reference: str, owner: str | None = None) -> tuple[Job, RunFolder]:
        """The run folder a concept reference names: a job id, or `SWEEP_ID/weight_0.1` for one of a sweep's.

        Both parts are checked (the id against its pattern and `owner`, the folder against the exact
        names `sweep.run_folder_name` writes) before they are joined to a path.
        """
        text = (reference or "").strip()
        job_id, _, weight_folder = text.partition("/")
        job = self.owned(job_id, owner)
        if job.kind != SWEEP:
            if weight_folder:
                raise InputError(f"Job {job.id} is a single run; use its id alone, without /{weight_folder[:20]}.")
            return job, self.run(job.id)
        if weight_of_folder(weight_folder) is None:
            raise InputError(f"Job {job.id} is a sweep: name one of its concepts, as in {job.id}/weight_0.1 "
                             "(the 'Edit with this *s' button fills it in).")
        return job, RunFolder(self.job_dir(job.id) / weight_folder)

    # --- creating and reading ---------------------------------------------------------------
    def create(self, image: Image.Image, mask: Image.Image, config: InversionConfig, owner: str | None = None) -> Job:
        """Queue an inversion job for `owner` (a token, or None for an open job) and write its inputs."""
        config.validate()
        return self._queue(INVERT, config.steps, owner, lambda folder: RunFolder(folder).start(image, mask, config))

    def create_sweep(self, image: Image.Image, mask: Image.Image, spec: SweepSpec, owner: str | None = None) -> Job:
        """Queue a sweep job (one `*s` per weight, learned together) and write its inputs."""
        spec.validate()
        return self._queue(SWEEP, spec.base.steps, owner,
                           lambda folder: SweepFolder(folder).start(image, mask, spec))

    def sweep_folder(self, job_id: str) -> SweepFolder:
        return SweepFolder(self.job_dir(job_id))

    def check_room(self, owner: str | None = None) -> None:
        """Raise `InputError` if a new job would overfill the queue or the owner's share of it."""
        waiting = self.count(QUEUED)
        if waiting >= self.max_queued:
            raise InputError(f"The queue is full ({waiting} jobs are waiting, the limit is {self.max_queued}). "
                             "Try again when some have finished.")
        if owner is not None:
            mine = self._rows("SELECT COUNT(*) FROM jobs WHERE status = ? AND owner = ?",
                              (QUEUED, owner_hash(owner)))[0][0]
            if mine >= self.max_queued_per_owner:
                raise InputError(f"You already have {mine} jobs waiting, the most one person may queue here. "
                                 "Wait until one starts, or cancel one.")

    def _queue(self, kind: str, total_steps: int, owner: str | None, write_inputs) -> Job:
        digest = None if owner is None else owner_hash(owner)
        with self._lock:
            self.check_room(owner)
            job_id = secrets.token_hex(16)
            folder = self.job_dir(job_id)
            try:
                write_inputs(folder)
                self._execute("INSERT INTO jobs (id, kind, status, created, total_steps, owner) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (job_id, kind, QUEUED, time.time(), total_steps, digest))
            except OSError as error:
                shutil.rmtree(folder, ignore_errors=True)
                if error.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise DiskFullError("The server's disk is full, so a new job cannot be saved. Try again later "
                                        "(finished jobs are deleted after a few days).") from error
                raise
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        """The job, whoever owns it: for the worker and the server itself; users go through `owned`."""
        job_id = validate_job_id(job_id)
        rows = self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise InputError(f"There is no job {job_id} here, or it is not yours. Check the id, and use the page "
                             "(or the owner token) that started it.")
        return _job(rows[0])

    def owned(self, job_id: str, owner: str | None) -> Job:
        """The job if `owner` (a token) owns it, or it has no owner; else the same error as a missing job."""
        job = self.get(job_id)
        if job.owner is None:
            return job
        if not owner or not OWNER_TOKEN.match(owner.strip()) or not hmac.compare_digest(job.owner, owner_hash(owner)):
            raise InputError(f"There is no job {job.id} here, or it is not yours. Check the id, and use the page "
                             "(or the owner token) that started it.")
        return job

    # --- read-only sharing ------------------------------------------------------------------
    def share(self, job_id: str) -> str:
        """A new read-only token for the job (returned once; only its hash is kept); an earlier one stops working.

        Callers acting for a user check ownership first (`owned`).
        """
        token = new_owner_token()
        self._execute("UPDATE jobs SET share = ? WHERE id = ?", (owner_hash(token), validate_job_id(job_id)))
        return token

    def unshare(self, job_id: str) -> None:
        """The job's share token stops working (callers check ownership first)."""
        self._execute("UPDATE jobs SET share = NULL WHERE id = ?", (validate_job_id(job_id),))

    def shared(self, token: str | None) -> Job:
        """The one job `token` shares; a malformed, wrong or revoked token gets the same one message."""
        if not token or not OWNER_TOKEN.match(token.strip()):
            raise InputError(SHARE_ENDED)
        rows = self._rows("SELECT * FROM jobs WHERE share = ?", (owner_hash(token),))
        if not rows:
            raise InputError(SHARE_ENDED)
        return _job(rows[0])

    def list(self, *states: str) -> list[Job]:
        """Jobs in queue order, optionally only those in `states`."""
        query, args = "SELECT * FROM jobs", ()
        if states:
            query += f" WHERE status IN ({', '.join('?' * len(states))})"
            args = states
        return [_job(row) for row in self._rows(query + " ORDER BY seq", args)]

    def newest(self, *states: str, limit: int) -> list[Job]:
        """At most `limit` jobs in `states`, newest first: a page poll must not read every job ever run."""
        query = f"SELECT * FROM jobs WHERE status IN ({', '.join('?' * len(states))}) ORDER BY seq DESC LIMIT ?"
        return [_job(row) for row in self._rows(query, (*states, limit))]

    def owned_jobs(self, owner: str | None, limit: int = 50) -> list[Job]:
        """`owner`'s jobs and sweeps, newest first (none without a token: open jobs belong to nobody's list)."""
        if not owner or not OWNER_TOKEN.match(owner.strip()):
            return []
        rows = self._rows("SELECT * FROM jobs WHERE owner = ? ORDER BY seq DESC LIMIT ?", (owner_hash(owner), limit))
        return [_job(row) for row in rows]

    def count(self, status: str) -> int:
        return self._rows("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,))[0][0]

    def queue_position(self, job_id: str) -> int | None:
        """1 = next to run. Jobs ahead: the queued ones created earlier plus any running one."""
        job = self.get(job_id)
        if job.status != QUEUED:
            return None
        ahead = self._rows("SELECT COUNT(*) FROM jobs WHERE status = ? AND seq < ?", (QUEUED, job.seq))[0][0]
        return ahead + self.count(RUNNING) + 1

    def delete(self, job_id: str) -> None:
        """Forget a finished job: its row, then its folder (retention; a running job is never deleted)."""
        job = self.get(job_id)
        if not job.finished_state:
            raise InputError(f"Job {job.id} is {job.status}; cancel it before deleting it.")
        self._execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        shutil.rmtree(self.job_dir(job.id), ignore_errors=True)

    # --- the worker's side ------------------------------------------------------------------
    def claim_next(self, worker: str = "local", lease: float = DEFAULT_LEASE_SECONDS) -> Job | None:
        """Requeue jobs whose worker stopped beating for `lease` s, then mark the oldest queued job running.

        Returns the claimed job (held by `worker`, heartbeat now), or None when the queue is empty.
        """
        def claim(db: sqlite3.Connection) -> str | None:
            now = time.time()
            db.execute("UPDATE jobs SET status = ?, resumes = resumes + 1, worker = NULL "
                       "WHERE status = ? AND COALESCE(heartbeat, started, 0) < ?", (QUEUED, RUNNING, now - lease))
            row = db.execute("SELECT id FROM jobs WHERE status = ? ORDER BY seq LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = ?, started = COALESCE(started, ?), run_seconds = 0, "
                       "first_step = step, worker = ?, heartbeat = ?, phase = NULL, drawn = 0, draw_seconds = 0 "
                       "WHERE id = ?",
                       (RUNNING, now, worker, now, row["id"]))
            return row["id"]

        with self._lock:
            claimed = self._transaction(claim)
        return None if claimed is None else self.get(claimed)

    def heartbeat(self, job_id: str, worker: str = "local") -> bool:
        """`worker` is alive and still holds the job; False if the lease was lost (the job was requeued)."""
        changed = self._execute("UPDATE jobs SET heartbeat = ? WHERE id = ? AND worker = ? AND status = ?",
                                (time.time(), validate_job_id(job_id), worker, RUNNING))
        return changed == 1

    def requeue_interrupted(self) -> list[str]:
        """At start-up of the only server: jobs left 'running' by a dead process go back to the queue, in order."""
        def requeue(db: sqlite3.Connection) -> list[str]:
            ids = [row["id"] for row in db.execute("SELECT id FROM jobs WHERE status = ?", (RUNNING,))]
            db.execute("UPDATE jobs SET status = ?, resumes = resumes + 1, worker = NULL WHERE status = ?",
                       (QUEUED, RUNNING))
            return ids

        with self._lock:
            return self._transaction(requeue)

    def update_progress(self, job_id: str, step: int, total_steps: int, seconds: float,
                        loss: float, diffusion_loss: float, mask_loss: float) -> None:
        self._execute(
            "UPDATE jobs SET step = ?, total_steps = ?, run_seconds = run_seconds + ?, loss = ?, "
            "diffusion_loss = ?, mask_loss = ?, first_step = CASE WHEN run_seconds = 0 THEN ? - 1 "
            "ELSE first_step END, heartbeat = ? WHERE id = ?",
            (step, total_steps, seconds, loss, diffusion_loss, mask_loss, step, time.time(), validate_job_id(job_id)),
        )

    def update_terms(self, job_id: str, terms: list[dict]) -> None:
        """The latest loss terms of every concept of a sweep, for its status page."""
        self._execute("UPDATE jobs SET terms = ? WHERE id = ?", (json.dumps(terms), validate_job_id(job_id)))

    def update_phase(self, job_id: str, phase: str | None) -> None:
        """What a running job is doing besides stepping (a sweep drawing; a job paused on a full disk)."""
        self._execute("UPDATE jobs SET phase = ? WHERE id = ?", (phase, validate_job_id(job_id)))

    def update_drawing(self, job_id: str, drawn: int, seconds: float) -> None:
        """A sweep's images drawn so far in this run and the wall time they took: the measured pace of drawing,
        for the wait of the jobs behind it and the duration of sweeps to come."""
        self._execute("UPDATE jobs SET drawn = ?, draw_seconds = ? WHERE id = ?",
                      (drawn, seconds, validate_job_id(job_id)))

    def set_note(self, job_id: str, note: str | None) -> None:
        self._execute("UPDATE jobs SET note = ? WHERE id = ?", (note, validate_job_id(job_id)))

    def requeue(self, job_id: str, resumed: bool = False) -> None:
        """Put a running job back at its old place in the queue (the server is stopping).

        `resumed`: the job was interrupted (its worker died), so its next run counts as a resume.
        """
        self._execute("UPDATE jobs SET status = ?, worker = NULL, resumes = resumes + ? WHERE id = ? AND status = ?",
                      (QUEUED, int(resumed), validate_job_id(job_id), RUNNING))

    def finish(self, job_id: str, status: str, error: str | None = None) -> None:
        if status not in FINISHED:
            raise ValueError(f"{status!r} is not a final state")
        self._execute("UPDATE jobs SET status = ?, finished = ?, error = ?, worker = NULL, phase = NULL WHERE id = ?",
                      (status, time.time(), error, validate_job_id(job_id)))

    def finished_before(self, cutoff: float) -> list[Job]:
        """Finished jobs whose end lies before `cutoff` (a time.time() value), oldest first: for retention."""
        marks = ", ".join("?" * len(FINISHED))
        return [_job(row) for row in self._rows(
            f"SELECT * FROM jobs WHERE status IN ({marks}) AND COALESCE(finished, created) < ? ORDER BY seq",
            (*FINISHED, cutoff))]

    # --- cancelling -------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop after its current step.

        Callers acting for a user check ownership first (`owned`).
        """
        job_id = validate_job_id(job_id)

        def cancel(db: sqlite3.Connection) -> None:
            db.execute("UPDATE jobs SET status = ?, finished = ? WHERE id = ? AND status = ?",
                       (CANCELLED, time.time(), job_id, QUEUED))
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND status = ?", (job_id, RUNNING))

        with self._lock:
            self._transaction(cancel)
        return self.get(job_id)

    def resume(self, job_id: str) -> Job:
        """Queue a cancelled or failed job again, at the back of the queue; its run continues from its checkpoint.

        Callers acting for a user check ownership first (`owned`) and room in the queue (`check_room`).
        """
        job_id = validate_job_id(job_id)

        def resume(db: sqlite3.Connection) -> int:
            last = db.execute("SELECT MAX(seq) FROM jobs").fetchone()[0]
            return db.execute(
                "UPDATE jobs SET status = ?, seq = ?, finished = NULL, error = NULL, cancel_requested = 0, "
                "resumes = resumes + 1, worker = NULL, phase = NULL WHERE id = ? AND status IN (?, ?)",
                (QUEUED, last + 1, job_id, FAILED, CANCELLED)).rowcount

        with self._lock:
            if self._transaction(resume) != 1:
                job = self.get(job_id)
                raise InputError(f"Job {job.id} is {job.status}; only a cancelled or failed job can be resumed.")
        return self.get(job_id)

    def cancel_requested(self, job_id: str) -> bool:
        rows = self._rows("SELECT cancel_requested FROM jobs WHERE id = ?", (validate_job_id(job_id),))
        return bool(rows and rows[0][0])


def _job(row: sqlite3.Row) -> Job:
    return Job(**{column.name: row[column.name] for column in fields(Job)})
