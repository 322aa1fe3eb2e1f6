"""The folders a server holds: one live server per data folder; its temporary outbox removed on exit, and
an outbox left by a killed server removed at the next start (real processes, real signals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from app.backend import Backend
from shapeinv_core.errors import InputError
from shapeinv_core.jobs.folders import GRACE_SECONDS, OUTBOX_LOCK
from tests.conftest import free_port
from tests.helpers import serve, wait_until


def outboxes(folder) -> list:
    return sorted(folder.glob("shapeinv-outbox-*"))


def test_a_live_server_holds_its_data_folder_and_its_outbox_goes_with_it(tmp_path, monkeypatch):
    temp, data, log = tmp_path / "tmp", tmp_path / "data", tmp_path / "app.log"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the servers' temporary folder, to look into
    process = serve(data, free_port(), log)
    try:
        [outbox] = wait_until(lambda: outboxes(temp), "the server's outbox")
        with pytest.raises(InputError, match="Another ShapeInversion server .*pid .* is using the data folder"):
            Backend(data, model="tiny", clip_model=None)
        second = subprocess.run([sys.executable, "-m", "app", "--model", "tiny", "--device", "cpu", "--data",
                                 str(data), "--port", str(free_port())], capture_output=True, text=True, timeout=300,
                                env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"})
        assert second.returncode == 2, second.stderr[-2000:]
        assert "error: Another ShapeInversion server" in second.stderr and "--data" in second.stderr
        assert "Traceback" not in second.stderr
        assert process.poll() is None, "the first server keeps running"

        process.send_signal(signal.SIGKILL)
        process.wait(60)
        assert outbox.is_dir(), "a killed server cannot clean up after itself"
        # Past the grace for a server that has not locked its new outbox yet: on a fast run the kill can come
        # sooner after the start than GRACE_SECONDS, and this test is about the kill, not the grace.
        aged = time.time() - 2 * GRACE_SECONDS
        os.utime(outbox / OUTBOX_LOCK, (aged, aged))
        monkeypatch.setattr(tempfile, "tempdir", str(temp))
        backend = Backend(data, model="tiny", clip_model=None)  # the dead server's folder is free again
        assert not outbox.exists(), "the killed server's outbox is removed at the next start"
        assert outboxes(temp) == [backend.outbox_dir]
        backend.stop()
        assert outboxes(temp) == []
    finally:
        if process.poll() is None:
            process.kill()

    process = serve(data, free_port(), log)  # the folder is free after a stop() in this process too
    [outbox] = wait_until(lambda: outboxes(temp), "the server's outbox")
    process.send_signal(signal.SIGTERM)
    assert process.wait(120) == 0, log.read_text()[-2000:]
    assert not outbox.exists(), "SIGTERM removes the outbox"
