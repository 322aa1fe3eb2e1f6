"""One inversion into a run folder, as the CLI and the app's worker both do it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PIL import Image

from ..config import InversionConfig
from ..files.modes import like_other_files
from ..files.runs import RunFolder
from ..models.loading import LoadedModel
from .concept import EMBEDS_FILE, Concept
from .exports import write_named_files
from .inversion import StepCallback, invert, pad_to_square
from .lora import LORA_FILE
from .previews import attention_figure
from .tuning import tune_lora


def learn(model: LoadedModel, image: Image.Image, mask: Image.Image, config: InversionConfig,
          run_dir: str | Path, on_step: StepCallback | None = None,
          should_stop: Callable[[], bool] | None = None) -> Concept:
    """Write the inputs, learn `*s` (resuming from the folder's last checkpoint), save the results.

    The run folder keeps its inputs and checkpoints whatever happens, so a failed or cancelled
    run can be resumed by calling this again with the same folder. With `tune="lora"` the LoRA
    phase follows (tuning.py).
    """
    run = RunFolder(run_dir)
    run.start(image, mask, config)
    concept = invert(model, image, mask, config, run=run, on_step=on_step, should_stop=should_stop)
    if config.tune == "lora":
        concept = tune_lora(model, image, mask, concept, run=run, on_step=on_step, should_stop=should_stop)
    finish(run, concept, image, mask)
    return concept


def finish(run: RunFolder, concept: Concept, image: Image.Image, mask: Image.Image) -> None:
    """Save the concept files (diffusers' and the named ones other tools load) and the attention picture."""
    concept.save(run.path)
    like_other_files(run.path / EMBEDS_FILE, run.path / LORA_FILE)
    write_named_files(run.path, concept)
    if concept.attention_map is not None:
        _, square_mask = pad_to_square(image, mask)
        attention_figure(concept.attention_map, square_mask).save(run.path / "attention.png")
