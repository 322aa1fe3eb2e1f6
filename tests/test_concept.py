import json

import pytest
import torch
from safetensors.torch import load_file

from helpers import chair_like, small_config, tiny_folder, tiny_model
from shapeinv_core import __version__
from shapeinv_core.errors import InputError
from shapeinv_core.method.concept import Concept, install_tokens, remove_tokens
from shapeinv_core.method.inversion import invert


@pytest.fixture(scope="module")
def learned():
    image, mask = chair_like()
    model = tiny_model()
    return invert(model, image, mask, small_config(num_vectors=2, steps=2)), model


def test_saved_in_diffusers_textual_inversion_format_with_provenance(learned, tmp_path):
    concept, model = learned
    concept.save(tmp_path)
    tensors = load_file(tmp_path / "learned_embeds.safetensors")
    assert list(tensors) == ["*s"] and tensors["*s"].shape == (2, 32) and tensors["*s"].dtype == torch.float32
    info = json.loads((tmp_path / "concept.json").read_text())
    assert info["token"] == "*s" and info["initializer"] == "chair" and info["class_word"] == "chair"
    assert info["template"] == "a photo of {cls} in the shape of {token}"
    assert info["settings"]["mask_weight"] == 0.1 and info["steps_done"] == 2
    assert info["model"] == model.source and info["model_revision"] == model.revision
    assert set(info["final_losses"]) == {"loss", "diffusion_loss", "mask_loss"}
    assert info["shapeinv_version"] == __version__


def test_round_trip(learned, tmp_path):
    concept, _ = learned
    loaded = Concept.load(concept.save(tmp_path))
    assert torch.equal(loaded.vectors, concept.vectors)
    assert loaded.settings == concept.settings and loaded.steps_done == concept.steps_done


def test_plain_diffusers_loads_it(learned, tmp_path):
    from diffusers import StableDiffusionPipeline

    concept, _ = learned
    concept.save(tmp_path)
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folder(), safety_checker=None)
    pipe.load_textual_inversion(str(tmp_path), token="*s")
    ids = pipe.tokenizer.convert_tokens_to_ids(["*s", "*s_1"])
    torch.testing.assert_close(pipe.text_encoder.get_input_embeddings().weight[ids].detach(), concept.vectors)


def test_a_bare_embeds_file_made_elsewhere_loads_with_defaults(learned, tmp_path):
    concept, _ = learned
    concept.save(tmp_path)
    (tmp_path / "concept.json").unlink()
    loaded = Concept.load(tmp_path / "learned_embeds.safetensors")
    assert loaded.token == "*s" and loaded.vectors.shape == (2, 32)


def test_missing_or_broken_files_say_what_to_do(tmp_path):
    with pytest.raises(InputError, match="shapeinv invert"):
        Concept.load(tmp_path)
    (tmp_path / "learned_embeds.safetensors").write_bytes(b"garbage")
    with pytest.raises(InputError, match="not a readable safetensors"):
        Concept.load(tmp_path)


def test_a_real_word_cannot_be_the_placeholder():
    model = tiny_model()
    with pytest.raises(InputError, match="not a word"):
        install_tokens(model.pipe, "chair", torch.zeros(1, 32))


def test_installing_twice_replaces_the_earlier_vectors():
    model = tiny_model()
    install_tokens(model.pipe, "*s", torch.zeros(2, 32))
    ids = install_tokens(model.pipe, "*s", torch.ones(1, 32))
    assert "*s_1" not in model.pipe.tokenizer.get_vocab()
    assert torch.equal(model.pipe.text_encoder.get_input_embeddings().weight[ids[0]], torch.ones(32))


def _install_and_remove_tokens(model, round_: int) -> None:
    install_tokens(model.pipe, "*s", torch.full((2, 32), float(round_)))
    remove_tokens(model.pipe, "*s")


def _add_and_remove_lora(model, round_: int) -> None:
    from shapeinv_core.method.lora import ADAPTER, add_lora

    params = add_lora(model.pipe.unet, rank=4, seed=round_)
    assert all(param.device.type == "cpu" for param in params), "an adapter weight landed on the meta device"
    model.pipe.unet.delete_adapters(ADAPTER)


@pytest.mark.parametrize("change", [_install_and_remove_tokens, _add_and_remove_lora], ids=["tokens", "lora"])
def test_the_model_can_be_changed_while_another_thread_loads_a_model(change):
    """The worker installs `*s` for a preview or an edit, or adds a LoRA phase's adapter, while in a library
    user's program or a test another thread may load a model. diffusers and transformers load with empty
    weights by patching torch.nn for the whole process; without the shared lock the new embedding table or
    adapter landed on the meta device ("variable.set_data(tensor) ... incompatible tensor type" for the
    tokens), within a few of these loads."""
    import threading

    model = tiny_model()
    loads_done = threading.Event()
    errors: list[BaseException] = []
    rounds = [0]

    def change_until_the_loads_end() -> None:
        while not loads_done.is_set():
            try:
                change(model, rounds[0])
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)
                return
            rounds[0] += 1

    worker = threading.Thread(target=change_until_the_loads_end)
    worker.start()
    try:
        for _ in range(8):
            tiny_model()
    finally:
        loads_done.set()
        worker.join(timeout=300)
    assert not errors, f"changing the model failed while another loaded: {errors[0]!r}"
    assert rounds[0] > 0, "the changes ran beside the loads"
    assert model.pipe.text_encoder.get_input_embeddings().weight.device.type == "cpu"
