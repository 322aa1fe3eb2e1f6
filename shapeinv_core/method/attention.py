"""Capturing the placeholder's cross-attention maps during a UNet forward.

Only the cross-attention layers whose maps are needed get `MapCaptureProcessor`, which computes
the softmax probabilities explicitly (77 keys, so this is cheap); self-attention and every other
layer keep their fused attention path. Each captured layer contributes one map per batch row:
the attention probability of the placeholder token column(s) (summed over the placeholder's
vectors), averaged over heads and resized to one grid.

With class-word positions set (`reference_rows`), each layer also records how far the placeholder's
map is from the class word's in mean and variance over heads and pixels: AttnDreamBooth's
cross-attention regularisation, which keeps a learned word attending like an object word.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from ..errors import InputError


class AttentionStore:
    """Collects one resized map per captured layer for the current forward pass."""

    def __init__(self, token_positions: list[int], latent_size: tuple[int, int], resolution: int,
                 device: torch.device | str = "cpu"):
        if not token_positions:
            raise InputError("The prompt does not contain the placeholder token, so it has no attention map.")
        # On the UNet's device once: a CPU index would be copied to the GPU in every captured layer.
        self.token_positions = torch.tensor(token_positions, dtype=torch.long, device=device)
        self.latent_size = latent_size
        self.resolution = resolution
        self.maps: list[torch.Tensor] = []
        # [rows, n] placeholder positions per batch row, when the rows' prompts differ (named looks
        # of different token lengths); None: `token_positions` for every row.
        self.row_positions: torch.Tensor | None = None
        # [rows, m] the class word's positions per batch row; None: no statistics are recorded.
        self.reference_rows: torch.Tensor | None = None
        self.statistic_gaps: list[torch.Tensor] = []

    def reset(self) -> None:
        self.maps = []
        self.statistic_gaps = []

    def add(self, probs: torch.Tensor, batch: int, heads: int, query_len: int) -> None:
        """probs: [batch*heads, query_len, keys] softmax probabilities of one layer."""
        if self.row_positions is None:
            columns = probs[:, :, self.token_positions].sum(dim=-1)  # [b*h, q]
        else:  # rows are batch-major, heads minor: each row's heads read that row's positions
            columns = _columns(probs, self.row_positions, heads, query_len)
        if self.reference_rows is not None:
            self.statistic_gaps.append(statistic_gap(columns, _columns(probs, self.reference_rows, heads, query_len),
                                                     batch, heads, query_len))
        per_row = columns.view(batch, heads, query_len).mean(dim=1)  # [b, q]
        height, width = _layer_size(self.latent_size, query_len)
        grid = per_row.view(batch, 1, height, width)
        self.maps.append(resize_map(grid, self.resolution)[:, 0])

    def regularisation(self) -> torch.Tensor:
        """[batch]: the statistic gap averaged over the captured layers of this forward pass."""
        if not self.statistic_gaps:
            raise RuntimeError("No attention statistics were recorded: set reference_rows before the pass.")
        return torch.stack(self.statistic_gaps).mean(dim=0)

    def mean_map(self) -> torch.Tensor:
        """[batch, res, res]: the average over the captured layers of this forward pass."""
        if not self.maps:
            raise RuntimeError("No cross-attention map was captured: no selected layer ran.")
        return torch.stack(self.maps).mean(dim=0)


def _columns(probs: torch.Tensor, rows: torch.Tensor, heads: int, query_len: int) -> torch.Tensor:
    """[b*h, q]: the summed probability columns at each batch row's positions (rows: [b, m])."""
    index = rows.repeat_interleave(heads, dim=0)[:, None, :].expand(-1, query_len, -1)
    return probs.gather(2, index).sum(dim=-1)


def statistic_gap(placeholder: torch.Tensor, reference: torch.Tensor, batch: int, heads: int,
                  query_len: int) -> torch.Tensor:
    """[batch]: squared log-ratios of the mean and the standard deviation (over heads and pixels) of two
    [b*h, q] columns.

    AttnDreamBooth's regulariser (mean and variance of the new word's map pulled to the class word's) in
    log-ratio form: attention probabilities differ in scale by orders of magnitude between layers and models,
    so a raw squared gap is ~1e-7 on one and a relative gap explodes where the class word is barely attended.
    """
    first, second = placeholder.view(batch, heads * query_len), reference.view(batch, heads * query_len)
    mean_gap = first.mean(dim=1).clamp_min(1e-12).log() - second.mean(dim=1).clamp_min(1e-12).log()
    spread_gap = first.std(dim=1).clamp_min(1e-12).log() - second.std(dim=1).clamp_min(1e-12).log()
    return mean_gap ** 2 + spread_gap ** 2


def _layer_size(latent_size: tuple[int, int], query_len: int) -> tuple[int, int]:
    """A layer's spatial size from its query count: the latent downsampled by a power of two."""
    height, width = latent_size
    factor = 1
    while (height // factor) * (width // factor) > query_len and factor < 64:
        factor *= 2
    if (height // factor) * (width // factor) != query_len:
        raise RuntimeError(f"Cannot map {query_len} attention queries onto a {height}x{width} latent grid.")
    return height // factor, width // factor


def resize_map(grid: torch.Tensor, resolution: int) -> torch.Tensor:
    """Resize [b, 1, h, w] maps to resolution x resolution: area average down, bilinear up."""
    if grid.shape[-2:] == (resolution, resolution):
        return grid
    if grid.shape[-2] >= resolution and grid.shape[-1] >= resolution:
        return F.adaptive_avg_pool2d(grid, resolution)
    return F.interpolate(grid, size=(resolution, resolution), mode="bilinear", align_corners=False)


class MapCaptureProcessor:
    """Cross-attention with explicit probabilities, reporting the placeholder column to a store."""

    def __init__(self, store: AttentionStore):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if encoder_hidden_states is None:
            raise RuntimeError("MapCaptureProcessor is only for cross-attention layers (attn2).")
        residual = hidden_states
        hidden_states = attention_input(attn, hidden_states, temb)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        batch, query_len, _ = hidden_states.shape
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        # Scores and softmax in fp32: the maps feed a loss, and bf16 probabilities are coarse. With beta=0
        # baddbmm ignores its input, so a broadcast 1x1x1 empty tensor stands in for a zeroed score buffer.
        scores = torch.baddbmm(query.new_empty(1, 1, 1, dtype=torch.float32), query.float(),
                               key.float().transpose(-1, -2), beta=0, alpha=attn.scale)
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, key.shape[1], batch)
            scores = scores + mask.float()
        probs = scores.softmax(dim=-1)
        self.store.add(probs, batch, attn.heads, query_len)

        hidden_states = attn.batch_to_head_dim(torch.bmm(probs.to(value.dtype), value))
        return attention_output(attn, hidden_states, residual)


def attention_input(attn, hidden_states: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' processor preamble: the optional spatial and group norms, and [b, c, h, w] read as [b, hw, c]."""
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    if hidden_states.ndim == 4:
        batch, channel, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    return hidden_states


def attention_output(attn, hidden_states: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """diffusers' processor ending: the output projection, the input's layout back, the residual and rescale."""
    hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
    if residual.ndim == 4:
        hidden_states = hidden_states.transpose(-1, -2).reshape(residual.shape)
    if attn.residual_connection:
        hidden_states = hidden_states + residual
    return hidden_states / attn.rescale_output_factor


def cross_attention_layers(unet, which: str = "all") -> dict[str, torch.nn.Module]:
    """The UNet's cross-attention modules (attn2), optionally only the down, mid or up blocks."""
    prefixes = {"all": ("down_blocks", "mid_block", "up_blocks"), "down": ("down_blocks",),
                "mid": ("mid_block",), "up": ("up_blocks",)}[which]
    layers = {name: module for name, module in unet.named_modules()
              if name.endswith("attn2") and name.startswith(prefixes)}
    if not layers:
        raise InputError(f"The UNet has no cross-attention layers in '{which}'. Use attention_layers='all'.")
    return layers


def layer_grid_sides(unet, latent_side: int) -> dict[str, int]:
    """Each cross-attention layer's grid side for a `latent_side` x `latent_side` latent, from the UNet's layout.

    Every down block with a downsampler halves the grid and every up block with an upsampler
    doubles it again, so a layer's side follows from its block's place (SD 1.x at 512 px:
    64, 32, 16 down, 8 in the middle, 16, 32, 64 up), without running the UNet.
    """
    down_sides, side = [], latent_side
    for block in unet.down_blocks:
        down_sides.append(side)
        if getattr(block, "downsamplers", None):
            side //= 2
    up_sides = []
    for block in unet.up_blocks:
        up_sides.append(side)
        if getattr(block, "upsamplers", None):
            side *= 2
    sides = {}
    for name in cross_attention_layers(unet):
        kind, _, rest = name.partition(".")
        if kind == "mid_block":
            sides[name] = down_sides[-1]
        else:
            index = int(rest.split(".", 1)[0])
            sides[name] = (down_sides if kind == "down_blocks" else up_sides)[index]
    return sides


def layers_at_sides(unet, which: str, sides: tuple[int, ...], latent_side: int) -> dict[str, torch.nn.Module]:
    """The cross-attention layers in `which` (down/mid/up/all) whose grid side is in `sides` (all if empty)."""
    layers = cross_attention_layers(unet, which)
    if not sides:
        return layers
    grid = layer_grid_sides(unet, latent_side)
    chosen = {name: module for name, module in layers.items() if grid[name] in sides}
    if not chosen:
        present = ", ".join(str(side) for side in sorted({grid[name] for name in layers}))
        raise InputError(
            f"No cross-attention layer in '{which}' has a {'/'.join(map(str, sides))} grid at this training "
            f"resolution; its layers have {present}. Pick one of those for attention_res, or 'all'."
        )
    return chosen


@contextmanager
def capture_attention(unet, store: AttentionStore, which: str = "all",
                      sides: tuple[int, ...] = ()) -> Iterator[AttentionStore]:
    """Swap in `MapCaptureProcessor` on the selected cross-attention layers; restore on exit.

    `sides` keeps only the layers with those grid sides (e.g. (16,), Break-A-Scene's choice);
    every other layer keeps its fused attention path.
    """
    layers = layers_at_sides(unet, which, sides, store.latent_size[0])
    previous = {name: module.processor for name, module in layers.items()}
    processor = MapCaptureProcessor(store)
    try:
        for module in layers.values():
            module.set_processor(processor)
        yield store
    finally:
        for name, module in layers.items():
            module.set_processor(previous[name])
