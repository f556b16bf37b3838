"""The `hf-stagegan` command.

```bash
hf-stagegan generate "a red bird" --model org/stagegan-cub --num-images 4 --seed 0 --out grid.png
hf-stagegan generate "a red bird" "a blue bird" --model ./out --num-images 3 --levels --out birds.png
hf-stagegan demo --model org/stagegan-cub                  # a Gradio app on http://127.0.0.1:7860 (hf-stagegan[demo])
hf-stagegan export-space --model org/stagegan-cub --output_dir space/   # app.py, requirements.txt, README.md
hf-stagegan prepare-cub --cub_dir CUB_200_2011 --text_dir birds/text --output_dir cub --split literature --split_dir birds
hf-stagegan prepare-coco --coco_dir coco --output_dir coco-captions --max_images 5000
hf-stagegan evaluate --model ./out --num_images 1000 --output report.json          # SynthBirds' test split
hf-stagegan evaluate --model org/stagegan-cub --dataset org/cub-captions --metrics fid,clip_score,r_precision
hf-stagegan build-judge --resolution 64        # the SynthBirds judge and the evaluation CLIP, built once and cached
hf-stagegan build-eval-clip
hf-stagegan build-base-clip                    # the SynthBirds base CLIP, the main job's CLIP_FT (built once, cached)
```

`prepare-cub` and `prepare-coco` write the dataset folders `examples/train.py --dataset_name` takes (see
`hf_stagegan.data.cub`, `hf_stagegan.data.coco`) and print what they counted.

`--model` is a Hub id (served from the HF cache when `HF_HUB_OFFLINE=1`) or a local folder written by
`save_pretrained`. Image `j` of prompt `k` is drawn with seed `seed + k * num_images + j`, so a grid's first image does
not depend on how many images were asked for (the demo draws image `j` with seed `seed + j`, the same images). One row
per prompt when several prompts are given.
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
    generate.add_argument(
        "--force-download", action="store_true", help="download the model's files again (after an interrupted download)"
    )
    generate.set_defaults(subparser=generate)  # errors print this command's usage, not the top-level one

    demo = commands.add_parser(
        "demo",
        help="serve a Gradio app (prompt, seed, gallery, the three levels) for a pipeline",
        description="Load a StageGAN pipeline, then serve a Gradio demo of it on localhost (needs hf-stagegan[demo]).",
    )
    demo.add_argument("--model", required=True, help="Hub repo id (org/name) or local pipeline folder")
    demo.add_argument("--revision", default=None, help="Hub branch, tag or commit (default: main)")
    demo.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    demo.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="weights dtype (default: float32)")
    demo.add_argument(
        "--force-download", action="store_true", help="download the model's files again (after an interrupted download)"
    )
    demo.add_argument("--host", default=None, help="address to listen on (default: 127.0.0.1, or $GRADIO_SERVER_NAME)")
    demo.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    demo.add_argument("--max-images", type=int, default=8, help="most images one request may ask for (default: 8)")
    demo.add_argument(
        "--examples", nargs="+", metavar="PROMPT", help="example prompts (default: the model card's sample prompts)"
    )
    demo.set_defaults(subparser=demo)

    space = commands.add_parser(
        "export-space",
        help="write a Hugging Face Space (app.py, requirements.txt, README.md) that runs the demo of a Hub model",
        description="Write a folder that, pushed as a Gradio Space, serves `hf-stagegan demo` for a Hub model.",
    )
    space.add_argument("--model", required=True, help="Hub repo id (org/name) of the pipeline the Space serves")
    space.add_argument("--output_dir", "--output-dir", required=True, type=Path, help="the Space folder to write")
    space.add_argument("--revision", default=None, help="pin the model to a branch, tag or commit (default: main)")
    space.add_argument("--title", default=None, help="the Space's title (default: the model's name)")
    space.add_argument(
        "--requirement", default=None, help="how the Space installs hf-stagegan (default: hf-stagegan[demo]==VERSION)"
    )
    space.add_argument("--overwrite", action="store_true", help="replace app.py, requirements.txt, README.md there")
    space.set_defaults(subparser=space)

    cub = commands.add_parser(
        "prepare-cub",
        help="CUB-200-2011 + captions -> a dataset folder, cropped and split as the literature does",
        description="Prepare CUB-200-2011 with its captions as the text-to-image literature does (AttnGAN's bird "
        "crop, the literature's class-disjoint split) into a dataset folder for `datasets.load_dataset` and "
        "`examples/train.py --dataset_name`.",
    )
    cub.add_argument("--cub_dir", required=True, help="the CUB_200_2011 folder (images/, images.txt, bounding_boxes.txt, ...)")
    cub.add_argument("--text_dir", required=True, help="the captions, <class>/<image>.txt (AttnGAN's birds/text)")
    cub.add_argument(
        "--split", choices=["literature", "official"], default="literature",
        help="literature: AttnGAN's class-disjoint 150/50 lists (8,855 / 2,933); official: train_test_split.txt",
    )
    cub.add_argument(
        "--split_dir", help="holds train/filenames.pickle and test/filenames.pickle (default: the folder of --text_dir)"
    )
    _add_preparation_arguments(cub)
    cub.set_defaults(subparser=cub)

    coco = commands.add_parser(
        "prepare-coco",
        help="COCO 2014 captions -> a dataset folder (train2014 / val2014 as train / test)",
        description="Prepare COCO 2014 with its captions (5 per image; train2014 as train, val2014 as test, as "
        "AttnGAN and GR-GAN) into a dataset folder for `datasets.load_dataset` and `examples/train.py`.",
    )
    coco.add_argument("--coco_dir", required=True, help="holds train2014/, val2014/ and annotations/captions_*2014.json")
    coco.add_argument("--max_images", type=int, help="keep only the first N images of each split (a subset)")
    coco.add_argument("--split_dir", help="optional AttnGAN lists train/filenames.pickle and test/filenames.pickle")
    _add_preparation_arguments(coco)
    coco.set_defaults(subparser=coco)

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

    build_base = commands.add_parser(
        "build-base-clip", help="train and cache the SynthBirds base CLIP (the offline stand-in for a pretrained CLIP)",
        description="Train the SynthBirds base CLIP from scratch on 10 000 birds, its image tower first on the part "
        "colours (minutes on a CPU), report its part-swap accuracy on held-out real birds and cache it: "
        "`examples/train.py` uses it as its CLIP_FT on SynthBirds.",
    )
    build_base.add_argument("--cache_dir", "--cache-dir", default=None)
    build_base.add_argument("--overwrite", action="store_true", help="rebuild even if one is cached")
    build_base.set_defaults(subparser=build_base)
    return parser


def _add_preparation_arguments(parser: argparse.ArgumentParser):
    parser.add_argument("--output_dir", help="the dataset folder to write (datasets.load_dataset(output_dir))")
    parser.add_argument("--size", type=int, default=304, help="stored shorter side in pixels (default: 304, for 256 px training)")
    parser.add_argument("--image_format", choices=["jpeg", "png"], default="jpeg", help="default: jpeg (quality 95)")
    parser.add_argument("--num_proc", type=int, default=1, help="processes that crop and encode images (default: 1)")
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help="also upload it as this Hub dataset, with a dataset card")
    parser.add_argument("--private", action="store_true", help="create the Hub dataset private")
    parser.add_argument("--hub_token", help="Hub token (default: the logged-in one)")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace a non-empty --output_dir")


def _level_path(out: Path, level: int) -> Path:
    return out.with_name(f"{out.stem}_level{level}{out.suffix or '.png'}")


def load_pipeline(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """The pipeline of `--model` on `--device` in `--dtype`; exits with a one-line message when it cannot be loaded."""
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError as error:
        parser.error(f"--device {args.device!r} is not a torch device: {error}")

    from .hub import IncompleteWeightsError
    from .pipeline_stagegan import StageGANPipeline

    try:
        pipe = StageGANPipeline.from_pretrained(
            args.model, revision=args.revision, dtype=DTYPES[args.dtype], force_download=args.force_download
        )
    except (OSError, ValueError) as error:
        hint = ""
        if isinstance(error, IncompleteWeightsError) and error.downloaded:
            hint = " Add --force-download to download it again."
        parser.exit(1, f"hf-stagegan: error: cannot load --model {args.model!r}: {error}{hint}\n")
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Path]:
    if args.num_images < 1:
        parser.error(f"--num-images must be >= 1, got {args.num_images}")
    if args.cols is not None and args.cols < 1:
        parser.error(f"--cols must be >= 1, got {args.cols}")
    if args.truncation is not None and not args.truncation > 0:
        parser.error(f"--truncation must be > 0, got {args.truncation}")
    if not args.out.parent.is_dir():
        parser.error(f"--out: folder {str(args.out.parent)!r} does not exist")

    from .hub import image_grid

    pipe = load_pipeline(args, parser)

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


def demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.max_images < 1:
        parser.error(f"--max-images must be >= 1, got {args.max_images}")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error(f"--port must be between 1 and 65535, got {args.port}")
    try:
        from . import demo as demo_app
    except ImportError as error:
        parser.exit(1, f"hf-stagegan: error: the demo needs Gradio ({error}): pip install 'hf-stagegan[demo]'\n")

    # load and warm up before the server starts: the first request pays only for its own images
    pipe = load_pipeline(args, parser)
    examples = args.examples or demo_app.example_prompts(args.model, revision=args.revision)
    app = demo_app.build_demo(pipe, examples=examples, max_images=args.max_images, model_name=args.model)
    demo_app.warm_up(pipe)
    app.launch(server_name=args.host, server_port=args.port)


def export_space(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[Path]:
    from .space import export_space as write_space

    try:
        return write_space(
            args.model,
            args.output_dir,
            revision=args.revision,
            title=args.title,
            requirement=args.requirement,
            overwrite=args.overwrite,
        )
    except (ValueError, FileExistsError) as error:
        parser.exit(1, f"hf-stagegan: error: {error}\n")


def prepare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """`prepare-cub` / `prepare-coco`: check the arguments, prepare, return the report's summary."""
    if args.output_dir is None and args.push_to_hub is None:
        parser.error("give --output_dir, --push_to_hub, or both")
    for name in ("size", "num_proc", "max_images"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    output_dir = args.output_dir
    if output_dir and Path(output_dir).is_dir() and any(Path(output_dir).iterdir()) and not args.overwrite_output_dir:
        parser.error(f"--output_dir {output_dir} is not empty; pass --overwrite_output_dir to replace it")
    common = dict(
        output_dir=output_dir, size=args.size, image_format=args.image_format, push_to_hub=args.push_to_hub,
        overwrite=args.overwrite_output_dir, num_proc=args.num_proc, private=args.private or None, token=args.hub_token,
    )
    try:
        if args.command == "prepare-cub":
            from .data.cub import prepare_cub

            report = prepare_cub(args.cub_dir, args.text_dir, split=args.split, split_dir=args.split_dir, **common)
        else:
            from .data.coco import prepare_coco

            report = prepare_coco(args.coco_dir, max_images=args.max_images, split_dir=args.split_dir, **common)
    except (OSError, ValueError) as error:
        parser.exit(1, f"hf-stagegan {args.command}: error: {error}\n")
    return report.summary()


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
    elif args.command == "build-eval-clip":
        folder = build_eval_clip(args.cache_dir, overwrite=args.overwrite)
        report = json.loads((folder / EVAL_CLIP_REPORT_NAME).read_text())
        summary = f"held-out real R-precision {report['held_out_real_r_precision']}"
    else:
        from .base_clip import BASE_CLIP_REPORT_NAME, build_base_clip

        folder = build_base_clip(args.cache_dir, overwrite=args.overwrite)
        report = json.loads((folder / BASE_CLIP_REPORT_NAME).read_text())
        summary = f"part-swap accuracy on held-out real birds {report['held_out_part_swap_accuracy']}"
    return f"{folder}\n{summary}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "generate":
        for path in generate(args, args.subparser):
            sys.stdout.write(f"{path}\n")
    elif args.command == "demo":
        demo(args, args.subparser)
    elif args.command == "export-space":
        for path in export_space(args, args.subparser):
            sys.stdout.write(f"{path}\n")
    elif args.command in ("prepare-cub", "prepare-coco"):
        sys.stdout.write(prepare(args, args.subparser) + "\n")
    elif args.command == "evaluate":
        sys.stdout.write(f"{evaluate(args, args.subparser)}\n")
    elif args.command in ("build-judge", "build-eval-clip", "build-base-clip"):
        sys.stdout.write(f"{build_evaluator(args, args.subparser)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
