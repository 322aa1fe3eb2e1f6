"""The Compare weights tab's events: a sweep started and polled, its results shown, a weight's *s taken to Edit.

A sweep is learned as one *s is, so `SweepHandlers` builds on `LearnHandlers`: the same settings
from the Advanced section, the same progress bar, Start's lock and the job controls.
"""

from __future__ import annotations

import gradio as gr

from shapeinv_core.config import GenerationConfig, InversionConfig
from shapeinv_core.errors import InputError, ShapeInvError
from shapeinv_core.evaluation.report import METRICS_COLUMNS
from shapeinv_core.generation.sweep import tradeoff_points
from shapeinv_core.jobs import DONE, FINISHED, SWEEP
from shapeinv_core.method.exports import file_name

from ..display import table
from ..errors import user_errors
from ..learn.handlers import LearnHandlers
from ..plots import tradeoff_frame
from ..values import given_id, real, text, whole
from .backend import few_steps_note, nearest_research_weight


class SweepHandlers(LearnHandlers):
    """Handlers of a sweep; a part of `app.handlers.Handlers` (its `backend`)."""

    @user_errors
    def start_sweep(self, image: str | None, mask: str | None, weights: str, prompts: str, steps: int,
                    num_images: int, sample_steps: int, guidance: float, class_word: str, initializer: str,
                    num_vectors: int, learning_rate: float, batch_size: int, resolution: int, seed: int,
                    map_resolution: int, attention_layers: str, map_norm: str, init_reg: float,
                    checkpoint_every: int, attention_res: str = "all", mask_form: str = "mse",
                    background_weight: float = 1.0, owner: str | None = None, appearance: str = "",
                    tune: str = InversionConfig.tune, lora_rank: int = InversionConfig.lora_rank,
                    lora_steps: int = InversionConfig.lora_steps, lora_lr: float = InversionConfig.lora_lr):
        """Queue one job that learns a `*s` per mask weight together, then draws and measures every prompt.

        -> (sweep id, status, timer, owner token). The other settings are the single run's (its Advanced section),
        the LoRA phase included: each weight's concept is what a single run at that weight would give.
        """
        owner = self.backend.owner_token(owner)
        values = self.backend.parse_weights(text(weights, "Mask weights"))
        config = self._config(values[0], steps, class_word, initializer, num_vectors, learning_rate, batch_size,
                              resolution, seed, map_resolution, attention_layers, map_norm, init_reg, checkpoint_every,
                              attention_res=text(attention_res, "Attention map sides").strip(),
                              mask_form=text(mask_form, "Mask term"),
                              background_weight=real(background_weight, "Background weight"),
                              tune=text(tune, "Tune"), lora_rank=whole(lora_rank, "LoRA rank"),
                              lora_steps=whole(lora_steps, "LoRA steps"), lora_lr=real(lora_lr, "LoRA learning rate"),
                              name=file_name(None, image, (text(class_word, "Class word"),
                                                           text(initializer, "Initializer"))),
                              appearance=text(appearance, "Training views") or InversionConfig.appearance)
        generation = GenerationConfig(num_images=whole(num_images, "Images per prompt", 1, 4),
                                      steps=whole(sample_steps, "Sampling steps", 1, 100),
                                      guidance=real(guidance, "Guidance"), seed=config.seed).validate()
        spec = self.backend.sweep_spec(values, text(prompts, "Prompts"), config, generation)
        self.backend.check_room(owner)
        picture = self.backend.read_image(image)
        object_mask = self.backend.read_mask(mask, picture)
        job = self.backend.submit(picture, object_mask, spec, owner)
        return job.id, self.backend.status(job.id, owner), gr.Timer(active=True), owner

    @user_errors
    def sweep_results(self, job_id: str, owner: str | None = None):
        """(status, headline, progress, per-weight losses, grid, trade-off plot, table, concepts, timer).

        The status dict gains `concepts`: [{weight, concept}], where `concept` is what `generate`
        takes as `job_id` to edit with that weight's `*s`. Pictures and table are None until done.
        """
        return self._sweep_outputs(given_id(job_id, "sweep", "start_sweep"), owner)

    def poll_sweep(self, job_id: str, owner: str | None = None):
        """`sweep_results` for the page's timer: a bad id stops the polling with a note."""
        return self._polled(self._sweep_outputs, job_id, owner, stopped=(None, None, None, gr.skip()))

    def _sweep_outputs(self, job_id: str, owner: str):
        if not job_id or not job_id.strip():
            return {}, "", "", "", None, None, None, gr.skip(), gr.Timer(active=False)
        status = self.backend.status(job_id, owner)
        results = self.backend.sweep_results(status["id"], owner)
        status["concepts"] = [{"weight": weight, "concept": ref} for weight, ref in results["concepts"]]
        finished = status["status"] in FINISHED
        choices = [(f"{weight:g}", ref) for weight, ref in results["concepts"]]
        # Preselect the weight nearest 0.1, the research's best trade-off.
        chosen = nearest_research_weight(results["concepts"])
        notes = [status["note"], few_steps_note(results["steps"]) if status["status"] == DONE else ""]
        headline = "\n\n".join([self.backend.describe(status), *(note for note in notes if note)])
        return (
            status,
            headline,
            self._progress(status),
            self._weight_losses(status),
            self.backend.outbox(results["grid"]),
            self.backend.outbox(results["tradeoff"]),
            table(results["rows"], METRICS_COLUMNS) if results["rows"] else None,
            gr.Dropdown(choices=choices, value=chosen) if finished else gr.skip(),
            gr.Timer(active=not finished),
        )

    def tradeoff_chart(self, status: dict | None, owner: str | None = None):
        """The sweep's trade-off as a chart: Mask-IoU against CLIP-T per weight (against the weight when
        CLIP-T was not measured); empty until the sweep is done (its scores are written at the end)."""
        points = []
        if status and status.get("status") == DONE:
            results = self.backend.sweep_results(status["id"], owner)
            points = tradeoff_points(results["rows"], results["weights"]) if results["rows"] else []
        frame = tradeoff_frame(points)
        measured = frame["clip_t"].notna().any()
        return gr.ScatterPlot(frame, x="clip_t" if measured else "weight",
                              x_title="CLIP-T (follows the prompt)" if measured else "weight (CLIP-T not measured)")

    @staticmethod
    def _weight_losses(status: dict) -> str:
        if not status["terms"]:
            return ""
        lines = ["| weight | loss | denoising | mask |", "| ---: | ---: | ---: | ---: |"]
        lines += [f"| {t['weight']:g} | {t['loss']:.4f} | {t['diffusion_loss']:.4f} | {t['mask_loss']:.4f} |"
                  for t in status["terms"]]
        return "\n".join(lines)

    @user_errors
    def use_sweep_concept(self, concept: str | None, owner: str | None = None):
        """A sweep's `*s` (`SWEEP_ID/weight_0.1`) -> the Edit section's concept, checked to be there."""
        if not concept:
            raise gr.Error("Pick a weight first; the list fills in when the sweep is done.", print_exception=False)
        job, run = self.backend.store.concept_run(text(concept, "Weight"), owner)
        if not run.has_concept():
            raise gr.Error(f"Sweep {job.id} has no concept {concept} yet.", print_exception=False)
        return concept

    def sweep_files(self, status: dict | None, owner: str | None = None):
        """A finished sweep's concepts, grid, plot and CSV as downloads (None before it is done)."""
        if not status or status.get("status") != "done" or status.get("kind") != SWEEP:
            return None
        try:
            paths = self.backend.sweep_downloads(status["id"], owner)
        except ShapeInvError:
            return None
        return [self.backend.outbox(path) for path in paths] or None

    def sweep_duration(self, weights, steps, resolution, batch_size, prompts: str = "", images=1,
                       sample_steps=25) -> str:
        """A line under 'Start the sweep': how long its learning and drawing take on this server, and why a sweep
        of very few steps will draw alike pictures for every weight."""
        try:
            count = len(self.backend.parse_weights(text(weights, "Mask weights")))
            config = self._estimated_config(steps, resolution, batch_size)
            lines = [line for line in text(prompts, "Prompts").splitlines() if line.strip()]
            if not lines:
                raise InputError("No prompts yet: write one per line, each with *s, to draw with every weight.")
            pictures = count * len(lines) * whole(images, "Images per prompt", 1, 4)
            estimate = self.backend.sweep_estimate(config, count, pictures,
                                                   whole(sample_steps, "Sampling steps", 1, 100))
        except ShapeInvError as error:
            return str(error)
        return "\n\n".join(part for part in (estimate, few_steps_note(config.steps)) if part)
