"""SDXL end to end on `tiny-sdxl`: a random-weight SDXL pipeline built here (two CLIP text encoders of
different widths, the second with a projection; a UNet with `addition_embed_type="text_time"` and no
cross-attention at its highest resolution). Nothing is mocked; the files are read back by plain
diffusers and safetensors, with no project code in the loading path."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from helpers import chair_like, small_config
from shapeinv_core.config import GenerationConfig
from shapeinv_core.errors import InputError, ModelLoadError
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.generation.generate import generate
from shapeinv_core.method.concept import Concept, initializer_vectors, install_tokens
from shapeinv_core.method.exports import write_named_files
from shapeinv_core.method.inversion import (
    Cancelled,
    embedding_parts,
    invert,
    invert_many,
    substitute_embeddings,
    training_inputs,
)
from shapeinv_core.method.workflow import learn
from shapeinv_core.models.families import SD, SDXL, family_of_checkpoint, family_of_folder
from shapeinv_core.models.loading import TINY_SDXL, load_model, model_layout
from shapeinv_core.models.tiny import build_tiny_sdxl_pipeline

WIDTHS = (32, 48)  # tiny-sdxl's two text encoders (SDXL: 768 and 1280)


@functools.cache
def sdxl_folder():
    return build_tiny_sdxl_pipeline()


def sdxl_model():
    return load_model(str(sdxl_folder()), device="cpu")


@pytest.fixture(scope="module")
def learned():
    """One concept learned with the mask loss, shared by the file tests."""
    image, mask = chair_like()
    return invert(sdxl_model(), image, mask, small_config(steps=3, mask_weight=0.5, num_vectors=2))


def test_the_family_comes_from_the_files_and_the_layout_from_the_configs():
    assert family_of_folder(sdxl_folder()) == SDXL
    model = load_model(TINY_SDXL, device="cpu")
    assert type(model.pipe).__name__ == "StableDiffusionXLPipeline"
    layout = model_layout(TINY_SDXL)
    assert layout.native_resolution == 64
    assert layout.grid_sides(64) == [2, 4], "no cross-attention at the latent's own 8x8 grid, as SDXL at 128"


@pytest.mark.parametrize("class_name, words", [
    ("StableDiffusion3Pipeline", "Stable Diffusion 3"),
    ("FluxPipeline", "FLUX"),
    ("StableDiffusionXLImg2ImgPipeline", "SDXL refiner"),
])
def test_a_model_of_another_family_is_named_and_refused_before_any_weight_loads(tmp_path, class_name, words):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    with pytest.raises(ModelLoadError, match=words) as caught:
        load_model(str(folder), device="cpu")
    assert "Stable Diffusion 1.x/2.x and SDXL" in str(caught.value)


@pytest.mark.parametrize("keys, expected", [
    (["conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
      "conditioner.embedders.1.model.ln_final.weight", "model.diffusion_model.label_emb.0.0.weight"], SDXL),
    (["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
      "model.diffusion_model.input_blocks.0.0.weight"], SD),
    (["model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight"], "Stable Diffusion 3"),
    (["conditioner.embedders.0.model.ln_final.weight", "model.diffusion_model.label_emb.0.0.weight"], "refiner"),
])
def test_a_single_file_checkpoints_family_is_read_from_its_tensor_names(tmp_path, keys, expected):
    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(1) for key in keys}, str(path))
    if expected in (SD, SDXL):
        assert family_of_checkpoint(path) == expected
    else:
        with pytest.raises(ModelLoadError, match=expected):
            family_of_checkpoint(path)


def test_star_s_is_learned_in_both_encoders_and_reaches_the_pooled_embedding():
    model = sdxl_model()
    image, mask = chair_like()
    config = small_config(steps=3, mask_weight=0.5)
    start = initializer_vectors(model.pipe, "chair", 1)
    concept = invert(model, image, mask, config)
    assert concept.vectors.shape == (1, sum(WIDTHS)) and concept.widths == WIDTHS
    moved = (concept.vectors - start).abs()
    assert moved[:, :WIDTHS[0]].max() > 0 and moved[:, WIDTHS[0]:].max() > 0, "both encoders' rows were trained"
    assert concept.final_losses["mask_loss"] > 0

    # The pooled embedding the UNet reads comes from the second encoder, with *s's row in it.
    from shapeinv_core.models.families import encode_ids, text_pairs

    token_ids = install_tokens(model.pipe, "*s", concept.vectors)
    inputs = training_inputs(model.pipe, model.device, image, mask, config, token_ids)
    encoders = [encoder for _, encoder in text_pairs(model.pipe)]
    with substitute_embeddings(embedding_parts(model.pipe, encoders, "*s", 1)) as substitution:
        pooled = []
        for vectors in (concept.vectors, concept.vectors + torch.cat([torch.zeros(WIDTHS[0]), torch.ones(WIDTHS[1])])):
            substitution.vectors = vectors[None]
            pooled.append(encode_ids(encoders, inputs.prompt_ids, inputs.time_ids)[1]["text_embeds"])
    assert not torch.allclose(*pooled), "changing *s's second-encoder row changes the pooled conditioning"


def test_the_size_conditioning_is_the_photos_not_a_constant():
    model = sdxl_model()
    image, mask = chair_like((96, 48))  # padded to a 96 px square, trained at 64
    token_ids = install_tokens(model.pipe, "*s", initializer_vectors(model.pipe, "chair", 1))
    inputs = training_inputs(model.pipe, model.device, image, mask, small_config(), token_ids)
    assert inputs.time_ids.tolist() == [96, 96, 0, 0, 64, 64]


def test_the_mask_weight_changes_what_is_learned_and_batched_weights_equal_separate_runs():
    model = sdxl_model()
    image, mask = chair_like()
    together = invert_many(model, image, mask, [small_config(mask_weight=0.0), small_config(mask_weight=1.0)])
    alone = invert(model, image, mask, small_config(mask_weight=1.0))
    torch.testing.assert_close(together[1].vectors, alone.vectors)
    assert not torch.equal(together[0].vectors, together[1].vectors)


def test_every_method_knob_runs_on_sdxl():
    model = sdxl_model()
    image, mask = chair_like()
    plain = invert(model, image, mask, small_config(steps=2))
    for changes in ({"num_vectors": 2, "background_weight": 0.0}, {"attention_res": "4", "map_norm": "max"},
                    {"mask_form": "outside", "attention_layers": "up", "attention_reg": 0.5},
                    {"appearance": "varied", "views": 3}, {"initializer": "auto"}):
        concept = invert(model, image, mask, small_config(steps=2, **changes))
        assert torch.isfinite(concept.vectors).all(), changes
        if concept.vectors.shape == plain.vectors.shape and "initializer" not in changes:  # auto may pick 'chair'
            assert not torch.allclose(concept.vectors, plain.vectors), f"{changes} changed nothing"
    settings = {"steps": 3, "num_images": 2, "seed": 1}
    kept = generate(model, plain, ["a red chair in the shape of *s"], GenerationConfig(layout_steps=1.0, **settings))
    free = generate(model, plain, ["a red chair in the shape of *s"], GenerationConfig(**settings))
    assert len(kept) == 2 and not np.array_equal(np.asarray(kept[0].image), np.asarray(free[0].image))


def test_a_stopped_run_resumes_to_the_same_vectors(tmp_path):
    image, mask = chair_like()
    config = small_config(steps=4, checkpoint_every=2)
    whole = learn(sdxl_model(), image, mask, config, tmp_path / "whole")
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        learn(sdxl_model(), image, mask, config, tmp_path / "broken", should_stop=lambda: next(calls) >= 2)
    resumed = learn(sdxl_model(), image, mask, config, tmp_path / "broken")
    torch.testing.assert_close(resumed.vectors, whole.vectors)


def test_the_lora_run_draws_in_plain_diffusers_what_this_project_draws(tmp_path):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionXLPipeline

    model = sdxl_model()
    image, mask = chair_like()
    config = small_config(steps=2, tune="lora", lora_steps=2, lora_lr=1e-2, name="oak-chair")
    concept = learn(model, image, mask, config, tmp_path)
    assert concept.lora and max(float(v.abs().max()) for k, v in concept.lora.items() if "lora_B" in k) > 0
    prompt = "a red chair in the shape of *s"
    ours = [np.asarray(r.image, dtype=np.int16)
            for r in generate(model, Concept.load(tmp_path), [prompt], GenerationConfig(steps=3, num_images=2))]

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_folder())
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++")
    pipe.load_textual_inversion(str(tmp_path / "learned_embeds.safetensors"), token="*s")
    pipe.load_textual_inversion(str(tmp_path / "learned_embeds_2.safetensors"), token="*s",
                                text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    pipe.load_lora_weights(str(tmp_path))  # finds pytorch_lora_weights.safetensors
    output = pipe([prompt] * 2, num_inference_steps=3, guidance_scale=7.5, height=64, width=64,
                  generator=[torch.Generator().manual_seed(seed) for seed in (0, 1)])
    for a, b in zip(ours, output.images):
        assert np.abs(a - np.asarray(b, dtype=np.int16)).max() <= 2


def test_the_files_load_in_plain_diffusers_and_other_tools_with_the_same_vectors(learned, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    learned.save(tmp_path)
    (named,) = write_named_files(tmp_path, learned)
    assert sorted(load_file(str(named))) == ["clip_g", "clip_l"], "AUTOMATIC1111/Forge and ComfyUI's SDXL keys"
    clip_l, clip_g = learned.vectors[:, :WIDTHS[0]], learned.vectors[:, WIDTHS[0]:]

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_folder())
    pipe.load_textual_inversion(str(tmp_path / "learned_embeds.safetensors"), token="*s")
    pipe.load_textual_inversion(str(tmp_path / "learned_embeds_2.safetensors"), token="*s",
                                text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    state = load_file(str(named))  # the one-file form, as diffusers' docs load it
    pipe.load_textual_inversion(state["clip_l"], token="<named>", text_encoder=pipe.text_encoder,
                                tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token="<named>", text_encoder=pipe.text_encoder_2,
                                tokenizer=pipe.tokenizer_2)
    for token in ("*s", "<named>"):
        names = [token, f"{token}_1"]
        rows_l = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids(names)]
        rows_g = pipe.text_encoder_2.get_input_embeddings().weight[pipe.tokenizer_2.convert_tokens_to_ids(names)]
        torch.testing.assert_close(rows_l.detach(), clip_l)
        torch.testing.assert_close(rows_g.detach(), clip_g)

    for source in (tmp_path, named):  # and back into the project: the folder, and the named file alone
        loaded = Concept.load(source)
        assert loaded.widths == WIDTHS and torch.equal(loaded.vectors, learned.vectors)


def test_generation_uses_star_s_in_both_encoders_and_the_shape_schedule(learned):
    model = sdxl_model()
    config = GenerationConfig(num_images=1, steps=3, seed=1)
    prompts = ["a red chair in the shape of *s"]
    full = generate(model, learned, prompts, config)[0].image
    half = generate(model, learned, prompts, GenerationConfig(num_images=1, steps=3, seed=1, shape_steps=0.5))[0]
    only_g = Concept(token="*s", vectors=torch.cat([torch.zeros(2, WIDTHS[0]), learned.vectors[:, WIDTHS[0]:]], 1),
                     settings=learned.settings, widths=WIDTHS)
    without_l = generate(model, only_g, prompts, config)[0].image
    assert full.size == (64, 64)
    assert not np.array_equal(np.asarray(full), np.asarray(half.image)), "the schedule switched the prompt"
    assert not np.array_equal(np.asarray(full), np.asarray(without_l)), "the first encoder's rows are used"
    # Shape guidance's extra pass needs the word-less prompt's pooled embedding and the time ids of the text rows.
    guided = [np.asarray(r.image, dtype=np.int16) for r in generate(
        model, learned, prompts, GenerationConfig(num_images=2, steps=3, seed=1, shape_guidance=3.0, batch_size=2))]
    one_by_one = [np.asarray(r.image, dtype=np.int16) for r in generate(
        model, learned, prompts, GenerationConfig(num_images=2, steps=3, seed=1, shape_guidance=3.0, batch_size=1))]
    assert all(np.abs(a - b).max() <= 2 for a, b in zip(guided, one_by_one)), "batching does not change it"
    assert np.abs(guided[0] - np.asarray(full, dtype=np.int16)).mean() > 0.5, "the push toward *s changes the picture"


def test_a_concept_of_the_other_family_is_refused_with_a_message(learned, tmp_path):
    sd_concept = Concept(token="*s", vectors=torch.zeros(1, 32))
    with pytest.raises(InputError, match="32-dimensional vectors but the model's text encoders use 32\\+48"):
        generate(sdxl_model(), sd_concept, ["a chair in the shape of *s"], GenerationConfig(steps=2, num_images=1))
    mismatched = tmp_path / "odd.safetensors"
    save_file({"clip_l": torch.zeros(1, 32), "clip_g": torch.zeros(2, 48)}, str(mismatched))
    with pytest.raises(InputError, match="different numbers of vectors"):
        Concept.load(mismatched)


def test_the_apps_worker_runs_an_sdxl_job_and_serves_an_edit_in_the_middle(tmp_path):
    from shapeinv_core.jobs import DONE, RUNNING, JobStore, Worker, wait_for
    from tests.helpers import wait_until

    image, mask = chair_like()
    store = JobStore(tmp_path)
    worker = Worker(store, model=TINY_SDXL, device="cpu", preview_every=4, preview_steps=1).start()
    config = small_config(steps=12, batch_size=1, checkpoint_every=4)
    try:
        job = store.create(image, mask, config)
        wait_until(lambda: store.get(job.id).step >= 2, "two steps of the SDXL job")
        drawn = worker.generate(Concept(token="*s", vectors=initializer_vectors(sdxl_model().pipe, "chair", 1),
                                        widths=WIDTHS, settings=config),
                                ["a red chair in the shape of *s"], GenerationConfig(steps=2, num_images=1))
        assert store.get(job.id).status == RUNNING, "the edit came back while the job still ran"
        assert wait_for(store, job.id).status == DONE
        assert "(SDXL, 64 px) ready" in worker.status_line(), "the page shows the family and native size"
    finally:
        worker.stop()
    assert drawn[0].image.size == (64, 64)
    alone = learn(sdxl_model(), image, mask, config, tmp_path / "alone")
    assert torch.equal(Concept.load(store.job_dir(job.id)).vectors, alone.vectors), "the edit changed nothing learned"
    assert (store.job_dir(job.id) / "learned_embeds_2.safetensors").is_file()
    assert (store.job_dir(job.id) / "previews" / "sample.png").is_file(), "the previews draw from SDXL checkpoints"
    step, state = RunFolder(store.job_dir(job.id)).load_checkpoint()
    early = Concept.from_checkpoint(config, step, state)  # what the page offers for download mid-run
    assert early.widths == WIDTHS and sorted(load_file(str(write_named_files(tmp_path, early)[0]))) == [
        "clip_g", "clip_l"]


def test_gradient_checkpointing_saves_memory_without_changing_what_is_learned():
    image, mask = chair_like()
    config = small_config(steps=2, mask_weight=1.0)
    plain = invert(load_model(TINY_SDXL, device="cpu", gradient_checkpointing="off"), image, mask, config)
    model = load_model(TINY_SDXL, device="cpu", gradient_checkpointing="on")
    assert model.gradient_checkpointing
    checkpointed = invert(model, image, mask, config)
    torch.testing.assert_close(checkpointed.vectors, plain.vectors)
    assert not model.pipe.unet.is_gradient_checkpointing, "off again once learning ends"
    assert not load_model(TINY_SDXL, device="cpu").gradient_checkpointing, "auto: only on a GPU"


def test_the_command_line_learns_and_draws_on_sdxl(tmp_path, capsys):
    from shapeinv_core.cli import main

    image, mask = chair_like((80, 64))
    image.save(tmp_path / "oak.png")
    mask.save(tmp_path / "oak_mask.png")
    run = tmp_path / "run"
    assert main(["invert", str(tmp_path / "oak.png"), "--mask", str(tmp_path / "oak_mask.png"), "-o", str(run),
                 "--model", TINY_SDXL, "--device", "cpu", "--steps", "2", "--batch", "1"]) == 0
    assert json.loads((run / "config.json").read_text())["resolution"] == 64, "the model's native size"
    assert sorted(load_file(str(run / "oak.safetensors"))) == ["clip_g", "clip_l"]
    assert main(["generate", str(run), "a red chair in the shape of *s", "-n", "1", "--steps", "2",
                 "--device", "cpu", "-o", str(tmp_path / "images")]) == 0
    assert (tmp_path / "images" / "grid.png").is_file()
    made = Image.open(next((tmp_path / "images").glob("00_*_seed0.png"))).text  # each image says how it was made
    assert made["prompt"] == "a red chair in the shape of *s" and json.loads(made["concept"])["model"] == TINY_SDXL
    capsys.readouterr()


def test_a_single_original_layout_sdxl_checkpoint_loads_with_the_same_weights(tmp_path):
    # No real SDXL checkpoint can be downloaded: tiny-sdxl is saved in the original layout (both text
    # encoders, the second in OpenCLIP's names), and diffusers' converter must rebuild it through load_model.
    from ldm_checkpoint import write_ldm_sdxl_checkpoint

    reference = sdxl_model()
    checkpoint = write_ldm_sdxl_checkpoint(reference.pipe, tmp_path / "tiny-sdxl.safetensors")
    assert family_of_checkpoint(checkpoint) == SDXL
    model = load_model(str(checkpoint), device="cpu", single_file_config=str(sdxl_folder()))
    assert type(model.pipe).__name__ == "StableDiffusionXLPipeline"
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        expected, loaded = getattr(reference.pipe, name).state_dict(), getattr(model.pipe, name).state_dict()
        assert expected.keys() == loaded.keys(), name
        for key, value in expected.items():
            assert torch.equal(loaded[key].reshape(value.shape), value), f"{name}.{key}"
