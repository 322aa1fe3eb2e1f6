"""The job store and the model-owning worker, without the web app (tiny model, CPU)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError, ModelLoadError
from shapeinv_core.jobs import CANCELLED, DONE, QUEUED, RUNNING, JobStore, Worker, validate_job_id, wait_for
from shapeinv_core.jobs.worker import PAUSED_FOR_EDIT
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.workflow import learn
from shapeinv_core.models.loading import load_model
from tests.helpers import chair_like, small_config, tiny_folder


@pytest.fixture(scope="module")
def inputs():
    return chair_like()


def make_worker(store: JobStore, **options) -> Worker:
    return Worker(store, model=str(tiny_folder()), device="cpu", preview_every=2, preview_steps=2, **options).start()


@pytest.mark.parametrize("bad", ["", "../../etc", "0123456789AB", "0123456789a", "0123456789ab/..", "a" * 13, None])
def test_job_ids_are_validated_before_touching_the_file_system(tmp_path, bad):
    store = JobStore(tmp_path)
    with pytest.raises(InputError, match="not a job id"):
        validate_job_id(bad)
    with pytest.raises(InputError):
        store.job_dir(bad)
    assert validate_job_id(" 0123456789ab ") == "0123456789ab"


def test_queue_order_states_positions_and_limit(tmp_path, inputs):
    store = JobStore(tmp_path, max_queued=2)
    first, second = (store.create(*inputs, small_config()) for _ in range(2))
    assert (store.job_dir(first.id) / "config.json").is_file(), "a job folder is a run folder from the start"
    with pytest.raises(InputError, match="queue is full"):
        store.create(*inputs, small_config())
    assert [store.queue_position(job.id) for job in (first, second)] == [1, 2]

    claimed = store.claim_next()
    assert claimed.id == first.id and claimed.status == RUNNING and claimed.started
    assert store.queue_position(second.id) == 2, "the running job is ahead of every queued one"
    assert store.cancel(second.id).status == CANCELLED, "a queued job is cancelled at once"
    store.cancel(first.id)
    assert store.get(first.id).status == RUNNING and store.cancel_requested(first.id), "a running one is asked"
    store.finish(first.id, DONE)
    assert store.claim_next() is None

    third = store.create(*inputs, small_config())
    store.claim_next()
    restarted = JobStore(tmp_path)  # as a new process would open it
    assert restarted.requeue_interrupted() == [third.id]
    assert restarted.get(third.id).status == QUEUED and restarted.get(third.id).resumes == 1


def test_edits_are_served_between_steps_and_do_not_change_the_run(tmp_path, inputs):
    store = JobStore(tmp_path)
    worker = make_worker(store)
    try:
        config = small_config(steps=40, batch_size=1, checkpoint_every=4)
        first = store.create(*inputs, small_config(steps=3, batch_size=1))
        assert wait_for(store, first.id).status == DONE
        concept = Concept.load(store.job_dir(first.id))
        prompts, gen = ["a red chair in the shape of *s"], GenerationConfig(steps=3, num_images=2, seed=5)
        idle = worker.generate(concept, prompts, gen)

        running = store.create(*inputs, config)
        while store.get(running.id).step < 2:
            time.sleep(0.02)
        phases = []  # read on the worker thread while the edit is drawn
        during = worker.generate(concept, prompts, gen,
                                 on_progress=lambda done, total: phases.append(store.get(running.id).phase))
        assert store.get(running.id).status == RUNNING and store.get(running.id).step < config.steps, \
            "the edit came back before the inversion ended"
        assert phases and set(phases) == {PAUSED_FOR_EDIT}, "the store says so too (the Ray engine's pages read it)"
        assert wait_for(store, running.id).status == DONE and store.get(running.id).phase is None
    finally:
        worker.stop()
    for a, b in zip(idle, during):  # the training hooks were out of the edit's way
        assert a.prompt == b.prompt and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    reference = learn(load_model(str(tiny_folder()), device="cpu"), *inputs, config, tmp_path / "alone")
    assert torch.equal(Concept.load(store.job_dir(running.id)).vectors, reference.vectors), \
        "serving edits in the middle did not change what was learned"
    assert (store.job_dir(running.id) / "previews" / "attention.png").is_file()
    assert (store.job_dir(running.id) / "previews" / "sample.png").is_file()


def test_the_preview_draws_the_preview_prompt(tmp_path, inputs):
    store = JobStore(tmp_path)
    worker = make_worker(store)
    red = "a red chair in the shape of *s"
    try:  # the same run three times: only the preview prompt differs
        jobs = [store.create(*inputs, small_config(steps=2, batch_size=1, preview_prompt=prompt))
                for prompt in ("", small_config().prompt(), red)]
        assert all(wait_for(store, job.id).status == DONE for job in jobs)
    finally:
        worker.stop()
    default, template, edited = (np.asarray(Image.open(store.job_dir(job.id) / "previews" / "sample.png"))
                                 for job in jobs)
    assert np.array_equal(default, template), "no preview prompt: the training prompt is drawn"
    assert not np.array_equal(default, edited), "a preview prompt is drawn instead"


def test_stopping_the_worker_requeues_the_running_job_with_a_checkpoint(tmp_path, inputs):
    store = JobStore(tmp_path)
    worker = make_worker(store)
    job = store.create(*inputs, small_config(steps=300, batch_size=1, checkpoint_every=1000))
    try:
        while store.get(job.id).step < 2:
            time.sleep(0.02)
    finally:
        worker.stop()
    assert store.get(job.id).status == QUEUED
    assert store.run(job.id).checkpoints(), "stopping saved a checkpoint to resume from"


def test_a_model_that_cannot_load_is_reported_and_refuses_work(tmp_path, inputs):
    not_a_model = tmp_path / "empty-folder"
    not_a_model.mkdir()
    worker = Worker(JobStore(tmp_path / "data"), model=str(not_a_model), device="cpu").start()
    try:
        assert worker.wait_ready(60)
        assert worker.state == "failed" and "model_index.json" in worker.status_line()
        concept = Concept(token="*s", vectors=torch.zeros(1, 32))
        with pytest.raises(ModelLoadError, match="model_index.json"):
            worker.generate(concept, ["a *s"], GenerationConfig(steps=1))
    finally:
        worker.stop()


def test_resume_requeues_a_stopped_job_at_the_back_and_my_runs_lists_only_the_owners(tmp_path, inputs):
    from shapeinv_core.jobs import new_owner_token
    from shapeinv_core.jobs.estimates import run_seconds, seconds_until_start

    store = JobStore(tmp_path)
    mine, theirs = new_owner_token(), new_owner_token()
    first = store.create(*inputs, small_config(steps=10), owner=mine)
    second = store.create(*inputs, small_config(steps=10), owner=theirs)
    assert run_seconds(store, small_config())[0] is None, "no step timed yet: no estimate"
    with pytest.raises(InputError, match="only a cancelled or failed job can be resumed"):
        store.resume(first.id)
    store.cancel(first.id)
    resumed = store.resume(first.id)
    assert (resumed.status, resumed.resumes, resumed.error) == (QUEUED, 1, None)
    assert store.queue_position(first.id) == 2 and store.queue_position(second.id) == 1, "resumed: back of the queue"
    assert [job.id for job in store.newest(QUEUED, limit=1)] == [first.id], "newest first, at most the limit"
    assert [job.id for job in store.owned_jobs(mine)] == [first.id]
    assert store.owned_jobs(None) == [] and store.owned_jobs("short") == []

    # One timed job (5 steps of 2 s at 64 px) sets the pace for estimates.
    running = store.claim_next()
    assert running.id == second.id
    for step in range(1, 6):
        store.update_progress(second.id, step, 10, 2.0, 1.0, 1.0, 0.1)
    seconds, measured = run_seconds(store, small_config(steps=10, resolution=128))
    assert measured == 1 and seconds == pytest.approx(2.0 * 4 * 10), "4x the pixels, 10 steps"
    assert seconds_until_start(store, first.id) == pytest.approx(2.0 * 5), "the running job's 5 steps left"


def test_the_pace_behind_the_estimates_counts_what_the_worker_does_between_steps(tmp_path, inputs):
    """The previews drawn at checkpoints (and edits served) take this server's time too: after a Resume, one
    step's compute time alone promised a quarter of the time the job then took."""
    store = JobStore(tmp_path)
    job = store.create(*inputs, small_config(steps=4, checkpoint_every=2, batch_size=1))
    worker = Worker(store, model=str(tiny_folder()), device="cpu", preview_steps=20).start()
    try:
        done = wait_for(store, job.id, timeout=300)
    finally:
        worker.stop()
    compute = sum(record["seconds"] for record in store.run(job.id).read_log())
    assert done.status == DONE and done.run_seconds > 1.5 * compute, (done.run_seconds, compute)
