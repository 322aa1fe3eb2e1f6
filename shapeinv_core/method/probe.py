"""What a word explains of a photo: the denoising loss under fixed timesteps and noise.

Two uses, one measurement. The shape evaluation asks how much of a chair photo's loss its
family word, its colour and pattern words and the learned `*s` each explain (a paired
comparison: the same timesteps and noise for every prompt). And `initializer="auto"` starts
`*s` from the shape word that explains the photo best: textual inversion keeps much of its
starting point, and a start at the right family ("stool", "armchair") carries the shape that
the denoising loss alone is slow to learn.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Seats and their neighbours, for `initializer="auto"` when the class word is one of them ("chair", the default).
SHAPE_WORDS = ("chair", "stool", "armchair", "bar chair", "slatted chair", "bench", "rocking chair",
               "office chair", "high chair", "recliner", "throne", "ottoman")
PROBE_PAIRS = 16  # (timestep, noise) pairs: enough to rank words, one batched UNet pass each
# Opposite proportion words, tried in front of the chosen seat word ("a tall narrow stool"); at most two are said,
# as the toy world's captions say them. Words the model's vocabulary splits are skipped (known_phrases).
PROPORTION_PAIRS = (("low", "tall"), ("narrow", "wide"), ("lowback", "highback"))
MAX_PROPORTION_WORDS = 2


def initializer_candidates(class_word: str) -> tuple[str, ...]:
    """The words `initializer="auto"` chooses among: the class word, and the seat words when it is a seat."""
    return (class_word, *SHAPE_WORDS) if class_word in SHAPE_WORDS else (class_word,)


def known_phrases(tokenizer, phrases: tuple[str, ...] | list[str]) -> list[str]:
    """The phrases whose every word is one token of the model's vocabulary (a word split into pieces
    would start `*s` from fragments, not from the word)."""
    vocab = tokenizer.get_vocab()
    return [phrase for phrase in phrases if all(f"{word}</w>" in vocab for word in phrase.split())]


def probe_batch(scheduler, latents: torch.Tensor, seed: int = 0,
                pairs: int = PROBE_PAIRS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(noisy latents, timesteps, target): evenly spread timesteps, noise from `seed`; the same for every word."""
    total = scheduler.config.num_train_timesteps
    timesteps = torch.linspace(total * 0.05, total * 0.95, pairs).long()
    noise = torch.randn((pairs, *latents.shape[1:]), generator=torch.Generator().manual_seed(seed))
    clean = latents[:1].cpu().float().expand(pairs, -1, -1, -1)
    noisy = scheduler.add_noise(clean, noise, timesteps)
    kind = scheduler.config.prediction_type
    target = scheduler.get_velocity(clean, noise, timesteps) if kind == "v_prediction" else noise
    return noisy, timesteps, target


@torch.no_grad()
def denoising_loss(unet, hidden: torch.Tensor, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   added: dict[str, torch.Tensor] | None = None) -> float:
    """Mean denoising MSE of one prompt's encoding `hidden` [1, tokens, dim] (and SDXL's extra conditioning
    `added`, one row) over the probe batch."""
    noisy, timesteps, target = batch
    device, dtype = unet.device, unet.dtype
    rows = noisy.shape[0]
    if added is not None:
        added = {key: value.to(device, dtype).expand(rows, -1) for key, value in added.items()}
    pred = unet(noisy.to(device, dtype), timesteps.to(device),
                encoder_hidden_states=hidden.to(device, dtype).expand(rows, -1, -1), added_cond_kwargs=added).sample
    return float(F.mse_loss(pred.float(), target.to(device)))


def best_word(words: list[str], loss_of: Callable[[str], float]) -> tuple[str, dict[str, float]]:
    """The word with the lowest probe loss, and every word's loss (for the run's log)."""
    losses = {word: loss_of(word) for word in words}
    return min(losses, key=losses.get), losses


def proportion_words(shape_word: str, loss_of: Callable[[str], float], tokenizer) -> list[str]:
    """Greedily, per pair of opposites, the word that lowers the probe loss of "<words so far> <word>
    <shape_word>" the most, or none when neither lowers it; stops at MAX_PROPORTION_WORDS."""
    said: list[str] = []
    for pair in PROPORTION_PAIRS:
        if len(said) == MAX_PROPORTION_WORDS:
            break
        best, best_loss = None, loss_of(" ".join([*said, shape_word]))
        for word in known_phrases(tokenizer, pair):
            trial = loss_of(" ".join([*said, word, shape_word]))
            if trial < best_loss:
                best, best_loss = word, trial
        if best:
            said.append(best)
    return said
