"""The app's named API through gradio_client, against the running app (tiny model, CPU)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from safetensors.torch import save_file

from shapeinv_core.method.concept import Concept
from tests.conftest import OWNER, edit_while_running, example_image, job_status, start_job, wait_for_status


def test_upload_mask_start_poll_generate(app_server, client, tmp_path):
    image = example_image(tmp_path)
    overlay, editor, mask, note = client.predict(image=handle_file(str(image)), api_name="/extract_mask")
    mask_values = np.asarray(Image.open(mask).convert("L"))
    assert Image.open(mask).size == Image.open(image).size
    assert set(np.unique(mask_values)) <= {0, 255} and 0.01 < (mask_values > 0).mean() < 0.9
    assert Image.open(overlay).size == Image.open(image).size
    # For a visitor: no paths or flags; the one command is for whoever runs the server (issue 26's note).
    assert "colour-based method" in note and "Click on the chair" in note
    assert "/" not in note and "--" not in note and "U2NET_HOME" not in note
    assert Image.open(editor["background"]).size == Image.open(image).size and len(editor["layers"]) == 1

    job_id, status, _, owner = client.predict(image=handle_file(str(image)), mask=handle_file(mask), mask_weight=0.2,
                                              steps=6, appearance="varied",
                                              api_name="/start_inversion")  # the rest: the form's defaults
    assert len(owner) >= 22, "a client that brings no owner token gets a new one"
    assert status["status"] in ("queued", "running") and status["total_steps"] == 6
    status = wait_for_status(client, job_id, owner=owner)
    assert status["status"] == "done", status
    assert status["step"] == status["total_steps"] == 6 and status["has_concept"]
    assert "folder" not in status and str(app_server.data) not in repr(status), "no server path in a response"

    outputs = client.predict(job_id=job_id, owner=owner, api_name="/job_status")
    headline, loss_plot, attention, downloads = outputs[1], outputs[4], outputs[6], outputs[7]
    assert "done" in headline and Image.open(loss_plot).size == (520, 300) and Image.open(attention).width > 256
    assert [Path(path).name for path in downloads] == ["chair_01.safetensors"]  # named after the photo
    # The page's loss charts: the run's log, each term raw and smoothed, on the picture's scale.
    denoising, mask = client.predict(status=outputs[0], owner=owner, api_name="/loss_charts")
    raw = [row for row in denoising["value"]["data"] if row[2] == "raw"]
    assert [row[0] for row in raw] == list(range(1, 7)) and len(mask["value"]["data"]) == 12
    low, high = mask["y_lim"]
    assert high - low >= 0.2 * max(row[1] for row in mask["value"]["data"]), "noise does not look like swings"
    # The page's own poll leaves the hidden picture alone (the charts show the loss): no drawing a second.
    from app.handlers import Handlers

    polled = Handlers(app_server.backend).poll_job(job_id, owner)
    assert polled[1] == headline and polled[4] == gr.skip() and polled[6] is not None

    run_dir = app_server.data / "jobs" / job_id
    concept = Concept.load(run_dir)  # the CLI's layout: `shapeinv generate DATA/jobs/<id>` reads the same
    assert concept.settings.mask_weight == 0.2 and concept.steps_done == 6 and concept.settings.appearance == "varied"
    assert torch.equal(concept.vectors, Concept.load(next(p for p in downloads if p.endswith(".safetensors"))).vectors)

    gallery, note = client.predict(job_id=job_id, concept_file=None,
                                   prompts="a red chair in the shape of *s\na leopard-print chair in the shape of *s",
                                   num_images=2, seed=3, steps=3, guidance=7.5, owner=owner, api_name="/generate")
    assert [item["caption"] for item in gallery] == [
        "a red chair in the shape of *s (seed 3)", "a red chair in the shape of *s (seed 4)",
        "a leopard-print chair in the shape of *s (seed 3)", "a leopard-print chair in the shape of *s (seed 4)"]
    # Each edit's PNG says how it was made: its prompt and seed, and how its *s was learned.
    saved = Image.open(next(run_dir.rglob("*_seed4.png"))).text
    assert saved["seed"] == "4" and json.loads(saved["concept"])["settings"]["appearance"] == "varied"
    assert json.loads(saved["generation"])["steps"] == 3
    saved = sorted((run_dir / "edits").glob("*.png"))
    assert len(saved) == 4 and all(Image.open(path).size == (64, 64) for path in saved)

    # The whole run is zipped when asked, so it holds the edits made since the job ended.
    zipped = client.predict(job_id=job_id, owner=owner, api_name="/run_zip")
    assert Path(zipped).name == f"chair_01-{job_id}.zip"
    names = zipfile.ZipFile(zipped).namelist()
    assert f"{job_id}/learned_embeds.safetensors" in names and f"{job_id}/config.json" in names
    assert {f"{job_id}/edits/{path.name}" for path in saved} <= set(names)


def test_generate_with_an_uploaded_concept(client, finished_job, app_server, tmp_path):
    learned = Concept.load(app_server.data / "jobs" / finished_job)
    embeds = tmp_path / "my_chair.safetensors"  # made elsewhere: another token, no concept.json
    save_file({"<my-chair>": learned.vectors}, str(embeds))
    gallery, note = client.predict(job_id="", concept_file=handle_file(str(embeds)),
                                   prompts="a red chair in the shape of *s", num_images=1, seed=0, steps=2,
                                   guidance=7.5, owner=OWNER, api_name="/generate")
    assert len(gallery) == 1 and Path(gallery[0]["image"]).is_file()
    assert "kept on the server" in note and "/" not in note, "no server path on the page"


def test_cancel_a_running_job(client, tmp_path, app_server):
    job_id = start_job(client, example_image(tmp_path), steps=300, checkpoint_every=1000)
    wait_for_status(client, job_id, lambda s: s["status"] == "running" and s["step"] >= 2)
    status, note = client.predict(job_id=job_id, owner=OWNER, api_name="/cancel_job")
    assert "Stopping" in note
    status = wait_for_status(client, job_id)
    assert status["status"] == "cancelled" and status["step"] < 300, status
    checkpoints = list((app_server.data / "jobs" / job_id / "checkpoints").glob("step_*.safetensors"))
    assert checkpoints, "a cancelled run keeps a checkpoint to resume from"


def test_two_clients_start_at_once_and_finish_in_order(app_server, tmp_path):
    image = example_image(tmp_path)
    clients = [Client(app_server.url, verbose=False, download_files=str(tmp_path)) for _ in range(2)]
    ids: list[str] = [None, None]
    barrier = threading.Barrier(2)

    def start(index: int) -> None:
        barrier.wait()
        ids[index] = start_job(clients[index], image, seed=index)

    threads = [threading.Thread(target=start, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(ids) and ids[0] != ids[1]
    for index, job_id in enumerate(ids):
        assert wait_for_status(clients[index], job_id)["status"] == "done"
    first, second = sorted((app_server.backend.store.get(job_id) for job_id in ids), key=lambda job: job.seq)
    assert first.finished <= second.started, "one worker runs one job at a time, in queue order"


def test_bad_uploads_and_requests_get_their_message(client, finished_job, tmp_path):
    not_image = tmp_path / "notes.png"
    not_image.write_text("this is text, not a picture")
    with pytest.raises(AppError, match="not an image this app can read"):
        client.predict(image=handle_file(str(not_image)), api_name="/extract_mask")

    heavy = tmp_path / "heavy.png"  # about 1 MB of noise; the test app takes uploads up to 500 kB
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (600, 600, 3), dtype=np.uint8)).save(heavy)
    with pytest.raises(ValueError, match="exceeds the maximum file size"):
        client.predict(image=handle_file(str(heavy)), api_name="/extract_mask")

    huge = tmp_path / "huge.png"
    Image.new("RGB", (2000, 1500), "white").save(huge)  # 3 MP; the test app allows 2 MP
    with pytest.raises(AppError, match="megapixels"):
        client.predict(image=handle_file(str(huge)), api_name="/extract_mask")

    with pytest.raises(AppError, match="more than this server allows"):
        start_job(client, example_image(tmp_path), steps=5000)
    with pytest.raises(AppError, match="not a job id"):
        job_status(client, "../../etc")
    with pytest.raises(AppError, match="at most 4 per request"):
        client.predict(job_id=finished_job, concept_file=None, prompts="a *s\na red *s", num_images=3, seed=0,
                       steps=2, guidance=7.5, owner=OWNER, api_name="/generate")


def test_the_data_folder_is_never_served_and_downloads_come_through_the_owner(app_server, client, finished_job):
    base = f"{app_server.url}gradio_api/file="
    for path in (app_server.data / "jobs.sqlite3", app_server.data / "jobs" / finished_job / "input.png",
                 app_server.data / "jobs" / finished_job / "learned_embeds.safetensors"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + str(path.resolve()), timeout=30)
        assert refused.value.code == 403, path
    downloads = client.predict(job_id=finished_job, owner=OWNER, api_name="/job_status")[7]
    embeds = next(path for path in downloads if path.endswith(".safetensors"))
    data_file = app_server.data / "jobs" / finished_job / Path(embeds).name  # NAME.safetensors of the run
    assert Path(embeds).read_bytes() == data_file.read_bytes(), "the owner gets the file, by value"


def test_queue_length_limit(app_server, client, tmp_path):
    image = example_image(tmp_path)
    blocker = start_job(client, image, steps=300, checkpoint_every=1000)
    wait_for_status(client, blocker, lambda s: s["status"] == "running")
    waiting = [start_job(client, image, steps=300) for _ in range(3)]
    assert job_status(client, waiting[-1])["queue_position"] == 4
    with pytest.raises(AppError, match="The queue is full"):
        start_job(client, image)
    for job_id in [*waiting, blocker]:
        client.predict(job_id=job_id, owner=OWNER, api_name="/cancel_job")
    assert wait_for_status(client, blocker)["status"] == "cancelled"
    assert all(job_status(client, job_id)["status"] == "cancelled" for job_id in waiting)


def test_edit_request_during_a_running_inversion_finishes_first(client, finished_job, tmp_path):
    running = start_job(client, example_image(tmp_path), steps=300, checkpoint_every=1000)
    edit_while_running(client, running, finished_job, num_images=2, steps=3)
    client.predict(job_id=running, owner=OWNER, api_name="/cancel_job")
    assert wait_for_status(client, running)["status"] == "cancelled"


def test_the_new_knobs_lora_under_advanced_the_gradient_ratio_and_the_shape_schedule(client, app_server, tmp_path):
    image = example_image(tmp_path)
    job_id = start_job(client, image, steps=2, tune="lora", lora_steps=2, lora_rank=2, attention_res="8",
                       mask_form="outside", background_weight=0.5, name="oak-chair")
    status = wait_for_status(client, job_id)
    assert status["status"] == "done" and status["step"] == status["total_steps"] == 4, status
    assert status["grad_ratio"] is not None and status["grad_ratio"] > 0
    outputs = client.predict(job_id=job_id, owner=OWNER, api_name="/job_status")
    losses, downloads = outputs[3], outputs[7]
    assert "gradient ratio" in losses
    assert sorted(Path(path).name for path in downloads) == sorted(
        ["oak-chair-lora.safetensors", "oak-chair.safetensors"])
    settings = Concept.load(app_server.data / "jobs" / job_id).settings
    assert (settings.tune, settings.attention_res, settings.mask_form, settings.background_weight) == \
        ("lora", "8", "outside", 0.5)

    def edit(**schedule):
        gallery, _ = client.predict(job_id=job_id, concept_file=None, prompts="a red chair in the shape of *s",
                                    num_images=1, seed=0, steps=4, guidance=7.5, owner=OWNER, api_name="/generate",
                                    **schedule)
        return np.asarray(Image.open(gallery[0]["image"]), dtype=np.int16)

    normal, half, never = edit(), edit(shape_steps=0.5), edit(shape_steps=0.0)
    assert np.array_equal(normal, edit(shape_steps=1.0))
    assert not np.array_equal(normal, half) and not np.array_equal(half, never)


def test_served_copies_and_gradios_cache_are_cleaned(app_server, client, finished_job):
    client.predict(job_id=finished_job, owner=OWNER, api_name="/job_status")  # serves the attention picture
    outbox = app_server.backend.outbox_dir
    assert any(outbox.iterdir()), "files reach Gradio through private copies"
    app_server.backend.clean(now=time.time() + 2 * 3600)  # older than the hour they are kept
    assert sorted(path.name for path in outbox.iterdir()) == [".lock", "gradio"], \
        "the private copies are gone; the lock that marks the outbox live and Gradio's own cache (aged by Gradio) stay"
    assert app_server.demo.delete_cache == (3600, 86400), "Gradio empties its cache of day-old files every hour"
    assert job_status(client, finished_job)["status"] == "done", "a recent finished job is kept"


def test_a_number_dropdown_takes_its_value_as_text_as_the_api_page_documents(client, app_server, tmp_path):
    from shapeinv_core.config import InversionConfig, load_json

    job_id = start_job(client, example_image(tmp_path), steps=1, map_resolution="16")
    assert wait_for_status(client, job_id)["status"] == "done"
    assert load_json(InversionConfig, app_server.backend.store.run(job_id).config_path).map_resolution == 16


def test_an_unknown_endpoint_is_a_404_that_points_to_the_api_page(app_server):
    request = urllib.request.Request(f"{app_server.url.rstrip('/')}/gradio_api/call/no_such_endpoint",
                                     data=b'{"data": []}', headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=60)
    assert answered.value.code == 404, "a caller's mistake, not a server error"
    assert "API page" in answered.value.read().decode()


def test_a_concept_file_the_app_offered_draws_at_the_models_size_with_the_word_the_page_uses(client, finished_job,
                                                                                           tmp_path):
    downloads = client.predict(job_id=finished_job, owner=OWNER, api_name="/job_status")[7]
    [named] = [path for path in downloads if path.endswith(".safetensors")]  # NAME.safetensors, no concept.json
    with pytest.raises(AppError, match=r"does not use the learned word \*s") as refused:
        client.predict(job_id="", concept_file=handle_file(named), prompts="a red chair", num_images=1, seed=0,
                       steps=2, guidance=7.5, owner=OWNER, api_name="/generate")
    assert Path(named).stem not in str(refused.value), "the error names the page's word, not the file's"
    gallery, _ = client.predict(job_id="", concept_file=handle_file(named), prompts="a red chair in the shape of *s",
                                num_images=1, seed=0, steps=2, guidance=7.5, owner=OWNER, api_name="/generate")
    assert Image.open(gallery[0]["image"]).size == (64, 64), "the tiny model's own size, not the default 512"


def test_a_running_jobs_page_says_it_is_paused_while_an_edit_is_drawn(client, finished_job, tmp_path):
    running = start_job(client, example_image(tmp_path), steps=3000, checkpoint_every=1000)
    try:
        wait_for_status(client, running, lambda s: s["status"] == "running" and s["step"] >= 2)
        edit = threading.Thread(target=lambda: client.predict(
            job_id=finished_job, concept_file=None, prompts="a red chair in the shape of *s\na *s", num_images=2,
            seed=0, steps=100, guidance=7.5, owner=OWNER, api_name="/generate"))
        edit.start()
        headlines = set()
        while edit.is_alive():
            headlines.add(client.predict(job_id=running, owner=OWNER, api_name="/job_status")[1])
        assert any("paused while an edit is drawn" in line for line in headlines), headlines
    finally:
        client.predict(job_id=running, owner=OWNER, api_name="/cancel_job")
        wait_for_status(client, running)
