"""What `python -m app` says at start-up: no third-party warnings; a model that cannot load is told once in the
terminal with its cause and fixes, and plainly on the page (no server path, no operator command)."""

from __future__ import annotations

import signal

import pytest
from gradio_client import Client, handle_file

from app.handlers import MODEL_UNAVAILABLE
from tests.conftest import example_image, free_port
from tests.helpers import serve, wait_until


def stop(process) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except Exception:
        process.kill()


def test_a_model_that_cannot_load_is_explained_to_the_operator_and_plainly_to_the_visitor(tmp_path):
    broken = tmp_path / "my-broken-model"  # a local folder without model_index.json
    broken.mkdir()
    log, port = tmp_path / "terminal.log", free_port()
    process = serve(tmp_path / "data", port, log, model=str(broken))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        line = wait_until(lambda: (answer := client.predict(api_name="/model_status")[0]) != "" and
                          "Loading" not in answer and answer, "the model load to end")
        assert MODEL_UNAVAILABLE in line
        assert str(tmp_path) not in line and "--model" not in line, "no server path or operator command on the page"

        terminal = wait_until(lambda: "model_index.json" in log.read_text() and log.read_text(), "the terminal line")
        failures = [row for row in terminal.splitlines() if "model_index.json" in row]
        assert len(failures) == 1, terminal  # one line: the cause and the fixes
        assert "--model tiny" in failures[0]

        image = example_image(tmp_path)
        with pytest.raises(Exception) as refused:
            client.predict(image=handle_file(str(image)), mask=handle_file(str(image)), mask_weight=0.1, steps=2,
                           api_name="/start_inversion")
        assert MODEL_UNAVAILABLE in str(refused.value) and str(tmp_path) not in str(refused.value)
        again = wait_until(lambda: len([row for row in log.read_text().splitlines() if "model_index.json" in row]) > 1,
                           "the terminal to say it again when a job is asked for")
        assert again
    finally:
        stop(process)
    start_up = log.read_text()
    assert "warn" not in start_up.lower(), f"third-party warnings at start-up:\n{start_up}"
