"""The "Compare weights" view and the Edit view's metrics, through gradio_client (tiny model and CLIP, CPU)."""

from __future__ import annotations

import sqlite3
import time
import zipfile

import numpy as np
import pytest
from gradio_client.exceptions import AppError
from PIL import Image

from shapeinv_core.evaluation.metrics import ClipScorer, generated_mask_iou
from shapeinv_core.evaluation.report import read_metrics_csv
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.jobs import SWEEP, JobStore
from shapeinv_core.method.inversion import pad_to_square
from tests.conftest import OWNER, SMALL, edit_while_running, example_image, wait_for_status

PROMPTS = "a photo of chair in the shape of *s\na red chair in the shape of *s"


def start_sweep(client, image, weights: str = "0, 0.3", **settings) -> str:
    from gradio_client import handle_file

    values = {key: value for key, value in SMALL.items() if key != "mask_weight"}
    values.update(steps=4, checkpoint_every=2)
    values.update(settings)
    sweep_id, status, _, _ = client.predict(image=handle_file(str(image)), mask=None, weights=weights,
                                            prompts=PROMPTS, num_images=1, sample_steps=2, guidance=7.5, owner=OWNER,
                                            api_name="/start_sweep", **values)
    assert status["status"] in ("queued", "running") and status["kind"] == SWEEP, status
    return sweep_id


def sweep_results(client, sweep_id: str) -> tuple:
    return client.predict(job_id=sweep_id, owner=OWNER, api_name="/sweep_results")


def same_pixels(a, b) -> bool:
    return np.array_equal(np.asarray(Image.open(a).convert("RGB")), np.asarray(Image.open(b).convert("RGB")))


@pytest.fixture(scope="module")
def tiny_clip():
    return ClipScorer.from_pretrained("tiny", device="cpu")


def test_sweep_shows_grid_plot_table_and_its_concepts_edit_with_metrics(app_server, client, tmp_path, tiny_clip):
    sweep_id = start_sweep(client, example_image(tmp_path))
    wait_for_status(client, sweep_id)
    status, headline, _, losses, grid, tradeoff, table, concepts, timer = sweep_results(client, sweep_id)
    assert status["status"] == "done", status
    assert "done" in headline and status["step"] == 4 and status["note"] is None, "tiny CLIP loads: no note"
    assert "With 4 steps" in headline and "the weights cannot differ yet" in headline, "why its pictures look alike"
    job = app_server.backend.store.get(sweep_id)
    assert job.drawn == 4 and job.draw_seconds > 0, "the pace of its drawing is measured, for the estimates"
    assert [t["weight"] for t in status["terms"]] == [0.0, 0.3] and "| 0.3 |" in losses
    folder = app_server.data / "jobs" / sweep_id
    assert same_pixels(grid, folder / "grid.png") and same_pixels(tradeoff, folder / "tradeoff.png")
    chart = client.predict(status=status, owner=OWNER, api_name="/tradeoff_chart")  # the page's chart of it
    points = {row[0]: row for row in chart["value"]["data"]}  # weight, mask_iou, clip_t
    assert sorted(points) == ["0", "0.3"] and chart["x"] == "clip_t", "tiny CLIP measured CLIP-T"
    on_disk = read_metrics_csv(folder / "metrics.csv")
    assert table["headers"] == ["weight", "prompt", "seed", "image", "mask_iou", "clip_t", "clip_i"]
    assert len(table["data"]) == len(on_disk) == 4
    for shown, row in zip(table["data"], on_disk):
        expected = [round(v, 4) if isinstance(v, float) else v for v in row.values()]
        assert shown == expected
    refs = [item["concept"] for item in status["concepts"]]
    assert refs == [f"{sweep_id}/weight_0", f"{sweep_id}/weight_0.3"]
    assert concepts["__type__"] == "update" and concepts["value"] == refs[0], "nearest 0.1"

    from gradio_client import Client

    other_session = Client(app_server.url, verbose=False, download_files=str(tmp_path))  # never polled the sweep
    chosen = other_session.predict(concept=refs[1], owner=OWNER, api_name="/use_sweep_concept")
    assert chosen == refs[1], "any session of the owner can take a sweep's concept to Edit"
    files = app_server.backend.sweep_downloads(sweep_id, OWNER)
    assert sorted(path.name for path in files) == sorted(
        ["chair_01-weight_0.safetensors", "chair_01-weight_0.3.safetensors", "grid.png", "tradeoff.png",
         "metrics.csv"])
    gallery, note = client.predict(job_id=chosen, concept_file=None, prompts="a red chair in the shape of *s",
                                   num_images=1, seed=0, steps=2, guidance=7.5, owner=OWNER, api_name="/generate")
    assert len(gallery) == 1 and "kept with the job" in note and "jobs/" not in note, "no server path"
    metrics, metrics_note = client.predict(owner=OWNER, api_name="/edit_metrics")  # this session's last generate
    assert metrics["headers"] == ["prompt", "seed", "image", "mask_iou", "clip_t"] and metrics_note == ""
    [[prompt, seed, name, mask_iou, clip_t]] = metrics["data"]
    image = Image.open(gallery[0]["image"]).convert("RGB")
    saved = folder / "weight_0.3" / "edits" / name
    zipped = zipfile.ZipFile(client.predict(job_id=sweep_id, owner=OWNER, api_name="/sweep_zip")).namelist()
    assert f"{sweep_id}/weight_0.3/edits/{name}" in zipped, "the zip is made on demand, with the edits"
    assert same_pixels(gallery[0]["image"], saved) and (prompt, seed) == ("a red chair in the shape of *s", 0)
    _, square_mask = pad_to_square(*RunFolder(folder / "weight_0.3").inputs()[:2])
    assert mask_iou == round(generated_mask_iou(image, square_mask), 4)
    assert clip_t == round(tiny_clip.clip_t([image], ["a red chair"])[0], 4)

    with pytest.raises(AppError, match="name one of its concepts"):
        client.predict(job_id=sweep_id, concept_file=None, prompts="a *s", num_images=1, seed=0, steps=2,
                       guidance=7.5, owner=OWNER, api_name="/generate")


def test_single_run_edit_metrics(client, finished_job, app_server, tiny_clip):
    gallery, _ = client.predict(job_id=finished_job, concept_file=None, prompts="a leopard-print chair in the shape "
                                "of *s", num_images=2, seed=1, steps=2, guidance=7.5, owner=OWNER, api_name="/generate")
    metrics, note = client.predict(owner=OWNER, api_name="/edit_metrics")
    assert len(metrics["data"]) == 2 and note == ""
    image, mask, _ = RunFolder(app_server.data / "jobs" / finished_job).inputs()
    _, square_mask = pad_to_square(image, mask)
    images = [Image.open(item["image"]).convert("RGB") for item in gallery]
    expected_t = tiny_clip.clip_t(images, ["a leopard-print chair"] * 2)
    for row, picture, clip_t in zip(metrics["data"], images, expected_t):
        assert row[3] == round(generated_mask_iou(picture, square_mask), 4) and row[4] == round(clip_t, 4)


def test_edits_are_served_during_a_sweep_which_cancels(client, finished_job, tmp_path):
    sweep_id = start_sweep(client, example_image(tmp_path), steps=300, checkpoint_every=1000)
    edit_while_running(client, sweep_id, finished_job, num_images=1, steps=2)
    client.predict(job_id=sweep_id, owner=OWNER, api_name="/cancel_sweep")
    assert wait_for_status(client, sweep_id)["status"] == "cancelled"
    with pytest.raises(AppError, match="more than this server learns at once"):
        start_sweep(client, example_image(tmp_path), weights="0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8")
    with pytest.raises(AppError, match="is a single run, not a sweep"):
        sweep_results(client, finished_job)


def test_a_database_from_before_sweeps_opens_with_every_job_an_inversion(tmp_path):
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:  # the first release's table
        db.execute("CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, status TEXT "
                   "NOT NULL, created REAL NOT NULL, started REAL, finished REAL, error TEXT, cancel_requested "
                   "INTEGER NOT NULL DEFAULT 0, step INTEGER NOT NULL DEFAULT 0, total_steps INTEGER NOT NULL "
                   "DEFAULT 0, first_step INTEGER NOT NULL DEFAULT 0, run_seconds REAL NOT NULL DEFAULT 0, loss REAL, "
                   "diffusion_loss REAL, mask_loss REAL, resumes INTEGER NOT NULL DEFAULT 0)")
        db.execute("INSERT INTO jobs (id, status, created) VALUES ('0123456789ab', 'done', 0)")
    job = JobStore(tmp_path).get("0123456789ab")
    assert job.kind == "invert" and job.terms is None and job.term_list() == []



def test_an_interrupted_sweep_resumes_and_a_missing_clip_is_explained(tmp_path, caplog):
    from shapeinv_core.config import GenerationConfig
    from shapeinv_core.jobs import QUEUED, SweepSpec, Worker, wait_for
    from shapeinv_core.jobs.worker import CLIP_UNAVAILABLE
    from tests.helpers import chair_like, small_config, tiny_folder

    store = JobStore(tmp_path)
    spec = SweepSpec(small_config(steps=30, batch_size=1, checkpoint_every=1000), [0.0, 0.2], ["a red *s"],
                     GenerationConfig(steps=2))
    job = store.create_sweep(*chair_like(), spec)
    options = {"model": str(tiny_folder()), "device": "cpu", "clip_model": str(tmp_path / "no-clip-here")}
    worker = Worker(store, **options).start()
    try:
        while store.get(job.id).step < 3:
            time.sleep(0.02)
    finally:
        worker.stop()  # as a server stopping: checkpoint, back to the queue
    assert store.get(job.id).status == QUEUED and 3 <= store.get(job.id).step < 30
    worker = Worker(store, **options).start()  # the next start
    try:
        finished = wait_for(store, job.id, timeout=300)
        scores, reason = worker.clip_t([Image.new("RGB", (64, 64))], ["a chair"])
    finally:
        worker.stop()
    assert finished.status == "done" and finished.resumes == 0 and finished.step == 30, finished
    for weight in ("weight_0", "weight_0.2"):
        assert [r["step"] for r in RunFolder(tmp_path / "jobs" / job.id / weight).read_log()] == list(range(1, 31))
    assert len(read_metrics_csv(tmp_path / "jobs" / job.id / "metrics.csv")) == 2
    assert finished.note == reason == CLIP_UNAVAILABLE, "the sweep and the edits say why their CLIP columns are empty"
    assert "--" not in reason and "hf download" not in reason, "in the page's words: no flags, no commands"
    assert scores is None
    assert any("CLIP model folder not found" in record.getMessage() for record in caplog.records), \
        "the cause and the fixes reach the terminal"


def test_a_sweep_takes_the_lora_phase_from_the_advanced_settings_like_a_single_run(app_server, client, tmp_path):
    sweep_id = start_sweep(client, example_image(tmp_path), steps=2, checkpoint_every=2, tune="lora", lora_steps=2,
                           lora_lr=1e-3)
    wait_for_status(client, sweep_id)
    status = sweep_results(client, sweep_id)[0]
    assert status["status"] == "done" and status["step"] == 4, status  # 2 word steps, then 2 LoRA steps
    folder = app_server.data / "jobs" / sweep_id
    for weight in ("weight_0", "weight_0.3"):
        settings = RunFolder(folder / weight).inputs()[2]
        assert (settings.tune, settings.lora_steps, settings.lora_lr) == ("lora", 2, 1e-3), weight
        assert (folder / weight / "pytorch_lora_weights.safetensors").is_file(), weight
