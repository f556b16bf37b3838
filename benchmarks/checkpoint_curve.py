"""
Quality against training steps: every checkpoint of one run, scored by `hf-stagegan evaluate` on SynthBirds'
held-out captions (judge attribute accuracy, judge FD over its real-vs-real floor, R-precision with the independent
evaluation CLIP), as the run's final evaluation scores the saved pipeline.

    python examples/train.py --max_train_steps 3600 --checkpointing_steps 600 --checkpoints_total_limit 6 \
        --output_dir runs/long
    python benchmarks/checkpoint_curve.py runs/long --evaluation_images 500 --out runs/long/curve.jsonl --plot curve.png

Each checkpoint's EMA generator (`ema_generator/`, what the run saves with `--use_ema`; the raw one with `--raw`)
replaces the generator of the run's final pipeline, whose tokenizer and text encoder never change during the GAN
phase. One JSON line per checkpoint (step, the headline metrics), then a Markdown table. A run keeps only its last
`--checkpoints_total_limit` checkpoints: set it high enough before training.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ablations import COLUMNS, scores  # this folder is on sys.path when run as a script: the ablation table's row


def score_checkpoints(run: Path, evaluation_images: int, seed: int, raw: bool) -> list[dict]:
    from hf_stagegan import StageGANGenerator, StageGANPipeline
    from hf_stagegan.checkpointing import list_checkpoints
    from hf_stagegan.evaluation import evaluate

    checkpoints = list_checkpoints(run)
    if not checkpoints:
        raise FileNotFoundError(f"{run} has no checkpoint-<step> folder: train with --checkpointing_steps.")
    pipeline = StageGANPipeline.from_pretrained(run)
    subfolder = "generator" if raw else "ema_generator"
    rows = []
    for step, folder in checkpoints:
        if not (folder / subfolder).is_dir():
            raise FileNotFoundError(f"{folder} has no {subfolder}/" + ("" if raw else " (trained without --use_ema? pass --raw)"))
        pipeline.image_generator = StageGANGenerator.from_pretrained(folder / subfolder).eval()
        report = evaluate(
            pipeline, metrics=["judge", "r_precision"], num_images=evaluation_images, seed=seed, clip_ft=run / "clip",
            progress=False,
        )
        row = {"step": step, **scores(report)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = [f"| step | {' | '.join(COLUMNS)} |", "|---|" + "---|" * len(COLUMNS)]
    lines += [f"| {row['step']} | " + " | ".join(f"{row[c]:.3f}" for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Two panels against the step: the judge FD over its floor, and the attribute accuracies with R-precision."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(steps, [row["judge_fd_ratio"] for row in rows], marker="o")
    left.set_title("judge FD / real-vs-real floor (lower is better)", fontsize=9)
    for name in [column for column in COLUMNS if column != "judge_fd_ratio"]:
        right.plot(steps, [row[name] for row in rows], marker="o", label=name)
    right.set_title("judge accuracy per attribute, R-precision (eval CLIP)", fontsize=9)
    right.legend(fontsize=7)
    for axis in (left, right):
        axis.set_xlabel("training step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a train.py output folder with checkpoints")
    parser.add_argument("--evaluation_images", type=int, default=500, help="held-out captions per checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="image i is drawn from seed + i, as in train.py's evaluation")
    parser.add_argument("--raw", action="store_true", help="score the raw generator instead of its moving average")
    parser.add_argument("--out", type=Path, help="also write the JSON lines here")
    parser.add_argument("--plot", type=Path, help="also draw the curves to this PNG (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.evaluation_images < 1:
        parser.error(f"--evaluation_images must be >= 1, got {args.evaluation_images}")
    if not (args.run / "model_index.json").is_file():
        parser.error(f"{args.run} is not a finished train.py output folder (no model_index.json)")
    rows = score_checkpoints(args.run, args.evaluation_images, args.seed, args.raw)
    if args.out:
        args.out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(markdown_table(rows))
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
