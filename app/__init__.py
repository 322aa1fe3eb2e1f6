"""The ShapeInversion web app (Gradio): layout and event wiring over `shapeinv_core`.

Run it with `python -m app` (see `app.__main__`); build it in Python with
`app.__main__.create(...)` and `app.ui.build_demo(backend)`.

One folder per part of the page, each with its `handlers` (component values in and out) and its
`backend` (the same work in plain Python, no Gradio):

- `mask/`: the photo and its mask;
- `learn/`: learning *s as a job (start, progress, cancel, resume, the duration estimate);
- `sweeps/`: Compare weights, one *s per mask weight;
- `edit/`: drawing with a *s, its scores, the concept's files and the run's zip;
- `runs/`: My runs, a run restored on the page, read-only share links.

`ui.py` lays out the page and wires its events to `handlers.Handlers`, which is made of the
features' handlers over one `backend.Backend` (the app's state, made of the features' calls).
Shared by all: `guard` (bad input values answered plainly), `errors` (how failures reach the
page), `values` (form and API values read), `display` (durations, queue places, tables),
`browser` (the page's JavaScript: the owner secret, job and share links) and `plots`.
"""
