import pytest
import torch
from PIL import Image

from helpers import chair_like, small_config, tiny_model
from shapeinv_core.cli import main
from shapeinv_core.config import GenerationConfig
from shapeinv_core.evaluation.metrics import generated_mask_iou, load_clip_scorer, strip_placeholder
from shapeinv_core.evaluation.report import read_metrics_csv
from shapeinv_core.generation.sweep import sweep
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.inversion import invert, pad_to_square

PROMPTS = ["a photo of chair in the shape of *s", "a red chair in the shape of *s"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    image, mask = chair_like((80, 64))
    result = sweep(tiny_model(), image, mask, small_config(steps=3), [0.0, 0.5], PROMPTS, folder,
                   generation=GenerationConfig(steps=2), seeds=[0, 1], clip_model="tiny", mask_method="fallback")
    return result, image, mask


def test_each_weight_equals_a_separate_run(swept):
    result, image, mask = swept
    for weight in (0.0, 0.5):
        alone = invert(tiny_model(), image, mask, small_config(steps=3, mask_weight=weight))
        learned = Concept.load(result.folder / f"weight_{weight:g}")
        torch.testing.assert_close(learned.vectors, alone.vectors, atol=1e-5, rtol=1e-4)
        assert learned.settings.mask_weight == weight


def test_every_output_exists_and_agrees_with_metrics_csv(swept):
    result, image, mask = swept
    folder = result.folder
    for name in ("grid.png", "metrics.csv", "tradeoff.png"):
        assert (folder / name).is_file()
    rows = read_metrics_csv(folder / "metrics.csv")
    assert len(rows) == 2 * 2 * 2  # weights x prompts x seeds
    assert {(r["weight"], r["prompt"], r["seed"]) for r in rows} == {
        (w, p, s) for w in (0.0, 0.5) for p in PROMPTS for s in (0, 1)}
    square_image, square_mask = pad_to_square(image, mask)
    scorer, reason = load_clip_scorer("tiny", device="cpu")
    assert reason is None
    for row in rows:
        generated = Image.open(folder / row["image"]).convert("RGB")
        assert row["mask_iou"] == pytest.approx(generated_mask_iou(generated, square_mask, method="fallback"))
        prompt = strip_placeholder(row["prompt"])
        assert row["clip_t"] == pytest.approx(scorer.clip_t([generated], [prompt])[0], abs=1e-4)
        assert row["clip_i"] == pytest.approx(scorer.clip_i([generated], square_image)[0], abs=1e-4)
    grid = Image.open(folder / "grid.png")
    assert grid.size[0] > grid.size[1] * 0.8 and grid.size[1] > 2 * 200, "two rows of 256 px cells"


def test_without_clip_the_sweep_completes_and_says_why(tmp_path, capsys):
    image, mask = chair_like((64, 64))
    image.save(tmp_path / "chair.png")
    mask.save(tmp_path / "mask.png")
    code = main(["sweep", str(tmp_path / "chair.png"), "--mask", str(tmp_path / "mask.png"), "-o",
                 str(tmp_path / "out"), "--weights", "0,0.1", "--prompts", "a red chair in the shape of *s",
                 "--model", "tiny", "--device", "cpu", "--resolution", "64", "--steps", "2", "--batch", "1",
                 "--sample-steps", "2", "--clip-model", str(tmp_path / "no-clip-here"), "--method", "fallback"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("CLIP-T and CLIP-I are left empty") == 1
    rows = read_metrics_csv(tmp_path / "out" / "metrics.csv")
    assert len(rows) == 2 and all(r["clip_t"] is None and r["clip_i"] is None for r in rows)
    assert all(r["mask_iou"] is not None for r in rows)
    assert (tmp_path / "out" / "tradeoff.png").is_file()


@pytest.mark.parametrize("weights", [(0.1, 0.1001), (0.0, 1e-300), (0.3, 0.30000000000000004), (1.0, 0.9999999)])
def test_every_weight_gets_its_own_folder_whose_name_gives_the_weight_back(weights):
    from shapeinv_core.generation.sweep import run_folder_name, weight_of_folder

    names = [run_folder_name(weight) for weight in weights]
    assert len(set(names)) == len(weights), names
    assert [weight_of_folder(name) for name in names] == list(weights), "exact and reversible"
    assert run_folder_name(0.0) == "weight_0" and run_folder_name(0.1) == "weight_0.1", "the usual names stay short"
    for foreign in ("weight_0.10", "weight_nan", "weight_../x", "weight_", "other_0.1"):
        assert weight_of_folder(foreign) is None, foreign
