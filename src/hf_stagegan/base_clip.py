"""
The SynthBirds base CLIP: the offline stand-in for a pretrained CLIP, and the main job's CLIP_FT.

With the Hub reachable, CLIP_FT starts from a pretrained CLIP (`--clip_model_name_or_path openai/clip-vit-base-patch32`)
whose image tower already sees small parts. Offline, a CLIP trained from scratch on the job's 2000 birds reads the body
colour and barely the crown or beak, so the generator's text losses (its scores) cannot teach those parts
(docs/results.md, "A matcher that reads the parts"). This recipe gives the from-scratch CLIP what pretraining gives:
more birds (`num_train`, the train split of SynthBirds seed 0, which contains the job's birds and none of the test
birds), attribute pretraining of the image tower (`clip_finetuning.pretrain_vision_tower` on the part colours), then
contrastive training with colour-swapped hard negatives. Trained on SynthBirds already, `examples/train.py` trains the
GAN against it as built (`--clip_finetune_steps` defaults to 0 for it).

`build_base_clip` trains it once, measures its part-swap accuracy on held-out real birds and caches it beside the
evaluation models (`evaluation.cache`: `$HF_STAGEGAN_CACHE`, built on one thread, atomically); `load_base_clip` loads
it, building it first when missing. The evaluation CLIP (`evaluation.eval_clip`) is trained on other birds (seed 2002)
without labels: R-precision stays scored by a CLIP that no generator trained against. The SynthBirds judge, though,
was trained on the same attribute labels as this image tower, so the judge's part accuracies say how well the generator
follows its matcher, and the independent R-precision is the cross-check.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPModel

from .clip_finetuning import SMALL_CLIP, finetune_clip, pretrain_vision_tower
from .data import IMAGE_TRANSFORMS, all_captions, build_dataloader, load_image_text_dataset
from .data.synthbirds import ATTRIBUTE_NAMES, load_synthbirds
from .encoders import build_clip_from_scratch, train_clip_tokenizer
from .evaluation.cache import build_cached_model, ensure_built, evaluation_cache_dir, recipe_of
from .evaluation.eval_clip import save_clip
from .evaluation.metrics import part_swap_accuracy

BASE_CLIP_RECIPE_VERSION = 1
BASE_CLIP_REPORT_NAME = "base_clip_report.json"
# SynthBirds' part colours: what a caption names, and what the vision pretraining classifies by default
PART_COLOR_COLUMNS = tuple(name for name in ATTRIBUTE_NAMES if name.endswith("_color"))


def train_base_clip(
    num_train: int = 10000,
    vision_pretrain_steps: int = 2400,
    max_train_steps: int = 1200,
    num_negatives: int = 5,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    resolution: int = 64,
    seed: int = 0,
    **clip_sizes,
) -> tuple[CLIPModel, object]:
    """
    `(clip_model, tokenizer)`: a tokenizer trained on the captions of `num_train` SynthBirds birds (train split of seed
    0, the birds every training run draws its own from) and a CLIP (`SMALL_CLIP`, overridable by `clip_sizes`) trained
    from scratch on them: `vision_pretrain_steps` supervised steps of its image tower on the four part colours, then
    `max_train_steps` contrastive CLIP_FT steps with `num_negatives` colour-swapped captions per example as hard
    negatives. The recipe of `examples/finetune_clip.py --synthbirds_num_train 10000 --vision_pretrain_steps 2400
    --num_negatives 5 --max_train_steps 1200` (docs/results.md). Deterministic for a given `seed` on a given machine
    and thread count.
    """
    if min(num_train, batch_size) < 1 or min(vision_pretrain_steps, max_train_steps, num_negatives) < 0:
        raise ValueError(
            "Need `num_train` >= 1, `batch_size` >= 1 and `vision_pretrain_steps`, `max_train_steps`, `num_negatives` "
            f">= 0; got num_train={num_train}, batch_size={batch_size}, vision_pretrain_steps={vision_pretrain_steps}, "
            f"max_train_steps={max_train_steps}, num_negatives={num_negatives}."
        )
    birds = load_image_text_dataset(num_train=num_train, num_test=0, resolution=resolution)  # as the training scripts load it
    tokenizer = train_clip_tokenizer(all_captions(birds, "captions"), vocab_size=1000)
    torch.manual_seed(seed)
    clip_model = build_clip_from_scratch(tokenizer, **{**SMALL_CLIP, "image_size": resolution, **clip_sizes})
    image_size = clip_model.config.vision_config.image_size
    loader_kwargs = dict(seed=seed, image_column="image", caption_column="captions", **IMAGE_TRANSFORMS["center"])
    if vision_pretrain_steps:
        labelled = build_dataloader(birds, tokenizer, image_size, batch_size, label_columns=list(PART_COLOR_COLUMNS), **loader_kwargs)
        num_classes = [len(classes) for classes in labelled.dataset.label_classes.values()]
        pretrain_vision_tower(clip_model, labelled, num_classes, None, vision_pretrain_steps, learning_rate)
    loader = build_dataloader(birds, tokenizer, image_size, batch_size, num_negatives=num_negatives, **loader_kwargs)
    clip_model = finetune_clip(clip_model, loader, None, max_train_steps, learning_rate)
    return clip_model, tokenizer


def held_out_part_swap_accuracy(clip_model, tokenizer, num_test: int = 200, resolution: int = 64) -> dict:
    """`evaluation.metrics.part_swap_accuracy` on the first `num_test` real test birds of seed 0 (first captions)."""
    birds = load_synthbirds(num_train=1, num_test=num_test, resolution=resolution)["test"]
    return part_swap_accuracy(clip_model, tokenizer, birds["image"], birds["text"])


def base_clip_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the base CLIP is cached: `<evaluation_cache_dir>/synthbirds-base-clip-v<recipe>-64px`."""
    return evaluation_cache_dir(cache_dir) / f"synthbirds-base-clip-v{BASE_CLIP_RECIPE_VERSION}-64px"


def build_base_clip(
    cache_dir: str | os.PathLike | None = None, overwrite: bool = False, num_test: int = 200, **train_kwargs
) -> Path:
    """
    Trains the base CLIP (`train_base_clip`), measures its part-swap accuracy on `num_test` held-out real birds and
    saves model, tokenizer and `base_clip_report.json` into the cache (`base_clip_folder`). Returns the folder; an
    existing one is kept unless `overwrite=True`.
    """
    resolution = train_kwargs.get("resolution", 64)
    report = {"recipe_version": BASE_CLIP_RECIPE_VERSION, "recipe": recipe_of(train_base_clip, train_kwargs)}
    return build_cached_model(
        base_clip_folder(cache_dir), BASE_CLIP_REPORT_NAME,
        train=lambda: train_base_clip(**train_kwargs),
        measure=lambda built: {
            "held_out_part_swap_accuracy": held_out_part_swap_accuracy(*built, num_test, resolution) if num_test else None
        },
        save=save_clip, report=report, description="SynthBirds base CLIP", overwrite=overwrite,
    )


def load_base_clip(cache_dir: str | os.PathLike | None = None, build_if_missing: bool = True) -> tuple[CLIPModel, object]:
    """
    `(clip_model, tokenizer)` of the cached base CLIP, trainable (CLIP_FT may fine-tune it further); built first
    (`build_base_clip`, minutes on a CPU) when missing, unless `build_if_missing=False`, which raises
    `FileNotFoundError` naming the command that builds it.
    """
    folder = base_clip_folder(cache_dir)
    missing = f"No SynthBirds base CLIP in {folder}. Build it with `hf-stagegan build-base-clip` (minutes on a CPU)."
    ensure_built(
        folder, BASE_CLIP_REPORT_NAME, lambda: build_base_clip(cache_dir), build_if_missing, missing,
        "the SynthBirds base CLIP",
    )
    return CLIPModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


__all__ = [
    "BASE_CLIP_RECIPE_VERSION",
    "BASE_CLIP_REPORT_NAME",
    "PART_COLOR_COLUMNS",
    "base_clip_folder",
    "build_base_clip",
    "held_out_part_swap_accuracy",
    "load_base_clip",
    "train_base_clip",
]
