"""The `shapeinv` command: mask, invert, generate, sweep, serve (the web app).

Errors a user can fix are printed as one line (`error: ...`) with exit code 2: bad settings and
files (`ShapeInvError`) and the file system refusing (a missing or unwritable path, a full disk).
Every setting and output folder is checked before a model is loaded. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
from pathlib import Path

from .config import DEFAULT_MODEL, GenerationConfig, InversionConfig
from .errors import InputError, ShapeInvError

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:  # the web app parses its own flags (same as `python -m app`)
        from app.__main__ import main as serve

        return serve(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except ShapeInvError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as error:
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return EXIT_USAGE


def os_error_message(error: OSError) -> str:
    """One line for a file-system refusal: what, where, and what to do."""
    where = f" ({error.filename})" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"The disk is full{where}. Free some space and run the same command again: "
                "a run folder resumes from its last checkpoint.")
    return f"{error.strerror or error}{where}. Check the path and that you may write there."


def output_folder(path: Path, flag: str = "-o") -> Path:
    """`path` as a folder to write into, created now, so a bad one fails before any work is done."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{flag} {path} is a file; give a folder (it is created if missing).")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"Cannot create the folder {path} ({error.strerror}). Choose a folder you can write to "
                         f"with {flag}.") from error
    if not os.access(path, os.W_OK):
        raise InputError(f"The folder {path} is not writable. Choose another one with {flag}.")
    return path


def output_image(path: Path, flag: str = "-o") -> Path:
    """`path` as a PNG/JPEG/WebP file to write, its folder created now."""
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise InputError(f"{flag} {path} must end in .png (or .jpg, .webp): it names the image file to write.")
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name such as {path / 'mask.png'}.")
    output_folder(path.parent, flag)
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shapeinv",
        description="Learn an object's shape from one photo as a pseudo-word *s for Stable Diffusion.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    mask = commands.add_parser("mask", help="extract the object mask of an image")
    mask.add_argument("image", type=Path)
    mask.add_argument("-o", "--output", type=Path, required=True, help="where to write the mask PNG")
    _add_mask_options(mask)
    mask.add_argument("--overlay", type=Path, help="also write the image with the mask tinted, for checking")
    mask.set_defaults(run=run_mask)

    invert = commands.add_parser("invert", help="learn *s from an image (resumes a run folder with checkpoints)")
    invert.add_argument("image", type=Path)
    invert.add_argument("--mask", type=Path, help="object mask (white object on black); extracted if omitted")
    invert.add_argument("-o", "--output", type=Path, required=True, metavar="RUN_DIR")
    _add_model_options(invert)
    _add_inversion_options(invert)
    _add_mask_options(invert)
    invert.set_defaults(run=run_invert)

    generate = commands.add_parser("generate", help="images from prompts that use a learned *s")
    generate.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder (or learned_embeds file)")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT")
    generate.add_argument("-o", "--output", type=Path, required=True, metavar="OUT_DIR")
    generate.add_argument("--model", help="model to use (default: the one the concept was learned with)")
    generate.add_argument("--model-config", help="for a single .safetensors checkpoint: its base model's configs")
    generate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    generate.add_argument("--dtype", default="auto", help="auto, fp32, fp16 or bf16 (default: auto)")
    _add_speed_options(generate)
    _add_generation_options(generate)
    generate.set_defaults(run=run_generate)

    sweep = commands.add_parser("sweep", help="learn *s for several mask weights and compare them")
    sweep.add_argument("image", type=Path)
    sweep.add_argument("--mask", type=Path, help="object mask; extracted if omitted")
    sweep.add_argument("-o", "--output", type=Path, required=True, metavar="SWEEP_DIR")
    sweep.add_argument("--weights", type=_weight_list, default="0,0.01,0.05,0.1,0.2,0.3,0.5,1.0",
                       help="comma-separated mask weights (default: %(default)s)")
    sweep.add_argument("--prompts", nargs="+", help="edit prompts using *s (default: the research notes' three)")
    sweep.add_argument("-n", "--num-images", type=int, default=1, help="images per prompt and seed (default: 1)")
    sweep.add_argument("--seeds", type=int, nargs="+", default=[0], help="generation seeds (default: 0)")
    sweep.add_argument("--sample-steps", type=int, default=GenerationConfig().steps, help="sampling steps")
    sweep.add_argument("--guidance", type=float, default=GenerationConfig().guidance, help="guidance scale")
    sweep.add_argument("--clip-model", default="openai/clip-vit-large-patch14",
                       help="CLIP for CLIP-T/CLIP-I: hub id, folder, 'tiny', or 'none' (default: %(default)s)")
    sweep.add_argument("--rows-per-pass", type=int,
                       help="cap on the UNet batch (weights x timesteps) per pass, if memory is short")
    _add_model_options(sweep)
    _add_inversion_options(sweep)
    _add_mask_options(sweep)
    sweep.set_defaults(run=run_sweep)

    commands.add_parser("serve", help="run the web app; same flags as `python -m app` (see `shapeinv serve -h`), "
                        "e.g. --engine ray [--ray-address ADDRESS] [--workers N] for Ray workers")
    return parser


def _weight_list(text: str) -> list[float]:
    try:
        weights = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers, e.g. 0,0.1,0.5") from None
    if not weights:
        raise argparse.ArgumentTypeError("no weights given; use e.g. 0,0.1,0.5")
    return weights


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="SD 1.x/2.x or SDXL: hub id, local diffusers folder, .safetensors file, or 'toy' / "
                        f"'tiny' / 'tiny-sdxl' (offline models) (default: {DEFAULT_MODEL})")
    parser.add_argument("--model-config", help="for a single .safetensors checkpoint: the base model's diffusers "
                        "folder or hub id holding its component configs (default: inferred, from the hub cache)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto, fp32, fp16 or bf16 (default: auto: bf16 on GPU)")
    _add_speed_options(parser)


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compile", dest="compile_unet", action="store_true",
                        help="torch.compile the UNet (GPU; the first steps are slow while it compiles)")
    parser.add_argument("--channels-last", action="store_true", help="UNet in channels-last memory layout (GPU)")
    parser.add_argument("--gradient-checkpointing", choices=("auto", "on", "off"), default="auto",
                        help="recompute the UNet's activations in the backward pass: less memory, about a third "
                        "slower; auto: on for SDXL on a GPU (1024 px inversion in 24 GB)")


def _add_inversion_options(parser: argparse.ArgumentParser) -> None:
    defaults = InversionConfig()
    add = parser.add_argument
    add("--mask-weight", type=float, default=defaults.mask_weight,
        help="weight of the attention-mask loss, 0 (plain textual inversion) to 1 (default: %(default)s)")
    add("--steps", type=int, default=defaults.steps, help="optimisation steps (default: %(default)s)")
    add("--lr", type=float, default=defaults.learning_rate, help="learning rate (default: %(default)s)")
    add("--batch", type=int, default=defaults.batch_size, help="timesteps per step (default: %(default)s)")
    add("--seed", type=int, default=defaults.seed, help="seed (default: %(default)s)")
    add("--resolution", type=int, default=None,
        help="training resolution (default: the model's native size, e.g. 512 for SD 1.5, 64 for toy)")
    add("--placeholder", default=defaults.placeholder, help="the learned word (default: %(default)s)")
    add("--initializer", default=defaults.initializer,
        help="word the vectors start from; 'auto': the shape word that best explains the photo, e.g. 'stool' "
             "(default: %(default)s)")
    add("--appearance", default=defaults.appearance, choices=["photo", "varied"],
        help="'varied': also learn from the photo re-drawn in named colours and patterns, so *s learns the shape and "
             "not the look; 'photo': the photo alone (research form) (default: %(default)s)")
    add("--research-form", action="store_true",
        help="learn as the research notes do: the photo alone (--appearance photo), *s started from the class "
             "word (--initializer CLASS_WORD); the defaults are the measured better form, see bench/RESULTS.md")
    add("--views", type=int, default=defaults.views,
        help="with --appearance varied: the photo plus this many minus one re-drawn views (default: %(default)s)")
    add("--probe-views", type=int, default=defaults.probe_views,
        help="with --initializer auto: how many views (the photo first) the word probe reads (default: %(default)s)")
    add("--class-word", default=defaults.class_word, help="class word in the template (default: %(default)s)")
    add("--template", default=defaults.template, help="training prompt (default: '%(default)s')")
    add("--num-vectors", type=int, default=defaults.num_vectors, help="vectors for *s (default: %(default)s)")
    add("--map-resolution", type=int, default=defaults.map_resolution, help="attention grid (default: %(default)s)")
    add("--attention-layers", default=defaults.attention_layers, choices=["all", "down", "mid", "up"],
        help="cross-attention layers whose maps are used (default: %(default)s)")
    add("--map-norm", default=defaults.map_norm, choices=["none", "max"],
        help="'none' (research form) or 'max' (divide the map by its max, as Break-A-Scene) (default: %(default)s)")
    add("--attention-res", default=defaults.attention_res, metavar="all|16|16,32",
        help="only layers with these grid sides at the training resolution feed the map, e.g. 16 as "
             "Break-A-Scene (default: %(default)s)")
    add("--mask-form", default=defaults.mask_form, choices=["mse", "outside"],
        help="'mse': map toward the mask (research form); 'outside': penalise only attention outside the mask, "
             "as MagiCapture (default: %(default)s)")
    add("--background-weight", type=float, default=defaults.background_weight,
        help="weight of background pixels in the denoising loss: 1 whole image (research form), 0 object only "
             "(Break-A-Scene) (default: %(default)s)")
    add("--balance-every", type=int, default=defaults.balance_every,
        help="steps between measurements of the mask/denoising gradient ratio, 0 never (default: %(default)s)")
    add("--tune", default=defaults.tune, choices=["none", "lora"],
        help="'lora': after the *s steps, also train low-rank cross-attention key/value updates (default: %(default)s)")
    add("--lora-rank", type=int, default=defaults.lora_rank, help="LoRA rank (default: %(default)s)")
    add("--lora-steps", type=int, default=defaults.lora_steps, help="steps of the LoRA phase (default: %(default)s)")
    add("--lora-lr", type=float, default=defaults.lora_lr, help="LoRA learning rate (default: %(default)s)")
    add("--name", help="file name of the concept for other tools, NAME.safetensors (default: from the photo's name)")
    add("--init-reg", type=float, default=defaults.init_reg,
        help="L2 pull toward the initializer embedding (default: %(default)s)")
    add("--attention-reg", type=float, default=defaults.attention_reg,
        help="AttnDreamBooth's attention regulariser: pull the mean and spread of *s's cross-attention maps toward "
             "the class word's, e.g. 1e-4 (0.01 outweighs the denoising loss); 0 is off (default: %(default)s)")
    add("--checkpoint-every", type=int, default=defaults.checkpoint_every,
        help="steps between checkpoints (default: %(default)s)")


def _add_mask_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", dest="mask_method", default="auto",
                        choices=["auto", "alpha", "sam", "rembg", "fallback"],
                        help="mask extraction: auto tries alpha, then (with prompts) SAM, then rembg, then a "
                             "weight-free fallback")
    parser.add_argument("--rembg-model", help="rembg model name (default: see README)")
    parser.add_argument("--point", action="append", metavar="X,Y",
                        help="a pixel on the object (x from the left, y from the top); repeat for more")
    parser.add_argument("--background-point", action="append", metavar="X,Y",
                        help="a pixel on the background, or on another object to leave out; repeatable")
    parser.add_argument("--box", metavar="X0,Y0,X1,Y1", help="a box around the object (two opposite corners)")


def mask_prompts(args: argparse.Namespace):
    """The --point/--background-point/--box options as `Prompts` (empty when none were given)."""
    from .masks import parse_prompts

    return parse_prompts(args.point, args.background_point, args.box)


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
    defaults = GenerationConfig()
    add = parser.add_argument
    add("-n", "--num-images", type=int, default=defaults.num_images, help="images per prompt (default: %(default)s)")
    add("--seed", type=int, default=defaults.seed, help="seed of the first image (default: %(default)s)")
    add("--steps", type=int, default=defaults.steps, help="sampling steps, DPM-Solver++ (default: %(default)s)")
    add("--guidance", type=float, default=defaults.guidance, help="guidance scale (default: %(default)s)")
    add("--negative", default=defaults.negative_prompt, help="negative prompt")
    add("--height", type=int, help="image height (default: the training resolution)")
    add("--width", type=int, help="image width (default: the training resolution)")
    add("--batch", type=int, default=defaults.batch_size, help="images per UNet batch (default: %(default)s)")
    add("--shape-steps", type=float, default=defaults.shape_steps, metavar="F",
        help="fraction of the sampling steps the prompt with *s conditions; the rest use the prompt without its "
             "*s phrase (default: %(default)s: all)")
    add("--shape-order", default=defaults.shape_order, choices=["first", "last"],
        help="whether the *s prompt takes the first steps (shape early) or the last (default: %(default)s)")
    add("--layout-steps", type=float, default=defaults.layout_steps, metavar="F",
        help="fraction of the first sampling steps in which each edit reuses the self-attention maps of the "
             "reconstruction ('a photo of chair in the shape of *s', same seed), Prompt-to-Prompt style; 0 is off "
             "(default: %(default)s)")
    add("--shape-guidance", type=float, default=defaults.shape_guidance, metavar="S",
        help="a second guidance term toward what *s adds to the prompt (the prompt against the same prompt without "
             "its *s phrase), Composable Diffusion style; 0 is off (default: %(default)s)")


def inversion_config(args: argparse.Namespace) -> InversionConfig:
    from .method.exports import file_name

    config = InversionConfig(
        placeholder=args.placeholder, initializer=args.initializer, class_word=args.class_word,
        template=args.template, num_vectors=args.num_vectors, mask_weight=args.mask_weight,
        map_resolution=args.map_resolution, attention_layers=args.attention_layers, map_norm=args.map_norm,
        init_reg=args.init_reg, attention_reg=args.attention_reg, learning_rate=args.lr, steps=args.steps,
        batch_size=args.batch, seed=args.seed,
        resolution=args.resolution or InversionConfig.resolution, checkpoint_every=args.checkpoint_every,
        attention_res=args.attention_res, mask_form=args.mask_form, background_weight=args.background_weight,
        balance_every=args.balance_every, tune=args.tune, lora_rank=args.lora_rank, lora_steps=args.lora_steps,
        lora_lr=args.lora_lr, name=file_name(args.name, args.image, (args.class_word, args.initializer)),
        appearance=args.appearance, views=args.views, probe_views=args.probe_views,
    )
    return (config.research_form() if args.research_form else config).validate()


def check_model_settings(config: InversionConfig, args: argparse.Namespace) -> None:
    """What the model's config files rule out (grids, resolution, LoRA rank), refused before any weight loads."""
    from dataclasses import replace

    from .models.loading import TINY, TINY_SDXL, check_for_model, model_layout

    if args.model in (TINY, TINY_SDXL):  # the random test models' files are written on first use, as a load would
        from .models.tiny import build_tiny_pipeline, build_tiny_sdxl_pipeline

        build_tiny_pipeline() if args.model == TINY else build_tiny_sdxl_pipeline()
    layout = model_layout(args.model, args.model_config)
    if layout is not None and args.resolution is None:
        config = replace(config, resolution=layout.native_resolution)
    check_for_model(config, layout)


def at_native_resolution(config: InversionConfig, args: argparse.Namespace, model) -> InversionConfig:
    """Without --resolution, learn at the loaded model's native image size (read from its UNet and VAE)."""
    from dataclasses import replace

    from .models.loading import native_resolution

    if args.resolution is not None:
        return config
    return replace(config, resolution=native_resolution(model.pipe)).validate()


# --- mask ---------------------------------------------------------------------------------

def run_mask(args: argparse.Namespace) -> int:
    from .files.images import open_image
    from .masks import extract_mask, overlay

    output_image(args.output)
    if args.overlay:
        output_image(args.overlay, "--overlay")
    image = open_image(args.image)
    result = extract_mask(image, method=args.mask_method, rembg_model=args.rembg_model, prompts=mask_prompts(args))
    result.mask.save(args.output)
    if args.overlay:
        overlay(image, result.mask).save(args.overlay)
    print(f"mask ({result.method}) -> {args.output}")
    if result.note:
        print(f"note: {result.note}")
    return 0


def image_and_mask(args: argparse.Namespace, run_dir: Path):
    """The image, and the mask: --mask, else the run's own mask when resuming, else extracted."""
    from .files.images import check_object_size, open_image
    from .masks import extract_mask, load_mask

    image = open_image(args.image)
    if args.mask is not None:
        raw = open_image(args.mask)
        if raw.size != image.size:
            print(f"note: the mask is {raw.size[0]}x{raw.size[1]}, the image {image.size[0]}x{image.size[1]}; "
                  "the mask was resized to the image.")
        return image, check_object_size(load_mask(raw, image.size))
    earlier = run_dir / "mask.png"
    if earlier.is_file() and (run_dir / "checkpoints").is_dir():
        print(f"resuming with the run's mask {earlier}")
        return image, load_mask(earlier, image.size)
    result = extract_mask(image, method=args.mask_method, rembg_model=args.rembg_model, prompts=mask_prompts(args))
    print(f"mask extracted with {result.method}")
    if result.note:
        print(f"note: {result.note}")
    return image, check_object_size(result.mask)


# --- invert -------------------------------------------------------------------------------

def run_invert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .method.exports import concept_name, named_files
    from .method.inversion import Cancelled
    from .method.workflow import learn
    from .models.loading import load_model, quiet_library_logs

    config = inversion_config(args)
    check_model_settings(config, args)
    output_folder(args.output)
    image, mask = image_and_mask(args, args.output)
    quiet_library_logs()
    print(f"loading {args.model} ...")
    model = load_model(args.model, device=args.device, dtype=args.dtype, single_file_config=args.model_config,
                       compile_unet=args.compile_unet, channels_last=args.channels_last,
                       gradient_checkpointing=args.gradient_checkpointing)
    config = at_native_resolution(config, args, model)
    interrupted = _stop_on_ctrl_c()
    bar = tqdm(total=config.total_steps(), unit="step", dynamic_ncols=True)
    balance = {}

    def on_step(report) -> None:
        if bar.n == 0 and report.step > 1:
            bar.update(report.step - 1)  # resumed: count the steps done before
        bar.update(1)
        if report.terms[0].grad_ratio is not None:
            balance["ratio"] = f"{report.terms[0].grad_ratio:.3g}"  # |grad mask term| / |grad denoising|
        bar.set_postfix(loss=f"{report.loss:.4f}", diffusion=f"{report.diffusion_loss:.4f}",
                        mask=f"{report.mask_loss:.4f}", **balance)

    try:
        concept = learn(model, image, mask, config, args.output, on_step=on_step, should_stop=lambda: interrupted[0])
    except Cancelled as error:
        print(f"{error} Run the same command again to continue.", file=sys.stderr)
        return 130
    finally:
        bar.close()  # ends the bar's line, so a message after it is a line of its own
    losses = ", ".join(f"{key} {value:.4f}" for key, value in concept.final_losses.items())
    print(f"learned {concept.token} -> {args.output} ({losses})")
    named = named_files(args.output, concept_name(concept), bool(concept.lora))
    print(f"for AUTOMATIC1111/ComfyUI: {', '.join(map(str, named))} (the file name is the word; see README)")
    print(f'next: shapeinv generate {args.output} "a red {config.class_word} in the shape of {config.placeholder}" '
          f"-o {args.output / 'images'}")
    return 0


def _stop_on_ctrl_c() -> list[bool]:
    """First Ctrl-C asks the loop to stop after the current step (saving a checkpoint)."""
    flag = [False]

    def handler(signum, frame):
        if flag[0]:
            raise KeyboardInterrupt
        flag[0] = True
        print("\nstopping after this step (Ctrl-C again to abort without a checkpoint) ...", file=sys.stderr)

    signal.signal(signal.SIGINT, handler)
    return flag


# --- generate -----------------------------------------------------------------------------

def generation_config(args: argparse.Namespace) -> GenerationConfig:
    return GenerationConfig(
        negative_prompt=args.negative, num_images=args.num_images, seed=args.seed, steps=args.steps,
        guidance=args.guidance, height=args.height, width=args.width, batch_size=args.batch,
        shape_steps=args.shape_steps, shape_order=args.shape_order, layout_steps=args.layout_steps,
        shape_guidance=args.shape_guidance,
    ).validate()


def run_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .evaluation.report import image_grid
    from .generation.generate import check_prompts, generate, image_info, slug
    from .method.concept import Concept
    from .models.loading import load_model, quiet_library_logs

    concept = Concept.load(args.run_dir)
    prompts = check_prompts(args.prompts, concept.token)
    config = generation_config(args)
    output_folder(args.output)
    model_name = args.model or concept.model or DEFAULT_MODEL
    quiet_library_logs()
    print(f"loading {model_name} ...")
    model = load_model(model_name, device=args.device, dtype=args.dtype, single_file_config=args.model_config,
                       compile_unet=args.compile_unet, channels_last=args.channels_last,
                       gradient_checkpointing=args.gradient_checkpointing)
    with tqdm(total=len(prompts) * config.num_images, unit="image", dynamic_ncols=True) as bar:
        results = generate(model, concept, prompts, config, on_image=lambda done, total: bar.update(done - bar.n))

    rows = []
    for prompt_index, prompt in enumerate(prompts):
        row = [result for result in results if result.prompt == prompt]
        for result in row:
            result.image.save(args.output / f"{prompt_index:02d}_{slug(prompt)}_seed{result.seed}.png",
                              pnginfo=image_info(concept, config, result.prompt, result.seed))
        rows.append([result.image for result in row])
    seeds = [f"seed {config.seed + index}" for index in range(config.num_images)]
    grid = image_grid(rows, row_labels=prompts, col_labels=seeds)
    grid.save(args.output / "grid.png")
    print(f"{len(results)} images and grid.png -> {args.output}")
    return 0


# --- sweep --------------------------------------------------------------------------------

def run_sweep(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .generation.generate import check_prompts
    from .generation.sweep import DEFAULT_PROMPTS, sweep
    from .models.loading import load_model, quiet_library_logs

    config = inversion_config(args)
    generation = GenerationConfig(num_images=args.num_images, steps=args.sample_steps, guidance=args.guidance)
    check_sweep_settings(config, args.weights, args.seeds, generation, args.rows_per_pass)
    check_model_settings(config, args)
    prompts = check_prompts(args.prompts or list(DEFAULT_PROMPTS), config.placeholder)
    output_folder(args.output)
    image, mask = image_and_mask(args, args.output / "_")
    quiet_library_logs()
    print(f"loading {args.model} ...")
    model = load_model(args.model, device=args.device, dtype=args.dtype, single_file_config=args.model_config,
                       compile_unet=args.compile_unet, channels_last=args.channels_last,
                       gradient_checkpointing=args.gradient_checkpointing)
    config = at_native_resolution(config, args, model)
    bar = tqdm(total=config.steps, unit="step", dynamic_ncols=True)

    def on_step(report) -> None:
        bar.update(report.step - bar.n)
        bar.set_postfix({f"w{w:g}": f"{t.mask_loss:.3f}" for w, t in zip(args.weights, report.terms)})

    clip_model = None if args.clip_model == "none" else args.clip_model
    try:
        result = sweep(model, image, mask, config, args.weights, prompts, args.output,
                       generation=generation, seeds=args.seeds, clip_model=clip_model, mask_method=args.mask_method,
                       on_step=on_step, on_phase=lambda text: bar.write(text), rows_per_pass=args.rows_per_pass)
    finally:
        bar.close()  # ends the bar's line, so an error after it is a line of its own
    if result.clip_note:
        print(f"note: {result.clip_note}")
    print(f"{len(result.rows)} images; grid.png, metrics.csv and tradeoff.png -> {args.output}")
    return 0


def check_sweep_settings(config: InversionConfig, weights: list[float], seeds: list[int],
                         generation: GenerationConfig, rows_per_pass: int | None) -> None:
    """Everything a sweep is told, checked before the (long) learning starts."""
    from dataclasses import replace

    if len(set(weights)) != len(weights):
        raise InputError("The mask weights repeat; give distinct ones, e.g. --weights 0,0.1,0.5.")
    for weight in weights:
        replace(config, mask_weight=weight).validate()
    for seed in seeds:
        replace(generation, seed=seed).validate()
    if rows_per_pass is not None and rows_per_pass < 1:
        raise InputError("--rows-per-pass must be 1 or more (rows of the UNet batch per pass).")


if __name__ == "__main__":
    sys.exit(main())
