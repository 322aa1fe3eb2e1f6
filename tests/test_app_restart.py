"""A job survives the app process dying: the next start resumes it from its last checkpoint."""

from __future__ import annotations

import signal

import torch
from gradio_client import Client

from shapeinv_core.files.runs import RunFolder
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.workflow import learn
from shapeinv_core.models.loading import load_model
from tests.conftest import example_image, free_port, start_job, wait_for_status
from tests.helpers import python_warnings, serve


def test_killed_mid_job_resumes_from_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    data, log, port = tmp_path / "data", tmp_path / "app.log", free_port()
    process = serve(data, port, log)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path))
        job_id = start_job(client, example_image(tmp_path), steps=24, checkpoint_every=4, batch_size=2,
                           mask_weight=0.3)
        run = RunFolder(data / "jobs" / job_id)
        wait_for_status(client, job_id, lambda s: s["status"] == "running" and s["step"] >= 6)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    killed_at = [step for step, _ in run.checkpoints()]
    assert killed_at and max(killed_at) < 24 and not run.has_concept(), "killed mid-job, after a checkpoint"

    process = serve(data, port, log)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path))
        status = wait_for_status(client, job_id)
    finally:
        process.terminate()
        process.wait(30)
    assert status["status"] == "done" and status["resumed"] == 1, status
    assert python_warnings(log.read_text()) == [], "two start-ups, a full model load and a job: no Python warnings"
    steps_logged = [record["step"] for record in run.read_log()]
    assert steps_logged == list(range(1, 25)), "each step is logged once across the two processes"

    image, mask, config = run.inputs()
    reference = learn(load_model("tiny", device="cpu"), image, mask, config, tmp_path / "uninterrupted")
    resumed = Concept.load(run.path)
    assert torch.equal(resumed.vectors, reference.vectors)
    assert resumed.settings == reference.settings
