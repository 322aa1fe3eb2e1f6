"""An opened run (My runs, ?job=) comes back ready to go on: the Edit section's concept and the prompts behind its
gallery, not only the photo, mask and settings (issue 27). Against the session's app (tiny model)."""

from __future__ import annotations

from PIL import Image

from app.handlers import Handlers
from tests.conftest import OWNER, SMALL, example_image, wait_for_status

PROMPTS = ["a red chair in the shape of *s", "a chair of green glass in the shape of *s"]


def restored(app_server, job_id: str) -> dict:
    """The restore handler's last outputs by name: the gallery, the prompts box, the Edit section's concept."""
    *_, gallery, prompts, concept = Handlers(app_server.backend).restore(job_id, OWNER)
    return {"gallery": gallery, "prompts": prompts, "concept": concept}


def test_a_restored_job_brings_back_the_prompts_behind_its_gallery_and_its_concept(app_server, client, finished_job):
    gallery, _ = client.predict(job_id=finished_job, concept_file=None, prompts="\n".join(PROMPTS), num_images=1,
                                seed=3, steps=2, guidance=7.5, owner=OWNER, api_name="/generate")
    assert len(gallery) == 2
    back = restored(app_server, finished_job)
    lines = back["prompts"].splitlines()
    assert all(prompt in lines for prompt in PROMPTS) and len(lines) == len(set(lines)), lines
    captions = [caption for _, caption in back["gallery"]]
    assert f"{PROMPTS[1]} (seed 3)" in captions, "the caption is the prompt as typed, *s included"
    assert all(any(caption.startswith(line) for caption in captions) for line in lines), "only the gallery's"
    assert back["concept"] == finished_job
    saved = sorted((app_server.data / "jobs" / finished_job / "edits").glob("*_seed3.png"))
    assert {Image.open(path).text["prompt"] for path in saved} == set(PROMPTS), "the PNG keeps its prompt"


def test_a_restored_sweep_fills_the_edit_concept_with_its_weight_nearest_0_1(app_server, client, tmp_path):
    from gradio_client import handle_file

    values = {key: value for key, value in SMALL.items() if key != "mask_weight"}
    sweep_id = client.predict(image=handle_file(str(example_image(tmp_path))), mask=None, weights="0.5, 0.05",
                              prompts=PROMPTS[0], num_images=1, sample_steps=2, guidance=7.5, owner=OWNER,
                              api_name="/start_sweep", **{**values, "steps": 2})[0]
    assert wait_for_status(client, sweep_id)["status"] == "done"
    back = restored(app_server, sweep_id)
    assert back["concept"] == f"{sweep_id}/weight_0.05"
    client.predict(job_id=back["concept"], concept_file=None, prompts=PROMPTS[1], num_images=1, seed=0, steps=2,
                   guidance=7.5, owner=OWNER, api_name="/generate")
    assert restored(app_server, sweep_id)["prompts"] == PROMPTS[1], "a sweep's edits' prompts come back too"
