"""Jobs: the persistent store (SQLite queue + one folder per job) and the worker thread that owns the model.

`store` knows nothing of models; `worker` runs the store's jobs on one loaded pipeline.
`engines` picks the embedded worker or, for `--engine ray`, `ray_engine` (one Ray actor per GPU,
each running a `worker` fed through `ray_actor`; files travel by value through `mirror`; a sweep
may be split over actors by `split_sweep`). Those modules are imported only then: not from here.
"""

from .store import (
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    INVERT,
    QUEUED,
    RUNNING,
    STATES,
    SWEEP,
    Job,
    JobStore,
    StoreBusy,
    SweepFolder,
    SweepSpec,
    drawing_progress,
    new_owner_token,
    validate_job_id,
    validate_owner,
)
from .worker import ATTENTION_PREVIEW, PREVIEW_DIR, SAMPLE_PREVIEW, Worker, wait_for

__all__ = [
    "ATTENTION_PREVIEW", "CANCELLED", "DONE", "FAILED", "FINISHED", "INVERT", "PREVIEW_DIR", "QUEUED", "RUNNING",
    "SAMPLE_PREVIEW", "STATES", "SWEEP", "Job", "JobStore", "StoreBusy", "SweepFolder", "SweepSpec", "Worker",
    "drawing_progress", "new_owner_token", "validate_job_id", "validate_owner", "wait_for",
]
