"""The Ray engine against the embedded worker: throughput with 1 and 2 actors, per-step overhead, idle memory.

On one local Ray with `--cpus` CPUs (no dashboard, a small object store), the tiny model:
- throughput: `--jobs` short inversions queued at once, run by 1 actor, then by 2 actors (each actor
  gets one CPU, so the ratio measures the engine's parallelism, not more threads per job);
- per-step overhead: the same jobs through the embedded worker (in this process, one torch thread)
  and through one actor. Per job: (wall time from start to finish - the steps' own compute time,
  which the log records) / steps, i.e. what the engine adds around the training steps; the
  difference between the two engines is what going through an actor costs per step;
- idle memory: each actor's resident memory (RSS) with the model loaded and no job.

    python bench/bench_ray.py --cpus 2 --jobs 8 --steps 6

Prints a table and writes JSON next to `--out` (default bench/ray_results.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch

from shapeinv_core.config import InversionConfig
from shapeinv_core.jobs import JobStore, Worker, wait_for
from shapeinv_core.jobs.ray_engine import RayEngine
from shapeinv_core.jobs.worker import READY
from tests.helpers import chair_like, tiny_folder

OPTIONS = {"preview_steps": 0, "clip_model": None}  # the same job work in both engines: no preview images


def config(steps: int) -> InversionConfig:
    return InversionConfig(resolution=64, steps=steps, batch_size=1, checkpoint_every=max(1, steps // 2))


def run_jobs(store: JobStore, wake, count: int, steps: int) -> dict:
    """Queue `count` jobs at once; the wall time until all are done and the per-job engine overhead."""
    image, mask = chair_like()
    began = time.time()
    jobs = [store.create(image, mask, config(steps)) for _ in range(count)]
    wake()
    finished = [wait_for(store, job.id, timeout=3600) for job in jobs]
    wall = max(job.finished for job in finished) - began
    overheads = []
    for job in finished:
        compute = sum(record["seconds"] for record in store.run(job.id).read_log())
        overheads.append((job.finished - job.started - compute) / steps)
    assert all(job.status == "done" for job in finished), [job.error for job in finished]
    return {"wall_s": wall, "jobs_per_min": 60 * count / wall, "overhead_per_step_s": statistics.median(overheads),
            "step_compute_s": statistics.median(record["seconds"] for job in finished
                                                for record in store.run(job.id).read_log())}


def ray_engine(folder: Path, workers: int) -> RayEngine:
    engine = RayEngine(JobStore(folder), model=str(tiny_folder()), device="cpu", workers=workers,
                       cpus_per_worker=1, **OPTIONS).start()
    deadline = time.monotonic() + 600
    while not (len(engine.slots) == workers and all(slot.state == READY for slot in engine.slots)):
        assert time.monotonic() < deadline, "the actors did not load the model"
        time.sleep(0.2)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray may use (default 2)")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ray_results.json"))
    args = parser.parse_args()
    ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    results: dict = {"command": f"python bench/bench_ray.py --cpus {args.cpus} --jobs {args.jobs} --steps {args.steps}"}
    scratch = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        torch.set_num_threads(1)  # as one actor with one CPU
        worker = Worker(JobStore(scratch / "embedded"), model=str(tiny_folder()), device="cpu", **OPTIONS).start()
        worker.wait_ready(600)
        results["embedded"] = run_jobs(worker.store, worker.wake, args.jobs, args.steps)
        worker.stop()

        for workers in (1, 2):
            engine = ray_engine(scratch / f"ray{workers}", workers)
            try:
                results[f"ray_{workers}"] = run_jobs(engine.store, engine.wake, args.jobs, args.steps)
                results[f"ray_{workers}"]["actor_idle_rss_mb"] = [
                    ray.get(slot.actor.resident_bytes.remote()) / 2**20 for slot in engine.slots]
                results[f"ray_{workers}"]["actors_used"] = len({index for _, index in engine.assignments})
            finally:
                engine.stop()
    finally:
        ray.shutdown()
    results["throughput_ratio_2_vs_1"] = results["ray_2"]["jobs_per_min"] / results["ray_1"]["jobs_per_min"]
    results["overhead_ray_minus_embedded_ms"] = 1000 * (results["ray_1"]["overhead_per_step_s"]
                                                        - results["embedded"]["overhead_per_step_s"])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
