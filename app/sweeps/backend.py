"""Sweeps, without Gradio: one job that learns a *s per mask weight, then draws and measures every prompt.

A part of `app.backend.Backend` (its store, limits and data folder). A sweep is queued, polled,
cancelled and resumed as any job is (`LearnBackend`); its prompts are checked as an edit's are
(`EditBackend.check_prompts`). What is its own: the weights, its results and its downloads.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from shapeinv_core.config import GenerationConfig, InversionConfig
from shapeinv_core.errors import InputError
from shapeinv_core.evaluation.report import read_metrics_csv
from shapeinv_core.files.runs import RunFolder
from shapeinv_core.generation.sweep import DEFAULT_WEIGHTS, run_folder_name
from shapeinv_core.jobs import DONE, SWEEP, Job, SweepSpec
from shapeinv_core.jobs.estimates import drawing_seconds, run_seconds
from shapeinv_core.method.concept import Concept
from shapeinv_core.method.exports import DEFAULT_NAME, write_named_files

from ..display import counted, format_duration
from ..learn.backend import NOT_TIMED

# A sweep of fewer steps draws alike pictures for every weight: AdamW's first steps move each weight's *s by about
# the same small amount whatever the mask term adds to its gradient.
COMPARABLE_STEPS = 10
RESEARCH_WEIGHT = 0.1  # the research notes' best trade-off: a sweep's concept offered first


def few_steps_note(steps: int) -> str:
    """Why a sweep of very few steps draws alike pictures for every weight; empty for enough steps."""
    if steps >= COMPARABLE_STEPS:
        return ""
    return (f"With {steps} step{'s' if steps != 1 else ''}, each weight's *s has moved only a little from its "
            "starting word, by about the same for every weight, so the weights cannot differ yet and their pictures "
            f"look alike. Compare weights with at least {COMPARABLE_STEPS} steps (the research notes used 500).")


def nearest_research_weight(concepts: list[tuple[float, str]]) -> str | None:
    """The reference of the (weight, reference) pair nearest the research's best weight; None for none."""
    return min(concepts, key=lambda item: abs(item[0] - RESEARCH_WEIGHT))[1] if concepts else None


class SweepBackend:
    """A sweep's weights, spec, results, concepts, downloads and duration estimate."""

    def parse_weights(self, text: str | list) -> list[float]:
        """'0, 0.01, 0.1' (commas or spaces) -> [0.0, 0.01, 0.1], held to the server's limit."""
        items = text if isinstance(text, list) else re.split(r"[,\s]+", (text or "").strip())
        try:
            weights = [float(item) for item in items if str(item).strip()]
        except ValueError as error:
            raise InputError(f"Mask weights are numbers between 0 and 1 separated by commas, e.g. "
                             f"{', '.join(f'{w:g}' for w in DEFAULT_WEIGHTS)} ({error}).") from error
        if not weights:
            raise InputError("No mask weights given. Give some between 0 and 1, e.g. 0, 0.1, 0.5.")
        if len(weights) > self.limits.max_weights:
            raise InputError(f"{len(weights)} weights is more than this server learns at once "
                             f"({self.limits.max_weights}). Drop some, or run `shapeinv sweep` on your own GPU.")
        return weights

    def sweep_spec(self, weights: list[float], prompts_text: str, config: InversionConfig,
                   generation: GenerationConfig) -> SweepSpec:
        """The sweep a form asks for, within the limits: prompts one per line, each using the placeholder."""
        prompts = self.check_prompts(prompts_text, config.placeholder)
        images = len(weights) * len(prompts) * generation.num_images
        if images > self.limits.max_sweep_images:
            raise InputError(f"{len(weights)} weights x {len(prompts)} prompts x {generation.num_images} images = "
                             f"{images} images; this server draws at most {self.limits.max_sweep_images} per sweep.")
        return SweepSpec(base=config, weights=weights, prompts=prompts, generation=generation.validate()).validate()

    def sweep_results(self, job_id: str, owner: str | None) -> dict:
        """A sweep's pictures, table and learned concepts; the pictures and table are None until it is done."""
        job = self.store.owned(job_id, owner)
        if job.kind != SWEEP:
            raise InputError(f"Job {job.id} is a single run, not a sweep. Show it with job_status.")
        folder = self.store.job_dir(job.id)
        spec = self.store.sweep_folder(job.id).spec()
        done = job.status == DONE and (folder / "metrics.csv").is_file()
        concepts = self.sweep_concepts(job, spec)
        return {
            "grid": folder / "grid.png" if done else None,
            "tradeoff": folder / "tradeoff.png" if done else None,
            "rows": read_metrics_csv(folder / "metrics.csv") if done else [],
            "concepts": concepts if done else [],  # (weight, reference for `generate`)
            "steps": spec.base.steps,
            "weights": spec.weights,
            "prompts": spec.prompts,
        }

    def sweep_concepts(self, job: Job, spec: SweepSpec) -> list[tuple[float, str]]:
        """(weight, reference for `generate`) of each concept a sweep has learned so far."""
        folder = self.store.job_dir(job.id)
        return [(weight, f"{job.id}/{run_folder_name(weight)}") for weight in spec.weights
                if (folder / run_folder_name(weight) / "learned_embeds.safetensors").is_file()]

    def sweep_downloads(self, job_id: str, owner: str | None) -> list[Path]:
        """A finished sweep's files: each weight's concept (NAME-weight_W.safetensors), grid, trade-off plot, CSV."""
        job = self.store.owned(job_id, owner)
        if job.kind != SWEEP or job.status != DONE:
            return []
        folder = self.store.job_dir(job.id)
        spec = self.store.sweep_folder(job.id).spec()
        target = self.data_dir / "exports" / job.id
        target.mkdir(parents=True, exist_ok=True)
        files = []
        for weight in spec.weights:
            run = RunFolder(folder / run_folder_name(weight))
            if not run.has_concept():
                continue
            name = f"{spec.base.name or DEFAULT_NAME}-{run_folder_name(weight)}"
            concept = Concept.load(run.path)
            path = target / f"{name}.safetensors"
            if not path.is_file():
                write_named_files(target, dataclasses.replace(concept, settings=dataclasses.replace(
                    concept.settings, name=name), lora=None))
            files.append(path)
        return files + [path for path in (folder / "grid.png", folder / "tradeoff.png", folder / "metrics.csv")
                        if path.is_file()]

    def sweep_estimate(self, config: InversionConfig, weights: int, images: int, sample_steps: int) -> str:
        """A sentence on how long a sweep takes here: learning `weights` concepts with `config`, then drawing
        `images` pictures of `sample_steps` sampling steps, each at the pace measured on this server."""
        learning, runs = run_seconds(self.store, config, weights)
        if learning is None:
            return NOT_TIMED
        drawing, sweeps = drawing_seconds(self.store, config.resolution, sample_steps, images)
        measured = f"measured on {counted(runs, 'earlier run')}"
        if drawing is None:
            return (f"Duration: about {format_duration(learning)} of learning at this server's pace ({measured}), "
                    f"plus drawing its {counted(images, 'picture')}, which no sweep has timed on this server yet, "
                    "and any wait in the queue.")
        return (f"Duration: about {format_duration(learning + drawing)} of learning and drawing at this server's "
                f"pace ({measured} and {counted(sweeps, 'sweep')} that drew), plus any wait in the queue.")
