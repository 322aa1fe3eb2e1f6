"""Segment Anything through rembg's real `sam` session, with a tiny ONNX encoder/decoder pair the
test writes (SAM's weights cannot be downloaded here). The decoder answers a disc around the first
prompt coordinate, so the test sees whether a click travels through our scaling and rembg's
transforms to the right place and back at the photo's size."""

import numpy as np
import pytest
from PIL import Image

from shapeinv_core.masks import Prompts, extract_mask
from shapeinv_core.masks.prompted import SAM_FILES, sam_on_disk

RADIUS = 60.0  # in SAM's 1024-px input frame
H, W = 684, 1024  # the frame rembg's SAM session feeds the decoder


def write_disc_sam(folder) -> None:
    import onnx
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    encoder = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["image_embeddings"], axes=[0, 1, 2], keepdims=1)],
        "encoder", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [H, W, 3])],
        [helper.make_tensor_value_info("image_embeddings", TensorProto.FLOAT, [1, 1, 1])],
    )
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    grid = [helper.make_tensor(name, TensorProto.FLOAT, [1, 1, H, W], values.ravel().tolist())
            for name, values in (("xs", xs), ("ys", ys))]
    constants = [
        helper.make_tensor("x_start", TensorProto.INT64, [3], [0, 0, 0]),
        helper.make_tensor("y_start", TensorProto.INT64, [3], [0, 0, 1]),
        helper.make_tensor("x_end", TensorProto.INT64, [3], [1, 1, 1]),
        helper.make_tensor("y_end", TensorProto.INT64, [3], [1, 1, 2]),
        helper.make_tensor("shape", TensorProto.INT64, [4], [1, 1, 1, 1]),
        helper.make_tensor("r2", TensorProto.FLOAT, [], [RADIUS**2]),
    ]
    nodes = [
        helper.make_node("Slice", ["point_coords", "x_start", "x_end"], ["px3"]),
        helper.make_node("Slice", ["point_coords", "y_start", "y_end"], ["py3"]),
        helper.make_node("Reshape", ["px3", "shape"], ["px"]),
        helper.make_node("Reshape", ["py3", "shape"], ["py"]),
        helper.make_node("Sub", ["xs", "px"], ["dx"]),
        helper.make_node("Sub", ["ys", "py"], ["dy"]),
        helper.make_node("Mul", ["dx", "dx"], ["dx2"]),
        helper.make_node("Mul", ["dy", "dy"], ["dy2"]),
        helper.make_node("Add", ["dx2", "dy2"], ["d2"]),
        helper.make_node("Sub", ["r2", "d2"], ["masks"]),
        helper.make_node("Identity", ["has_mask_input"], ["iou_predictions"]),
        helper.make_node("Identity", ["mask_input"], ["low_res_masks"]),
    ]
    def floats(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    decoder = helper.make_graph(
        nodes, "decoder",
        [floats("image_embeddings", [1, 1, 1]), floats("point_coords", [1, None, 2]),
         floats("point_labels", [1, None]), floats("mask_input", [1, 1, 256, 256]),
         floats("has_mask_input", [1]), floats("orig_im_size", [2])],
        [floats("masks", [1, 1, H, W]), floats("iou_predictions", [1]), floats("low_res_masks", [1, 1, 256, 256])],
        initializer=grid + constants,
    )
    for graph, name in ((encoder, SAM_FILES[0]), (decoder, SAM_FILES[1])):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        onnx.save(model, folder / name)


@pytest.fixture
def disc_sam(empty_rembg_home):
    write_disc_sam(empty_rembg_home / "models" / "sam")
    assert sam_on_disk()
    return empty_rembg_home


def test_a_click_reaches_sam_and_its_mask_comes_back_at_the_photo_size(disc_sam):
    photo = Image.new("RGB", (1600, 1000), (200, 200, 205))  # larger than the work size: scaled twice
    result = extract_mask(photo, prompts=Prompts(points=((1100.0, 380.0),)))
    assert result.method == "sam" and result.prompted and result.note is None
    mask = np.asarray(result.mask) > 127
    assert mask.shape == (1000, 1600)
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() - 1100) < 3 and abs(ys.mean() - 380) < 3  # centred on the click
    radius = RADIUS * 1600 / 1024  # SAM's frame is the 1024-px work image here
    assert mask.sum() == pytest.approx(np.pi * radius**2, rel=0.05)


def test_sam_answers_only_prompts(disc_sam):
    photo = Image.new("RGB", (400, 300), (200, 200, 205))
    photo.paste((30, 40, 160), (150, 80, 250, 220))
    assert extract_mask(photo).method == "fallback"  # no prompt: the automatic mask
    pointed = extract_mask(photo, prompts=Prompts(points=((200.0, 150.0),), background_points=((20.0, 20.0),),
                                                  box=(140.0, 70.0, 260.0, 230.0)))
    assert pointed.method == "sam"
    ys, xs = np.nonzero(np.asarray(pointed.mask) > 127)
    assert abs(xs.mean() - 200) < 3 and abs(ys.mean() - 150) < 3  # points go first, then the box's corners
