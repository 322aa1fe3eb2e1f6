"""Training the toy world's model: render chairs, train the VAE, then the UNet and text encoder together.

The model is made of Stable Diffusion's own classes (AutoencoderKL, UNet2DConditionModel with
cross-attention at several resolutions, CLIPTextModel with a real CLIP BPE tokenizer), so every
code path of the project runs on it unchanged. It is trained from scratch on a CPU within a
wall-clock budget, and saved as an ordinary diffusers pipeline folder (safetensors) along the way,
so stopping early still leaves a usable model.

The loop is deliberately plain (nanoGPT-style): sample a batch, compute the loss, step, log.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..chairs.toy_world import (
    COLOURS,
    FAMILY_PHRASES,
    IMAGE_SIZE,
    PATTERN_WORDS,
    PROPORTION_WORDS,
    caption,
    render_toy_chair,
)
from ..models.tiny import write_tiny_clip_vocab

# Every word a caption or the project's prompts use, so each is one token (others still work, as bytes).
WORDS = tuple(dict.fromkeys(
    "a an photo of chair in the shape slatted armchair stool bar plain striped checkered leopard print wooden "
    "sofa table".split() + list(COLOURS) + [w for phrase in FAMILY_PHRASES.values() for w in phrase.split()]
    + [w for phrase in PATTERN_WORDS.values() for w in phrase.split("-")]
    + [w for pair in PROPORTION_WORDS.values() for w in pair]
))

CAPTION_WORDS_FILE = "caption_words.json"  # saved beside a toy pipeline: what `--resume` must not re-spell


@dataclass
class TrainConfig:
    """What a toy model is trained from. The defaults are the committed model's settings."""

    seed: int = 0
    images: int = 6000  # rendered training chairs (each also used mirrored)
    minutes: float = 50.0  # wall-clock budget for everything (render, VAE, UNet)
    vae_minutes: float = 10.0
    max_vae_steps: int = 100_000
    max_unet_steps: int = 1_000_000
    vae_channels: tuple[int, ...] = (16, 32, 64)  # 3 levels: 64x64 image -> 16x16x4 latent
    vae_batch: int = 16
    vae_crop: int = 32  # the VAE trains on random crops: it is convolutional, and crops are 4x cheaper
    vae_lr: float = 2e-3
    vae_kl: float = 1e-6
    vae_colour: float = 4.0  # weight of the 4x4-average colour term: without it the VAE drew yellow as orange
    unet_channels: tuple[int, ...] = (32, 64, 128)  # cross-attention at 16x16, 8x8 and the 4x4 middle
    unet_heads: int = 4
    text_width: int = 64
    context_tokens: int = 20  # the tokenizer's length (SD's is 77): this world's prompts fit; cheaper
    text_layers: int = 2
    batch: int = 32
    lr: float = 1e-3
    lr_end: float | None = None  # if set, the lr falls by cosine from `lr` to this over the UNet phase's time
    warmup: int = 100
    ema: float = 0.998
    empty_caption: float = 0.1  # caption dropout, so classifier-free guidance works
    save_every_minutes: float = 5.0
    resume: str | None = None  # a pipeline folder to continue from (its VAE is kept; UNet/text encoder train on)
    vae_from: str | None = None  # a pipeline folder whose trained VAE is kept (fresh UNet/text encoder, no VAE phase)
    dataset: str | None = None  # a rendered dataset (.npz from `render_to_file`) to use instead of rendering
    workers: int = 2  # processes rendering the dataset
    threads: int = 1  # torch threads: on a shared 2-core machine one thread is ~7x faster than two
    image_size: int = IMAGE_SIZE
    notes: dict = field(default_factory=dict)


def train(out: str | Path, config: TrainConfig, progress: bool = True) -> Path:
    """Train a toy model into `out` (pipeline/, loss logs, train_config.json); return the pipeline folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + config.minutes * 60
    torch.manual_seed(config.seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(out, config, start, deadline, progress)
    finally:
        torch.set_num_threads(threads)  # a library call leaves the process as it found it (tests share one)


def _train(out: Path, config: TrainConfig, start: float, deadline: float, progress: bool) -> Path:
    _write_provenance(out, config)

    if config.dataset:
        images, chairs = load_dataset(Path(config.dataset))
    else:
        images, chairs = render_dataset(config.images, config.seed, config.image_size, config.workers)
    if config.resume:
        vae, unet, text_encoder, tokenizer = load_components(Path(config.resume))
        new_words = [word for word in WORDS if word not in trained_words(Path(config.resume))]
        if any(len(tokenizer.tokenize(word)) > 1 for word in new_words):  # a model from before a word was added
            new_tokenizer = extend_tokenizer(tokenizer, out / "tokenizer-src", new_words)
            grow_vocabulary(text_encoder, tokenizer, new_tokenizer)
            tokenizer = new_tokenizer
        latents = encode_dataset(vae, images)
    elif config.vae_from:
        tokenizer = build_tokenizer(out / "tokenizer-src", config.context_tokens)
        _, unet, text_encoder = build_components(config, tokenizer)
        vae = load_vae(Path(config.vae_from))
        latents = encode_dataset(vae, images)
    else:
        tokenizer = build_tokenizer(out / "tokenizer-src", config.context_tokens)
        vae, unet, text_encoder = build_components(config, tokenizer)
        vae_end = min(deadline, time.monotonic() + config.vae_minutes * 60)
        train_vae(vae, images, config, vae_end, out / "vae_loss.csv", progress)
        latents = encode_dataset(vae, images)
        vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    latents = latents * vae.config.scaling_factor
    return train_unet(unet, text_encoder, tokenizer, vae, latents, chairs, config, deadline, out, progress)


def render_dataset(count: int, seed: int, size: int, workers: int) -> tuple[np.ndarray, list[dict]]:
    """`count` training chairs (training families only) as uint8 [n, size, size, 3] plus their attributes."""
    seeds = [seed * 1_000_003 + index for index in range(count)]
    jobs = [(s, size) for s in seeds]
    if workers > 1:
        with Pool(workers) as pool:
            rendered = pool.map(_render_one, jobs, chunksize=64)
    else:
        rendered = [_render_one(job) for job in jobs]
    images = np.stack([r[0] for r in rendered])
    return images, [r[1] for r in rendered]


def render_to_file(path: Path, count: int, seed: int, size: int = IMAGE_SIZE, workers: int = 2) -> None:
    """Render a training set once into an .npz (uint8 images + attribute columns), for `TrainConfig.dataset`."""
    images, chairs = render_dataset(count, seed, size, workers)
    np.savez_compressed(path, images=images, **{key: np.array([c[key] for c in chairs]) for key in chairs[0]})


def load_dataset(path: Path) -> tuple[np.ndarray, list[dict]]:
    with np.load(path) as data:
        keys = [key for key in ("family", "colour", "pattern", "shape") if key in data]  # "shape": newer sets
        return data["images"], [dict(zip(keys, values)) for values in zip(*(data[k].tolist() for k in keys))]


def load_components(folder: Path):
    """VAE, UNet, text encoder and tokenizer of a saved toy pipeline, to continue training it."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = load_vae(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", use_safetensors=True)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", use_safetensors=True)
    return vae, unet, text_encoder, CLIPTokenizer.from_pretrained(folder / "tokenizer")


def load_vae(folder: Path):
    """The trained VAE of a saved toy pipeline folder, in eval mode."""
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(folder / "vae", use_safetensors=True).eval()


def _render_one(job: tuple[int, int]) -> tuple[np.ndarray, dict]:
    seed, size = job
    chair = render_toy_chair(seed, size=size)
    return np.asarray(chair.image), {"family": chair.family, "colour": chair.colour, "pattern": chair.pattern,
                                     "shape": " ".join(chair.shape_words)}


def build_tokenizer(folder: Path, context_tokens: int = 77):
    """A real CLIP BPE tokenizer over this world's words (every other word is spelt in bytes).

    `context_tokens` may be shorter than SD's 77: this world's captions and prompts are short, and
    every cross-attention row gets cheaper. (It was shortened while hunting why the first model ignored
    its text; the cause turned out to be mismatched captions, see `encode_dataset`.)
    """
    vocab_file, merges_file = write_tiny_clip_vocab(folder, WORDS)
    return _joined_tokenizer(vocab_file, merges_file, WORDS, context_tokens)


def trained_words(folder: Path) -> tuple[str, ...]:
    """The caption words a saved toy model was trained on; empty for a folder saved without the list."""
    path = folder / CAPTION_WORDS_FILE
    return tuple(json.loads(path.read_text())) if path.exists() else ()


def extend_tokenizer(tokenizer, folder: Path, new_words):
    """A resumed model's own tokenizer, plus one token for each new word it would split.

    Words the model was trained on keep their pieces. Re-spelling them ("arm" + "chair" as one new
    "armchair" token) throws away what the model learned: a fine-tune that did so drew armchairs at a
    third of their former specificity after 78 minutes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    vocab_file, merges_file = folder / "vocab.json", folder / "merges.txt"
    vocab_file.write_text(json.dumps(model["vocab"]))
    pairs = [pair if isinstance(pair, str) else " ".join(pair) for pair in model["merges"]]  # either format
    merges_file.write_text("".join(pair + "\n" for pair in pairs))
    return _joined_tokenizer(vocab_file, merges_file, new_words, tokenizer.model_max_length)


def _joined_tokenizer(vocab_file: Path, merges_file: Path, words, context_tokens: int):
    """The tokenizer of these files, after appending merges until each of `words` is one token."""
    from transformers import CLIPTokenizer

    def load():
        return CLIPTokenizer(vocab=str(vocab_file), merges=str(merges_file), model_max_length=context_tokens)

    tokenizer = load()
    while split := {word: tokenizer.tokenize(word) for word in words if len(tokenizer.tokenize(word)) > 1}:
        _join_pieces(vocab_file, merges_file, split.values())
        tokenizer = load()
    return tokenizer


def _join_pieces(vocab_file: Path, merges_file: Path, split_words) -> None:
    """Append the merges that join each word's leftover BPE pieces, so every caption word is one token.

    Merges are applied in rank order, so a word's chain of merges can be cut by an earlier word's merge
    ("a r" from "armchair" splits "leopard" into leop + ar + d). Appended merges come last and join what is left.
    """
    vocab = json.loads(vocab_file.read_text())
    specials = [token for token in vocab if token.startswith("<|")]
    tokens = [token for token in vocab if token not in specials]
    merges = merges_file.read_text().splitlines()
    for pieces in split_words:
        current = pieces[0]
        for piece in pieces[1:]:
            merges.append(f"{current} {piece}")
            current += piece
            if current not in tokens:
                tokens.append(current)
    vocab_file.write_text(json.dumps({token: index for index, token in enumerate(tokens + specials)}))
    merges_file.write_text("\n".join(merges) + "\n")


@torch.no_grad()
def grow_vocabulary(text_encoder, old_tokenizer, new_tokenizer) -> None:
    """Move a trained text encoder onto a new vocabulary: known tokens keep their rows, new ones start as the
    mean of the rows the old tokenizer spelt them with (so "leopard" starts where "leop ar d" was)."""
    old = text_encoder.get_input_embeddings().weight
    old_vocab = old_tokenizer.get_vocab()
    rows = []
    for token, _ in sorted(new_tokenizer.get_vocab().items(), key=lambda item: item[1]):
        if token in old_vocab:
            rows.append(old[old_vocab[token]])
        else:
            pieces = old_tokenizer(token.removesuffix("</w>"), add_special_tokens=False).input_ids
            rows.append(old[pieces].mean(0))
    embedding = torch.nn.Embedding(len(rows), old.shape[1])
    embedding.weight.copy_(torch.stack(rows))
    text_encoder.set_input_embeddings(embedding)
    text_encoder.config.vocab_size = len(rows)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(text_encoder.config, name, getattr(new_tokenizer, name))


def build_components(config: TrainConfig, tokenizer):
    """Fresh AutoencoderKL, UNet2DConditionModel and CLIPTextModel of the configured sizes."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    levels = len(config.vae_channels)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=config.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1, norm_num_groups=math.gcd(16, *config.vae_channels), sample_size=config.image_size,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_width, intermediate_size=config.text_width * 4,
        num_attention_heads=4, num_hidden_layers=config.text_layers,
        max_position_embeddings=tokenizer.model_max_length,
        projection_dim=config.text_width, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    levels = len(config.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=config.image_size // 2 ** (len(config.vae_channels) - 1), in_channels=4, out_channels=4,
        layers_per_block=1, block_out_channels=config.unet_channels,
        norm_num_groups=math.gcd(16, *config.unet_channels),
        cross_attention_dim=config.text_width, attention_head_dim=config.unet_heads,
        down_block_types=("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",) * (levels - 2),
        up_block_types=("UpBlock2D",) * (levels - 2) + ("CrossAttnUpBlock2D",) * 2,
    )
    return vae, unet, text_encoder


def _to_pixels(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def train_vae(vae, images: np.ndarray, config: TrainConfig, deadline: float, log_path: Path,
              progress: bool) -> None:
    """Reconstruction (L1 + MSE), a colour term on 4x4 averages and a tiny KL term, on random crops.

    The colour term is there because a short phase without it muddled hue (yellow decoded as orange,
    purple as blue: only 23 of 48 rendered chairs kept their colour), which caps what prompts can show.
    """
    rng = np.random.default_rng(config.seed + 1)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    crop = min(config.vae_crop, config.image_size)
    vae.train()
    with open(log_path, "w", newline="") as handle, _bar(progress, deadline, "VAE") as bar:
        log = csv.writer(handle)
        log.writerow(["step", "seconds", "loss"])
        step = 0
        while time.monotonic() < deadline and step < config.max_vae_steps:
            pick = rng.integers(0, len(images), config.vae_batch)
            y, x = rng.integers(0, config.image_size - crop + 1, 2)
            pixels = _to_pixels(images[pick, y:y + crop, x:x + crop])
            posterior = vae.encode(pixels).latent_dist
            recon = vae.decode(posterior.sample()).sample
            loss = reconstruction_loss(recon, pixels, config.vae_colour) + config.vae_kl * posterior.kl().mean()
            step = _step_and_log(optimizer, loss, step, log, bar)
    vae.eval()


def reconstruction_loss(recon: torch.Tensor, pixels: torch.Tensor, colour_weight: float) -> torch.Tensor:
    """L1 + MSE per pixel, plus `colour_weight` x MSE of 4x4-pixel averages (hue errors cost extra)."""
    loss = F.l1_loss(recon, pixels) + F.mse_loss(recon, pixels)
    return loss + colour_weight * F.mse_loss(F.avg_pool2d(recon, 4), F.avg_pool2d(pixels, 4))


def _step_and_log(optimizer, loss: torch.Tensor, step: int, log, bar: _bar) -> int:
    """One optimiser step on `loss`, one log row and a progress update; returns the new step count."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    step += 1
    log.writerow([step, round(time.monotonic() - bar.start, 1), round(loss.item(), 5)])
    bar.update(step, loss.item())
    return step


def finetune_decoder(vae, images: np.ndarray, deadline: float, log_path: Path, seed: int = 0, batch: int = 16,
                     lr: float = 1e-3, progress: bool = True, max_steps: int = 1_000_000,
                     colour_weight: float = 4.0) -> None:
    """Train only the decoder on the (frozen) encoder's latent means, as SD's ft-MSE VAE was made.

    The latents the UNet learned to produce do not change, so this can run after (or beside) the
    UNet's training and sharpens colours and patterns the short first VAE phase left muddy. The
    `colour_weight` term compares 4x4-pixel averages: hue errors (yellow drawn orange) cost extra.
    """
    rng = np.random.default_rng(seed + 3)
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    vae.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    with open(log_path, "w", newline="") as handle, _bar(progress, deadline, "decoder") as bar:
        log = csv.writer(handle)
        log.writerow(["step", "seconds", "loss"])
        step = 0
        while time.monotonic() < deadline and step < max_steps:
            pick = rng.integers(0, len(images), batch)
            pixels = _to_pixels(images[pick])
            flip = rng.random() < 0.5
            pixels = pixels.flip(-1) if flip else pixels
            with torch.no_grad():
                latents = vae.encode(pixels).latent_dist.mean
            recon = vae.decode(latents).sample
            loss = reconstruction_loss(recon, pixels, colour_weight)
            step = _step_and_log(optimizer, loss, step, log, bar)
    vae.requires_grad_(False)
    vae.eval()


@torch.no_grad()
def encode_dataset(vae, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """Latent means of every image and of its mirror image, interleaved: [2n, 4, h, w] (unscaled).

    Row 2k is image k and row 2k + 1 its mirror, so `chairs[row // 2]` is the row's caption. (The first
    models stacked each batch's mirrors after it: captions matched no image and the UNet learned to
    ignore its text.)
    """
    out = []
    for start in range(0, len(images), batch):
        pixels = _to_pixels(images[start:start + batch])
        plain = vae.encode(pixels).latent_dist.mean
        mirrored = vae.encode(pixels.flip(-1)).latent_dist.mean
        out.append(torch.stack([plain, mirrored], dim=1).flatten(0, 1))
    return torch.cat(out)


def train_unet(unet, text_encoder, tokenizer, vae, latents: torch.Tensor, chairs: list[dict], config: TrainConfig,
               deadline: float, out: Path, progress: bool) -> Path:
    """Denoising (epsilon) MSE with SD's noise schedule; UNet and text encoder learn together; EMA is saved."""
    from diffusers import DDPMScheduler

    scheduler = make_scheduler()
    assert isinstance(scheduler, DDPMScheduler)
    rng = np.random.default_rng(config.seed + 2)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=1e-2)
    ema = [p.detach().clone() for p in params]
    unet.train()
    text_encoder.train()
    began = time.monotonic()
    next_save = began + config.save_every_minutes * 60
    pipeline_dir = out / "pipeline"
    with open(out / "loss.csv", "w", newline="") as handle, _bar(progress, deadline, "UNet") as bar:
        log = csv.writer(handle)
        log.writerow(["step", "seconds", "loss", "lr"])
        step = 0
        while time.monotonic() < deadline and step < config.max_unet_steps:
            pick = rng.integers(0, len(latents), config.batch)
            captions = [caption_for(chairs[i // 2], rng, config.empty_caption) for i in pick]
            ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
            clean = latents[pick]
            noise = torch.randn_like(clean)
            timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (config.batch,))
            noisy = scheduler.add_noise(clean, noise, timesteps)
            prediction = unet(noisy, timesteps, text_encoder(ids)[0]).sample
            loss = F.mse_loss(prediction, noise)

            lr = learning_rate(config, step, (time.monotonic() - began) / max(deadline - began, 1e-9))
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            decay = min(config.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1.0 - decay)
            step += 1
            log.writerow([step, round(time.monotonic() - bar.start, 1), round(loss.item(), 5), f"{lr:.2e}"])
            bar.update(step, loss.item())
            if time.monotonic() >= next_save:
                handle.flush()
                save_pipeline(pipeline_dir, vae, unet, text_encoder, tokenizer, ema, params, step)
                next_save = time.monotonic() + config.save_every_minutes * 60
    save_pipeline(pipeline_dir, vae, unet, text_encoder, tokenizer, ema, params, step)
    return pipeline_dir


def learning_rate(config: TrainConfig, step: int, elapsed: float) -> float:
    """Linear warm-up, then constant, or a cosine fall to `lr_end` over the phase's wall-clock budget.

    `elapsed` is the share of the UNet phase's time already spent (0..1). The budget is time, not steps, because
    a run is sized by the minutes a machine can give it; annealing at the end is what turns a plateaued loss into
    a lower one.
    """
    warm = min(1.0, (step + 1) / config.warmup)
    if config.lr_end is None:
        return config.lr * warm
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(max(elapsed, 0.0), 1.0)))
    return warm * (config.lr_end + (config.lr - config.lr_end) * cosine)


def caption_for(chair: dict, rng: np.random.Generator, empty: float) -> str:
    """A fresh caption each time a chair is drawn (words left out at random); `empty` of them are ''."""
    if rng.random() < empty:
        return ""
    return caption(chair["family"], chair["colour"], chair["pattern"], rng, tuple(chair.get("shape", "").split()))


def make_scheduler():
    """Stable Diffusion's training noise schedule (what the inversion code expects of a model)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         num_train_timesteps=1000, prediction_type="epsilon", clip_sample=False, steps_offset=1)


def save_pipeline(folder: Path, vae, unet, text_encoder, tokenizer, ema: list[torch.Tensor],
                  params: list[torch.nn.Parameter], step: int) -> None:
    """Save the EMA weights as a diffusers pipeline folder, replacing the previous save atomically."""
    from diffusers import StableDiffusionPipeline

    live = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=make_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(partial, safe_serialization=True)
    (partial / CAPTION_WORDS_FILE).write_text(json.dumps(list(WORDS)) + "\n")
    (partial / "README.md").write_text(
        "Toy Stable-Diffusion-shaped model trained by shapeinv on its own rendered 64x64 chairs "
        f"(`python -m shapeinv_core.toy train`), {step} UNet steps. A demo/test world, not a real model.\n")
    with torch.no_grad():
        for p, value in zip(params, live):
            p.copy_(value)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(partial, folder)
    shutil.rmtree(old, ignore_errors=True)


def _write_provenance(out: Path, config: TrainConfig) -> None:
    import diffusers
    import transformers

    record = {"config": asdict(config), "git": _git_describe(), "torch": torch.__version__,
              "diffusers": diffusers.__version__, "transformers": transformers.__version__,
              "python": platform.python_version(), "machine": platform.machine(),
              "threads": torch.get_num_threads(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "train_config.json").write_text(json.dumps(record, indent=2) + "\n")


def _git_describe() -> str | None:
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True)
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


class _bar:
    """A tqdm bar over wall-clock seconds until `deadline`, showing the step and loss."""

    def __init__(self, enabled: bool, deadline: float, name: str):
        self.enabled, self.deadline, self.name = enabled, deadline, name
        self.start = time.monotonic()
        self.bar = None

    def __enter__(self):
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=round(max(self.deadline - self.start, 0)), desc=self.name, unit="s")
        return self

    def update(self, step: int, loss: float) -> None:
        if self.bar is not None and (step % 10 == 0 or step == 1):
            self.bar.n = round(min(time.monotonic(), self.deadline) - self.start)
            self.bar.set_postfix(step=step, loss=f"{loss:.4f}", refresh=False)
            self.bar.refresh()

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
