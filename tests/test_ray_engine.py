"""The Ray engine on a local Ray: 2 CPU actors, the tiny model, a few steps (`pytest -m ray` runs them alone).

One Ray session and one engine serve the whole module (starting Ray and loading the model in
each actor is most of the time). Ray gets 2 CPUs, no dashboard and a small object store: the
machine is shared. Nothing is mocked: the actors are real processes that run the embedded
worker's code, and `ray.kill` really kills one.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from app.backend import Backend
from shapeinv_core.config import GenerationConfig
from shapeinv_core.evaluation.report import read_metrics_csv
from shapeinv_core.generation.sweep import sweep
from shapeinv_core.jobs import CANCELLED, DONE, QUEUED, RUNNING, JobStore, SweepSpec, wait_for
from shapeinv_core.jobs.worker import READY
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.workflow import learn
from shapeinv_core.models.loading import load_model
from tests.helpers import chair_like, small_config, tiny_folder, wait_until

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -r requirements-ray.txt (the [ray] extra)")
from shapeinv_core.jobs.ray_engine import RayEngine  # noqa: E402  (imports Ray)

pytestmark = pytest.mark.ray
LIMIT = 300.0  # seconds: generous, the machine is busy
PROMPTS = ["a photo of chair in the shape of *s", "a red chair in the shape of *s"]


@pytest.fixture(scope="module")
def inputs():
    return chair_like()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """The app's backend as `python -m app --engine ray --workers 2` builds it, on a 2-CPU local Ray."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    backend = Backend(tmp_path_factory.mktemp("ray-data"), model=str(tiny_folder()), device="cpu", engine="ray",
                      workers=2, preview_every=2, preview_steps=2, clip_model=None)
    engine = backend.worker
    assert isinstance(engine, RayEngine)
    backend.start()
    try:
        wait_until(lambda: len(engine.slots) == 2 and all(slot.state == READY for slot in engine.slots),
                   "both actors to load the model")
        yield engine
    finally:
        backend.stop()
        ray.shutdown()


@contextmanager
def one_thread():
    """As an actor with one CPU runs: the same kernels in the same order, so results can be compared exactly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def start_job(engine, inputs, config, past_step: int):
    """Queue an inversion and return it once it has done at least `past_step` steps."""
    job = engine.store.create(*inputs, config)
    engine.wake()
    wait_until(lambda: engine.store.get(job.id).step >= past_step, f"the job to reach step {past_step}")
    return job


def running_slot(engine, job_id: str):
    return next((slot for slot in engine.slots if slot.job_id == job_id), None)


def test_four_jobs_finish_on_two_actors_in_order_and_both_are_used(engine, inputs):
    store = engine.store
    jobs = [store.create(*inputs, small_config(steps=3, batch_size=1, checkpoint_every=2)) for _ in range(4)]
    engine.wake()
    finished = [wait_for(store, job.id, timeout=LIMIT) for job in jobs]
    assert [job.status for job in finished] == [DONE] * 4, [job.error for job in finished]
    assert {engine.used_actors(job.id)[0] for job in jobs} == {0, 1}, "both actors ran jobs"
    starts = [job.started for job in finished]
    assert starts == sorted(starts), "queued jobs went to free actors in the order they were queued"
    for job in jobs:  # the head wrote each run folder from what came back: the CLI's layout, complete
        run = store.run(job.id)
        assert run.has_concept() and (run.path / "attention.png").is_file()
        assert [record["step"] for record in run.read_log()] == [1, 2, 3]
        assert [step for step, _ in run.checkpoints()] == [2, 3]
        assert (run.path / "previews" / "attention.png").is_file() and (run.path / "previews" / "sample.png").is_file()
        assert store.get(job.id).step == 3 and store.get(job.id).worker is None


def test_a_sweep_splits_its_weights_over_idle_actors_and_equals_a_one_actor_sweep(engine, inputs, tmp_path):
    store = engine.store
    wait_until(lambda: all(slot.job_id is None for slot in engine.slots), "both actors to be idle")
    spec = SweepSpec(base=small_config(steps=3, batch_size=1), weights=[0.0, 0.5], prompts=PROMPTS,
                     generation=GenerationConfig(steps=2, num_images=1), mask_method="fallback")
    job = store.create_sweep(*inputs, spec)
    engine.wake()
    finished = wait_for(store, job.id, timeout=LIMIT)
    assert finished.status == DONE, finished.error
    assert sorted(engine.used_actors(job.id)) == [0, 1], "each actor learned one weight"
    assert [terms["weight"] for terms in finished.term_list()] == [0.0, 0.5]

    with one_thread():
        reference = sweep(load_model(str(tiny_folder()), device="cpu"), *inputs, spec.base, spec.weights, PROMPTS,
                          tmp_path / "one", generation=spec.generation, clip_model=None, mask_method="fallback")
    folder = store.job_dir(job.id)
    for weight in spec.weights:
        torch.testing.assert_close(Concept.load(folder / f"weight_{weight:g}").vectors,
                                   Concept.load(reference.folder / f"weight_{weight:g}").vectors, atol=1e-5, rtol=1e-4)
    rows, expected = read_metrics_csv(folder / "metrics.csv"), read_metrics_csv(reference.folder / "metrics.csv")
    assert [(r["weight"], r["prompt"], r["seed"], r["image"]) for r in rows] == \
        [(r["weight"], r["prompt"], r["seed"], r["image"]) for r in expected]
    assert [r["mask_iou"] for r in rows] == pytest.approx([r["mask_iou"] for r in expected], abs=1e-3)
    for name in ("grid.png", "tradeoff.png"):
        assert Image.open(folder / name).size == Image.open(reference.folder / name).size
    assert SweepSpec.load(folder / "sweep.json").weights == spec.weights, "the parts' settings stayed on the actors"


def test_a_killed_actor_s_job_resumes_on_the_other_and_equals_an_uninterrupted_run(engine, inputs, tmp_path):
    store = engine.store
    config = small_config(steps=40, batch_size=1, checkpoint_every=2)  # long enough to be killed mid-way anywhere
    job = start_job(engine, inputs, config, past_step=5)  # past its second checkpoint
    slot = running_slot(engine, job.id)
    first = slot.index
    ray.kill(slot.actor)

    finished = wait_for(store, job.id, timeout=LIMIT)
    assert finished.status == DONE, finished.error
    assert finished.resumes == 1, "the job was requeued once, after its actor died"
    handed = engine.used_actors(job.id)
    assert handed[0] == first and handed[1] != first, f"it resumed on the other actor ({handed})"
    run = store.run(job.id)
    assert [record["step"] for record in run.read_log()] == list(range(1, 41)), "each step logged once"

    with one_thread():
        reference = learn(load_model(str(tiny_folder()), device="cpu"), *inputs, config, tmp_path / "alone")
    assert torch.equal(Concept.load(run.path).vectors, reference.vectors), \
        "the resumed run ended exactly where an uninterrupted one ends"
    wait_until(lambda: all(slot.state == READY for slot in engine.slots), "the dead actor to be recreated")


def test_an_edit_during_two_running_jobs_returns_before_they_finish_and_cancel_reaches_the_actors(engine, inputs):
    store = engine.store
    config = small_config(steps=400, batch_size=1, checkpoint_every=50)
    jobs = [store.create(*inputs, config) for _ in range(2)]
    engine.wake()
    wait_until(lambda: all(store.get(job.id).step >= 2 for job in jobs), "both jobs to be running")
    concept = Concept(token="*s", vectors=torch.zeros(1, 32), settings=config)  # drawn at the job's 64 px
    images = engine.generate(concept, ["a red chair in the shape of *s"], GenerationConfig(steps=2, num_images=1))
    assert len(images) == 1 and np.asarray(images[0].image).std() > 0
    states = [store.get(job.id) for job in jobs]
    assert all(job.status == RUNNING and job.step < job.total_steps for job in states), \
        "the edit came back while both jobs were still learning"

    for job in jobs:
        store.cancel(job.id)
    ended = [wait_for(store, job.id, timeout=LIMIT) for job in jobs]
    assert [job.status for job in ended] == [CANCELLED, CANCELLED]
    assert all(job.step < config.steps for job in ended), "the actors stopped the jobs when asked"

    # A long edit's sampling steps reach the head while it waits (the page's progress bar).
    seen = []
    # 128 px: seconds on any CPU (the head polls 4 times a second), well inside the 300 s edit limit on a busy one.
    long_edit = GenerationConfig(steps=25, num_images=2, height=128, width=128)
    images = engine.generate(concept, ["a red chair in the shape of *s"], long_edit,
                             on_progress=lambda done, total: seen.append((done, total)))
    assert len(images) == 2
    assert seen and all(total == seen[0][1] >= 25 for _, total in seen), seen
    assert all(a <= b for (a, _), (b, _) in zip(seen, seen[1:])), "the steps only go forward"


def test_after_a_head_restart_new_actors_resume_the_running_job(engine, inputs, tmp_path):
    """Last in this module: it stops the module's engine, as stopping the app (Ctrl-C) would."""
    store = engine.store
    config = small_config(steps=40, batch_size=1, checkpoint_every=2)
    job = start_job(engine, inputs, config, past_step=3)
    engine.stop()
    assert store.get(job.id).status == QUEUED, "the stopped head put the job back in the queue"
    assert store.run(job.id).checkpoints(), "with the checkpoint its actor saved when told to stop"

    restarted = RayEngine(JobStore(store.data_dir), model=str(tiny_folder()), device="cpu", workers=1,
                          cpus_per_worker=1, preview_every=2, preview_steps=2, clip_model=None).start()
    try:
        finished = wait_for(restarted.store, job.id, timeout=LIMIT)
    finally:
        restarted.stop()
    assert finished.status == DONE, finished.error
    assert restarted.used_actors(job.id) == [0], "a new actor of the new head finished it"
    with one_thread():
        reference = learn(load_model(str(tiny_folder()), device="cpu"), *inputs, config, tmp_path / "alone")
    assert torch.equal(Concept.load(store.job_dir(job.id)).vectors, reference.vectors)
