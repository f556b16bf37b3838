"""What a user would pick instead: our pipeline against diffusers text-to-image diffusion at 256 px, per image.

    python benchmarks/vs_diffusion.py                      # fp32 and bf16, batch 1, 5 timed DDIM steps of 50
    python benchmarks/vs_diffusion.py --full               # every one of the 50 steps timed (slow on a CPU)
    python benchmarks/vs_diffusion.py --quick              # tiny configurations, 2 steps: checks that it all runs

Everything has random weights (nothing to download); speed does not depend on the weights' values.

- `stagegan`: `StageGANPipeline` with the default `StageGANConfig()` (64 -> 128 -> 256 px) and a text encoder the size
  of CLIP ViT-B/32's text tower: one forward pass per image.
- `sd15`: diffusers' `StableDiffusionPipeline` with Stable Diffusion 1.5's configurations: `UNet2DConditionModel`
  (860 M parameters), `AutoencoderKL` (the VAE, decode at 256 px), the CLIP ViT-L/14 text tower, and a `DDIMScheduler`
  at 50 steps with classifier-free guidance (guidance 7.5, so every UNet call sees the batch doubled), as users run it.
- `small_ldm`: a latent diffusion model of about our generator's parameter count, for fairness: a 3-level
  `UNet2DConditionModel` (block widths 32/64/128) and the tiny `AutoencoderTiny` decoder (TAESD's architecture),
  same text tower, scheduler, steps and guidance as `sd15`.

Diffusion is timed inside one real pipeline call: text encoding and set-up (until the first UNet call), each denoising
step (UNet + guidance + scheduler step, measured on `--timed_steps` steps) and the VAE decode with post-processing.
Unless `--full`, the call stops the denoising loop after the timed steps (diffusers' `interrupt`), still decodes, and
`seconds_per_image` is EXTRAPOLATED as set-up + `num_inference_steps` x median step + decode (`extrapolated: true`).
Every step has the same shapes, so the extrapolation is close (small_ldm, fp32: 45x ours extrapolated from 5 steps,
47x with all 50 timed); `--full` times all of them and reports the call's own wall time. Each pipeline runs in fp32, then all are moved to bf16 (`pipe.to(torch.bfloat16)`) and run again.
One JSON line per measurement, then the ratios (diffusion seconds per image / ours, same dtype, same run).
"""

import argparse
import statistics
import time

import torch
from common import emit, machine, parse_device, synchronize
from diffusers import AutoencoderKL, AutoencoderTiny, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from pipeline_latency import CAPTIONS, build_pipeline
from transformers import CLIPTextConfig, CLIPTextModel

from hf_stagegan import StageGANConfig
from hf_stagegan.encoders import train_clip_tokenizer

SD15_UNET = dict(
    layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
SMALL_UNET = dict(
    layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 hidden_act="quick_gelu", projection_dim=768)
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1)
# --quick: the same code paths on models of a few hundred KB
QUICK_UNET = dict(SMALL_UNET, block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
QUICK_VAE = dict(SD15_VAE, block_out_channels=(32, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1)
QUICK_TAESD = dict(encoder_block_out_channels=(16, 16), decoder_block_out_channels=(16, 16), num_encoder_blocks=(1, 1),
                   num_decoder_blocks=(1, 1))
QUICK_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)


def diffusion_pipeline(kind: str, tokenizer, quick: bool) -> StableDiffusionPipeline:
    text_config = CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **(QUICK_TEXT if quick else SD15_TEXT),
    )
    if kind == "sd15":
        unet_config = QUICK_UNET if quick else SD15_UNET
        vae = AutoencoderKL(**(QUICK_VAE if quick else SD15_VAE))
    else:
        unet_config = QUICK_UNET if quick else SMALL_UNET
        vae = AutoencoderTiny(**(QUICK_TAESD if quick else {}))
    pipe = StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=CLIPTextModel(text_config).eval(),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(in_channels=4, out_channels=4, norm_num_groups=32, **unet_config).eval(),
        scheduler=DDIMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameters(kind: str, pipe) -> dict:
    """Parameters in millions of the image model (what turns text features into pixels) and of the text encoder."""
    if kind == "stagegan":
        image = pipe.image_generator.num_parameters()
    else:
        decoding = [pipe.vae.decoder] + ([pipe.vae.post_quant_conv] if hasattr(pipe.vae, "post_quant_conv") else [])
        image = pipe.unet.num_parameters() + sum(p.numel() for module in decoding for p in module.parameters())
    return {"image_model_parameters_m": image / 1e6, "text_encoder_parameters_m": pipe.text_encoder.num_parameters() / 1e6}


def time_stagegan(pipe, prompts, repeats, device) -> list[float]:
    pipe(prompts, generator=torch.Generator().manual_seed(0))  # warm-up
    times = []
    for index in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        pipe(prompts, generator=torch.Generator().manual_seed(index))
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def time_diffusion(pipe, prompts, resolution, steps, timed_steps, guidance_scale, device) -> dict:
    """One pipeline call, timed in parts (see the module docstring); stops after `timed_steps` unless it is `steps`."""
    unet_starts, step_ends = [], []

    def unet_started(*_):
        synchronize(device)
        unet_starts.append(time.perf_counter())

    def step_ended(pipeline, index, timestep, callback_kwargs):
        synchronize(device)
        step_ends.append(time.perf_counter())
        if index + 1 >= timed_steps:
            pipeline._interrupt = True  # the remaining steps are skipped; the decode still runs
        return callback_kwargs

    handle = pipe.unet.register_forward_pre_hook(unet_started)
    try:
        synchronize(device)
        start = time.perf_counter()
        pipe(prompts, height=resolution, width=resolution, num_inference_steps=steps, guidance_scale=guidance_scale,
             generator=torch.Generator().manual_seed(0), callback_on_step_end=step_ended)
        synchronize(device)
        end = time.perf_counter()
    finally:
        handle.remove()
    step_times = [done - begun for begun, done in zip(unet_starts, step_ends)]
    setup, decode = unet_starts[0] - start, end - step_ends[-1]
    per_step = statistics.median(step_times)
    extrapolated = len(step_times) < steps
    return {
        "setup_and_text_s": setup,
        "seconds_per_step": per_step,
        "seconds_per_step_min": min(step_times),
        "seconds_per_step_max": max(step_times),
        "timed_steps": len(step_times),
        "decode_and_postprocess_s": decode,
        # every step timed: the call's own wall time; otherwise set-up + steps x the median step + decode
        "seconds_per_call": setup + steps * per_step + decode if extrapolated else end - start,
        "extrapolated": extrapolated,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny configurations, 64 px, 2 steps (a smoke test)")
    parser.add_argument("--full", action="store_true", help="time every denoising step instead of extrapolating")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--diffusion", nargs="+", default=["sd15", "small_ldm"], choices=["sd15", "small_ldm"])
    parser.add_argument("--batch_size", type=int, default=1, help="prompts per call (diffusion: doubled by guidance)")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--timed_steps", type=int, default=5)
    parser.add_argument("--guidance_scale", type=float, default=7.5)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of our pipeline")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.quick:
        args.num_inference_steps, args.timed_steps, args.repeats = 2, 1, 1
    if args.full:
        args.timed_steps = args.num_inference_steps
    if not 1 <= args.timed_steps <= args.num_inference_steps:
        parser.error(f"--timed_steps must be in [1, --num_inference_steps={args.num_inference_steps}], got {args.timed_steps}")
    torch.set_num_threads(args.threads)
    device = parse_device(args.device)
    torch.manual_seed(0)
    diffusers_logging.set_verbosity_error()  # `.to(bfloat16)` on modules built in code warns about from_pretrained

    resolution = 64 if args.quick else 256
    tokenizer = train_clip_tokenizer(CAPTIONS * 25, vocab_size=1000, model_max_length=77)
    pipelines = {"stagegan": build_pipeline(
        StageGANConfig(stage_resolutions=[16, 32, 64], generator_channels=8, text_embed_dim=32) if args.quick else None,
        QUICK_TEXT if args.quick else None,
    )}
    for kind in args.diffusion:
        pipelines[kind] = diffusion_pipeline(kind, tokenizer, args.quick)
    prompts = [CAPTIONS[index % len(CAPTIONS)] for index in range(args.batch_size)]
    emit(benchmark="vs_diffusion", **machine(device), resolution=resolution, batch_size=args.batch_size,
         num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale, quick=args.quick)
    for kind, pipe in pipelines.items():
        emit(benchmark="vs_diffusion", pipeline=kind, **parameters(kind, pipe))

    for dtype_name in args.dtypes:
        dtype = getattr(torch, dtype_name)
        per_image = {}
        for kind, pipe in pipelines.items():
            pipe.to(device, dtype)
            if kind == "stagegan":
                times = time_stagegan(pipe, prompts, args.repeats, device)
                per_image[kind] = statistics.median(times) / args.batch_size
                emit(benchmark="vs_diffusion", pipeline=kind, dtype=dtype_name, batch_size=args.batch_size,
                     seconds_per_image=per_image[kind], seconds_min=min(times) / args.batch_size,
                     seconds_max=max(times) / args.batch_size, repeats=args.repeats, extrapolated=False)
                continue
            time_diffusion(pipe, prompts, resolution, args.num_inference_steps, 1, args.guidance_scale, device)  # warm-up
            timing = time_diffusion(pipe, prompts, resolution, args.num_inference_steps, args.timed_steps,
                                    args.guidance_scale, device)
            per_image[kind] = timing["seconds_per_call"] / args.batch_size
            emit(benchmark="vs_diffusion", pipeline=kind, dtype=dtype_name, batch_size=args.batch_size,
                 seconds_per_image=per_image[kind], num_inference_steps=args.num_inference_steps, **timing)
        for kind in args.diffusion:
            emit(benchmark="vs_diffusion", measurement="ratio", dtype=dtype_name, diffusion=kind,
                 diffusion_seconds_per_image=per_image[kind], stagegan_seconds_per_image=per_image["stagegan"],
                 times_slower_than_stagegan=per_image[kind] / per_image["stagegan"],
                 extrapolated=args.timed_steps < args.num_inference_steps)


if __name__ == "__main__":
    main()
