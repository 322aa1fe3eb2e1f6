"""What makes `*s` carry the shape: the scoring (specificity, the silhouette), the re-drawn views
(appearance="varied"), the initializer chosen by the loss probe (initializer="auto"), on tiny and toy."""

import json

import numpy as np
import pytest
import torch

from helpers import chair_like, small_config, tiny_folder, tiny_model
from shapeinv_core.chairs.colours import dominant_colour
from shapeinv_core.chairs.toy_world import HELD_OUT_FAMILIES, TRAIN_FAMILIES, render_toy_chair
from shapeinv_core.cli import build_parser, inversion_config
from shapeinv_core.config import InversionConfig
from shapeinv_core.errors import InputError
from shapeinv_core.evaluation.metrics import mask_iou, object_silhouette, shape_specificity
from shapeinv_core.method.appearance import appearance_views, estimate_shading, look_words
from shapeinv_core.method.attention import AttentionStore
from shapeinv_core.method.concept import Concept, initializer_vectors, install_tokens
from shapeinv_core.method.inversion import invert, training_inputs, view_rows
from shapeinv_core.method.probe import SHAPE_WORDS, initializer_candidates, known_phrases, proportion_words
from shapeinv_core.method.tuning import tune_lora
from shapeinv_core.models.loading import load_model


def test_specificity_separates_a_chairs_own_mask_from_other_families_masks():
    chairs = [render_toy_chair(40_500 + i, family=family) for i, family in enumerate(TRAIN_FAMILIES)]
    for index, chair in enumerate(chairs):
        others = [c.mask for j, c in enumerate(chairs) if j != index]
        own, other = shape_specificity(np.asarray(chair.mask) > 127, chair.mask, others)
        assert own == 1.0 and 0.0 < other < 0.85, chair.family
        # Another family's silhouette scores lower against this chair than against its own mask.
        wrong = np.asarray(chairs[(index + 1) % len(chairs)].mask) > 127
        own_wrong, other_wrong = shape_specificity(wrong, chair.mask, others)
        assert own_wrong < other_wrong, "a different chair's shape has negative specificity"
    with pytest.raises(ValueError):
        shape_specificity(np.ones((64, 64), bool), chairs[0].mask, [])


def test_the_scoring_silhouette_matches_rendered_masks(u2netp_home):
    families = TRAIN_FAMILIES + HELD_OUT_FAMILIES
    chairs = [render_toy_chair(42_000_000 + i, family=families[i % len(families)]) for i in range(14)]
    scores = []
    for chair in chairs:
        found = object_silhouette(chair.image)
        scores.append(0.0 if found is None else mask_iou(found, chair.mask))
    assert np.mean(scores) >= 0.9, scores


def test_redrawn_views_keep_the_silhouette_and_name_a_new_look():
    chair = render_toy_chair(40_600, family="armchair", colour="red", pattern="striped", background="plain")
    inside = np.asarray(chair.mask) > 127
    views = appearance_views(chair.image, chair.mask, 9, seed=1)
    assert views[0].image.tobytes() == chair.image.tobytes() and views[0].look == "red"
    assert len({v.look for v in views[1:]}) == 8, "a short bank does not repeat a look"
    named = 0
    for view in views[1:]:
        pixels = np.asarray(view.image).astype(int)
        wall = pixels[~inside]
        assert np.abs(wall - np.median(wall, axis=0)).max() <= 8, "the background is one plain wall"
        assert not np.array_equal(pixels[inside], np.asarray(chair.image)[inside])
        named += dominant_colour(view.image, chair.mask) == view.look.split()[0]
    assert named >= 6, "the named colour is the colour the view shows"
    assert look_words("blue", "leopard") == "blue leopard-print" and look_words("blue", "plain") == "blue"


def test_the_shading_estimate_drops_the_photos_stripes_but_keeps_the_silhouette():
    plain = render_toy_chair(40_700, family="straight", colour="green", pattern="plain", background="plain")
    striped = render_toy_chair(40_700, family="straight", colour="green", pattern="striped", background="plain")
    inside = np.asarray(striped.mask) > 127

    def luminance(image):
        return (np.asarray(image, dtype=np.float32) / 255) @ np.array([0.299, 0.587, 0.114], np.float32)

    truth = luminance(plain.image)[inside]
    raw = luminance(striped.image)[inside]
    estimate = estimate_shading(striped.image, striped.mask)[inside]
    assert np.corrcoef(estimate, truth)[0, 1] > np.corrcoef(raw, truth)[0, 1] + 0.1
    assert (estimate_shading(striped.image, striped.mask)[~inside] == 1.0).all()


def test_rows_read_their_own_placeholder_positions():
    # Two prompt rows whose placeholder sits at different token positions (looks of different length).
    probs = torch.rand(2 * 3, 4, 10).softmax(dim=-1)  # [rows * heads, queries (2x2), keys]
    shared = AttentionStore([5], (2, 2), 2)
    per_row = AttentionStore([5], (2, 2), 2)
    per_row.row_positions = torch.tensor([[5], [7]])
    shared.add(probs, 2, 3, 4)
    per_row.add(probs, 2, 3, 4)
    other = AttentionStore([7], (2, 2), 2)
    other.add(probs, 2, 3, 4)
    assert torch.allclose(per_row.mean_map()[0], shared.mean_map()[0])
    assert torch.allclose(per_row.mean_map()[1], other.mean_map()[1])


def test_varied_appearance_trains_on_every_view_each_named_in_its_prompt():
    model = tiny_model()
    image, mask = chair_like()
    config = small_config(appearance="varied", views=6, steps=6, batch_size=2, mask_weight=0.1)
    ids = install_tokens(model.pipe, "*s", initializer_vectors(model.pipe, "chair", 1))
    inputs = training_inputs(model.pipe, model.device, image, mask, config, ids)
    assert inputs.latents.shape[0] == 6 and len(set(inputs.looks)) == 6
    assert len({tuple(row[0].tolist()) for row in inputs.prompt_ids}) == 6, "each view's prompt names its look"
    for row, positions in zip(inputs.prompt_ids, inputs.positions):
        assert [row[0, p].item() for p in positions] == ids
    assert not torch.allclose(inputs.latents[0], inputs.latents[1])
    drawn = torch.cat([view_rows(config.seed, step, 2, 6) for step in range(6)])
    assert len(set(drawn.tolist())) >= 4 and torch.equal(view_rows(0, 3, 2, 6), view_rows(0, 3, 2, 6))

    varied = invert(model, image, mask, config)  # one pipeline throughout: each run removes its tokens
    photo = invert(model, image, mask, small_config(steps=6, batch_size=2, mask_weight=0.1))
    start = initializer_vectors(model.pipe, "chair", 1)
    assert not torch.allclose(varied.vectors, start), "the gradient reaches *s through the views' prompts"
    assert not torch.allclose(varied.vectors, photo.vectors)
    assert varied.final_losses["mask_loss"] > 0


def test_the_lora_phase_runs_on_varied_views_and_trains_its_adapter():
    image, mask = chair_like()
    config = small_config(appearance="varied", views=4, steps=2, tune="lora", lora_steps=2, batch_size=2)
    model = tiny_model()
    concept = tune_lora(model, image, mask, invert(model, image, mask, config))
    assert concept.lora and any(tensor.abs().sum() > 0 for tensor in concept.lora.values())


@pytest.fixture(scope="module")
def toy():
    return load_model("toy", device="cpu")


def test_initializer_auto_starts_from_the_shape_word_that_explains_the_photo(toy, tmp_path):
    chair = render_toy_chair(40_800, family="stool", colour="blue", pattern="plain", background="plain")
    config = small_config(initializer="auto", steps=1, learning_rate=1e-6, batch_size=1)
    concept = invert(toy, chair.image, chair.mask, config)
    words = known_phrases(toy.pipe.tokenizer, SHAPE_WORDS)
    assert concept.initializer_used in words and len(words) >= 4
    assert concept.initializer_used == "stool", "the toy world tells a stool by its loss"
    start = initializer_vectors(toy.pipe, concept.initializer_used, 1)
    assert torch.allclose(concept.vectors, start, atol=1e-4), "*s starts from the chosen word"
    concept.save(tmp_path / "run")
    info = json.loads((tmp_path / "run" / "concept.json").read_text())
    assert info["initializer"] == "stool" and info["settings"]["initializer"] == "auto"
    assert Concept.load(tmp_path / "run").initializer_used == "stool"
    # Another class keeps its own word: seat words are candidates only for a seat.
    assert initializer_candidates("car") == ("car",) and "stool" in initializer_candidates("chair")


def test_a_probe_that_reads_named_views_finds_the_family_and_the_proportions_the_photos_own_look_hides(toy):
    # A red striped stool, tall and wide for a stool (bench/shape_eval.py's main chair 8): on the photo alone
    # its look explains more than its shape, and the probe falls back to "chair"; the re-drawn views, each
    # look named, leave the shape for the words to explain. The proportion words are the chair's own.
    chair = render_toy_chair(40_000_008, family="stool", colour="red", pattern="striped", background="plain")
    assert chair.shape_words == ("tall", "wide")
    picked = {}
    for views in (1, 8):
        config = small_config(initializer="auto", appearance="varied", views=8, probe_views=views, steps=1,
                              learning_rate=1e-6, batch_size=1)
        concept = invert(toy, chair.image, chair.mask, config)
        picked[views] = concept.initializer_used
    assert picked == {1: "tall wide chair", 8: "tall wide stool"}
    start = initializer_vectors(toy.pipe, "tall wide stool", 1)
    rows = toy.pipe.text_encoder.get_input_embeddings().weight.detach()
    ids = toy.pipe.tokenizer("tall wide stool", add_special_tokens=False).input_ids
    assert len(ids) == 3 and torch.allclose(start, rows[ids].mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(concept.vectors, start, atol=1e-4), "*s starts from the phrase's mean row"
    with pytest.raises(InputError, match="probe_views must be between 1"):
        InversionConfig(probe_views=0).validate()


def test_proportion_words_are_probed_only_for_seats_and_only_when_the_model_knows_them(toy):
    # A made-up loss that favours longer phrases: per pair of opposites the longer word is kept, in front of
    # the words kept so far, and the search stops at two.
    tried = []
    longer = proportion_words("stool", lambda phrase: tried.append(phrase) or -len(phrase), toy.pipe.tokenizer)
    assert longer == ["tall", "narrow"] and "tall wide stool" in tried, tried
    assert not any("back" in phrase for phrase in tried), "a third word is not looked for"
    assert proportion_words("stool", lambda phrase: float(len(phrase)), toy.pipe.tokenizer) == []
    # The tiny test model's vocabulary splits them: none is tried.
    tried.clear()
    assert proportion_words("stool", lambda phrase: tried.append(phrase) or -len(phrase),
                            tiny_model().pipe.tokenizer) == [] and set(tried) == {"stool"}
    chair = render_toy_chair(40_810, family="stool", colour="blue", pattern="plain", background="plain")
    config = small_config(initializer="auto", class_word="car", steps=1, batch_size=1)  # not a seat
    assert invert(toy, chair.image, chair.mask, config).initializer_used == "car"


def test_the_cli_takes_the_new_flags_and_refuses_a_bank_of_one(tmp_path):
    parser = build_parser()
    base = ["invert", str(tmp_path / "chair.png"), "-o", str(tmp_path / "run")]
    config = inversion_config(parser.parse_args(base + ["--appearance", "varied", "--views", "12",
                                                        "--initializer", "auto", "--probe-views", "4"]))
    assert (config.appearance, config.views, config.initializer, config.probe_views) == ("varied", 12, "auto", 4)
    with pytest.raises(InputError, match="views must be between 2 and 256"):
        inversion_config(parser.parse_args(base + ["--views", "1"]))


def test_the_defaults_are_the_measured_best_and_the_research_form_is_one_flag_away(tmp_path, capsys):
    from shapeinv_core.cli import main

    defaults = InversionConfig()
    assert (defaults.appearance, defaults.initializer, defaults.mask_weight) == ("varied", "auto", 0.1)
    assert (defaults.tune, defaults.lora_steps, defaults.lora_lr) == ("lora", 100, 1e-3)
    research = defaults.research_form()
    assert (research.appearance, research.initializer, research.tune) == ("photo", defaults.class_word, "none")
    image, mask = chair_like()
    image.save(tmp_path / "oak.png")
    mask.save(tmp_path / "oak_mask.png")
    for flags, expected in (([], ("varied", "auto", "lora")), (["--research-form"], ("photo", "chair", "none"))):
        run = tmp_path / ("research" if flags else "default")
        assert main(["invert", str(tmp_path / "oak.png"), "--mask", str(tmp_path / "oak_mask.png"), "-o", str(run),
                     "--model", str(tiny_folder()), "--device", "cpu", "--steps", "1", "--batch", "1",
                     "--views", "3", "--lora-steps", "2", *flags]) == 0
        saved = json.loads((run / "config.json").read_text())
        assert (saved["appearance"], saved["initializer"], saved["tune"]) == expected, flags
        assert (run / "pytorch_lora_weights.safetensors").is_file() == (expected[2] == "lora"), flags
    capsys.readouterr()
