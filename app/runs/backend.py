"""My runs, without Gradio: a browser's jobs listed, one restored as it was started, one shared read-only.

A part of `app.backend.Backend` (its store). Restoring reads a job's settings (`LearnBackend.settings`),
its edits' prompts and captions (`app.edit.backend`) and a sweep's learned concepts
(`SweepBackend.sweep_concepts`); a share link shows what restoring shows, and the concept's files.
"""

from __future__ import annotations

import time

from shapeinv_core.errors import InputError
from shapeinv_core.generation.sweep import run_folder_name
from shapeinv_core.jobs import DONE, PREVIEW_DIR, QUEUED, RUNNING, SAMPLE_PREVIEW, SWEEP, Job

from ..edit.backend import edit_caption, edit_prompt
from ..sweeps.backend import nearest_research_weight


class RunsBackend:
    """The list of `owner`'s runs, one run restored, and read-only share links."""

    def runs(self, owner: str | None) -> list[dict]:
        """`owner`'s jobs and sweeps, newest first: id, kind, status, weights, steps, created, seconds (how long it
        ran; None before it started), thumbnail path (its result: a job's latest preview, a sweep's grid; else
        the photo)."""
        rows = []
        for job in self.store.owned_jobs(owner):
            try:
                config, spec = self.settings(job)
            except Exception:  # a folder being deleted by retention: leave it out
                continue
            folder = self.store.job_dir(job.id)
            result = folder / ("grid.png" if spec else f"{PREVIEW_DIR}/{SAMPLE_PREVIEW}")
            thumbnail = result if result.is_file() else folder / "input.png"
            seconds = None if job.started is None else (job.finished or time.time()) - job.started
            rows.append({"id": job.id, "kind": job.kind, "status": job.status,
                         "weights": spec.weights if spec else [config.mask_weight], "steps": config.steps,
                         "created": job.created, "seconds": seconds,
                         "thumbnail": thumbnail if thumbnail.is_file() else None})
        return rows

    def restore(self, job_id: str, owner: str | None) -> dict:
        """What a page needs to show a job as it was started: photo, mask, settings, and the edits made with it.

        -> {kind, image, mask (paths), config (InversionConfig), spec (SweepSpec or None), edits [(path, caption)],
            prompts (the edits' prompts, each once), concept (what the Edit section edits with: the job, or the
            sweep's learned concept nearest weight 0.1; None before a sweep has one)}.
        """
        return self._restored(self.store.owned(job_id, owner))

    def _restored(self, job: Job) -> dict:
        """`restore` of a job already read through its owner's (or its share link's) secret."""
        folder = self.store.job_dir(job.id)
        config, spec = self.settings(job)
        edit_dirs = [folder / run_folder_name(weight) / "edits" for weight in spec.weights] if spec else \
            [folder / "edits"]
        edits = sorted((path for directory in edit_dirs if directory.is_dir() for path in directory.glob("*.png")),
                       key=lambda path: path.stat().st_mtime)
        prompts = [prompt for path in edits if (prompt := edit_prompt(path))]
        return {"kind": job.kind, "image": folder / "input.png", "mask": folder / "mask.png", "config": config,
                "spec": spec, "edits": [(path, edit_caption(path)) for path in edits],
                "prompts": list(dict.fromkeys(prompts)),  # each once, in the gallery's order
                "concept": nearest_research_weight(self.sweep_concepts(job, spec)) if spec else job.id}

    def share(self, job_id: str, owner: str | None) -> str:
        """A read-only link's secret for one of `owner`'s jobs; a new one each time, and the last stops working."""
        job = self.store.owned(job_id, owner)
        if job.kind == SWEEP:
            raise InputError("A sweep cannot be shared by a link yet; download its grid, plot and concepts under "
                             "Compare weights and send those.")
        return self.store.share(job.id)

    def unshare(self, job_id: str, owner: str | None) -> None:
        """The job's read-only link stops working: it then says that sharing has ended."""
        self.store.unshare(self.store.owned(job_id, owner).id)

    def shared(self, token: str | None) -> dict:
        """What a share link shows, and nothing more: one job's state, its photo, mask and edits, its concept.

        -> {line (the job's state for the visitor), restored (as `restore`), downloads (the concept's files)}.
        """
        job = self.store.shared(token)
        return {"line": self.describe_shared(job), "restored": self._restored(job),
                "downloads": self.concept_files(job)}

    @staticmethod
    def describe_shared(job: Job) -> str:
        """One line for the visitor of a share link: where the run stands and what the page shows of it."""
        state = {QUEUED: "waiting to start", RUNNING: f"learning, step {job.step} of {job.total_steps}",
                 DONE: f"done ({job.total_steps} steps)"}.get(job.status, f"stopped at step {job.step}")
        return (f"A run shared with you, to look at: {state}. Its photo, mask, concept and the edits drawn so far "
                "are on this page; reload it to see newer ones.")
