"""Tiny random-weight models (Stable Diffusion and CLIP) for tests and offline demos.

They use the real diffusers/transformers classes and a real CLIP BPE tokenizer built from
vocabulary files written here, so every code path runs; their images and scores mean nothing.
Each is saved to a folder once and then loaded like any downloaded model.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from .cache import cache_dir

TINY_WORDS = (
    "a photo of chair in the shape of red blue green black white wooden leopard print sofa armchair "
    "stool table lamp golden glass marble made metal plastic velvet leather stone ice cake cat dog "
    "on with and an picture render rendering painting drawing sketch style old modern small large"
).split()


def default_folder(prediction_type: str = "epsilon") -> Path:
    """Where `build_tiny_pipeline` writes the tiny pipeline unless told otherwise."""
    return cache_dir() / f"tiny-sd-{prediction_type}"


def default_sdxl_folder() -> Path:
    """Where `build_tiny_sdxl_pipeline` writes the tiny SDXL pipeline unless told otherwise."""
    return cache_dir() / "tiny-sdxl"


def build_tiny_pipeline(folder: Path | None = None, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Write a tiny random-weight SD pipeline (with tokenizer files) to `folder` once, and return it."""
    folder = Path(folder) if folder else default_folder(prediction_type)
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    tokenizer = _tiny_tokenizer(partial)
    text_encoder = _tiny_text_encoder(tokenizer, hidden=32)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=_tiny_scheduler(prediction_type), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, partial, folder, "Stable Diffusion")


def build_tiny_sdxl_pipeline(folder: Path | None = None, seed: int = 0) -> Path:
    """Write a tiny random-weight SDXL pipeline to `folder` once, and return it.

    SDXL's shape in miniature: two CLIP text encoders of different widths (the second with a
    projection, whose pooled output conditions the UNet), a UNet with `addition_embed_type="text_time"`
    and no cross-attention at its highest resolution, 64 px native.
    """
    folder = Path(folder) if folder else default_sdxl_folder()
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    tokenizer = _tiny_tokenizer(partial)
    tokenizer_2 = _tiny_tokenizer(partial, pad_token="!")  # OpenCLIP's padding, as SDXL's second tokenizer
    text_encoder = _tiny_text_encoder(tokenizer, hidden=32)
    text_encoder_2 = _tiny_text_encoder(tokenizer_2, hidden=48, with_projection=True)
    time_embed = 8
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 32, 64),
        norm_num_groups=32, attention_head_dim=4, use_linear_projection=True,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), cross_attention_dim=32 + 48,
        addition_embed_type="text_time", addition_time_embed_dim=time_embed,
        projection_class_embeddings_input_dim=6 * time_embed + 48,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_tiny_vae(), text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=_tiny_scheduler("epsilon"), add_watermarker=False,
    )
    return _save(pipe, partial, folder, "SDXL")


def _tiny_tokenizer(partial: Path, pad_token: str | None = None):
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_tiny_clip_vocab(partial / "vocab-src")
    extra = {"pad_token": pad_token} if pad_token else {}
    return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77, **extra)


def _tiny_text_encoder(tokenizer, hidden: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=hidden,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=64,
    )


def _tiny_scheduler(prediction_type: str):
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False,
                         steps_offset=1)


def _save(pipe, partial: Path, folder: Path, kind: str) -> Path:
    pipe.save_pretrained(partial, safe_serialization=True)
    shutil.rmtree(partial / "vocab-src")
    (partial / "README.md").write_text(
        f"Tiny random-weight {kind} pipeline made by shapeinv for tests and offline demos.\n"
        "Its images are noise-like; it exercises every code path, not image quality.\n"
    )
    return _publish(partial, folder, "model_index.json")


def write_tiny_clip_vocab(folder: Path, words: Sequence[str] = TINY_WORDS) -> tuple[Path, Path]:
    """Write a small byte-level BPE vocabulary in CLIP's format: every byte, plus `words` whole."""
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = _bytes_to_unicode()
    tokens = list(byte_chars) + [c + "</w>" for c in byte_chars]
    merges: list[str] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        current = pieces[0]
        for piece in pieces[1:]:
            merge = f"{current} {piece}"
            current = current + piece
            if merge not in merges:
                merges.append(merge)
                if current not in tokens:
                    tokens.append(current)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(tokens))}
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(vocab))
    merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return vocab_file, merges_file


def _bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for _, code in sorted(zip(printable, codes))]


def build_tiny_clip(folder: Path | None = None, seed: int = 0) -> Path:
    """Write a tiny random-weight CLIPModel with a real tokenizer and image processor to `folder` once."""
    folder = Path(folder) if folder else cache_dir() / "tiny-clip"
    if (folder / "config.json").is_file():
        return folder
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    vocab_file, merges_file = write_tiny_clip_vocab(partial / "vocab-src")
    tokenizer = CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 77,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
                     "pad_token_id": tokenizer.pad_token_id},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                       "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    ))
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    image_processor.save_pretrained(partial)
    shutil.rmtree(partial / "vocab-src")
    (partial / "README.md").write_text("Tiny random-weight CLIP made by shapeinv for tests and offline demos.\n"
                                       "Its scores exercise every code path; they mean nothing.\n")
    return _publish(partial, folder, "config.json")


def _publish(partial: Path, folder: Path, marker: str) -> Path:
    """Move a finished folder into place; if another process got there first, keep its copy."""
    try:
        os.replace(partial, folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / marker).is_file():
            raise
    return folder
