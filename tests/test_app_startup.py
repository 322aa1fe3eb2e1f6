"""What `python -m app` says when its model cannot load: once in the terminal with the cause and the fixes (and
again when a job is asked for), plainly on the page (no server path, no operator command); no Python warnings."""

from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.handlers import MODEL_UNAVAILABLE
from tests.conftest import example_image, free_port
from tests.helpers import python_warnings, serve, wait_until


def test_a_model_that_cannot_load_is_explained_to_the_operator_and_plainly_to_the_visitor(tmp_path):
    broken = tmp_path / "my-broken-model"  # a local folder without model_index.json
    broken.mkdir()
    log, port = tmp_path / "terminal.log", free_port()

    def failure_lines() -> list[str]:  # the terminal's lines about the failed load
        return [row for row in log.read_text().splitlines() if "model_index.json" in row]

    process = serve(tmp_path / "data", port, log, model=str(broken))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        line = wait_until(lambda: "Loading" not in (answer := client.predict(api_name="/model_status")[0]) and answer,
                          "the model load to end")
        assert MODEL_UNAVAILABLE in line
        assert str(tmp_path) not in line and "--model" not in line, "no server path or operator command on the page"

        [failure] = wait_until(failure_lines, "the terminal line")  # one line: the cause and the fixes
        assert "--model toy" in failure and failure.index("--model toy") < failure.index("--model tiny"), \
            "the trained offline model is named first"

        image = example_image(tmp_path)
        with pytest.raises(AppError) as refused:
            client.predict(image=handle_file(str(image)), mask=handle_file(str(image)), mask_weight=0.1, steps=2,
                           api_name="/start_inversion")
        assert MODEL_UNAVAILABLE in str(refused.value) and str(tmp_path) not in str(refused.value)
        wait_until(lambda: len(failure_lines()) == 2, "the terminal to say it again when a job is asked for")
    finally:
        process.terminate()
        process.wait(60)
    assert python_warnings(log.read_text()) == []
