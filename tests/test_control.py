"""The knobs between shape and editability: which maps, the gradient balance, loss forms, the shape schedule."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import chair_like, small_config, tiny_model
from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.generation.generate import generate
from shapeinv_core.method.attention import (
    AttentionStore,
    capture_attention,
    cross_attention_layers,
    layer_grid_sides,
    layers_at_sides,
)
from shapeinv_core.method.inversion import (
    attention_mask_loss,
    denoising_weights,
    invert,
    invert_many,
    prepare_inputs,
    weighted_denoising_loss,
)


def test_attention_res_picks_only_the_layers_with_that_grid():
    model = tiny_model()
    unet = model.pipe.unet
    # The grid each cross-attention layer really sees in a forward at 128 px (a 16x16 latent).
    seen = {}
    hooks = [module.register_forward_hook(lambda mod, args, out, name=name: seen.setdefault(name, args[0].shape[1]))
             for name, module in cross_attention_layers(unet).items()]
    hidden = torch.randn(1, 77, 32)
    with torch.no_grad():
        unet(torch.randn(1, 4, 16, 16), torch.tensor([10]), encoder_hidden_states=hidden)
    for hook in hooks:
        hook.remove()
    sides = layer_grid_sides(unet, 16)
    assert sides == {name: int(round(queries ** 0.5)) for name, queries in seen.items()}
    assert set(sides.values()) == {16, 8}

    store = AttentionStore([5], (16, 16), 16)
    before = {name: type(p).__name__ for name, p in unet.attn_processors.items()}
    with torch.no_grad(), capture_attention(unet, store, "all", (16,)):
        during = {name: type(p).__name__ for name, p in unet.attn_processors.items()}
        unet(torch.randn(1, 4, 16, 16), torch.tensor([10]), encoder_hidden_states=hidden)
    wanted = {name for name, side in sides.items() if side == 16}
    captured = {name.removesuffix(".processor") for name, kind in during.items() if kind == "MapCaptureProcessor"}
    assert captured == wanted and len(store.maps) == len(wanted)
    assert all(during[name] == before[name] for name in during if name.removesuffix(".processor") not in wanted), \
        "layers not used keep their fused processor"
    assert set(layers_at_sides(unet, "up", (8, 16), 16)) == {n for n in sides if n.startswith("up_blocks")}

    image, mask = chair_like()
    with pytest.raises(InputError, match="its layers have 4, 8"):
        invert(model, image, mask, small_config(attention_res="16", steps=1))
    with pytest.raises(InputError, match="attention_res"):
        small_config(attention_res="15")


def test_the_gradient_ratio_equals_a_direct_computation(tmp_path):
    # AdamW's first moment after one step is 0.1 x the gradient, so two concepts learned in the
    # same pass at weights 0 and 1 give the denoising gradient G0 and G1 = G0 + mask gradient
    # directly; the ratio reported for weight 0.3 must be 0.3 |G1 - G0| / |G0|.
    image, mask = chair_like()
    weights = [0.0, 1.0, 0.3]
    configs = [small_config(mask_weight=w, steps=1, balance_every=1, checkpoint_every=1) for w in weights]
    runs = [RunFolder(tmp_path / str(w)) for w in weights]
    for run, config in zip(runs, configs):
        run.start(image, mask, config)
    reports = []
    measured = invert_many(tiny_model(), image, mask, configs, runs, on_step=reports.append)
    g0, g1 = (run.load_checkpoint()[1]["exp_avg"] / 0.1 for run in runs[:2])
    terms = reports[0].terms[2]
    assert terms.diffusion_grad == pytest.approx(float(g0.norm()), rel=1e-3)
    assert terms.mask_grad == pytest.approx(float((g1 - g0).norm()), rel=1e-3)
    assert terms.grad_ratio == pytest.approx(0.3 * float((g1 - g0).norm() / g0.norm()), rel=1e-3)
    assert reports[0].terms[0].grad_ratio == 0.0
    assert runs[2].read_log()[0]["grad_ratio"] == terms.grad_ratio
    # Measuring is a second backward pass only: what is learned stays bit for bit the same.
    unmeasured = invert_many(tiny_model(), image, mask, [small_config(mask_weight=w, steps=1, balance_every=0)
                                                         for w in weights])
    for a, b in zip(measured, unmeasured):
        assert torch.equal(a.vectors, b.vectors)


def test_the_masked_denoising_loss_and_the_outside_penalty_equal_direct_computations():
    generator = torch.Generator().manual_seed(0)
    pred, target = torch.randn(3, 4, 8, 8, generator=generator), torch.randn(3, 4, 8, 8, generator=generator)
    binary = (torch.rand(1, 1, 8, 8, generator=generator) > 0.5).float()
    # Break-A-Scene: model_pred * mask and target * mask, then the plain MSE over all elements.
    break_a_scene = ((pred * binary - target * binary) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(weighted_denoising_loss(pred, target, binary), break_a_scene)
    weights = binary + 0.25 * (1 - binary)
    direct = torch.stack([(weights * (p - t) ** 2).sum() / p.numel() for p, t in zip(pred, target)])
    torch.testing.assert_close(weighted_denoising_loss(pred, target, weights), direct)
    torch.testing.assert_close(weighted_denoising_loss(pred, target), ((pred - target) ** 2).mean(dim=(1, 2, 3)))

    maps, grid = torch.rand(2, 3, 16, 16, generator=generator), torch.rand(16, 16, generator=generator)
    outside = torch.stack([sum(((m * (1 - grid)) ** 2).sum() for m in concept) / (3 * 256) for concept in maps])
    torch.testing.assert_close(attention_mask_loss(maps, grid, "outside"), outside)
    torch.testing.assert_close(attention_mask_loss(maps, grid, "mse"), ((maps - grid) ** 2).mean(dim=(1, 2, 3)))
    inside_only = grid.expand(1, 1, 16, 16) * (grid > 0.5)
    assert float(attention_mask_loss(inside_only, (grid > 0.5).float(), "outside")) == 0.0

    image, mask = chair_like()
    assert denoising_weights(image, mask, small_config(), 8) is None, "the research's form: the whole image"
    _, latent_mask = prepare_inputs(image, mask, 64, 8)
    torch.testing.assert_close(denoising_weights(image, mask, small_config(background_weight=0.0), 8)[0, 0],
                               latent_mask)
    reports = []
    config = small_config(background_weight=0.2, mask_form="outside", mask_weight=0.5, steps=2)
    invert(tiny_model(), image, mask, config, on_step=reports.append)
    for terms in (r.terms[0] for r in reports):
        assert terms.loss == pytest.approx(terms.diffusion_loss + 0.5 * terms.mask_loss, rel=1e-5)


@pytest.fixture(scope="module")
def model_and_concept():
    model = tiny_model()
    image, mask = chair_like()
    return model, invert(model, image, mask, small_config(steps=2, learning_rate=0.5))


def _pixels(result) -> np.ndarray:
    return np.asarray(result.image, dtype=np.int16)


def test_shape_steps_0_is_the_prompt_without_the_word_and_1_the_normal_generation(model_and_concept):
    model, concept = model_and_concept
    prompt = "a red chair in the shape of *s"
    settings = {"steps": 4, "seed": 3, "num_images": 2}
    normal = generate(model, concept, [prompt], GenerationConfig(**settings))
    assert [_pixels(r).tolist() for r in generate(model, concept, [prompt], GenerationConfig(shape_steps=1.0,
            **settings))] == [_pixels(r).tolist() for r in normal]
    never = generate(model, concept, [prompt], GenerationConfig(shape_steps=0.0, **settings))
    plain = model.pipe(["a red chair"] * 2, num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
                       generator=[torch.Generator().manual_seed(seed) for seed in (3, 4)]).images
    for ours, theirs in zip(never, plain):
        assert np.array_equal(_pixels(ours), np.asarray(theirs, dtype=np.int16))
    assert np.abs(_pixels(never[0]) - _pixels(normal[0])).mean() > 0.5, "the word changes the picture"

    half = generate(model, concept, [prompt], GenerationConfig(shape_steps=0.5, batch_size=2, **settings))
    one_by_one = generate(model, concept, [prompt], GenerationConfig(shape_steps=0.5, batch_size=1, **settings))
    for a, b in zip(half, one_by_one):
        assert np.abs(_pixels(a) - _pixels(b)).max() <= 2, "batching does not change the schedule"
    for other in (normal[0], never[0]):
        assert not np.array_equal(_pixels(half[0]), _pixels(other))
    last = generate(model, concept, [prompt], GenerationConfig(shape_steps=0.5, shape_order="last", **settings))
    assert not np.array_equal(_pixels(last[0]), _pixels(half[0])), "the other way round is another schedule"
    with pytest.raises(InputError, match="shape_steps"):
        GenerationConfig(shape_steps=1.5).validate()


def test_shape_guidance_adds_the_words_push_and_for_the_word_alone_is_more_guidance(model_and_concept):
    model, concept = model_and_concept
    settings = {"steps": 4, "seed": 3, "num_images": 2}
    edit = "a red chair in the shape of *s"
    normal = generate(model, concept, [edit], GenerationConfig(**settings))
    guided = generate(model, concept, [edit], GenerationConfig(shape_guidance=3.0, **settings))
    assert np.abs(_pixels(guided[0]) - _pixels(normal[0])).mean() > 0.5, "the push toward *s changes the picture"
    # "*s" without its word is "", the unconditional prompt: c - w = c - u, so the sum is guidance + shape_guidance.
    alone = generate(model, concept, ["*s"], GenerationConfig(guidance=4.0, shape_guidance=3.0, **settings))
    louder = generate(model, concept, ["*s"], GenerationConfig(guidance=7.0, **settings))
    quieter = generate(model, concept, ["*s"], GenerationConfig(guidance=4.0, **settings))
    for ours, same, other in zip(alone, louder, quieter):
        assert np.abs(_pixels(ours) - _pixels(same)).max() <= 2
        assert np.abs(_pixels(ours) - _pixels(other)).mean() > 0.5
    with pytest.raises(InputError, match="shape_guidance"):
        GenerationConfig(shape_guidance=-1.0).validate()


# --- LoRA phase and the files other tools load -------------------------------------------------------

def _lora_config(**changes):
    return small_config(steps=2, tune="lora", lora_steps=4, lora_lr=0.05, checkpoint_every=2, name="oak-chair",
                        **changes)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A run learned with the LoRA phase: (model, run folder, concept, vectors after phase 1, states before)."""
    from shapeinv_core.method.workflow import learn

    model = tiny_model()
    before = {name: {k: v.clone() for k, v in getattr(model.pipe, name).state_dict().items()}
              for name in ("unet", "vae", "text_encoder")}
    image, mask = chair_like()
    folder = tmp_path_factory.mktemp("lora-run")
    phase1 = invert(tiny_model(), image, mask, small_config(steps=2, checkpoint_every=2))
    return model, folder, learn(model, image, mask, _lora_config(), folder), phase1, before


def test_lora_changes_only_the_lora_weights_and_the_word(lora_run):
    model, folder, concept, phase1, before = lora_run
    for name, state in before.items():
        after = getattr(model.pipe, name).state_dict()
        assert after.keys() == state.keys(), f"{name} still has adapter layers"
        assert all(torch.equal(after[key], state[key]) for key in state), f"{name} changed"
    assert concept.lora and all(".attn2.to_k.lora_" in key or ".attn2.to_v.lora_" in key for key in concept.lora)
    assert any(float(value.abs().max()) > 0 for key, value in concept.lora.items() if "lora_B" in key), \
        "B starts at zero; training moved it"
    assert not torch.allclose(concept.vectors, phase1.vectors), "*s keeps learning beside the LoRA"
    steps = [record["step"] for record in RunFolder(folder).read_log()]
    assert steps == [1, 2, 3, 4, 5, 6]


def _images(pipe, prompt: str, seeds=(0, 1)) -> list[np.ndarray]:
    output = pipe([prompt] * len(seeds), num_inference_steps=3, guidance_scale=7.5, height=64, width=64,
                  generator=[torch.Generator().manual_seed(seed) for seed in seeds])
    return [np.asarray(image, dtype=np.int16) for image in output.images]


def test_the_lora_run_loads_in_plain_diffusers_and_draws_what_this_project_draws(lora_run):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from helpers import tiny_folder
    from shapeinv_core.method.concept import Concept

    model, folder, concept, _, _ = lora_run
    prompt = "a red chair in the shape of *s"
    ours = [_pixels(r) for r in generate(model, Concept.load(folder), [prompt],
                                         GenerationConfig(steps=3, num_images=2))]
    without_lora = [_pixels(r) for r in generate(model, type(concept)(token="*s", vectors=concept.vectors,
                                                                      settings=concept.settings),
                                                 [prompt], GenerationConfig(steps=3, num_images=2))]
    assert np.abs(ours[0] - without_lora[0]).mean() > 0.5, "the LoRA changes the picture"

    def plain_pipeline():
        pipe = StableDiffusionPipeline.from_pretrained(str(tiny_folder()), safety_checker=None)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
        return pipe

    pipe = plain_pipeline()
    pipe.load_textual_inversion(str(folder / "learned_embeds.safetensors"), token="*s")
    pipe.load_lora_weights(str(folder))  # finds pytorch_lora_weights.safetensors
    for a, b in zip(ours, _images(pipe, prompt)):
        assert np.abs(a - b).max() <= 2

    # The named files: NAME.safetensors holds one key, the word is the file name (AUTOMATIC1111/ComfyUI);
    # NAME-lora.safetensors has kohya's keys, which diffusers converts on loading.
    from safetensors.torch import load_file

    named = load_file(str(folder / "oak-chair.safetensors"))
    assert list(named) == ["emb_params"] and torch.equal(named["emb_params"], concept.vectors)
    assert Concept.load(folder / "oak-chair.safetensors").token == "oak-chair"
    kohya = load_file(str(folder / "oak-chair-lora.safetensors"))
    assert all(key.startswith("lora_unet_") for key in kohya) and any(key.endswith(".alpha") for key in kohya)
    pipe = plain_pipeline()
    pipe.load_textual_inversion(str(folder / "oak-chair.safetensors"), token="oak-chair")
    pipe.load_lora_weights(str(folder / "oak-chair-lora.safetensors"))
    for a, b in zip(ours, _images(pipe, "a red chair in the shape of oak-chair")):
        assert np.abs(a - b).max() <= 2


def test_a_stopped_lora_phase_resumes_where_it_stopped(lora_run, tmp_path):
    from shapeinv_core.method.inversion import Cancelled
    from shapeinv_core.method.workflow import learn

    _, _, uninterrupted, _, _ = lora_run
    image, mask = chair_like()
    calls = iter(range(100))
    with pytest.raises(Cancelled, match="LoRA phase"):  # phase 1 asks twice, then the LoRA phase thrice
        learn(tiny_model(), image, mask, _lora_config(), tmp_path, should_stop=lambda: next(calls) >= 5)
    assert (tmp_path / "checkpoints" / "lora_step_000002.safetensors").is_file()
    reports = []
    resumed = learn(tiny_model(), image, mask, _lora_config(), tmp_path, on_step=reports.append)
    assert [report.step for report in reports] == [6], "only the step after the checkpoint (step 3 of 4) is run"
    torch.testing.assert_close(resumed.vectors, uninterrupted.vectors, atol=1e-6, rtol=1e-5)
    for key, value in uninterrupted.lora.items():
        torch.testing.assert_close(resumed.lora[key], value, atol=1e-6, rtol=1e-5)
    assert [record["step"] for record in RunFolder(tmp_path).read_log()] == [1, 2, 3, 4, 5, 6]


def test_the_cli_takes_every_knob_and_names_the_files_after_the_photo(tmp_path, capsys):
    import json

    from helpers import tiny_folder
    from shapeinv_core.cli import main

    image, mask = chair_like((80, 64))
    image.save(tmp_path / "Oak Chair.png")
    mask.save(tmp_path / "mask.png")
    run_dir = tmp_path / "run"
    code = main(["invert", str(tmp_path / "Oak Chair.png"), "--mask", str(tmp_path / "mask.png"), "-o", str(run_dir),
                 "--model", str(tiny_folder()), "--device", "cpu", "--resolution", "64", "--steps", "2", "--batch",
                 "1", "--attention-res", "8", "--mask-form", "outside", "--background-weight", "0.5",
                 "--balance-every", "1", "--tune", "lora", "--lora-steps", "2", "--lora-rank", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    settings = json.loads((run_dir / "config.json").read_text())
    assert {key: settings[key] for key in ("attention_res", "mask_form", "background_weight", "tune", "lora_rank",
                                           "name")} == {"attention_res": "8", "mask_form": "outside",
                                                        "background_weight": 0.5, "tune": "lora", "lora_rank": 2,
                                                        "name": "oak-chair"}
    assert (run_dir / "oak-chair.safetensors").is_file() and (run_dir / "oak-chair-lora.safetensors").is_file()
    assert "oak-chair.safetensors" in out
    log = RunFolder(run_dir).read_log()
    assert [r["step"] for r in log] == [1, 2, 3, 4] and all("grad_ratio" in r for r in log)

    code = main(["generate", str(run_dir), "a red chair in the shape of *s", "-o", str(tmp_path / "images"),
                 "--device", "cpu", "--steps", "2", "--shape-steps", "0.5", "--shape-order", "last",
                 "--shape-guidance", "1.5"])
    assert code == 0 and (tmp_path / "images" / "grid.png").is_file()
    drawn = next(path for path in (tmp_path / "images").glob("*.png") if path.name != "grid.png")
    recorded = json.loads(Image.open(drawn).text["generation"])
    assert (recorded["shape_steps"], recorded["shape_order"], recorded["shape_guidance"]) == (0.5, "last", 1.5)
    assert main(["generate", str(run_dir), "a *s", "-o", str(tmp_path / "x"), "--shape-steps", "2"]) == 2
    assert "shape_steps must be between 0" in capsys.readouterr().err


def test_an_edit_during_a_lora_phase_draws_with_its_own_lora_and_leaves_the_trained_one_as_it_was(lora_run):
    # The app's worker draws edits between the steps of a running job; here the job is a LoRA phase.
    from shapeinv_core.method.concept import Concept
    from shapeinv_core.method.lora import ADAPTER, add_lora, remove_lora

    model, folder, _, _, _ = lora_run
    unet = model.pipe.unet
    with_lora = Concept.load(folder)
    without_lora = Concept(token="*s", vectors=with_lora.vectors, settings=with_lora.settings)
    prompt, settings = ["a red chair in the shape of *s"], GenerationConfig(steps=3)
    expected = [_pixels(generate(model, c, prompt, settings)[0]) for c in (with_lora, without_lora)]

    params = add_lora(unet, 2, seed=1)
    try:
        with torch.no_grad():
            for param in params:
                param.add_(0.5)  # a LoRA in training, far from zero
        before = [param.detach().clone() for param in params]
        during = [_pixels(generate(model, c, prompt, settings)[0]) for c in (with_lora, without_lora)]
        assert all(np.array_equal(a, b) for a, b in zip(during, expected))
        assert unet.active_adapters() == [ADAPTER] and list(unet.peft_config) == [ADAPTER]
        assert all(p.requires_grad and torch.equal(p, b) for p, b in zip(params, before))
        sample, hidden = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32)
        with torch.no_grad():
            active = unet(sample, 10, encoder_hidden_states=hidden).sample
            unet.disable_adapters()
            off = unet(sample, 10, encoder_hidden_states=hidden).sample
            unet.enable_adapters()
        assert not torch.allclose(active, off), "the trained LoRA is back in force"
    finally:
        remove_lora(unet)
