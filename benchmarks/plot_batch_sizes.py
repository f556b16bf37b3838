"""Plots ms per image against batch size from `generator_speed.py`'s JSON lines (one line per mode and batch size).

    python benchmarks/generator_speed.py --batch_sizes 1 2 4 8 16 32 --modes float32 bfloat16 > batch.jsonl
    python benchmarks/plot_batch_sizes.py batch.jsonl --out docs/images/ms_per_image_vs_batch.png

Needs matplotlib (`pip install -e ".[benchmarks]"`). Each mode is one line: the median, with the min-max band.
"""

import argparse
import json
from collections import defaultdict
from pathlib import Path


def read_measurements(paths: list[Path]) -> tuple[dict, dict[str, list[dict]]]:
    """The header (machine, model) and the per-mode measurements of generator_speed JSON lines."""
    header, modes = {}, defaultdict(list)
    for path in paths:
        for line in path.read_text().splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("benchmark") != "generator_speed":
                continue
            if "mode" in record:
                modes[record["mode"]].append(record)
            elif "parameters" in record:
                header = record
    if not modes:
        raise SystemExit(f"no generator_speed measurements in {[str(p) for p in paths]}")
    return header, {mode: sorted(rows, key=lambda row: row["batch"]) for mode, rows in modes.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="JSON-lines files written by generator_speed.py")
    parser.add_argument("--out", type=Path, default=Path("ms_per_image_vs_batch.png"))
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    header, modes = read_measurements(args.results)
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for mode, rows in modes.items():
        batches = [row["batch"] for row in rows]
        axes.plot(batches, [row["ms_per_image"] for row in rows], marker="o", label=mode)
        axes.fill_between(batches, [row["ms_per_image_min"] for row in rows], [row["ms_per_image_max"] for row in rows],
                          alpha=0.2)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted({row["batch"] for rows in modes.values() for row in rows}))
    axes.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.set_ylim(bottom=0)
    axes.set_xlabel("batch size")
    axes.set_ylabel("ms per image (median, min-max band)")
    side = header.get("resolution", ["?"])[-1]
    threads = header.get("threads", "?")
    axes.set_title(f"StageGAN generator, {side} px, {header.get('device', '?')}, {threads} threads", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.out)
    print(json.dumps({"benchmark": "plot_batch_sizes", "written": str(args.out), "modes": sorted(modes)}))


if __name__ == "__main__":
    main()
