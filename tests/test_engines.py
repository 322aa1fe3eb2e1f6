"""Choosing the engine: the embedded default never imports Ray; `--engine ray` options are checked up front."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from app.__main__ import build_parser, check_engine_options
from shapeinv_core.errors import InputError
from shapeinv_core.jobs import JobStore, Worker
from shapeinv_core.jobs.engines import create_engine
from tests.conftest import ROOT


def parse(argv: list[str]):
    parser = build_parser()
    args = parser.parse_args(argv)
    check_engine_options(parser, args)
    return args


def test_the_embedded_app_and_cli_never_import_ray(tmp_path):
    script = (
        "import sys\n"
        "import app.__main__, shapeinv_core.cli, shapeinv_core.jobs\n"
        "from app.backend import Backend\n"
        f"backend = Backend({str(tmp_path)!r}, model='tiny', device='cpu', clip_model=None)\n"
        "assert type(backend.worker).__name__ == 'Worker', type(backend.worker)\n"
        "print('ray' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False", "the embedded mode imported ray"


def test_engine_options_come_from_flags_or_the_environment(monkeypatch):
    assert parse([]).engine == "embedded"
    args = parse(["--engine", "ray", "--ray-address", "10.0.0.1:6379", "--workers", "2"])
    assert (args.engine, args.ray_address, args.workers) == ("ray", "10.0.0.1:6379", 2)
    monkeypatch.setenv("SHAPEINV_ENGINE", "ray")
    monkeypatch.setenv("SHAPEINV_RAY_ADDRESS", "head:6379")
    args = parse([])
    assert (args.engine, args.ray_address, args.workers) == ("ray", "head:6379", None)


@pytest.mark.parametrize("argv, message", [
    (["--workers", "2"], "need --engine ray"),
    (["--ray-address", "head:6379"], "need --engine ray"),
    (["--engine", "spark"], "use one of embedded, ray"),
    (["--engine", "ray", "--workers", "0"], "1 or more"),
])
def test_engine_options_that_cannot_work_are_refused_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        parse(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_the_embedded_engine_is_the_worker_and_ray_without_ray_says_how_to_install_it(tmp_path, monkeypatch):
    store = JobStore(tmp_path)
    assert isinstance(create_engine("embedded", store, model="tiny", device="cpu"), Worker)
    monkeypatch.setitem(sys.modules, "ray", None)  # Ray not installed: `import ray` fails as it would
    monkeypatch.delitem(sys.modules, "shapeinv_core.jobs.ray_engine", raising=False)
    with pytest.raises(InputError, match=r"pip install 'shapeinv\[ray\]'"):
        create_engine("ray", store, model="tiny")
