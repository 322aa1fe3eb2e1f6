"""The Ray engine against the embedded worker: throughput with 1 and 2 actors, per-step overhead, idle memory.

On one local Ray with `--cpus` CPUs (no dashboard, a small object store), the tiny model:
- throughput: `--jobs` short inversions queued at once, run by 1 actor, then by 2 actors (each actor
  gets one CPU, so the ratio measures the engine's parallelism, not more threads per job);
- per-step overhead: the same jobs through the embedded worker (in this process, one torch thread)
  and through one actor. Per job: (wall time from start to finish - the steps' own compute time,
  which the log records) / steps, i.e. what the engine adds around the training steps; the
  difference between the two engines is what going through an actor costs per step;
- idle memory: each actor's resident memory (RSS) with the model loaded and no job;
- the relay's own cost per step on the actor (a log line appended, the job folder compared with
  what was last sent), which is what a step pays on the actor; the head applies events meanwhile.

    PYTHONPATH=. python bench/bench_ray.py --cpus 2 --jobs 8 --steps 30 --rounds 2

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
from shapeinv_core.jobs.mirror import FolderMirror
from shapeinv_core.jobs.ray_engine import RayEngine
from shapeinv_core.jobs.worker import READY
from tests.helpers import chair_like, tiny_folder

OPTIONS = {"preview_steps": 0, "clip_model": None}  # the same job work in both engines: no preview images


def config(steps: int) -> InversionConfig:
    config = InversionConfig(resolution=64, steps=steps, batch_size=1, checkpoint_every=max(1, steps // 2))
    return config.research_form()  # as recorded


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


def relay_cost(folder: Path, steps: int) -> float:
    """Median seconds the actor's relay adds to one step: a log line appended, then the folder compared."""
    image, mask = chair_like()
    store = JobStore(folder)
    job = store.create(image, mask, config(steps))
    run = store.run(job.id)
    run.save_checkpoint(1, {key: torch.zeros(1, 32) for key in ("vectors", "exp_avg", "exp_avg_sq")})
    mirror = FolderMirror(run.path)
    times = []
    for step in range(200):
        run.append_log({"step": step, "loss": 0.5, "diffusion_loss": 0.4, "mask_loss": 0.1, "seconds": 0.1})
        began = time.perf_counter()
        mirror.changes()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def one_round(scratch: Path, args, order: list[str]) -> dict:
    results = {}
    for name in order:
        if name == "embedded":
            worker = Worker(JobStore(scratch / name), model=str(tiny_folder()), device="cpu", **OPTIONS).start()
            worker.wait_ready(600)
            results[name] = run_jobs(worker.store, worker.wake, args.jobs, args.steps)
            worker.stop()
            continue
        workers = int(name[-1])
        engine = ray_engine(scratch / name, workers)
        try:
            results[name] = run_jobs(engine.store, engine.wake, args.jobs, args.steps)
            results[name]["actor_idle_rss_mb"] = [round(ray.get(slot.actor.resident_bytes.remote()) / 2**20)
                                                  for slot in engine.slots]
            results[name]["actors_used"] = len({index for _, index in engine.assignments})
        finally:
            engine.stop()
    results["throughput_ratio_2_vs_1"] = results["ray_2"]["jobs_per_min"] / results["ray_1"]["jobs_per_min"]
    results["overhead_ray_minus_embedded_ms"] = 1000 * (results["ray_1"]["overhead_per_step_s"]
                                                        - results["embedded"]["overhead_per_step_s"])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=2, help="CPUs the local Ray may use (default 2)")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, the order of the engines reversed each time")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("ray_results.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the embedded worker as one actor with one CPU
    scratch = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    results: dict = {"command": f"python bench/bench_ray.py --cpus {args.cpus} --jobs {args.jobs} "
                                f"--steps {args.steps} --rounds {args.rounds}",
                     "relay_ms_per_step": 1000 * relay_cost(scratch / "relay", args.steps), "rounds": []}
    ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=80 * 1024 * 1024, log_to_driver=False)
    try:
        order = ["embedded", "ray_1", "ray_2"]
        for index in range(args.rounds):
            this_order = order if index % 2 == 0 else order[::-1]
            results["rounds"].append(one_round(scratch / f"round{index}", args, this_order))
    finally:
        ray.shutdown()
    for key in ("throughput_ratio_2_vs_1", "overhead_ray_minus_embedded_ms"):
        results[f"median_{key}"] = statistics.median(round_[key] for round_ in results["rounds"])
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
