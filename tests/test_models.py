import json

import pytest
import torch

from helpers import tiny_folder
from shapeinv_core.errors import ModelLoadError
from shapeinv_core.models.loading import TINY, choose_device, load_model
from shapeinv_core.models.tiny import build_tiny_pipeline


def test_auto_device_on_a_machine_without_gpu_is_cpu_fp32():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert choose_device("auto", "auto") == (torch.device("cpu"), torch.float32)


def test_forcing_cuda_without_a_gpu_says_what_to_do():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="--device cpu"):
        choose_device("cuda", "auto")


def test_dtype_can_be_forced_and_unknown_names_are_refused():
    assert choose_device("cpu", "bf16")[1] == torch.bfloat16
    with pytest.raises(ModelLoadError, match="fp32, fp16 or bf16"):
        choose_device("cpu", "float8")


def test_tiny_is_written_to_the_cache_and_loaded_through_the_folder_path(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPEINV_CACHE", str(tmp_path))
    model = load_model(TINY, device="cpu")
    folder = tmp_path / "tiny-sd-epsilon"
    assert (folder / "model_index.json").is_file()
    tokenizer_files = {path.name for path in (folder / "tokenizer").iterdir()}
    assert tokenizer_files & {"vocab.json", "tokenizer.json"}
    assert model.source == TINY and model.revision.startswith("local:")
    assert type(model.pipe).__name__ == "StableDiffusionPipeline"
    # A real CLIP BPE tokenizer: whole words from the vocabulary are single tokens.
    ids = model.pipe.tokenizer("a photo of chair", add_special_tokens=False).input_ids
    assert len(ids) == 4


def test_a_local_folder_loads_with_its_prediction_type():
    model = load_model(str(tiny_folder("v_prediction")), device="cpu")
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"
    assert model.dtype == torch.float32


def test_building_tiny_twice_reuses_the_folder(tmp_path):
    first = build_tiny_pipeline(tmp_path / "t")
    stamp = (first / "model_index.json").stat().st_mtime_ns
    assert build_tiny_pipeline(tmp_path / "t") == first
    assert (first / "model_index.json").stat().st_mtime_ns == stamp


def test_a_folder_that_is_not_a_pipeline_is_explained(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_model(str(tmp_path), device="cpu")


def test_a_pipeline_folder_that_is_not_stable_diffusion_is_refused(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline", "unet": ["x", "y"]}))
    with pytest.raises(ModelLoadError, match="is a DDPMPipeline; shapeinv handles Stable Diffusion 1.x/2.x and SDXL"):
        load_model(str(folder), device="cpu")


def test_an_unknown_hub_id_offline_names_the_fixes(monkeypatch):
    # HF_HUB_OFFLINE makes the hub client answer from the (empty) cache at once: no network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", "/nonexistent-shapeinv-cache")
    with pytest.raises(ModelLoadError) as caught:
        load_model("shapeinv-tests/no-such-model", device="cpu")
    message = str(caught.value)
    assert "no-such-model" in message and "local diffusers folder" in message
    assert "--model toy" in message and message.index("--model toy") < message.index("--model tiny"), \
        "the trained offline model is named first"
    assert "\n" not in message


def test_single_file_checks_refuse_missing_and_pickle_files(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "missing.safetensors"), device="cpu")
    pickle_file = tmp_path / "model.ckpt"
    pickle_file.write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="no pickle"):
        load_model(str(pickle_file), device="cpu")


def test_a_single_original_layout_checkpoint_loads_with_the_same_weights(tmp_path):
    # No real checkpoint can be downloaded: the tiny pipeline is saved in the original (LDM)
    # single-file layout, and diffusers' real converter must rebuild it through load_model.
    from ldm_checkpoint import write_ldm_checkpoint

    reference = load_model(str(tiny_folder()), device="cpu")
    checkpoint = write_ldm_checkpoint(reference.pipe, tmp_path / "tiny-sd.safetensors")
    model = load_model(str(checkpoint), device="cpu", single_file_config=str(tiny_folder()))
    for name in ("unet", "vae", "text_encoder"):
        expected, loaded = getattr(reference.pipe, name).state_dict(), getattr(model.pipe, name).state_dict()
        assert expected.keys() == loaded.keys()
        for key, value in expected.items():
            assert torch.equal(loaded[key].reshape(value.shape), value), f"{name}.{key}"
    assert model.source == str(checkpoint)


def test_a_safetensors_file_that_is_not_a_checkpoint_is_explained(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "learned_embeds.safetensors"
    save_file({"*s": torch.zeros(1, 32)}, str(path))
    with pytest.raises(ModelLoadError, match="an embedding rather than a model"):
        load_model(str(path), device="cpu", single_file_config=str(tiny_folder()))
