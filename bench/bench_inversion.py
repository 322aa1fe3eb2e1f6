"""Benchmarks for the inversion loop (not tests): run by hand, results go to bench/RESULTS.md.

    python bench/bench_inversion.py --size tiny            # seconds, any machine
    python bench/bench_inversion.py --size sd15 --resolution 256 --steps 3   # SD 1.5-shaped, random weights

What it measures, each as a median over the timed steps of one process:
  1. sweep: K mask weights learned together (one batched UNet pass per step) vs K separate runs;
  2. capture: a UNet forward+backward with the *s map captured on every cross-attention layer
     vs the same pass with the fused attention everywhere (the price of the mask loss);
  3. trainable: our small *s parameter vs the whole token-embedding matrix trainable (the
     diffusers example's way): time per step and the optimiser state it keeps.
`diffusers_example_step_times` (used by bench/gpu_check.py) re-creates one step of diffusers'
textual-inversion example at its mixed-precision setting.
The two sides of each comparison alternate, so a busy machine slows both alike.
Absolute times mean something only on a GPU; on CPU read the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.chairs.draw import render_chair  # noqa: E402
from shapeinv_core.config import InversionConfig  # noqa: E402
from shapeinv_core.method.attention import AttentionStore, capture_attention  # noqa: E402
from shapeinv_core.method.inversion import invert_many, prompt_ids, substitute_embeddings  # noqa: E402
from shapeinv_core.models.families import (  # noqa: E402
    ImageSizes,
    cast_conditioning,
    encode_ids,
    repeat_conditioning,
    text_pairs,
)
from shapeinv_core.models.loading import load_model  # noqa: E402
from shapeinv_core.models.tiny import build_tiny_pipeline  # noqa: E402


def build_sd15_shaped(folder: Path) -> Path:
    """A random-weight pipeline with SD 1.5's UNet, VAE and CLIP ViT-L text encoder shapes."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _sd_sized_tokenizer(folder)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        max_position_embeddings=77, projection_dim=768, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="quick_gelu"))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                              clip_sample=False)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False
                            ).save_pretrained(folder, safe_serialization=True)
    return folder


def build_sdxl_shaped(folder: Path) -> Path:
    """A random-weight pipeline with SDXL base's shapes: its UNet (2.6 B parameters, `text_time` conditioning),
    VAE, CLIP ViT-L and OpenCLIP ViT-bigG text encoders (the second with its projection).

    Built in bf16 on the GPU when there is one (fp32 on a CPU would need 10 GB and minutes).
    """
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    tokenizer = _sd_sized_tokenizer(folder)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
            max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
            max_position_embeddings=77, projection_dim=1280, hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        unet = UNet2DConditionModel(
            sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
            cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                            sample_size=1024, scaling_factor=0.13025)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
                                     add_watermarker=False)
    if device == "cuda":
        pipe.to(torch.bfloat16)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _sd_sized_tokenizer(folder: Path):
    """A CLIP tokenizer with CLIP's 49408 entries, so the token tables have the real models' size."""
    from transformers import CLIPTokenizer

    from shapeinv_core.models.tiny import write_tiny_clip_vocab

    vocab, merges = write_tiny_clip_vocab(folder.with_name(folder.name + "-vocab"))
    entries = json.loads(vocab.read_text())
    for special in ("<|startoftext|>", "<|endoftext|>"):
        entries.pop(special)
    entries.update({f"filler{index}</w>": len(entries) + index for index in range(49406 - len(entries))})
    entries = {token: index for index, token in enumerate(entries)}
    entries.update({"<|startoftext|>": 49406, "<|endoftext|>": 49407})
    vocab.write_text(json.dumps(entries))
    return CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=77)


def step_times(model, configs) -> list[float]:
    image, mask = render_chair(0, size=256)
    seconds: list[float] = []
    invert_many(model, image, mask, configs, on_step=lambda report: seconds.append(report.seconds))
    return seconds[1:] if len(seconds) > 1 else seconds  # the first step warms caches up


def bench_sweep(model, base: InversionConfig, weights: list[float], rounds: int) -> dict:
    """Per step: all weights in one run vs the sum over one run per weight, in alternating rounds."""
    configs = [replace(base, mask_weight=w) for w in weights]
    together, separate = [], []
    for _ in range(rounds):  # alternate, so a busy machine slows both sides alike
        together.append(statistics.median(step_times(model, configs)))
        separate.append(sum(statistics.median(step_times(model, [config])) for config in configs))
    return {"weights": len(weights), "rounds": rounds, "together_s_per_step": statistics.median(together),
            "separate_s_per_step_sum": statistics.median(separate),
            "speedup": statistics.median(s / t for s, t in zip(separate, together))}


def _timed(run) -> float:
    began = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - began


def _unet_inputs(model, base: InversionConfig):
    size = base.resolution // model.pipe.vae_scale_factor
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(base.batch_size, 4, size, size, generator=generator).to(model.device, model.dtype)
    timesteps = torch.randint(0, 1000, (base.batch_size,), generator=generator).to(model.device)
    ids = model.pipe.tokenizer(base.prompt(), padding="max_length", max_length=77, return_tensors="pt").input_ids
    return latents, timesteps, ids.to(model.device), size


def bench_capture(model, base: InversionConfig, repeats: int) -> dict:
    """UNet forward+backward with fused attention everywhere vs *s maps captured on every cross-attention layer."""
    pipe = model.pipe
    pipe.unet.requires_grad_(False)
    latents, timesteps, _, size = _unet_inputs(model, base)
    encoders = [encoder for _, encoder in text_pairs(pipe)]
    sizes = ImageSizes((base.resolution,) * 2, (0, 0), (base.resolution,) * 2)  # used by SDXL only
    with torch.no_grad():  # the text side is not what this measures
        hidden, added = encode_ids(encoders, prompt_ids(pipe, base.prompt()).to(model.device),
                                   sizes.time_ids().to(model.device))
    hidden = hidden.repeat(base.batch_size, 1, 1).to(model.dtype).detach().requires_grad_(True)
    added = cast_conditioning(repeat_conditioning(added, base.batch_size), model.dtype)

    def one_pass():
        pipe.unet(latents, timesteps, encoder_hidden_states=hidden,
                  added_cond_kwargs=added).sample.float().mean().backward()

    store = AttentionStore([6], (size, size), base.map_resolution, device=model.device)
    fused, captured = [], []
    one_pass()
    for _ in range(repeats):  # alternate fused and captured passes
        fused.append(_timed(one_pass))
        with capture_attention(pipe.unet, store):
            captured.append(_timed(one_pass))
            store.reset()
    return {"repeats": repeats, "fused_s": statistics.median(fused), "captured_s": statistics.median(captured),
            "overhead": statistics.median(c / f for c, f in zip(captured, fused)) - 1}


def bench_trainable(model, base: InversionConfig, repeats: int) -> dict:
    """One step with only the *s vectors trainable vs the whole token-embedding matrix (diffusers' example)."""
    pipe = model.pipe
    latents, timesteps, ids, _ = _unet_inputs(model, base)
    table = pipe.text_encoder.get_input_embeddings()
    placeholder_id = int(ids[0, 6])
    vectors = torch.nn.Parameter(table.weight[placeholder_id:placeholder_id + 1].detach().float().clone()[None])
    ours_optimizer = torch.optim.AdamW([vectors], lr=base.learning_rate)
    full_optimizer = torch.optim.AdamW([table.weight], lr=base.learning_rate)

    def step(optimizer, substitute: bool):
        with substitute_embeddings({table: ([placeholder_id], slice(None))}) as substitution:
            substitution.vectors = vectors if substitute else None
            hidden = pipe.text_encoder(ids)[0].repeat(base.batch_size, 1, 1)
        pipe.unet(latents, timesteps, encoder_hidden_states=hidden.to(model.dtype)).sample.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ours, full = [], []
    for _ in range(repeats):  # alternate the two ways
        table.weight.requires_grad_(False)
        ours.append(_timed(lambda: step(ours_optimizer, True)))
        table.weight.requires_grad_(True)
        full.append(_timed(lambda: step(full_optimizer, False)))
    table.weight.requires_grad_(False)
    state_bytes = [sum(t.numel() * t.element_size() for state in opt.state.values() for t in state.values()
                       if torch.is_tensor(t)) for opt in (ours_optimizer, full_optimizer)]
    return {"repeats": repeats, "ours_s_per_step": statistics.median(ours[1:]),
            "full_matrix_s_per_step": statistics.median(full[1:]),
            "ours_optimizer_state_bytes": state_bytes[0], "full_matrix_optimizer_state_bytes": state_bytes[1]}


def diffusers_example_step_times(model, base: InversionConfig, steps: int) -> list[float]:
    """Seconds per step of diffusers' examples/textual_inversion/textual_inversion.py, re-created.

    As the example runs with `--mixed_precision bf16|fp16`: UNet and VAE in the model's dtype,
    the text encoder in fp32 with its whole token table trainable (AdamW, weight decay 1e-2),
    forward under autocast, the VAE encoding the image every step, and all rows but the
    placeholder's restored after each optimiser step. The script itself cannot be fetched
    offline; this is its step, line for line, on the same model.
    """
    from diffusers import DDPMScheduler

    pipe, device = model.pipe, model.device
    text_encoder = copy.deepcopy(pipe.text_encoder).float().train()
    text_encoder.requires_grad_(False)
    table = text_encoder.get_input_embeddings()
    table.weight.requires_grad_(True)
    optimizer = torch.optim.AdamW(table.parameters(), lr=base.learning_rate, betas=(0.9, 0.999),
                                  weight_decay=1e-2, eps=1e-8)
    ids = pipe.tokenizer(base.prompt().replace(base.placeholder, base.initializer), padding="max_length",
                         max_length=77, return_tensors="pt").input_ids.to(device)
    placeholder_id = int(ids[0, ids[0].tolist().index(pipe.tokenizer.eos_token_id) - 1])  # the last word's row
    keep = torch.ones(table.weight.shape[0], dtype=torch.bool, device=device)
    keep[placeholder_id] = False
    original = table.weight.detach().clone()
    image, _ = render_chair(0, size=base.resolution)
    pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1
    pixels = pixels[None].repeat(base.batch_size, 1, 1, 1).to(device, model.dtype)
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    autocast = torch.autocast(device.type, dtype=model.dtype, enabled=model.dtype != torch.float32)

    def step():
        with autocast:
            latents = pipe.vae.encode(pixels).latent_dist.sample().detach() * pipe.vae.config.scaling_factor
            noise = torch.randn_like(latents)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            hidden = text_encoder(ids.repeat(latents.shape[0], 1))[0].to(model.dtype)
            pred = pipe.unet(noisy, timesteps, hidden).sample
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float(), reduction="mean")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        with torch.no_grad():
            table.weight[keep] = original[keep]

    times = [_timed(step) for _ in range(steps)]
    table.weight.requires_grad_(False)
    return times[1:] if len(times) > 1 else times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--weights", default="0,0.1,0.5,1.0")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the sweep comparison")
    parser.add_argument("--repeats", type=int, default=5, help="alternating passes of the other comparisons")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "shapeinv-bench")
    args = parser.parse_args()

    folder = build_tiny_pipeline(args.folder / "tiny") if args.size == "tiny" else build_sd15_shaped(
        args.folder / "sd15")
    model = load_model(str(folder), device=args.device, dtype=args.dtype)
    base = InversionConfig(resolution=args.resolution, steps=args.steps, batch_size=args.batch).research_form()
    base = base.validate()  # the research form, as recorded
    weights = [float(w) for w in args.weights.split(",")]
    results = {
        "size": args.size, "device": str(model.device), "dtype": str(model.dtype), "torch": torch.__version__,
        "resolution": args.resolution, "batch": args.batch, "steps": args.steps,
        "sweep": bench_sweep(model, base, weights, rounds=args.rounds),
        "capture": bench_capture(model, base, repeats=args.repeats),
        "trainable": bench_trainable(model, base, repeats=args.repeats),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
