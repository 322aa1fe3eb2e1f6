"""Two methods from the literature aimed at keeping a concept's shape, each behind its own setting:
AttnDreamBooth's attention regulariser (`attention_reg`, training) and Prompt-to-Prompt's
self-attention injection (`layout_steps`, generation). Each test checks the method changes what it claims."""

import math

import numpy as np
import pytest
import torch

from helpers import chair_like, small_config, tiny_model
from shapeinv_core.chairs.toy_world import render_toy_chair
from shapeinv_core.cli import build_parser, generation_config, inversion_config
from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError
from shapeinv_core.evaluation.metrics import mask_iou, object_silhouette
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.generation.generate import generate
from shapeinv_core.generation.layout import LayoutSharing, self_attention_layers, share_rows
from shapeinv_core.method.attention import AttentionStore, statistic_gap
from shapeinv_core.method.inversion import invert
from shapeinv_core.models.loading import load_model


def test_the_statistic_gap_is_zero_for_the_same_map_and_log_ratios_otherwise():
    columns = torch.rand(2 * 3, 16)  # [rows * heads, queries]
    assert torch.allclose(statistic_gap(columns, columns, 2, 3, 16), torch.zeros(2))
    doubled = statistic_gap(2 * columns, columns, 2, 3, 16)  # twice the mean and twice the spread
    assert torch.allclose(doubled, torch.full((2,), 2 * math.log(2) ** 2), atol=1e-5)

    probs = torch.rand(2 * 3, 4, 10).softmax(dim=-1)  # [rows * heads, queries (2x2), keys]
    store = AttentionStore([5], (2, 2), 2)
    store.reference_rows = torch.tensor([[5], [5]])
    store.add(probs, 2, 3, 4)
    assert torch.allclose(store.regularisation(), torch.zeros(2)), "*s compared with itself"
    store.reset()
    store.reference_rows = torch.tensor([[2], [3]])
    store.add(probs, 2, 3, 4)
    assert (store.regularisation() > 0).all()


def test_attention_reg_is_in_the_logged_losses_and_its_gradient_reaches_the_vectors(tmp_path):
    model = tiny_model()
    image, mask = chair_like()
    settings = dict(steps=3, learning_rate=0.05, mask_weight=0.1, balance_every=1, checkpoint_every=3)
    reports = []
    config = small_config(attention_reg=0.5, **settings)
    run = RunFolder(tmp_path / "run")
    run.start(image, mask, config)
    regularised = invert(model, image, mask, config, run=run, on_step=reports.append)
    for terms in (report.terms[0] for report in reports):
        assert terms.attention_loss > 0
        assert terms.loss == pytest.approx(terms.diffusion_loss + 0.1 * terms.mask_loss + 0.5 * terms.attention_loss,
                                           rel=1e-5)
        assert terms.grad_ratio is not None and math.isfinite(terms.grad_ratio)
    assert all(record["attention_loss"] > 0 for record in run.read_log())
    # The same run with the term measured but weighted ~0: every other input is the same, so the difference
    # in the learned vectors is the regulariser's gradient.
    measured = invert(model, image, mask, small_config(attention_reg=1e-12, **settings))
    plain = invert(model, image, mask, small_config(**settings))
    assert torch.allclose(measured.vectors, plain.vectors, atol=1e-6)
    assert not torch.allclose(regularised.vectors, plain.vectors, atol=1e-4)


def test_attention_reg_on_varied_views_pulls_the_gap_down():
    """Over a short run on named views (each prompt's class word sits at its own position), the pull shrinks the
    gap between *s's attention statistics and the class word's, against the same run without it."""
    model = tiny_model()
    image, mask = chair_like()
    settings = dict(appearance="varied", views=4, steps=12, learning_rate=0.05, batch_size=2)
    gaps = {}
    for weight in (1e-12, 1.0):
        reports = []
        invert(model, image, mask, small_config(attention_reg=weight, **settings), on_step=reports.append)
        gaps[weight] = [report.terms[0].attention_loss for report in reports]
    assert gaps[1e-12][0] == pytest.approx(gaps[1.0][0], rel=1e-4), "the same first step"
    assert np.mean(gaps[1.0][-4:]) < 0.8 * np.mean(gaps[1e-12][-4:])


def test_attention_reg_needs_the_class_word_in_the_prompt(tmp_path):
    with pytest.raises(InputError, match="template must contain '{cls}'"):
        small_config(attention_reg=0.1, template="a photo of {token}")
    with pytest.raises(InputError, match="attention_reg must be between 0"):
        small_config(attention_reg=-1.0)
    parser = build_parser()
    args = parser.parse_args(["invert", str(tmp_path / "chair.png"), "-o", str(tmp_path / "run"),
                              "--attention-reg", "0.01"])
    assert inversion_config(args).attention_reg == 0.01


def test_share_rows_gives_each_edit_its_reconstructions_row():
    rows = torch.arange(2 * 2 * 3).float()[:, None]  # [groups (uncond, text), 2 (source, edit), images 3]
    shared = share_rows(rows, 3).flatten().tolist()
    assert shared == [0, 1, 2, 0, 1, 2, 6, 7, 8, 6, 7, 8]
    with pytest.raises(RuntimeError, match="do not pair"):
        share_rows(torch.zeros(5, 1), 3)
    sharing = LayoutSharing(images=3, until_step=2)
    assert sharing.active
    sharing(None, 0, None, {})
    assert sharing.active
    sharing(None, 1, None, {})
    assert not sharing.active
    assert not LayoutSharing(images=3, until_step=0).active


def test_layout_steps_0_is_the_plain_path_and_the_processors_are_restored():
    model = tiny_model()
    image, mask = chair_like()
    concept = invert(model, image, mask, small_config(steps=2, learning_rate=0.5))
    settings = {"steps": 4, "seed": 5, "num_images": 2, "batch_size": 2}
    edit = "a red chair in the shape of *s"
    free = generate(model, concept, [edit], GenerationConfig(**settings))
    off = generate(model, concept, [edit], GenerationConfig(layout_steps=0.0, **settings))
    assert [np.asarray(r.image).tolist() for r in off] == [np.asarray(r.image).tolist() for r in free]
    kept = generate(model, concept, [edit], GenerationConfig(layout_steps=1.0, **settings))
    assert [(r.prompt, r.seed) for r in kept] == [(edit, 5), (edit, 6)], "only the edits come back"
    assert all(type(m.processor).__name__ != "LayoutProcessor" for m in self_attention_layers(model.pipe.unet).values())


def test_layout_steps_draw_the_edit_in_the_reconstructions_silhouette():
    """On the trained toy model: an edit that asks for another shape ('... armchair') keeps more of the
    reconstruction's silhouette (same seed) the more steps share its self-attention maps."""
    toy = load_model("toy", device="cpu")
    chair = render_toy_chair(40_800, family="stool", colour="blue", pattern="plain", background="plain")
    concept = invert(toy, chair.image, chair.mask, small_config(initializer="stool", steps=1, learning_rate=1e-6,
                                                               batch_size=1))
    settings = {"steps": 10, "seed": 5, "num_images": 4, "batch_size": 4}
    reconstruction = generate(toy, concept, [concept.settings.prompt()], GenerationConfig(**settings))
    edit = "a leopard-print armchair in the shape of *s"

    def overlap(layout_steps: float) -> float:
        edits = generate(toy, concept, [edit], GenerationConfig(layout_steps=layout_steps, **settings))
        return float(np.mean([mask_iou(object_silhouette(a.image), object_silhouette(b.image))
                              for a, b in zip(edits, reconstruction)]))

    free, half, kept = overlap(0.0), overlap(0.5), overlap(1.0)
    assert free < half < kept and free + 0.08 < kept, (free, half, kept)


def test_layout_steps_are_a_validated_cli_flag(tmp_path):
    with pytest.raises(InputError, match="layout_steps must be between 0"):
        GenerationConfig(layout_steps=1.5).validate()
    args = build_parser().parse_args(["generate", str(tmp_path / "run"), "a red chair in the shape of *s",
                                      "-o", str(tmp_path / "out"), "--layout-steps", "0.3"])
    assert generation_config(args).layout_steps == 0.3
