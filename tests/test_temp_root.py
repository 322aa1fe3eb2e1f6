"""The suite keeps its temporary files in one private folder that goes when the session ends (tests/temp_root.py).

gradio_client leaves an empty folder named by 40 hex digits in the temporary folder for every file
it downloads; earlier runs left about 18,000 of them in /tmp.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.conftest import OWNER, ROOT
from tests.temp_root import FOLDER_VARIABLE, PREFIX, system_temp

HEX_FOLDER = re.compile(r"^[0-9a-f]{40}$")
CHILD = """
import os, sys, tempfile
from tests.temp_root import use_private_temp
folder = use_private_temp()
assert tempfile.gettempdir() == str(folder), tempfile.gettempdir()
print(folder, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
"""


def hex_folders(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir() if HEX_FOLDER.match(path.name)}


def test_files_gradio_client_downloads_leave_no_folder_in_the_systems_temporary_folder(client, finished_job,
                                                                                      tmp_path):
    system = system_temp()
    before = hex_folders(system)
    outputs = client.predict(job_id=finished_job, owner=OWNER, api_name="/job_status")
    downloaded = [value for value in outputs if isinstance(value, str) and value.startswith(str(tmp_path))]
    assert downloaded, f"the status brought pictures to download: {outputs}"
    assert not hex_folders(system) - before, "gradio_client left its download folders in the system's temp folder"
    assert Path(tempfile.gettempdir()) != system and Path(tempfile.gettempdir()).name.startswith(PREFIX)


def run_child(mode: str, temp: Path) -> Path:
    env = {key: value for key, value in os.environ.items() if key != FOLDER_VARIABLE}
    env.update(TMPDIR=str(temp), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", CHILD, mode], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == (-signal.SIGKILL if mode == "kill" else 0), done.stderr
    return Path(done.stdout.strip())


def test_the_private_temporary_folder_goes_at_the_end_and_a_killed_sessions_at_the_next_start(tmp_path):
    ended = run_child("end", tmp_path)
    assert ended.parent == tmp_path and ended.name.startswith(PREFIX)
    assert not ended.exists(), "removed when the session ended"

    killed = run_child("kill", tmp_path)
    assert killed.is_dir(), "a killed session cannot clean up after itself"
    old = killed.stat().st_mtime - 60  # past the grace a just-made folder gets before its lock is taken
    os.utime(killed / ".lock", (old, old))
    next_one = run_child("end", tmp_path)
    assert not killed.exists(), "the next session removed the killed one's folder"
    assert not next_one.exists()
