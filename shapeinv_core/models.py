"""Loading a Stable Diffusion 1.x/2.x pipeline: hub id, local folder, single checkpoint, or `tiny`.

`tiny` is a random-weight pipeline with the real architecture classes, small enough for CPU
tests and offline demos. It is written to a cache folder and loaded back through the same
local-folder path a real model uses, so the loading code under test is the real one.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import DEFAULT_MODEL
from .errors import ModelLoadError

TINY = "tiny"
log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A pipeline plus what a concept must record about where it came from."""

    pipe: object  # diffusers.StableDiffusionPipeline
    source: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype


def cache_dir() -> Path:
    """Where `tiny` and other generated files live; `SHAPEINV_CACHE` overrides it."""
    return Path(os.environ.get("SHAPEINV_CACHE", Path.home() / ".cache" / "shapeinv"))


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


def load_model(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
               revision: str | None = None, single_file_config: str | None = None) -> LoadedModel:
    """Load a pipeline from `tiny`, a local diffusers folder, a `.safetensors` file or a hub id.

    `single_file_config` (a diffusers folder or hub id) gives a single-file checkpoint its
    component configs; without it diffusers picks the matching base model's from the hub cache.
    """
    torch_device, torch_dtype = choose_device(device, dtype)
    source = str(model)
    if source == TINY:
        folder = build_tiny_pipeline()
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
                             f"{DEFAULT_MODEL}, or --model tiny for an offline test model.")
    else:
        pipe, source_revision = _from_hub(source, torch_dtype, revision)
    _check_is_stable_diffusion(pipe, source)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    return LoadedModel(pipe, source, source_revision, torch_device, torch_dtype)


def _looks_like_a_path(source: str) -> bool:
    """Hub ids are 'owner/name'; anything else with a slash, or starting with . or ~, is a path."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def _pipeline_class():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline


def _from_folder(folder: Path, dtype: torch.dtype):
    if not (folder / "model_index.json").is_file():
        raise ModelLoadError(
            f"{folder} is not a diffusers pipeline folder (no model_index.json). Point --model at the folder "
            "that holds model_index.json, unet/, vae/, text_encoder/ and tokenizer/, at a single .safetensors "
            "checkpoint, or use --model tiny for an offline test model."
        )
    try:
        return _pipeline_class().from_pretrained(
            folder, dtype=dtype, safety_checker=None, requires_safety_checker=False,
            local_files_only=True, use_safetensors=True,
        )
    except Exception as error:  # diffusers raises many types; the user needs one message
        raise ModelLoadError(
            f"Could not load the pipeline in {folder}: {_first_line(error)}. The folder must be a Stable "
            "Diffusion 1.x/2.x pipeline saved with safetensors weights (save_pretrained(..., safe_serialization=True))."
        ) from error


def _from_single_file(path: Path, dtype: torch.dtype, config: str | None):
    if not path.is_file():
        raise ModelLoadError(f"Checkpoint file not found: {path}. Check the path, or pass a hub id or a folder.")
    if path.suffix != ".safetensors":
        raise ModelLoadError(
            f"{path.name} is not a .safetensors file. Only safetensors checkpoints are loaded (no pickle); "
            "convert it, or use the model's diffusers folder or hub id."
        )
    try:
        local = config is not None and Path(config).is_dir()
        return _pipeline_class().from_single_file(
            str(path), config=config, local_files_only=local or None, dtype=dtype, safety_checker=None,
            requires_safety_checker=False,
        )
    except Exception as error:
        raise ModelLoadError(
            f"Could not load the checkpoint {path}: {_first_line(error)}. A single-file checkpoint needs its "
            "pipeline configuration from the hub (or the hub cache) the first time; offline, pass the base "
            "model's diffusers folder with --model-config, or use a local diffusers folder or --model tiny."
        ) from error


def _from_hub(model_id: str, dtype: torch.dtype, revision: str | None):
    try:
        pipe = _pipeline_class().from_pretrained(
            model_id, dtype=dtype, revision=revision, safety_checker=None,
            requires_safety_checker=False, use_safetensors=True,
        )
    except Exception as error:
        raise ModelLoadError(
            f"Could not load {model_id!r} from the Hugging Face hub or its cache: {_first_line(error)}. "
            "Fixes: check the id; download it once with network (`hf download "
            f"{model_id}`) so it is in the cache (HF_HOME); or pass a local diffusers folder or a .safetensors "
            "file with --model; or use --model tiny for an offline test model."
        ) from error
    commit = getattr(pipe, "_internal_dict", {}).get("_commit_hash") if hasattr(pipe, "_internal_dict") else None
    return pipe, commit or revision


def _check_is_stable_diffusion(pipe, source: str) -> None:
    unet = getattr(pipe, "unet", None)
    text_encoder = getattr(pipe, "text_encoder", None)
    if unet is None or text_encoder is None or getattr(pipe, "tokenizer", None) is None:
        raise ModelLoadError(
            f"{source} is not a Stable Diffusion 1.x/2.x pipeline (it needs a UNet, a CLIP text encoder and "
            "a tokenizer). SDXL and other families are not supported."
        )


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


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --- the tiny random-weight pipeline ---------------------------------------------------------

TINY_WORDS = (
    "a photo of chair in the shape of red blue green black white wooden leopard print sofa armchair "
    "stool table lamp golden glass marble made metal plastic velvet leather stone ice cake cat dog "
    "on with and an picture render rendering painting drawing sketch style old modern small large"
).split()


def build_tiny_pipeline(folder: Path | None = None, prediction_type: str = "epsilon", seed: int = 0) -> Path:
    """Write a tiny random-weight SD pipeline (with tokenizer files) to `folder` once, and return it."""
    folder = Path(folder) if folder else cache_dir() / f"tiny-sd-{prediction_type}"
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tokenizer_dir = folder.with_name(folder.name + ".tokenizer-src")
    vocab_file, merges_file = write_tiny_clip_vocab(tokenizer_dir)
    tokenizer = CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=32, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=8, sample_size=64,
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False,
                              steps_offset=1)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    partial = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(partial, safe_serialization=True)
    (partial / "README.md").write_text(
        "Tiny random-weight Stable Diffusion pipeline made by shapeinv for tests and offline demos.\n"
        "Its images are noise-like; it exercises every code path, not image quality.\n"
    )
    os.replace(partial, folder)
    return folder


def write_tiny_clip_vocab(folder: Path) -> tuple[Path, Path]:
    """Write a small byte-level BPE vocabulary in CLIP's format: every byte, plus whole common words."""
    folder.mkdir(parents=True, exist_ok=True)
    byte_chars = _bytes_to_unicode()
    tokens = list(byte_chars) + [c + "</w>" for c in byte_chars]
    merges: list[str] = []
    for word in TINY_WORDS:
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


def quiet_library_logs() -> None:
    """Silence warnings from diffusers/transformers that say nothing to a user of this tool."""
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
