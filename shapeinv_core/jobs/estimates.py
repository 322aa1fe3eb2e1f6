"""How long things take here: paces measured on this server's own jobs, and what follows from them.

Two paces, each from the newest jobs that measured it:
- learning: wall seconds per step. A step's cost grows with the pixels and the timesteps per step,
  so past runs are compared in seconds per (64 px square x timestep) and scaled to the asked run.
  A run of fewer than `MIN_TIMED_STEPS` steps is no measurement: its first step also carries the
  run's setting up (inputs read, the photo encoded), most of its time when it has one step.
- drawing: a sweep's pictures after its steps, in seconds per (64 px square x sampling step) of
  each image drawn, from the sweeps that drew some (`JobStore.update_drawing`).
Nothing is guessed without a measurement: before one the estimates are None and the page says so.
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import dataclass
from pathlib import Path

from ..config import InversionConfig, load_json
from ..files.runs import RunFolder
from .store import CANCELLED, DONE, FAILED, QUEUED, RUNNING, SWEEP, Job, JobStore, SweepFolder, SweepSpec

SAMPLE_JOBS = 20  # the newest timed jobs a measurement uses
MIN_TIMED_STEPS = 5  # fewer timed steps than this: mostly the run's setting up, not its pace


def _units(config: InversionConfig, concepts: int = 1) -> float:
    """The work of one step relative to one 64 px timestep of one concept."""
    return (config.resolution / 64) ** 2 * config.batch_size * concepts


def _image_units(resolution: int, sample_steps: int) -> float:
    """The work of drawing one image relative to one 64 px sampling step."""
    return (resolution / 64) ** 2 * sample_steps


def sweep_images(spec: SweepSpec) -> int:
    """How many pictures a sweep draws after its steps: every weight, seed, prompt and image per prompt."""
    return len(spec.weights) * len(spec.seeds or [spec.generation.seed]) * len(spec.prompts) \
        * spec.generation.num_images


@dataclass(frozen=True)
class Work:
    """What a job asks of the server: step units per step, and for a sweep the pictures it draws after."""

    step_units: float
    images: int = 0
    image_units: float = 0.0  # per picture


@functools.lru_cache(maxsize=4096)
def _folder_work(folder: Path, sweep: bool) -> Work:
    """A job folder's work, read once: the settings it depends on (resolution, timesteps per step, weights,
    prompts) never change for a folder, and the estimates are asked for on each status poll of a queued job."""
    if sweep:
        spec = SweepFolder(folder).spec()
        return Work(_units(spec.base, len(spec.weights)), sweep_images(spec),
                    _image_units(spec.base.resolution, spec.generation.steps))
    return Work(_units(load_json(InversionConfig, RunFolder(folder).config_path)))


def _job_work(store: JobStore, job: Job) -> Work | None:
    try:
        return _folder_work(store.job_dir(job.id), job.kind == SWEEP)
    except Exception:  # a folder deleted by retention or half written: no measurement from it (and none cached)
        return None


def seconds_per_unit(store: JobStore) -> tuple[float | None, int]:
    """(median seconds per step unit over the newest timed jobs, how many jobs that is)."""
    samples = []
    # The newest few times the sample count, since jobs stopped before their first steps carry no timing.
    for job in store.newest(DONE, FAILED, CANCELLED, RUNNING, limit=4 * SAMPLE_JOBS):
        steps = job.step - job.first_step
        if steps < MIN_TIMED_STEPS or job.run_seconds <= 0:
            continue
        work = _job_work(store, job)
        if work:
            samples.append(job.run_seconds / steps / work.step_units)
        if len(samples) >= SAMPLE_JOBS:
            break
    return (statistics.median(samples), len(samples)) if samples else (None, 0)


def seconds_per_image_unit(store: JobStore) -> tuple[float | None, int]:
    """(median seconds per image unit over the newest sweeps that drew pictures, how many sweeps that is)."""
    samples = []
    for job in store.newest(DONE, FAILED, CANCELLED, RUNNING, limit=4 * SAMPLE_JOBS):
        if job.kind != SWEEP or job.drawn < 1 or job.draw_seconds <= 0:
            continue
        work = _job_work(store, job)
        if work and work.image_units:
            samples.append(job.draw_seconds / job.drawn / work.image_units)
        if len(samples) >= SAMPLE_JOBS:
            break
    return (statistics.median(samples), len(samples)) if samples else (None, 0)


def run_seconds(store: JobStore, config: InversionConfig, concepts: int = 1) -> tuple[float | None, int]:
    """(estimated seconds of stepping for a run with `config`, number of measured jobs behind it)."""
    per_unit, count = seconds_per_unit(store)
    if per_unit is None:
        return None, 0
    return per_unit * _units(config, concepts) * config.total_steps(), count


def drawing_seconds(store: JobStore, resolution: int, sample_steps: int, images: int) -> tuple[float | None, int]:
    """(estimated seconds to draw `images` pictures of a sweep, number of measured sweeps behind it)."""
    per_unit, count = seconds_per_image_unit(store)
    if per_unit is None:
        return None, 0
    return per_unit * _image_units(resolution, sample_steps) * images, count


def _drawing_left(job: Job, work: Work, per_image_unit: float | None) -> float | None:
    """Seconds a job still spends drawing pictures after its steps: none for a single run; a running sweep that
    is drawing at its own pace, any other sweep at the measured one (None without a measurement)."""
    if not work.images:
        return 0.0
    drawn = job.drawn if job.status == RUNNING else 0  # a queued sweep's count is from an earlier run: it redraws
    left = max(work.images - drawn, 0)
    if drawn >= 1 and job.draw_seconds > 0:
        return job.draw_seconds / drawn * left
    return None if per_image_unit is None else per_image_unit * work.image_units * left


def seconds_until_start(store: JobStore, job_id: str) -> float | None:
    """Seconds until a queued job starts: what is left of the running jobs plus the whole of those ahead, their
    steps and the pictures sweeps draw after them. None while any of it has no measured pace."""
    job = store.get(job_id)
    if job.status != QUEUED:
        return None
    per_unit, _ = seconds_per_unit(store)
    if per_unit is None:
        return None
    per_image_unit, _ = seconds_per_image_unit(store)
    total = 0.0
    for other in store.list(RUNNING, QUEUED):
        if other.status == QUEUED and other.seq >= job.seq:
            continue
        work = _job_work(store, other)
        if work is None:
            continue
        drawing = _drawing_left(other, work, per_image_unit)
        if drawing is None:
            return None  # a sweep ahead draws for a time nothing has measured yet: not guessed as 0
        left = other.remaining_seconds() if other.status == RUNNING else None
        total += (left if left is not None else per_unit * work.step_units * max(other.total_steps - other.step, 0))
        total += drawing
    return total
