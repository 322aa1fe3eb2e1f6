"""The Ray engine: the same jobs and edits as the embedded worker, on one Ray actor per GPU.

The app (the head) keeps the job store and the data folder as the only source of truth; the
actors (`ray_actor.ModelActor`) each load the model once and own it. A job's folder (inputs,
settings, checkpoints) goes to its actor by value, and its progress, log lines, checkpoints,
previews, final concept and images come back by value, as events the head replays on its own
store and folder (no shared file system is needed). The engine answers the app exactly as
`Worker` does (`state`, `generate`, `clip_t`, `wake`, `stop` ...), so the app does not know which
engine it has.

Scheduling: one driver thread per actor claims the oldest queued job whenever its actor is free,
so queued jobs go to free actors in order. Edits go to an idle actor if there is one, else to a
busy one, which serves them between two steps as the embedded worker does. A cancel is passed
to the actor running the job; a sweep that starts while other actors are idle splits its weights
across them (`sweep_split`). Faults: an actor (or its node) that dies mid-job has its job
requeued, which resumes from the last checkpoint that came back, on the next free actor, and
the actor is recreated; after a head restart, the store's running jobs are requeued as today.

Importing this module imports Ray; nothing else in the project does.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

from ..config import GenerationConfig
from ..errors import InputError, ModelLoadError
from ..evaluation.metrics import DEFAULT_CLIP_MODEL
from ..generation.generate import GeneratedImage, check_prompts
from ..method.concept import Concept
from .mirror import apply_changes, read_folder
from .ray_actor import ENDED, RELAYED, ModelActor
from .split_sweep import SplitSweep
from .store import DEFAULT_LEASE_SECONDS, SWEEP, Job, JobStore
from .worker import LOAD_FAILED, LOADING, READY

log = logging.getLogger(__name__)

NOT_SENT = ("edits", "previews")  # folders of a job the actor never reads: edits made from it, old previews
ACTOR_THREADS = 16  # concurrent calls one actor takes: its job's events, edits, cancels


@dataclass
class _Slot:
    """One actor as the head sees it; `name` is the worker name its jobs are held under in the store."""

    index: int
    name: str
    actor: object | None = None
    state: str = LOADING
    error: str | None = None
    status: str = ""
    job_id: str | None = None


class RayEngine:
    """`address`: a Ray cluster to join (`ray start --head` printed it); None starts a local Ray.

    `workers`: actors to create (default: one per GPU of the cluster, or 1 without GPUs).
    `cpus_per_worker`: CPUs Ray reserves for each actor (Ray sets its torch threads to as many);
    default: 1 beside a GPU, else an equal share of the cluster's CPUs. `object_store_mb`: the object
    store of a local Ray this engine starts. The other options are the embedded `Worker`'s and mean the same.
    """

    def __init__(self, store: JobStore, model: str = "tiny", device: str = "auto", dtype: str = "auto",
                 address: str | None = None, workers: int | None = None, cpus_per_worker: float | None = None,
                 preview_every: int = 5, preview_steps: int = 20, clip_model: str | None = DEFAULT_CLIP_MODEL,
                 lease: float = DEFAULT_LEASE_SECONDS, serve_budget: float = 3.0, edit_timeout: float = 300.0,
                 object_store_mb: int = 256, poll: float = 0.5, split_sweeps: bool = True):
        if workers is not None and workers < 1:
            raise InputError(f"--workers {workers}: give 1 or more Ray workers.")
        self.store = store
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.model_name, self.device, self.dtype = model, device, dtype
        self.address, self.workers, self.cpus_per_worker = address, workers, cpus_per_worker
        self.actor_options = {"preview_every": preview_every, "preview_steps": preview_steps,
                              "clip_model": clip_model, "lease": lease, "serve_budget": serve_budget,
                              "edit_timeout": edit_timeout}
        self.lease, self.edit_timeout, self.poll = lease, edit_timeout, poll
        self.object_store_mb, self.split_sweeps = object_store_mb, split_sweeps
        self.slots: list[_Slot] = []
        self.assignments: list[tuple[str, int]] = []  # (job id, actor index) in the order jobs were handed out
        self.error: str | None = None  # why Ray itself could not be reached
        self.current_job: str | None = None  # the embedded worker's one job; jobs here have their own phases
        self.paused: str | None = None
        self._owns_ray = False
        self._gpus_per_actor = 0
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._claim_lock = threading.Lock()

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> RayEngine:
        """Requeue jobs a dead head left running, then start Ray and the actors in the background."""
        resumed = self.store.requeue_interrupted()
        if resumed:
            log.info("resuming interrupted jobs: %s", ", ".join(resumed))
        starter = threading.Thread(target=self._start_actors, name="shapeinv-ray-start", daemon=True)
        starter.start()
        self._threads.append(starter)
        return self

    def _start_actors(self) -> None:
        try:
            gpus = self._connect()
        except Exception as error:  # a wrong address, a cluster that refused: say so on the page
            log.exception("ray start")
            why = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            if self.address:
                self.error = (f"Cannot join the Ray cluster at {self.address} ({why}). Check the address that "
                              "`ray start --head` printed, that this host reaches it, and RAY_AUTH_TOKEN.")
            else:
                self.error = f"Ray could not start on this machine ({why}). Its log is in /tmp/ray."
            self._ready.set()
            return
        self._gpus_per_actor = 1 if gpus else 0
        count = self.workers or max(1, gpus)
        self.slots = [_Slot(index, f"{self.name}/actor-{index}") for index in range(count)]
        for slot in self.slots:
            thread = threading.Thread(target=self._drive, args=(slot,), name=f"shapeinv-ray-{slot.index}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def _connect(self) -> int:
        """Start or join Ray (unless this process already has it); the number of GPUs the actors may use."""
        if not ray.is_initialized():
            if self.address:
                ray.init(address=self.address, include_dashboard=False)
            else:
                ray.init(include_dashboard=False,  # actor logs (warnings, failures) print on this console
                         object_store_memory=self.object_store_mb * 1024 * 1024)
            self._owns_ray = True
        return int(ray.cluster_resources().get("GPU", 0)) if self.device != "cpu" else 0

    def _actor_cpus(self, count: int) -> float:
        """CPUs Ray reserves per actor: as asked; 1 beside a GPU; else an equal share of the cluster's CPUs."""
        if self.cpus_per_worker:
            return self.cpus_per_worker
        if self._gpus_per_actor:
            return 1
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // count)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current steps: running jobs are checkpointed, come back and are requeued."""
        self._stopping.set()
        self._wake.set()
        for slot in self.slots:
            if slot.actor is not None:
                slot.actor.stop.remote()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for slot in self.slots:
            if slot.job_id is not None:  # its actor did not answer in time: the next start resumes the job
                self.store.requeue(slot.job_id)
            if slot.actor is not None:
                ray.kill(slot.actor)
        if self._owns_ray:
            ray.shutdown()

    def wake(self) -> None:
        self._wake.set()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until one actor has loaded the model (or all failed, or Ray could not start)."""
        return self._ready.wait(timeout)

    # --- what the app reads -----------------------------------------------------------------
    @property
    def state(self) -> str:
        if self.error is not None:
            return LOAD_FAILED
        states = [slot.state for slot in self.slots]
        if READY in states:
            return READY
        if states and all(state == LOAD_FAILED for state in states):
            return LOAD_FAILED
        return LOADING

    def status_line(self) -> str:
        name = Path(self.model_name).name if Path(self.model_name).is_absolute() else self.model_name
        if self.error is not None:
            return self.error
        state = self.state
        if state == LOAD_FAILED:
            errors = [slot.error for slot in self.slots if slot.error]
            return f"The model {name} failed to load: {errors[0] if errors else 'unknown error'}"
        where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
        if state == LOADING and not self.slots:
            return f"Connecting to {where} ... (masks can be made meanwhile)"
        if state == LOADING:
            return f"Loading the model {name} on the {len(self.slots)} workers of {where} ... " \
                   "(masks can be made meanwhile)"
        ready = [slot for slot in self.slots if slot.state == READY]
        return f"{ready[0].status.rstrip('.')}, {len(ready)} of {len(self.slots)} Ray workers."

    def used_actors(self, job_id: str) -> list[int]:
        """The actors (their indices) a job was handed to, in order: for tests, the bench and the log."""
        return [index for handed, index in self.assignments if handed == job_id]

    def _jobs_run(self, slot: _Slot) -> int:
        return sum(index == slot.index for _, index in self.assignments)

    # --- the drivers: one thread per actor --------------------------------------------------
    def _drive(self, slot: _Slot) -> None:
        while not self._stopping.is_set():
            if slot.actor is None and not self._create(slot):
                return  # the model cannot load: this slot stays failed
            try:
                job, helpers = self._claim(slot)
            except Exception:  # e.g. the database on a full disk: try again shortly
                log.exception("claiming a job")
                job, helpers = None, []
            if job is None:
                self._wake.wait(self.poll)
                self._wake.clear()
            elif helpers:
                self._run_split(job, [slot, *helpers])
            else:
                self._run(slot, job)

    def _create(self, slot: _Slot) -> bool:
        """(Re)create the slot's actor and wait for its model; False when the model cannot load."""
        slot.state, slot.error = LOADING, None
        options = {"num_cpus": self._actor_cpus(len(self.slots)), "num_gpus": self._gpus_per_actor,
                   "max_concurrency": ACTOR_THREADS}
        slot.actor = ray.remote(ModelActor).options(**options).remote(
            self.model_name, device=self.device, dtype=self.dtype, **self.actor_options)
        try:
            answer = ray.get(slot.actor.ready.remote())
        except Exception as error:  # the actor could not start (e.g. this package missing on its host) or died
            log.exception("Ray worker %d", slot.index)
            why = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            slot.state, slot.error, slot.actor = LOAD_FAILED, f"a Ray worker could not start ({why})", None
            self._settle_ready()
            return False
        slot.state, slot.error, slot.status = answer["state"], answer["error"], answer["status"]
        self._settle_ready()
        if slot.state != READY:
            ray.kill(slot.actor)
            slot.actor = None
            return False
        return True

    def _settle_ready(self) -> None:
        if self.state != LOADING:
            self._ready.set()

    def _claim(self, slot: _Slot) -> tuple[Job | None, list[_Slot]]:
        """The oldest queued job for this slot's actor, and for a sweep the idle actors it may split over."""
        if self._stopping.is_set():
            return None, []
        with self._claim_lock:
            if slot.job_id is not None:  # lent to another slot's sweep meanwhile
                return None, []
            job = self.store.claim_next(slot.name, self.lease)
            if job is None:
                return None, []
            helpers = []
            if self.split_sweeps and job.kind == SWEEP:
                idle = [other for other in self.slots if other is not slot and other.job_id is None
                        and other.state == READY and other.actor is not None]
                helpers = idle[:len(self.store.sweep_folder(job.id).spec().weights) - 1]
            for each in (slot, *helpers):
                each.job_id = job.id
                self.assignments.append((job.id, each.index))
        return job, helpers

    def _job_files(self, job: Job) -> dict[str, bytes]:
        """The job's folder as bytes, without the folders its actor never reads."""
        return {name: data for name, data in read_folder(self.store.job_dir(job.id)).items()
                if not set(Path(name).parts) & set(NOT_SENT)}

    def _run(self, slot: _Slot, job: Job) -> None:
        """Send the job to the slot's actor and replay what comes back until the actor lets go of it."""
        folder = self.store.job_dir(job.id)
        applying = True  # False once the head can no longer record this job (lost lease, failed write)
        try:
            ray.get(slot.actor.hand.remote(job, self._job_files(job)))
            cancel_sent, beat = False, time.monotonic()
            while True:
                for name, args, changes in ray.get(slot.actor.next_events.remote(self.poll)):
                    if applying:
                        try:
                            if changes:
                                apply_changes(folder, changes)
                            if name in RELAYED:
                                getattr(self.store, name)(*args)
                        except Exception:  # as the embedded worker: no heartbeat from here on; the lease requeues it
                            log.exception("job %s: could not record its state; it will be requeued when its lease "
                                          "runs out", job.id)
                            applying = False
                            slot.actor.release.remote(job.id)
                    if name == ENDED:
                        return
                if applying and not cancel_sent and self.store.cancel_requested(job.id):
                    slot.actor.cancel.remote(job.id)
                    cancel_sent = True
                if applying and time.monotonic() - beat > self.lease / 4:
                    beat = time.monotonic()
                    if not self.store.heartbeat(job.id, slot.name):
                        log.warning("job %s: lease lost, another worker took it over", job.id)
                        applying = False
                        slot.actor.release.remote(job.id)
        except RayActorError as error:
            log.warning("job %s: its Ray worker died (%s); requeued, it resumes from its last checkpoint",
                        job.id, type(error).__name__)
            if applying:
                self.store.requeue(job.id, resumed=True)
            slot.actor, slot.state = None, LOADING
            self._wake.set()
        except Exception:  # the head could not read or record the job: leave it to the lease
            log.exception("job %s: the head could not run it; it will be requeued when its lease runs out", job.id)
        finally:
            slot.job_id = None

    def _run_split(self, job: Job, slots: list[_Slot]) -> None:
        """A sweep on several actors, one part of its weights each (`split_sweep`); joined when all are over."""
        applying = True
        try:
            split = SplitSweep(self.store, job, len(slots))  # one part per slot: `_claim` lent no more than weights
            files = self._job_files(job)
            waiting = {}
            for index, slot in enumerate(slots):
                try:
                    ray.get(slot.actor.hand.remote(job, split.files_for(index, files)))
                    waiting[slot.actor.next_events.remote(self.poll)] = index
                except RayActorError:
                    self._part_died(job, slots, split, index)
                    break  # the sweep is requeued anyway: the parts not handed out yet are not started
            log.info("sweep %s split over actors %s", job.id, [slot.index for slot in slots])
            cancel_sent, beat = False, time.monotonic()
            while waiting:
                done, _ = ray.wait(list(waiting), num_returns=1, timeout=self.poll * 4)
                for ref in done:
                    index = waiting.pop(ref)
                    try:
                        events = ray.get(ref)
                    except RayActorError:
                        self._part_died(job, slots, split, index)
                        continue
                    for name, args, changes in events:
                        if applying:
                            try:
                                split.on_event(index, name, args, changes)
                            except Exception:
                                log.exception("sweep %s: could not record its state; the lease requeues it", job.id)
                                applying = False
                                self._release(slots, split, job)
                        if name == ENDED:
                            split.parts[index].ended = True
                    if not split.parts[index].ended:
                        waiting[slots[index].actor.next_events.remote(self.poll)] = index
                if applying and not cancel_sent and (split.failed or self.store.cancel_requested(job.id)):
                    for slot, part in zip(slots, split.parts):
                        if not (part.ended or part.died):
                            slot.actor.cancel.remote(job.id)
                    cancel_sent = True
                if applying and time.monotonic() - beat > self.lease / 4:
                    beat = time.monotonic()
                    if not self.store.heartbeat(job.id, slots[0].name):
                        applying = False
                        self._release(slots, split, job)
            if applying:
                split.settle()
        except Exception:
            log.exception("sweep %s: the head could not run it; it will be requeued when its lease runs out", job.id)
        finally:
            for slot in slots:
                slot.job_id = None
            self._wake.set()

    def _part_died(self, job: Job, slots: list[_Slot], split: SplitSweep, index: int) -> None:
        """One part's actor died: the others stop and keep their checkpoints; the sweep is requeued at the end."""
        log.warning("sweep %s: a Ray worker died; the sweep is requeued and resumes", job.id)
        split.parts[index].died = True
        slots[index].actor, slots[index].state = None, LOADING
        self._release(slots, split, job)

    @staticmethod
    def _release(slots: list[_Slot], split: SplitSweep, job: Job) -> None:
        for slot, part in zip(slots, split.parts):
            if not (part.ended or part.died) and slot.actor is not None:
                slot.actor.release.remote(job.id)

    # --- edits ------------------------------------------------------------------------------
    def generate(self, concept: Concept, prompts: list[str], config: GenerationConfig,
                 timeout: float | None = None,
                 on_progress: Callable[[int, int], None] | None = None) -> list[GeneratedImage]:
        """Images for `prompts` from an idle actor if there is one, else between a busy one's steps.

        `on_progress(done, total)` is called here, on the caller's thread, as the actor's sampling steps
        are polled (about 4 times a second)."""
        prompts = check_prompts(prompts, concept.token)
        config = config.validate()
        limit = self.edit_timeout if timeout is None else timeout
        return self._call("generate", limit, concept, prompts, config, limit, on_progress=on_progress)

    def clip_t(self, images: list, prompts: list[str], timeout: float | None = None) -> tuple[list | None, str | None]:
        limit = self.edit_timeout if timeout is None else timeout
        return self._call("clip_t", limit, images, prompts, limit)

    def _call(self, method: str, limit: float, *args, on_progress: Callable[[int, int], None] | None = None):
        """`method` on the best actor for a request; its own errors come back as they were raised.

        With `on_progress`, the call gets a `request` name and, while it runs, the actor's
        `generate_progress` for that name is passed on."""
        deadline = time.monotonic() + limit
        slot = self._request_slot(deadline)
        call = getattr(slot.actor, method)
        try:
            if on_progress is None:
                result = call.remote(*args)
            else:
                request = secrets.token_hex(8)
                result = call.remote(*args, request=request)
                while not ray.wait([result], timeout=0.25)[0] and time.monotonic() < deadline + 60:
                    steps = ray.get(slot.actor.generate_progress.remote(request), timeout=30)
                    if steps is not None:
                        on_progress(*steps)
            return ray.get(result, timeout=max(1.0, deadline - time.monotonic()) + 60)
        except RayTaskError as error:
            cause = error.cause
            if isinstance(cause, Exception):
                raise cause from None
            raise
        except RayActorError:
            raise InputError("The worker serving your request stopped (it is being restarted). "
                             "Try again in a minute.") from None
        except GetTimeoutError:
            raise InputError(f"Your images were not ready within {limit:.0f} s (the server is busy). "
                             "Ask for fewer images or sampling steps, or try again later.") from None

    def _request_slot(self, deadline: float) -> _Slot:
        """An idle ready actor, else a busy one (the one that ran the fewest jobs); waits while models load."""
        while True:
            if self.state == LOAD_FAILED:
                raise ModelLoadError(f"No model to work with: {self.status_line()}")
            ready = [slot for slot in self.slots if slot.state == READY and slot.actor is not None]
            idle = [slot for slot in ready if slot.job_id is None]
            if ready:
                return min(idle or ready, key=self._jobs_run)
            if time.monotonic() > deadline:
                raise InputError("No model is ready yet (it is still loading). Try again in a minute.")
            time.sleep(0.2)

