"""
Curves of a training run from its TensorBoard logs (`examples/train.py --report_to tensorboard`, the default): the
discriminator and generator losses per level, and the judge's attribute accuracy at each validation when it ran.

    python benchmarks/plot_training_logs.py stagegan-synthbirds --out docs/images/main-job-curves.png
    python benchmarks/plot_training_logs.py runs/256px --out curves.png --smooth 20

Needs matplotlib (`pip install -e ".[benchmarks]"`) and tensorboard (which `--report_to tensorboard` already needs).
Prints one JSON line per curve: its name, number of points, first and last (smoothed) value.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def read_scalars(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every scalar under `run/logs` as tag -> (steps, values), sorted by step (several event files are merged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted((run / "logs").rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event file under {run / 'logs'}: train with `--report_to tensorboard`.")
    scalars: dict[str, dict[int, float]] = {}
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        for tag in events.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({event.step: event.value for event in events.Scalars(tag)})
    return {tag: (np.array(sorted(points)), np.array([points[s] for s in sorted(points)])) for tag, points in scalars.items()}


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (shorter at the start)."""
    if window <= 1:
        return values
    cumulative = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (cumulative[1:] - cumulative[np.arange(1, len(values) + 1) - counts]) / counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the training run's output folder")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--smooth", type=int, default=25, help="moving-average window of the loss curves, in steps")
    args = parser.parse_args(argv)
    if args.smooth < 1:
        parser.error(f"--smooth must be >= 1, got {args.smooth}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scalars = read_scalars(args.run)
    panels = [
        ("discriminator losses", [f"loss_d{k}" for k in (1, 2, 3)], args.smooth),
        ("generator losses", [f"loss_g{k}" for k in (1, 2, 3)], args.smooth),
        ("judge accuracy at validation", sorted(tag for tag in scalars if tag.startswith("judge/")), 1),
    ]
    panels = [(title, [tag for tag in tags if tag in scalars], window) for title, tags, window in panels]
    panels = [panel for panel in panels if panel[1]]
    if not panels:
        raise SystemExit(f"none of the loss or judge curves is in {args.run / 'logs'}; found {sorted(scalars)}")
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), dpi=110, squeeze=False)
    for axis, (title, tags, window) in zip(axes[0], panels):
        for tag in tags:
            steps, values = scalars[tag]
            curve = smooth(values, window)
            axis.plot(steps, curve, label=tag.removeprefix("judge/"), marker="o" if window == 1 else None)
            print(json.dumps({"curve": tag, "points": len(steps), "first": float(curve[0]), "last": float(curve[-1])}))
        axis.set_title(title)
        axis.set_xlabel("step")
        if "loss" in title:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)


if __name__ == "__main__":
    main()
