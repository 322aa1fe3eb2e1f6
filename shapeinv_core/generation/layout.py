"""Keeping the reconstruction's layout in an edit: Prompt-to-Prompt's self-attention injection.

An edit ("a red chair in the shape of *s") and the reconstruction ("a photo of chair in the shape
of *s") are drawn side by side from the same starting noise. For the first steps, where the
layout is decided, every self-attention layer of the edit attends with the reconstruction's
queries and keys (so with its attention maps) over the edit's own values: the edit's pixels are
arranged like the reconstruction's while its prompt still decides their look. As in
Prompt-to-Prompt, layers with more than 32x32 queries keep their own maps (fine detail).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..method.attention import attention_input, attention_output

MAX_SHARED_QUERIES = 32 * 32  # Prompt-to-Prompt shares self-attention maps only up to 32x32 grids


class LayoutSharing:
    """What the processors read: whether this step shares maps, and how many edits a batch half holds.

    The UNet's rows are [groups, 2, images]: per guidance group (unconditional, text), the
    reconstructions first, then the edits, image i of both drawn from the same noise.
    """

    names = ()  # a `callback_on_step_end` part that reads no tensor

    def __init__(self, images: int, until_step: int):
        self.images, self.until_step = images, until_step
        self.active = until_step > 0

    def __call__(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """After 0-based `step`: sharing ends once `until_step` steps are done."""
        self.active = step + 1 < self.until_step
        return {}


def share_rows(tensor: torch.Tensor, images: int) -> torch.Tensor:
    """Rows [groups * 2 * images, ...] with each edit row replaced by its reconstruction row."""
    rows = tensor.shape[0]
    if rows % (2 * images):
        raise RuntimeError(f"{rows} rows do not pair {images} reconstructions with {images} edits.")
    paired = tensor.reshape(rows // (2 * images), 2, images, *tensor.shape[1:])
    return torch.stack((paired[:, 0], paired[:, 0]), dim=1).reshape(tensor.shape)


class LayoutProcessor:
    """Self-attention whose edit rows use the reconstruction rows' queries and keys while sharing is active."""

    def __init__(self, sharing: LayoutSharing, inner):
        self.sharing, self.inner = sharing, inner

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        queries = hidden_states.shape[-2] * hidden_states.shape[-1] if hidden_states.ndim == 4 \
            else hidden_states.shape[1]
        if (not self.sharing.active or encoder_hidden_states is not None or attention_mask is not None
                or queries > MAX_SHARED_QUERIES):
            return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        hidden_states = attention_input(attn, hidden_states, temb)
        batch = hidden_states.shape[0]
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        images = self.sharing.images
        query, key = share_rows(query, images), share_rows(key, images)
        hidden_states = F.scaled_dot_product_attention(query, key, value, scale=attn.scale)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        return attention_output(attn, hidden_states, residual)


def self_attention_layers(unet) -> dict[str, torch.nn.Module]:
    return {name: module for name, module in unet.named_modules() if name.endswith("attn1")}


@contextmanager
def keep_layout(unet, sharing: LayoutSharing) -> Iterator[LayoutSharing]:
    """Wrap every self-attention layer in `LayoutProcessor` while open; restore the processors on exit."""
    layers = self_attention_layers(unet)
    previous = {name: module.processor for name, module in layers.items()}
    try:
        for name, module in layers.items():
            module.set_processor(LayoutProcessor(sharing, previous[name]))
        yield sharing
    finally:
        for name, module in layers.items():
            module.set_processor(previous[name])
