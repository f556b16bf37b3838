"""The `hf-stagegan` command.

```bash
hf-stagegan generate "a red bird" --model org/stagegan-cub --num-images 4 --seed 0 --out grid.png
hf-stagegan generate "a red bird" "a blue bird" --model ./out --num-images 3 --levels --out birds.png
```

`--model` is a Hub id (served from the HF cache when `HF_HUB_OFFLINE=1`) or a local folder written by
`save_pretrained`. Image `j` of prompt `k` is drawn with seed `seed + k * num_images + j`, so a grid's first image does
not depend on how many images were asked for. One row per prompt when several prompts are given.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-stagegan", description="StageGAN text-to-image tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser(
        "generate",
        help="draw images for one or more prompts into a PNG grid",
        description="Draw images for one or more prompts with a StageGAN pipeline and save them as one grid image.",
    )
    generate.add_argument("prompts", nargs="+", metavar="PROMPT", help="text prompt(s), quoted")
    generate.add_argument("--model", required=True, help="Hub repo id (org/name) or local pipeline folder")
    generate.add_argument("--num-images", type=int, default=1, help="images per prompt (default: 1)")
    generate.add_argument("--seed", type=int, default=0, help="seed of the first image (default: 0)")
    generate.add_argument("--out", type=Path, default=Path("grid.png"), help="output image file (default: grid.png)")
    generate.add_argument(
        "--levels",
        action="store_true",
        help="also save one grid per level (x1, x2, x3) as <out>_level1.png, <out>_level2.png, <out>_level3.png",
    )
    generate.add_argument("--cols", type=int, default=None, help="images per grid row (default: square-ish grid)")
    generate.add_argument(
        "--truncation", type=float, default=None, help="resample noise values with |z| above this (BigGAN trick)"
    )
    generate.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)"
    )
    generate.add_argument(
        "--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (default: float32)"
    )
    generate.add_argument("--revision", default=None, help="Hub branch, tag or commit (default: main)")
    generate.set_defaults(subparser=generate)  # errors print this command's usage, not the top-level one
    return parser


def _level_path(out: Path, level: int) -> Path:
    return out.with_name(f"{out.stem}_level{level}{out.suffix or '.png'}")


def generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Path]:
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1, got {args.num_images}")
    if args.cols is not None and args.cols < 1:
        parser.error(f"--cols must be >= 1, got {args.cols}")
    if args.truncation is not None and not args.truncation > 0:
        parser.error(f"--truncation must be > 0, got {args.truncation}")
    if not args.out.parent.is_dir():
        parser.error(f"--out: folder {str(args.out.parent)!r} does not exist")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        parser.error(f"--device {args.device!r} is not a torch device: {error}")

    from .hub import image_grid
    from .pipeline_stagegan import StageGANPipeline

    try:
        pipe = StageGANPipeline.from_pretrained(args.model, revision=args.revision, dtype=DTYPES[args.dtype])
    except (OSError, ValueError) as error:
        parser.exit(1, f"hf-stagegan: error: cannot load --model {args.model!r}: {error}\n")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)

    num_images = args.num_images
    generators = [torch.Generator().manual_seed(args.seed + index) for index in range(len(args.prompts) * num_images)]
    try:
        out = pipe(
            list(args.prompts),
            num_images_per_prompt=num_images,
            generator=generators,
            truncation_threshold=args.truncation,
            return_all_levels=args.levels,
        )
    except (TypeError, ValueError) as error:
        parser.exit(1, f"hf-stagegan: error: {error}\n")

    cols = args.cols or (num_images if len(args.prompts) > 1 else None)
    written = [args.out]
    image_grid(out.images, cols=cols).save(args.out)
    if args.levels:
        for level, images in enumerate(out.level_images, start=1):
            path = _level_path(args.out, level)
            image_grid(images, cols=cols).save(path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        for path in generate(args, args.subparser):
            sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
