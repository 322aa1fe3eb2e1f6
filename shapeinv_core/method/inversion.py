"""Learning `*s`: textual inversion with a cross-attention mask loss.

    loss = MSE(UNet(noisy latents, t, text(template with *s)), noise or v)
         + mask_weight * MSE(mean cross-attention map of *s, object mask)
         + init_reg * |vectors - initializer embedding|^2
         + attention_reg * (mean and variance gaps of *s's attention maps to the class word's)^2

`attention_reg` is AttnDreamBooth's cross-attention regularisation: per captured layer, the
mean and variance (over heads and pixels) of `*s`'s map are pulled toward those of the class
word in the same prompt, so `*s` attends like an object word instead of taking the whole image.

Two optional forms from the neighbours (defaults keep the research's form): the denoising MSE
with background pixels down-weighted (`background_weight`, Break-A-Scene's masked loss at 0),
and a mask term that penalises only attention outside the mask (`mask_form="outside"`, MagiCapture).

Only the `*s` vectors are trainable: a small parameter substituted into the frozen token
embedding's output. The VAE encodes the image once. Several independent concepts (one per
mask weight of a sweep) share each batched UNet pass; each is identical to a run of its own,
because noise and timesteps depend only on (seed, step) and AdamW acts element-wise.

On a GPU the host never waits inside a step: noise and timesteps are copied without blocking,
the placeholder's indices live on the device, and the step's losses and map come back in one
transfer after the optimiser step. fp16 models (GPUs without bf16) train through an fp32 copy
of the text encoder with dynamic loss scaling, so the mask term's small gradient survives.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import AUTO_INITIALIZER, InversionConfig, to_dict
from ..errors import InputError, ShapeInvError
from ..files.runs import RunFolder
from ..masks import check_mask
from ..models.families import (
    SDXL,
    ImageSizes,
    cast_conditioning,
    encode_ids,
    encoder_widths,
    family_of_pipe,
    freeze_text,
    repeat_conditioning,
    text_pairs,
)
from ..models.loading import LoadedModel, checkpointed_unet
from .appearance import View, appearance_views
from .attention import AttentionStore, capture_attention
from .concept import Concept, initializer_vectors, install_tokens, placeholder_tokens, remove_tokens
from .probe import (
    PROBE_PAIRS,
    SHAPE_WORDS,
    best_word,
    denoising_loss,
    initializer_candidates,
    known_phrases,
    probe_batch,
    proportion_words,
)


class Cancelled(ShapeInvError):
    """The caller asked to stop; the last step's checkpoint was saved, so the run can resume."""


@dataclass
class LossTerms:
    loss: float
    diffusion_loss: float
    mask_loss: float
    init_loss: float
    attention_loss: float = 0.0  # the attention_reg term, before its weight
    # Measured every `balance_every` steps: gradient norms on this concept's vectors, and
    # |grad(mask_weight * mask term)| / |grad(denoising term)|, i.e. how much the chosen weight bites.
    diffusion_grad: float | None = None
    mask_grad: float | None = None
    grad_ratio: float | None = None


@dataclass
class StepReport:
    """What every step tells the caller (CLI progress bar, app worker, notebook)."""

    step: int  # steps done, 1-based
    total_steps: int
    seconds: float  # wall time of this step
    terms: list[LossTerms]  # one per concept
    attention: torch.Tensor  # [concepts, res, res] this step's map, mean over its timesteps

    @property
    def loss(self) -> float:
        return self.terms[0].loss

    @property
    def diffusion_loss(self) -> float:
        return self.terms[0].diffusion_loss

    @property
    def mask_loss(self) -> float:
        return self.terms[0].mask_loss

    def log_record(self, index: int = 0) -> dict:
        terms = self.terms[index]
        record = {"step": self.step, "loss": terms.loss, "diffusion_loss": terms.diffusion_loss,
                  "mask_loss": terms.mask_loss, "init_loss": terms.init_loss,
                  "attention_loss": terms.attention_loss, "seconds": round(self.seconds, 4)}
        if terms.grad_ratio is not None:
            record.update(diffusion_grad=terms.diffusion_grad, mask_grad=terms.mask_grad, grad_ratio=terms.grad_ratio)
        return record


StepCallback = Callable[[StepReport], None]


def invert(model: LoadedModel, image: Image.Image, mask: Image.Image, config: InversionConfig,
           run: RunFolder | None = None, on_step: StepCallback | None = None,
           should_stop: Callable[[], bool] | None = None) -> Concept:
    """Learn one `*s` for `image` and its `mask`; checkpoints and resumes through `run`."""
    return invert_many(model, image, mask, [config], [run] if run else None, on_step, should_stop)[0]


def invert_many(model: LoadedModel, image: Image.Image, mask: Image.Image, configs: list[InversionConfig],
                runs: list[RunFolder] | None = None, on_step: StepCallback | None = None,
                should_stop: Callable[[], bool] | None = None, rows_per_pass: int | None = None,
                views: list[View] | None = None) -> list[Concept]:
    """Learn several `*s` that differ only in `mask_weight`, sharing batched UNet passes.

    `rows_per_pass` caps the UNet batch (concepts x timesteps) of one pass; more concepts are
    then run in several passes per step, with identical results. `views` replaces the views that
    `appearance` would make (square, at the training size, view 0 the photo): for experiments
    with views drawn some other way, such as the toy world's renderer.
    """
    base = _common_settings(configs)
    if runs is not None and len(runs) != len(configs):
        raise ValueError("Give one run folder per config.")
    pipe, device = model.pipe, model.device
    _freeze(pipe)

    init_word = starting_word(base)
    token_ids = install_tokens(pipe, base.placeholder, initializer_vectors(pipe, init_word, base.num_vectors))
    inputs = training_inputs(pipe, device, image, mask, base, token_ids, views)  # the VAE runs once per view
    latents = inputs.latents
    scheduler = _training_scheduler(pipe)
    encoders = training_text_encoders(pipe, model.dtype)
    if base.initializer == AUTO_INITIALIZER:
        init_word, _ = choose_initializer(pipe, encoders, inputs, base, scheduler)
    init = initializer_vectors(pipe, init_word, base.num_vectors)

    count, widths = len(configs), concept_widths(pipe)
    weights = torch.tensor([c.mask_weight for c in configs], device=device)
    init = init.to(device)
    vectors = torch.nn.Parameter(init.repeat(count, 1, 1))  # [concepts, n, dim], fp32
    # Fused AdamW on CUDA: one kernel, and the loss scaler can skip a step without asking the host.
    optimizer = torch.optim.AdamW([vectors], lr=base.learning_rate, weight_decay=0.0, fused=device.type == "cuda")
    scaler = loss_scaler(model)
    start = _resume(runs, vectors, optimizer) if runs else 0
    last_terms: list[LossTerms] = []
    if start < base.steps:  # a finished run keeps its log whole (a LoRA phase logs after its steps)
        for run in runs or []:
            run.truncate_log(start)

    per_pass = count if rows_per_pass is None else max(1, rows_per_pass // base.batch_size)
    store = AttentionStore(inputs.positions[0].tolist(), tuple(latents.shape[-2:]), base.map_resolution,
                           device=device)
    parts = embedding_parts(pipe, encoders, base.placeholder, base.num_vectors)
    try:
        with capture_attention(pipe.unet, store, base.attention_layers, base.map_sides()), \
                substitute_embeddings(parts) as substitution, \
                checkpointed_unet(pipe.unet, model.gradient_checkpointing):
            objective = _Objective(pipe, model.dtype, inputs, substitution, store, base, init, weights,
                                   denoising_weights(image, mask, base, latents.shape[-1], device), encoders)
            for step in range(start, base.steps):
                if should_stop is not None and should_stop():
                    if runs and step > start:  # at `start` the newest checkpoint already holds this state
                        _save_checkpoints(runs, step, _training_state(vectors, optimizer), widths)
                    raise Cancelled(f"Stopped after {step} of {base.steps} steps; the run can be resumed.")
                began = time.perf_counter()
                noise, timesteps = sample_noise(base.seed, step, base.batch_size, latents.shape, scheduler)
                noise, timesteps = to_device(noise, device), to_device(timesteps, device)
                rows = to_device(view_rows(base.seed, step, base.batch_size, latents.shape[0]), device)
                clean = latents[rows]
                noisy = scheduler.add_noise(clean, noise, timesteps)
                target = denoising_target(scheduler, clean, noise, timesteps)

                batch = (noisy, timesteps, target, rows)
                measure = balance_due(base, step)
                values, maps, balance, per_pass = _accumulate_gradients(objective, vectors, batch, per_pass, optimizer,
                                                                        scaler, measure)
                # The state after `step` steps, kept on the device (a few KB) in case this step's loss is not finite.
                before = _training_state(vectors, optimizer, copy=True) if runs and step > start else None
                scaler.step(optimizer)
                scaler.update()
                terms, maps = read_back(values, maps, balance)  # the step's one wait for the device
                if not all(math.isfinite(t.loss) for t in terms):
                    if before is not None:  # the update of this step is dropped: keep the state after `step` steps
                        _save_checkpoints(runs, step, before, widths)
                    raise ShapeInvError(
                        f"The loss became {terms[0].loss} at step {step + 1}. Lower the learning rate "
                        f"(now {base.learning_rate}) or use fp32 (--dtype fp32); a checkpoint of step {step} was kept."
                    )

                report = StepReport(step + 1, base.steps, time.perf_counter() - began, terms, maps)
                if runs:
                    for index, run in enumerate(runs):
                        run.append_log(report.log_record(index))
                    if (step + 1) % base.checkpoint_every == 0 or step + 1 == base.steps:
                        _save_checkpoints(runs, step + 1, _training_state(vectors, optimizer), widths)
                last_terms = terms
                if on_step is not None:
                    on_step(report)

            final_maps = objective.evaluation_maps(vectors.detach(), latents[:1], scheduler)
    finally:
        remove_tokens(pipe, base.placeholder)

    concepts = []
    for index, config in enumerate(configs):
        if last_terms:
            final = vars(last_terms[index])
        else:  # resumed a finished run: its log has the last step
            final = (runs[index].read_log() or [{}])[-1] if runs else {}
        concepts.append(Concept(
            token=config.placeholder, vectors=vectors[index].detach().float().cpu(), settings=config,
            model=model.source, model_revision=model.revision, steps_done=base.steps,
            final_losses={key: final[key] for key in ("loss", "diffusion_loss", "mask_loss") if key in final},
            attention_map=final_maps[index], initializer_used=init_word, widths=widths,
        ))
    return concepts


@dataclass
class TrainingInputs:
    """What every step reads: one row per view (view 0 is the photo itself)."""

    latents: torch.Tensor  # [views, 4, h, w], fp32 on the device
    prompt_ids: torch.Tensor  # [views, encoders, tokens] on the device: the template with each view's look named
    positions: torch.Tensor  # [views, num_vectors] the placeholder's token positions in each prompt
    mask_grid: torch.Tensor  # [map_res, map_res] on the device: the views share the photo's geometry
    looks: list[str]
    # [views, m] the class word's token positions in each view's prompt (attention_reg); None when off.
    class_positions: torch.Tensor | None = None
    # SDXL's size conditioning [6] on the device, made once (the views share the photo's size): no copy per step.
    time_ids: torch.Tensor | None = None


def training_views(image: Image.Image, mask: Image.Image, config: InversionConfig) -> list[View]:
    """The photo alone ("photo"), or the photo and re-drawn views in named looks ("varied"), at the training size."""
    square, square_mask = pad_to_square(image, mask)
    if config.appearance == "photo":
        return [View(square, "")]
    side = config.resolution
    square = square.resize((side, side), Image.Resampling.BICUBIC)
    mask_array = np.asarray(square_mask.resize((side, side), Image.Resampling.BILINEAR)) > 127
    return appearance_views(square, mask_array.astype(np.uint8) * 255, config.views, config.seed)


def training_inputs(pipe, device: torch.device, image: Image.Image, mask: Image.Image, config: InversionConfig,
                    token_ids: list[int], views: list[View] | None = None) -> TrainingInputs:
    """Encode every view once (VAE, in chunks of 8) and tokenize its prompt."""
    views = views or training_views(image, mask, config)
    _, mask_grid = prepare_inputs(image, mask, config.resolution, config.map_resolution)
    side = max(image.size)  # the photo padded to a square, then resized: nothing is cropped
    sizes = ImageSizes((side, side), (0, 0), (config.resolution,) * 2) if family_of_pipe(pipe) == SDXL else None
    latents = []
    for start in range(0, len(views), 8):
        pixels = torch.cat([square_pixels(view.image, config.resolution) for view in views[start:start + 8]])
        latents.append(encode_image(pipe, pixels.to(device)))
    tokenized = [tokenize_prompt(pipe, config.prompt(view.look), token_ids) for view in views]
    class_positions = None
    if config.attention_reg > 0:
        class_positions = torch.tensor([class_word_positions(pipe, ids, config.class_word, positions)
                                        for ids, positions in tokenized], device=device)
    return TrainingInputs(
        latents=torch.cat(latents), prompt_ids=torch.cat([ids for ids, _ in tokenized]).to(device),
        positions=torch.tensor([positions for _, positions in tokenized], device=device),
        mask_grid=mask_grid.to(device), looks=[view.look for view in views], class_positions=class_positions,
        time_ids=sizes.time_ids().to(device) if sizes is not None else None,
    )


def class_word_positions(pipe, ids: torch.Tensor, class_word: str, placeholder_positions: list[int]) -> list[int]:
    """The class word's token positions in a tokenized prompt [1, encoders, 77]: its last whole occurrence before
    the placeholder (or anywhere, when the template names the class after it)."""
    word = pipe.tokenizer(class_word, add_special_tokens=False).input_ids
    row = ids[0, 0].tolist()
    starts = [start for start in range(len(row) - len(word) + 1) if row[start:start + len(word)] == word]
    before = [start for start in starts if start < placeholder_positions[0]]
    if not starts:
        raise InputError(f"The class word {class_word!r} is not in the training prompt, so attention_reg has no "
                         "word to compare *s with. Put '{cls}' in the template or set attention_reg to 0.")
    start = (before or starts)[-1]
    return list(range(start, start + len(word)))


def starting_word(config: InversionConfig) -> str:
    """The initializer, or for "auto" the class word (until the probe has chosen)."""
    return config.class_word if config.initializer == AUTO_INITIALIZER else config.initializer


def choose_initializer(pipe, encoders: list, inputs: TrainingInputs, config: InversionConfig,
                       scheduler) -> tuple[str, dict[str, float]]:
    """The shape word that, written in the training prompt in place of `*s` ('... in the shape of a stool'),
    explains the photo best (lowest probe loss), and for a seat the proportion words that lower it further
    ('tall wide stool'; `*s` starts from the phrase's mean row). Words are probed written as text, not as
    `*s`'s starting vector: a two-word phrase's mean embedding is no phrase, and it won 9 of 20 toy chairs
    against 13 of 20. The loss is the mean over `probe_views` views, each with its look named: on the photo
    alone, how well a word fits its one colour and pattern decides as much as the shape does."""
    words = known_phrases(pipe.tokenizer, initializer_candidates(config.class_word)) or [config.class_word]
    loss_of = views_probe_loss(pipe, encoders, inputs, config, scheduler, config.probe_views)
    word, losses = best_word(list(dict.fromkeys(words)), loss_of)
    if config.class_word not in SHAPE_WORDS:
        return word, losses
    return " ".join([*proportion_words(word, loss_of, pipe.tokenizer), word]), losses


def views_probe_loss(pipe, encoders: list, inputs: TrainingInputs, config: InversionConfig, scheduler,
                     views: int, pairs: int = PROBE_PAIRS) -> Callable[[str], float]:
    """phrase -> its probe loss averaged over the first `views` views (the photo first; each view its own noise
    seed and its look named), remembered per phrase: the greedy proportion search asks again for some."""
    batches = [probe_batch(scheduler, inputs.latents[view:view + 1], config.seed + view, pairs)
               for view in range(min(views, len(inputs.looks)))]

    @functools.cache
    def loss_of(phrase: str) -> float:
        return sum(word_probe_loss(pipe, encoders, inputs, config, phrase, view, batch)
                   for view, batch in enumerate(batches)) / len(batches)

    return loss_of


def word_probe_loss(pipe, encoders: list, inputs: TrainingInputs, config: InversionConfig, word: str, view: int,
                    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> float:
    """The probe loss of view `view` with `word` written in the training prompt in place of `*s`."""
    phrase = f"{'an' if word[0] in 'aeiou' else 'a'} {word}"
    ids = prompt_ids(pipe, config.prompt(inputs.looks[view], token=phrase)).to(inputs.prompt_ids.device)
    with torch.no_grad():
        hidden, added = encode_ids(encoders, ids, inputs.time_ids)
    return denoising_loss(pipe.unet, hidden, batch, added)


def view_rows(seed: int, step: int, batch: int, views: int) -> torch.Tensor:
    """Which view each of a step's rows trains on, from (seed, step) alone (resumes exactly); all 0 for one view."""
    if views == 1:
        return torch.zeros(batch, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step + 2**40)
    return torch.randint(0, views, (batch,), generator=generator)


class _Objective:
    """The batched forward pass (text encoders with the vectors substituted, UNet with map capture) and the loss."""

    def __init__(self, pipe, dtype, inputs: TrainingInputs, substitution, store, config: InversionConfig,
                 init: torch.Tensor, weights: torch.Tensor, pixel_weights: torch.Tensor | None = None,
                 encoders: list | None = None):
        self.pipe, self.dtype, self.inputs = pipe, dtype, inputs
        self.prompt_ids, self.positions = inputs.prompt_ids, inputs.positions  # [views, encoders, tokens]
        self.encoders = encoders if encoders is not None else [encoder for _, encoder in text_pairs(pipe)]
        self.substitution, self.store, self.config = substitution, store, config
        self.mask_grid, self.init, self.weights = inputs.mask_grid, init, weights
        self.pixel_weights = pixel_weights  # [1, 1, h, w] on the latent grid; None: the plain MSE

    def losses(self, vectors: torch.Tensor, chunk: slice, noisy: torch.Tensor, timesteps: torch.Tensor,
               target: torch.Tensor, rows: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """Per-concept (total, diffusion, mask, init, attention) losses and maps for the concepts in `chunk`."""
        size = chunk.stop - chunk.start
        pred, maps = self(vectors[chunk], noisy, timesteps, rows)
        diffusion = weighted_denoising_loss(pred.float(), target.repeat(size, 1, 1, 1),
                                            self.pixel_weights).view(size, -1).mean(dim=1)
        mask_loss = attention_mask_loss(maps, self.mask_grid, self.config.mask_form)
        init_loss = ((vectors[chunk] - self.init) ** 2).sum(dim=-1).mean(dim=-1)
        attention_loss = (self.store.regularisation().float().view(size, -1).mean(dim=1)
                          if self.inputs.class_positions is not None else torch.zeros_like(diffusion))
        total = (diffusion + self.weights[chunk] * mask_loss + self.config.init_reg * init_loss
                 + self.config.attention_reg * attention_loss)
        return total, diffusion, mask_loss, init_loss, attention_loss, maps.detach().mean(dim=1).float()

    def __call__(self, vectors: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor,
                 rows: torch.Tensor | None = None):
        """vectors [k, n, dim]; noisy [b, 4, h, w]; rows [b] each row's view (None: the photo's prompt)
        -> (prediction [k*b, ...], maps [k, b, res, res])."""
        concepts, batch = vectors.shape[0], noisy.shape[0]
        device = self.pipe.unet.device
        if rows is None or self.prompt_ids.shape[0] == 1:  # one prompt: encode it once per concept
            self.substitution.vectors = vectors
            hidden, added = encode_ids(self.encoders, self.prompt_ids[:1].repeat(concepts, 1, 1), self.inputs.time_ids)
            hidden, added = hidden.repeat_interleave(batch, dim=0), repeat_conditioning(added, batch)
            self.store.row_positions = None
            if self.inputs.class_positions is not None:
                self.store.reference_rows = self.inputs.class_positions[:1].expand(concepts * batch, -1)
        else:  # each row names its view's look: encode every (concept, row) prompt
            self.substitution.vectors = vectors.repeat_interleave(batch, dim=0)
            hidden, added = encode_ids(self.encoders, self.prompt_ids[rows].repeat(concepts, 1, 1),
                                       self.inputs.time_ids)
            self.store.row_positions = self.positions[rows].repeat(concepts, 1)
            if self.inputs.class_positions is not None:
                self.store.reference_rows = self.inputs.class_positions[rows].repeat(concepts, 1)
        self.substitution.vectors = None
        self.store.reset()
        pred = self.pipe.unet(
            noisy.to(device, self.dtype).repeat(concepts, 1, 1, 1),
            timesteps.to(device).repeat(concepts),
            encoder_hidden_states=hidden.to(self.dtype),
            added_cond_kwargs=cast_conditioning(added, self.dtype),
        ).sample
        maps = self.store.mean_map().float().view(concepts, batch, *self.store.maps[0].shape[-2:])
        if self.config.map_norm == "max":
            maps = maps / maps.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-8)
        return pred, maps

    @torch.no_grad()
    def evaluation_maps(self, vectors: torch.Tensor, latents: torch.Tensor, scheduler) -> torch.Tensor:
        """[concepts, res, res]: maps at fixed timesteps and noise, for attention.png and previews."""
        total = scheduler.config.num_train_timesteps
        timesteps = torch.tensor([total // 4, total // 2, 3 * total // 4])
        noise = torch.randn((3, *latents.shape[1:]), generator=torch.Generator().manual_seed(self.config.seed))
        noisy = scheduler.add_noise(latents.cpu().expand(3, -1, -1, -1), noise, timesteps)
        maps = [self(vectors[index:index + 1], noisy, timesteps)[1] for index in range(vectors.shape[0])]
        return torch.cat(maps).mean(dim=1).cpu()  # one concept per pass: this runs once, memory first


def weighted_denoising_loss(pred: torch.Tensor, target: torch.Tensor,
                            pixel_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-row mean of pixel_weights * (pred - target)^2 over channels and pixels; [rows].

    Without weights it is the plain MSE. With weights = mask + background_weight * (1 - mask) it
    is Break-A-Scene's masked loss at background_weight 0 (divided by all pixels, as theirs is).
    """
    squared = F.mse_loss(pred, target, reduction="none")
    if pixel_weights is not None:
        squared = squared * pixel_weights
    return squared.mean(dim=(1, 2, 3))


def attention_mask_loss(maps: torch.Tensor, mask_grid: torch.Tensor, form: str = "mse") -> torch.Tensor:
    """Per-concept mask term of maps [concepts, batch, res, res] against the mask grid [res, res].

    "mse": mean (map - mask)^2, the research's form; "outside": mean (map * (1 - mask))^2, which
    only penalises attention that falls outside the object (MagiCapture), leaving the inside free.
    """
    if form == "outside":
        return ((maps * (1.0 - mask_grid)) ** 2).mean(dim=(1, 2, 3))
    return ((maps - mask_grid) ** 2).mean(dim=(1, 2, 3))


def denoising_weights(image: Image.Image, mask: Image.Image, config: InversionConfig, latent_side: int,
                      device: torch.device | str = "cpu") -> torch.Tensor | None:
    """[1, 1, side, side] pixel weights of the denoising loss on the latent grid; None at background_weight 1."""
    if config.background_weight == 1.0:
        return None
    _, latent_mask = prepare_inputs(image, mask, config.resolution, latent_side)
    return (latent_mask + config.background_weight * (1.0 - latent_mask))[None, None].to(device)


def balance_due(config: InversionConfig, step: int, total: int | None = None) -> bool:
    """Whether step `step` (0-based, of `total`, default `steps`) measures the gradient ratio.

    The first, every `balance_every`-th and the last step do; `balance_every` 0 turns it off.
    """
    if config.balance_every == 0:
        return False
    return step == 0 or (step + 1) % config.balance_every == 0 or step + 1 == (total or config.steps)


def prepare_inputs(image: Image.Image, mask: Image.Image, resolution: int,
                   map_resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels [1, 3, res, res] in [-1, 1] and the mask on the attention grid [map_res, map_res] in [0, 1]."""
    square, square_mask = pad_to_square(image, mask)
    mask_array = torch.from_numpy((np.asarray(square_mask) > 127).astype(np.float32))[None, None]
    mask_grid = F.adaptive_avg_pool2d(mask_array, map_resolution)[0, 0]
    return square_pixels(square, resolution), mask_grid


def square_pixels(square: Image.Image, resolution: int) -> torch.Tensor:
    """[1, 3, res, res] in [-1, 1] from a square RGB image (resized when it is not at `resolution`)."""
    if square.size != (resolution, resolution):
        square = square.resize((resolution, resolution), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(square.convert("RGB")).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1.0


def pad_to_square(image: Image.Image, mask: Image.Image) -> tuple[Image.Image, Image.Image]:
    """Pad to a square with the border's median colour: the whole object stays, undistorted."""
    if image.size != mask.size:
        raise InputError(f"The mask is {mask.size[0]}x{mask.size[1]} but the image is {image.size[0]}x"
                         f"{image.size[1]}. Resize the mask to the image (the CLI and app do this for you).")
    check_mask(np.asarray(mask.convert("L")))
    if image.mode == "RGBA":
        image = Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image)
    rgb = np.asarray(image.convert("RGB"))
    side = max(rgb.shape[:2])
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    square = Image.new("RGB", (side, side), tuple(int(v) for v in np.median(border, axis=0)))
    square_mask = Image.new("L", (side, side), 0)
    offset = ((side - image.size[0]) // 2, (side - image.size[1]) // 2)
    square.paste(Image.fromarray(rgb), offset)
    square_mask.paste(mask.convert("L"), offset)
    return square, square_mask


@torch.no_grad()
def encode_image(pipe, pixels: torch.Tensor) -> torch.Tensor:
    """The VAE posterior's mean, scaled: computed once per run, reused at every step."""
    vae = pipe.vae
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean
    return (latents * vae.config.scaling_factor).float()


def tokenize_prompt(pipe, prompt: str, token_ids: list[int]) -> tuple[torch.Tensor, list[int]]:
    """Token ids [1, encoders, tokens] of the template (placeholder expanded to its vectors) and the
    placeholder's positions, which every tokenizer must put at the same places."""
    ids = prompt_ids(pipe, prompt)
    positions = [index for index, value in enumerate(ids[0, 0].tolist()) if value in token_ids]
    if len(positions) != len(token_ids):
        limit = pipe.tokenizer.model_max_length
        raise InputError(f"The training prompt {prompt!r} must contain the placeholder once, within the text "
                         f"encoder's {limit} tokens ({len(token_ids)} of them for *s). Shorten the template or "
                         "use fewer vectors.")
    for (tokenizer, _), row in zip(text_pairs(pipe)[1:], ids[0, 1:]):
        own = set(tokenizer.convert_tokens_to_ids(pipe.tokenizer.convert_ids_to_tokens(token_ids)))
        if [index for index, value in enumerate(row.tolist()) if value in own] != positions:
            raise InputError(f"The two tokenizers split {prompt!r} differently around the placeholder; "
                             "use a placeholder such as '*s'.")
    return ids, positions


def prompt_ids(pipe, prompt: str) -> torch.Tensor:
    """[1, encoders, 77]: the prompt through each tokenizer, with learned words expanded to their vectors."""
    rows = []
    for tokenizer, _ in text_pairs(pipe):
        text = pipe.maybe_convert_prompt(prompt, tokenizer)
        rows.append(tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                              return_tensors="pt").input_ids)
    return torch.stack(rows, dim=1)


def sample_noise(seed: int, step: int, batch: int, latent_shape: torch.Size,
                 scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise and timesteps for one step, from (seed, step) alone: runs resume and batch exactly."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator)
    noise = torch.randn((batch, *latent_shape[1:]), generator=generator)
    return noise, timesteps


def denoising_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon models) or the velocity (v-prediction, SD 2.x)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise InputError(f"Prediction type {kind!r} is not supported; SD 1.x/2.x models use epsilon or v_prediction.")


class _Substitution:
    """Forward hook on each encoder's token embedding: put that encoder's part of the trainable vectors at the
    placeholder ids."""

    def __init__(self, parts: dict[torch.nn.Module, tuple[list[int], slice]]):
        self.parts = parts  # embedding module -> (its placeholder ids, its columns of the vectors)
        self.vectors: torch.Tensor | None = None  # [rows, n, dim], one row per prompt in the batch

    def __call__(self, module, args, output):
        if self.vectors is None:
            return output
        input_ids = args[0]
        if input_ids.shape[0] != self.vectors.shape[0]:
            raise RuntimeError("One set of vectors per prompt row is needed.")
        token_ids, columns = self.parts[module]
        for index, token_id in enumerate(token_ids):
            hit = (input_ids == token_id).unsqueeze(-1)
            output = torch.where(hit, self.vectors[:, index, None, columns].to(output.dtype), output)
        return output


def embedding_parts(pipe, encoders: list, placeholder: str,
                    num_vectors: int) -> dict[torch.nn.Module, tuple[list[int], slice]]:
    """Each encoder's token embedding -> (the placeholder's ids in its tokenizer, its columns of the vectors).

    `encoders`: the ones the loop runs, in `text_pairs` order (an fp32 copy of an fp16 encoder included).
    """
    parts, start = {}, 0
    for (tokenizer, _), encoder, width in zip(text_pairs(pipe), encoders, encoder_widths(pipe)):
        ids = tokenizer.convert_tokens_to_ids(placeholder_tokens(placeholder, num_vectors))
        parts[encoder.get_input_embeddings()] = (ids, slice(start, start + width))
        start += width
    return parts


@contextmanager
def substitute_embeddings(parts: dict[torch.nn.Module, tuple[list[int], slice]]) -> Iterator[_Substitution]:
    """While open, `substitution.vectors` replace the given ids' rows in each embedding (`embedding_parts`)."""
    substitution = _Substitution(parts)
    handles = [embedding.register_forward_hook(substitution) for embedding in parts]
    try:
        yield substitution
    finally:
        for handle in handles:
            handle.remove()


def _common_settings(configs: list[InversionConfig]) -> InversionConfig:
    if not configs:
        raise ValueError("At least one config is needed.")
    for config in configs:
        config.validate()
    first = to_dict(replace(configs[0], mask_weight=0.0))
    for config in configs[1:]:
        if to_dict(replace(config, mask_weight=0.0)) != first:
            raise InputError("Concepts learned together may differ only in mask_weight.")
    return configs[0]


def _freeze(pipe) -> None:
    for module in (pipe.unet, pipe.vae):
        module.requires_grad_(False)
        module.eval()
    freeze_text(pipe)


def concept_widths(pipe) -> tuple[int, ...] | None:
    """Each encoder's width of a concept's vectors for SDXL; None for one encoder."""
    widths = encoder_widths(pipe)
    return tuple(widths) if len(widths) > 1 else None


def _training_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


def _accumulate_gradients(objective: _Objective, vectors: torch.nn.Parameter, batch: tuple, per_pass: int,
                          optimizer, scaler: torch.amp.GradScaler, measure: bool = False,
                          ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[float, float, float]] | None, int]:
    """Backpropagate every concept's loss, `per_pass` concepts per UNet pass.

    Returns the loss terms [concepts, 5] and maps [concepts, res, res], still on the device, and
    with `measure` the gradient balance per concept (`term_gradients`; that step waits for the device).
    Concepts are independent, so the gradient of the summed loss is each one's own and the
    chunking does not change the result: when the GPU runs out of memory, the step is redone
    in smaller passes (and the smaller size is kept for the following steps).
    With `measure`, the terms also carry the mask/denoising gradient balance (`term_gradients`).
    """
    while True:
        optimizer.zero_grad(set_to_none=True)
        values: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        regularised = objective.config.attention_reg > 0
        mask_grad = torch.zeros_like(vectors) if measure else None
        attention_grad = torch.zeros_like(vectors) if measure and regularised else None
        try:
            for chunk in _chunks(vectors.shape[0], per_pass):
                total, diffusion, mask_loss, init_loss, attention_loss, chunk_maps = objective.losses(vectors, chunk,
                                                                                                     *batch)
                scaler.scale(total.sum()).backward(retain_graph=measure)
                if measure:  # more backwards, through the mask (and attention) terms only; the update stays as it was
                    mask_grad += torch.autograd.grad(scaler.scale(mask_loss.sum()), vectors,
                                                     retain_graph=regularised)[0]
                    if regularised:
                        attention_grad += torch.autograd.grad(scaler.scale(attention_loss.sum()), vectors)[0]
                values.append(torch.stack((total, diffusion, mask_loss, init_loss, attention_loss), dim=1).detach())
                maps.append(chunk_maps)
            balance = None
            if measure:  # measured on unscaled gradients; scaler.step then does not unscale again
                scaler.unscale_(optimizer)
                balance = term_gradients(vectors, mask_grad / scaler.get_scale(), objective,
                                         attention_grad / scaler.get_scale() if regularised else None)
            return torch.cat(values), torch.cat(maps), balance, per_pass
        except torch.OutOfMemoryError as error:
            if per_pass == 1:
                raise ShapeInvError(
                    "The GPU ran out of memory for even one concept per pass. Lower --batch (timesteps per "
                    "step) or --resolution, or close other programs using the GPU."
                ) from error
            per_pass = max(1, per_pass // 2)
            torch.cuda.empty_cache()


def term_gradients(vectors: torch.nn.Parameter, mask_grad: torch.Tensor, objective: _Objective,
                   attention_grad: torch.Tensor | None = None) -> list[tuple[float, float, float]]:
    """Per concept: (|grad of the denoising term|, |grad of the mask term|, weighted ratio of the two).

    The total gradient (in `vectors.grad`) is denoising + weight * mask + init_reg * init
    (+ attention_reg * attention), and the init term's gradient is 2 (v - init) / n, so the denoising
    part is what remains once the others are taken away: one extra backward pass (the mask term's,
    and the attention term's when it is on) instead of one per term.
    """
    with torch.no_grad():
        weights = objective.weights.to(vectors.dtype)[:, None, None]
        init_grad = 2.0 * (vectors - objective.init) / vectors.shape[1]
        diffusion_grad = vectors.grad - weights * mask_grad - objective.config.init_reg * init_grad
        if attention_grad is not None:
            diffusion_grad = diffusion_grad - objective.config.attention_reg * attention_grad
        diffusion_norm = diffusion_grad.flatten(1).norm(dim=1)
        mask_norm = mask_grad.flatten(1).norm(dim=1)
        ratio = weights.flatten() * mask_norm / diffusion_norm.clamp_min(1e-30)
    return list(zip(diffusion_norm.tolist(), mask_norm.tolist(), ratio.tolist()))


def _chunks(count: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, count)) for start in range(0, count, size)]


def training_text_encoders(pipe, dtype: torch.dtype) -> list:
    """The text encoders the vectors learn through: fp32 copies of fp16 ones, else the model's own.

    In fp16 an encoder loses the mask term's gradient (cosine ~0.99 to fp32 with loss scaling
    alone). A copy, not a cast: edits served between steps still run the fp16 pipeline.
    """
    encoders = [encoder for _, encoder in text_pairs(pipe)]
    if dtype != torch.float16:
        return encoders
    return [copy.deepcopy(encoder).float() for encoder in encoders]


def loss_scaler(model: LoadedModel) -> torch.amp.GradScaler:
    """Dynamic loss scaling for fp16 models; a pass-through for fp32 and bf16.

    In fp16 the mask term's gradient through the UNet (a 16x16 map averaged over layers and
    heads) falls below fp16's smallest normal number and is lost; scaling the loss keeps it.
    """
    return torch.amp.GradScaler(model.device.type, enabled=model.dtype == torch.float16)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to `device`; to a GPU through pinned memory, so the host does not wait."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def read_back(values: torch.Tensor, maps: torch.Tensor,
              balance: list[tuple[float, float, float]] | None = None) -> tuple[list[LossTerms], torch.Tensor]:
    """The step's loss terms [concepts, 5] and maps [concepts, res, res] on the host, in one transfer."""
    host = torch.cat((values.flatten(), maps.flatten())).cpu()
    numbers, host_maps = host[:values.numel()].view(values.shape), host[values.numel():].view(maps.shape)
    terms = [LossTerms(*row) for row in numbers.tolist()]
    for terms_k, (diffusion_grad, mask_grad, ratio) in zip(terms, balance or []):
        terms_k.diffusion_grad, terms_k.mask_grad, terms_k.grad_ratio = diffusion_grad, mask_grad, ratio
    return terms, host_maps


def _training_state(vectors: torch.Tensor, optimizer, copy: bool = False) -> dict[str, torch.Tensor]:
    """The vectors and their AdamW moments (none before the first optimiser step), optionally copied."""
    state = {"vectors": vectors.detach()}
    moments = optimizer.state.get(vectors, {})
    state.update({key: moments[key] for key in ("exp_avg", "exp_avg_sq") if key in moments})
    return {key: tensor.clone() for key, tensor in state.items()} if copy else state


def _save_checkpoints(runs: list[RunFolder], step: int, state: dict[str, torch.Tensor],
                      widths: tuple[int, ...] | None = None) -> None:
    """Each concept's slice of the vectors and AdamW moments, after at least one optimiser step."""
    for index, run in enumerate(runs):
        run.save_checkpoint(step, {key: tensor[index] for key, tensor in state.items()}, widths)


def _resume(runs: list[RunFolder], vectors: torch.Tensor, optimizer) -> int:
    """Load the newest checkpoint common to all runs into the vectors and AdamW; return its step."""
    loaded = [run.load_checkpoint() for run in runs]
    if any(item is None for item in loaded):
        return 0
    steps = {step for step, _ in loaded}
    if len(steps) != 1:
        return 0
    step = steps.pop()
    if step == 0:
        return 0
    with torch.no_grad():
        for index, (_, state) in enumerate(loaded):
            vectors[index].copy_(state["vectors"])
    # Through load_state_dict, so the step count lands where this optimiser keeps it (host, or device when fused).
    optimizer.load_state_dict({"param_groups": optimizer.state_dict()["param_groups"], "state": {0: {
        "step": torch.tensor(float(step)),
        "exp_avg": torch.stack([state["exp_avg"] for _, state in loaded]),
        "exp_avg_sq": torch.stack([state["exp_avg_sq"] for _, state in loaded]),
    }}})
    return step
