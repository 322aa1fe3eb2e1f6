"""The folders a server holds: its data folder (one server at a time) and its private temporary outbox.

Both are held with `flock`, which the kernel releases when the process ends in any way (kill -9
included), so a lock never outlives its server and nothing has to be cleared by hand:
- a second server on a data folder would requeue the first one's running job as if it had died
  and take it over; it is refused instead, naming the live server. (Ray workers do not open the
  data folder: the head that holds it sends them inputs by value.)
- an outbox whose lock nobody holds belongs to a server that died; the next server removes it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import IO

from ..errors import InputError

SERVER_LOCK = "server.lock"
OUTBOX_PREFIX = "shapeinv-outbox-"
OUTBOX_LOCK = ".lock"
GRACE_SECONDS = 5.0  # an outbox younger than this may be one whose server has not locked it yet


def hold_data_folder(data_dir: Path) -> IO:
    """Lock `data_dir` for this process's life (close the returned file to let go); refuse if a live server has it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    handle = (data_dir / SERVER_LOCK).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise InputError(f"Another ShapeInversion server ({holder}) is using the data folder {data_dir}; two "
                         "servers on one folder would take over each other's jobs. Stop that server first, or give "
                         "this one its own folder with --data.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle


def new_outbox(prefix: str = OUTBOX_PREFIX) -> tuple[Path, IO]:
    """(a fresh outbox folder in the system's temporary folder, the lock that marks it live); the outboxes of
    servers that died are removed first.

    `prefix` names another family of such folders (the test session's private temporary folder): the same
    lock marks it live, and the same cleaning removes it when its process was killed.
    """
    remove_abandoned_outboxes(prefix=prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    handle = (folder / OUTBOX_LOCK).open("w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return folder, handle


def remove_abandoned_outboxes(temp_dir: Path | None = None, max_age: float = 86400.0,
                              prefix: str = OUTBOX_PREFIX) -> list[Path]:
    """Remove outboxes whose lock no live process holds (and unlocked ones of older versions past `max_age`)."""
    removed = []
    for folder in Path(temp_dir or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            if _abandoned(folder, max_age):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        except OSError:  # another user's folder, or one just removed by another server: not ours to judge
            continue
    return removed


def _abandoned(folder: Path, max_age: float) -> bool:
    lock = folder / OUTBOX_LOCK
    if not lock.is_file():
        return folder.is_dir() and time.time() - folder.stat().st_mtime > max(max_age, GRACE_SECONDS)
    if time.time() - lock.stat().st_mtime < GRACE_SECONDS:
        return False
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live server's
        return True
