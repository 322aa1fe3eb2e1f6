"""Benchmarks for the inversion loop (not tests): run by hand, results go to bench/RESULTS.md.

    python bench/bench_inversion.py --size tiny            # seconds, any machine
    python bench/bench_inversion.py --size sd15 --resolution 256 --steps 3   # SD 1.5-shaped, random weights

What it measures, each as a median over the timed steps of one process:
  1. sweep: K mask weights learned together (one batched UNet pass per step) vs K separate runs;
  2. capture: a UNet forward+backward with the *s map captured on every cross-attention layer
     vs the same pass with the fused attention everywhere (the price of the mask loss);
  3. trainable: our small *s parameter vs the whole token-embedding matrix trainable (the
     diffusers example's way): time per step and the optimiser state it keeps.
Absolute times mean something only on a GPU; on CPU read the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shapeinv_core.attention import AttentionStore, capture_attention  # noqa: E402
from shapeinv_core.chairs import render_chair  # noqa: E402
from shapeinv_core.config import InversionConfig  # noqa: E402
from shapeinv_core.inversion import invert, invert_many  # noqa: E402
from shapeinv_core.models import load_model  # noqa: E402
from shapeinv_core.tiny import build_tiny_pipeline  # noqa: E402


def build_sd15_shaped(folder: Path) -> Path:
    """A random-weight pipeline with SD 1.5's UNet, VAE and CLIP ViT-L text encoder shapes."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from shapeinv_core.tiny import write_tiny_clip_vocab

    vocab, merges = write_tiny_clip_vocab(folder.with_name(folder.name + "-vocab"))
    tokenizer = CLIPTokenizer(vocab=str(vocab), merges=str(merges), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
        max_position_embeddings=77, projection_dim=768, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, hidden_act="quick_gelu"))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
    StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False
                            ).save_pretrained(folder, safe_serialization=True)
    return folder


def step_times(model, configs, steps: int) -> list[float]:
    image, mask = render_chair(0, size=256)
    seconds: list[float] = []
    invert_many(model, image, mask, configs, on_step=lambda report: seconds.append(report.seconds))
    return seconds[1:] if len(seconds) > 1 else seconds  # the first step warms caches up


def bench_sweep(model, base: InversionConfig, weights: list[float]) -> dict:
    together = statistics.median(step_times(model, [InversionConfig(**{**vars(base), "mask_weight": w})
                                                    for w in weights], base.steps))
    separate = sum(statistics.median(step_times(model, [InversionConfig(**{**vars(base), "mask_weight": w})],
                                                base.steps)) for w in weights)
    return {"weights": len(weights), "together_s_per_step": together, "separate_s_per_step_sum": separate,
            "speedup": separate / together}


def bench_capture(model, base: InversionConfig, repeats: int) -> dict:
    pipe = model.pipe
    size = base.resolution // pipe.vae_scale_factor
    latents = torch.randn(base.batch_size, 4, size, size, device=model.device, dtype=model.dtype)
    t = torch.randint(0, 1000, (base.batch_size,), device=model.device)
    ids = pipe.tokenizer(base.prompt(), padding="max_length", max_length=77, return_tensors="pt").input_ids
    hidden = pipe.text_encoder(ids.to(model.device))[0].repeat(base.batch_size, 1, 1).detach().requires_grad_(True)

    def one_pass() -> float:
        began = time.perf_counter()
        pipe.unet(latents, t, encoder_hidden_states=hidden).sample.float().mean().backward()
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - began

    pipe.unet.requires_grad_(False)
    one_pass()
    fused = statistics.median(one_pass() for _ in range(repeats))
    store = AttentionStore([6], (size, size), base.map_resolution)
    with capture_attention(pipe.unet, store):
        one_pass()
        captured = statistics.median(one_pass() for _ in range(repeats))
    return {"fused_s": fused, "captured_s": captured, "overhead": captured / fused - 1}


def bench_trainable(model, base: InversionConfig) -> dict:
    image, mask = render_chair(0, size=256)
    ours: list[float] = []
    invert(model, image, mask, base, on_step=lambda r: ours.append(r.seconds))
    table = model.pipe.text_encoder.get_input_embeddings().weight
    ours_state = 3 * base.num_vectors * table.shape[1] * 4  # vectors + two AdamW moments, fp32
    full_state = 3 * table.numel() * 4
    # The whole-matrix way: the embedding gets gradients and AdamW state for every row.
    embedding = model.pipe.text_encoder.get_input_embeddings()
    embedding.weight.requires_grad_(True)
    optimizer = torch.optim.AdamW([embedding.weight], lr=base.learning_rate)
    ids = model.pipe.tokenizer(base.prompt(), padding="max_length", max_length=77, return_tensors="pt").input_ids
    size = base.resolution // model.pipe.vae_scale_factor
    latents = torch.randn(base.batch_size, 4, size, size, device=model.device, dtype=model.dtype)
    t = torch.randint(0, 1000, (base.batch_size,), device=model.device)
    full: list[float] = []
    for _ in range(base.steps):
        began = time.perf_counter()
        hidden = model.pipe.text_encoder(ids.to(model.device))[0].repeat(base.batch_size, 1, 1)
        model.pipe.unet(latents, t, encoder_hidden_states=hidden).sample.float().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        full.append(time.perf_counter() - began)
    embedding.weight.requires_grad_(False)
    return {"ours_s_per_step": statistics.median(ours[1:] or ours),
            "full_matrix_s_per_step": statistics.median(full[1:] or full),
            "ours_optimizer_state_bytes": ours_state, "full_matrix_optimizer_state_bytes": full_state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--weights", default="0,0.1,0.5,1.0")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "shapeinv-bench")
    args = parser.parse_args()

    folder = build_tiny_pipeline(args.folder / "tiny") if args.size == "tiny" else build_sd15_shaped(
        args.folder / "sd15")
    model = load_model(str(folder), device=args.device, dtype=args.dtype)
    base = InversionConfig(resolution=args.resolution, steps=args.steps, batch_size=args.batch).validate()
    weights = [float(w) for w in args.weights.split(",")]
    results = {
        "size": args.size, "device": str(model.device), "dtype": str(model.dtype), "torch": torch.__version__,
        "resolution": args.resolution, "batch": args.batch, "steps": args.steps,
        "sweep": bench_sweep(model, base, weights),
        "capture": bench_capture(model, base, repeats=max(3, args.steps)),
        "trainable": bench_trainable(model, base),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
