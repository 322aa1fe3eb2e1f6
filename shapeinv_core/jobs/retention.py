"""Bounded disk: old finished jobs, edits and exports are deleted; a budget refuses new jobs before the disk fills.

Checkpoints are bounded where they are written (`RunFolder.keep_checkpoints`); this module bounds
everything else in the data folder. Running and queued jobs are never touched.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DiskFullError
from .store import JobStore

log = logging.getLogger(__name__)

DEFAULT_KEEP_DAYS = 7.0
DAY = 86400.0


@dataclass
class Cleaned:
    """What one `clean_data_folder` pass deleted."""

    jobs: list[str] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)  # edits and exports (files or folders)


def folder_bytes(path: Path) -> int:
    """Bytes in the files under `path` (0 if it is missing); files vanishing meanwhile are skipped."""
    total = 0
    for item in path.rglob("*") if path.is_dir() else []:
        try:
            if item.is_file():
                total += item.stat().st_size
        except OSError:
            continue
    return total


def check_budget(data_dir: Path, max_gb: float | None) -> None:
    """Refuse new work (`DiskFullError`) when the data folder already uses `max_gb` gigabytes or more."""
    if not max_gb:
        return
    used = folder_bytes(data_dir) / 1e9
    if used >= max_gb:
        raise DiskFullError(f"The server's data folder holds {used:.3g} GB, its budget is {max_gb:g} GB, so new jobs "
                            "are refused for now. Try again later: finished jobs are deleted after a few days.")


def clean_data_folder(store: JobStore, keep_days: float = DEFAULT_KEEP_DAYS, folders: tuple[Path, ...] = (),
                      now: float | None = None) -> Cleaned:
    """Delete finished jobs that ended more than `keep_days` ago, and older edits and exports.

    `folders`: flat folders of edits or exports (each entry a file or a folder, aged by its mtime).
    Edit images inside a kept job's folder (`edits/`) are aged the same way.
    """
    now = time.time() if now is None else now
    cutoff = now - keep_days * DAY
    cleaned = Cleaned()
    for job in store.finished_before(cutoff):
        store.delete(job.id)
        cleaned.jobs.append(job.id)
    old_edits = [path for job_dir in store.jobs_dir.iterdir() if job_dir.is_dir()
                 for path in _children(job_dir / "edits")]
    for path in [*old_edits, *(path for folder in folders for path in _children(folder))]:
        if _mtime(path) < cutoff:
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            cleaned.paths.append(path)
    if cleaned.jobs or cleaned.paths:
        log.info("deleted %d old jobs and %d old edits/exports", len(cleaned.jobs), len(cleaned.paths))
    return cleaned


def _children(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.is_dir() else []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")
