"""`python -m shapeinv_core.toy train -o DIR`: train a toy model from a seed within a wall-clock budget."""

from __future__ import annotations

import argparse
from dataclasses import fields

from .train import TrainConfig, train

# A handful of steps on a tiny model: the end-to-end check the tests run.
TINY_CONFIG = dict(images=16, vae_channels=(8, 8, 8), vae_batch=4, unet_channels=(16, 16), text_width=16,
                   text_layers=1, batch=4, unet_heads=2, workers=1, max_vae_steps=3, max_unet_steps=3, warmup=1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shapeinv_core.toy",
                                     description="The toy world: a small SD-shaped model trained on rendered chairs.")
    commands = parser.add_subparsers(dest="command", required=True)
    cmd = commands.add_parser("train", help="train a toy model into a folder (pipeline/ is the loadable model)")
    defaults = TrainConfig()
    cmd.add_argument("-o", "--out", required=True, help="output folder (pipeline/, loss.csv, train_config.json)")
    cmd.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    cmd.add_argument("--minutes", type=float, default=defaults.minutes,
                     help="wall-clock budget for everything, render + VAE + UNet (default: %(default)s)")
    cmd.add_argument("--vae-minutes", type=float, default=defaults.vae_minutes, help="(default: %(default)s)")
    cmd.add_argument("--images", type=int, default=defaults.images, help="rendered chairs (default: %(default)s)")
    cmd.add_argument("--batch", type=int, default=defaults.batch, help="UNet batch (default: %(default)s)")
    cmd.add_argument("--tiny", action="store_true", help="a tiny model for a few steps (a smoke test)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    overrides = {"seed": args.seed, "minutes": args.minutes, "vae_minutes": args.vae_minutes,
                 "images": args.images, "batch": args.batch}
    if args.tiny:
        overrides = {**overrides, **TINY_CONFIG}
    config = TrainConfig(**{f.name: overrides[f.name] for f in fields(TrainConfig) if f.name in overrides})
    folder = train(args.out, config, progress=not args.quiet)
    print(f"model written to {folder} (load it with --model {folder})")


if __name__ == "__main__":
    main()
