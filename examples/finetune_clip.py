"""CLIP_FT: fine-tune a CLIP on image-caption pairs with the sentence-image and word-region losses of GR-GAN.

Start from a pretrained CLIP (Hub id or folder), or offline from scratch (a tokenizer trained on the captions and a
small CLIP). The output folder is a standard CLIP folder (model + tokenizer) for `train.py --clip_model_name_or_path`:

    accelerate launch examples/finetune_clip.py --output_dir clip-ft-synthbirds             # SynthBirds, from scratch
    accelerate launch examples/finetune_clip.py --clip_model_name_or_path openai/clip-vit-base-patch32 \\
        --dataset_name cub --image_transform literature --output_dir clip-ft-cub --max_train_steps 5000
    accelerate launch examples/train.py --clip_model_name_or_path clip-ft-synthbirds

A from-scratch CLIP whose image tower reads the birds' parts (docs/results.md: the part-reading matcher): more birds,
the tower first trained to classify the part colours, then hard negatives.

    accelerate launch examples/finetune_clip.py --synthbirds_num_train 10000 --vision_pretrain_steps 2400 \
        --num_negatives 5 --max_train_steps 1200 --output_dir clip-ft-synthbirds-parts
"""

import argparse
import json
import logging
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from hf_stagegan.base_clip import PART_COLOR_COLUMNS
from hf_stagegan.clip_finetuning import (
    SMALL_CLIP,
    clip_matching_losses,
    finetune_clip,
    load_or_build_clip,
    pretrain_vision_tower,
)
from hf_stagegan.data import (
    IMAGE_TRANSFORMS,
    all_captions,
    build_dataloader,
    check_columns,
    load_image_text_dataset,
)

logger = logging.getLogger(__name__)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip_model_name_or_path", help="default: a small CLIP from scratch")
    parser.add_argument("--dataset_name", help="Hub dataset id or local folder; default: built-in SynthBirds")
    parser.add_argument("--dataset_config_name")
    parser.add_argument("--train_data_dir")
    parser.add_argument("--image_column")
    parser.add_argument("--caption_column")
    parser.add_argument("--cache_dir")
    parser.add_argument("--synthbirds_num_train", type=int, default=2000)
    parser.add_argument(
        "--image_transform", default="center", choices=["center", "literature"],
        help="literature: resize to 76/64 of the CLIP's image size, random crop, random flip (GR-GAN's ITM training)",
    )
    parser.add_argument("--vocab_size", type=int, default=1000, help="tokenizer size when training from scratch")
    parser.add_argument("--hidden_size", type=int, default=SMALL_CLIP["hidden_size"], help="from scratch only")
    parser.add_argument("--num_hidden_layers", type=int, default=SMALL_CLIP["num_hidden_layers"], help="from scratch only")
    parser.add_argument("--projection_dim", type=int, default=SMALL_CLIP["projection_dim"], help="from scratch only")
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--max_train_steps", type=int, default=600)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--word_weight", type=float, default=1.0, help="weight of the word-region loss")
    parser.add_argument(
        "--num_negatives", type=int, default=0,
        help="colour-swapped captions per example as hard negatives of both matching losses (data.negatives)",
    )
    parser.add_argument(
        "--vision_pretrain_steps", type=int, default=0,
        help="supervised steps of the image tower on attribute columns before CLIP_FT (from scratch: the stand-in for a "
        "pretrained image encoder); 0: none",
    )
    parser.add_argument(
        "--vision_pretrain_columns", nargs="+",
        help=f"the attribute columns it classifies; default for SynthBirds: {' '.join(PART_COLOR_COLUMNS)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--output_dir", default="clip-ft")
    args = parser.parse_args(argv)
    for name in ("train_batch_size", "max_train_steps", "vocab_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("num_negatives", "vision_pretrain_steps"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.vision_pretrain_columns and not args.vision_pretrain_steps:
        parser.error("--vision_pretrain_columns needs --vision_pretrain_steps > 0 (the columns are only read by it)")
    if args.vision_pretrain_steps and not args.vision_pretrain_columns:
        if args.dataset_name or args.train_data_dir:
            parser.error("--vision_pretrain_steps needs --vision_pretrain_columns for a dataset other than SynthBirds")
        args.vision_pretrain_columns = list(PART_COLOR_COLUMNS)
    return args


@torch.no_grad()
def probe_losses(clip_model, batch, device):
    clip_model.eval()
    losses = clip_matching_losses(clip_model, {k: v.to(device) for k, v in batch.items()})
    return {k: v.item() for k, v in losses.items()}


def main(argv=None):
    args = parse_args(argv)
    accelerator = Accelerator(cpu=args.cpu)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    set_seed(args.seed)

    # SynthBirds is generated in memory by every process (same seed, same data) unless --cache_dir keeps one build
    synthbirds = {} if (args.dataset_name or args.train_data_dir) else {"num_train": args.synthbirds_num_train, "num_test": 0}
    with accelerator.main_process_first():
        dataset = load_image_text_dataset(
            args.dataset_name, args.train_data_dir, dataset_config_name=args.dataset_config_name,
            cache_dir=args.cache_dir, caption_column=args.caption_column, **synthbirds,
        )
    image_column, caption_column = check_columns(dataset, args.image_column, args.caption_column)
    captions = all_captions(dataset, caption_column)
    sizes = dict(hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers, projection_dim=args.projection_dim)
    clip_model, tokenizer = load_or_build_clip(args.clip_model_name_or_path, captions, args.vocab_size, **sizes)

    image_size = clip_model.config.vision_config.image_size
    dataloader = build_dataloader(
        dataset, tokenizer, image_size, args.train_batch_size, seed=args.seed, image_column=image_column,
        caption_column=caption_column, num_negatives=args.num_negatives, **IMAGE_TRANSFORMS[args.image_transform],
    )
    # a fixed batch (last epoch's ordering seed, never the first training batches) to report the loss before and after,
    # without random crops or flips
    probe_transform = IMAGE_TRANSFORMS["literature_eval" if args.image_transform == "literature" else "center"]
    probe = next(iter(build_dataloader(
        dataset, tokenizer, clip_model.config.vision_config.image_size, args.train_batch_size, seed=args.seed + 1,
        image_column=image_column, caption_column=caption_column, **probe_transform,
    )))
    before = probe_losses(clip_model.to(accelerator.device), probe, accelerator.device)
    vision_pretraining = None
    if args.vision_pretrain_steps:
        columns = args.vision_pretrain_columns
        labelled = build_dataloader(  # names a missing or unusable label column
            dataset, tokenizer, image_size, args.train_batch_size, seed=args.seed, image_column=image_column,
            caption_column=caption_column, label_columns=columns, **IMAGE_TRANSFORMS[args.image_transform],
        )
        num_classes = [len(classes) for classes in labelled.dataset.label_classes.values()]
        last = pretrain_vision_tower(
            clip_model, labelled, num_classes, accelerator, args.vision_pretrain_steps, args.learning_rate
        )
        vision_pretraining = {"steps": args.vision_pretrain_steps, "columns": columns, "last_step": last}
        logger.info(f"Vision tower pretrained on {columns}: last step {last}")
    clip_model = finetune_clip(clip_model, dataloader, accelerator, args.max_train_steps, args.learning_rate, word_weight=args.word_weight)
    after = probe_losses(clip_model, probe, accelerator.device)

    if accelerator.is_main_process:
        output_dir = Path(args.output_dir)
        clip_model.save_pretrained(output_dir)
        tokenizer.save_pretrained(output_dir)
        metrics = {
            "steps": args.max_train_steps, "num_negatives": args.num_negatives, "vision_pretraining": vision_pretraining,
            "loss_before": before, "loss_after": after,
        }
        (output_dir / "clip_ft_metrics.json").write_text(json.dumps(metrics, indent=2))
        logger.info(f"CLIP_FT matching losses on a probe batch: before {before}, after {after}. Saved to {output_dir}")
    accelerator.end_training()


if __name__ == "__main__":
    main()
