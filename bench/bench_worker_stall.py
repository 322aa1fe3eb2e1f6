"""How long can edit requests hold up a running inversion? (the worker's `serve_budget`)

The worker serves edits between two training steps. Without a budget it serves every waiting
request before the next step, so a crowd of edit requests stalls the training loop for as long
as the crowd keeps asking. With a budget it serves requests for at most that long (always at
least one) and then takes a step.

For each budget: one long inversion on the tiny model, and `--clients` threads asking for edits
(`--images` images at `--sample-steps` steps each) non-stop for `--seconds`. Reported: the
longest and the median time between two training steps, and the edits served.

    PYTHONPATH=. python bench/bench_worker_stall.py --seconds 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from shapeinv_core.config import GenerationConfig, InversionConfig
from shapeinv_core.jobs import JobStore, Worker, wait_for
from shapeinv_core.method.concept import Concept
from tests.helpers import chair_like, tiny_folder


def run(budget: float | None, args, folder: Path) -> dict:
    store = JobStore(folder)
    worker = Worker(store, model=str(tiny_folder()), device="cpu", preview_steps=0, serve_budget=budget).start()
    image, mask = chair_like()
    settings = {"resolution": 64, "batch_size": 1, "appearance": "photo", "initializer": "chair"}  # as recorded
    try:
        first = store.create(image, mask, InversionConfig(steps=2, checkpoint_every=2, **settings))
        wait_for(store, first.id)
        concept = Concept.load(store.job_dir(first.id))
        job = store.create(image, mask, InversionConfig(steps=100_000, checkpoint_every=100_000, **settings))
        while store.get(job.id).step < 3:
            time.sleep(0.05)
        stop = threading.Event()
        served = [0]
        edit = GenerationConfig(num_images=args.images, steps=args.sample_steps, batch_size=args.images)

        def client() -> None:
            while not stop.is_set():
                worker.generate(concept, ["a red chair in the shape of *s"], edit)
                served[0] += 1

        threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        steps_at: list[tuple[float, int]] = []
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            steps_at.append((time.monotonic(), store.get(job.id).step))
            time.sleep(0.02)
        stop.set()
        store.cancel(job.id)
        for thread in threads:
            thread.join(120)
        wait_for(store, job.id, timeout=600)
    finally:
        worker.stop()
    changes = [moment for (moment, step), (_, before) in zip(steps_at[1:], steps_at) if step != before]
    gaps = [b - a for a, b in zip(changes, changes[1:])] or [args.seconds]
    return {"max_gap": max(gaps), "median_gap": statistics.median(gaps), "steps": len(changes), "edits": served[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--sample-steps", type=int, default=10)
    args = parser.parse_args()
    print(f"{args.clients} clients asking non-stop for {args.images} images x {args.sample_steps} steps, "
          f"{args.seconds:g} s per budget (tiny model, CPU)")
    print("| serve budget | longest gap between steps | median gap | steps taken | edits served |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for budget in (None, 3.0, 0.0):
        with tempfile.TemporaryDirectory() as folder:
            result = run(budget, args, Path(folder))
        name = "none (serve all waiting)" if budget is None else f"{budget:g} s"
        print(f"| {name} | {result['max_gap']:.2f} s | {result['median_gap']:.2f} s | {result['steps']} | "
              f"{result['edits']} |", flush=True)


if __name__ == "__main__":
    main()
