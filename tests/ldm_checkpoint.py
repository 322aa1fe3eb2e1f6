"""Test utility: save a diffusers SD pipeline as one original-layout (LDM) `.safetensors` checkpoint.

Single-file checkpoints (the kind people download from model sites) use the original Stable
Diffusion key names. No such file can be downloaded here, so the tests make one from the tiny
pipeline by renaming its weights back to that layout; diffusers' own converter then has to turn
it into a working pipeline again. The renaming follows the block layout of the UNet and VAE
configs, so it works for any number of levels and layers per block.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file


def unet_renames(config) -> list[tuple[str, str]]:
    """(diffusers prefix, LDM prefix) pairs for a UNet2DConditionModel config."""
    layers = config.layers_per_block
    levels = len(config.block_out_channels)
    pairs = [
        ("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
        ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
        ("mid_block.attentions.0.", "middle_block.1."),
        ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.resnets.1.", "middle_block.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),  # SDXL
    ]
    for i in range(levels):
        for j in range(layers):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(layers + 1) * i + j + 1}.1."))
        if i < levels - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(layers + 1) * (i + 1)}.0.op."))
        has_attention = "CrossAttn" in config.up_block_types[i]
        for j in range(layers + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(layers + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(layers + 1) * i + j}.1."))
        if i < levels - 1:
            pairs.append((f"up_blocks.{i}.upsamplers.0.",
                          f"output_blocks.{(layers + 1) * i + layers}.{2 if has_attention else 1}."))
    return pairs


RESNET_RENAMES = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
                  ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
                  ("conv_shortcut.", "skip_connection.")]


def vae_renames(config) -> list[tuple[str, str]]:
    layers = config.layers_per_block
    levels = len(config.block_out_channels)
    pairs = [("conv_norm_out.", "norm_out."), ("mid_block.attentions.0.", "mid.attn_1."),
             ("mid_block.resnets.0.", "mid.block_1."), ("mid_block.resnets.1.", "mid.block_2.")]
    for i in range(levels):
        for j in range(layers):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"down.{i}.block.{j}."))
        if i < levels - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.", f"down.{i}.downsample."))
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"up.{levels - 1 - i}.upsample."))
        for j in range(layers + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"up.{levels - 1 - i}.block.{j}."))
    return pairs


VAE_ATTENTION_RENAMES = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."),
                         ("to_out.0.", "proj_out.")]


def _rename(key: str, pairs: list[tuple[str, str]]) -> str:
    for diffusers, ldm in pairs:
        if key.startswith(diffusers):
            return ldm + key[len(diffusers):]
    return key


def _rename_inner(key: str, pairs: list[tuple[str, str]]) -> str:
    for diffusers, ldm in pairs:
        key = key.replace("." + diffusers, "." + ldm) if "." + diffusers in key else key
    return key


def write_ldm_checkpoint(pipe, path: Path) -> Path:
    state = _unet_and_vae(pipe)
    for key, value in pipe.text_encoder.state_dict().items():
        state["cond_stage_model.transformer.text_model." + key] = value
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


def write_ldm_sdxl_checkpoint(pipe, path: Path) -> Path:
    """An SDXL pipeline in the original layout: `conditioner.embedders.0` (CLIP ViT-L, Hugging Face names) and
    `conditioner.embedders.1` (OpenCLIP names: fused q/k/v, `resblocks`, a transposed `text_projection`)."""
    state = _unet_and_vae(pipe)
    for key, value in pipe.text_encoder.state_dict().items():
        state["conditioner.embedders.0.transformer.text_model." + key] = value  # CLIPTextModel's keys are flat
    prefix = "conditioner.embedders.1.model."
    encoder = pipe.text_encoder_2.state_dict()
    state[prefix + "token_embedding.weight"] = encoder["text_model.embeddings.token_embedding.weight"]
    state[prefix + "positional_embedding"] = encoder["text_model.embeddings.position_embedding.weight"]
    state[prefix + "ln_final.weight"] = encoder["text_model.final_layer_norm.weight"]
    state[prefix + "ln_final.bias"] = encoder["text_model.final_layer_norm.bias"]
    state[prefix + "text_projection"] = encoder["text_projection.weight"].T
    for layer in range(pipe.text_encoder_2.config.num_hidden_layers):
        ours, theirs = f"text_model.encoder.layers.{layer}.", f"{prefix}transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            state[f"{theirs}attn.in_proj_{kind}"] = torch.cat(
                [encoder[f"{ours}self_attn.{part}_proj.{kind}"] for part in ("q", "k", "v")])
            for mine, open_clip in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"),
                                    ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
                state[f"{theirs}{open_clip}.{kind}"] = encoder[f"{ours}{mine}.{kind}"]
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    return path


def _unet_and_vae(pipe) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for key, value in pipe.unet.state_dict().items():
        renamed = _rename(key, unet_renames(pipe.unet.config))
        if ".resnets." in key:
            renamed = _rename_inner(renamed, RESNET_RENAMES)
        state["model.diffusion_model." + renamed] = value
    for key, value in pipe.vae.state_dict().items():
        part, rest = key.split(".", 1)
        if part in ("encoder", "decoder"):
            rest = _rename(rest, vae_renames(pipe.vae.config))
            rest = rest.replace(".conv_shortcut.", ".nin_shortcut.")  # VAE resnets keep norm1/conv1/...
            if rest.startswith("mid.attn_1."):
                rest = "mid.attn_1." + _rename(rest[len("mid.attn_1."):], VAE_ATTENTION_RENAMES)
                if value.ndim == 2:
                    value = value[:, :, None, None]
            key = f"{part}.{rest}"
        state["first_stage_model." + key] = value
    return state
