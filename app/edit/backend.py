"""Editing, without Gradio: prompts drawn with a learned (or uploaded) *s, scored, saved; a run's files to take away.

A part of `app.backend.Backend` (its store, worker, limits and data folder). The images are drawn
by the worker between another job's steps; they are saved with the job (a sweep's with its weight),
or for an uploaded concept in the data folder's edits/. The downloads are the concept in the files
other tools load (`shapeinv_core.method.exports`) and the whole run as a zip.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from shapeinv_core.config import DEFAULT_PLACEHOLDER, GenerationConfig, InversionConfig, load_json
from shapeinv_core.errors import InputError
from shapeinv_core.evaluation.metrics import generated_mask_iou, strip_placeholder
from shapeinv_core.generation.generate import check_prompts, image_info, slug
from shapeinv_core.jobs import CANCELLED, FAILED, SWEEP, Job
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.exports import DEFAULT_NAME, named_files, write_named_files
from shapeinv_core.method.inversion import pad_to_square

EDIT_NAME = re.compile(r"^\d{6}_\d{2}_(?P<prompt>.*)_seed(?P<seed>\d+)$")


def edit_prompt(path: Path) -> str | None:
    """The prompt an edit was drawn with, from its PNG (None for edits saved before the PNG kept it)."""
    with Image.open(path) as image:
        return getattr(image, "text", {}).get("prompt")


def edit_caption(path: Path) -> str:
    """'a red chair in the shape of *s (seed 0)' from a saved edit's PNG, or from its file name (older edits:
    'a red chair in the shape of s (seed 0)'; see `Backend.generate`)."""
    with Image.open(path) as image:
        text = getattr(image, "text", {})
    if "prompt" in text and "seed" in text:
        return f"{text['prompt']} (seed {text['seed']})"
    match = EDIT_NAME.match(path.stem)
    return f"{match['prompt'].replace('-', ' ')} (seed {match['seed']})" if match else path.stem


@dataclass
class Edit:
    """One saved edit image and what its metrics need."""

    path: Path
    prompt: str
    seed: int
    token: str  # the concept's word as written in `prompt`
    source: str | None  # the job (or SWEEP_ID/weight_x) the concept came from; None for an uploaded file


class EditBackend:
    """The concept to edit with, the images drawn and scored, the concept's files and the run's zip."""

    def concept(self, job_id: str | None, upload: str | Path | None, owner: str | None) -> tuple[Concept, Path]:
        """The concept to edit with (an uploaded file wins over the job) and where its images go.

        `job_id` is a job's id, or `SWEEP_ID/weight_0.1` for one of a sweep's concepts.
        """
        if upload:
            concept = Concept.load(upload)
            return concept, self.data_dir / "edits" / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"
        if not job_id or not job_id.strip():
            raise InputError("No concept yet. Learn one above (and wait until it is done), or upload a "
                             "learned_embeds.safetensors file.")
        job, run = self.store.concept_run(job_id, owner)
        if not run.has_concept():
            raise InputError(f"Job {job.id} is {job.status}; its concept is not ready yet. Wait until it is done, "
                             "or upload a learned_embeds.safetensors file.")
        return Concept.load(run.path), run.path / "edits"

    def as_uploaded(self, concept: Concept, prompts_text: str) -> Concept:
        """An uploaded concept as the page uses it: its word is *s (the page's word) unless the prompts use the
        file's own, and without a concept.json (the tools' NAME.safetensors has none) it draws at the loaded
        model's native size, not at the default settings' 512 px (64 times the work on a 64 px model)."""
        if concept.token != DEFAULT_PLACEHOLDER and concept.token not in (prompts_text or ""):
            concept = dataclasses.replace(concept, token=DEFAULT_PLACEHOLDER)
        native = self.layout.native_resolution if self.layout else None
        if concept.model is None and native:  # no concept.json came with it: nothing says at what size
            concept = dataclasses.replace(concept, settings=dataclasses.replace(concept.settings, resolution=native))
        return concept

    def edit_metrics(self, edits: list[Edit], owner: str | None) -> tuple[list[dict], str]:
        """Mask-IoU (to the run's input mask) and CLIP-T of edited images -> (rows, note on what is missing).

        `edits` are `generate`'s records. Mask-IoU is measured on the square the model saw (the photo
        padded); an uploaded concept has no input mask, so it gets none. CLIP-T runs on the worker.
        """
        if not edits:
            return [], ""
        notes = []
        square_mask = None
        if edits[0].source:
            image, mask, _ = self.store.concept_run(edits[0].source, owner)[1].inputs()
            square_mask = pad_to_square(image, mask)[1]
        else:
            notes.append("Mask-IoU needs the input mask; an uploaded concept comes without one.")
        images = [Image.open(edit.path).convert("RGB") for edit in edits]
        texts = [strip_placeholder(edit.prompt, edit.token) for edit in edits]
        clip_t, reason = self.worker.clip_t(images, texts)
        if reason:
            notes.append(reason)
        rows = [{"prompt": edit.prompt, "seed": edit.seed, "image": edit.path.name,
                 "mask_iou": None if square_mask is None else generated_mask_iou(image, square_mask),
                 "clip_t": None if clip_t is None else clip_t[index]}
                for index, (edit, image) in enumerate(zip(edits, images))]
        return rows, " ".join(notes)

    def check_prompts(self, prompts_text: str, placeholder: str) -> list[str]:
        """Prompts one per line, each using the placeholder and at most `max_prompt_chars` long."""
        for prompt in (prompts_text or "").splitlines():
            if len(prompt.strip()) > self.limits.max_prompt_chars:
                raise InputError(f"A prompt of {len(prompt.strip())} characters is longer than this server takes "
                                 f"({self.limits.max_prompt_chars}); the model reads about 75 words anyway. "
                                 "Shorten it.")
        return check_prompts((prompts_text or "").splitlines(), placeholder, max_chars=self.limits.max_prompt_chars)

    def generate(self, job_id: str | None, upload: str | Path | None, prompts_text: str,
                 config: GenerationConfig, owner: str | None, on_progress=None) -> list[Edit]:
        """Images for one prompt per line, saved as PNG files; served between another job's steps.

        `job_id` as in `concept`: a job's id or `SWEEP_ID/weight_0.1`. Prompt and image counts are
        checked before the request is queued; the worker drops it after `limits.edit_timeout` s.
        """
        concept, out_dir = self.concept(job_id, upload, owner)
        if upload:
            concept = self.as_uploaded(concept, prompts_text)
        prompts = self.check_prompts(prompts_text, concept.token)
        total = len(prompts) * config.num_images
        if total > self.limits.max_images:
            raise InputError(f"{len(prompts)} prompts x {config.num_images} images = {total} images; this server "
                             f"makes at most {self.limits.max_images} per request. Use fewer prompts or images.")
        results = self.worker.generate(concept, prompts, config, on_progress=on_progress)
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%H%M%S")
        saved = []
        for index, result in enumerate(results):
            path = out_dir / f"{stamp}_{index:02d}_{slug(result.prompt, 40)}_seed{result.seed}.png"
            # The PNG keeps the prompt (its file name holds only a shortened slug), seed and how *s was learned.
            result.image.save(path, pnginfo=image_info(concept, config, result.prompt, result.seed))
            saved.append(Edit(path, result.prompt, result.seed, concept.token,
                              None if upload else job_id.strip()))
        return saved

    def downloads(self, job_id: str, owner: str | None) -> list[Path]:
        """NAME.safetensors (NAME-lora.safetensors) for other tools; a stopped job's concept at its last checkpoint.
        The whole run is zipped only when asked (`run_zip`): a zip remade after every edit would cost each edit."""
        return self.concept_files(self.store.owned(job_id, owner))

    def concept_files(self, job: Job) -> list[Path]:
        """`downloads` of a job already read through its owner's (or its share link's) secret."""
        run = self.store.run(job.id)
        if not run.has_concept():
            partial = self._checkpoint_concept(job) if job.status in (CANCELLED, FAILED) else None
            return [partial] if partial else []
        name = load_json(InversionConfig, run.config_path).name or DEFAULT_NAME
        return [path for path in named_files(run.path, name, with_lora=True) if path.is_file()]

    def _checkpoint_concept(self, job: Job) -> Path | None:
        """A stopped job's concept as of its last checkpoint (NAME-stepN.safetensors, in the tools' format)."""
        if job.kind == SWEEP:
            return None
        run = self.store.run(job.id)
        loaded = run.load_checkpoint()
        if loaded is None:
            return None
        step, state = loaded
        config = load_json(InversionConfig, run.config_path)
        name = f"{config.name or DEFAULT_NAME}-step{step}"
        target = self.data_dir / "exports" / job.id / name
        if not (target / f"{name}.safetensors").is_file():
            concept = Concept.from_checkpoint(dataclasses.replace(config, name=name), step, state)
            target.mkdir(parents=True, exist_ok=True)
            write_named_files(target, concept)
        return target / f"{name}.safetensors"

    def run_zip(self, job_id: str, owner: str | None) -> Path:
        """The whole job folder (a sweep's too) as NAME-JOB.zip, made now, so it holds every edit made so far."""
        job = self.store.owned(job_id, owner)
        return self.export_zip(job.id, self.settings(job)[0].name or DEFAULT_NAME)

    def export_zip(self, job_id: str, name: str = DEFAULT_NAME) -> Path:
        """NAME-JOB.zip of the job folder; rebuilt only when a file in the folder is newer than the zip."""
        folder = self.store.job_dir(job_id)
        target = self.data_dir / "exports" / f"{name}-{folder.name}.zip"
        files = [path for path in sorted(folder.rglob("*")) if path.is_file() and not path.name.endswith(".tmp")]
        if target.is_file() and all(path.stat().st_mtime <= target.stat().st_mtime for path in files):
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".zip.tmp")
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in files:
                archive.write(path, Path(folder.name) / path.relative_to(folder))
        tmp.replace(target)
        return target
