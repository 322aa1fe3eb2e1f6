"""Low-rank updates of the UNet's cross-attention keys and values, the weight offsets beside `*s`.

Custom Diffusion's choice of layers (attn2.to_k / attn2.to_v: they read the text, so the update
is tied to the prompt), built on peft as diffusers' own LoRA support is. A LoRA is kept as
peft's state dict (`...attn2.to_k.lora_A.weight`, `lora_B`); on disk it is diffusers' file,
`pytorch_lora_weights.safetensors`, which `pipe.load_lora_weights(folder)` reads, and
`exports.py` also writes kohya's key naming for AUTOMATIC1111 and ComfyUI. The scale is 1
(alpha = rank), as kohya files state it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..models.loading import BUILD_LOCK

ADAPTER = "shapeinv"  # the LoRA being trained
EDIT_ADAPTER = "shapeinv-edit"  # a concept's LoRA loaded for generation
TARGET_MODULES = r".*attn2\.(to_k|to_v)"
LORA_FILE = "pytorch_lora_weights.safetensors"  # diffusers' name: load_lora_weights(folder) finds it


def add_lora(unet, rank: int, seed: int) -> list[torch.nn.Parameter]:
    """Give the cross-attention key/value projections a rank-`rank` adapter; return its parameters.

    B starts at zero (peft's default), so the UNet is unchanged until the first step; A starts
    from `seed`, so a resumed or repeated run starts from the same point.
    """
    from peft import LoraConfig

    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES)
    with torch.random.fork_rng(devices=[]), BUILD_LOCK:  # new modules: never while another thread loads a model
        torch.manual_seed(seed)
        unet.add_adapter(config, adapter_name=ADAPTER)
    params = [param for name, param in unet.named_parameters() if f".{ADAPTER}." in name]
    for param in params:
        param.data = param.data.float()  # trained in fp32 even when the UNet runs in half precision
        param.requires_grad_(True)
    return params


def lora_parameter_names(unet) -> list[str]:
    return [name for name, _ in unet.named_parameters() if f".{ADAPTER}." in name]


def lora_state(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights in peft's naming, fp32 on the CPU."""
    from peft.utils import get_peft_model_state_dict

    state = get_peft_model_state_dict(unet, adapter_name=ADAPTER)
    return {key: value.detach().float().cpu().contiguous() for key, value in state.items()}


def remove_lora(unet) -> None:
    """Take the adapter out again: the UNet's modules are the original ones afterwards."""
    if getattr(unet, "peft_config", None):
        unet.unload_lora()


def save_lora(folder: Path, state: dict[str, torch.Tensor]) -> Path:
    """diffusers' LoRA file (`unet.` prefix, lora.down/lora.up naming), as its training scripts write it."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=convert_state_dict_to_diffusers(state),
                                              weight_name=LORA_FILE, safe_serialization=True)
    return folder / LORA_FILE


def load_lora(folder: Path) -> dict[str, torch.Tensor] | None:
    """A run's LoRA back in peft's naming, or None when the run has none."""
    from diffusers.utils import convert_unet_state_dict_to_peft

    path = folder / LORA_FILE
    if not path.is_file():
        return None
    state = load_file(str(path))
    unet_state = {key.removeprefix("unet."): value for key, value in state.items() if key.startswith("unet.")}
    return convert_unet_state_dict_to_peft(unet_state)


def kohya_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """kohya's naming (`lora_unet_..._attn2_to_k.lora_down.weight` + `.alpha`), read by AUTOMATIC1111 and ComfyUI."""
    from diffusers.utils import convert_state_dict_to_kohya

    converted = convert_state_dict_to_kohya({f"unet.{key}": value for key, value in state.items()})
    return {key: value.float().contiguous() for key, value in converted.items()}  # alpha too, as kohya writes it


@contextmanager
def lora_for_generation(pipe, state: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """While generating: the concept's LoRA (or none) active, any LoRA being trained set aside.

    The app's worker draws edits between the steps of a running job, so a LoRA phase may be
    under way on the same UNet: its adapter is switched off (or the edit's adapter is the only
    active one) for the edit and switched back on afterwards, trainable as before. Without a
    LoRA phase, the UNet is left without adapter layers, as it came.
    """
    unet = pipe.unet
    training = ADAPTER in (getattr(unet, "peft_config", None) or {})
    if not state and not training:
        yield
        return
    try:
        if state:  # diffusers' own loader (the UNet's part of load_lora_weights: this LoRA has no text encoder)
            with _second_adapter_expected(), BUILD_LOCK:  # new adapter modules: see BUILD_LOCK
                unet.load_lora_adapter({f"unet.{key}": value for key, value in state.items()}, prefix="unet",
                                       adapter_name=EDIT_ADAPTER)
            unet.set_adapters([EDIT_ADAPTER])
        else:
            unet.disable_adapters()
        yield
    finally:
        if training:
            if state:
                with _second_adapter_expected():
                    unet.delete_adapters(EDIT_ADAPTER)
            unet.enable_adapters()
            unet.set_adapter(ADAPTER)
            for name, param in unet.named_parameters():
                if f".{ADAPTER}." in name:
                    param.requires_grad_(True)
        else:
            unet.unload_lora()


@contextmanager
def _second_adapter_expected() -> Iterator[None]:
    """peft warns when a second adapter joins (or the active one leaves); here that is the plan."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(peft_config|was active which is now deleted).*")
        yield
