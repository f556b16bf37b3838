"""Seconds per full StageGAN training step, fp32 and bf16 mixed precision, where the time goes, and peak memory.

One step = text encoding, x1/x2/x3 generation, the D1/D2/D3 updates and the G update with L_G1, L_G2 + Loss_CLIP_FT_s
and L_G3 + Loss_CLIP_FT (global and region features of x2/x3 through the CLIP image tower) - everything
`hf_stagegan.training.training_step` does. Default: the 256 px config, batch 8, 2 threads, and a randomly initialised
CLIP the size of ViT-B/32 (the matching model the authors use).

    python benchmarks/training_step.py                                         # 256 px, batch 8, ViT-B/32 CLIP, fp32
    python benchmarks/training_step.py --mixed_precision no bf16 --breakdown  # both, alternating, and the parts
    python benchmarks/training_step.py --resolution 64 --generator_channels 32 --discriminator_channels 32 \
        --clip small --batch_size 16                               # the CPU main job's configuration

`--mixed_precision bf16` runs the step under `torch.autocast(device, torch.bfloat16)`, what `accelerate launch
examples/train.py --mixed_precision bf16` does (weights and optimizer states stay fp32). Several values alternate step
by step in one process, so their ratio holds when the machine's speed drifts; `peak_rss_gb` is then the peak of the
whole process (run one value per process for each one's own peak).

`--breakdown` also times the parts of a step on their own, fwd + bwd with the step's shapes: the generator, the three
discriminators (their update on real + fake, and the generator's pass through them), the CLIP image tower on x2 and
x3 (resized to its input size; backward to the images) and the text encoder; each round times a step and then every
part, and a part's share is the median of its per-round share. One JSON line per measurement.
"""

import argparse
import contextlib
import statistics

import torch
from common import emit, machine, parse_device, peak_memory, seconds, spread
from transformers import CLIPConfig, CLIPModel

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator
from hf_stagegan.clip_finetuning import SMALL_CLIP
from hf_stagegan.configuration_stagegan import GENERATOR_UPSAMPLINGS
from hf_stagegan.encoders import build_clip_from_scratch, encode_images, encode_text, train_clip_tokenizer
from hf_stagegan.training import (
    build_optimizers,
    discriminate,
    level_conditions,
    real_images_per_level,
    training_step,
)

CAPTION = "this bird has a red body, black wings, a yellow crown and a short grey beak"


def vit_b32_clip(vocab_size: int, eos_token_id: int) -> CLIPModel:
    text = dict(vocab_size=vocab_size, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                num_attention_heads=8, max_position_embeddings=77, bos_token_id=0, eos_token_id=eos_token_id)
    vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  image_size=224, patch_size=32)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=512))


def parts(batch, generator, discriminator, clip):
    """Each part of a step as a function that runs its forward and backward (see the module docstring)."""
    config = generator.config
    real = real_images_per_level(batch["pixel_values"], config)
    with torch.no_grad():
        text = encode_text(clip, batch["input_ids"], batch["attention_mask"])
    conditions = level_conditions(text)
    noise = torch.randn(real[0].shape[0], config.z_dim, device=real[0].device)

    def generate():
        return generator(noise=noise, sentence_embeds=text.sentence_embeds, word_embeds=text.word_embeds,
                         word_mask=text.word_mask).images

    with torch.no_grad():
        fakes = [image.float() for image in generate()]

    def generator_part():
        sum(image.float().mean() for image in generate()).backward()

    def discriminator_update():
        for level, d in enumerate(discriminator.levels):
            images = torch.cat([real[level], fakes[level]])
            condition = None if conditions[level] is None else conditions[level].repeat(2, 1)
            discriminate(d, images, condition).float().mean().backward()

    def discriminators_for_generator():
        for level, d in enumerate(discriminator.levels):
            images = fakes[level].detach().requires_grad_()
            discriminate(d, images, conditions[level]).float().mean().backward()

    def clip_images():
        for image in fakes[1:]:
            features = encode_images(clip, image.detach().requires_grad_())
            (features.image_embeds.float().sum() + features.region_embeds.float().sum()).backward()

    def text_encoding():
        with torch.no_grad():
            encode_text(clip, batch["input_ids"], batch["attention_mask"])

    return {
        "generator fwd+bwd": generator_part,
        "discriminator updates fwd+bwd (real+fake, 3 levels)": discriminator_update,
        "discriminators in the generator loss fwd+bwd": discriminators_for_generator,
        "CLIP image tower on x2 and x3 fwd+bwd": clip_images,
        "text encoding": text_encoding,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--generator_channels", type=int, default=32)
    parser.add_argument("--discriminator_channels", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--clip", choices=["vit-b32", "small"], default="vit-b32")
    parser.add_argument("--fusion_type", default="attention", choices=["attention", "memory"])
    parser.add_argument(
        "--discriminator_backbone", nargs=3, default=["conv"] * 3, choices=["conv", "clip"], metavar="{conv,clip}",
        help="D1 D2 D3: their own convolutions or the frozen CLIP image tower (clip levels without spectral norm)",
    )
    parser.add_argument(
        "--image_skip", action="store_true", help="levels 2 and 3 draw corrections to the upsampled previous image"
    )
    parser.add_argument(
        "--generator_upsampling", default="nearest", choices=list(GENERATOR_UPSAMPLINGS),
        help="how the generator's upsampling blocks double their maps (config `generator_upsampling`)",
    )
    parser.add_argument("--mixed_precision", nargs="+", default=["no"], choices=["no", "bf16"])
    parser.add_argument("--breakdown", action="store_true", help="also time the parts of a step on their own")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = parse_device(args.device)
    torch.manual_seed(0)

    tokenizer = train_clip_tokenizer([CAPTION] * 20, vocab_size=300)
    if args.clip == "vit-b32":
        clip = vit_b32_clip(len(tokenizer), tokenizer.eos_token_id)
    else:
        clip = build_clip_from_scratch(tokenizer, **SMALL_CLIP)
    clip.to(device).eval().requires_grad_(False)
    side = args.resolution
    config = StageGANConfig(
        stage_resolutions=[side // 4, side // 2, side], generator_channels=args.generator_channels,
        discriminator_channels=args.discriminator_channels, text_embed_dim=clip.config.projection_dim,
        fusion_type=args.fusion_type, image_skip=args.image_skip, generator_upsampling=args.generator_upsampling,
        discriminator_backbone=args.discriminator_backbone, discriminator_spectral_norm=[backbone == "conv" for backbone in args.discriminator_backbone],
        discriminator_vision_config=clip.config.vision_config if "clip" in args.discriminator_backbone else None,
    )
    generator, discriminator = StageGANGenerator(config).to(device), StageGANDiscriminator(config).to(device)
    if discriminator.vision_backbone is not None:
        discriminator.load_vision_backbone(clip)
    optimizers = build_optimizers(generator, discriminator)
    text = tokenizer([CAPTION] * args.batch_size, padding=True, return_tensors="pt").to(device)
    batch = {"pixel_values": torch.rand(args.batch_size, 3, side, side, device=device) * 2 - 1, **text}
    emit(
        benchmark="training_step", **machine(device), resolution=config.stage_resolutions,
        generator_channels=args.generator_channels, discriminator_channels=args.discriminator_channels,
        fusion_type=args.fusion_type, image_skip=args.image_skip, generator_upsampling=args.generator_upsampling,
        discriminator_backbone=args.discriminator_backbone, clip=args.clip, batch_size=args.batch_size,
        generator_parameters=generator.num_parameters(), discriminator_parameters=discriminator.num_parameters(),
        clip_parameters=clip.num_parameters(),
    )

    def precision(name):
        return torch.autocast(device.type, torch.bfloat16) if name == "bf16" else contextlib.nullcontext()

    def step(name):
        with precision(name):
            training_step(
                batch, generator=generator, discriminator_levels=discriminator.levels, clip_model=clip,
                optimizers=optimizers,
            )

    functions = parts(batch, generator, discriminator, clip) if args.breakdown else {}
    for name in args.mixed_precision:  # warm-up (allocator, oneDNN kernels)
        step(name)
        with precision(name):
            for fn in functions.values():
                fn()
    # every round times a step and each part in every precision in turn: ratios and shares are per round
    times = {name: [] for name in args.mixed_precision}
    part_times = {(name, part): [] for name in args.mixed_precision for part in functions}
    for _ in range(args.steps):
        for name in args.mixed_precision:
            times[name].append(seconds(lambda name=name: step(name), device))
            with precision(name):
                for part, fn in functions.items():
                    part_times[name, part].append(seconds(fn, device))
    generator.zero_grad(set_to_none=True)
    discriminator.zero_grad(set_to_none=True)

    baseline = times.get("no")
    for name, values in times.items():
        s = spread(values)
        ratio = statistics.median(b / t for b, t in zip(baseline, values)) if baseline else None
        emit(benchmark="training_step", mixed_precision=name, seconds_per_step=s["median"], seconds_min=s["min"],
             seconds_max=s["max"], speedup_vs_fp32=ratio, steps=args.steps)
    for (name, part), values in part_times.items():
        share = statistics.median(t / step_time for t, step_time in zip(values, times[name]))
        emit(benchmark="training_step", mixed_precision=name, part=part, seconds=statistics.median(values),
             share_of_step=share, steps=args.steps)

    emit(benchmark="training_step", measurement="peak_memory", **peak_memory(device),
         note="whole process" if len(args.mixed_precision) > 1 else f"mixed_precision={args.mixed_precision[0]}")


if __name__ == "__main__":
    main()
