"""Where the project's generated models and files live: its own module, so `tiny` (which writes
there) and `loading` (which builds `tiny` on first use) need not import each other."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where `tiny` and other generated files live; `SHAPEINV_CACHE` overrides it."""
    return Path(os.environ.get("SHAPEINV_CACHE", Path.home() / ".cache" / "shapeinv"))
