"""A read-only share link for a job: a second secret that shows the job and controls nothing (issue 27).

Through the API against the session's app, and on a backend that runs nothing (its jobs stay queued).
The page itself is walked in tests/test_app_walk.py.
"""

from __future__ import annotations

import pytest
from gradio_client.exceptions import AppError

from app.backend import Backend
from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError
from shapeinv_core.jobs import SweepSpec, new_owner_token
from shapeinv_core.jobs.store import OWNER_TOKEN
from tests.conftest import OWNER
from tests.helpers import chair_like, small_config

ENDED = "This share link does not open a run"
NOT_YOURS = "There is no job .* or it is not yours"


def test_a_share_link_shows_its_job_and_its_secret_controls_nothing(app_server, client, finished_job):
    backend = app_server.backend
    token, note = client.predict(job_id=finished_job, owner=OWNER, api_name="/share_job")
    assert OWNER_TOKEN.match(token) and token != OWNER and "can change nothing" in note
    view = backend.shared(token)
    assert "done" in view["line"] and finished_job not in view["line"]
    assert [path.suffix for path in view["downloads"]] == [".safetensors"], "the concept to download"
    assert view["restored"]["image"].is_file() and view["restored"]["mask"].is_file()

    edit = {"concept_file": None, "prompts": "a red chair in the shape of *s", "num_images": 1, "seed": 0,
            "steps": 2, "guidance": 7.5}
    for api_name, more in (("/cancel_job", {}), ("/resume_job", {}), ("/generate", edit), ("/job_status", {}),
                           ("/run_zip", {}), ("/share_job", {}), ("/unshare_job", {})):
        with pytest.raises(AppError, match=NOT_YOURS):  # the visitor's secret is no owner's
            client.predict(job_id=finished_job, owner=token, api_name=api_name, **more)
    assert backend.shared(token).keys() == view.keys(), "still shared: the visitor could not end it"

    again, _ = client.predict(job_id=finished_job, owner=OWNER, api_name="/share_job")
    with pytest.raises(InputError, match=ENDED):
        backend.shared(token)  # a new link replaces the last
    client.predict(job_id=finished_job, owner=OWNER, api_name="/unshare_job")
    for ended in (again, token, new_owner_token(), "short", "", None):
        with pytest.raises(InputError, match=ENDED):  # revoked, replaced, wrong or malformed: one message
            backend.shared(ended)


@pytest.fixture()
def idle_backend(tmp_path):
    backend = Backend(tmp_path / "data", model="tiny", device="cpu", clip_model=None)  # not started: jobs wait
    yield backend
    backend.stop()


def test_each_job_has_its_own_link_and_a_sweep_has_none_yet(idle_backend):
    store, owner = idle_backend.store, new_owner_token()
    first = store.create(*chair_like(), small_config(), owner=owner)
    second = store.create(*chair_like(), small_config(), owner=owner)
    link = idle_backend.share(first.id, owner)
    assert store.shared(link).id == first.id, "the link opens its own job and no other"
    assert idle_backend.shared(link)["line"].startswith("A run shared with you, to look at: waiting to start")
    assert idle_backend.shared(idle_backend.share(second.id, owner))["restored"]["concept"] == second.id
    assert store.shared(link).id == first.id, "sharing another job leaves this link as it was"
    with pytest.raises(InputError, match=NOT_YOURS):
        idle_backend.share(first.id, new_owner_token())
    spec = SweepSpec(small_config(), [0.0, 0.1], ["a red chair in the shape of *s"], GenerationConfig(steps=2))
    sweep = store.create_sweep(*chair_like(), spec, owner=owner)
    with pytest.raises(InputError, match="A sweep cannot be shared by a link yet"):
        idle_backend.share(sweep.id, owner)
