"""The `shapeinv` command, run in-process through its real entry point on the tiny model."""

import json

import pytest
import torch
from PIL import Image

from helpers import chair_like, tiny_folder
from shapeinv_core.cli import build_parser, main
from shapeinv_core.method.concept import Concept


@pytest.fixture
def photo(tmp_path):
    image, mask = chair_like((80, 64))
    image.save(tmp_path / "chair.png")
    mask.save(tmp_path / "chair_mask.png")
    return tmp_path / "chair.png", tmp_path / "chair_mask.png"


def invert_args(image, run_dir, *extra):
    """The word alone (`--tune none`): the default LoRA phase has its own tests (test_control, test_shape_method)."""
    return ["invert", str(image), "-o", str(run_dir), "--model", str(tiny_folder()), "--device", "cpu",
            "--resolution", "64", "--steps", "4", "--batch", "1", "--checkpoint-every", "2", "--tune", "none", *extra]


def run_cli(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_invert_writes_the_run_folder(photo, tmp_path, capsys):
    image, mask = photo
    run_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, invert_args(image, run_dir, "--mask", str(mask), "--mask-weight", "0.2"))
    assert code == 0, out
    for name in ("input.png", "mask.png", "config.json", "learned_embeds.safetensors", "concept.json",
                 "log.jsonl", "attention.png"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_000002.safetensors",
                                                                         "step_000004.safetensors"]
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert {"step", "loss", "diffusion_loss", "mask_loss", "seconds"} <= set(log[0])
    assert json.loads((run_dir / "config.json").read_text())["mask_weight"] == 0.2
    assert Image.open(run_dir / "attention.png").size[0] > Image.open(run_dir / "attention.png").size[1]
    assert "shapeinv generate" in out


def test_running_again_resumes_from_the_last_checkpoint(photo, tmp_path, capsys):
    image, mask = photo
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli(capsys, invert_args(image, whole, "--mask", str(mask)))[0] == 0
    assert run_cli(capsys, invert_args(image, broken, "--mask", str(mask)))[0] == 0
    # As if the process died after step 2: results and the later checkpoint never got written.
    for name in ("learned_embeds.safetensors", "concept.json", "checkpoints/step_000004.safetensors"):
        (broken / name).unlink()
    code, out, _ = run_cli(capsys, invert_args(image, broken))  # no --mask: the run's own mask is reused
    assert code == 0 and "resuming with the run's mask" in out
    assert torch.equal(Concept.load(broken).vectors, Concept.load(whole).vectors)
    assert [json.loads(x)["step"] for x in (broken / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_invert_without_a_mask_extracts_one(photo, tmp_path, capsys):
    image, true_mask = photo
    code, out, _ = run_cli(capsys, invert_args(image, tmp_path / "run", "--steps", "1"))
    assert code == 0 and "mask extracted with" in out
    saved = Image.open(tmp_path / "run" / "mask.png")
    assert saved.size == Image.open(true_mask).size


def test_generate_writes_images_and_a_grid(photo, tmp_path, capsys):
    image, mask = photo
    run_dir = tmp_path / "run"
    assert run_cli(capsys, invert_args(image, run_dir, "--mask", str(mask), "--steps", "1"))[0] == 0
    out_dir = tmp_path / "images"
    code, out, _ = run_cli(capsys, ["generate", str(run_dir), "a red chair in the shape of *s",
                                    "a leopard-print chair in the shape of *s", "-n", "2", "--steps", "2",
                                    "--device", "cpu", "-o", str(out_dir)])
    assert code == 0, out
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert "grid.png" in pngs and len(pngs) == 5
    assert "00_a-red-chair-in-the-shape-of-s_seed0.png" in pngs
    grid = Image.open(out_dir / "grid.png")
    assert grid.size[1] > grid.size[0] / 2, "two rows of prompts"


def test_mask_command_writes_mask_and_overlay(photo, tmp_path, capsys):
    image, _ = photo
    code, out, _ = run_cli(capsys, ["mask", str(image), "-o", str(tmp_path / "m.png"), "--method", "fallback",
                                    "--overlay", str(tmp_path / "o.png")])
    assert code == 0 and "fallback" in out
    assert Image.open(tmp_path / "m.png").size == (80, 64) and Image.open(tmp_path / "o.png").mode == "RGB"


def test_a_mask_of_another_size_is_resized_and_said(photo, tmp_path, capsys):
    image, mask = photo
    Image.open(mask).resize((40, 32)).save(tmp_path / "small_mask.png")
    code, out, _ = run_cli(capsys, invert_args(image, tmp_path / "run", "--mask", str(tmp_path / "small_mask.png"),
                                               "--steps", "1"))
    assert code == 0 and "resized" in out


def _one_line_error(capsys, args, *words):
    code, _, err = run_cli(capsys, args)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_bad_input_gets_one_line_and_exit_code_2(photo, tmp_path, capsys):
    image, _ = photo
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    _one_line_error(capsys, invert_args(text, tmp_path / "r1"), "notes.png", "PNG")
    _one_line_error(capsys, invert_args(tmp_path / "missing.jpg", tmp_path / "r2"), "not found")
    Image.new("L", (80, 64), 0).save(tmp_path / "empty.png")
    _one_line_error(capsys, invert_args(image, tmp_path / "r3", "--mask", str(tmp_path / "empty.png")), "empty")
    Image.new("L", (80, 64), 255).save(tmp_path / "full.png")
    _one_line_error(capsys, invert_args(image, tmp_path / "r4", "--mask", str(tmp_path / "full.png")), "whole image")
    _one_line_error(capsys, invert_args(image, tmp_path / "r5", "--mask-weight", "3"), "mask_weight")
    _one_line_error(capsys, ["generate", str(tmp_path), "a red chair in the shape of *s", "-o", str(tmp_path / "o")],
                    "learned_embeds.safetensors", "shapeinv invert")
    _one_line_error(capsys, invert_args(image, tmp_path / "r6", "--model", str(tmp_path / "nowhere")), "not found")


@pytest.mark.parametrize("command, flags, words", [
    ("invert", ["--attention-res", "16"], ["attention_res 16", "its layers have 4, 8", "'all'"]),
    ("invert", ["--model", "tiny", "--attention-res", "16"], ["attention_res 16", "its layers have 4, 8"]),
    ("invert", ["--attention-layers", "mid", "--attention-res", "8"], ["attention_res 8", "'mid'", "have 4"]),
    # SDXL has no cross-attention at its highest latent resolution: 8 is the latent side of 64 px, not a grid.
    ("invert", ["--model", "tiny-sdxl", "--attention-res", "8"], ["attention_res 8", "its layers have 2, 4"]),
    ("invert", ["--tune", "lora", "--lora-rank", "64"], ["lora_rank 64", "at most 32"]),
    ("sweep", ["--attention-res", "64", "--weights", "0,0.1"], ["attention_res 64", "its layers have 4, 8"]),
])
def test_what_the_models_configs_rule_out_is_refused_before_it_loads(photo, tmp_path, capsys, monkeypatch, command,
                                                                     flags, words):
    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr("shapeinv_core.models.loading.load_model", load_model)
    image, mask = photo
    args = invert_args(image, tmp_path / "run", "--mask", str(mask), *flags)
    capsys.readouterr()  # building the tiny model's folder (first use) may have printed
    code, out, err = run_cli(capsys, [command, *args[1:]])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "loading" not in out and "step/s" not in err and "it/s" not in err, "no model load, no progress bar"
    assert not (tmp_path / "run").exists(), "refused before the run folder was made"


def test_concept_files_are_as_readable_as_the_runs_other_files_and_not_named_after_the_class_word(photo, tmp_path,
                                                                                                 capsys):
    import stat

    image, mask = photo  # chair.png: a concept named "chair" would take over every "chair" in other tools' prompts
    run_dir = tmp_path / "run"
    code, out, _ = run_cli(capsys, invert_args(image, run_dir, "--mask", str(mask), "--steps", "2",
                                               "--tune", "lora", "--lora-steps", "8"))  # the default's LoRA phase
    assert code == 0, out
    assert (run_dir / "chair-shape.safetensors").is_file() and not (run_dir / "chair.safetensors").exists()
    assert (run_dir / "chair-shape-lora.safetensors").is_file()
    kept = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert kept == ["lora_step_000006.safetensors", "lora_step_000008.safetensors", "step_000002.safetensors"], \
        "only the newest LoRA checkpoints are kept"
    mode = stat.S_IMODE((run_dir / "config.json").stat().st_mode)  # what the umask gives a plain file
    for path in [run_dir / "learned_embeds.safetensors", run_dir / "chair-shape.safetensors",
                 run_dir / "chair-shape-lora.safetensors", run_dir / "pytorch_lora_weights.safetensors",
                 *(run_dir / "checkpoints").iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path.name, oct(path.stat().st_mode), oct(mode))
    _one_line_error(capsys, invert_args(image, tmp_path / "r2", "--name", "chair"), "class word", "'chair-shape'")
    _one_line_error(capsys, invert_args(image, tmp_path / "r3", "--initializer", "stool", "--name", "stool"),
                    "initializer")


def test_an_error_after_the_model_loaded_is_a_line_of_its_own(tmp_path, capsys):
    # Huge but finite vectors pass the file's checks and are refused against the loaded model's words,
    # after the progress bar has started.
    from safetensors.torch import save_file

    save_file({"*s": torch.full((1, 32), 1e30)}, str(tmp_path / "huge.safetensors"))
    args = ["generate", str(tmp_path / "huge.safetensors"), "a red chair in the shape of *s", "-o",
            str(tmp_path / "out"), "--model", str(tiny_folder()), "--device", "cpu", "--steps", "2"]
    code, _, err = run_cli(capsys, args)
    assert code == 2, err
    [line] = [line for line in err.split("\n") if "error:" in line]
    assert line.startswith("error: ") and "over 100 times the longest word" in line, err
    assert not list((tmp_path / "out").glob("*.png")), "no black image was drawn"


def test_generate_refuses_a_prompt_without_the_placeholder(photo, tmp_path, capsys):
    image, mask = photo
    run_dir = tmp_path / "run"
    assert run_cli(capsys, invert_args(image, run_dir, "--mask", str(mask), "--steps", "1"))[0] == 0
    _one_line_error(capsys, ["generate", str(run_dir), "a red chair", "-o", str(tmp_path / "o")],
                    "in the shape of *s")


def test_serve_hands_its_flags_to_the_web_app(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["serve", "--help"])
    assert stopped.value.code == 0
    help_text = capsys.readouterr().out
    assert "--data" in help_text and "SHAPEINV_MODEL" in help_text
    assert "serve" in build_parser().format_help()
