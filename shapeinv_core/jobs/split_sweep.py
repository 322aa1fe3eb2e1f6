"""One sweep job learned on several actors at once: its weights split into parts, the results joined.

Each weight's `*s` is independent of the others (they only share batched UNet passes), so a
sweep over weights [0, 0.1, 0.5, 1] can run as two sweeps over [0, 0.1] and [0.5, 1] on two
actors, and the joined result is the one-actor result within float tolerance (batches of
another size sum in another order). Each part is an ordinary sweep job for its actor: the same
folder with `sweep.json` holding only its weights and only its weights' run folders. What the
parts send back is joined here: their weight folders are applied as they come; the job's
progress is the slowest part's step; its loss terms are all parts' in the sweep's weight order;
`metrics.csv`, `grid.png` and `tradeoff.png` are written once every part is done, by the same
`sweep.write_report` a one-actor sweep uses.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation.report import read_metrics_csv
from ..generation.generate import check_prompts
from ..generation.sweep import weight_of_folder, write_report
from .mirror import FolderChanges, apply_changes
from .store import CANCELLED, DONE, FAILED, SWEEP_FILE, Job, JobStore

REPORT_FILES = ("metrics.csv", "grid.png", "tradeoff.png")  # a part's own report: joined by the head instead


def split_weights(weights: list[float], parts: int) -> list[list[float]]:
    """Consecutive groups of nearly equal size, in order: [0, .1, .5] in 2 parts -> [[0, .1], [.5]]."""
    parts = max(1, min(parts, len(weights)))
    size, extra = divmod(len(weights), parts)
    groups, start = [], 0
    for index in range(parts):
        end = start + size + (index < extra)
        groups.append(weights[start:end])
        start = end
    return groups


@dataclass
class _Part:
    weights: list[float]
    progress: tuple | None = None  # the latest (step, total_steps, seconds, loss, diffusion_loss, mask_loss)
    terms: list[dict] = field(default_factory=list)
    note: str | None = None
    metrics: bytes | None = None  # the part's metrics.csv once it is written
    outcome: tuple | None = None  # (status, error) from `finish`; None after `requeue` or before either
    ended: bool = False  # the actor let go of the part (set by the engine, which sees every event)
    died: bool = False  # the actor died


class SplitSweep:
    """The head's side of one sweep job split over `parts` actors (at most one per weight)."""

    def __init__(self, store: JobStore, job: Job, parts: int):
        self.store, self.job = store, job
        self.folder = store.job_dir(job.id)
        self.spec = store.sweep_folder(job.id).spec()
        self.parts = [_Part(weights) for weights in split_weights(self.spec.weights, parts)]

    def files_for(self, index: int, files: dict[str, bytes]) -> dict[str, bytes]:
        """The job folder as part `index` sees it: the inputs, its weights' folders, `sweep.json` with its weights."""
        weights = self.parts[index].weights
        chosen = {}
        for name, data in files.items():
            top, _, below = name.partition("/")
            if (not below and top not in REPORT_FILES) or (below and weight_of_folder(top) in weights):
                chosen[name] = data
        chosen[SWEEP_FILE] = dataclasses.replace(self.spec, weights=weights).to_json().encode()
        return chosen

    @property
    def failed(self) -> bool:
        return any(part.outcome and part.outcome[0] == FAILED for part in self.parts)

    def on_event(self, index: int, name: str, args: tuple, changes: FolderChanges) -> None:
        """Apply one part's event: its weight folders' files at once, its state into the job's."""
        part = self.parts[index]
        if changes:
            part.metrics = changes.written.pop("metrics.csv", part.metrics)
            for report in (*REPORT_FILES, SWEEP_FILE):
                changes.written.pop(report, None)
            changes.deleted = [path for path in changes.deleted if path not in (*REPORT_FILES, SWEEP_FILE)]
            apply_changes(self.folder, changes)
        if name == "update_progress":
            part.progress = args[1:]
            self._record_progress(part)
        elif name == "update_terms":
            part.terms = args[1]
            self.store.update_terms(self.job.id, [terms for each in self.parts for terms in each.terms])
        elif name == "update_phase" and args[1]:
            self.store.update_phase(self.job.id, args[1])
        elif name == "set_note":
            part.note = args[1]
        elif name == "finish":
            part.outcome = (args[1], args[2] if len(args) > 2 else None)

    def _record_progress(self, part: _Part) -> None:
        """The slowest part's step; the first part's losses (the sweep's first weight, as one actor reports)."""
        step = min(each.progress[0] if each.progress else 0 for each in self.parts)
        first = self.parts[0].progress or part.progress
        seconds = part.progress[2] if part is self.parts[0] else 0.0  # time counted once, not once per actor
        self.store.update_progress(self.job.id, step, part.progress[1], seconds, *first[3:6])

    def settle(self) -> None:
        """Record how the whole job ended, as the embedded worker records one sweep's end."""
        outcomes = [part.outcome for part in self.parts]
        if any(part.died for part in self.parts):
            self.store.requeue(self.job.id, resumed=True)
        elif all(o and o[0] == DONE for o in outcomes):
            self._write_report()
            self.store.update_phase(self.job.id, None)
            self.store.set_note(self.job.id, next((part.note for part in self.parts if part.note), None))
            self.store.finish(self.job.id, DONE)
        elif self.failed:
            self.store.finish(self.job.id, *next(o for o in outcomes if o and o[0] == FAILED))
        elif any(o and o[0] == CANCELLED for o in outcomes):
            self.store.finish(self.job.id, *next(o for o in outcomes if o and o[0] == CANCELLED))
        else:  # the head is stopping: every part checkpointed, the next start resumes the sweep
            self.store.requeue(self.job.id)

    def _write_report(self) -> None:
        rows = []
        with tempfile.TemporaryDirectory(prefix="shapeinv-parts-") as scratch:
            for index, part in enumerate(self.parts):
                path = Path(scratch) / f"metrics-{index}.csv"
                path.write_bytes(part.metrics or b"")
                rows += read_metrics_csv(path)
        prompts = check_prompts(list(self.spec.prompts), self.spec.base.placeholder)
        write_report(self.folder, rows, self.spec.weights, prompts)
