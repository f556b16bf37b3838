"""Train a StageGAN (GR-GAN, patent CN113781598B) text-to-image model with accelerate.

The main job, with no arguments: build the SynthBirds dataset, train a small CLIP on its captions (CLIP_FT), train a
CPU-sized StageGAN (16 / 32 / 64 px), and save a pipeline that `StageGANPipeline.from_pretrained` loads:

    accelerate launch examples/train.py                                   # -> ./stagegan-synthbirds
    python -c "from hf_stagegan import StageGANPipeline; \\
        StageGANPipeline.from_pretrained('stagegan-synthbirds')('a red bird').images[0].save('red.png')"

Your own data and CLIP (a Hub dataset or an imagefolder with metadata.jsonl; a pretrained or fine-tuned CLIP):

    hf-stagegan prepare-cub --cub_dir CUB_200_2011 --text_dir birds/text --output_dir cub   # docs/training.md
    accelerate launch examples/train.py --dataset_name cub --image_transform literature \\
        --clip_model_name_or_path clip-ft-cub --resolution 256 --train_batch_size 8 \\
        --output_dir stagegan-cub --push_to_hub --hub_model_id org/stagegan-cub

Several processes (data parallel; on a machine without GPU add --cpu):

    accelerate launch --multi_gpu --num_processes 2 examples/train.py --cpu

Resume the newest checkpoint of a run:

    accelerate launch examples/train.py --output_dir stagegan-synthbirds --resume_from_checkpoint latest
"""

import argparse
import json
import logging
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator, StageGANPipeline
from hf_stagegan.base_clip import BASE_CLIP_REPORT_NAME, base_clip_folder, load_base_clip
from hf_stagegan.checkpointing import (
    GeneratorEMA,
    list_checkpoints,
    load_checkpoint,
    register_model_hooks,
    resolve_checkpoint,
    save_checkpoint,
)
from hf_stagegan.clip_finetuning import finetune_clip, load_or_build_clip
from hf_stagegan.configuration_stagegan import (
    DISCRIMINATOR_AUGMENTATIONS,
    DISCRIMINATOR_BACKBONES,
    GENERATOR_UPSAMPLINGS,
)
from hf_stagegan.data import IMAGE_TRANSFORMS, all_captions, build_dataloader, check_columns, load_image_text_dataset
from hf_stagegan.data.synthbirds import load_synthbirds
from hf_stagegan.encoders import text_encoder_from_clip
from hf_stagegan.evaluation import judge_attributes, load_judge
from hf_stagegan.evaluation.cache import BackgroundBuild, is_built
from hf_stagegan.evaluation.judge import JUDGE_RESOLUTIONS
from hf_stagegan.evaluation.protocol import (
    build_synthbirds_evaluation_models,
    evaluate,
    generate_images,
    headline_metrics,
    synthbirds_evaluation_models_built,
)
from hf_stagegan.hub import image_grid, push_folder_to_hub, save_stagegan_pipeline
from hf_stagegan.training import (
    LR_SCHEDULERS,
    MIXED_PRECISIONS,
    NonFiniteLossError,
    batch_norm_calibration_inputs,
    build_lr_schedulers,
    build_optimizers,
    cpu_bf16_flags,
    recompute_batch_norm_statistics,
    resolve_mixed_precision,
    training_step,
)

logger = get_logger(__name__)

DEFAULT_VALIDATION_PROMPTS = ["a red bird", "a blue bird", "a yellow bird", "a green bird"]
VALIDATION_JUDGE_IMAGES = 64  # held-out SynthBirds captions the judge scores at each validation (about a second)


# flag name -> (default, the patent authors' value): Adam's betas of the generator and discriminator optimizers
ADAM_BETA_FLAGS = {
    f"{side}_adam_{beta}": values
    for side in ("generator", "discriminator")
    for beta, values in (("beta1", (0.0, 0.5)), ("beta2", (0.9, 0.999)))
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--dataset_name", help="Hub dataset id or local dataset folder; default: built-in SynthBirds")
    data.add_argument("--dataset_config_name")
    data.add_argument("--train_data_dir", help="a local imagefolder with metadata.jsonl captions")
    data.add_argument("--image_column", help="default: 'image'")
    data.add_argument("--caption_column", help="a string or list-of-strings column; default: 'captions', else 'text'")
    data.add_argument("--cache_dir")
    data.add_argument("--synthbirds_num_train", type=int, default=2000)
    data.add_argument(
        "--image_transform", default="center", choices=["center", "literature"],
        help="center: shorter side to the resolution, centre crop; literature (AttnGAN, DM-GAN, DF-GAN, GALIP): "
        "resize to 76/64 of it (304 px for 256), random crop, random horizontal flip",
    )
    data.add_argument("--random_flip", action="store_true", help="also flip with --image_transform center")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--model_config", help="a StageGANConfig JSON file or folder; overrides the flags below")
    model.add_argument(
        "--config_overrides", type=json.loads, default={},
        help='StageGANConfig fields as JSON, applied last, e.g. \'{"level3_word_weight": 0, "level2_residual_blocks": 1}\'',
    )
    model.add_argument("--resolution", type=int, default=64, help="side of x3; x1 and x2 are 1/4 and 1/2 of it")
    model.add_argument("--generator_channels", type=int, default=32)
    model.add_argument(
        "--discriminator_channels", type=int, nargs="+", default=[32],
        help="one width for D1, D2 and D3, or three (D1 D2 D3)",
    )
    model.add_argument(
        "--discriminator_spectral_norm", nargs="+", choices=["true", "false"], default=["true"],
        help="spectral norm in D1, D2 and D3: one value for all, or three (D1 D2 D3)",
    )
    model.add_argument(
        "--discriminator_backbone", nargs="+", choices=list(DISCRIMINATOR_BACKBONES), default=["conv"],
        help="what D1, D2, D3 read the image with: their own convolutions (conv, the patent's) or the frozen CLIP_FT "
        "image tower's hidden states under a small head (clip, as GALIP); one value for all, or three (D1 D2 D3)",
    )
    model.add_argument("--fusion_type", default="attention", choices=["attention", "memory"])
    model.add_argument("--stage_gradient", default="isolated", choices=["isolated", "end_to_end"])
    model.add_argument(
        "--image_skip", action=argparse.BooleanOptionalAction, default=False,
        help="levels 2 and 3 draw a correction added to the previous level's upsampled image (StyleGAN2's skip "
        "generator) instead of a new image; not in the patent",
    )
    model.add_argument(
        "--generator_upsampling", default="nearest", choices=list(GENERATOR_UPSAMPLINGS),
        help="how the generator's upsampling blocks double their feature maps before the 3x3 conv: nearest (AttnGAN's "
        "and the authors') or bilinear (each new pixel a blend of its neighbours, as the low-pass upsampling of StyleGAN)",
    )
    model.add_argument(
        "--mismatched_text_weight", type=float, default=1.0,
        help="weight of the matching-aware D2/D3 term (real image + mismatched caption = fake); 0 = the patent's L_D "
        "(the main job uses 1: see docs/results.md)",
    )
    model.add_argument(
        "--text_loss_hard_negatives", action=argparse.BooleanOptionalAction, default=False,
        help="each caption's colour-swapped version (one part's colour changed) is an extra wrong class of the "
        "generator's Loss_CLIP_FT terms, as in CLIP_FT's own training; not in the patent",
    )
    model.add_argument(
        "--unconditional_discriminator_weight", type=float, default=0.0,
        help="weight of an unconditional real/fake term at D2/D3 and in L_G2/L_G3 (AttnGAN, DM-GAN); 0 = the patent's "
        "conditional-only D2/D3",
    )
    model.add_argument(
        "--discriminator_gradient_penalty", default="none", choices=["none", "r1", "matching_aware"],
        help="regulariser of every D on real pairs: R1, or DF-GAN's matching-aware gradient penalty",
    )
    model.add_argument("--gradient_penalty_weight", type=float, default=2.0)
    model.add_argument(
        "--discriminator_augmentation", nargs="*", default=[], choices=DISCRIMINATOR_AUGMENTATIONS,
        help="DiffAugment of every image the discriminators see in training, e.g. `translation cutout`; none = off",
    )
    model.add_argument(
        "--mismatched_captions", default="color_swap", choices=["color_swap", "shuffled"],
        help="the mismatched caption of that term: the true one with one colour word swapped, or another example's",
    )

    clip = parser.add_argument_group("CLIP_FT")
    clip.add_argument(
        "--clip_model_name_or_path",
        help="a (fine-tuned) CLIP by Hub id or folder; default: the SynthBirds base CLIP (built once and cached, "
        "hf_stagegan.base_clip) on the built-in SynthBirds, a small CLIP trained from scratch on other data",
    )
    clip.add_argument(
        "--clip_from_scratch", action="store_true",
        help="start CLIP_FT from a small random CLIP (tokenizer trained on the captions) even on SynthBirds",
    )
    clip.add_argument(
        "--clip_finetune_steps", type=int,
        help="CLIP_FT steps before the GAN (default: 600 from scratch; 0 for a given CLIP and for the base CLIP, which "
        "is trained on SynthBirds already)",
    )
    clip.add_argument("--clip_learning_rate", type=float, default=5e-4)
    clip.add_argument("--clip_batch_size", type=int, default=32)
    clip.add_argument(
        "--clip_num_negatives", type=int, default=0,
        help="hard negatives per caption in CLIP_FT: the caption with one colour word swapped (data.negatives)",
    )

    train = parser.add_argument_group("training")
    train.add_argument("--train_batch_size", type=int, default=16, help="per process")
    train.add_argument("--max_train_steps", type=int, help="default: 3500 when --num_train_epochs is not given")
    train.add_argument("--num_train_epochs", type=int)
    train.add_argument("--generator_learning_rate", type=float, default=5e-4)
    train.add_argument("--discriminator_learning_rate", type=float, default=5e-4)
    # Adam without momentum, as DF-GAN and StyleGAN2 train: on SynthBirds' main job, three seeds, it beats the patent
    # authors' (0.5, 0.999) in wing and crown colour and judge FD (docs/results.md); CUB's recipe passes (0.5, 0.999)
    for name, (default, authors) in ADAM_BETA_FLAGS.items():
        side, beta = name.split("_adam_")
        train.add_argument(
            f"--{name}", type=float, default=default,
            help=f"Adam's {beta} for the {side} levels (default {default}; the patent authors' code: {authors})",
        )
    train.add_argument(
        "--lr_scheduler", default="constant", choices=LR_SCHEDULERS,
        help="the learning-rate schedule of all six optimizers (diffusers' names): constant (the patent's), "
        "constant_with_warmup, or linear / cosine decay to 0 at the last step",
    )
    train.add_argument("--lr_warmup_steps", type=int, default=0, help="steps of linear warm-up from 0")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument(
        "--mixed_precision", choices=MIXED_PRECISIONS,
        help="auto: bf16 on a CPU with bf16 instructions (AVX512-BF16 or AMX), fp32 elsewhere. Default: accelerate "
        "config's fp16 / bf16 if it sets one, else auto; pass `no` for fp32",
    )
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--use_ema", action=argparse.BooleanOptionalAction, default=True,
        help="save an exponential moving average of the generator (on by default; --no-use_ema saves the raw one)",
    )
    train.add_argument(
        "--ema_decay", type=float, default=0.999,
        help="the moving average's decay once warmed up; the warm-up min(decay, (1 + step) / (10 + step)) reaches "
        "0.999 at step 8990, so shorter runs average as the warm-up does",
    )
    train.add_argument(
        "--ema_batch_norm_samples", type=int, default=256,
        help="recompute the EMA generator's batch-norm statistics over this many training captions (each with its "
        "own noise) before it is validated, checkpointed or saved; 0 keeps the statistics it copies from the "
        "training generator",
    )
    train.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    train.add_argument(
        "--cpu_threads", type=int,
        help="torch threads per process on CPU; default: the cores divided among the processes (a bare `accelerate "
        "launch` sets OMP_NUM_THREADS=1, which halves the speed of a single CPU process on 2 cores)",
    )

    save = parser.add_argument_group("checkpoints, validation, logging, sharing")
    save.add_argument("--output_dir", default="stagegan-synthbirds")
    save.add_argument("--overwrite_output_dir", action="store_true", help="delete what a previous run left there")
    save.add_argument("--checkpointing_steps", type=int, default=500)
    save.add_argument("--checkpoints_total_limit", type=int, default=2)
    save.add_argument("--resume_from_checkpoint", help="'latest' or a checkpoint folder")
    save.add_argument("--validation_prompts", nargs="+", default=DEFAULT_VALIDATION_PROMPTS)
    save.add_argument("--validation_steps", type=int, default=500)
    save.add_argument(
        "--evaluation_images", type=int, default=200,
        help="SynthBirds: held-out captions of the final evaluation (judge + R-precision, `hf-stagegan evaluate`); the "
        "judge also scores 64 at each validation. 0: neither",
    )
    save.add_argument("--report_to", default="tensorboard", help="tensorboard, wandb, all, or none")
    save.add_argument("--push_to_hub", action="store_true")
    save.add_argument("--hub_model_id", help="default: the output folder's name")
    save.add_argument("--hub_token")
    args = parser.parse_args(argv)

    positive = ("train_batch_size", "gradient_accumulation_steps", "checkpointing_steps", "validation_steps", "resolution")
    for name in positive:
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.evaluation_images < 0:
        parser.error(f"--evaluation_images must be >= 0, got {args.evaluation_images}")
    for name in ("max_train_steps", "num_train_epochs", "checkpoints_total_limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in (
        "clip_num_negatives", "mismatched_text_weight", "unconditional_discriminator_weight", "gradient_penalty_weight",
        "ema_batch_norm_samples", "lr_warmup_steps",
    ):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    for name in ADAM_BETA_FLAGS:
        if not 0 <= getattr(args, name) < 1:
            parser.error(f"--{name} must be in [0, 1), got {getattr(args, name)}")
    if args.lr_scheduler == "constant" and args.lr_warmup_steps:
        parser.error(f"--lr_warmup_steps {args.lr_warmup_steps} needs a schedule with a warm-up, not --lr_scheduler constant")
    if len(set(args.discriminator_augmentation)) != len(args.discriminator_augmentation):
        parser.error(f"--discriminator_augmentation names a transformation twice: {args.discriminator_augmentation}")
    if not isinstance(args.config_overrides, dict):
        parser.error(f"--config_overrides must be a JSON object of StageGANConfig fields, got {args.config_overrides!r}")
    if len(args.discriminator_channels) not in (1, 3) or min(args.discriminator_channels) < 1:
        parser.error(f"--discriminator_channels takes one width >= 1 or three (D1 D2 D3), got {args.discriminator_channels}")
    if len(args.discriminator_channels) == 1:
        args.discriminator_channels = args.discriminator_channels[0]
    if len(args.discriminator_spectral_norm) not in (1, 3):
        parser.error(f"--discriminator_spectral_norm takes one value or three (D1 D2 D3), got {args.discriminator_spectral_norm}")
    spectral_norm = [value == "true" for value in args.discriminator_spectral_norm]
    args.discriminator_spectral_norm = spectral_norm[0] if len(spectral_norm) == 1 else spectral_norm
    if len(args.discriminator_backbone) not in (1, 3):
        parser.error(f"--discriminator_backbone takes one value or three (D1 D2 D3), got {args.discriminator_backbone}")
    if len(args.discriminator_backbone) == 1:
        args.discriminator_backbone = args.discriminator_backbone[0]
    unknown = sorted(set(args.config_overrides) - set(StageGANConfig().to_dict()))
    if unknown:
        parser.error(f"--config_overrides names unknown StageGANConfig fields {unknown}")
    try:  # every value checked now, before anything is trained
        StageGANConfig(**args.config_overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--config_overrides: {error}")
    if args.dataset_name and args.train_data_dir:
        parser.error("give --dataset_name or --train_data_dir, not both")
    if args.max_train_steps is None and args.num_train_epochs is None:
        # the main job: about 16 minutes on a 2-core Zen 5 with bf16 instructions (1.3x longer in fp32; docs/results.md)
        args.max_train_steps = 3500
    if args.clip_from_scratch and args.clip_model_name_or_path:
        parser.error("give --clip_model_name_or_path or --clip_from_scratch, not both")
    if args.clip_finetune_steps is None:
        args.clip_finetune_steps = 600 if uses_clip_from_scratch(args) else 0
    if args.mixed_precision is None:  # `accelerate launch` without a config sets "no": that too leaves the choice to auto
        configured = os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
        args.mixed_precision = "auto" if configured == "no" else configured
    return args


def uses_base_clip(args) -> bool:
    """CLIP_FT starts from the SynthBirds base CLIP: no CLIP given, not told to start from scratch, built-in SynthBirds."""
    return args.clip_model_name_or_path is None and not args.clip_from_scratch and not (args.dataset_name or args.train_data_dir)


def uses_clip_from_scratch(args) -> bool:
    return args.clip_model_name_or_path is None and not uses_base_clip(args)


def start_evaluation_build(args, accelerator, evaluates_on_synthbirds: bool) -> BackgroundBuild | None:
    """
    On a machine without the cached base CLIP, the judge and evaluation CLIP that the run needs later are built in a
    second process while the main process builds the base CLIP: each build is one-thread (reproducible weights), so
    on two or more cores the two overlap instead of queueing (on a fresh 2-core machine about 6 of the 20 minutes of
    builds). Only the main process does this; elsewhere, or with everything cached, nothing starts (None).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if args.model_config:  # the image size is the config's, known later; the run builds what it needs then
        return None
    if not (accelerator.is_main_process and evaluates_on_synthbirds and uses_base_clip(args) and (cores or 1) >= 2):
        return None
    if is_built(base_clip_folder(), BASE_CLIP_REPORT_NAME) or synthbirds_evaluation_models_built(args.resolution):
        return None
    return BackgroundBuild(
        build_synthbirds_evaluation_models, args.resolution,
        description=f"the SynthBirds judge ({args.resolution} px) and evaluation CLIP",
    )


def check_output_dir(args, accelerator):
    """A second run into a used folder must say so, not overwrite it silently nor fail later on a clash."""
    output_dir = Path(args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise SystemExit(f"--output_dir {output_dir} exists and is not a folder.")
    used = output_dir.is_dir() and any(output_dir.iterdir())
    if not used or args.resume_from_checkpoint:
        return
    if args.overwrite_output_dir:
        if accelerator.is_main_process:
            shutil.rmtree(output_dir)
        accelerator.wait_for_everyone()
        return
    found = [p.name for p in sorted(output_dir.iterdir())][:6]
    raise SystemExit(
        f"--output_dir {output_dir} is not empty (it holds {found}). Pass --resume_from_checkpoint latest to continue "
        "that run, --overwrite_output_dir to replace it, or choose another --output_dir."
    )


def build_config(args, text_embed_dim, vision_config=None):
    """
    The StageGANConfig of the run. `vision_config` (CLIP_FT's `CLIPVisionConfig`) becomes the
    `discriminator_vision_config` of `"clip"` discriminator levels when the config does not give one.
    """
    config = _base_config(args, text_embed_dim)
    for name, value in args.config_overrides.items():  # checked by parse_args; each field is validated on assignment
        setattr(config, name, value)
    if config.uses_vision_backbone and config.discriminator_vision_config is None:
        if vision_config is None:
            raise SystemExit(f"discriminator_backbone {config.discriminator_backbone!r} needs CLIP_FT's vision config.")
        config.discriminator_vision_config = vision_config.to_dict()
    config.validate()
    return config


def _base_config(args, text_embed_dim):
    if args.model_config:
        path = Path(args.model_config)
        config = StageGANConfig.from_pretrained(path) if path.is_dir() else StageGANConfig.from_json_file(path)
        if config.text_embed_dim != text_embed_dim:
            raise SystemExit(
                f"--model_config has text_embed_dim={config.text_embed_dim}, but the CLIP's projection_dim is "
                f"{text_embed_dim}: they must match."
            )
        return config
    if args.resolution % 32:
        raise SystemExit(f"--resolution must be a multiple of 32 (x1 = resolution/4 must be a multiple of 8), got {args.resolution}.")
    side = args.resolution
    return StageGANConfig(
        stage_resolutions=[side // 4, side // 2, side],
        generator_channels=args.generator_channels,
        discriminator_channels=args.discriminator_channels,
        discriminator_spectral_norm=args.discriminator_spectral_norm,
        discriminator_backbone=args.discriminator_backbone,
        text_embed_dim=text_embed_dim,
        fusion_type=args.fusion_type,
        stage_gradient=args.stage_gradient,
        image_skip=args.image_skip,
        generator_upsampling=args.generator_upsampling,
        mismatched_text_weight=args.mismatched_text_weight,
        unconditional_discriminator_weight=args.unconditional_discriminator_weight,
        text_loss_hard_negatives=args.text_loss_hard_negatives,
        discriminator_gradient_penalty=args.discriminator_gradient_penalty,
        gradient_penalty_weight=args.gradient_penalty_weight,
        discriminator_augmentation=args.discriminator_augmentation,
    )


def make_pipeline(generator, clip_model, tokenizer):
    return StageGANPipeline(tokenizer=tokenizer, text_encoder=text_encoder_from_clip(clip_model), image_generator=generator)


def validate(pipeline, args, step, accelerator, judge=None, judge_captions=None):
    """
    A grid of every validation prompt (4 seeds each) written as PNG and logged to the trackers; on SynthBirds, the
    judge's attribute accuracy on held-out captions logged as `judge/<attribute>`.
    """
    images = pipeline(
        args.validation_prompts, num_images_per_prompt=4, generator=torch.Generator().manual_seed(args.seed)
    ).images
    grid = image_grid(images, cols=4)
    folder = Path(args.output_dir) / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    grid.save(folder / f"step-{step:06d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({"validation": np.asarray(grid)[None]}, step, dataformats="NHWC")
    if judge is not None:
        images = generate_images(pipeline, judge_captions, seed=args.seed, progress=False)
        scores = judge_attributes(judge, images, judge_captions)
        accelerator.log({f"judge/{k}": v for k, v in scores["accuracy"].items() if v is not None}, step=step)
    return grid


def ema_calibration_inputs(args, captions, tokenizer, clip_model, z_dim, device):
    """
    What the EMA generator's batch-norm statistics are recomputed over (`--ema_batch_norm_samples` training captions
    drawn with the run's seed, each with its own noise), or None when they are copied from the training generator.
    Fixed for the run, so that every recomputation is repeatable; no draw touches the global random state.
    """
    if not args.use_ema or args.ema_batch_norm_samples == 0:
        return None
    picked = np.random.default_rng(args.seed).choice(
        len(captions), size=args.ema_batch_norm_samples, replace=args.ema_batch_norm_samples > len(captions)
    )
    return batch_norm_calibration_inputs(
        [captions[i] for i in picked], tokenizer, clip_model, z_dim, seed=args.seed, device=device
    )


def check_replicas_identical(accelerator, *models):
    """Data parallel must keep every process's weights the same; checked by gathering one checksum per process."""
    if accelerator.num_processes == 1:
        return
    checksum = sum(p.detach().double().sum() * (i + 1) for model in models for i, p in enumerate(model.parameters()))
    checksums = accelerator.gather(checksum.reshape(1).to(accelerator.device)).cpu()
    if not torch.all(checksums == checksums[0]):
        raise RuntimeError(f"Processes ended with different weights (checksums {checksums.tolist()}).")
    logger.info(f"Weights identical across {accelerator.num_processes} processes (checksum {checksums[0].item():.6f})")


def main(argv=None):
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    device_type, auto_precision = PartialState(cpu=args.cpu).device.type, args.mixed_precision == "auto"
    if auto_precision:  # resolved here, so that the trackers and the card's hyperparameters record what was used
        args.mixed_precision = resolve_mixed_precision("auto", device_type)
    accelerator = Accelerator(
        cpu=args.cpu,
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for noisy in ("accelerate.checkpointing", "accelerate.accelerator"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if auto_precision:
        if args.mixed_precision == "bf16":
            why = f"this CPU has {' and '.join(cpu_bf16_flags())}"
        elif device_type == "cpu":
            why = "this CPU has no bf16 instructions, bf16 would be slower than fp32"
        else:
            why = f"fp32 on {device_type} unless --mixed_precision bf16 or fp16 is given"
        logger.info(f"Mixed precision: {args.mixed_precision} (auto: {why}; --mixed_precision no for fp32)")
    check_output_dir(args, accelerator)
    set_seed(args.seed)  # identical initial weights in every process
    if accelerator.device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(args.cpu_threads or max(1, cores // accelerator.num_processes))

    # 1. data: a Hub dataset, a local imagefolder, or SynthBirds; columns checked before anything is trained
    # SynthBirds is generated in memory by every process (same seed, same data) unless --cache_dir keeps one build
    synthbirds = {} if (args.dataset_name or args.train_data_dir) else {"num_train": args.synthbirds_num_train, "num_test": 0}
    with accelerator.main_process_first():  # the main process downloads / builds into the cache first
        dataset = load_image_text_dataset(
            args.dataset_name, args.train_data_dir, dataset_config_name=args.dataset_config_name,
            cache_dir=args.cache_dir, caption_column=args.caption_column, **synthbirds,
        )
    image_column, caption_column = check_columns(dataset, args.image_column, args.caption_column)
    transform = {**IMAGE_TRANSFORMS[args.image_transform], **({"random_flip": True} if args.random_flip else {})}

    # 2. CLIP_FT: the matching model (on SynthBirds the cached base CLIP, else a given one or one from scratch),
    # fine-tuned on the captions for --clip_finetune_steps, then frozen
    captions = all_captions(dataset, caption_column)
    evaluation_build = start_evaluation_build(
        args, accelerator,
        evaluates_on_synthbirds=bool(args.resolution in JUDGE_RESOLUTIONS and args.evaluation_images),
    )
    if uses_base_clip(args):
        with accelerator.main_process_first():  # the main process builds it (once, minutes; cached), the others load it
            clip_model, tokenizer = load_base_clip()
        logger.info(f"CLIP_FT starts from the SynthBirds base CLIP ({base_clip_folder()})")
    else:
        clip_model, tokenizer = load_or_build_clip(args.clip_model_name_or_path, captions)
    resumed_clip = output_dir / "clip"
    if args.resume_from_checkpoint and (resumed_clip / "config.json").is_file():
        clip_model, tokenizer = load_or_build_clip(str(resumed_clip))
        logger.info(f"Resuming with the CLIP_FT saved in {resumed_clip}")
    elif args.clip_finetune_steps > 0 or uses_base_clip(args):
        if args.clip_finetune_steps > 0:
            clip_loader = build_dataloader(
                dataset, tokenizer, clip_model.config.vision_config.image_size, args.clip_batch_size, seed=args.seed,
                image_column=image_column, caption_column=caption_column, num_workers=args.dataloader_num_workers,
                num_negatives=args.clip_num_negatives, **transform,
            )
            clip_model = finetune_clip(clip_model, clip_loader, accelerator, args.clip_finetune_steps, args.clip_learning_rate)
        # kept, so that a resumed run uses the same CLIP_FT (a base CLIP rebuilt on another machine may differ in its
        # last bits)
        if accelerator.is_main_process:
            clip_model.save_pretrained(resumed_clip)
            tokenizer.save_pretrained(resumed_clip)
    clip_model = clip_model.to(accelerator.device).eval().requires_grad_(False)

    # 3. the three-level GAN: six optimizers (claim 8), optional EMA
    config = build_config(args, clip_model.config.projection_dim, clip_model.config.vision_config)
    # the SynthBirds judge (trained on real birds only; built once and cached) scores validation images
    judge, judge_captions, side = None, None, config.stage_resolutions[-1]  # --model_config may set another size
    evaluates_on_synthbirds = bool(
        not (args.dataset_name or args.train_data_dir) and side in JUDGE_RESOLUTIONS and args.evaluation_images
    )
    if evaluation_build is not None:
        evaluation_build.wait()
    if evaluates_on_synthbirds and accelerator.is_main_process:
        judge = load_judge(side, device=accelerator.device)
        judge_captions = load_synthbirds(num_train=1, num_test=VALIDATION_JUDGE_IMAGES, resolution=side)["test"]["text"]
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    if discriminator.vision_backbone is not None:  # "clip" levels read CLIP_FT's frozen image tower
        discriminator.load_vision_backbone(clip_model)
        discriminator.vision_backbone.to(accelerator.device)  # not inside any level that `prepare` moves
    ema = GeneratorEMA(generator, args.ema_decay) if args.use_ema else None
    calibration = ema_calibration_inputs(args, captions, tokenizer, clip_model, config.z_dim, accelerator.device)
    calibrated_at = None

    def inference_generator(step):
        """The generator to validate, checkpoint or save at `step`: the EMA (its statistics recomputed), else G."""
        nonlocal calibrated_at
        if ema is None:
            return generator
        if calibration is not None and calibrated_at != step:
            recompute_batch_norm_statistics(ema.model, calibration)
            calibrated_at = step
        return ema.model

    optimizers = build_optimizers(
        generator, discriminator, args.generator_learning_rate, args.discriminator_learning_rate,
        betas=(args.generator_adam_beta1, args.generator_adam_beta2),
        discriminator_betas=(args.discriminator_adam_beta1, args.discriminator_adam_beta2),
    )
    dataloader = build_dataloader(
        dataset, tokenizer, config.stage_resolutions[-1], args.train_batch_size, seed=args.seed,
        image_column=image_column, caption_column=caption_column, num_workers=args.dataloader_num_workers, **transform,
        num_negatives=1 if config.text_loss_hard_negatives or (
            config.mismatched_text_weight > 0 and args.mismatched_captions == "color_swap"
        ) else 0,
    )
    prepared = accelerator.prepare(generator, *discriminator.levels, *optimizers.values(), dataloader)
    generator_p, discriminator_p, dataloader = prepared[0], prepared[1:4], prepared[-1]
    optimizers = dict(zip(optimizers, prepared[4:-1]))
    if ema is not None:
        ema.model.to(accelerator.device)
    register_model_hooks(accelerator, generator, discriminator, ema)

    steps_per_epoch = math.ceil(len(dataloader) / args.gradient_accumulation_steps)
    max_steps = args.max_train_steps or args.num_train_epochs * steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    if accelerator.is_main_process:
        accelerator.init_trackers("stagegan", config={k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))})

    # 4. resume: models, optimizers, EMA, RNG states and the step all come from the checkpoint
    global_step, first_epoch, skip_batches = 0, 0, 0
    checkpoint = resolve_checkpoint(output_dir, args.resume_from_checkpoint)
    if args.resume_from_checkpoint and checkpoint is None:
        logger.info(f"No checkpoint in {output_dir} yet: starting a new run.")
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint)
        global_step = state["step"]
        first_epoch = global_step // steps_per_epoch
        skip_batches = (global_step % steps_per_epoch) * args.gradient_accumulation_steps
        logger.info(f"Resumed from {checkpoint} at step {global_step}")

    try:
        schedulers = build_lr_schedulers(
            optimizers, args.lr_scheduler, num_training_steps=max_steps, num_warmup_steps=args.lr_warmup_steps,
            start_step=global_step,
        )
    except ValueError as error:
        raise SystemExit(f"--lr_scheduler {args.lr_scheduler} / --lr_warmup_steps {args.lr_warmup_steps}: {error}") from None

    # 5. train
    logger.info(f"{len(dataset)} examples, {steps_per_epoch} steps per epoch, {max_steps} steps, {accelerator.num_processes} process(es)")
    progress = tqdm(total=max_steps, initial=global_step, desc="StageGAN", disable=not accelerator.is_local_main_process)
    existing = list_checkpoints(output_dir)
    last_good = existing[-1][1] if existing else None
    for epoch in range(first_epoch, num_epochs):
        dataloader.set_epoch(epoch)
        batches = accelerator.skip_first_batches(dataloader, skip_batches) if skip_batches else dataloader
        skip_batches = 0
        for batch in batches:
            with accelerator.accumulate(generator_p, *discriminator_p):
                try:
                    logs = training_step(
                        batch, generator=generator_p, discriminator_levels=discriminator_p, clip_model=clip_model,
                        optimizers=optimizers, accelerator=accelerator,
                    )
                except NonFiniteLossError as error:
                    where = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
                    logger.error(f"{error} Training stopped at step {global_step}; {where}.")
                    accelerator.end_training()
                    sys.exit(1)
            if not accelerator.sync_gradients:
                continue
            global_step += 1
            logs.update(lr_generator=optimizers["g1"].param_groups[0]["lr"], lr_discriminator=optimizers["d1"].param_groups[0]["lr"])
            for scheduler in schedulers.values():
                scheduler.step()
            if ema is not None:
                ema.update(generator, step=global_step)
            progress.update(1)
            progress.set_postfix({k[5:]: f"{logs[k]:.3f}" for k in ("loss_d1", "loss_d2", "loss_d3", "loss_g1", "loss_g2", "loss_g3")})
            accelerator.log(logs, step=global_step)

            if global_step % args.checkpointing_steps == 0 or global_step == max_steps:
                inference_generator(global_step)  # the checkpoint's ema_generator is what the pipeline would save
                last_good = save_checkpoint(
                    accelerator, output_dir, global_step, {"epoch": epoch}, args.checkpoints_total_limit
                )
            if global_step % args.validation_steps == 0 and accelerator.is_main_process:
                validate(
                    make_pipeline(inference_generator(global_step), clip_model, tokenizer), args, global_step,
                    accelerator, judge, judge_captions,
                )
            if global_step >= max_steps:
                break
        if global_step >= max_steps:
            break
    progress.close()
    check_replicas_identical(accelerator, generator, discriminator)

    # 6. the result: pipeline (EMA generator if any), discriminator, CLIP_FT and a model card; optionally pushed
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final_generator = inference_generator(global_step).eval()
        pipeline = make_pipeline(final_generator, clip_model, tokenizer)
        grid = validate(pipeline, args, global_step, accelerator, judge, judge_captions)
        report = None
        if judge is not None:  # SynthBirds: a short `hf-stagegan evaluate` (judge + R-precision) on held-out captions
            report = evaluate(
                pipeline, metrics=["judge", "r_precision"], num_images=args.evaluation_images, seed=args.seed,
                clip_ft=clip_model, device=accelerator.device, progress=False,
            )
            accelerator.log({f"eval/{row['type']}": row["value"] for row in headline_metrics(report)}, step=global_step)
        hyperparameters = {
            k: v for k, v in vars(args).items()
            if k not in ("hub_token", "validation_prompts", "output_dir") and v is not None and not isinstance(v, list)
        }
        hyperparameters.update(steps=global_step, processes=accelerator.num_processes)
        save_stagegan_pipeline(
            output_dir, pipeline, discriminator=discriminator, clip_model=clip_model,
            repo_id=args.hub_model_id, datasets=[args.dataset_name] if args.dataset_name else None,
            hyperparameters=hyperparameters, evaluation_report=report, sample_grid=grid,
            sample_prompts=args.validation_prompts, seed=args.seed,
        )
        if report is not None:  # the card's save wrote it to evaluation.json
            logger.info("Evaluation: " + ", ".join(f"{row['name']} {row['value']:.3f}" for row in headline_metrics(report)))
        if args.push_to_hub:
            repo_id = args.hub_model_id or output_dir.resolve().name
            push_folder_to_hub(
                output_dir, repo_id, token=args.hub_token, commit_message=f"StageGAN trained for {global_step} steps",
                ignore_patterns=["checkpoint-*", "logs/*", "validation/*"],
            )
        logger.info(f"Saved the pipeline to {output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
