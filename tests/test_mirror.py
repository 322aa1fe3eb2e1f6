"""Job folders as values (`jobs.mirror`): what the Ray engine's actors send back must rebuild the folder exactly."""

from __future__ import annotations

import pytest
import torch

from shapeinv_core.files.runs import RunFolder
from shapeinv_core.jobs.mirror import FolderChanges, FolderMirror, apply_changes, read_folder, write_files


def test_a_folder_rebuilt_from_its_changes_equals_the_original_step_by_step(tmp_path):
    worker_side, head_side = tmp_path / "actor", tmp_path / "head"
    worker_side.mkdir()
    run = RunFolder(worker_side, keep_checkpoints=2)
    run.append_log({"step": 1, "loss": 1.0})
    run.save_checkpoint(1, {key: torch.ones(1, 4) for key in ("vectors", "exp_avg", "exp_avg_sq")})
    write_files(head_side, read_folder(worker_side))  # the head's folder and the actor's copy agree
    mirror = FolderMirror(worker_side)

    sent = []
    for step in range(2, 6):  # new log lines, new checkpoints, the oldest deleted
        run.append_log({"step": step, "loss": 1.0 / step})
        run.save_checkpoint(step, {key: torch.full((1, 4), float(step)) for key in ("vectors", "exp_avg",
                                                                                     "exp_avg_sq")})
        changes = mirror.changes()
        sent.append(changes)
        apply_changes(head_side, changes)
        assert read_folder(head_side) == read_folder(worker_side), f"after step {step}"
    assert list(sent[-1].appended) == ["log.jsonl"] and not sent[-1].written.get("log.jsonl"), \
        "a growing log travels as its new lines only"
    assert sent[-1].deleted == ["checkpoints/step_000003.safetensors"]

    run.truncate_log(4)  # a resumed run drops the steps after its checkpoint, then logs one of the same length
    run.append_log({"step": 5, "loss": 0.3})
    changes = mirror.changes()
    assert "log.jsonl" in changes.written, "a rewritten log is sent whole, not as an append"
    apply_changes(head_side, changes)
    assert read_folder(head_side) == read_folder(worker_side)
    assert not mirror.changes(), "nothing changed since"


def test_the_head_refuses_a_path_outside_the_job_folder(tmp_path):
    folder = tmp_path / "job"
    folder.mkdir()
    for bad in ("../escaped.txt", "/etc/passwd-copy", "a/../../escaped.txt"):
        with pytest.raises(ValueError, match="not a path inside the job folder"):
            apply_changes(folder, FolderChanges(written={bad: b"x"}))
    assert not (tmp_path / "escaped.txt").exists()
