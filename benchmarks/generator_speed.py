"""Speed of the StageGAN generator (default: the 256 px config) in fp32 and bf16, against this machine's matmul.

    python benchmarks/generator_speed.py                                   # batch 1 and 8, fp32 and bf16, 2 threads
    python benchmarks/generator_speed.py --batch_sizes 1 2 4 8 16 32 > batch.jsonl   # for plot_batch_sizes.py
    python benchmarks/generator_speed.py --modes float32 autocast bfloat16 --repeats 9
    python benchmarks/generator_speed.py --device cuda --batch_sizes 1 8 64
    python benchmarks/generator_speed.py --generator stagegan-synthbirds    # a trained model: meaningful bf16 error

Modes: `float32` and `bfloat16` are the generator's weights in that dtype (`generator.to(dtype)`, as
`StageGANPipeline.from_pretrained(..., dtype=torch.bfloat16)` loads it); `autocast` is fp32 weights under
`torch.autocast(device, torch.bfloat16)`, which casts every weight on every call.

One JSON line per measurement. The first describes the machine and the model: parameters, FLOPs per image as executed
(`flops_per_image`) and as the textbook architecture counts them (`nominal_flops_per_image`: nearest upsampling then a
3x3 conv, which `UpBlock` computes as 2x2 phase convolutions with 2.25x fewer FLOPs). Then one line per (mode, batch):
ms per image (median, min, max over `--repeats`), the speed-up over float32 at the same batch, and the rates in
GFLOP/s, executed and effective (nominal FLOPs / time), each as a percentage of the matmul rate of the same dtype
(2048^3, `matmul_*` lines), and for bf16 modes the error of x3 against fp32 from the same (rounded) inputs, in percent
of the image range [-1, 1] (random weights give nearly flat images at the default initialisation, so that error means
something only with `--generator`). Each repeat times every case and both matmuls in turn; ratios are medians of per-repeat
ratios. The last line is the process's peak memory.
"""

import argparse
import contextlib
import copy
import statistics
from pathlib import Path
from unittest import mock

import torch
from common import DTYPES, emit, machine, matmul_gflops, parse_device, peak_memory, seconds, spread
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hf_stagegan import StageGANConfig, StageGANGenerator
from hf_stagegan.modeling_stagegan import UpBlock

MODES = ("float32", "bfloat16", "autocast", "float16")


def count_flops(generator, inputs, nominal: bool = False) -> int:
    """FLOPs of one forward; `nominal=True` counts UpBlock as upsampling + 3x3 conv (the architecture's own count)."""
    patch = mock.patch.object(UpBlock, "forward", nn.Sequential.forward) if nominal else contextlib.nullcontext()
    with patch, FlopCounterMode(display=False) as counter, torch.inference_mode():
        generator(**inputs)
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fusion_type", default="attention", choices=["attention", "memory"])
    parser.add_argument("--resolution", type=int, default=256, help="side of x3 (x1, x2: 1/4, 1/2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--modes", nargs="+", default=["float32", "bfloat16"], choices=MODES)
    parser.add_argument("--num_words", type=int, default=18, help="caption length in tokens (CUB captions: ~18)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="torch.compile the generator (inductor)")
    parser.add_argument(
        "--generator", type=Path, default=None,
        help="a trained generator (a saved pipeline folder or its image_generator/ folder) instead of random weights: "
        "the bf16 error is only meaningful on trained weights",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = parse_device(args.device)
    torch.manual_seed(0)

    side = args.resolution
    if args.generator is not None:
        folder = args.generator / "image_generator" if (args.generator / "image_generator").is_dir() else args.generator
        generator = StageGANGenerator.from_pretrained(folder).eval().to(device)
        config = generator.config
    else:
        config = StageGANConfig(fusion_type=args.fusion_type, stage_resolutions=[side // 4, side // 2, side])
        generator = StageGANGenerator(config).eval().to(device)

    def inputs(batch, dtype):
        torch.manual_seed(batch)
        return {
            "noise": torch.randn(batch, config.z_dim, device=device).to(dtype),
            "sentence_embeds": torch.randn(batch, config.text_embed_dim, device=device).to(dtype),
            "word_embeds": torch.randn(batch, args.num_words, config.text_embed_dim, device=device).to(dtype),
        }

    flops = count_flops(generator, inputs(1, torch.float32))
    nominal = count_flops(generator, inputs(1, torch.float32), nominal=True)
    emit(
        benchmark="generator_speed", **machine(device), resolution=config.stage_resolutions,
        fusion_type=args.fusion_type, parameters=generator.num_parameters(), flops_per_image=flops,
        nominal_flops_per_image=nominal, compiled=args.compile,
    )

    models, autocasts = {}, {}
    for mode in args.modes:
        dtype = torch.float32 if mode == "autocast" else DTYPES[mode]
        model = generator if dtype == torch.float32 else copy.deepcopy(generator).to(dtype)
        models[mode] = torch.compile(model) if args.compile else model
        autocasts[mode] = (
            (lambda: torch.autocast(device.type, torch.bfloat16)) if mode == "autocast" else contextlib.nullcontext
        )
    matmuls = {name: matmul_gflops(DTYPES[name], device) for name in ("float32", "bfloat16")}

    cases = [(mode, batch) for batch in args.batch_sizes for mode in args.modes]
    data = {case: inputs(case[1], torch.float32 if case[0] == "autocast" else DTYPES[case[0]]) for case in cases}

    def run(case):
        mode, _ = case
        with torch.inference_mode(), autocasts[mode]():
            return models[mode](**data[case]).images[-1]

    images = {}
    for case in cases:  # warm-up: oneDNN primitives, allocator, compilation
        run(case)
        images[case] = run(case).float()
    times = {case: [] for case in cases}
    rates = {name: [] for name in matmuls}
    for _ in range(args.repeats):
        for name, measure in matmuls.items():
            rates[name].append(measure())
        for case in cases:
            times[case].append(seconds(lambda case=case: run(case), device))

    for name, values in rates.items():
        emit(benchmark="generator_speed", measurement=f"matmul_{name}", gflops=spread(values)["median"],
             gflops_min=min(values), gflops_max=max(values), repeats=args.repeats)
    for mode, batch in cases:
        per_image = [t / batch for t in times[mode, batch]]
        ms = spread(per_image, 1e3)
        matmul = rates["float32" if mode == "float32" else "bfloat16"]
        fraction = statistics.median(nominal / t / 1e9 / r for t, r in zip(per_image, matmul))
        executed = statistics.median(flops / t / 1e9 / r for t, r in zip(per_image, matmul))
        baseline = times.get(("float32", batch))
        speedup = None
        if baseline is not None:
            speedup = statistics.median(b / t for b, t in zip(baseline, times[mode, batch]))
        accuracy = {}
        if ("float32", batch) in images:  # x3 in [-1, 1] against fp32 from the same (rounded) inputs
            error = (images[mode, batch] - images["float32", batch]).abs()
            accuracy = {"max_error_percent_of_range": 100 * error.max().item() / 2,
                        "mean_error_percent_of_range": 100 * error.mean().item() / 2,
                        "float32_image_std": images["float32", batch].std().item()}
        emit(
            benchmark="generator_speed", mode=mode, batch=batch, ms_per_image=ms["median"],
            images_per_second=1e3 / ms["median"],
            ms_per_image_min=ms["min"], ms_per_image_max=ms["max"], speedup_vs_float32=speedup,
            gflops_executed=flops / ms["median"] / 1e6, gflops_effective=nominal / ms["median"] / 1e6,
            percent_of_matmul=100 * fraction, percent_of_matmul_executed=100 * executed, matmul_dtype="float32" if mode == "float32" else "bfloat16",
            repeats=args.repeats, compiled=args.compile, **accuracy,
        )
    emit(benchmark="generator_speed", measurement="peak_memory", **peak_memory(device), note="whole process")


if __name__ == "__main__":
    main()
