"""Loading a Stable Diffusion 1.x/2.x or SDXL pipeline: hub id, local folder, single checkpoint, `tiny`,
`tiny-sdxl` or `toy`. The family comes from the model's own files (`families.py`), never its name.

`tiny` (see `tiny.py`) is written to a cache folder and loaded back through the same
local-folder path a real model uses, so the loading code under test is the real one. `toy` is the
small trained model whose weights ship with the package (`toy_model/` here), loaded the same way.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DEFAULT_MODEL
from ..errors import ModelLoadError, first_line
from .families import (
    SD,
    SDXL,
    SUPPORTED,
    family_of_checkpoint,
    family_of_folder,
    family_of_pipe,
    pipeline_class,
)

TINY = "tiny"
TINY_SDXL = "tiny-sdxl"  # the same, SDXL-shaped: two text encoders, size conditioning
TOY = "toy"
TOY_MODEL_DIR = Path(__file__).resolve().parent / "toy_model"  # the toy world's trained weights (package data)
# What an offline user is told to run: the trained toy world first (real chairs), the random tiny one for tests.
OFFLINE_MODELS = ("--model toy (offline: a small model trained on rendered chairs that ships with shapeinv, 64 px, "
                  "draws real chairs) or --model tiny (random weights, for tests: noise)")
log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A pipeline plus what a concept must record about where it came from."""

    pipe: object  # diffusers.StableDiffusionPipeline or StableDiffusionXLPipeline
    source: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    gradient_checkpointing: bool = False  # recompute the UNet's activations while learning (less memory)


def choose_device(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """`auto`: CUDA with bf16 (fp16 where bf16 is unsupported), else CPU with fp32."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda was asked for but no CUDA GPU is visible. Use --device cpu or auto.")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ModelLoadError(f"Unknown device {device!r}. Use auto, cpu, cuda or cuda:N.")
    chosen = torch.device(device)
    names = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16,
             "float16": torch.float16, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        if chosen.type == "cuda":
            return chosen, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return chosen, torch.float32
    if dtype not in names:
        raise ModelLoadError(f"Unknown dtype {dtype!r}. Use auto, fp32, fp16 or bf16.")
    return chosen, names[dtype]


# While diffusers and transformers load a model, they make its modules with empty weights by patching
# torch.nn for the whole process, not one thread. A module made on another thread meanwhile (the embedding
# table grown for `*s` in a preview, a LoRA adapter) gets weights on the meta device and fails with
# "variable.set_data(tensor) ... incompatible tensor type". Loading and those edits take this lock.
BUILD_LOCK = threading.RLock()


def load_model(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
               revision: str | None = None, single_file_config: str | None = None,
               compile_unet: bool = False, channels_last: bool = False,
               gradient_checkpointing: str = "auto") -> LoadedModel:
    """Load a pipeline from `tiny`, a local diffusers folder, a `.safetensors` file or a hub id.

    `single_file_config` (a diffusers folder or hub id) gives a single-file checkpoint its
    component configs; without it diffusers picks the matching base model's from the hub cache.
    `compile_unet` and `channels_last`: see `speed_up_unet`. `gradient_checkpointing` ("auto", "on",
    "off"): auto is on for SDXL on a GPU, where 1024 px inversion must fit a 24 GB card.
    """
    torch_device, torch_dtype = choose_device(device, dtype)
    with BUILD_LOCK:
        pipe, source_revision = _load_pipe(str(model), torch_dtype, revision, single_file_config)
    source = str(model)
    _check_has_text_encoders(pipe, source)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    speed_up_unet(pipe.unet, compile_unet=compile_unet, channels_last=channels_last)
    checkpointing = gradient_checkpointing == "on" or (
        gradient_checkpointing == "auto" and family_of_pipe(pipe) == SDXL and torch_device.type == "cuda")
    return LoadedModel(pipe, source, source_revision, torch_device, torch_dtype, checkpointing)


def _load_pipe(source: str, torch_dtype: torch.dtype, revision: str | None,
               single_file_config: str | None) -> tuple:
    """(pipeline, revision or folder fingerprint) for `load_model`'s kinds of source."""
    if source == TINY:
        from .tiny import build_tiny_pipeline

        folder = build_tiny_pipeline()
        pipe = _from_folder(folder, torch_dtype)
        source_revision = _folder_fingerprint(folder)
    elif source == TINY_SDXL:
        from .tiny import build_tiny_sdxl_pipeline

        folder = build_tiny_sdxl_pipeline()
        pipe = _from_folder(folder, torch_dtype)
        source_revision = _folder_fingerprint(folder)
    elif source == TOY:
        folder = toy_model_folder()
        pipe = _from_folder(folder, torch_dtype)
        source_revision = _folder_fingerprint(folder)
    elif Path(source).is_dir():
        pipe = _from_folder(Path(source), torch_dtype)
        source_revision = _folder_fingerprint(Path(source))
    elif source.endswith((".safetensors", ".ckpt", ".pt", ".bin")) or Path(source).exists():
        pipe = _from_single_file(Path(source), torch_dtype, single_file_config)
        source_revision = None
    elif _looks_like_a_path(source):
        raise ModelLoadError(f"Model folder not found: {source}. Check the path, or pass a hub id such as "
                             f"{DEFAULT_MODEL}, or {OFFLINE_MODELS}.")
    else:
        pipe, source_revision = _from_hub(source, torch_dtype, revision)
    return pipe, source_revision


@contextmanager
def checkpointed_unet(unet, enabled: bool) -> Iterator[None]:
    """While learning: the UNet's blocks recompute their activations in the backward pass, when `enabled`.

    diffusers' non-reentrant checkpointing; the captured cross-attention maps keep their gradient
    (the learned vectors come out bit-identical, tests/test_sdxl.py). Off again afterwards: sampling has no
    backward pass.
    """
    if not enabled:
        yield
        return
    unet.enable_gradient_checkpointing()
    try:
        yield
    finally:
        unet.disable_gradient_checkpointing()


def toy_model_folder() -> Path:
    """The toy world's committed pipeline folder; a clear error when the package was installed without it."""
    if not (TOY_MODEL_DIR / "model_index.json").is_file():
        raise ModelLoadError(f"The toy model's weights are missing from {TOY_MODEL_DIR.name}/ in the shapeinv package. "
                             "Reinstall from a full clone (the weights are committed), or train one with "
                             "`python -m shapeinv_core.toy train -o DIR` and pass --model DIR/pipeline.")
    return TOY_MODEL_DIR


def native_resolution(pipe) -> int:
    """The image side a pipeline was trained at: UNet sample size x the VAE's downsampling (512 for SD 1.5)."""
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    return int(pipe.unet.config.sample_size) * vae_scale


def native_resolution_of(model: str, single_file_config: str | None = None) -> int | None:
    """`native_resolution` read from the model's config files without loading weights; None if unknown."""
    layout = model_layout(model, single_file_config)
    return layout.native_resolution if layout else None


@dataclass(frozen=True)
class ModelLayout:
    """The shapes a model's config files state, so settings can be checked before any weight is loaded."""

    sample_size: int  # the UNet's latent side at the native resolution
    vae_scale: int  # pixels per latent cell
    down_cross: tuple[bool, ...]  # whether each down block has cross-attention
    up_cross: tuple[bool, ...]
    mid_cross: bool
    cross_attention_dim: int
    channels: tuple[int, ...]  # the UNet's block_out_channels

    @property
    def native_resolution(self) -> int:
        return self.sample_size * self.vae_scale

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be a multiple of this: the VAE's factor times the UNet's downsamplers."""
        return self.vae_scale * 2 ** (len(self.down_cross) - 1)

    def grid_sides(self, resolution: int, which: str = "all") -> list[int]:
        """The grid sides of the cross-attention layers in `which` (down/mid/up/all) at `resolution` pixels.

        diffusers gives every down block but the last a downsampler and every up block but the last
        an upsampler; the same rule as `attention.layer_grid_sides`, read from the configs.
        """
        side = resolution // self.vae_scale
        down = [side // 2 ** index for index, cross in enumerate(self.down_cross) if cross]
        bottom = side // 2 ** (len(self.down_cross) - 1)
        up = [bottom * 2 ** index for index, cross in enumerate(self.up_cross) if cross]
        parts = {"down": down, "mid": [bottom] if self.mid_cross else [], "up": up}
        chosen = parts.values() if which == "all" else [parts.get(which, [])]
        return sorted({side for part in chosen for side in part})

    @property
    def max_lora_rank(self) -> int:
        """The rank of a cross-attention key/value projection: min(text width, the narrowest such layer)."""
        widths = [width for width, cross in zip(self.channels, self.down_cross) if cross]
        widths += [width for width, cross in zip(reversed(self.channels), self.up_cross) if cross]
        return min([self.cross_attention_dim, *(widths or self.channels)])


def model_layout(model: str, single_file_config: str | None = None) -> ModelLayout | None:
    """`ModelLayout` from the UNet's and VAE's config.json (local, or a hub id's cached or small downloaded
    files); None when they cannot be read here (a single file without its base model's configs)."""
    import json

    unet, vae = _config_file(model, "unet", single_file_config), _config_file(model, "vae", single_file_config)
    if unet is None or vae is None:
        return None
    try:
        unet, vae = json.loads(unet.read_text()), json.loads(vae.read_text())
        down, up = unet["down_block_types"], unet["up_block_types"]
        return ModelLayout(
            sample_size=int(unet["sample_size"]), vae_scale=2 ** (len(vae["block_out_channels"]) - 1),
            down_cross=tuple("CrossAttn" in kind for kind in down), up_cross=tuple("CrossAttn" in kind for kind in up),
            mid_cross="CrossAttn" in (unet.get("mid_block_type", "UNetMidBlock2DCrossAttn") or ""),
            cross_attention_dim=int(unet["cross_attention_dim"]), channels=tuple(unet["block_out_channels"]))
    except (OSError, KeyError, ValueError, TypeError):
        return None


def _config_file(model: str, part: str, single_file_config: str | None) -> Path | None:
    """`part/config.json` of a model, without loading it; a hub id's from the cache, else fetched alone."""
    if model == TOY:
        folder = TOY_MODEL_DIR
    elif model in (TINY, TINY_SDXL):  # read once its first load has written it (building it here would race it)
        from .tiny import default_folder, default_sdxl_folder

        folder = default_folder() if model == TINY else default_sdxl_folder()
    elif Path(model).is_dir():
        folder = Path(model)
    elif model.endswith((".safetensors", ".ckpt")) or Path(model).exists():
        return _config_file(single_file_config, part, None) if single_file_config else None
    elif _looks_like_a_path(model):
        return None
    else:
        return _hub_file(model, f"{part}/config.json")
    path = folder / part / "config.json"
    return path if path.is_file() else None


def _hub_file(model_id: str, name: str) -> Path | None:
    """A hub model's small file: from the cache, else downloaded alone (unless offline); None if neither."""
    from huggingface_hub import hf_hub_download

    for local in (True, False):
        if not local and os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
            return None
        try:
            return Path(hf_hub_download(model_id, name, local_files_only=local))
        except Exception:  # not cached, no network, no such repo: the model's own load says which
            continue
    return None


def check_for_model(config, layout: ModelLayout | None) -> None:
    """Refuse settings that the model's configs rule out (an `InversionConfig`): its attention grids at the
    training resolution, the resolution's multiple, the LoRA rank; nothing when the layout is unknown."""
    from ..errors import InputError

    if layout is None:
        return
    if config.resolution % layout.pixel_multiple:
        raise InputError(f"Invalid setting: resolution {config.resolution} does not fit this model, whose image "
                         f"sides must be a multiple of {layout.pixel_multiple}; its own size is "
                         f"{layout.native_resolution}.")
    present = layout.grid_sides(config.resolution, config.attention_layers)
    missing = [side for side in config.map_sides() if side not in present]
    if missing:
        raise InputError(
            f"Invalid setting: attention_res {config.attention_res}: this model has no cross-attention layer in "
            f"'{config.attention_layers}' with a {'/'.join(map(str, missing))} grid at {config.resolution} px; its "
            f"layers have {', '.join(map(str, present))}. Pick one of those, or 'all'.")
    if config.tune == "lora" and config.lora_rank > layout.max_lora_rank:
        raise InputError(f"Invalid setting: lora_rank {config.lora_rank} is more than this model's cross-attention "
                         f"layers hold (at most {layout.max_lora_rank}); 4 is the default.")


def speed_up_unet(unet, compile_unet: bool = False, channels_last: bool = False) -> None:
    """Opt-in GPU speed-ups, off by default until measured on a GPU (bench/gpu_check.sh).

    `channels_last` stores the UNet's conv weights NHWC, the layout tensor cores prefer.
    `compile_unet` compiles the UNet in place with torch.compile (its first passes are slow):
    in place, so its layers keep their names and the map capture still finds them. The capture
    processors trace without graph breaks, and one compiled graph serves every later run.
    """
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    if compile_unet:
        unet.compile()


def _looks_like_a_path(source: str) -> bool:
    """Hub ids are 'owner/name'; anything else with a slash, or starting with . or ~, is a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _from_folder(folder: Path, dtype: torch.dtype):
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json). Point --model at the folder "
            "that holds model_index.json, unet/, vae/, text_encoder/ and tokenizer/, at a single .safetensors "
            f"checkpoint, or {OFFLINE_MODELS}."
        )
    family = family_of_folder(folder)
    try:
        return pipeline_class(family).from_pretrained(folder, dtype=dtype, local_files_only=True, use_safetensors=True,
                                                      **_no_safety_checker(family))
    except Exception as error:  # diffusers raises many types; the user needs one message
        raise ModelLoadError(
            f"Could not load the pipeline in {folder}: {first_line(error)}. The folder must be a {SUPPORTED} "
            "pipeline saved with safetensors weights (save_pretrained(..., safe_serialization=True))."
        ) from error


def _no_safety_checker(family: str) -> dict:
    """SD 1.x pipelines take a safety checker (this tool draws chairs, and users run their own); SDXL has none."""
    return {} if family == SDXL else {"safety_checker": None, "requires_safety_checker": False}


def _from_single_file(path: Path, dtype: torch.dtype, config: str | None):
    if not path.is_file():
        raise ModelLoadError(f"Checkpoint file not found: {path}. Check the path, or pass a hub id or a folder.")
    if path.suffix != ".safetensors":
        raise ModelLoadError(
            f"{path.name} is not a .safetensors file. Only safetensors checkpoints are loaded (no pickle); "
            "convert it, or use the model's diffusers folder or hub id."
        )
    family = family_of_checkpoint(path)
    try:
        local = config is not None and Path(config).is_dir()
        return pipeline_class(family).from_single_file(str(path), config=config, local_files_only=local or None,
                                                       dtype=dtype, **_no_safety_checker(family))
    except Exception as error:
        raise ModelLoadError(
            f"Could not load the checkpoint {path}: {first_line(error)}. A single-file checkpoint needs its "
            "pipeline configuration from the hub (or the hub cache) the first time; offline, pass the base "
            f"model's diffusers folder with --model-config, or use a local diffusers folder, or {OFFLINE_MODELS}."
        ) from error


def _from_hub(model_id: str, dtype: torch.dtype, revision: str | None):
    index = _hub_file(model_id, "model_index.json")
    family = family_of_folder(index.parent, model_id) if index is not None else SD  # else the load says why
    try:
        pipe = pipeline_class(family).from_pretrained(model_id, dtype=dtype, revision=revision,
                                                      use_safetensors=True, **_no_safety_checker(family))
    except Exception as error:
        cause = first_line(error)
        raise ModelLoadError(
            f"Could not load {model_id!r} from the Hugging Face hub or its cache "
            f"({cause if len(cause) <= 160 else cause[:157] + '...'}). Fixes: {OFFLINE_MODELS}; --model with a local "
            "diffusers folder or .safetensors file; or fill the cache once with "
            f"network: `hf download {model_id}`."
        ) from error
    commit = getattr(pipe, "_internal_dict", {}).get("_commit_hash") if hasattr(pipe, "_internal_dict") else None
    return pipe, commit or revision


def _check_has_text_encoders(pipe, source: str) -> None:
    """A UNet and every text encoder and tokenizer the family needs, or a message naming what is missing."""
    needed = ["unet", "text_encoder", "tokenizer"]
    if family_of_pipe(pipe) == SDXL:
        needed += ["text_encoder_2", "tokenizer_2"]
    missing = [name for name in needed if getattr(pipe, name, None) is None]
    if missing:
        raise ModelLoadError(f"{source} has no {', '.join(missing)}; shapeinv handles {SUPPORTED} pipelines with "
                             "their UNet, text encoders and tokenizers.")


def _folder_fingerprint(folder: Path) -> str | None:
    """A short content hash of the model index and weight sizes, for provenance in concept.json."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".safetensors", ".txt"):
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(str(path.stat().st_size).encode())
            if path.suffix != ".safetensors":
                digest.update(path.read_bytes())
    return "local:" + digest.hexdigest()[:16]


def quiet_library_logs() -> None:
    """Silence warnings and loading bars from diffusers/transformers that say nothing to a user of this tool.

    Through the libraries' own switches: their loggers reset a level set before they are imported.
    """
    import diffusers.utils.logging
    import transformers.utils.logging

    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
    for library in (diffusers.utils.logging, transformers.utils.logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
