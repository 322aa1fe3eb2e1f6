"""The page: layout and event wiring only.

What an event does is a `Handlers` method (app/<feature>/handlers.py), which calls `Backend`
(app/<feature>/backend.py), which calls shapeinv_core; nothing here reads a file or a job.
"""

from __future__ import annotations

import gradio as gr

from shapeinv_core.config import (
    ATTENTION_LAYER_CHOICES,
    MAP_NORMS,
    MASK_FORMS,
    SHAPE_ORDERS,
    TUNE_CHOICES,
    GenerationConfig,
    InversionConfig,
)
from shapeinv_core.evaluation.report import METRICS_COLUMNS
from shapeinv_core.generation.sweep import DEFAULT_PROMPTS, DEFAULT_WEIGHTS

from .backend import Backend
from .browser import JOB_LINK_JS, OWNER_JS, SCROLL_TO_EDIT, SHARE_LINK_JS
from .edit.handlers import EDIT_METRICS_COLUMNS
from .guard import checked_image, guard_inputs
from .handlers import Handlers
from .mask.backend import example_images
from .mask.handlers import CLICK_MODES
from .plots import DENOISING_COLOURS, MASK_COLOURS

INTRO = """# ShapeInversion
Upload a photo of a chair. A new word, **\\*s**, is learned that carries the chair's *shape*; then prompts
such as "a leopard-print chair in the shape of \\*s" draw new chairs with that outline."""


COMPARE_HELP = """Learn one \\*s per mask weight from the image above, all in one job, then draw every prompt with
each and measure **Mask-IoU** (the shape kept) and **CLIP-T** (the prompt followed). The other settings are those
of *Learn one \\*s → Advanced*."""
EDIT_METRICS_LABEL = ("Metrics: Mask-IoU to the input mask (shape kept), "
                      "CLIP-T to the prompt without *s (prompt followed)")
EXAMPLE_PROMPTS = (  # the Edit section's first prompts
    "a leopard-print chair in the shape of *s",
    "a red chair in the shape of *s",
    "a photo of chair in the shape of *s",
)
MASK_WEIGHT_HELP = ("Higher: the outline of *s follows the mask more faithfully, but edits get less freedom; "
                    "0 is plain textual inversion, 0.1 was the best trade-off.")
APPEARANCE_CHOICES = [("the photo and re-drawn looks (shape, not look)", "varied"),
                      ("the photo alone (the research's form)", "photo")]


def build_demo(backend: Backend, defaults: InversionConfig | None = None) -> gr.Blocks:
    """The Blocks app for `backend`; `defaults` pre-fill the inversion settings."""
    d = defaults or InversionConfig()
    h = Handlers(backend)
    limits = backend.limits
    # Gradio's own cache of served files is emptied of files older than a day, every hour.
    with gr.Blocks(title="ShapeInversion", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(INTRO)
        model_status = gr.Markdown(backend.worker.status_line(), elem_id="model-status")
        model_timer = gr.Timer(1.0, active=True)
        # Listed when opened (each thumbnail is a served copy), not on every page load.
        with gr.Accordion("My runs (the jobs and sweeps started in this browser)", open=False,
                          elem_id="my-runs") as my_runs:
            runs_note = gr.Markdown(elem_id="runs-note")
            runs = gr.Gallery(label="Click one to open it", columns=6, height="auto", object_fit="contain",
                              allow_preview=False, elem_id="runs-gallery")
            refresh_runs = gr.Button("Refresh", size="sm", elem_id="refresh-runs")
        run_ids = gr.State([])  # the ids behind the gallery's pictures, in its order
        opened = gr.State("")  # the job or sweep opened from the address bar or My runs, to restore on the form
        shared = gr.State("")  # a read-only link's secret from the address bar (?share=): that job is shown
        restored = gr.State(False)  # a job's photo was just restored: its change event keeps the job's mask

        gr.Markdown("## 1. Image")
        with gr.Row():
            with gr.Column():
                image = checked_image(label="Photo of one chair", type="filepath", image_mode=None,
                                     sources=["upload", "clipboard"], elem_id="image")
                examples = example_images()
                if examples:
                    gr.Examples(examples=[[path] for path in examples], inputs=[image], label="Examples")
            with gr.Column(elem_id="mask-column"):
                overlay = gr.Image(label="Mask (tinted): click the chair to pick it", interactive=False,
                                   elem_id="overlay")
                click_mode = gr.Radio(list(CLICK_MODES), value=CLICK_MODES[0], label="A click on the picture adds",
                                      elem_id="click-mode")
                with gr.Row():
                    points = gr.Textbox("", label="Object points (x,y; x,y)", max_lines=1, elem_id="mask-points")
                    background_points = gr.Textbox("", label="Background points", max_lines=1,
                                                   elem_id="mask-background-points")
                    box = gr.Textbox("", label="Box (x0,y0,x1,y1)", max_lines=1, elem_id="mask-box")
                    clear_clicks = gr.Button("Clear", size="sm", scale=0, elem_id="clear-clicks")
                mask_note = gr.Markdown(label="Mask method", elem_id="mask-note")
                corner = gr.State(None)  # the first corner of a box being clicked
        with gr.Accordion("Correct the mask", open=False, elem_id="correct-mask") as correct_mask:
            with gr.Row():
                mask_editor = gr.ImageEditor(
                    label="Paint orange to add to the object, erase to remove", type="pil", image_mode="RGBA",
                    brush=gr.Brush(colors=[("#ff7800", 0.6)], default_color=("#ff7800", 0.6), color_mode="fixed"),
                    eraser=gr.Eraser(), sources=[], layers=False, transforms=[], format="png", elem_id="mask-editor",
                )
                mask_upload = checked_image(label="... or upload a mask (white object on black)", type="filepath",
                                           image_mode=None, sources=["upload"], elem_id="mask-upload")
        mask = gr.Image(label="Mask", type="filepath", image_mode=None, format="png", visible=False, elem_id="mask")

        with gr.Tabs(elem_id="views") as views:
            with gr.Tab("Learn one *s", id="learn"):
                gr.Markdown("## 2. Learn the shape")
                with gr.Row():
                    mask_weight = gr.Slider(0, 1, value=d.mask_weight, step=0.01, label="Mask weight",
                                            info=MASK_WEIGHT_HELP, elem_id="mask-weight")
                    steps = gr.Number(d.steps, label="Steps", precision=0, minimum=1, elem_id="steps",
                                      info=f"500 in the research notes; at most {limits.max_steps} here")
                with gr.Accordion("Advanced", open=False):
                    with gr.Row():
                        class_word = gr.Textbox(d.class_word, label="Class word ({cls} in the template)",
                                                info="what the object is: 'chair' in 'a photo of chair ...'",
                                                elem_id="class-word")
                        initializer = gr.Textbox(d.initializer, label="Initializer word",
                                                 info="*s starts as this word; auto: the shape word that best "
                                                 "explains the photo", elem_id="initializer")
                        num_vectors = gr.Number(d.num_vectors, label="Vectors per *s", precision=0, minimum=1,
                                                maximum=16, info="more: *s can hold more detail, learns slower")
                        learning_rate = gr.Number(d.learning_rate, label="Learning rate", minimum=0,
                                                  info="how far *s moves per step")
                    with gr.Row():
                        batch_size = gr.Number(d.batch_size, label="Timesteps per step", precision=0, minimum=1,
                                               maximum=64, info="noise levels per step: steadier, slower steps")
                        resolution = gr.Slider(64, 1024, value=d.resolution, step=64, label="Resolution",
                                               info="pixels the model sees; the model's own size is best",
                                               elem_id="resolution")
                        seed = gr.Number(d.seed, label="Seed", precision=0, minimum=0, info="same seed, same run")
                        checkpoint_every = gr.Number(d.checkpoint_every, label="Checkpoint every (steps)", precision=0,
                                                     minimum=1, info="saved state: a preview, and where Resume starts",
                                                     elem_id="checkpoint-every")
                    appearance = gr.Radio(APPEARANCE_CHOICES, value=d.appearance, label="Training views",
                                          info="re-drawn looks, each named, leave *s only the shape to learn",
                                          elem_id="appearance")
                    with gr.Row():
                        map_resolution = gr.Dropdown([8, 16, 32, 64], value=d.map_resolution,
                                                     label="Attention map grid",
                                                     info="side of the grid the map and mask are compared on")
                        attention_layers = gr.Dropdown(list(ATTENTION_LAYER_CHOICES), value=d.attention_layers,
                                                       label="Attention layers",
                                                       info="which cross-attention layers make the map")
                        map_norm = gr.Dropdown(list(MAP_NORMS), value=d.map_norm, label="Map normalisation",
                                             info="max: map divided by its peak (Break-A-Scene)")
                        init_reg = gr.Number(d.init_reg, label="Pull toward the initializer", minimum=0,
                                             info="keeps *s near its starting word (E4T); 0: off")
                    with gr.Row():
                        attention_res = gr.Dropdown(["all", "16", "16,32", "8", "32", "64"], value=d.attention_res,
                                                    allow_custom_value=True, label="Map layers by grid side",
                                                    info="16: Break-A-Scene's 16x16 layers (at 512 px)",
                                                    elem_id="attention-res")
                        mask_form = gr.Radio(list(MASK_FORMS), value=d.mask_form, label="Mask term",
                                             info="mse: map toward the mask; outside: only attention outside it",
                                             elem_id="mask-form")
                        background_weight = gr.Slider(0, 1, value=d.background_weight, step=0.05,
                                                      label="Background weight in the denoising loss",
                                                      info="1: whole image (research); 0: object only",
                                                      elem_id="background-weight")
                    with gr.Row():
                        tune = gr.Radio(list(TUNE_CHOICES), value=d.tune, label="Weight offsets",
                                        info="lora: after *s, also train low-rank cross-attention key/value updates",
                                        elem_id="tune")
                        lora_rank = gr.Number(d.lora_rank, label="LoRA rank", precision=0, minimum=1, maximum=128,
                                              info="size of the weight offsets")
                        lora_steps = gr.Number(d.lora_steps, label="LoRA steps", precision=0, minimum=1,
                                               info="steps of the LoRA phase", elem_id="lora-steps")
                        lora_lr = gr.Number(d.lora_lr, label="LoRA learning rate", minimum=0,
                                            info="step size of the LoRA phase")
                        name = gr.Textbox("", label="File name (NAME.safetensors)",
                                          info="empty: from the photo's file name", elem_id="concept-name")
                preview_prompt = gr.Textbox(d.preview_prompt, placeholder=d.prompt(), label="Preview prompt (use *s)",
                                            info="drawn at each checkpoint while *s is learned; empty: the training "
                                                 "prompt (the template)", max_lines=1, elem_id="preview-prompt")
                start = gr.Button("Start learning", variant="primary", elem_id="start")
                estimate = gr.Markdown(elem_id="estimate")

                gr.Markdown("## 3. Progress")
                with gr.Row():
                    job_id = gr.Textbox(label="Job id (Enter shows another job)", elem_id="job-id", scale=1)
                    job_headline = gr.Markdown(label="Job status", elem_id="job-status")
                progress = gr.HTML(label="Progress", elem_id="progress")
                losses = gr.Markdown(label="Loss terms", elem_id="losses")
                with gr.Row():  # each term on its own scale: they differ by an order of magnitude
                    denoising_chart = gr.LinePlot(x="step", y="loss", color="curve", title="Denoising loss",
                                                  color_map=DENOISING_COLOURS, height=220, elem_id="denoising-chart")
                    mask_chart = gr.LinePlot(x="step", y="loss", color="curve", title="Mask loss",
                                             color_map=MASK_COLOURS, height=220, elem_id="mask-chart")
                # The same curves as a picture: what API clients of job_status get.
                plot = gr.Image(label="Loss", visible=False, interactive=False, elem_id="loss-plot")
                with gr.Row():
                    # The attention figure carries its own title.
                    preview = gr.Image(label="Preview (the preview prompt, latest checkpoint)", interactive=False,
                                       elem_id="preview")
                    attention = gr.Image(label="Attention of *s beside the mask", show_label=False, interactive=False,
                                         elem_id="attention")
                with gr.Row():
                    cancel = gr.Button("Cancel", variant="stop", visible=False, elem_id="cancel")
                    resume = gr.Button("Resume from the last checkpoint", visible=False, elem_id="resume")
                # A second secret per job: its holder sees the job and changes nothing (shown with a single job).
                with gr.Row(visible=False, elem_id="share-row") as share_row:
                    share = gr.Button("Share a read-only link", size="sm", scale=0, elem_id="share")
                    unshare = gr.Button("Stop sharing", size="sm", scale=0, elem_id="unshare")
                    share_link = gr.Textbox(label="Read-only link", interactive=False, max_lines=1, buttons=["copy"],
                                            elem_id="share-link")
                share_note = gr.Markdown(elem_id="share-note")
                share_token = gr.Textbox(visible=False, label="Share secret", elem_id="share-token")
            with gr.Tab("Compare weights", id="compare", elem_id="compare-tab"):
                gr.Markdown(COMPARE_HELP)
                with gr.Row():
                    sweep_weights = gr.Textbox(", ".join(f"{w:g}" for w in DEFAULT_WEIGHTS), label="Mask weights",
                                               info=f"comma-separated, 0 to 1; at most {limits.max_weights}",
                                               elem_id="sweep-weights", scale=2)
                    sweep_steps = gr.Number(d.steps, label="Steps", precision=0, minimum=1, elem_id="sweep-steps")
                    sweep_images = gr.Slider(1, 4, value=1, step=1, label="Images per prompt", elem_id="sweep-images")
                    sweep_sample_steps = gr.Slider(1, 100, value=25, step=1, label="Sampling steps",
                                                   elem_id="sweep-sample-steps")
                    sweep_guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance", elem_id="sweep-guidance")
                sweep_prompts = gr.Textbox("\n".join(DEFAULT_PROMPTS), lines=3, label="Prompts, one per line (use *s)",
                                           elem_id="sweep-prompts")
                start_sweep = gr.Button("Start the sweep", variant="primary", elem_id="start-sweep")
                sweep_estimate = gr.Markdown(elem_id="sweep-estimate")
                with gr.Row():
                    sweep_id = gr.Textbox(label="Sweep id (Enter shows another sweep)", elem_id="sweep-id", scale=1)
                    sweep_headline = gr.Markdown(label="Sweep status", elem_id="sweep-status")
                sweep_progress = gr.HTML(label="Progress", elem_id="sweep-progress")
                sweep_losses = gr.Markdown(label="Loss terms per weight", elem_id="sweep-losses")
                with gr.Row():
                    cancel_sweep = gr.Button("Cancel", variant="stop", visible=False, elem_id="cancel-sweep")
                    resume_sweep = gr.Button("Resume from the last checkpoint", visible=False,
                                             elem_id="resume-sweep")
                with gr.Row():
                    # The grid carries its row and column titles; a label over it would hide the column titles.
                    sweep_grid = gr.Image(label="Rows: weights; columns: prompts", show_label=False, interactive=False,
                                          elem_id="sweep-grid")
                    sweep_chart = gr.ScatterPlot(x="clip_t", y="mask_iou", color="weight", y_title="Mask-IoU",
                                                 title="Trade-off per weight", height=320, elem_id="sweep-chart")
                # The same as a picture (tradeoff.png): what API clients of sweep_results get.
                sweep_tradeoff = gr.Image(label="Trade-off", visible=False, interactive=False, elem_id="sweep-tradeoff")
                sweep_table = gr.Dataframe(headers=list(METRICS_COLUMNS), label="metrics.csv", interactive=False,
                                           elem_id="sweep-table")
                with gr.Row():
                    # Custom values: another session of the same owner may name a concept this one never listed.
                    sweep_concept = gr.Dropdown([], label="Weight", info="each weight learned its own *s",
                                                allow_custom_value=True, elem_id="sweep-concept")
                    use_concept = gr.Button("Edit with this *s", elem_id="use-concept")
                with gr.Row():
                    sweep_downloads = gr.File(label="Downloads: each weight's *s, the grid, the plot, metrics.csv",
                                              file_count="multiple", interactive=False, elem_id="sweep-downloads")
                    sweep_zip = gr.File(label="The whole sweep", interactive=False, elem_id="sweep-zip")
                zip_sweep = gr.Button("Zip the whole sweep", size="sm", elem_id="zip-sweep")
        status_json = gr.JSON(label="Status", visible=False, elem_id="status-json")
        # What Start returns goes here first (hidden: a refused Start marks no visible box with "Error"), then to
        # the id boxes once it succeeded.
        started_id = gr.Textbox(visible=False, label="Job id", elem_id="started-id")
        started_sweep = gr.Textbox(visible=False, label="Sweep id", elem_id="started-sweep")
        # The start endpoints' "poll now" for programs; the page starts its polling once the id box holds the id.
        started_timer = gr.Timer(1.0, active=False)
        timer = gr.Timer(1.0, active=False)  # polls job_status while a job is shown
        sweep_json = gr.JSON(label="Sweep status", visible=False, elem_id="sweep-json")
        sweep_timer = gr.Timer(1.0, active=False)  # polls sweep_results while a sweep is shown

        gr.Markdown("## 4. Edit", elem_id="edit")
        edit_concept = gr.Textbox(label="Concept: a job id, or SWEEP_ID/weight_W from Compare weights",
                                  info="follows the job above; 'Edit with this *s' puts a sweep's here",
                                  elem_id="edit-concept")
        prompts = gr.Textbox("\n".join(EXAMPLE_PROMPTS), lines=3, label="Prompts, one per line (use *s)",
                             elem_id="prompts")
        with gr.Row():
            num_images = gr.Slider(1, limits.max_images, value=1, step=1, label="Images per prompt",
                                   elem_id="num-images")
            gen_seed = gr.Number(0, label="Seed", precision=0, minimum=0, elem_id="gen-seed")
            gen_steps = gr.Slider(1, 100, value=25, step=1, label="Sampling steps", elem_id="gen-steps")
            guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance", elem_id="guidance")
        with gr.Row():
            shape_steps = gr.Slider(0, 1, value=GenerationConfig.shape_steps, step=0.05,
                                    label="Shape steps: share of sampling steps the *s prompt conditions",
                                    info="the rest use the prompt without its *s phrase: shape early, look from the "
                                         "edit", elem_id="shape-steps")
            shape_order = gr.Radio(list(SHAPE_ORDERS), value=GenerationConfig.shape_order,
                                   label="*s prompt takes the steps", elem_id="shape-order")
        with gr.Row():
            concept_file = gr.File(label="Or edit with a concept you have (learned_embeds or NAME.safetensors)",
                                   file_types=[".safetensors"], type="filepath", elem_id="concept-file")
            downloads = gr.File(label="Downloads: the concept", file_count="multiple", interactive=False,
                                elem_id="downloads")
            with gr.Column():
                run_zip = gr.File(label="The whole run: photo, mask, settings, log, every edit so far",
                                  interactive=False, elem_id="run-zip")
                zip_run = gr.Button("Zip the whole run", size="sm", elem_id="zip-run")
        generate = gr.Button("Generate", variant="primary", elem_id="generate")
        edit_note = gr.Markdown(label="Saved to", elem_id="edit-note")
        gallery = gr.Gallery(label="Results", columns=4, elem_id="gallery")
        edit_metrics = gr.Dataframe(headers=EDIT_METRICS_COLUMNS, label=EDIT_METRICS_LABEL, interactive=False,
                                    elem_id="edit-metrics")
        metrics_note = gr.Markdown(elem_id="metrics-note")
        edits = gr.State([])  # this session's last images, for edit_metrics
        # This browser's secret (set from localStorage on load): only its holder sees and controls its jobs.
        owner = gr.Textbox(visible=False, label="Owner token", elem_id="owner")
        gr.Markdown(limits.describe() + " Programs can use the same endpoints: see *Use via API* below.")

        # --- events -----------------------------------------------------------------------------
        restored_outputs = [restored, image, overlay, mask_editor, mask, mask_note, mask_weight, steps, class_word,
                            initializer, num_vectors, learning_rate, batch_size, resolution, seed, map_resolution,
                            attention_layers, map_norm, init_reg, checkpoint_every, attention_res, mask_form,
                            background_weight, tune, lora_rank, lora_steps, lora_lr, name, preview_prompt,
                            appearance, sweep_weights,
                            sweep_prompts, sweep_steps, sweep_images, sweep_sample_steps, sweep_guidance, gallery,
                            prompts, edit_concept]
        status_outputs = [status_json, job_headline, progress, losses, plot, preview, attention, downloads, timer]
        mask_outputs, prompt_inputs = [overlay, mask_editor, mask, mask_note], [image, points, background_points, box]
        quiet = {"api_visibility": "private", "show_progress": "hidden"}  # page-only events, no spinner on outputs
        photo_mask = image.change(h.new_photo, [restored], [points, background_points, box, corner],
                                  api_name="new_photo", **quiet).then(
            # Raw values (no preprocess): only whether there is a photo matters, and a broken one is extract_mask's.
            h.mask_pending, [*prompt_inputs, restored], [mask_note], api_name="mask_pending", preprocess=False,
            **quiet).then(
            h.extract_mask, [*prompt_inputs, restored], mask_outputs, api_name="extract_mask")
        # A photo that cannot be used: the toast says why; no stale "Finding the object ..." or picture stays.
        photo_mask.failure(h.mask_failed, None, [image, *mask_outputs], api_name="mask_failed",
                           api_visibility="private", show_progress="minimal")  # its end clears the error marks
        photo_mask.then(lambda: False, None, [restored], api_name="restore_done", api_visibility="private")
        # Nothing found: the photo is shown to click on, and the painter opens on it.
        photo_mask.success(h.open_painter, [image, mask], [correct_mask], api_name="open_painter", **quiet)
        overlay.select(h.click_photo, [image, points, background_points, box, click_mode, corner],
                       [points, background_points, box, corner, *mask_outputs], api_name="click_photo",
                       api_visibility="private")
        gr.on([points.submit, background_points.submit, box.submit], h.extract_mask, prompt_inputs, mask_outputs,
              api_name="extract_mask_typed", api_visibility="private")
        clear_clicks.click(h.new_photo, None, [points, background_points, box, corner], api_name="clear_clicks",
                           api_visibility="private").then(
            h.extract_mask, prompt_inputs, mask_outputs, api_name="extract_mask_cleared", api_visibility="private")
        mask_editor.input(h.edit_mask, [image, mask_editor, mask], [overlay, mask], api_name="edit_mask",
                          api_visibility="private", show_progress="hidden")
        mask_uploaded = mask_upload.upload(h.upload_mask, [image, mask_upload], mask_outputs, api_name="upload_mask",
                                           api_visibility="private")
        # A mask that cannot be used (the toast says why) leaves the upload box; the mask in use stays.
        mask_uploaded.failure(h.mask_upload_failed, None, [mask_upload, *mask_outputs], api_name="mask_upload_failed",
                              api_visibility="private", show_progress="minimal")  # its end clears the error marks
        job_controls = [start, cancel, resume]
        run_list = [runs, run_ids, runs_note]
        started = start.click(h.lock_start, None, [start], queue=False, api_name="lock_start",
                              api_visibility="private").then(
            h.start_inversion,
            [image, mask, mask_weight, steps, class_word, initializer, num_vectors, learning_rate, batch_size,
             resolution, seed, map_resolution, attention_layers, map_norm, init_reg, checkpoint_every,
             attention_res, mask_form, background_weight, tune, lora_rank, lora_steps, lora_lr, name, owner,
             preview_prompt, appearance],
            [started_id, status_json, started_timer, owner], api_name="start_inversion", show_progress="hidden")
        # A refusal (the message is the toast) gives Start back at once, as the shown job allows; the form stays.
        started.failure(h.job_controls, [status_json], job_controls, api_name="refused_controls",
                        api_visibility="private")
        started.success(Handlers.show_started, [started_id], [job_id, timer], api_name="show_started",
                        api_visibility="private").then(
            h.job_controls, [status_json], job_controls, api_name="start_controls", api_visibility="private").then(
            None, [job_id], None, js=JOB_LINK_JS).then(
            h.my_runs, [owner], run_list, api_name="runs_after_start", **quiet)
        status_json.change(h.job_controls, [status_json], job_controls, api_name="job_controls",
                           api_visibility="private", show_progress="hidden")
        resume.click(h.resume_job, [job_id, owner], [status_json, job_headline, timer], api_name="resume_job")
        estimate_inputs = [steps, resolution, batch_size, tune, lora_steps]
        # Also when a shown job changes state: a job that ends is a new measurement of this server's pace.
        # Raw values (preprocess=False): a value out of range is said in the estimate's line, not as a second
        # toast beside the one Start gives.
        gr.on([steps.change, resolution.change, batch_size.change, tune.change, lora_steps.change, demo.load,
               status_json.change], h.duration_estimate, estimate_inputs, [estimate], api_name="duration_estimate",
              api_visibility="private", show_progress="hidden", preprocess=False)
        gr.on([sweep_weights.change, sweep_steps.change, resolution.change, batch_size.change, sweep_prompts.change,
               sweep_images.change, sweep_sample_steps.change, demo.load, sweep_json.change], h.sweep_duration,
              [sweep_weights, sweep_steps, resolution, batch_size, sweep_prompts, sweep_images, sweep_sample_steps],
              [sweep_estimate], api_name="sweep_duration", api_visibility="private", show_progress="hidden",
              preprocess=False)
        job_id.submit(h.job_status, [job_id, owner], status_outputs, api_name="job_status", concurrency_limit=None
                      ).then(h.restore, [job_id, owner], restored_outputs, api_name="restore_job", **quiet)
        timer.tick(h.poll_job, [job_id, owner], status_outputs, api_name="poll_job", api_visibility="private",
                   concurrency_limit=None, show_progress="hidden")
        job_id.submit(None, [job_id], None, js=JOB_LINK_JS)
        cancel.click(h.cancel_job, [job_id, owner], [status_json, job_headline], api_name="cancel_job").then(
            h.keep_polling, None, [timer], api_name="cancel_keeps_polling", api_visibility="private", queue=False)
        share.click(h.share_job, [job_id, owner], [share_token, share_note], api_name="share_job").success(
            None, [share_token], [share_link], js=SHARE_LINK_JS)
        unshare.click(h.unshare_job, [job_id, owner], [share_token, share_link, share_note], api_name="unshare_job")
        status_json.change(h.share_controls, [status_json], [share_row], api_name="share_controls", **quiet)
        status_json.change(h.loss_charts, [status_json, owner], [denoising_chart, mask_chart], api_name="loss_charts",
                           show_progress="hidden")
        job_id.change(h.forget_share, None, [share_token, share_link, share_note], api_name="forget_share", **quiet)
        job_id.change(None, [job_id], [edit_concept], js="(id) => id", api_name="follow_job",
                      api_visibility="private")
        generated = generate.click(h.generate, [edit_concept, concept_file, prompts, num_images, gen_seed, gen_steps,
                                                guidance, shape_steps, shape_order, owner],
                                   [gallery, edit_note, edits], api_name="generate")
        generated.success(h.edit_metrics, [edits, owner], [edit_metrics, metrics_note], api_name="edit_metrics")
        # A refused Generate (the toast says why) leaves the images shown before it, without an Error mark.
        generated.failure(h.keep_gallery, None, [gallery, edit_note], api_name="keep_gallery",
                          api_visibility="private", show_progress="minimal")  # its end clears the error marks
        zip_run.click(h.run_zip, [job_id, owner], [run_zip], api_name="run_zip")

        sweep_outputs = [sweep_json, sweep_headline, sweep_progress, sweep_losses, sweep_grid, sweep_tradeoff,
                         sweep_table, sweep_concept, sweep_timer]
        sweep_started = start_sweep.click(h.lock_start, None, [start_sweep], queue=False, api_name="lock_start_sweep",
                                          api_visibility="private").then(
            h.start_sweep,
            [image, mask, sweep_weights, sweep_prompts, sweep_steps, sweep_images, sweep_sample_steps, sweep_guidance,
             class_word, initializer, num_vectors, learning_rate, batch_size, resolution, seed, map_resolution,
             attention_layers, map_norm, init_reg, checkpoint_every, attention_res, mask_form, background_weight,
             owner, appearance, tune, lora_rank, lora_steps, lora_lr],
            [started_sweep, sweep_json, started_timer, owner], api_name="start_sweep", show_progress="hidden")
        sweep_started.failure(h.job_controls, [sweep_json], [start_sweep, cancel_sweep, resume_sweep],
                              api_name="refused_sweep_controls", api_visibility="private")
        sweep_started.success(Handlers.show_started, [started_sweep], [sweep_id, sweep_timer],
                              api_name="show_started_sweep", api_visibility="private").then(
            h.job_controls, [sweep_json], [start_sweep, cancel_sweep, resume_sweep], api_name="start_sweep_controls",
            api_visibility="private").then(
            None, [sweep_id], None, js=JOB_LINK_JS).then(
            h.my_runs, [owner], run_list, api_name="runs_after_sweep", **quiet)
        sweep_id.submit(h.sweep_results, [sweep_id, owner], sweep_outputs, api_name="sweep_results",
                        concurrency_limit=None).then(h.restore, [sweep_id, owner], restored_outputs,
                                                     api_name="restore_sweep", **quiet)
        sweep_json.change(h.job_controls, [sweep_json], [start_sweep, cancel_sweep, resume_sweep],
                          api_name="sweep_controls", api_visibility="private", show_progress="hidden").then(
            h.sweep_files, [sweep_json, owner], [sweep_downloads], api_name="sweep_files", api_visibility="private",
            show_progress="hidden")
        sweep_json.change(h.tradeoff_chart, [sweep_json, owner], [sweep_chart], api_name="tradeoff_chart",
                          show_progress="hidden")
        resume_sweep.click(h.resume_job, [sweep_id, owner], [sweep_json, sweep_headline, sweep_timer],
                           api_name="resume_sweep")
        zip_sweep.click(h.run_zip, [sweep_id, owner], [sweep_zip], api_name="sweep_zip")
        sweep_id.submit(None, [sweep_id], None, js=JOB_LINK_JS)
        sweep_timer.tick(h.poll_sweep, [sweep_id, owner], sweep_outputs, api_name="poll_sweep",
                         api_visibility="private", concurrency_limit=None, show_progress="hidden")
        cancel_sweep.click(h.cancel_job, [sweep_id, owner], [sweep_json, sweep_headline], api_name="cancel_sweep"
                           ).then(h.keep_polling, None, [sweep_timer], api_name="cancel_sweep_keeps_polling",
                                  api_visibility="private", queue=False)
        use_concept.click(h.use_sweep_concept, [sweep_concept, owner], [edit_concept], api_name="use_sweep_concept",
                          ).success(None, None, None, js=SCROLL_TO_EDIT)
        model_timer.tick(h.model_status, None, [model_status, model_timer], api_name="model_status",
                         show_progress="hidden")
        demo.load(None, None, [owner], js=OWNER_JS, api_name="owner", api_visibility="private").then(
            h.on_load, [owner], [job_id, timer, job_headline, sweep_id, sweep_timer, views, opened, shared],
            api_name="on_load", **quiet).then(
            h.restore, [opened, owner], restored_outputs, api_name="restore_opened", **quiet).then(
            h.open_shared, [shared], [*restored_outputs, job_headline, downloads], api_name="open_shared", **quiet)
        my_runs.expand(h.my_runs, [owner], run_list, api_name="my_runs", **quiet)
        refresh_runs.click(h.my_runs, [owner], run_list, api_name="refresh_runs", api_visibility="private")
        runs.select(h.open_run, [run_ids, owner], [job_id, timer, sweep_id, sweep_timer, views, opened],
                    api_name="open_run", **quiet).then(
            h.restore, [opened, owner], restored_outputs, api_name="restore_run", **quiet)
    guard_inputs(demo)
    return demo
