"""`shapeinv mask|invert|sweep --point X,Y --background-point X,Y --box X0,Y0,X1,Y1`, in-process."""

import numpy as np
import pytest
from PIL import Image

from helpers import tiny_folder
from mask_scenes import bounds, iou, two_chairs
from shapeinv_core.cli import build_parser, main, mask_prompts

pytestmark = pytest.mark.usefixtures("empty_rembg_home")


@pytest.fixture
def scene(tmp_path):
    image, central, side = two_chairs()
    image.save(tmp_path / "two.png")
    return tmp_path / "two.png", central, side


def test_mask_point_and_box_choose_the_chair(scene, tmp_path, capsys):
    path, central, side = scene
    ys, xs = np.nonzero(np.asarray(side)[150:300] > 127)
    point = f"{int(np.median(xs))},{int(np.median(ys)) + 150}"
    assert main(["mask", str(path), "-o", str(tmp_path / "point.png"), "--point", point]) == 0
    assert "mask (fallback)" in capsys.readouterr().out
    assert iou(Image.open(tmp_path / "point.png"), side) >= 0.9
    box = ",".join(str(int(v)) for v in bounds(central))
    assert main(["mask", str(path), "-o", str(tmp_path / "box.png"), "--box", box]) == 0
    assert iou(Image.open(tmp_path / "box.png"), central) >= 0.9


def test_bad_prompt_is_one_line_error(scene, tmp_path, capsys):
    path, _, _ = scene
    assert main(["mask", str(path), "-o", str(tmp_path / "m.png"), "--point", "12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot read the point '12'") and "X,Y" in err and err.count("\n") == 1
    assert main(["mask", str(path), "-o", str(tmp_path / "m.png"), "--box", "0,0,5000,10", "--point", "2000,5"]) == 2
    assert "outside the 900x512 photo" in capsys.readouterr().err


def test_invert_extracts_the_mask_of_the_pointed_object(scene, tmp_path, capsys):
    path, _, side = scene
    ys, xs = np.nonzero(np.asarray(side)[150:300] > 127)
    point = f"{int(np.median(xs))},{int(np.median(ys)) + 150}"
    run_dir = tmp_path / "run"
    code = main(["invert", str(path), "-o", str(run_dir), "--model", str(tiny_folder()), "--device", "cpu",
                 "--resolution", "64", "--steps", "1", "--batch", "1", "--point", point])
    assert code == 0 and "mask extracted with fallback" in capsys.readouterr().out
    assert iou(Image.open(run_dir / "mask.png"), side) >= 0.9


def test_sweep_takes_the_same_prompts():
    args = build_parser().parse_args(["sweep", "chair.jpg", "-o", "out", "--point", "10,20", "--point", "30,40",
                                      "--background-point", "1,2", "--box", "0,0,50,60"])
    prompts = mask_prompts(args)
    assert prompts.points == ((10, 20), (30, 40)) and prompts.background_points == ((1, 2),)
    assert prompts.box == (0, 0, 50, 60)
