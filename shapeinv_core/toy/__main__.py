"""`python -m shapeinv_core.toy train -o DIR`: train a toy model from a seed within a wall-clock budget."""

from __future__ import annotations

import argparse
from dataclasses import fields

from .train import TrainConfig, finetune_decoder, load_dataset, load_vae, render_dataset, render_to_file, train

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
    cmd.add_argument("--resume", help="continue training this pipeline folder (its VAE is kept)")
    cmd.add_argument("--vae-from", help="keep this pipeline folder's trained VAE (fresh UNet/text encoder)")
    cmd.add_argument("--dataset", help="a rendered set written by `render` (default: render one now)")
    cmd.add_argument("--lr", type=float, default=defaults.lr, help="UNet/text encoder peak lr (default: %(default)s)")
    cmd.add_argument("--lr-end", type=float, default=defaults.lr_end,
                     help="anneal: the lr falls by cosine to this over the UNet phase's minutes (default: constant)")
    cmd.add_argument("--threads", type=int, default=defaults.threads,
                     help="torch threads; 1 on a shared machine, the core count on an idle one (default: %(default)s)")
    cmd.add_argument("--tiny", action="store_true", help="a tiny model for a few steps (a smoke test)")
    cmd.add_argument("--quiet", action="store_true", help="no progress bar")
    ren = commands.add_parser("render", help="render a training set once into an .npz (for train --dataset)")
    ren.add_argument("-o", "--out", required=True, help="the .npz file to write")
    ren.add_argument("--images", type=int, default=defaults.images, help="(default: %(default)s)")
    ren.add_argument("--seed", type=int, default=defaults.seed, help="(default: %(default)s)")
    dec = commands.add_parser("decoder", help="fine-tune a trained model's VAE decoder (encoder frozen) into OUT/vae")
    dec.add_argument("--model", required=True, help="a toy pipeline folder")
    dec.add_argument("-o", "--out", required=True, help="output folder (vae/, decoder_loss.csv)")
    dec.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget (default: %(default)s)")
    dec.add_argument("--images", type=int, default=1500, help="rendered chairs (default: %(default)s)")
    dec.add_argument("--seed", type=int, default=1, help="(default: %(default)s)")
    dec.add_argument("--dataset", help="a rendered set written by `render` (default: render one now)")
    dec.add_argument("--lr", type=float, default=1e-3, help="(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "decoder":
        finetune_saved_decoder(args)
        return
    if args.command == "render":
        render_to_file(args.out, args.images, args.seed)
        print(f"{args.images} chairs -> {args.out}")
        return

    overrides = {"seed": args.seed, "minutes": args.minutes, "vae_minutes": args.vae_minutes,
                 "images": args.images, "batch": args.batch, "resume": args.resume, "dataset": args.dataset,
                 "vae_from": args.vae_from,
                 "lr": args.lr, "lr_end": args.lr_end, "threads": args.threads}
    if args.tiny:
        overrides = {**overrides, **TINY_CONFIG}
    config = TrainConfig(**{f.name: overrides[f.name] for f in fields(TrainConfig) if f.name in overrides})
    folder = train(args.out, config, progress=not args.quiet)
    print(f"model written to {folder} (load it with --model {folder})")


def finetune_saved_decoder(args: argparse.Namespace) -> None:
    """Load a pipeline's VAE, fine-tune its decoder on fresh renders, save it (scaling factor kept) to OUT/vae."""
    import time
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.minutes * 60
    vae = load_vae(Path(args.model))
    if args.dataset:
        images, _ = load_dataset(Path(args.dataset))
    else:
        images, _ = render_dataset(args.images, args.seed, 64, workers=2)
    finetune_decoder(vae, images, deadline, out / "decoder_loss.csv", seed=args.seed, lr=args.lr)
    vae.save_pretrained(out / "vae", safe_serialization=True)
    print(f"decoder written to {out / 'vae'}")


if __name__ == "__main__":
    main()
