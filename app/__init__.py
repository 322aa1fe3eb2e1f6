"""The ShapeInversion web app (Gradio): layout and event wiring over `shapeinv_core`.

Run it with `python -m app` (see `app.__main__`); build it in Python with
`app.__main__.create(...)` and `app.ui.build_demo(backend)`.
"""
