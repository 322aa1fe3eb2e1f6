"""Many clients polling at once: no request may fail (bench/bench_polls.py is the 20-client, 5-minute version).

Every poll of a job answers with its loss plot. Gradio wrote a returned picture to one cache path per
content at every call, so two polls of the same picture (the blank plot of every queued job, or a
finished job's) rewrote the file while another response was still sending it: "peer closed connection
... expected 1568 bytes" in 3.6 % of polls under 20 clients.
"""

from __future__ import annotations

import threading

from gradio_client import Client
from PIL import Image

from tests.conftest import OWNER

CLIENTS, POLLS = 12, 10


def test_concurrent_polls_of_one_job_all_answer_with_whole_pictures(app_server, finished_job, tmp_path):
    failures: list[str] = []
    plots: list[str] = []

    def poll(index: int) -> None:
        client = Client(app_server.url, verbose=False, download_files=str(tmp_path / f"client{index}"))
        for _ in range(POLLS):
            try:
                outputs = client.predict(job_id=finished_job, owner=OWNER, api_name="/job_status")
                plots.append(outputs[4])
            except Exception as error:  # noqa: BLE001 - every failure is counted, whatever its kind
                failures.append(f"{type(error).__name__}: {error}"[:300])

    threads = [threading.Thread(target=poll, args=(index,)) for index in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    assert failures == [], f"{len(failures)} of {CLIENTS * POLLS} polls failed, e.g. {failures[:3]}"
    assert len(plots) == CLIENTS * POLLS
    for path in plots:
        with Image.open(path) as plot:
            plot.load()  # a truncated file fails here
            assert plot.size == (520, 300)
