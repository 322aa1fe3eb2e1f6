"""The optional second phase: LoRA on the cross-attention keys/values, trained together with `*s`.

After `invert` has learned `*s` (phase 1), `tune_lora` trains a low-rank update of every
cross-attention to_k/to_v (lora.py) and keeps training the vectors, with the same loss, mask
term included, for `lora_steps` more steps: E4T's and Custom Diffusion's weight offsets beside
the word. Its steps continue phase 1's numbering (noise, log, progress), and it checkpoints to
`checkpoints/lora_step_NNNNNN.safetensors` (vectors, LoRA weights and both AdamW states), so a
stopped run resumes where it stopped.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable

import torch
from PIL import Image
from safetensors import safe_open

from ..errors import ShapeInvError
from ..files.runs import RunFolder
from ..models.families import text_pairs
from ..models.loading import LoadedModel, checkpointed_unet
from .attention import AttentionStore, capture_attention
from .concept import Concept, initializer_vectors, install_tokens, remove_tokens
from .inversion import (
    Cancelled,
    StepCallback,
    StepReport,
    _accumulate_gradients,
    _freeze,
    _Objective,
    _training_scheduler,
    balance_due,
    denoising_target,
    denoising_weights,
    embedding_parts,
    read_back,
    sample_noise,
    starting_word,
    substitute_embeddings,
    training_inputs,
    view_rows,
)
from .lora import add_lora, lora_parameter_names, lora_state, remove_lora

CHECKPOINT_PATTERN = re.compile(r"^lora_step_(\d{6,})\.safetensors$")


def tune_lora(model: LoadedModel, image: Image.Image, mask: Image.Image, concept: Concept,
              run: RunFolder | None = None, on_step: StepCallback | None = None,
              should_stop: Callable[[], bool] | None = None) -> Concept:
    """Phase 2 for a concept learned by `invert`: returns it with trained vectors and `lora` set."""
    config = concept.settings.validate()
    pipe, device = model.pipe, model.device
    _freeze(pipe)
    init = initializer_vectors(pipe, concept.initializer_used or starting_word(config), config.num_vectors).to(device)
    token_ids = install_tokens(pipe, config.placeholder, concept.vectors)
    inputs = training_inputs(pipe, device, image, mask, config, token_ids)
    latents = inputs.latents
    scheduler = _training_scheduler(pipe)

    vectors = torch.nn.Parameter(concept.vectors[None].to(device).float().clone())  # [1, n, dim]
    lora_params = add_lora(pipe.unet, config.lora_rank, config.seed)
    optimizer = torch.optim.AdamW([{"params": [vectors], "lr": config.learning_rate},
                                   {"params": lora_params, "lr": config.lora_lr}], weight_decay=0.0)
    start = _resume(run, config.steps, vectors, pipe.unet, optimizer) if run else 0
    if run is not None:
        run.truncate_log(config.steps + start)
    total = config.steps + config.lora_steps
    last = None
    store = AttentionStore(inputs.positions[0].tolist(), tuple(latents.shape[-2:]), config.map_resolution,
                           device=device)
    try:
        with capture_attention(pipe.unet, store, config.attention_layers, config.map_sides()), \
                substitute_embeddings(embedding_parts(pipe, [encoder for _, encoder in text_pairs(pipe)],
                                                      config.placeholder, config.num_vectors)) as substitution, \
                checkpointed_unet(pipe.unet, model.gradient_checkpointing):
            objective = _Objective(pipe, model.dtype, inputs, substitution, store, config, init,
                                   torch.tensor([config.mask_weight], device=device),
                                   denoising_weights(image, mask, config, latents.shape[-1], device))
            for step in range(start, config.lora_steps):
                if should_stop is not None and should_stop():
                    if run and step > start:
                        _save(run, config.steps, step, vectors, pipe.unet, optimizer)
                    raise Cancelled(f"Stopped after {config.steps + step} of {total} steps (LoRA phase); "
                                    "the run can be resumed.")
                began = time.perf_counter()
                noise, timesteps = sample_noise(config.seed, config.steps + step, config.batch_size, latents.shape,
                                                scheduler)
                noise, timesteps = noise.to(device), timesteps.to(device)
                rows = view_rows(config.seed, config.steps + step, config.batch_size, latents.shape[0]).to(device)
                clean = latents[rows]
                batch = (scheduler.add_noise(clean, noise, timesteps), timesteps,
                         denoising_target(scheduler, clean, noise, timesteps), rows)
                measure = balance_due(config, step, config.lora_steps)
                # No loss scaling in the LoRA phase (a pass-through scaler): its fp16 policy is not settled.
                values, maps, balance, _ = _accumulate_gradients(objective, vectors, batch, 1, optimizer,
                                                                 torch.amp.GradScaler(device.type, enabled=False),
                                                                 measure)
                terms, maps = read_back(values, maps, balance)
                if not math.isfinite(terms[0].loss):
                    raise ShapeInvError(f"The loss became {terms[0].loss} in the LoRA phase. Lower --lora-lr "
                                        f"(now {config.lora_lr}) or use fp32 (--dtype fp32).")
                optimizer.step()
                report = StepReport(config.steps + step + 1, total, time.perf_counter() - began, terms, maps)
                if run:
                    run.append_log({**report.log_record(), "phase": "lora"})
                    if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.lora_steps:
                        _save(run, config.steps, step + 1, vectors, pipe.unet, optimizer)
                last = terms[0]
                if on_step is not None:
                    on_step(report)
            final_maps = objective.evaluation_maps(vectors.detach(), latents[:1], scheduler)
            lora = lora_state(pipe.unet)
    finally:
        remove_lora(pipe.unet)
        remove_tokens(pipe, config.placeholder)

    final = vars(last) if last else (run.read_log() or [{}])[-1] if run else {}
    return Concept(
        token=concept.token, vectors=vectors[0].detach().float().cpu(), settings=config, model=concept.model,
        model_revision=concept.model_revision, steps_done=concept.steps_done,
        final_losses={key: final[key] for key in ("loss", "diffusion_loss", "mask_loss") if key in final},
        attention_map=final_maps[0], lora=lora, initializer_used=concept.initializer_used, widths=concept.widths,
    )


def _state(vectors: torch.Tensor, unet, optimizer) -> dict[str, torch.Tensor]:
    """Everything phase 2 needs to continue: parameters and AdamW moments, by name."""
    params = dict(unet.named_parameters())
    named = {"vectors": vectors, **{f"lora:{name}": params[name] for name in lora_parameter_names(unet)}}
    tensors = {}
    for key, param in named.items():
        tensors[key] = param.detach()
        moments = optimizer.state[param]
        tensors[f"{key}:exp_avg"], tensors[f"{key}:exp_avg_sq"] = moments["exp_avg"], moments["exp_avg_sq"]
    return {key: value.float().cpu().contiguous() for key, value in tensors.items()}


def _save(run: RunFolder, phase1_steps: int, step: int, vectors, unet, optimizer) -> None:
    run.write_checkpoint(f"lora_step_{step:06d}.safetensors", _state(vectors, unet, optimizer),
                         {"step": str(step), "after_steps": str(phase1_steps)}, CHECKPOINT_PATTERN)


def _resume(run: RunFolder, phase1_steps: int, vectors: torch.Tensor, unet, optimizer) -> int:
    """Load the newest phase-2 checkpoint made after this many phase-1 steps; return its step (0: none)."""
    params = dict(unet.named_parameters())
    for step, path in reversed(run.checkpoints(CHECKPOINT_PATTERN)):
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata()
                if int(meta["step"]) != step or int(meta["after_steps"]) != phase1_steps:
                    continue
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception:  # a torn or foreign file: fall back to the one before
            continue
        named = {"vectors": vectors, **{f"lora:{name}": params[name] for name in lora_parameter_names(unet)}}
        with torch.no_grad():
            for key, param in named.items():
                param.copy_(tensors[key].to(param.device))
                optimizer.state[param] = {"step": torch.tensor(float(step)),
                                          "exp_avg": tensors[f"{key}:exp_avg"].to(param.device),
                                          "exp_avg_sq": tensors[f"{key}:exp_avg_sq"].to(param.device)}
        return step
    return 0
