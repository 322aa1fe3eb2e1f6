"""The run folder: one layout shared by the CLI, the app's jobs and the sweep.

    RUN_DIR/
      input.png  mask.png  config.json           what was asked
      log.jsonl                                   one JSON object per optimisation step
      checkpoints/step_000050.safetensors ...     vectors + optimiser state (resume); the newest few are kept
      learned_embeds.safetensors  concept.json    the result (diffusers' format + provenance)
      attention.png                               final attention map beside the mask
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from ..config import InversionConfig, load_json, save_json, to_dict
from ..errors import InputError
from .images import open_image
from .modes import like_other_files

EMBEDS_FILE = "learned_embeds.safetensors"  # the concept (diffusers' format); `method.concept` reads and writes it
WIDTHS_KEY = "encoder_dims"  # in a checkpoint's metadata: each text encoder's part of the vectors (SDXL)
CHECKPOINT_PATTERN = re.compile(r"^step_(\d{6,})\.safetensors$")
STATE_KEYS = ("vectors", "exp_avg", "exp_avg_sq")
# Settings a resumed run may change: how long, how often to save or measure, the file name, and
# whether a LoRA phase follows (it starts from the finished *s).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "balance_every", "name", "tune", "lora_steps")
DEFAULT_KEEP_CHECKPOINTS = 2  # the newest (the final state, once finished) and one before it, in case it is torn


def write_inputs(folder: Path, image: Image.Image, mask: Image.Image) -> None:
    """`input.png` and `mask.png`: what a run (or a sweep) learns from, kept whatever happens later."""
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "input.png")
    mask.save(folder / "mask.png")


def read_inputs(folder: Path, settings_file: str, kind: str) -> tuple[Image.Image, Image.Image]:
    """The image and mask written by `write_inputs`, once the folder is known to hold its settings too."""
    for name in ("input.png", "mask.png", settings_file):
        if not (folder / name).is_file():
            raise InputError(f"{folder} is not a {kind}: {name} is missing.")
    return open_image(folder / "input.png"), open_image(folder / "mask.png").convert("L")


class RunFolder:
    """`keep_checkpoints`: how many of the newest checkpoints stay on disk (older ones are deleted)."""

    def __init__(self, path: str | Path, keep_checkpoints: int = DEFAULT_KEEP_CHECKPOINTS):
        self.path = Path(path)
        self.keep_checkpoints = max(1, keep_checkpoints)

    # --- inputs ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def start(self, image: Image.Image, mask: Image.Image, config: InversionConfig) -> None:
        """Write the inputs; refuse to mix settings with an earlier run in the same folder."""
        if self.config_path.is_file() and self.checkpoints():
            earlier = to_dict(load_json(InversionConfig, self.config_path))
            changed = {key: (earlier[key], value) for key, value in to_dict(config).items()
                       if key not in RESUMABLE_CHANGES and earlier.get(key, value) != value}
            if changed:
                listing = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
                raise InputError(
                    f"{self.path} holds a run with other settings ({listing}). Resume it with the same "
                    "settings, or write to a new folder with -o."
                )
        write_inputs(self.path, image, mask)
        save_json(config, self.config_path)

    def inputs(self) -> tuple[Image.Image, Image.Image, InversionConfig]:
        """The image, mask and settings of this run (for resuming from another process)."""
        image, mask = read_inputs(self.path, self.config_path.name, "run folder")
        return image, mask, load_json(InversionConfig, self.config_path)

    def has_concept(self) -> bool:
        return (self.path / EMBEDS_FILE).is_file()

    # --- log ------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.path / "log.jsonl"

    def append_log(self, record: dict) -> None:
        with self.log_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")

    def read_log(self) -> list[dict]:
        """The logged steps; a line torn by a crash or a full disk is skipped (its step is redone on resume)."""
        if not self.log_path.is_file():
            return []
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return [record for record in records if isinstance(record, dict) and "step" in record]

    def truncate_log(self, last_step: int) -> None:
        """Drop log lines after `last_step`, so a resumed run's log has each step once."""
        kept = [record for record in self.read_log() if record["step"] <= last_step]
        self.log_path.write_text("".join(json.dumps(record) + "\n" for record in kept))

    # --- checkpoints ----------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def checkpoints(self, pattern: re.Pattern = CHECKPOINT_PATTERN) -> list[tuple[int, Path]]:
        """(step, path) of the checkpoints named by `pattern` (the word's; the LoRA phase has its own), oldest first."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = []
        for path in self.checkpoint_dir.iterdir():
            match = pattern.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save_checkpoint(self, step: int, state: dict[str, torch.Tensor], widths: tuple[int, ...] | None = None) -> Path:
        """Vectors and AdamW moments after `step` steps, in safetensors (no pickle); `widths`: each text encoder's
        part of the vectors (SDXL), so a checkpoint can be used as a concept on its own."""
        tensors = {key: state[key].detach().float().cpu().contiguous() for key in STATE_KEYS}
        metadata = {"step": str(step)}
        if widths:
            metadata[WIDTHS_KEY] = ",".join(map(str, widths))
        return self.write_checkpoint(f"step_{step:06d}.safetensors", tensors, metadata, CHECKPOINT_PATTERN)

    def write_checkpoint(self, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                         pattern: re.Pattern) -> Path:
        """Write `checkpoints/name` whole or not at all, readable like the run's other files, then delete all but
        the newest `keep_checkpoints` of the checkpoints named by `pattern`."""
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / name
        tmp = path.with_name(path.name + ".tmp")
        try:
            save_file(tensors, str(tmp), metadata=metadata)
            like_other_files(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # a partial file from a full disk
        for _, old in self.checkpoints(pattern)[:-self.keep_checkpoints]:
            old.unlink(missing_ok=True)
        return path

    def load_checkpoint(self) -> tuple[int, dict[str, torch.Tensor]] | None:
        """The newest readable checkpoint, or None; its state has WIDTHS_KEY too when it was saved with widths."""
        for step, path in reversed(self.checkpoints()):
            try:
                with safe_open(str(path), framework="pt") as handle:
                    metadata = handle.metadata()
                    if int(metadata["step"]) != step:
                        continue
                    state = {key: handle.get_tensor(key) for key in STATE_KEYS}
                    if metadata.get(WIDTHS_KEY):
                        state[WIDTHS_KEY] = torch.tensor([int(part) for part in metadata[WIDTHS_KEY].split(",")])
                    return step, state
            except Exception:  # a torn or foreign file: fall back to the one before
                continue
        return None
