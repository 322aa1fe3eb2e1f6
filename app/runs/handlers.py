"""My runs and sharing: this browser's runs as thumbnails, one opened and put back on the page, a read-only link.

Component values in, `RunsBackend` calls, component values out. A restored job fills the whole
page (photo, mask, settings, a sweep's fields, its edits and their prompts), in the order of
`RESTORED_SETTINGS` and `ui.build_demo`'s `restored_outputs`.
"""

from __future__ import annotations

import time

import gradio as gr
from PIL import Image

from shapeinv_core.errors import InputError, ShapeInvError
from shapeinv_core.jobs import SWEEP, validate_job_id

from ..display import format_duration
from ..errors import user_errors
from ..values import text


def _thumbnail(path, side: int = 160) -> Image.Image:
    """A small, whole picture of a run for My runs (a 512 px photo in a small tile showed a slice of it)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
    return image


# The inversion settings a restored job puts back on the form, in the order of the form's fields.
RESTORED_SETTINGS = ("mask_weight", "steps", "class_word", "initializer", "num_vectors", "learning_rate",
                     "batch_size", "resolution", "seed", "map_resolution", "attention_layers", "map_norm", "init_reg",
                     "checkpoint_every", "attention_res", "mask_form", "background_weight", "tune", "lora_rank",
                     "lora_steps", "lora_lr", "name", "preview_prompt", "appearance")


class RunsHandlers:
    """Handlers of My runs, restoring a run and sharing it; a part of `app.handlers.Handlers` (its `backend`)."""

    def my_runs(self, owner: str | None = None):
        """This browser's jobs and sweeps, newest first -> (gallery of (thumbnail, caption), their ids)."""
        try:
            rows = self.backend.runs(owner)
        except ShapeInvError:
            rows = []
        items = []
        for row in rows:
            weights = ", ".join(f"{w:g}" for w in row["weights"])
            what = f"sweep · weights {weights}" if row["kind"] == SWEEP else f"job · weight {weights}"
            took = f" · {format_duration(row['seconds'])}" if row["seconds"] is not None else ""
            when = time.strftime("%d %b %H:%M", time.localtime(row["created"]))
            items.append((self.backend.picture(_thumbnail(row["thumbnail"]), "run") if row["thumbnail"] else None,
                          f"{what} · {row['status']} · {row['steps']} steps{took} · {when}"))
        note = "" if rows else "No runs from this browser yet: the jobs you start appear here."
        return [item for item in items if item[0]], [row["id"] for row in rows if row["thumbnail"]], note

    def open_run(self, ids: list[str] | None, owner: str | None, evt: gr.SelectData):
        """A click in My runs shows that job (a sweep in its tab) -> (job id, timer, sweep id, timer, tab, opened)."""
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        job_id = (ids or [])[index] if 0 <= index < len(ids or []) else ""
        try:
            job = self.backend.store.owned(validate_job_id(job_id), owner)
        except ShapeInvError:
            return (gr.skip(),) * 6
        if job.kind == SWEEP:
            return gr.skip(), gr.skip(), job.id, gr.Timer(active=True), gr.Tabs(selected="compare"), job.id
        return job.id, gr.Timer(active=True), gr.skip(), gr.skip(), gr.Tabs(selected="learn"), job.id

    def restore(self, job_id: str | None, owner: str | None = None):
        """An opened job's photo, mask, settings and edits back on the page (in the order of `ui.build_demo`'s
        `restored_outputs`).

        The first output is the page's `restored` flag: the change event of the restored photo (each restore
        serves a fresh copy, so the event always fires) keeps the job's own mask and then clears the flag.
        """
        skip = (gr.skip(),) * self.restore_count
        if not job_id or not job_id.strip():
            return skip
        try:
            restored = self.backend.restore(job_id.strip(), owner)
        except ShapeInvError:
            return skip
        return self._restored_outputs(restored, restored["concept"] or gr.skip())

    def _restored_outputs(self, restored: dict, concept) -> tuple:
        """`restore`'s outputs for what `Backend.restore` read; `concept` goes to the Edit section's concept box."""
        picture = self.backend.read_image(restored["image"])
        mask = self.backend.read_mask(restored["mask"], picture)
        config, spec = restored["config"], restored["spec"]
        own = ("mask_weight", "steps", "name", "preview_prompt")  # a sweep's weights, steps, names are its own
        settings = [gr.skip() if spec and name in own else getattr(config, name) for name in RESTORED_SETTINGS]
        if spec:
            sweep_fields = [", ".join(f"{w:g}" for w in spec.weights), "\n".join(spec.prompts), spec.base.steps,
                            spec.generation.num_images, spec.generation.steps, spec.generation.guidance]
        else:
            sweep_fields = [gr.skip()] * 6
        gallery = [(self.backend.outbox(path), caption) for path, caption in restored["edits"]]
        prompts = "\n".join(restored["prompts"]) or gr.skip()  # the prompts behind the gallery, to draw again
        return (True, self.backend.outbox(restored["image"]), self.backend.overlay(picture, mask),
                self.backend.editor_value(picture, mask), mask, "The mask this job learned from.", *settings,
                *sweep_fields, gallery or None, prompts, concept)

    restore_count = 6 + len(RESTORED_SETTINGS) + 6 + 3

    @user_errors
    def share_job(self, job_id: str, owner: str | None = None):
        """A read-only link for the shown job -> (its secret, a note). Whoever opens the page with `?share=SECRET`
        sees the job's photo, mask, concept and edits, and can change nothing. A new link replaces the last."""
        token = self.backend.share(self._shown_job(job_id, "share"), owner)
        return token, ("Anyone with this link sees this run's photo, mask, concept and edits, and can change nothing. "
                       "'Share' again makes a new link and the old one stops working; 'Stop sharing' ends it.")

    @user_errors
    def unshare_job(self, job_id: str, owner: str | None = None):
        """The shown job's read-only link stops working -> (secret, link, note), emptied but for the note."""
        self.backend.unshare(self._shown_job(job_id, "stop sharing"), owner)
        return "", "", "Not shared: the last link now says that sharing has ended."

    @staticmethod
    def _shown_job(job_id: str | None, action: str) -> str:
        if not text(job_id, "Job id").strip():
            raise InputError(f"No job is shown to {action}: start or open one first (a sweep cannot be shared).")
        return validate_job_id(job_id)

    @staticmethod
    def share_controls(status: dict | None):
        """The share buttons show with a single job (not a sweep, not on a visitor's page)."""
        return gr.Row(visible=bool(status and status.get("id") and status.get("kind") != SWEEP))

    @staticmethod
    def forget_share():
        """Another job is shown: the last job's link and note leave the page (the link itself keeps working)."""
        return "", "", ""

    def open_shared(self, share: str | None):
        """`?share=SECRET`: the shared job's photo, mask, settings and edits, its state and its concept to download
        (the `restore` outputs, then headline and downloads); the Edit concept stays empty: nothing is drawn with
        it here. A wrong or ended link gets one message in the headline."""
        skip = (gr.skip(),) * (self.restore_count + 2)
        if not share:
            return skip
        try:
            view = self.backend.shared(share)
        except ShapeInvError as error:
            return *skip[:-2], str(error), None
        downloads = [self.backend.outbox(path) for path in view["downloads"]] or None
        return *self._restored_outputs(view["restored"], gr.skip()), view["line"], downloads
