"""
The offline evaluation CLIP for SynthBirds: a CLIP trained from scratch on SynthBirds images of its own seed
(`EVAL_CLIP_DATA_SEED`), disjoint from every training run's (seed 0) and from the evaluation protocol's test birds, so
that R-precision, CLIP score and CMD need no download and are scored by a CLIP that no generator trained against
(DESIGN.md §3b: a generator can learn to please the CLIP it was trained with).

Its recipe is the CLIP_FT recipe (`clip_finetuning`: sentence-image + word-region cross-entropy) at `SMALL_CLIP`'s size,
trained longer and on more birds. `build_eval_clip` trains it, measures its R-precision on held-out real birds and
caches it (`evaluation.cache`); `load_eval_clip` loads it, building it first when missing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import AutoTokenizer, CLIPModel

from ..clip_finetuning import SMALL_CLIP, finetune_clip
from ..data import all_captions, build_dataloader
from ..data.synthbirds import load_synthbirds
from ..encoders import build_clip_from_scratch, train_clip_tokenizer
from .cache import build_cached_model, ensure_built, evaluation_cache_dir, recipe_of
from .metrics import clip_image_embeddings, clip_text_embeddings, r_precision

logger = logging.getLogger(__name__)

EVAL_CLIP_DATA_SEED = 2002  # SynthBirds seed of the evaluation CLIP's own images; training runs use seed 0
EVAL_CLIP_RECIPE_VERSION = 1
EVAL_CLIP_REPORT_NAME = "eval_clip_report.json"


def train_eval_clip(
    num_train: int = 8000,
    max_train_steps: int = 1200,
    batch_size: int = 32,
    learning_rate: float = 5e-4,
    resolution: int = 64,
    data_seed: int = EVAL_CLIP_DATA_SEED,
    seed: int = 0,
    **clip_sizes,
):
    """
    `(clip_model, tokenizer)`: a tokenizer trained on the captions of `num_train` SynthBirds birds (train split of
    `data_seed`) and a CLIP (`SMALL_CLIP`, overridable by `clip_sizes`) trained from scratch on them for
    `max_train_steps` contrastive steps, one random caption per image per epoch, random flips (the facing is never
    named). Deterministic for a given `seed` on a given machine.
    """
    birds = load_synthbirds(num_train=num_train, num_test=0, resolution=resolution, seed=data_seed)["train"]
    tokenizer = train_clip_tokenizer(all_captions(birds, "captions"), vocab_size=1000)
    torch.manual_seed(seed)
    clip_model = build_clip_from_scratch(tokenizer, **{**SMALL_CLIP, "image_size": resolution, **clip_sizes})
    loader = build_dataloader(
        birds, tokenizer, clip_model.config.vision_config.image_size, batch_size, seed=seed, caption_column="captions",
        random_flip=True,
    )
    clip_model = finetune_clip(clip_model, loader, None, max_train_steps, learning_rate)
    return clip_model, tokenizer


def real_r_precision(clip_model, tokenizer, num_test: int = 1000, data_seed: int = EVAL_CLIP_DATA_SEED, resolution: int = 64):
    """R-precision (`metrics.r_precision`, 100 candidates, 10 folds) on `num_test` held-out real birds' first captions."""
    birds = load_synthbirds(num_train=1, num_test=num_test, resolution=resolution, seed=data_seed)["test"]
    captions = birds["text"]
    image_embeds = clip_image_embeddings(clip_model, birds["image"])
    text_embeds = clip_text_embeddings(clip_model, tokenizer, captions)
    return r_precision(image_embeds, text_embeds, captions, num_candidates=min(100, num_test))


def eval_clip_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the evaluation CLIP is cached: `<evaluation_cache_dir>/eval-clip-v<recipe>-64px`."""
    return evaluation_cache_dir(cache_dir) / f"eval-clip-v{EVAL_CLIP_RECIPE_VERSION}-64px"


def build_eval_clip(
    cache_dir: str | os.PathLike | None = None, overwrite: bool = False, num_test: int = 1000, **train_kwargs
) -> Path:
    """
    Trains the evaluation CLIP (`train_eval_clip`), measures its R-precision on `num_test` held-out real birds and
    saves model, tokenizer and `eval_clip_report.json` into the cache (`eval_clip_folder`). Returns the folder; an
    existing one is kept unless `overwrite=True`.
    """
    data_seed = train_kwargs.get("data_seed", EVAL_CLIP_DATA_SEED)
    report = {"recipe_version": EVAL_CLIP_RECIPE_VERSION, "recipe": recipe_of(train_eval_clip, train_kwargs)}
    return build_cached_model(
        eval_clip_folder(cache_dir), EVAL_CLIP_REPORT_NAME,
        train=lambda: train_eval_clip(**train_kwargs),
        measure=lambda built: {"held_out_real_r_precision": real_r_precision(*built, num_test, data_seed)},
        save=save_clip, report=report, description="Evaluation CLIP", overwrite=overwrite,
    )


def save_clip(built: tuple, folder: Path) -> None:
    """Saves a `(clip_model, tokenizer)` pair into `folder` (a CLIP folder `CLIPModel` / `AutoTokenizer` load)."""
    clip_model, tokenizer = built
    clip_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def load_eval_clip(
    cache_dir: str | os.PathLike | None = None, build_if_missing: bool = True, device: str | torch.device | None = None
):
    """
    `(clip_model, tokenizer)` of the cached evaluation CLIP; built first (`build_eval_clip`, minutes on a CPU) when
    missing, unless `build_if_missing=False`, which raises `FileNotFoundError` naming the command that builds it.
    """
    folder = eval_clip_folder(cache_dir)
    missing = f"No evaluation CLIP in {folder}. Build it with `hf-stagegan build-eval-clip` (minutes on a CPU)."
    ensure_built(
        folder, EVAL_CLIP_REPORT_NAME, lambda: build_eval_clip(cache_dir), build_if_missing, missing,
        "the SynthBirds evaluation CLIP",
    )
    clip_model = CLIPModel.from_pretrained(folder).eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return (clip_model.to(device) if device is not None else clip_model), tokenizer


__all__ = [
    "EVAL_CLIP_DATA_SEED",
    "build_eval_clip",
    "eval_clip_folder",
    "load_eval_clip",
    "real_r_precision",
    "train_eval_clip",
]
