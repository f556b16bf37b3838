"""Seconds per CLIP_FT step and peak memory with a CLIP of ViT-B/32's exact architecture (openai/clip-vit-base-patch32:
151,277,313 parameters, 224 px images, a 7 x 7 patch grid of regions) and OpenAI's real BPE tokenizer.

One step = `hf_stagegan.clip_finetuning.clip_finetuning_step`: both towers forward on a batch of image-caption pairs,
the sentence-image and word-region losses, backward, one AdamW update of every CLIP weight (what `finetune_clip`
repeats). The weights are random (no download): the time and memory are those of the real model. The tokenizer is
built offline from the `bpe_simple_vocab_16e6.txt.gz` that open-clip-torch ships (`pip install --no-deps
open-clip-torch`); captions are CUB-like, 17 tokens.

The machine is shared and its load varies, so next to the seconds the script counts the step's FLOPs
(`torch.utils.flop_counter`) and measures a 2048 x 2048 fp32 matmul between the steps: the step's FLOP rate as a share
of the matmul rate is the figure that carries over to an idle machine (and the FLOPs to a GPU estimate).

    python benchmarks/clip_ft_step.py                          # batch 16 and 48 (GR-GAN's ITM batch), CPU
    python benchmarks/clip_ft_step.py --batch_sizes 48 --device cuda --dtype bf16
"""

import argparse
import resource
import time
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPConfig, CLIPModel

from hf_stagegan.clip_finetuning import CLIPMatchingLoss, clip_finetuning_step
from hf_stagegan.encoders import clip_tokenizer_from_bpe, tokenize_prompts

CAPTIONS = [
    "this bird has a red crown, black wings and a short pointed grey beak",
    "a small yellow bird with white wing bars and a black cap on its head",
    "the bird is mostly brown with a white belly and a long curved bill",
    "this is a blue bird with black and white striped wings and a short beak",
]


def vit_b32_clip() -> CLIPModel:
    """CLIPConfig's defaults are openai/clip-vit-base-patch32's architecture; the Hub config's token ids too."""
    return CLIPModel(CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}))


def matmul_seconds(device) -> tuple[float, float]:
    """Seconds of one fp32 2048 x 2048 matmul (best of 3) and its FLOPs."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), 2 * 2048**3


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast (mixed precision)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    tokenizer = clip_tokenizer_from_bpe()
    clip = vit_b32_clip().to(device).train()
    clip.logit_scale.requires_grad_(False)  # as finetune_clip: the logits are scaled by the fixed gamma3
    parameters = sum(p.numel() for p in clip.parameters())
    optimizer = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=1e-5, betas=(0.9, 0.98))
    matcher = CLIPMatchingLoss(clip)
    grid = clip.config.vision_config.image_size // clip.config.vision_config.patch_size
    print(f"CLIP ViT-B/32 architecture: {parameters:,} parameters, {grid} x {grid} regions, {args.device}, {args.dtype}, "
          f"{args.threads} CPU threads")

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext():
            logs = clip_finetuning_step(batch, matcher, optimizer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return logs

    for batch_size in args.batch_sizes:
        captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(batch_size)]
        text = tokenize_prompts(tokenizer, captions)
        batch = {
            "pixel_values": (torch.rand(batch_size, 3, 224, 224) * 2 - 1).to(device),
            "input_ids": text.input_ids.to(device),
            "attention_mask": text.attention_mask.to(device),
        }
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        with FlopCounterMode(display=False) as counter:
            step(batch)  # also the warm-up: allocator, kernels, AdamW state
        flops = counter.get_total_flops()
        times, shares = [], []
        for _ in range(args.steps):
            start = time.perf_counter()
            logs = step(batch)
            times.append(time.perf_counter() - start)
            reference_seconds, reference_flops = matmul_seconds(device)
            shares.append((flops / times[-1]) / (reference_flops / reference_seconds))
        if device.type == "cuda":
            memory = f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        else:
            memory = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process so far)"
        median = sorted(times)[len(times) // 2]
        print(f"batch {batch_size} ({text.input_ids.shape[1]} tokens): {flops / 1e12:.2f} TFLOP per step; "
              f"{median:.2f} s per step (median of {args.steps}, best {min(times):.2f}), {batch_size / median:.1f} "
              f"pairs/s; step FLOP rate = {100 * max(shares):.0f}% of the matmul's (best); {memory}; "
              f"loss {logs['clip_loss']:.3f}")


if __name__ == "__main__":
    main()
