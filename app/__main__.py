"""`python -m app [--host H] [--port P] [--model ID|PATH|tiny] [--data DIR] [--engine ray ...]`: serve the web app.

Every flag has an environment variable (SHAPEINV_HOST, SHAPEINV_PORT, SHAPEINV_MODEL, SHAPEINV_DATA,
SHAPEINV_DEVICE, SHAPEINV_DTYPE, SHAPEINV_CLIP_MODEL, SHAPEINV_AUTH, SHAPEINV_KEEP_DAYS, SHAPEINV_MAX_DISK_GB,
SHAPEINV_ENGINE, SHAPEINV_RAY_ADDRESS, SHAPEINV_WORKERS),
so a container or a Space is configured without a command line (on a Space, set SHAPEINV_AUTH as a secret).
The page is up at once; the model loads in the background while masks can already be made.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# urllib3 warns, when some library first imports requests, that SOCKS proxies would need PySocks: noise at
# start-up for a server that uses no proxy (seen in 1 of 6 starts by tests/test_app_restart.py).
warnings.filterwarnings("ignore", message="SOCKS support in urllib3 requires")

from shapeinv_core.config import DEFAULT_MODEL, InversionConfig  # noqa: E402
from shapeinv_core.errors import ShapeInvError  # noqa: E402
from shapeinv_core.evaluation.metrics import DEFAULT_CLIP_MODEL  # noqa: E402
from shapeinv_core.jobs.engines import EMBEDDED, ENGINES  # noqa: E402
from shapeinv_core.jobs.retention import DEFAULT_KEEP_DAYS  # noqa: E402
from shapeinv_core.models.loading import TINY, TINY_SDXL, TOY, native_resolution_of  # noqa: E402

from .backend import Backend, Limits  # noqa: E402
from .guard import EXCEPTION_HANDLERS  # noqa: E402

DOWNLOADS = ("#downloads", "#run-zip", "#sweep-downloads", "#sweep-zip")
PICTURES = ("#loss-plot", "#attention", "#sweep-grid", "#sweep-tradeoff", "#preview")
CSS = "\n".join([
    "#job-status p { margin: 0.4em 0; }",
    # The pictures' buttons sit above them, not over the titles drawn into the plots and the grid.
    ", ".join(f"{picture} .icon-button-wrapper" for picture in PICTURES)
    + " { position: static !important; margin-left: auto; width: fit-content; }",
    # One error at a time: Gradio stacks messages of one kind in a toast; only the newest is shown.
    ".toast-messages > div:not(:last-child), .toast-count, .toast-separator { display: none !important; }",
    # A download's whole row is its link (Gradio links only the size): the link's box is stretched over the row.
    ", ".join(f"{files} tr" for files in DOWNLOADS) + " { position: relative; cursor: pointer; }",
    ", ".join(f"{files} tr a" for files in DOWNLOADS) + " { position: static !important; }",  # Gradio sets relative
    ", ".join(f"{files} tr a::after" for files in DOWNLOADS) + ' { content: ""; position: absolute; inset: 0; }',
    # My runs: small tiles, as many per row as fit, each picture whole with its caption under it.
    "#runs-gallery .grid-container { grid-template-columns: repeat(auto-fill, minmax(150px, 180px)) !important;"
    " grid-auto-rows: auto !important; }",
    "#runs-gallery .thumbnail-item { height: auto !important; aspect-ratio: auto !important;"
    " flex-direction: column; }",
    "#runs-gallery .thumbnail-item img { height: 150px !important; object-fit: contain !important; }",
    "#runs-gallery .caption-label { position: static !important; white-space: normal !important;"
    " max-width: none !important; overflow: visible !important; font-size: 0.8em; padding: 2px 4px; }",
    # A phone's first screen: the upload, and Start kept at the bottom edge; the mask tools once there is a photo.
    "@media (max-width: 600px) {"
    " #mask-column:not(:has(#overlay img)) { display: none; }"
    " #start { position: fixed; left: 8px; right: 8px; bottom: 8px; width: auto; z-index: 50; }"
    " .gradio-container { padding-bottom: 64px !important; } }",
])


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m app", description="Serve the ShapeInversion web app.")
    parser.add_argument("--host", default=env("SHAPEINV_HOST", "127.0.0.1"),
                        help="address to listen on; 0.0.0.0 in a container (env SHAPEINV_HOST)")
    parser.add_argument("--port", type=int, default=int(env("SHAPEINV_PORT", env("GRADIO_SERVER_PORT", "7860"))),
                        help="port (env SHAPEINV_PORT; default 7860)")
    parser.add_argument("--model", default=env("SHAPEINV_MODEL", DEFAULT_MODEL),
                        help="SD 1.x/2.x or SDXL: hub id, local diffusers folder, .safetensors file, or 'toy' / "
                             "'tiny' / 'tiny-sdxl' (offline models; env SHAPEINV_MODEL)")
    parser.add_argument("--data", type=Path, default=Path(env("SHAPEINV_DATA", "data")),
                        help="folder for the job database and run folders (env SHAPEINV_DATA; default ./data)")
    parser.add_argument("--device", default=env("SHAPEINV_DEVICE", "auto"),
                        help="auto, cpu, cuda (env SHAPEINV_DEVICE)")
    parser.add_argument("--dtype", default=env("SHAPEINV_DTYPE", "auto"),
                        help="auto, fp32, fp16, bf16 (env SHAPEINV_DTYPE)")
    parser.add_argument("--clip-model", default=env("SHAPEINV_CLIP_MODEL", DEFAULT_CLIP_MODEL),
                        help="CLIP model for CLIP-T of edits and sweeps: hub id, local folder, 'tiny' or 'none'; "
                             "loaded when first needed (env SHAPEINV_CLIP_MODEL)")
    parser.add_argument("--auth", type=auth_pair, default=env("SHAPEINV_AUTH") or None, metavar="USER:PASS",
                        help="ask for this login before the page or the API answers (env SHAPEINV_AUTH; "
                             "on a Hugging Face Space, add SHAPEINV_AUTH as a secret)")
    parser.add_argument("--keep-days", type=float, default=float(env("SHAPEINV_KEEP_DAYS", DEFAULT_KEEP_DAYS)),
                        help="delete finished jobs, edits and exports older than this (env SHAPEINV_KEEP_DAYS; "
                             "default %(default)g)")
    parser.add_argument("--max-disk-gb", type=float, default=float(env("SHAPEINV_MAX_DISK_GB", "0")) or None,
                        help="refuse new jobs while the data folder holds this many GB or more "
                             "(env SHAPEINV_MAX_DISK_GB; default: no budget)")
    parser.add_argument("--engine", default=env("SHAPEINV_ENGINE", EMBEDDED),
                        help="who runs the jobs: 'embedded' (one worker thread in this process, the default) or "
                             "'ray' (one Ray actor per GPU; needs the [ray] extra) (env SHAPEINV_ENGINE)")
    parser.add_argument("--ray-address", default=env("SHAPEINV_RAY_ADDRESS") or None, metavar="ADDRESS",
                        help="with --engine ray: the cluster `ray start --head` started, e.g. 10.0.0.1:6379; "
                             "default: a local Ray on this machine (env SHAPEINV_RAY_ADDRESS)")
    parser.add_argument("--workers", type=int, default=int(env("SHAPEINV_WORKERS", "0")) or None, metavar="N",
                        help="with --engine ray: Ray actors to start (default: one per GPU; give N on CPUs) "
                             "(env SHAPEINV_WORKERS)")
    return parser


def check_engine_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One clear line for an engine setting that cannot work (also when it came from the environment)."""
    if args.engine not in ENGINES:
        parser.error(f"--engine {args.engine}: use one of {', '.join(ENGINES)} (or unset SHAPEINV_ENGINE)")
    if args.engine == EMBEDDED and (args.ray_address or args.workers):
        parser.error("--ray-address and --workers need --engine ray (the embedded engine has one worker thread)")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers {args.workers}: give 1 or more Ray workers")


def auth_pair(text: str | tuple | None) -> tuple[str, str] | None:
    """'USER:PASS' -> (user, pass) for Gradio's login; the password may itself contain ':'."""
    if text is None or isinstance(text, tuple):
        return text
    user, colon, password = text.partition(":")
    if not colon or not user or not password:
        raise argparse.ArgumentTypeError("give the login as USER:PASS, e.g. --auth alice:a-long-password")
    return user, password


def form_defaults(model: str) -> InversionConfig:
    """The defaults at the model's native size; for the offline test models, settings a CPU can finish."""
    if model in (TINY, TINY_SDXL):  # random weights: a LoRA phase would only add 100 steps of nothing to learn
        return InversionConfig(resolution=64, steps=10, batch_size=1, checkpoint_every=5, tune="none")
    native = native_resolution_of(model)  # None for a hub id (not loaded yet): the research default, 512
    if model == TOY:
        return InversionConfig(resolution=native or 64, steps=150, batch_size=2, checkpoint_every=25)
    return InversionConfig(resolution=native) if native else InversionConfig()


def create(data: Path, model: str, device: str = "auto", dtype: str = "auto", limits: Limits | None = None,
           preview_steps: int | None = None, clip_model: str | None = DEFAULT_CLIP_MODEL, engine: str = EMBEDDED,
           ray_address: str | None = None, workers: int | None = None, own_cache: bool = False):
    """(backend, demo): the worker (or the Ray engine) started, the model loading in the background, the page built.

    `own_cache` (a server process): Gradio's cache of served files lives in this server's outbox, not in the
    machine's shared /tmp/gradio, where another server that served the same picture (the same content, the same
    path) deletes it on its way out while this one still hands it out.
    """
    from .ui import build_demo

    if preview_steps is None:
        preview_steps = 4 if model in (TINY, TINY_SDXL) else 20
    backend = Backend(Path(data), model=model, device=device, dtype=dtype, limits=limits or Limits(),
                      preview_steps=preview_steps,
                      clip_model=None if clip_model in (None, "", "none") else clip_model, engine=engine,
                      ray_address=ray_address, workers=workers)
    if own_cache and "GRADIO_TEMP_DIR" not in os.environ:
        os.environ["GRADIO_TEMP_DIR"] = str(backend.gradio_cache)
    backend.start()
    return backend, build_demo(backend, form_defaults(model))


def launch_options(backend: Backend, host: str, port: int, auth: tuple[str, str] | None = None) -> dict:
    """What `demo.launch` needs for this app: upload limit, no SSR, the optional login.

    The data folder is not served at all: files reach a page only as a job's owner asks for them
    (`Backend.outbox`), so no URL of the data folder exists to guess.
    """
    options = {"server_name": host, "server_port": port, "max_file_size": backend.limits.max_upload,
               "ssr_mode": False, "css": CSS, "show_error": True,
               "app_kwargs": {"exception_handlers": EXCEPTION_HANDLERS}}
    if auth:
        options["auth"] = [auth]
        options["auth_message"] = "This ShapeInversion server is private: log in with the name and password you got."
    return options


def main(argv: list[str] | None = None) -> int:
    """Serve until interrupted; a running job is checkpointed and resumes at the next start."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_engine_options(parser, args)
    limits = Limits(keep_days=args.keep_days, max_disk_gb=args.max_disk_gb)
    try:
        backend, demo = create(args.data, args.model, args.device, args.dtype, limits=limits,
                               clip_model=args.clip_model, engine=args.engine, ray_address=args.ray_address,
                               workers=args.workers, own_cache=True)
    except ShapeInvError as error:  # e.g. --engine ray without Ray installed
        print(f"error: {error}", file=sys.stderr)
        return 2
    # A container's stop (SIGTERM) ends the server as Ctrl-C does: the job checkpointed, the outbox removed.
    signal.signal(signal.SIGTERM, _interrupt)
    engine = "" if args.engine == EMBEDDED else f" on Ray ({args.ray_address or 'local'})"
    print(f"data folder: {args.data.resolve()}; model {args.model} loading in the background{engine}", flush=True)
    try:
        demo.queue(default_concurrency_limit=1).launch(**launch_options(backend, args.host, args.port, args.auth))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the server was still starting (later, Gradio catches it)
        demo.close()
    finally:
        backend.stop()
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
