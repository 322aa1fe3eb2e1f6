"""The toy world: its renderer, its checks, training end to end, and the committed `--model toy`."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import CLIPTokenizer

from app.__main__ import form_defaults
from shapeinv_core.chairs.colours import OTHER, dominant_colour
from shapeinv_core.chairs.toy_world import (
    COLOURS,
    HELD_OUT_FAMILIES,
    PATTERNS,
    TRAIN_FAMILIES,
    caption,
    render_toy_chair,
)
from shapeinv_core.cli import main as cli_main
from shapeinv_core.generation.generate import _sampling_scheduler
from shapeinv_core.models.loading import TINY, TOY, TOY_MODEL_DIR, load_model, native_resolution, native_resolution_of
from shapeinv_core.models.tiny import write_tiny_clip_vocab
from shapeinv_core.toy.__main__ import TINY_CONFIG
from shapeinv_core.toy.checks import held_out_test_set, one_object
from shapeinv_core.toy.train import (
    WORDS,
    TrainConfig,
    build_components,
    build_tokenizer,
    encode_dataset,
    extend_tokenizer,
    grow_vocabulary,
    learning_rate,
    train,
    trained_words,
)


def test_renderer_draws_the_asked_attributes_with_an_exact_mask():
    chair = render_toy_chair(3, family="armchair", colour="red", pattern="striped")
    assert (chair.family, chair.colour, chair.pattern) == ("armchair", "red", "striped")
    mask = np.asarray(chair.mask)
    assert chair.image.size == chair.mask.size == (64, 64)
    assert set(np.unique(mask)) == {0, 255}
    assert 0.05 < (mask > 0).mean() < 0.6
    again = render_toy_chair(3, family="armchair", colour="red", pattern="striped")
    assert np.array_equal(np.asarray(again.image), np.asarray(chair.image))


def test_training_draws_never_show_a_held_out_family():
    families = {render_toy_chair(seed).family for seed in range(60)}
    assert families <= set(TRAIN_FAMILIES)
    assert not families & set(HELD_OUT_FAMILIES)


def test_captions_say_the_attributes_in_words_the_tokenizer_knows(tmp_path):
    rng = np.random.default_rng(0)
    captions = [caption("slatted", "blue", "leopard", rng) for _ in range(200)]
    assert any("blue" in c and "leopard-print" in c and "slatted" in c for c in captions)
    assert all("red" not in c for c in captions)
    tokenizer = build_tokenizer(tmp_path / "tok")
    assert set(WORDS) >= set(COLOURS) | {"tall", "narrow", "highback"}
    for word in WORDS:  # one token each, though a BPE's merge order once split "leopard" into leop + ar + d
        assert len(tokenizer(word, add_special_tokens=False).input_ids) == 1, word
    assert tokenizer.tokenize("yellow") == ["yellow</w>"]  # "low" is a word of its own, not a piece of others
    for word in WORDS:
        assert tokenizer.decode(tokenizer(word, add_special_tokens=False).input_ids) == word


def test_proportion_words_describe_the_drawn_geometry():
    stools = [render_toy_chair(seed, family="stool") for seed in range(60)]
    tall = [c for c in stools if "tall" in c.shape_words]
    low = [c for c in stools if "low" in c.shape_words]
    assert tall and low and all("lowback" not in c.shape_words for c in stools)  # a stool has no back

    def extent(chair, axis):  # the mask's height (axis 1) or width (axis 0) in pixels
        return np.asarray(chair.mask).any(axis=axis).sum()

    # Depth, legs and the floor line vary too, so single chairs overlap; the words still split the means.
    assert np.mean([extent(c, 1) for c in tall]) > np.mean([extent(c, 1) for c in low]) + 3
    wide = [c for c in stools if "wide" in c.shape_words]
    narrow = [c for c in stools if "narrow" in c.shape_words]
    assert np.mean([extent(c, 0) for c in wide]) > np.mean([extent(c, 0) for c in narrow]) + 3
    assert render_toy_chair(7, family="bar").proportions == render_toy_chair(7, family="bar").proportions


def test_captions_say_a_chairs_proportions_and_fit_the_context(tmp_path):
    tokenizer = build_tokenizer(tmp_path / "tok", context_tokens=20)
    rng = np.random.default_rng(1)
    captions = [caption("slatted", "yellow", "leopard", rng, ("tall", "wide", "highback")) for _ in range(500)]
    assert any("tall" in c for c in captions) and any("highback" in c for c in captions)
    assert all(sum(word in c.split() for word in ("tall", "wide", "highback")) <= 2 for c in captions)
    assert max(len(tokenizer(c).input_ids) for c in captions) <= 20  # nothing is cut off


def test_a_resumed_model_grows_its_vocabulary_without_changing_what_known_words_mean(tmp_path):
    old_words = [w for w in WORDS if w not in ("tall", "low", "narrow", "wide", "highback", "lowback")]
    vocab, merges = write_tiny_clip_vocab(tmp_path / "old", old_words)
    old = CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=20)
    new = build_tokenizer(tmp_path / "new", context_tokens=20)
    _, _, text_encoder = build_components(TrainConfig(**TINY_CONFIG), old)
    prompt = "a photo of a red chair in the shape of a stool"
    with torch.no_grad():
        before = text_encoder(old(prompt, padding="max_length", return_tensors="pt").input_ids)[0]
        old_rows = text_encoder.get_input_embeddings().weight.clone()
    grow_vocabulary(text_encoder, old, new)
    with torch.no_grad():
        after = text_encoder(new(prompt, padding="max_length", return_tensors="pt").input_ids)[0]
    assert torch.allclose(before, after, atol=1e-6)
    rows = text_encoder.get_input_embeddings().weight
    assert rows.shape[0] == len(new) == text_encoder.config.vocab_size
    pieces = old("highback", add_special_tokens=False).input_ids
    assert len(pieces) > 1
    assert torch.allclose(rows[new.convert_tokens_to_ids("highback</w>")], old_rows[pieces].mean(0))
    assert text_encoder.config.eos_token_id == new.eos_token_id


def test_resuming_the_committed_model_adds_the_new_words_and_keeps_how_it_spells_the_ones_it_knows(tmp_path):
    """The committed model learned "armchair" as "arm" + "chair"; a new single token would start from scratch."""
    known = trained_words(TOY_MODEL_DIR)
    assert set(WORDS) <= set(known), "the committed model was trained on every caption word, proportions included"
    old = CLIPTokenizer.from_pretrained(TOY_MODEL_DIR / "tokenizer")
    assert old.tokenize("tall") == ["tall</w>"] and old.tokenize("highback") == ["highback</w>"]
    new_words = ["ottoman", "rocking", "bench"]  # words a later caption list might add
    assert all(len(old.tokenize(word)) > 1 for word in new_words)
    new = extend_tokenizer(old, tmp_path / "tok", new_words)
    assert old.tokenize("armchair") == new.tokenize("armchair") == ["arm", "chair</w>"]
    caption = "a photo of a tall armchair in the shape of a leopard-print green stool"
    assert old.tokenize(caption) == new.tokenize(caption)
    assert all(len(new.tokenize(word)) == 1 for word in new_words)
    assert new.model_max_length == old.model_max_length


def test_resuming_the_committed_model_trains_with_its_own_spelling_of_known_words(tmp_path):
    """`train --resume` itself (not only `extend_tokenizer`) keeps "armchair" as the committed model spells it."""
    config = TrainConfig(**{**TINY_CONFIG, "minutes": 10.0, "threads": 1, "resume": str(TOY_MODEL_DIR)})
    grown = load_model(str(train(tmp_path / "grown", config, progress=False)), device="cpu").pipe.tokenizer
    assert grown.tokenize("armchair") == ["arm", "chair</w>"]
    assert len(grown.tokenize("highback")) == 1


def test_the_colour_check_names_rendered_chairs_correctly():
    chairs = held_out_test_set(40)
    right = sum(dominant_colour(c.image, c.mask) == c.colour for c in chairs)
    assert right >= 36, f"{right}/40"
    assert dominant_colour(chairs[0].image, np.zeros((64, 64), np.uint8)) == OTHER


def test_encoded_rows_follow_their_images_so_each_caption_matches_its_latent(tmp_path):
    """Row 2k must be image k and row 2k + 1 its mirror: training reads the caption of row r as chairs[r // 2]."""
    tokenizer = build_tokenizer(tmp_path / "tok")
    vae, _, _ = build_components(TrainConfig(**TINY_CONFIG), tokenizer)
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    rows = encode_dataset(vae.eval(), images, batch=2)
    assert rows.shape[0] == 10
    for k in range(5):
        pixels = torch.from_numpy(images[k:k + 1]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            plain = vae.encode(pixels).latent_dist.mean[0]
            mirrored = vae.encode(pixels.flip(-1)).latent_dist.mean[0]
        assert torch.allclose(rows[2 * k], plain, atol=1e-5), k
        assert torch.allclose(rows[2 * k + 1], mirrored, atol=1e-5), k
        assert not torch.allclose(plain, mirrored, atol=1e-3)


def test_resuming_a_model_from_before_the_proportion_words_teaches_it_them(tmp_path, monkeypatch):
    import shapeinv_core.toy.train as toy_train

    new_words = ("tall", "low", "narrow", "wide", "highback", "lowback")
    config = TrainConfig(**{**TINY_CONFIG, "minutes": 10.0, "threads": 1})
    monkeypatch.setattr(toy_train, "WORDS", tuple(w for w in WORDS if w not in new_words))
    old = train(tmp_path / "old", config, progress=False)
    assert len(load_model(str(old), device="cpu").pipe.tokenizer.tokenize("highback")) > 1
    monkeypatch.setattr(toy_train, "WORDS", WORDS)
    grown = train(tmp_path / "grown", replace(config, resume=str(old)), progress=False)
    assert trained_words(old) == tuple(w for w in WORDS if w not in new_words)
    pipe = load_model(str(grown), device="cpu").pipe
    assert all(len(pipe.tokenizer.tokenize(word)) == 1 for word in new_words)
    assert trained_words(grown) == WORDS
    assert pipe.text_encoder.config.vocab_size == len(pipe.tokenizer)
    image = pipe("a tall wide red chair", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_training_runs_end_to_end_and_writes_a_loadable_pipeline(tmp_path):
    config = TrainConfig(**{**TINY_CONFIG, "minutes": 10.0, "threads": 1})
    threads = torch.get_num_threads()
    folder = train(tmp_path / "run", config, progress=False)
    assert torch.get_num_threads() == threads, "training leaves the process's thread count as it found it"
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert record["config"]["seed"] == 0 and "git" in record
    log = (tmp_path / "run" / "loss.csv").read_text().splitlines()
    assert log[0] == "step,seconds,loss,lr" and len(log) == 1 + TINY_CONFIG["max_unet_steps"]
    model = load_model(str(folder), device="cpu")
    assert native_resolution(model.pipe) == 64
    assert model.pipe.vae.config.scaling_factor != 0.18215  # measured on the encoded training images
    image = model.pipe("a red chair", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()


def test_the_lr_warms_up_then_stays_or_falls_by_cosine_to_lr_end():
    constant = TrainConfig(lr=1e-3, warmup=100)
    assert learning_rate(constant, 0, 0.0) == pytest.approx(1e-5)
    assert learning_rate(constant, 500, 0.9) == pytest.approx(1e-3)
    annealed = TrainConfig(lr=1e-3, lr_end=1e-4, warmup=100)
    assert learning_rate(annealed, 49, 0.0) == pytest.approx(5e-4)  # still warming up
    assert learning_rate(annealed, 500, 0.0) == pytest.approx(1e-3)
    assert learning_rate(annealed, 500, 0.5) == pytest.approx(5.5e-4)  # halfway down the cosine
    assert learning_rate(annealed, 500, 1.0) == pytest.approx(1e-4)
    assert learning_rate(annealed, 500, 1.3) == pytest.approx(1e-4)  # past the deadline: no overshoot
    falling = [learning_rate(annealed, 500, t / 10) for t in range(11)]
    assert all(a > b for a, b in zip(falling, falling[1:]))


def _generated(model_name: str, prompt: str, seeds: list[int]):
    model = load_model(model_name, device="cpu")
    pipe = model.pipe
    pipe.scheduler = _sampling_scheduler(pipe)
    return pipe([prompt] * len(seeds), num_inference_steps=10, guidance_scale=7.5,
                generator=[torch.Generator().manual_seed(s) for s in seeds]).images


def _dominant(images) -> list[str]:
    found = []
    for image in images:
        check = one_object(image)
        found.append(dominant_colour(image, check.mask) if check.mask is not None else OTHER)
    return found


@pytest.mark.parametrize("colour", ["red", "blue"])
def test_toy_model_loads_offline_and_draws_the_asked_colour(colour):
    assert (TOY_MODEL_DIR / "model_index.json").is_file()
    found = _dominant(_generated(TOY, f"a photo of a {colour} chair", seeds=[0, 1, 2, 3]))
    assert found.count(colour) >= 3, found


def test_the_colour_test_fails_on_the_random_tiny_model():
    """The check above discriminates: random weights do not draw a red object."""
    found = _dominant(_generated(TINY, "a photo of a red chair", seeds=[0, 1, 2, 3]))
    assert found.count("red") < 3, found


def test_toy_is_used_at_its_native_size_everywhere(tmp_path, capsys):
    assert native_resolution_of(TOY) == 64
    assert form_defaults(TOY).resolution == 64
    chair = render_toy_chair(5, family="round", pattern="plain")
    chair.image.save(tmp_path / "chair.png")
    chair.mask.save(tmp_path / "mask.png")
    code = cli_main(["invert", str(tmp_path / "chair.png"), "--mask", str(tmp_path / "mask.png"), "-o",
                     str(tmp_path / "run"), "--model", TOY, "--device", "cpu", "--steps", "2", "--batch", "1"])
    assert code == 0, capsys.readouterr()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["resolution"] == 64


def test_patterns_and_colours_cover_the_issue():
    assert len(COLOURS) >= 6
    assert {"plain", "striped", "checkered", "leopard", "wooden"} <= set(PATTERNS)
