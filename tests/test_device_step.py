"""The step as a GPU runs it, checked on the CPU: fp16 precision, compile-readiness, opt-in layouts,
the non-finite-loss guard, and the one-call GPU check script on the tiny model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch._dynamo
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch.optim.optimizer import register_optimizer_step_pre_hook

from helpers import chair_like, small_config, tiny_folder, tiny_model
from shapeinv_core.errors import ShapeInvError
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.method.attention import AttentionStore, capture_attention, cross_attention_layers
from shapeinv_core.method.inversion import invert
from shapeinv_core.models.loading import load_model

ROOT = Path(__file__).resolve().parent.parent


def first_step_gradient(dtype: str, mask_weight: float) -> torch.Tensor:
    """The gradient the optimiser receives at the first step (after any loss scaling is undone)."""
    seen = []
    hook = register_optimizer_step_pre_hook(
        lambda optimizer, args, kwargs: seen.append(optimizer.param_groups[0]["params"][0].grad.detach().clone()))
    try:
        model = load_model(str(tiny_folder()), device="cpu", dtype=dtype)
        image, mask = chair_like()
        invert(model, image, mask, small_config(steps=1, resolution=256, batch_size=2, mask_weight=mask_weight))
    finally:
        hook.remove()
    assert len(seen) == 1
    return seen[0].flatten().double()


def test_the_fp16_path_has_the_fp32_gradient_also_for_the_mask_term():
    # fp16 is what GPUs without bf16 run. At 256 px the mask term's gradient underflows in fp16:
    # without loss scaling its cosine to fp32 was 0.994 here, with an fp16 text encoder lower still.
    fp32 = {weight: first_step_gradient("fp32", weight) for weight in (0.0, 1.0)}
    fp16 = {weight: first_step_gradient("fp16", weight) for weight in (0.0, 1.0)}
    cosine = torch.nn.functional.cosine_similarity
    # Same noise and timesteps in both runs, so the difference is the mask term's gradient.
    mask_fp32, mask_fp16 = fp32[1.0] - fp32[0.0], fp16[1.0] - fp16[0.0]
    assert mask_fp32.norm() > 0.01 * fp32[1.0].norm(), "the mask term contributes to the gradient"
    assert cosine(mask_fp16, mask_fp32, dim=0) >= 0.999
    assert cosine(fp16[1.0], fp32[1.0], dim=0) >= 0.999


def test_the_unet_with_map_capture_compiles_as_one_graph():
    pipe = tiny_model().pipe
    ids = pipe.tokenizer("a photo of chair", padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = pipe.text_encoder(ids)[0].repeat(2, 1, 1).detach().requires_grad_(True)
    latents, timesteps = torch.randn(2, 4, 8, 8), torch.tensor([10, 500])
    store = AttentionStore([3], (8, 8), 16)
    torch._dynamo.reset()
    with capture_attention(pipe.unet, store):
        explained = torch._dynamo.explain(pipe.unet)(latents, timesteps, encoder_hidden_states=hidden)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1
    layers = len(cross_attention_layers(pipe.unet))
    assert len(store.maps) == layers and store.maps[0].shape == (2, 16, 16), "the maps still reach the store"


def test_compile_and_channels_last_are_opt_in_and_channels_last_learns_the_same():
    image, mask = chair_like()
    plain = tiny_model()
    assert plain.pipe.unet._compiled_call_impl is None, "no compile by default"
    assert plain.pipe.unet.conv_in.weight.is_contiguous()
    expected = invert(plain, image, mask, small_config())

    nhwc = load_model(str(tiny_folder()), device="cpu", channels_last=True)
    assert nhwc.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(invert(nhwc, image, mask, small_config()).vectors, expected.vectors,
                               atol=1e-5, rtol=1e-4)
    compiled = load_model(str(tiny_folder()), device="cpu", compile_unet=True)
    assert compiled.pipe.unet._compiled_call_impl is not None  # compiling itself is checked by the test above


def test_a_non_finite_loss_stops_the_run_and_keeps_the_state_before_that_step(tmp_path):
    # A loss overflowing to NaN is what fp16 can do on a GPU; here the UNet's output is made NaN at
    # the third step, as an overflow would.
    image, mask = chair_like()
    config = small_config(steps=4, checkpoint_every=10)
    two_steps = small_config(steps=2, checkpoint_every=10)
    clean = RunFolder(tmp_path / "clean")
    clean.start(image, mask, two_steps)
    invert(tiny_model(), image, mask, two_steps, run=clean)
    _, after_two_steps = clean.load_checkpoint()

    model = tiny_model()
    forward, calls = model.pipe.unet.forward, []

    def overflowing_forward(*args, **kwargs):
        calls.append(1)
        output = forward(*args, **kwargs)
        return UNet2DConditionOutput(sample=output.sample * float("nan")) if len(calls) == 3 else output

    model.pipe.unet.forward = overflowing_forward
    broken = RunFolder(tmp_path / "broken")
    broken.start(image, mask, config)
    with pytest.raises(ShapeInvError, match="The loss became nan at step 3.*checkpoint of step 2"):
        invert(model, image, mask, config, run=broken)
    step, kept = broken.load_checkpoint()
    assert step == 2 and [record["step"] for record in broken.read_log()] == [1, 2]
    for key in ("vectors", "exp_avg", "exp_avg_sq"):
        assert torch.isfinite(kept[key]).all()
        torch.testing.assert_close(kept[key], after_two_steps[key], atol=0, rtol=0)


def test_the_gpu_check_runs_every_section_on_the_tiny_model(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--tiny", "--steps", "1",
               "--sample-steps", "2", "--compile-backend", "eager", "--out", str(tmp_path),
               "--folder", str(tiny_folder().parent / "gpu-check")]
    # Both families at once, as two processes (the check's own files differ): the start-ups overlap.
    runs = {family: subprocess.Popen([*command, "--family", family], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True) for family in ("sd", "sdxl")}
    for family, run in runs.items():
        output, _ = run.communicate(timeout=900)
        assert run.returncode == 0, f"{family}: {output[-3000:]}"

    results = json.loads((tmp_path / "gpu_results.json").read_text())
    assert results["errors"] == {}
    for section in ("floor", "step", "sweep", "generate", "example", "compiled"):
        assert section in results, section
    assert results["sweep"]["weights"] == 8 and results["step"]["steps_timed"] == 1
    assert results["step"]["median_s"] > 0 and results["generate"]["batch_of_4_s"] > 0
    table = (tmp_path / "gpu_results.md").read_text()
    assert "| inversion step / floor |" in table and "| one image, 2 steps |" in table
    assert "LoRA phase step" in table

    # The SDXL part: the tiny SDXL-shaped model, with its own files.
    results = json.loads((tmp_path / "gpu_results_sdxl.json").read_text())
    assert results["errors"] == {} and results["family"] == "sdxl"
    assert {"floor", "step", "lora", "generate"} <= set(results) and "sweep" not in results
    assert "target <= 24 GB" in (tmp_path / "gpu_results_sdxl.md").read_text()
