"""Many clients polling the app at once: does every request answer, and how fast?

`python -m app --model tiny` runs as its own process; a few jobs are queued (their loss plot is the
same blank picture, the case that broke 3.6 % of polls before pictures were written once per
content) and one runs; `--clients` threads then poll `/job_status` through gradio_client, with the
pictures downloaded, for `--seconds`. Reported: polls, failed polls (with the first errors), and
the latency percentiles. tests/test_app_load.py is the suite's cheaper version.

    PYTHONPATH=. python bench/bench_polls.py --clients 20 --seconds 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

from gradio_client import Client, handle_file

from shapeinv_core.jobs import new_owner_token
from tests.conftest import SMALL, example_image, free_port
from tests.helpers import serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=300.0)
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="bench-polls-"))
    port = free_port()
    process = serve(folder / "data", port, folder / "app.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        owner = new_owner_token()
        starter = Client(url, verbose=False, download_files=str(folder / "start"))
        image = handle_file(str(example_image(folder)))
        jobs = [starter.predict(image=image, mask=None, owner=owner, api_name="/start_inversion",
                                **{**SMALL, "steps": 3000, "checkpoint_every": 500})[0] for _ in range(3)]
        latencies: list[float] = []
        errors: list[str] = []
        deadline = time.monotonic() + args.seconds

        def poll(index: int) -> None:
            client = Client(url, verbose=False, download_files=str(folder / f"client{index}"))
            while time.monotonic() < deadline:
                began = time.perf_counter()
                try:
                    client.predict(job_id=jobs[index % len(jobs)], owner=owner, api_name="/job_status")
                    latencies.append(time.perf_counter() - began)
                except Exception as error:  # noqa: BLE001 - every failure counts
                    errors.append(f"{type(error).__name__}: {error}"[:200])

        threads = [threading.Thread(target=poll, args=(index,)) for index in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        process.terminate()
        process.wait(120)
    total = len(latencies) + len(errors)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    print(f"{args.clients} clients, {args.seconds:.0f} s: {total} polls, {len(errors)} failed "
          f"({100 * len(errors) / max(total, 1):.2f} %)")
    print(f"latency: p50 {cuts[49]:.2f} s, p90 {cuts[89]:.2f} s, p99 {cuts[98]:.2f} s, max {max(latencies):.2f} s")
    for error in errors[:5]:
        print("  ", error)


if __name__ == "__main__":
    main()
