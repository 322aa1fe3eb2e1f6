"""Optional login for a private deployment: `--auth USER:PASS` / SHAPEINV_AUTH, through Gradio's own auth."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from gradio_client import Client

from app.__main__ import build_parser, create, launch_options
from app.backend import Limits
from tests.conftest import free_port
from tests.helpers import tiny_folder


def test_the_login_comes_from_the_flag_or_the_environment(monkeypatch, capsys):
    assert build_parser().parse_args([]).auth is None
    assert build_parser().parse_args(["--auth", "alice:pa:ss"]).auth == ("alice", "pa:ss"), "a ':' in the password"
    monkeypatch.setenv("SHAPEINV_AUTH", "bob:secret")
    assert build_parser().parse_args([]).auth == ("bob", "secret")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--auth", "no-colon"])
    assert "give the login as USER:PASS" in capsys.readouterr().err


def test_with_a_login_the_api_answers_only_after_it(tmp_path):
    backend, demo = create(tmp_path / "data", str(tiny_folder()), device="cpu", limits=Limits(), clip_model=None)
    options = launch_options(backend, "127.0.0.1", free_port(), auth=("alice", "a-long-password"))
    try:
        _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **options)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}gradio_api/info", timeout=60)
        assert refused.value.code == 401
        with pytest.raises(Exception, match="(?i)login|auth|401|credentials"):
            Client(url, verbose=False, auth=("alice", "wrong"))
        client = Client(url, verbose=False, auth=("alice", "a-long-password"))
        line, _ = client.predict(api_name="/model_status")
        assert "tiny" in line or "Model" in line
    finally:
        demo.close()
        backend.stop()
