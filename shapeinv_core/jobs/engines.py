"""Which engine runs the jobs: the embedded worker thread (default) or Ray actors (`--engine ray`).

Both answer the app the same way (`start`, `stop`, `wake`, `state`, `generate`, `clip_t` ...).
Ray is imported only when it is asked for, so the embedded default never loads it.
"""

from __future__ import annotations

from ..errors import InputError
from .store import JobStore
from .worker import Worker

EMBEDDED, RAY = "embedded", "ray"
ENGINES = (EMBEDDED, RAY)


def create_engine(kind: str, store: JobStore, ray_address: str | None = None, workers: int | None = None,
                  **worker_options):
    """A `Worker`, or a `RayEngine` with `ray_address` (None: a local Ray) and `workers` actors."""
    if kind == EMBEDDED:
        if ray_address or workers:
            raise InputError("--ray-address and --workers need --engine ray (the embedded engine has one worker).")
        return Worker(store, **worker_options)
    if kind != RAY:
        raise InputError(f"Unknown engine {kind!r}: use {' or '.join(ENGINES)}.")
    try:
        from .ray_engine import RayEngine
    except ImportError as error:
        raise InputError("--engine ray needs Ray: pip install 'shapeinv[ray]' (or -r requirements-ray.txt) "
                         f"on this machine and every Ray host ({error}).") from error
    return RayEngine(store, address=ray_address or None, workers=workers, **worker_options)
