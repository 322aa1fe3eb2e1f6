"""Event handlers: turn component values into `Backend` calls and results into component values.

Each public method is one named API endpoint (its argument names are the client's parameter
names). A `ShapeInvError` becomes a `gr.Error` with the same message (`app.errors.user_errors`), so
the page and the client show the fix instead of a traceback; anything unexpected is logged and
answered with a plain sentence, never the exception's text. Every endpoint about a job takes the
caller's `owner` token (the page keeps one per browser; the start endpoints return a new one to
clients that sent none).

`Handlers` is made of the features' handlers, each beside its backend calls:
`app.mask.handlers`, `app.learn.handlers`, `app.sweeps.handlers` (which builds on learning's),
`app.edit.handlers` and `app.runs.handlers`. What belongs to the whole page is here: what the
address bar asks for when the page loads, and the model's status line.
"""

from __future__ import annotations

import gradio as gr

from shapeinv_core.errors import ShapeInvError
from shapeinv_core.jobs import SWEEP, validate_job_id

from .backend import Backend
from .edit.handlers import EditHandlers
from .errors import MODEL_UNAVAILABLE
from .learn.handlers import LearnHandlers
from .mask.handlers import MaskHandlers
from .runs.handlers import RunsHandlers
from .sweeps.handlers import SweepHandlers


class Handlers(MaskHandlers, SweepHandlers, LearnHandlers, EditHandlers, RunsHandlers):
    """Every handler of the page, over one `Backend`."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def on_load(self, owner: str, request: gr.Request):
        """`?job=ID` shows that job (a sweep in its own tab) and keeps polling it; a bad id gets a message.

        Only this browser's own jobs (its `owner` secret) are shown; another's answers like a missing one.
        `?share=SECRET` is passed on to `open_shared`.
        -> (job id, its timer, headline, sweep id, its timer, selected tab, the id to restore on the form, share).
        """
        job_id = (request.query_params.get("job") or "").strip() if request else ""
        share = (request.query_params.get("share") or "").strip() if request else ""
        nothing = ("", gr.Timer(active=False))
        if not job_id:
            return *nothing, "", *nothing, gr.skip(), "", share
        try:
            job = self.backend.store.owned(validate_job_id(job_id), owner)
        except ShapeInvError as error:
            return *nothing, str(error), *nothing, gr.skip(), "", share
        if job.kind == SWEEP:
            return *nothing, "", job.id, gr.Timer(active=True), gr.Tabs(selected="compare"), job.id, share
        return job.id, gr.Timer(active=True), "", *nothing, gr.skip(), job.id, share

    def model_status(self):
        """(status line, timer): polled until the model is ready or has failed."""
        worker = self.backend.worker
        line = f"**{MODEL_UNAVAILABLE}**" if worker.state == "failed" else worker.status_line()
        return line, gr.Timer(active=worker.state == "loading")
