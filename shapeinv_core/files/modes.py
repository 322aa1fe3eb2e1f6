"""Files written with the mode the user's other files get.

safetensors writes its files owner-only (0600) while everything else in a run folder follows the
process's umask (0644 under the usual 022), so a ComfyUI or AUTOMATIC1111 running as another user
(a container, a service account) could not read the concept it was given. Tensor files are set to
the umask's mode after they are written.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it (Linux's /proc), else by setting it back at once."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def like_other_files(*paths: str | Path) -> None:
    """Give each existing file the mode a plain `open(path, "w")` would have given it."""
    mode = 0o666 & ~umask()
    for path in paths:
        if Path(path).is_file():
            os.chmod(path, mode)
