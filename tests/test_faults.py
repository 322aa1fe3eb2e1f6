"""Transient faults do not lose jobs; strangers cannot reach them; the disk stays bounded (tiny model, CPU).

Real faults where this machine can make them: a SQLite lock held by another connection, a worker
that stops beating, a small tmpfs filled to the last byte (skipped where mounting needs a root we lack).
Injected only where nothing else can make the fault: a state write that fails once, and a full disk
on machines that cannot mount a small filesystem.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import threading
import time

import pytest
import torch

from shapeinv_core.errors import DiskFullError, InputError
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.jobs import DONE, QUEUED, RUNNING, JobStore, Worker, new_owner_token, wait_for
from shapeinv_core.jobs.retention import check_budget, clean_data_folder, folder_bytes
from shapeinv_core.jobs.worker import PAUSED_DISK_FULL
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.workflow import learn
from shapeinv_core.models.loading import load_model
from tests.helpers import chair_like, small_config, tiny_folder, wait_until


@pytest.fixture(scope="module")
def inputs():
    return chair_like()


def make_worker(store: JobStore, **options) -> Worker:
    return Worker(store, model=str(tiny_folder()), device="cpu", preview_every=2, preview_steps=0, **options).start()


def reference_vectors(tmp_path, inputs, config) -> torch.Tensor:
    return learn(load_model(str(tiny_folder()), device="cpu"), *inputs, config, tmp_path / "reference").vectors


# --- ids and owners ----------------------------------------------------------------------------

def test_job_ids_have_128_random_bits_and_only_the_owner_reaches_a_job(tmp_path, inputs):
    store = JobStore(tmp_path)
    alice, bob = new_owner_token(), new_owner_token()
    job = store.create(*inputs, small_config(), owner=alice)
    assert len(job.id) == 32 and int(job.id, 16) >= 0, "32 hex digits = 128 bits"
    assert store.owned(job.id, alice).id == job.id
    missing = "0" * 32
    with pytest.raises(InputError) as not_there:
        store.owned(missing, alice)
    for stranger in (bob, None, "", "x" * 10):
        with pytest.raises(InputError) as refused:
            store.owned(job.id, stranger)
        assert str(refused.value).replace(job.id, missing) == str(not_there.value), \
            "another's job answers exactly like a missing one"
    with pytest.raises(InputError):
        store.concept_run(job.id, bob)
    assert alice not in (tmp_path / "jobs.sqlite3").read_bytes().decode("latin-1"), "only a hash of the token is kept"


def test_one_owner_may_queue_only_a_few_jobs(tmp_path, inputs):
    store = JobStore(tmp_path, max_queued=10, max_queued_per_owner=2)
    alice, bob = new_owner_token(), new_owner_token()
    for _ in range(2):
        store.create(*inputs, small_config(), owner=alice)
    with pytest.raises(InputError, match="You already have 2 jobs waiting"):
        store.create(*inputs, small_config(), owner=alice)
    assert store.create(*inputs, small_config(), owner=bob).status == QUEUED, "others are not held up"
    assert len(list((tmp_path / "jobs").iterdir())) == 3, "a refused job leaves no folder"


# --- a locked database -------------------------------------------------------------------------

def hold_lock(db_path, seconds: float, locked: threading.Event) -> None:
    """Another program's write lock on the database for `seconds` (a real connection, not a mock)."""
    db = sqlite3.connect(db_path, timeout=60)
    db.execute("BEGIN EXCLUSIVE")
    locked.set()
    time.sleep(seconds)
    db.rollback()
    db.close()


def test_a_lock_15_times_sqlites_wait_delays_a_job_but_does_not_fail_it(tmp_path, inputs):
    # SQLite's own wait per try is 1 s here; the store retries for 10 minutes. A 15 s lock outlasts 15 tries
    # (the battery held one for 60 s against the default wait: the same path, four times the suite's time).
    store = JobStore(tmp_path, lock_timeout=1.0)
    worker = make_worker(store)
    try:
        config = small_config(steps=12, batch_size=1, checkpoint_every=4)
        job = store.create(*inputs, config)
        wait_until(lambda: store.get(job.id).step >= 2, what="the job to be under way")
        locked = threading.Event()
        holder = threading.Thread(target=hold_lock, args=(store.db_path, 15.0, locked))
        holder.start()
        locked.wait(60)
        started = time.monotonic()
        other = store.create(*inputs, small_config())  # a user's call during the lock waits, then succeeds
        assert time.monotonic() - started > 7, "the queueing call waited for the lock"
        holder.join()
        finished = wait_for(store, job.id, timeout=600)
        assert finished.status == DONE, finished.error
        assert wait_for(store, other.id, timeout=600).status == DONE
    finally:
        worker.stop()
    assert torch.equal(Concept.load(store.job_dir(job.id)).vectors, reference_vectors(tmp_path, inputs, config))


# --- leases ------------------------------------------------------------------------------------

def test_a_dead_workers_job_is_requeued_by_its_lease_and_a_live_one_keeps_it(tmp_path, inputs):
    store = JobStore(tmp_path)
    config = small_config(steps=6, batch_size=1, checkpoint_every=2)
    job = store.create(*inputs, config)
    assert store.claim_next("a-worker-that-dies", lease=300).id == job.id  # ... and then never beats again
    assert store.claim_next("another", lease=300) is None, "a fresh lease is respected"

    worker = make_worker(store, lease=2.0)
    try:
        done = wait_for(store, job.id, timeout=300)
        assert done.status == DONE and done.resumes == 1, "requeued once the lease ran out, then finished"

        long_job = store.create(*inputs, small_config(steps=400, batch_size=1, checkpoint_every=1000))
        wait_until(lambda: store.get(long_job.id).step >= 1, what="the long job to start")
        time.sleep(3 * worker.lease)  # three leases: only the heartbeat can keep the job
        assert store.claim_next("a-thief", lease=worker.lease) is None
        held = store.get(long_job.id)
        assert held.status == RUNNING and held.worker == worker.name and held.resumes == 0
        store.cancel(long_job.id)
        assert wait_for(store, long_job.id).status == "cancelled"
    finally:
        worker.stop()


def test_a_state_that_cannot_be_written_leaves_the_job_resumable(tmp_path, inputs, monkeypatch):
    store = JobStore(tmp_path)
    config = small_config(steps=4, batch_size=1, checkpoint_every=2)
    job = store.create(*inputs, config)
    original, failures = store.finish, []

    def finish_fails_once(job_id, status, error=None):  # injected: a write this machine cannot make fail
        if not failures:
            failures.append(status)
            raise sqlite3.OperationalError("disk I/O error")
        return original(job_id, status, error)

    monkeypatch.setattr(store, "finish", finish_fails_once)
    worker = make_worker(store, lease=2.0)
    try:
        done = wait_for(store, job.id, timeout=300)
    finally:
        worker.stop()
    assert failures == [DONE] and done.status == DONE and done.resumes == 1, "requeued by its lease, then finished"
    assert [record["step"] for record in store.run(job.id).read_log()] == [1, 2, 3, 4], "the rerun resumed"


# --- a full disk -------------------------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path):
    """An 8 MB tmpfs (needs the right to mount; skipped where it is missing)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small filesystem here (not root); the injected-ENOSPC test covers this")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> object:
    """Write a ballast file until the filesystem refuses (ENOSPC); return its path."""
    ballast = folder / "ballast"
    with ballast.open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC
    return ballast


def test_a_full_small_filesystem_pauses_the_job_which_resumes_by_itself(small_disk, tmp_path, inputs):
    store = JobStore(small_disk / "data", lock_timeout=1.0)
    config = small_config(steps=40, batch_size=1, checkpoint_every=2)
    worker = make_worker(store, space_retry=0.5)
    try:
        job = store.create(*inputs, config)
        wait_until(lambda: store.get(job.id).step >= 3, what="the job to be under way")
        ballast = fill(small_disk)
        wait_until(lambda: worker.paused == PAUSED_DISK_FULL, what="the pause")
        time.sleep(2)  # not a wait for a condition: the pause must hold while the disk stays full
        assert worker.paused == PAUSED_DISK_FULL and worker.current_job == job.id
        with pytest.raises(DiskFullError, match="disk is full"):
            store.create(*inputs, small_config())
        ballast.unlink()  # space returns
        finished = wait_for(store, job.id, timeout=600)
    finally:
        worker.stop()
    assert finished.status == DONE and worker.paused is None and finished.phase is None
    assert torch.equal(Concept.load(store.job_dir(job.id)).vectors, reference_vectors(tmp_path, inputs, config))


def test_an_injected_enospc_pauses_the_job_until_writes_succeed_again(tmp_path, inputs, monkeypatch):
    """The same as above where no filesystem can be mounted: checkpoint writes fail with ENOSPC for a while."""
    disk_full = threading.Event()
    disk_full.set()
    original = RunFolder.save_checkpoint

    def save_checkpoint(self, step, state, *more):  # injected: a full disk cannot be made without mounting one
        if disk_full.is_set():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.checkpoint_dir))
        return original(self, step, state, *more)

    monkeypatch.setattr(RunFolder, "save_checkpoint", save_checkpoint)
    store = JobStore(tmp_path / "data")
    config = small_config(steps=6, batch_size=1, checkpoint_every=2)
    worker = make_worker(store, space_retry=0.2)
    try:
        job = store.create(*inputs, config)
        wait_until(lambda: store.get(job.id).phase == PAUSED_DISK_FULL, what="the pause")
        assert store.get(job.id).status == RUNNING
        disk_full.clear()
        finished = wait_for(store, job.id, timeout=300)
    finally:
        worker.stop()
    assert finished.status == DONE and finished.phase is None
    assert torch.equal(Concept.load(store.job_dir(job.id)).vectors, reference_vectors(tmp_path, inputs, config))


# --- bounded disk ------------------------------------------------------------------------------

def test_only_the_newest_checkpoints_are_kept(tmp_path, inputs):
    config = small_config(steps=8, batch_size=1, checkpoint_every=1)
    learn(load_model(str(tiny_folder()), device="cpu"), *inputs, config, tmp_path / "run")
    assert [step for step, _ in RunFolder(tmp_path / "run").checkpoints()] == [7, 8], "the final state and one before"
    assert not list((tmp_path / "run" / "checkpoints").glob("*.tmp"))


def test_old_finished_jobs_edits_and_exports_are_deleted_running_ones_never(tmp_path, inputs):
    store = JobStore(tmp_path)
    old, running, recent = (store.create(*inputs, small_config()) for _ in range(3))
    for _ in (old, running):
        store.claim_next()
    store.finish(old.id, DONE)
    nine_days_ago = time.time() - 9 * 86400
    with sqlite3.connect(store.db_path) as db:  # as if it had finished nine days ago
        db.execute("UPDATE jobs SET finished = ? WHERE id = ?", (nine_days_ago, old.id))
    edits, exports = tmp_path / "edits", tmp_path / "exports"
    for folder in (edits, exports, store.job_dir(running.id) / "edits"):
        folder.mkdir(parents=True)
        (folder / "old.png").write_bytes(b"x")
        os.utime(folder / "old.png", (nine_days_ago,) * 2)
        (folder / "new.png").write_bytes(b"x")
    cleaned = clean_data_folder(store, keep_days=7, folders=(edits, exports))
    assert cleaned.jobs == [old.id] and not store.job_dir(old.id).exists()
    with pytest.raises(InputError):
        store.get(old.id)
    assert store.get(running.id).status == RUNNING and store.get(recent.id).status == QUEUED
    assert sorted(p.name for p in edits.iterdir()) == sorted(p.name for p in exports.iterdir()) == ["new.png"]
    assert [p.name for p in (store.job_dir(running.id) / "edits").iterdir()] == ["new.png"]


def test_a_data_folder_over_its_budget_refuses_new_work(tmp_path):
    (tmp_path / "big").write_bytes(b"\0" * 3_000_000)
    assert folder_bytes(tmp_path) == 3_000_000
    check_budget(tmp_path, 0.004)  # 4 MB: room left
    with pytest.raises(DiskFullError, match=r"holds 0.003 GB, its budget is 0.002 GB"):
        check_budget(tmp_path, 0.002)


# --- the worker cannot be captured -------------------------------------------------------------

def test_a_burst_of_edits_is_served_one_per_step_and_a_late_one_is_dropped(tmp_path, inputs):
    from shapeinv_core.config import GenerationConfig

    store = JobStore(tmp_path)
    worker = make_worker(store, serve_budget=0.0)  # at most one request between two steps
    try:
        first = store.create(*inputs, small_config(steps=2, batch_size=1))
        assert wait_for(store, first.id).status == DONE
        concept = Concept.load(store.job_dir(first.id))
        running = store.create(*inputs, small_config(steps=400, batch_size=1, checkpoint_every=1000))
        wait_until(lambda: store.get(running.id).step >= 2, what="the long job to be under way")
        served_at: list[int] = []

        def ask() -> None:
            # The job's step is read on the worker thread while the request is served (its first sampling
            # step), not by the asking thread afterwards, which a busy machine may wake a step late.
            def note(done: int, total: int) -> None:
                if done == 1:
                    served_at.append(store.get(running.id).step)

            worker.generate(concept, ["a red chair in the shape of *s"], GenerationConfig(steps=2), on_progress=note)

        burst = [threading.Thread(target=ask) for _ in range(4)]
        for thread in burst:
            thread.start()
        for thread in burst:
            thread.join(300)
        assert len(served_at) == 4 and served_at == sorted(served_at) and len(set(served_at)) == 4, \
            f"the training loop stepped between the requests: {served_at}"

        hold = threading.Thread(target=worker.call, args=(lambda: time.sleep(3),))
        hold.start()  # something slow ahead in the queue
        with pytest.raises(InputError, match="not ready within 1 s"):
            worker.generate(concept, ["a red chair in the shape of *s"], GenerationConfig(steps=2), timeout=1.0)
        hold.join(300)
        store.cancel(running.id)
        assert wait_for(store, running.id).status == "cancelled"
    finally:
        worker.stop()
