#!/usr/bin/env bash
# The GPU figures of docs/performance.md, in one go: one JSON line per measurement on stdout.
#
#   bash benchmarks/gpu.sh > gpu.jsonl            # on a machine with one CUDA GPU and this package installed
#
# - the default (256 px) generator in fp32 and bf16 at batch 1, 8 and 64: ms and images per second, peak GPU memory;
# - the training step, fp32 and bf16 mixed precision: the 256 px / batch 8 / ViT-B/32-sized CLIP configuration and
#   the CPU main job's (64 px, batch 16, small CLIP), with peak GPU memory;
# - our pipeline against diffusion (SD 1.5-configured UNet, DDIM 50 steps with guidance, VAE decode), every step timed.
set -euo pipefail
cd "$(dirname "$0")"
python generator_speed.py --device cuda --batch_sizes 1 8 64 --modes float32 bfloat16 --repeats 20
python training_step.py --device cuda --mixed_precision no bf16 --breakdown --steps 10
python training_step.py --device cuda --resolution 64 --generator_channels 32 --discriminator_channels 32 \
    --clip small --batch_size 16 --mixed_precision no bf16 --steps 10
python vs_diffusion.py --device cuda --full --repeats 10
