"""The `hf-stagegan` command.

```bash
hf-stagegan generate "a red bird" --model org/stagegan-cub --num-images 4 --seed 0 --out grid.png
hf-stagegan generate "a red bird" "a blue bird" --model ./out --num-images 3 --levels --out birds.png
hf-stagegan evaluate --model ./out --num_images 1000 --output report.json          # SynthBirds' test split
hf-stagegan evaluate --model org/stagegan-cub --dataset org/cub-captions --metrics fid,clip_score,r_precision
hf-stagegan build-judge --resolution 64        # the SynthBirds judge and the evaluation CLIP, built once and cached
hf-stagegan build-eval-clip
```

`--model` is a Hub id (served from the HF cache when `HF_HUB_OFFLINE=1`) or a local folder written by
`save_pretrained`. Image `j` of prompt `k` is drawn with seed `seed + k * num_images + j`, so a grid's first image does
not depend on how many images were asked for. One row per prompt when several prompts are given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
METRIC_NAMES = ("fid", "clip_score", "r_precision", "cmd", "judge", "matcher")  # evaluation.protocol.METRICS


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

    evaluate = commands.add_parser(
        "evaluate",
        help="score a pipeline on held-out captions (FID, CLIP score, R-precision, CMD, SynthBirds judge)",
        description="Draw one image per held-out caption and write one JSON report of the metrics, with every setting "
        "needed to reproduce it (see hf_stagegan.evaluation.protocol).",
    )
    evaluate.add_argument("--model", required=True, help="Hub repo id (org/name) or local pipeline folder")
    evaluate.add_argument("--revision", default=None, help="Hub branch, tag or commit of --model (default: main)")
    evaluate.add_argument(
        "--dataset", default=None, help="Hub dataset id or local imagefolder (default: SynthBirds' test split)"
    )
    evaluate.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    evaluate.add_argument("--image_column", "--image-column", default=None)
    evaluate.add_argument("--caption_column", "--caption-column", default=None)
    evaluate.add_argument(
        "--num_images", "--num-images", type=int, default=None,
        help="evaluate the first N examples (default: all; 1000 on SynthBirds)",
    )
    evaluate.add_argument("--batch_size", "--batch-size", type=int, default=64, help="images per generator call")
    evaluate.add_argument(
        "--metrics", default=None,
        help=f"comma-separated, from {','.join(METRIC_NAMES)} (default: all that apply; judge and matcher need SynthBirds)",
    )
    evaluate.add_argument("--output", type=Path, default=Path("evaluation.json"), help="report file (default: evaluation.json)")
    evaluate.add_argument("--seed", type=int, default=0, help="image i is drawn from seed + i (default: 0)")
    evaluate.add_argument("--truncation", type=float, default=None, help="noise truncation threshold (default: none)")
    evaluate.add_argument(
        "--fid_feature_extractor", "--fid-feature-extractor", default="inception",
        help="inception (FID), judge, clip (the evaluation CLIP) or a CLIP folder / Hub id (default: inception)",
    )
    evaluate.add_argument(
        "--inception_weights", "--inception-weights", default=None,
        help="path of pt_inception-2015-12-05-6726825d.pth (default: torch hub's checkpoints folder)",
    )
    evaluate.add_argument(
        "--eval_clip", "--eval-clip", default=None,
        help="CLIP folder / Hub id for CLIP score, R-precision, CMD (default: the offline SynthBirds evaluation CLIP "
        "on SynthBirds, openai/clip-vit-base-patch32 elsewhere)",
    )
    evaluate.add_argument("--cache_dir", "--cache-dir", default=None, help="where the judge and evaluation CLIP are cached")
    evaluate.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    evaluate.set_defaults(subparser=evaluate)

    build_judge = commands.add_parser(
        "build-judge", help="train and cache the SynthBirds attribute judge",
        description="Train the SynthBirds attribute judge on real birds only (minutes on a CPU), report its held-out "
        "accuracy and cache it for `hf-stagegan evaluate`.",
    )
    build_judge.add_argument("--resolution", type=int, default=64, help="image side it judges: 32, 64, 128 or 256")
    build_judge.add_argument("--cache_dir", "--cache-dir", default=None)
    build_judge.add_argument("--overwrite", action="store_true", help="rebuild even if a judge is cached")
    build_judge.set_defaults(subparser=build_judge)

    build_clip = commands.add_parser(
        "build-eval-clip", help="train and cache the offline SynthBirds evaluation CLIP",
        description="Train the SynthBirds evaluation CLIP from scratch on its own birds (minutes on a CPU), report its "
        "R-precision on held-out real birds and cache it for `hf-stagegan evaluate`.",
    )
    build_clip.add_argument("--cache_dir", "--cache-dir", default=None)
    build_clip.add_argument("--overwrite", action="store_true", help="rebuild even if one is cached")
    build_clip.set_defaults(subparser=build_clip)
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


def evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    for name in ("num_images", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    if args.truncation is not None and not args.truncation > 0:
        parser.error(f"--truncation must be > 0, got {args.truncation}")
    if not args.output.parent.is_dir():
        parser.error(f"--output: folder {str(args.output.parent)!r} does not exist")
    from .evaluation.protocol import evaluate as run_evaluation
    from .evaluation.protocol import parse_metrics, write_report

    try:
        parse_metrics(args.metrics, synthbirds=args.dataset is None)
        report = run_evaluation(
            args.model, dataset_name=args.dataset, split=args.split, num_images=args.num_images,
            batch_size=args.batch_size, metrics=args.metrics, seed=args.seed, truncation=args.truncation,
            fid_feature_extractor=args.fid_feature_extractor, inception_weights=args.inception_weights,
            eval_clip=args.eval_clip, image_column=args.image_column, caption_column=args.caption_column,
            revision=args.revision, cache_dir=args.cache_dir, device=args.device,
        )
    except (OSError, ValueError, ImportError) as error:
        parser.exit(1, f"hf-stagegan evaluate: error: {error}\n")
    return write_report(report, args.output)


def build_evaluator(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    from .evaluation.eval_clip import EVAL_CLIP_REPORT_NAME, build_eval_clip
    from .evaluation.judge import JUDGE_REPORT_NAME, JUDGE_RESOLUTIONS, build_judge

    if args.command == "build-judge":
        if args.resolution not in JUDGE_RESOLUTIONS:
            parser.error(f"--resolution must be one of {list(JUDGE_RESOLUTIONS)}, got {args.resolution}")
        folder = build_judge(args.resolution, args.cache_dir, overwrite=args.overwrite)
        report = json.loads((folder / JUDGE_REPORT_NAME).read_text())
        summary = f"held-out real accuracy {report['held_out_real_accuracy']}"
    else:
        folder = build_eval_clip(args.cache_dir, overwrite=args.overwrite)
        report = json.loads((folder / EVAL_CLIP_REPORT_NAME).read_text())
        summary = f"held-out real R-precision {report['held_out_real_r_precision']}"
    return f"{folder}\n{summary}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        for path in generate(args, args.subparser):
            sys.stdout.write(f"{path}\n")
    elif args.command == "evaluate":
        sys.stdout.write(f"{evaluate(args, args.subparser)}\n")
    else:
        sys.stdout.write(f"{build_evaluator(args, args.subparser)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
