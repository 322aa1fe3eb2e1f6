import pytest
import torch
from PIL import Image

from helpers import chair_like, small_config, tiny_model
from shapeinv_core.errors import InputError
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.method.attention import AttentionStore, capture_attention, cross_attention_layers
from shapeinv_core.method.concept import initializer_vectors, install_tokens
from shapeinv_core.method.inversion import (
    Cancelled,
    denoising_target,
    invert,
    invert_many,
    pad_to_square,
    prepare_inputs,
    tokenize_prompt,
)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def test_only_the_placeholder_vectors_change():
    model = tiny_model()
    pipe = model.pipe
    before = {name: _state(getattr(pipe, name)) for name in ("unet", "vae", "text_encoder")}
    image, mask = chair_like()
    concept = invert(model, image, mask, small_config(steps=3))
    for name, state in before.items():
        after = _state(getattr(pipe, name))
        assert after.keys() == state.keys(), name
        for key in state:
            assert torch.equal(after[key], state[key]), f"{name}.{key} changed"
        assert not any(p.requires_grad for p in getattr(pipe, name).parameters())
    initial = initializer_vectors(pipe, "chair", 1)
    assert not torch.allclose(concept.vectors, initial)
    assert "*s" not in pipe.tokenizer.get_vocab(), "the training token is removed afterwards"


def test_same_seed_same_vectors_and_another_seed_differs():
    image, mask = chair_like()
    first = invert(tiny_model(), image, mask, small_config(seed=3))
    again = invert(tiny_model(), image, mask, small_config(seed=3))
    other = invert(tiny_model(), image, mask, small_config(seed=4))
    assert torch.equal(first.vectors, again.vectors)
    assert not torch.allclose(first.vectors, other.vectors)


def test_every_step_reports_all_loss_terms_even_without_mask_weight():
    reports = []
    image, mask = chair_like()
    invert(tiny_model(), image, mask, small_config(mask_weight=0.0, steps=3), on_step=reports.append)
    assert [r.step for r in reports] == [1, 2, 3]
    for report in reports:
        assert report.total_steps == 3 and report.seconds > 0
        assert report.mask_loss > 0, "the mask loss is computed and logged also at weight 0"
        assert report.loss == pytest.approx(report.diffusion_loss, rel=1e-6)
        assert report.attention.shape == (1, 16, 16)


def test_the_loss_is_the_weighted_sum_of_its_terms():
    reports = []
    image, mask = chair_like()
    invert(tiny_model(), image, mask, small_config(mask_weight=0.7, init_reg=0.5, steps=2), on_step=reports.append)
    for terms in (r.terms[0] for r in reports):
        expected = terms.diffusion_loss + 0.7 * terms.mask_loss + 0.5 * terms.init_loss
        assert terms.loss == pytest.approx(expected, rel=1e-5)


def test_the_mask_loss_pulls_the_attention_map_toward_the_mask():
    # The tiny model's attention is nearly uniform, so compare max-normalised maps, measured at
    # fixed timesteps and noise (Concept.attention_map) after learning with and without the loss.
    image, mask = chair_like()
    _, grid = prepare_inputs(image, mask, 64, 16)
    errors = {}
    for weight in (0.0, 1.0):
        settings = small_config(mask_weight=weight, map_norm="max", learning_rate=0.2, steps=20, batch_size=1)
        concept = invert(tiny_model(), image, mask, settings)
        errors[weight] = float(((concept.attention_map - grid) ** 2).mean())
    assert errors[1.0] < 0.97 * errors[0.0]


def test_the_mask_weight_changes_what_is_learned():
    image, mask = chair_like()
    plain = invert(tiny_model(), image, mask, small_config(mask_weight=0.0))
    weighted = invert(tiny_model(), image, mask, small_config(mask_weight=0.5))
    assert not torch.allclose(plain.vectors, weighted.vectors)


def test_resume_from_a_checkpoint_ends_like_an_uninterrupted_run(tmp_path):
    image, mask = chair_like()
    config = small_config(steps=6, checkpoint_every=2)
    whole = RunFolder(tmp_path / "whole")
    whole.start(image, mask, config)
    uninterrupted = invert(tiny_model(), image, mask, config, run=whole)

    broken = RunFolder(tmp_path / "broken")
    broken.start(image, mask, config)
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        invert(tiny_model(), image, mask, config, run=broken, should_stop=lambda: next(calls) >= 3)
    assert [step for step, _ in broken.checkpoints()] == [2, 3]
    (broken.checkpoint_dir / "step_000003.safetensors").unlink()  # as if the process died after step 3
    resumed = invert(tiny_model(), image, mask, config, run=broken)
    assert torch.equal(resumed.vectors, uninterrupted.vectors)
    assert [record["step"] for record in broken.read_log()] == [1, 2, 3, 4, 5, 6]
    assert [record["loss"] for record in broken.read_log()] == [record["loss"] for record in whole.read_log()]


def test_a_run_folder_refuses_other_settings_once_it_has_checkpoints(tmp_path):
    image, mask = chair_like()
    run = RunFolder(tmp_path)
    run.start(image, mask, small_config())
    invert(tiny_model(), image, mask, small_config(), run=run)
    with pytest.raises(InputError, match="mask_weight: 0.1 -> 0.3"):
        run.start(image, mask, small_config(mask_weight=0.3))


def test_weights_learned_together_equal_separate_runs():
    image, mask = chair_like()
    weights = [0.0, 0.1, 1.0]
    together = invert_many(tiny_model(), image, mask, [small_config(mask_weight=w) for w in weights])
    in_two_passes = invert_many(tiny_model(), image, mask, [small_config(mask_weight=w) for w in weights],
                                rows_per_pass=4)
    for weight, joint, chunked in zip(weights, together, in_two_passes):
        alone = invert(tiny_model(), image, mask, small_config(mask_weight=weight))
        torch.testing.assert_close(joint.vectors, alone.vectors, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(chunked.vectors, alone.vectors, atol=1e-5, rtol=1e-4)
        assert joint.settings.mask_weight == weight


def test_concepts_learned_together_may_differ_only_in_mask_weight():
    image, mask = chair_like()
    with pytest.raises(InputError, match="only in mask_weight"):
        invert_many(tiny_model(), image, mask, [small_config(), small_config(seed=9)])


def test_v_prediction_models_train_on_the_velocity():
    model = tiny_model("v_prediction")
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_config(model.pipe.scheduler.config)
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    steps = torch.tensor([10, 900])
    torch.testing.assert_close(denoising_target(scheduler, latents, noise, steps),
                               scheduler.get_velocity(latents, noise, steps))
    assert not torch.allclose(denoising_target(scheduler, latents, noise, steps), noise)
    image, mask = chair_like()
    concept = invert(model, image, mask, small_config(steps=2))
    assert torch.isfinite(concept.vectors).all()


def test_map_capture_keeps_the_unet_output_and_touches_only_cross_attention():
    model = tiny_model()
    pipe = model.pipe
    ids = pipe.tokenizer("a photo of chair", padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = pipe.text_encoder(ids)[0]
    latents, t = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([500])
    with torch.no_grad():
        expected = pipe.unet(latents, t, encoder_hidden_states=hidden).sample
        store = AttentionStore(list(range(77)), (8, 8), 16)
        with capture_attention(pipe.unet, store):
            processors = {name: type(p).__name__ for name, p in pipe.unet.attn_processors.items()}
            captured = pipe.unet(latents, t, encoder_hidden_states=hidden).sample
    torch.testing.assert_close(captured, expected, atol=1e-5, rtol=1e-4)
    assert len(store.maps) == len(cross_attention_layers(pipe.unet))
    # Summed over every token column, softmax probabilities are 1 everywhere.
    torch.testing.assert_close(store.mean_map(), torch.ones(1, 16, 16))
    assert all(kind == "MapCaptureProcessor" for name, kind in processors.items() if "attn2" in name)
    assert all(kind != "MapCaptureProcessor" for name, kind in processors.items() if "attn1" in name)
    after = {name: type(p).__name__ for name, p in pipe.unet.attn_processors.items()}
    assert "MapCaptureProcessor" not in after.values(), "processors are restored"


def test_layer_selection_and_max_normalisation():
    model = tiny_model()
    assert all(name.startswith("up_blocks") for name in cross_attention_layers(model.pipe.unet, "up"))
    reports = []
    image, mask = chair_like()
    invert(model, image, mask, small_config(map_norm="max", attention_layers="up", steps=1), on_step=reports.append)
    # Each timestep's map is divided by its own max; their mean keeps a max of at most 1.
    assert float(reports[0].attention.max()) <= 1.0 + 1e-6
    assert float(reports[0].attention.max()) > 0.5


def test_template_and_placeholder_positions_with_several_vectors():
    model = tiny_model()
    config = small_config(num_vectors=3)
    ids = install_tokens(model.pipe, "*s", initializer_vectors(model.pipe, "chair", 3))
    prompt_ids, positions = tokenize_prompt(model.pipe, config.prompt(), ids)
    assert config.prompt() == "a photo of chair in the shape of *s"
    assert [prompt_ids[0, 0, p].item() for p in positions] == ids


def test_non_square_photos_are_padded_not_cropped():
    image, mask = chair_like((96, 48))
    square, square_mask = pad_to_square(image, mask)
    assert square.size == square_mask.size == (96, 96)
    assert sum(1 for v in square_mask.getdata() if v) == sum(1 for v in mask.getdata() if v)
    pixels, grid = prepare_inputs(image, mask, 64, 16)
    assert pixels.shape == (1, 3, 64, 64) and -1 <= pixels.min() and pixels.max() <= 1
    assert grid.shape == (16, 16) and 0 < grid.mean() < 1
    assert grid[:4].sum() == 0, "the padding above the photo is background"


def test_a_mask_of_another_size_is_refused_here_with_the_fix():
    image, _ = chair_like((64, 64))
    with pytest.raises(InputError, match="Resize the mask"):
        prepare_inputs(image, Image.new("L", (32, 32), 255), 64, 16)


def test_out_of_gpu_memory_redoes_the_step_in_smaller_passes_with_the_same_result():
    # A GPU out-of-memory error cannot happen on this CPU machine, so the UNet is wrapped to raise
    # it for batches over 4 rows, as a GPU with little memory would.
    image, mask = chair_like()
    configs = [small_config(mask_weight=w) for w in (0.0, 0.1, 1.0)]
    expected = invert_many(tiny_model(), image, mask, configs)
    model = tiny_model()
    unet_forward = model.pipe.unet.forward
    seen_rows = []

    def forward_with_little_memory(sample, *args, **kwargs):
        seen_rows.append(sample.shape[0])
        if sample.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return unet_forward(sample, *args, **kwargs)

    model.pipe.unet.forward = forward_with_little_memory
    learned = invert_many(model, image, mask, configs)
    for got, want in zip(learned, expected):
        torch.testing.assert_close(got.vectors, want.vectors, atol=1e-5, rtol=1e-4)
    assert seen_rows[0] == 6 and max(seen_rows[1:]) <= 4, "tried all 3 concepts x 2 timesteps, then smaller"


def test_stopping_before_any_new_step_writes_no_checkpoint(tmp_path):
    image, mask = chair_like()
    config = small_config(steps=4, checkpoint_every=2)
    run = RunFolder(tmp_path)
    run.start(image, mask, config)
    with pytest.raises(Cancelled):
        invert(tiny_model(), image, mask, config, run=run, should_stop=lambda: True)
    assert run.checkpoints() == [], "nothing was learned, so there is nothing to keep"
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        invert(tiny_model(), image, mask, config, run=run, should_stop=lambda: next(calls) >= 2)
    saved = run.checkpoint_dir / "step_000002.safetensors"
    before = saved.read_bytes()
    with pytest.raises(Cancelled):  # resumed at step 2 and stopped at once: step 2's checkpoint stays as it was
        invert(tiny_model(), image, mask, config, run=run, should_stop=lambda: True)
    assert [step for step, _ in run.checkpoints()] == [2] and saved.read_bytes() == before


def test_a_training_prompt_too_long_for_the_text_encoder_names_its_limit():
    image, mask = chair_like()
    long_template = "a " + "x " * 80 + "{cls} in the shape of {token}"  # under 300 characters, over 77 tokens
    with pytest.raises(InputError, match=r"within the text encoder's 77 tokens \(2 of them for \*s\)"):
        invert(tiny_model(), image, mask, small_config(template=long_template, num_vectors=2, steps=1))
