"""
Ablations of the main job: each variant trained with the same data, steps and seeds as the full model, then scored by
`hf-stagegan evaluate` on SynthBirds' held-out captions (judge attribute accuracy, judge FD over its real-vs-real
floor, R-precision with the independent evaluation CLIP). One table of mean +- std over the seeds.

    python benchmarks/ablations.py                                    # every variant, seeds 0 1 2, the main job's steps
    python benchmarks/ablations.py --variants full no_clip_ft_losses --seeds 0 1 --max_train_steps 600
    python benchmarks/ablations.py --dry_run                          # print the training commands only
    python benchmarks/ablations.py --report_only --plot ablations.png # the table (and bars) of the finished runs

Every run is `examples/train.py` with the main job's defaults plus the variant's flags, so a row can be reproduced by
hand; finished runs (their `evaluation.json`) are reused, so an interrupted study resumes. `no_ema` and
`ema_copied_batch_norm` train nothing: they score a generator put together from the full run's final checkpoint (the
same training; see `FROM_FULL_RUN`). Prints one JSON line per run and per variant summary, then a Markdown table.

The one-level baseline of the issue (level 3 alone from noise and words, no gradual refinement) is not expressible
with `StageGANConfig`: its generator always has three levels, the first one fixed to noise only (claim 2).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "examples" / "train.py"

# variant -> train.py flags on top of the main job's defaults (README: `accelerate launch examples/train.py`)
VARIANTS: dict[str, list[str]] = {
    "full": [],
    # no Loss_CLIP_FT at all: levels 2 and 3 learn from their conditional discriminators only
    "no_clip_ft_losses": [
        "--config_overrides",
        json.dumps({"level2_sentence_weight": 0.0, "level3_sentence_weight": 0.0, "level3_word_weight": 0.0}),
    ],
    # AttnGAN-style end-to-end gradients instead of claim 8's per-level isolation
    "end_to_end": ["--stage_gradient", "end_to_end"],
    # levels 2 and 3 add a correction to the previous level's upsampled image instead of drawing a new one
    "image_skip": ["--image_skip"],
    # bilinear instead of nearest x2 upsampling before each of the generator's upsampling convolutions
    "bilinear_upsampling": ["--generator_upsampling", "bilinear"],
    # DM-GAN dynamic memory instead of attention fusion
    "memory_fusion": ["--fusion_type", "memory"],
    # the patent's L_D exactly: no matching-aware (mismatched caption) term
    "no_mismatched_text": ["--mismatched_text_weight", "0"],
    # D2 and D3 also judge real / fake from the image alone, as in AttnGAN and DM-GAN (weight 1, as the conditional term)
    "unconditional_discriminators": ["--unconditional_discriminator_weight", "1"],
    # the authors' mismatched term with another example's caption instead of a colour-swapped one
    "shuffled_mismatch": ["--mismatched_captions", "shuffled"],
    # Loss_CLIP_FT at half its weight against the adversarial terms (the patent's 1 : 4 : 1 kept among the three)
    "half_clip_ft_weights": [
        "--config_overrides",
        json.dumps({"level2_sentence_weight": 0.5, "level3_sentence_weight": 2.0, "level3_word_weight": 0.5}),
    ],
    # the raw generator saved instead of its moving average (the same training)
    "no_ema": ["--no-use_ema"],
    # the moving average with the batch-norm statistics it copies from the training generator, not recomputed
    "ema_copied_batch_norm": ["--ema_batch_norm_samples", "0"],
    # CLIP_FT from a small random CLIP on the job's birds instead of from the SynthBirds base CLIP (hf_stagegan.base_clip)
    "clip_from_scratch": ["--clip_from_scratch"],
    # D1 twice as wide (64 channels) and without spectral norm; D2 and D3 as in the main job
    "wide_d1_without_spectral_norm": [
        "--discriminator_channels", "64", "32", "32", "--discriminator_spectral_norm", "false", "true", "true",
    ],
    # D1, D2 and D3 read CLIP_FT's frozen image tower under a small head without spectral norm (GALIP-style)
    "clip_discriminators": ["--discriminator_backbone", "clip", "--discriminator_spectral_norm", "false"],
    # every learning rate decays to 0 by the last step along a cosine instead of staying constant (the patent's)
    "cosine_lr": ["--lr_scheduler", "cosine"],
    # the word term of Loss_CLIP_FT (the one that matches words against image regions) at twice its weight
    "double_word_weight": ["--config_overrides", json.dumps({"level3_word_weight": 2.0})],
    # each caption's colour-swapped version is an extra wrong class of the generator's Loss_CLIP_FT terms
    "text_loss_hard_negatives": ["--text_loss_hard_negatives"],
    # five times the birds: the 10 000 of SynthBirds' train split the base CLIP learns from (the job's 2000 among them)
    "more_birds": ["--synthbirds_num_train", "10000"],
    # the patent authors' Adam betas (0.5, 0.999) on both sides instead of the main job's (0, 0.9) (DF-GAN, StyleGAN2)
    "adam_betas_05_0999": [
        "--generator_adam_beta1", "0.5", "--generator_adam_beta2", "0.999",
        "--discriminator_adam_beta1", "0.5", "--discriminator_adam_beta2", "0.999",
    ],
}
# Variants that need no training of their own: the moving average and its batch-norm statistics never feed back into
# training (validation and the recomputation draw their own seeded noise), so the generator these flags would have
# saved can be put together from the full run's final checkpoint: its raw generator (`no_ema`), or its EMA weights
# with the raw generator's buffers, which is what the EMA copies at every step (`ema_copied_batch_norm`). The script
# scores that one, as train.py's final evaluation would, instead of training again.
FROM_FULL_RUN = {"no_ema", "ema_copied_batch_norm"}
HEADLINE = [
    ("body_color", "body"),
    ("wing_color", "wing"),
    ("crown_color", "crown"),
    ("beak_color", "beak"),
]


def run_folder(output_dir: Path, variant: str, seed: int) -> Path:
    return output_dir / f"{variant}-seed{seed}"


def train_command(variant: str, seed: int, folder: Path, args) -> list[str]:
    command = [sys.executable, str(TRAIN), "--output_dir", str(folder), "--seed", str(seed), "--report_to", "none"]
    command += ["--evaluation_images", str(args.evaluation_images), "--overwrite_output_dir"]
    if args.max_train_steps:
        command += ["--max_train_steps", str(args.max_train_steps)]
    return command + VARIANTS[variant] + args.extra


def evaluate_from_full_run(variant: str, full_folder: Path, folder: Path, seed: int, evaluation_images: int) -> None:
    """A `FROM_FULL_RUN` variant from the full run: the generator it would have saved (see `FROM_FULL_RUN`) in the
    full run's pipeline, evaluated with train.py's end-of-training settings, saved (pipeline, card,
    `evaluation.json`) to `folder`."""
    if variant not in FROM_FULL_RUN:
        raise ValueError(f"`variant` must be one of {sorted(FROM_FULL_RUN)}, got {variant!r}.")
    import torch
    from safetensors.torch import load_file

    from hf_stagegan import StageGANGenerator, StageGANPipeline
    from hf_stagegan.checkpointing import list_checkpoints
    from hf_stagegan.evaluation import evaluate
    from hf_stagegan.hub import save_stagegan_pipeline

    checkpoints = list_checkpoints(full_folder)
    if not checkpoints or not (checkpoints[-1][1] / "ema_generator").is_dir():
        raise FileNotFoundError(f"{full_folder} has no checkpoint with an EMA generator to take the generators from")
    step, checkpoint = checkpoints[-1]
    saved = load_file(full_folder / "image_generator" / "model.safetensors")
    ema = load_file(checkpoint / "ema_generator" / "model.safetensors")
    if saved.keys() != ema.keys() or not all(torch.equal(saved[k], ema[k]) for k in saved):
        raise ValueError(f"{checkpoint} is not the step {full_folder} saved: its EMA generator differs from the pipeline's")
    pipeline = StageGANPipeline.from_pretrained(full_folder)
    raw = StageGANGenerator.from_pretrained(checkpoint / "generator").eval()
    if variant == "no_ema":
        pipeline.image_generator, description = raw, f"The raw generator (no EMA) of `{full_folder.name}`'s final checkpoint, step {step}."
    else:
        with torch.no_grad():
            for average, copied in zip(pipeline.image_generator.buffers(), raw.buffers()):
                average.copy_(copied)
        description = (
            f"The EMA generator of `{full_folder.name}`'s final checkpoint, step {step}, with the batch-norm statistics "
            "of the training generator (not recomputed)."
        )
    report = evaluate(
        pipeline, metrics=["judge", "r_precision"], num_images=evaluation_images, seed=seed,
        clip_ft=full_folder / "clip", progress=False,
    )
    save_stagegan_pipeline(
        folder, pipeline, evaluation_report=report, seed=seed,
        description=description,
    )


def scores(report: dict) -> dict[str, float]:
    """The table's numbers from one `hf-stagegan evaluate` report."""
    metrics = report["metrics"]
    judge = metrics["judge"]
    row = {name: judge["generated"]["accuracy"][attribute] for attribute, name in HEADLINE}
    row["judge_fd_ratio"] = judge["fd_ratio"]
    row["r_precision"] = metrics["r_precision"]["eval_clip"]["generated"]["mean"]
    row["r_precision_real"] = metrics["r_precision"]["eval_clip"]["real"]["mean"]
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max_train_steps", type=int, help="default: the main job's")
    parser.add_argument("--evaluation_images", type=int, default=500, help="held-out captions per evaluation")
    parser.add_argument("--output_dir", type=Path, default=Path("runs/ablations"))
    parser.add_argument("--dry_run", action="store_true", help="print the commands, train nothing")
    parser.add_argument(
        "--report_only", action="store_true", help="tabulate the finished runs only; train and evaluate nothing"
    )
    parser.add_argument("--plot", type=Path, help="also draw the table as bars (mean, std, one dot per seed) to this PNG")
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more train.py flags for every run")
    args = parser.parse_args(argv)
    args.extra = args.extra[1:] if args.extra[:1] == ["--"] else args.extra
    if args.evaluation_images < 1:
        parser.error(f"--evaluation_images must be >= 1, got {args.evaluation_images}")

    results: dict[str, list[dict]] = {}
    for variant in args.variants:
        for seed in args.seeds:
            folder = run_folder(args.output_dir, variant, seed)
            command = train_command(variant, seed, folder, args)
            if args.dry_run:
                print(" ".join(command))
                continue
            report_path = folder / "evaluation.json"
            if args.report_only and not report_path.is_file():
                print(json.dumps({"variant": variant, "seed": seed, "missing": str(report_path)}), flush=True)
                continue
            wall = None
            if not report_path.is_file():  # not finished yet
                start = time.perf_counter()
                if variant in FROM_FULL_RUN:
                    full_folder = run_folder(args.output_dir, "full", seed)
                    if not (full_folder / "evaluation.json").is_file():
                        raise FileNotFoundError(
                            f"{variant} is scored from the full run of seed {seed}: run `--variants full --seeds "
                            f"{seed}` first (or train it by hand: {' '.join(command)})"
                        )
                    evaluate_from_full_run(variant, full_folder, folder, seed, args.evaluation_images)
                else:
                    folder.parent.mkdir(parents=True, exist_ok=True)
                    with open(folder.parent / f"{folder.name}.log", "w") as log:
                        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
                wall = time.perf_counter() - start
            row = {"variant": variant, "seed": seed, **scores(json.loads(report_path.read_text())), "wall_s": wall}
            results.setdefault(variant, []).append(row)
            print(json.dumps(row), flush=True)
    if args.dry_run:
        return

    summaries = [summarise(variant, rows) for variant, rows in results.items()]
    for summary in summaries:
        print(json.dumps(summary), flush=True)
    print(markdown_table(summaries))
    if args.plot and summaries:
        plot(results, args.plot)


COLUMNS = [name for _, name in HEADLINE] + ["judge_fd_ratio", "r_precision"]


def summarise(variant: str, rows: list[dict]) -> dict:
    """Mean and (population) std over the seeds of every column."""
    summary = {"variant": variant, "seeds": [row["seed"] for row in rows]}
    for column in COLUMNS:
        values = np.array([row[column] for row in rows], dtype=float)
        summary[column] = {"mean": float(values.mean()), "std": float(values.std())}
    return summary


def markdown_table(summaries: list[dict]) -> str:
    lines = [f"| variant | seeds | {' | '.join(COLUMNS)} |", "|---|---|" + "---|" * len(COLUMNS)]
    for summary in summaries:
        seeds = " ".join(str(seed) for seed in summary["seeds"])
        cells = [
            f"{summary[c]['mean']:.3f} ± {summary[c]['std']:.3f}" if len(summary["seeds"]) > 1 else f"{summary[c]['mean']:.3f}"
            for c in COLUMNS
        ]
        lines.append(f"| {summary['variant']} | {seeds} | {' | '.join(cells)} |")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    """One panel per column: a bar per variant (mean over its seeds, std as the error bar) and a dot per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"judge_fd_ratio": "judge FD / floor (lower is better)", "r_precision": "R-precision, eval CLIP"}
    variants = list(results)
    figure, axes = plt.subplots(1, len(COLUMNS), figsize=(3.2 * len(COLUMNS), 3.6), squeeze=False)
    for axis, column in zip(axes[0], COLUMNS):
        for x, variant in enumerate(variants):
            values = np.array([row[column] for row in results[variant]], dtype=float)
            axis.bar(x, values.mean(), yerr=values.std() if len(values) > 1 else None, capsize=3, alpha=0.6)
            axis.scatter(np.full(len(values), x), values, s=10, color="black", zorder=3)
        axis.set_title(titles.get(column, f"{column} colour accuracy"), fontsize=9)
        axis.set_xticks(range(len(variants)), variants, rotation=60, ha="right", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()
