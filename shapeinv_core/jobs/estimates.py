"""How long things take here: seconds per step measured on this server's finished jobs, and what follows from it.

A step's cost grows with the pixels and the timesteps per step, so past runs are compared in
seconds per (64 px square x timestep) and scaled to the asked run. Nothing is guessed without a
measurement: before the first timed job the estimates are None and the page says so.
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path

from ..config import InversionConfig, load_json
from ..runs import RunFolder
from .store import CANCELLED, DONE, FAILED, QUEUED, RUNNING, SWEEP, Job, JobStore, SweepFolder

SAMPLE_JOBS = 20  # the newest timed jobs a measurement uses


def _units(config: InversionConfig, concepts: int = 1) -> float:
    """The work of one step relative to one 64 px timestep of one concept."""
    return (config.resolution / 64) ** 2 * config.batch_size * concepts


@functools.lru_cache(maxsize=4096)
def _folder_units(folder: Path, sweep: bool) -> float:
    """A job folder's step units, read once: the settings they depend on (resolution, timesteps per step,
    weights) never change for a folder, and the estimates are asked for on each status poll of a queued job."""
    if sweep:
        spec = SweepFolder(folder).spec()
        return _units(spec.base, len(spec.weights))
    return _units(load_json(InversionConfig, RunFolder(folder).config_path))


def _job_units(store: JobStore, job: Job) -> float | None:
    try:
        return _folder_units(store.job_dir(job.id), job.kind == SWEEP)
    except Exception:  # a folder deleted by retention or half written: no measurement from it (and none cached)
        return None


def seconds_per_unit(store: JobStore) -> tuple[float | None, int]:
    """(median seconds per step unit over the newest timed jobs, how many jobs that is)."""
    samples = []
    # The newest few times the sample count, since jobs stopped before their first step carry no timing.
    for job in store.newest(DONE, FAILED, CANCELLED, RUNNING, limit=4 * SAMPLE_JOBS):
        steps = job.step - job.first_step
        if steps < 1 or job.run_seconds <= 0:
            continue
        units = _job_units(store, job)
        if units:
            samples.append(job.run_seconds / steps / units)
        if len(samples) >= SAMPLE_JOBS:
            break
    return (statistics.median(samples), len(samples)) if samples else (None, 0)


def run_seconds(store: JobStore, config: InversionConfig, concepts: int = 1) -> tuple[float | None, int]:
    """(estimated seconds of stepping for a run with `config`, number of measured jobs behind it)."""
    per_unit, count = seconds_per_unit(store)
    if per_unit is None:
        return None, 0
    steps = config.steps + (config.lora_steps if config.tune == "lora" else 0)
    return per_unit * _units(config, concepts) * steps, count


def seconds_until_start(store: JobStore, job_id: str) -> float | None:
    """Seconds until a queued job starts: what is left of the running jobs plus the whole of those ahead."""
    job = store.get(job_id)
    if job.status != QUEUED:
        return None
    per_unit, _ = seconds_per_unit(store)
    if per_unit is None:
        return None
    total = 0.0
    for other in store.list(RUNNING, QUEUED):
        if other.status == QUEUED and other.seq >= job.seq:
            continue
        units = _job_units(store, other)
        if units is None:
            continue
        if other.status == RUNNING and other.kind == SWEEP and other.step >= other.total_steps:
            return None  # a sweep drawing its pictures: how long that takes is not measured, so not guessed as 0
        left = other.remaining_seconds() if other.status == RUNNING else None
        total += left if left is not None else per_unit * units * max(other.total_steps - other.step, 0)
    return total

