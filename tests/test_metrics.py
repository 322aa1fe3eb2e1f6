"""Mask-IoU, the placeholder rule, and CLIP-T/CLIP-I against a direct computation with a tiny CLIP."""

import time

import numpy as np
import pytest
import torch
from PIL import Image

from shapeinv_core.chairs.draw import render_chair
from shapeinv_core.evaluation.metrics import (
    ClipScorer,
    generated_mask_iou,
    load_clip_scorer,
    mask_iou,
    strip_placeholder,
)
from shapeinv_core.models.tiny import build_tiny_clip

# --- Mask-IoU -----------------------------------------------------------------------------------


def left_half(size=4):
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, : size // 2] = 255
    return mask


def test_mask_iou_hand_computed():
    # a: the left two columns (8 px), b: the top two rows (8 px); they share 4 px, union 12 px.
    a = left_half()
    b = np.zeros((4, 4), dtype=bool)
    b[:2, :] = True
    assert mask_iou(a, b) == pytest.approx(4 / 12)
    assert mask_iou(Image.fromarray(a), Image.fromarray(b.astype(np.uint8) * 255)) == pytest.approx(1 / 3)


def test_mask_iou_identity_disjoint_and_empty():
    a = left_half()
    assert mask_iou(a, a) == 1.0
    assert mask_iou(a, 255 - a) == 0.0
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert mask_iou(empty, empty) == 1.0  # both say "no object": they agree
    assert mask_iou(a, empty) == 0.0


def test_mask_iou_reads_0_1_arrays_floats_and_alpha():
    ones = (left_half() > 0).astype(np.int64)
    assert mask_iou(ones, left_half()) == 1.0
    assert mask_iou(ones.astype(np.float32) * 0.9, left_half()) == 1.0
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.paste((10, 10, 10, 255), (0, 0, 2, 4))  # dark but opaque: the alpha channel is the mask
    assert mask_iou(rgba, left_half()) == 1.0


def test_mask_iou_compares_at_one_size():
    small, large = left_half(8), left_half(64)
    assert mask_iou(small, large) == 1.0
    assert mask_iou(large, small, size=(16, 16)) == 1.0
    shifted = np.zeros((64, 64), dtype=np.uint8)
    shifted[:, 16:48] = 255  # the middle half: overlaps the left half on 16 of 48 columns
    assert mask_iou(small, shifted) == pytest.approx(16 / 48, abs=0.02)


def test_generated_mask_iou_runs_the_real_extractor():
    # A procedural chair stands in for a generated image: its exact mask is known.
    image, true_mask = render_chair(3, size=256)
    assert generated_mask_iou(image, true_mask, method="fallback") > 0.9
    shifted = Image.fromarray(np.roll(np.asarray(true_mask), 64, axis=1))
    assert generated_mask_iou(image, shifted, method="fallback") < 0.6, "a shape elsewhere scores low"
    blank = Image.new("RGB", (256, 256), (200, 200, 200))
    assert generated_mask_iou(blank, true_mask, method="fallback") == 0.0, "no object found: nothing kept"


# --- the placeholder rule -------------------------------------------------------------------------


@pytest.mark.parametrize("prompt, expected", [
    ("a leopard-print chair in the shape of *s", "a leopard-print chair"),
    ("a red chair in the shape of *s", "a red chair"),
    ("a photo of chair in the shape of *s", "a photo of chair"),
    ("A red chair In The  shape of *s, on a beach", "A red chair, on a beach"),
    ("*s on a beach", "on a beach"),  # fallback: just the token
    ("a photo of *s, in snow", "a photo of, in snow"),
    ("a plain chair", "a plain chair"),
    ("a chair in the shape of *sofa", "a chair in the shape of *sofa"),  # another word, not the token
    ("a chair within the shape of *s", "a chair within the shape of"),  # whole words only
])
def test_strip_placeholder_default_rule(prompt, expected):
    assert strip_placeholder(prompt) == expected


def test_strip_placeholder_custom_rules():
    import re

    assert strip_placeholder("a red chair shaped like <obj>", "<obj>", rule=" shaped like {token}") == "a red chair"
    assert strip_placeholder("a red chair, *s style", rule="re:,?\\s*{token} style") == "a red chair"
    assert strip_placeholder("X a red chair X", "*s", rule=re.compile("X")) == "a red chair"
    assert strip_placeholder("a red chair shaped like *s", rule=" shaped like") == "a red chair"  # token left over


# --- CLIP-T and CLIP-I ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """The tiny CLIP folder in a private cache, and a scorer loaded from it through `load_clip_scorer`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHAPEINV_CACHE", str(tmp_path_factory.mktemp("cache")))
        scorer, reason = load_clip_scorer("tiny", device="cpu")
        assert reason is None and isinstance(scorer, ClipScorer)
        yield build_tiny_clip(), scorer


def images():
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    return [Image.new("RGB", (48, 48), (200, 30, 30)), Image.new("RGB", (64, 64), (20, 160, 40)), noise]


def by_hand(folder, pictures, prompts):
    """Embeddings computed without ClipScorer: CLIP's preprocessing written out, prompts one at a time."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(folder).eval()
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    pixels = []
    for picture in pictures:  # square inputs: shortest edge 32 (bicubic) is the whole 32x32 crop
        array = np.asarray(picture.resize((32, 32), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
        pixels.append((torch.from_numpy(array).permute(2, 0, 1) - mean) / std)
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.stack(pixels))
        image_embeds = out if isinstance(out, torch.Tensor) else out.pooler_output
        text_embeds = []
        for prompt in prompts:
            out = model.get_text_features(**tokenizer(prompt, return_tensors="pt"))
            text_embeds.append((out if isinstance(out, torch.Tensor) else out.pooler_output)[0])
    normalize = torch.nn.functional.normalize
    return normalize(image_embeds, dim=-1), normalize(torch.stack(text_embeds), dim=-1)


def test_clip_scores_equal_a_direct_computation(tiny_clip):
    folder, scorer = tiny_clip
    pictures = images()
    prompts = ["a red chair", "a green sofa with a lamp", "a leopard print stool"]  # different lengths: padding
    image_embeds, text_embeds = by_hand(folder, pictures, prompts)

    expected_t = (image_embeds * text_embeds).sum(-1)
    assert scorer.clip_t(pictures, prompts) == pytest.approx(expected_t.tolist(), abs=1e-5)
    expected_i = image_embeds @ image_embeds[0]
    assert scorer.clip_i(pictures, pictures[0]) == pytest.approx(expected_i.tolist(), abs=1e-5)
    assert scorer.clip_i(pictures, pictures[0])[0] == pytest.approx(1.0, abs=1e-5)
    # the pairing matters: image k goes with prompt k, and the tiny model tells prompts apart
    swapped = scorer.clip_t(pictures, prompts[::-1])
    assert swapped[0] != pytest.approx(expected_t[0].item(), abs=1e-4)


def test_clip_scores_do_not_depend_on_the_batch(tiny_clip):
    _, scorer = tiny_clip
    pictures, prompts = images(), ["a red chair", "a green sofa with a lamp", "a leopard print stool"]
    together = scorer.clip_t(pictures, prompts)
    one_by_one = ClipScorer(scorer.model, scorer.tokenizer, scorer.image_processor, scorer.device, batch_size=1)
    assert one_by_one.clip_t(pictures, prompts) == pytest.approx(together, abs=1e-5)
    assert scorer.clip_t(pictures, "a red chair")[0] == pytest.approx(together[0], abs=1e-5)
    assert scorer.clip_t([], []) == [] and scorer.clip_i([], pictures[0]) == []
    with pytest.raises(ValueError, match="one prompt per image"):
        scorer.clip_t(pictures, prompts[:2])


def test_load_clip_scorer_fails_fast_with_a_reason(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setenv("SHAPEINV_CACHE", str(tmp_path / "cache"))
    start = time.monotonic()
    for name in (str(tmp_path / "no-such-folder"), "no-such-org/no-such-clip", str(tmp_path)):
        scorer, reason = load_clip_scorer(name, device="cpu")
        assert scorer is None
        assert "\n" not in reason and "CLIP-T and CLIP-I are left empty" in reason
        assert "no-such" in reason or str(tmp_path) in reason
        if name.startswith("no-such-org"):  # offline, a hub id is looked up in the cache only, and the reason says so
            assert "CLIP-T is off" in reason and "_OFFLINE=1 is set" in reason, reason
    assert time.monotonic() - start < 15
    scorer, reason = load_clip_scorer("tiny", device="no-such-device")
    assert scorer is None and "device" in reason
