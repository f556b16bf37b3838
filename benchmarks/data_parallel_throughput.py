"""
Training steps per second of the CPU main job as one process using every core, against one data-parallel process per
core (the same global batch), measured on `examples/train.py` itself.

Each setting runs train.py twice, for `--short` and `--long` steps (no validation, checkpoint or evaluation between),
and the step time is the wall-clock difference over the step difference, so that start-up and saving cancel out.
The settings alternate within each repeat, so their ratio holds when the shared machine's speed drifts.

    python benchmarks/data_parallel_throughput.py                    # 1 process x 2 threads vs 2 processes x 1 thread
    python benchmarks/data_parallel_throughput.py --short 30 --long 230 --repeats 2

One JSON line per run, then one per setting (median seconds per step and steps per second) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import emit, machine

TRAIN = Path(__file__).resolve().parent.parent / "examples" / "train.py"


def command(processes: int, steps: int, output_dir: Path, global_batch: int, mixed_precision: str) -> list[str]:
    threads = max(1, len(os.sched_getaffinity(0)) // processes)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    launch += ["--multi_gpu"] if processes > 1 else []
    launch += ["--num_machines", "1", "--dynamo_backend", "no"]
    train = [str(TRAIN), "--cpu", "--cpu_threads", str(threads), "--train_batch_size", str(global_batch // processes)]
    train += ["--mixed_precision", mixed_precision]
    train += ["--max_train_steps", str(steps), "--validation_steps", str(10**9), "--checkpointing_steps", str(10**9)]
    train += ["--evaluation_images", "0", "--report_to", "none", "--output_dir", str(output_dir)]
    return launch + train


def wall_seconds(argv: list[str], log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        subprocess.run(argv, check=True, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="settings to compare")
    parser.add_argument("--global_batch", type=int, default=16, help="images per step over all processes")
    parser.add_argument("--short", type=int, default=30)
    parser.add_argument("--long", type=int, default=130)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--mixed_precision", default="auto", help="train.py's: auto (bf16 where the CPU has it), no, bf16")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if not 0 < args.short < args.long:
        parser.error(f"--short and --long must satisfy 0 < short < long, got {args.short} and {args.long}")
    bad = [p for p in args.processes if p < 1 or args.global_batch % p]
    if bad:
        parser.error(f"--processes {bad}: each must be >= 1 and divide --global_batch {args.global_batch}")

    emit(benchmark="data_parallel_throughput", **machine(torch.device("cpu")), global_batch=args.global_batch,
         short=args.short, long=args.long, mixed_precision=args.mixed_precision)
    per_step = {processes: [] for processes in args.processes}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for processes in args.processes:
                times = {}
                for steps in (args.short, args.long):
                    folder = Path(tmp) / f"p{processes}-s{steps}-r{repeat}"
                    times[steps] = wall_seconds(command(processes, steps, folder, args.global_batch, args.mixed_precision), Path(tmp) / "log")
                seconds = (times[args.long] - times[args.short]) / (args.long - args.short)
                per_step[processes].append(seconds)
                emit(processes=processes, repeat=repeat, wall_short_s=times[args.short], wall_long_s=times[args.long],
                     seconds_per_step=seconds)
    medians = {processes: statistics.median(values) for processes, values in per_step.items()}
    for processes, seconds in medians.items():
        emit(processes=processes, median_seconds_per_step=seconds, steps_per_second=1 / seconds)
    first = args.processes[0]
    for processes in args.processes[1:]:
        emit(speedup=f"{processes} processes over {first}", ratio=medians[first] / medians[processes])


if __name__ == "__main__":
    main()
