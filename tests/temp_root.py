"""One private temporary folder per test session, removed when the session ends.

gradio_client downloads each file into a fresh folder named by 40 random hex digits in the system's
temporary folder, then moves the file out and leaves the folder behind, empty: a suite run, or a
load benchmark polling for minutes, left thousands of them in /tmp. Everything the tests and the
libraries they drive put in "the temporary folder" (gradio_client's downloads, Gradio's cache, the
servers' outboxes, pytest's own tmp_path folders, the browsers' profiles) goes here instead.

The folder is held by a lock like a server's outbox (`shapeinv_core.jobs.folders`): removed at the
end of the session, or by the next session when this one was killed.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from shapeinv_core.jobs.folders import new_outbox

PREFIX = "shapeinv-tests-tmp-"
FOLDER_VARIABLE = "SHAPEINV_TEST_TMP"  # the session's folder, for this module's second import and subprocesses
SYSTEM_VARIABLE = "SHAPEINV_SYSTEM_TMP"  # the system's temporary folder, where nothing may be left
_held = []  # the lock of the folder this process made: kept open for the process's life


def use_private_temp(prefix: str = PREFIX) -> Path:
    """Make a private temporary folder this process's (and its subprocesses') temporary folder; returns it.

    Called again in the same session (pytest imports conftest twice, a subprocess inherits the
    environment), it reuses the folder the first call made.
    """
    existing = os.environ.get(FOLDER_VARIABLE)
    if existing and Path(existing).is_dir():
        folder = Path(existing)
    else:
        os.environ[SYSTEM_VARIABLE] = tempfile.gettempdir()
        folder, lock = new_outbox(prefix)  # the folders of sessions that were killed are removed first
        _held.append(lock)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[FOLDER_VARIABLE] = str(folder)
    os.environ["TMPDIR"] = str(folder)  # subprocesses: servers, browsers
    tempfile.tempdir = str(folder)  # this process: tempfile caches its choice
    return folder


def system_temp() -> Path:
    """The system's temporary folder, as it was before `use_private_temp`."""
    return Path(os.environ.get(SYSTEM_VARIABLE) or tempfile.gettempdir())
