"""FLOPs of one CUB epoch of the recipe in docs/training.md, and the wall time they imply on one GPU.

Counts (with `torch.utils.flop_counter`, on CPU, one step each) the FLOPs of
- a CLIP_FT step with a CLIP of ViT-B/32's architecture (`clip_finetuning_step`: both towers, both losses, backward),
- a StageGAN training step at 256 px with the authors' widths (G 64, D 32 channels) and that CLIP as the matching
  model (`training_step`: text encoding, x1/x2/x3, D1-D3 updates, the G update through the CLIP image tower twice),
then multiplies by the steps of one epoch of the literature split (8,855 training images) and divides by a GPU's dense
peak throughput times an assumed utilisation (model FLOPs utilisation, MFU). No GPU was available to measure: the MFU
range is an assumption, stated in the output; with a GPU, `benchmarks/training_step.py` and
`benchmarks/clip_ft_step.py --device cuda` measure instead.

    python benchmarks/cub_epoch_estimate.py
    python benchmarks/cub_epoch_estimate.py --gan_batch_size 10 --clip_batch_size 48
"""

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import CLIPConfig, CLIPModel

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator
from hf_stagegan.clip_finetuning import CLIPMatchingLoss, clip_finetuning_step
from hf_stagegan.training import build_optimizers, training_step

NUM_TRAIN = 8855  # CUB, literature split
GPUS = {  # dense peak TFLOP/s from the vendors' data sheets: (TF32 tensor core, BF16 tensor core)
    "A100 (SXM)": (156, 312),
    "H100 (SXM)": (495, 989),
}
MFU = (0.05, 0.30)  # assumed: batch-8 GAN steps launch many small kernels; large transformer training reaches 40-50 %


def batch_of(batch_size: int, side: int) -> dict:
    ids = torch.randint(0, 49405, (batch_size, 20))
    ids[:, 0], ids[:, -1] = 49406, 49407
    return {"pixel_values": torch.rand(batch_size, 3, side, side) * 2 - 1, "input_ids": ids, "attention_mask": torch.ones_like(ids)}


def count(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip_batch_size", type=int, default=48, help="GR-GAN's ITM batch")
    parser.add_argument("--gan_batch_size", type=int, default=8, help="GR-GAN's batch (DM-GAN's bird config: 10)")
    parser.add_argument("--generator_channels", type=int, default=64, help="GR-GAN's GF_DIM")
    parser.add_argument("--discriminator_channels", type=int, default=32, help="GR-GAN's DF_DIM")
    parser.add_argument("--epochs", type=int, default=800, help="GAN epochs (DM-GAN's bird config, GR-GAN's default)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}))

    clip.train().logit_scale.requires_grad_(False)
    optimizer = torch.optim.AdamW([p for p in clip.parameters() if p.requires_grad], lr=1e-5)
    clip_flops = count(lambda: clip_finetuning_step(batch_of(args.clip_batch_size, 224), CLIPMatchingLoss(clip), optimizer))

    clip.eval().requires_grad_(False)
    config = StageGANConfig(  # 64 / 128 / 256 px, text width 512
        generator_channels=args.generator_channels, discriminator_channels=args.discriminator_channels
    )
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    optimizers = build_optimizers(generator, discriminator)
    gan_flops = count(lambda: training_step(
        batch_of(args.gan_batch_size, 256), generator=generator, discriminator_levels=discriminator.levels,
        clip_model=clip, optimizers=optimizers,
    ))

    rows = []
    print(f"StageGAN config: {config.stage_resolutions} px, G {config.generator_channels} ch, D "
          f"{config.discriminator_channels} ch; CLIP of ViT-B/32's architecture")
    for name, flops, batch_size in (("CLIP_FT", clip_flops, args.clip_batch_size), ("StageGAN", gan_flops, args.gan_batch_size)):
        steps = NUM_TRAIN // batch_size  # drop_last
        epoch = flops * steps
        rows.append((name, batch_size, flops, steps, epoch))
        print(f"{name}: batch {batch_size}, {flops / 1e12:.3f} TFLOP per step, {steps} steps per epoch, "
              f"{epoch / 1e15:.2f} PFLOP per epoch")
    print(f"\nwall time per epoch = FLOP per epoch / (peak x MFU), MFU assumed {MFU[0]:.0%}-{MFU[1]:.0%}:")
    for gpu, (tf32, bf16) in GPUS.items():
        for name, _, _, _, epoch in rows:
            spans = [f"{precision} {epoch / (peak * 1e12 * MFU[1]) / 60:.2f}-{epoch / (peak * 1e12 * MFU[0]) / 60:.2f} min"
                     for precision, peak in (("TF32", tf32), ("BF16", bf16))]
            print(f"  {gpu}, {name}: " + ", ".join(spans))
    total = rows[1][4] * args.epochs
    hours = [total / (GPUS["H100 (SXM)"][1] * 1e12 * mfu) / 3600 for mfu in reversed(MFU)]
    print(f"\nStageGAN, {args.epochs} epochs ({args.epochs * rows[1][3]:,} steps): {total / 1e18:.2f} EFLOP, "
          f"{hours[0]:.1f}-{hours[1]:.1f} h on one H100 in BF16, "
          f"{total / (GPUS['A100 (SXM)'][0] * 1e12 * MFU[1]) / 3600:.0f}-{total / (GPUS['A100 (SXM)'][0] * 1e12 * MFU[0]) / 3600:.0f} h "
          f"on one A100 in TF32, at that MFU")


if __name__ == "__main__":
    main()
