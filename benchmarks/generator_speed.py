"""Parameter count, FLOPs per image and CPU latency of the StageGAN generator (default: the 256 px config).

    python benchmarks/generator_speed.py                      # 2 threads, fp32, batch 1 and 8
    python benchmarks/generator_speed.py --fusion_type memory --threads 2 --repeats 10

Latency is the best of `--repeats` timed runs after warm-up (least disturbed by other processes). The rate is
compared with this machine's fp32 2048x2048 matmul, measured the same way in the same run.
"""

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from hf_stagegan import StageGANConfig, StageGANGenerator


def best_seconds(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(repeats: int) -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    return 2 * 2048**3 / best_seconds(lambda: a @ b, repeats) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fusion_type", default="attention", choices=["attention", "memory"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--num_words", type=int, default=18, help="caption length in tokens (CUB captions: ~18)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = StageGANConfig(fusion_type=args.fusion_type)
    generator = StageGANGenerator(config).eval()

    def inputs(batch):
        return dict(
            noise=torch.randn(batch, config.z_dim),
            sentence_embeds=torch.randn(batch, config.text_embed_dim),
            word_embeds=torch.randn(batch, args.num_words, config.text_embed_dim),
        )

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        generator(**inputs(1))
    flops = counter.get_total_flops()
    params = sum(p.numel() for p in generator.parameters())
    reference = matmul_gflops(args.repeats)
    print(f"generator: {config.stage_resolutions} px, fusion={args.fusion_type}, {args.threads} threads, fp32")
    print(f"parameters: {params / 1e6:.2f} M")
    print(f"FLOPs per image: {flops / 1e9:.2f} GFLOP")
    print(f"matmul 2048^2 fp32: {reference:.1f} GFLOP/s")
    for batch in args.batch_sizes:
        x = inputs(batch)
        with torch.inference_mode():
            seconds = best_seconds(lambda x=x: generator(**x), args.repeats) / batch
        rate = flops / seconds / 1e9
        print(
            f"batch {batch}: {seconds * 1e3:.1f} ms/image, {rate:.1f} GFLOP/s "
            f"({100 * rate / reference:.0f}% of matmul)"
        )


if __name__ == "__main__":
    main()
