"""How long things take here (shapeinv_core.jobs.estimates) and what the page says of it, on made-up timings.

The store is fed progress as a worker would report it, so the numbers are exact: no model runs.
"""

from __future__ import annotations

import pytest

from app.backend import Backend
from app.handlers import Handlers
from shapeinv_core.config import GenerationConfig
from shapeinv_core.jobs import DONE, JobStore, SweepSpec
from shapeinv_core.jobs.estimates import run_seconds, seconds_until_start
from tests.helpers import chair_like, small_config

PROMPT = "a red chair in the shape of *s"


def timed_job(store: JobStore, steps: int, seconds_per_step: float, **settings) -> str:
    """A finished job of `steps` steps, each taking `seconds_per_step` (64 px, 2 timesteps: 2 step units)."""
    job = store.create(*chair_like(), small_config(steps=steps, **settings))
    store.claim_next()
    for step in range(1, steps + 1):
        store.update_progress(job.id, step, steps, seconds_per_step, 1.0, 1.0, 0.1)
    store.finish(job.id, DONE)
    return job.id


def sweep_spec(steps: int = 4, sample_steps: int = 2, images: int = 2) -> SweepSpec:
    """Two weights, one prompt, `images` per prompt: 2 x `images` pictures of `sample_steps` steps at 64 px."""
    return SweepSpec(small_config(steps=steps), [0.0, 0.2], [PROMPT],
                     GenerationConfig(steps=sample_steps, num_images=images))


def stepped_sweep(store: JobStore, spec: SweepSpec, seconds_per_step: float = 0.5) -> str:
    """A sweep that has run all its steps and is about to draw its pictures."""
    sweep = store.create_sweep(*chair_like(), spec)
    store.claim_next()
    for step in range(1, spec.base.steps + 1):
        store.update_progress(sweep.id, step, spec.base.steps, seconds_per_step, 1.0, 1.0, 0.1)
    return sweep.id


@pytest.fixture()
def store(tmp_path):
    return JobStore(tmp_path)


def test_a_run_of_very_few_steps_is_no_measurement_of_this_servers_step_time(store):
    """Its first step carries the run's setting up (and a sweep's first, once, the CLIP model's loading)."""
    spec = sweep_spec(steps=1)
    short = stepped_sweep(store, spec, seconds_per_step=30.0)
    store.finish(short, DONE)
    timed_job(store, steps=2, seconds_per_step=20.0)
    assert run_seconds(store, small_config()) == (None, 0), "1- and 2-step runs set no pace"
    timed_job(store, steps=5, seconds_per_step=0.5)
    assert run_seconds(store, small_config(steps=10)) == (pytest.approx(0.5 * 10), 1)


def test_the_wait_behind_a_sweep_counts_its_drawing_at_the_pace_sweeps_drew(store):
    timed_job(store, steps=5, seconds_per_step=0.5)  # 0.25 s per step unit
    ahead = stepped_sweep(store, sweep_spec())  # learned; it now draws 4 pictures
    waiting = store.create(*chair_like(), small_config(steps=4))
    assert seconds_until_start(store, waiting.id) is None, "no sweep has drawn here yet: not guessed as 0"

    store.update_drawing(ahead, 1, 3.0)  # its first picture took 3 s: 3 more to go at its own pace
    assert seconds_until_start(store, waiting.id) == pytest.approx(9.0)
    store.update_drawing(ahead, 4, 16.0)
    store.finish(ahead, DONE)  # 16 s for 4 pictures of 2 sampling steps at 64 px: 2 s per image unit

    queued_sweep = store.create_sweep(*chair_like(), sweep_spec())
    behind = store.create(*chair_like(), small_config(steps=4))
    learning = 0.25 * 4 * 4  # 4 steps of 2 concepts x 2 timesteps
    drawing = 2.0 * 2 * 4  # 4 pictures of 2 sampling steps
    # `waiting` (4 steps of 2 units) and the queued sweep are ahead of `behind`.
    assert seconds_until_start(store, behind.id) == pytest.approx(0.25 * 2 * 4 + learning + drawing)
    assert seconds_until_start(store, queued_sweep.id) == pytest.approx(0.25 * 2 * 4)


@pytest.fixture()
def handlers(tmp_path):
    backend = Backend(tmp_path / "data", model="tiny", device="cpu", clip_model=None)  # not started: no model
    yield Handlers(backend)
    backend.stop()


def test_a_sweeps_duration_counts_its_drawing_and_very_few_steps_are_said_to_draw_alike(handlers):
    store = handlers.backend.store
    form = {"weights": "0, 0.2", "steps": 10, "resolution": 64, "batch_size": 2, "prompts": f"{PROMPT}\n\n{PROMPT}",
            "images": 1, "sample_steps": 2}
    assert handlers.sweep_duration(**form).startswith("Duration: no run has been timed")

    timed_job(store, steps=5, seconds_per_step=0.5)
    line = handlers.sweep_duration(**form)
    assert "about 0:10 of learning at this server's pace" in line, line  # 10 steps x 4 units x 0.25 s
    assert "plus drawing its 4 pictures, which no sweep has timed on this server yet" in line, line

    sweep = stepped_sweep(store, sweep_spec())
    store.update_drawing(sweep, 4, 16.0)  # 2 s per image unit
    store.finish(sweep, DONE)
    line = handlers.sweep_duration(**form)
    assert "about 0:26 of learning and drawing" in line, line  # 10 s learning + 4 pictures x 2 steps x 2 s
    assert "1 sweep that drew" in line and "cannot differ" not in line, line

    line = handlers.sweep_duration(**{**form, "steps": 1})
    assert "With 1 step, each weight's *s has moved only a little" in line, line
    assert "the weights cannot differ yet" in line and "at least 10 steps" in line, line
    assert "--" not in line and "steps=" not in line, "the page's words"
    assert handlers.sweep_duration(**{**form, "prompts": " \n"}).startswith("No prompts yet")
