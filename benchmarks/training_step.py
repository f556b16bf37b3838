"""Seconds per full StageGAN training step and peak memory on this machine.

One step = text encoding, x1/x2/x3 generation, the D1/D2/D3 updates and the G update with L_G1, L_G2 + Loss_CLIP_FT_s
and L_G3 + Loss_CLIP_FT (global and region features of x2/x3 through the CLIP image tower) - everything
`hf_stagegan.training.training_step` does. Default: the 256 px config, batch 8, fp32, 2 threads, and a randomly
initialised CLIP the size of ViT-B/32 (the matching model the authors use).

    python benchmarks/training_step.py
    python benchmarks/training_step.py --resolution 64 --generator_channels 32 --discriminator_channels 32 \
        --clip small --batch_size 16                               # the CPU main job's configuration
"""

import argparse
import resource
import time

import torch
from transformers import CLIPConfig, CLIPModel

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator
from hf_stagegan.clip_finetuning import SMALL_CLIP
from hf_stagegan.encoders import build_clip_from_scratch, train_clip_tokenizer
from hf_stagegan.training import build_optimizers, training_step

CAPTION = "this bird has a red body, black wings, a yellow crown and a short grey beak"


def vit_b32_clip(vocab_size: int, eos_token_id: int) -> CLIPModel:
    text = dict(vocab_size=vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, bos_token_id=0, eos_token_id=eos_token_id)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--generator_channels", type=int, default=32)
    parser.add_argument("--discriminator_channels", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--clip", choices=["vit-b32", "small"], default="vit-b32")
    parser.add_argument("--fusion_type", default="attention", choices=["attention", "memory"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    tokenizer = train_clip_tokenizer([CAPTION] * 20, vocab_size=300)
    if args.clip == "vit-b32":
        clip = vit_b32_clip(len(tokenizer), tokenizer.eos_token_id)
    else:
        clip = build_clip_from_scratch(tokenizer, **SMALL_CLIP)
    clip.eval().requires_grad_(False)
    side = args.resolution
    config = StageGANConfig(
        stage_resolutions=[side // 4, side // 2, side], generator_channels=args.generator_channels,
        discriminator_channels=args.discriminator_channels, text_embed_dim=clip.config.projection_dim,
        fusion_type=args.fusion_type,
    )
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    optimizers = build_optimizers(generator, discriminator)
    text = tokenizer([CAPTION] * args.batch_size, padding=True, return_tensors="pt")
    batch = {"pixel_values": torch.rand(args.batch_size, 3, side, side) * 2 - 1, **text}

    def step():
        return training_step(
            batch, generator=generator, discriminator_levels=discriminator.levels, clip_model=clip, optimizers=optimizers
        )

    step()  # warm-up (allocator, oneDNN kernels)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB
    print(f"config: {config.stage_resolutions} px, G {args.generator_channels} ch, D {args.discriminator_channels} ch, "
          f"fusion={args.fusion_type}, CLIP {args.clip}, batch {args.batch_size}, {args.threads} threads, fp32")
    print(f"seconds per step: best {min(times):.2f}, median {sorted(times)[len(times) // 2]:.2f} ({args.steps} steps)")
    print(f"peak memory (RSS): {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
