"""
Image-quality and text-consistency metrics, each with its settings written down (DESIGN.md §3b).

- `frechet_distance`: the Fréchet distance between two feature sets, computed by torchmetrics'
  `FrechetInceptionDistance` (its documented hook for a custom feature extractor: here the features are extracted
  once, by us, and the "extractor" hands them through). `inception_fid` is the classic FID on Inception-v3 pool3
  features (torchmetrics + torch-fidelity and the Inception weights file, `check_inception_weights`).
- `clip_score`: `max(100 * mean cosine(image, caption), 0)`, torchmetrics' `CLIPScore` definition.
- `r_precision`: DM-GAN's protocol: for each image, its caption among 99 mismatched ones; a hit when the true one
  scores highest; hit rates over 10 folds, mean and std.
- `cross_modal_distance`: CMD, proposed with GR-GAN: FD(real images, fake images) + FD(fake images, real sentences)
  - FD(real images, real sentences), with CLIP features (see its docstring for how it differs from the authors'
  script).
- `part_swap_accuracy`: how often a matcher (a CLIP) scores an image's true caption above the same caption with one
  part's colour swapped, by the sentence score and by the word-region score.

CLIP features come from `clip_image_embeddings` / `clip_text_embeddings` (`hf_stagegan.encoders`: images resized
and normalised as the CLIP was trained, L2-normalised projections).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.synthbirds import BEAK_COLORS, PALETTE, parse_caption, swap_caption_attribute
from ..encoders import encode_images, encode_text, tokenize_prompts
from ..losses import word_region_similarity
from .images import to_tensor

INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # torch-fidelity's Inception-v3 (TF FID port)
SWAPPED_PARTS = {"body_color": tuple(PALETTE), "wing_color": tuple(PALETTE), "crown_color": tuple(PALETTE), "beak_color": BEAK_COLORS}


# ---------------------------------------------------------------------------------------------------------------------
# Fréchet distances


class _PrecomputedFeatures(nn.Module):
    """A torchmetrics "feature extractor" for features we already have: it hands them through."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """
    The Fréchet distance between Gaussians fitted to two feature sets `(N_a, D)` and `(N_b, D)`:
    `||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`, computed in float64 by torchmetrics'
    `FrechetInceptionDistance` (unbiased covariances, eigenvalues for the matrix square root).
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    features_a, features_b = torch.as_tensor(features_a).double(), torch.as_tensor(features_b).double()
    if features_a.ndim != 2 or features_b.ndim != 2 or features_a.shape[1] != features_b.shape[1]:
        raise ValueError(
            f"Need two (N, D) feature sets of the same D, got {tuple(features_a.shape)} and {tuple(features_b.shape)}."
        )
    if len(features_a) < 2 or len(features_b) < 2:
        raise ValueError(f"Need >= 2 samples in each set, got {len(features_a)} and {len(features_b)}.")
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(features_a.shape[1]))
    metric.update(features_a, real=True)
    metric.update(features_b, real=False)
    # tiny negative values are rounding error of two nearly identical sets
    return max(float(metric.compute()), 0.0)


def check_inception_weights(inception_weights: str | os.PathLike | None = None) -> Path:
    """
    The Inception-v3 weights file FID needs: `inception_weights` if given, else torch-fidelity's download location
    (`<torch.hub.get_dir()>/checkpoints/pt_inception-2015-12-05-6726825d.pth`). Raises `FileNotFoundError` saying which
    file to provide and where when it is not there (nothing is downloaded offline).
    """
    if inception_weights is not None:
        path = Path(inception_weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"`inception_weights` {str(path)!r} is not a file; expected {INCEPTION_WEIGHTS_FILE}.")
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"FID needs the Inception-v3 weights {INCEPTION_WEIGHTS_FILE} (torch-fidelity's port of the TensorFlow FID "
            f"network, ~92 MB), and it is not in {path.parent}. Download it where the Hub can be reached (from "
            f"torch-fidelity's GitHub releases, v0.2.0) and put it there (or set TORCH_HOME), or pass its path with "
            "`inception_weights` / --inception_weights. Or measure the Fréchet distance in another feature space: "
            "--fid_feature_extractor judge|clip|<CLIP folder>."
        )
    return path


@torch.no_grad()
def inception_fid(
    real_images,
    fake_images,
    inception_weights: str | os.PathLike | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> float:
    """
    FID: the Fréchet distance of Inception-v3 pool3 (2048-d) features, by torchmetrics' `FrechetInceptionDistance`
    (images resized to 299 px inside torch-fidelity's network). Needs `torch-fidelity` (`pip install torch-fidelity`,
    which needs a torchvision matching your torch) and the weights file (`check_inception_weights`).
    """
    path = check_inception_weights(inception_weights)
    try:
        import torch_fidelity  # noqa: F401
    except ImportError as error:
        raise ImportError(
            "FID on Inception features needs torch-fidelity: `pip install torch-fidelity` (it needs a torchvision that "
            f"matches your torch). ({error})"
        ) from error
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path)).to(device)
    for images, real in ((real_images, True), (fake_images, False)):
        pixels = (to_tensor(images, value_range) + 1) / 2  # [0, 1]: normalize=True turns it into uint8
        for start in range(0, len(pixels), batch_size):
            metric.update(pixels[start : start + batch_size].to(device), real=real)
    return float(metric.compute())


# ---------------------------------------------------------------------------------------------------------------------
# CLIP features and the metrics built on them


@torch.no_grad()
def clip_image_embeddings(
    clip_model, images, value_range: tuple[float, float] = (-1.0, 1.0), batch_size: int = 256, regions: bool = False
):
    """
    L2-normalised CLIP image embeddings `(N, D)` of `images` (any form `evaluation.images.to_tensor` accepts), resized
    and normalised as `encoders.encode_images` does; with `regions=True`, also the region embeddings `(N, R, D)`.
    """
    pixels = to_tensor(images, value_range)
    device = clip_model.device
    globals_, regions_ = [], []
    for start in range(0, len(pixels), batch_size):
        features = encode_images(clip_model, pixels[start : start + batch_size].to(device, clip_model.dtype))
        globals_.append(features.image_embeds.float().cpu())
        if regions:
            regions_.append(features.region_embeds.float().cpu())
    embeds = torch.cat(globals_)
    return (embeds, torch.cat(regions_)) if regions else embeds


@torch.no_grad()
def clip_text_embeddings(clip_model, tokenizer, captions: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """L2-normalised CLIP sentence embeddings `(N, D)` of `captions` (`encoders.encode_text`)."""
    device = clip_model.device
    embeds = []
    for start in range(0, len(captions), batch_size):
        tokens = tokenize_prompts(tokenizer, list(captions[start : start + batch_size]))
        text = encode_text(clip_model, tokens.input_ids.to(device), tokens.attention_mask.to(device))
        embeds.append(text.sentence_embeds.float().cpu())
    return torch.cat(embeds)


def clip_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> float:
    """
    CLIP score of matching pairs `(N, D)`, `(N, D)`: `max(100 * mean_i cos(image_i, text_i), 0)`, as torchmetrics'
    `CLIPScore` computes it (the cosine of L2-normalised embeddings, scaled by 100, averaged, clipped at 0).
    """
    if image_embeds.shape != text_embeds.shape:
        raise ValueError(f"Need one caption per image, got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}.")
    cosine = torch.nn.functional.cosine_similarity(image_embeds.double(), text_embeds.double(), dim=-1)
    return max(100.0 * float(cosine.mean()), 0.0)


def r_precision(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    captions: Sequence[str],
    num_candidates: int = 100,
    num_folds: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """
    R-precision, DM-GAN's protocol: image `i` is scored (cosine of L2-normalised embeddings) against its own caption
    and `num_candidates - 1` mismatched ones, drawn uniformly without replacement from the other images' captions,
    leaving out any that is the same string as caption `i`; a hit when the true caption scores strictly highest. The
    images are cut into `num_folds` consecutive folds; the result is the mean and std (numpy's, ddof=0) of the
    folds' hit rates.

    Args:
        image_embeds, text_embeds: `(N, D)`, one caption per image, in the same order.
        captions: the N caption strings (to leave out identical ones).
        num_candidates: true + mismatched captions per image (100 in DM-GAN).
        num_folds: folds (10 in DM-GAN).
        seed: seed of the mismatched draws.

    Returns:
        `{"mean", "std", "num_candidates", "num_folds", "num_images"}`.
    """
    num_images = len(captions)
    if image_embeds.shape[0] != num_images or text_embeds.shape[0] != num_images:
        raise ValueError(
            f"Need one embedding per caption: {num_images} captions, {image_embeds.shape[0]} image embeddings and "
            f"{text_embeds.shape[0]} text embeddings."
        )
    if num_candidates < 2 or num_folds < 1 or num_images < num_folds:
        raise ValueError(
            f"Need `num_candidates` >= 2 and 1 <= `num_folds` <= number of images, got num_candidates={num_candidates}, "
            f"num_folds={num_folds} for {num_images} images."
        )
    similarity = image_embeds.double() @ text_embeds.double().t()  # (N, N): image i vs caption j
    rng = np.random.default_rng(seed)
    captions = list(captions)
    hits = np.zeros(num_images, dtype=bool)
    for i in range(num_images):
        others = np.array([j for j in range(num_images) if captions[j] != captions[i]])
        if len(others) < num_candidates - 1:
            raise ValueError(
                f"Image {i}'s caption {captions[i]!r} has only {len(others)} different captions to mismatch against; "
                f"R-precision with {num_candidates} candidates needs >= {num_candidates - 1}. Evaluate more images or "
                "lower `num_candidates`."
            )
        mismatched = rng.choice(others, size=num_candidates - 1, replace=False)
        hits[i] = bool(similarity[i, i] > similarity[i, mismatched].max())
    rates = [fold.mean() for fold in np.array_split(hits, num_folds)]
    return {
        "mean": float(np.mean(rates)),
        "std": float(np.std(rates)),
        "num_candidates": num_candidates,
        "num_folds": num_folds,
        "num_images": num_images,
    }


def cross_modal_distance(
    real_image_embeds: torch.Tensor, fake_image_embeds: torch.Tensor, sentence_embeds: torch.Tensor
) -> dict[str, float]:
    """
    CMD (cross-model distance, GR-GAN): FD(real images, fake images) + FD(fake images, real sentences) - FD(real
    images, real sentences), every FD a `frechet_distance` of CLIP embeddings. 0 when the fake images are distributed
    as the real ones; the middle term rewards fake images that sit where the sentences sit in CLIP's joint space.

    Differences from the authors' `eval/CMD/CMD_score.py` (BoO-18/GR-GAN), on purpose:

    - both modalities are L2-normalised embeddings on the unit sphere; the authors multiply the image features by 10
      after normalising (and leave the sentences at norm 1), so their cross-modal FDs mostly measure that radius gap;
    - images go through the CLIP's own preprocessing (resize, CLIP mean/std normalisation); the authors resize to
      224 px and feed [0, 1] pixels without CLIP's normalisation;
    - the sentences are the captions the fake images were drawn for (one per image), not every test caption;
      all images are used (the authors' loaders drop the last incomplete batch);
    - the matrix square root comes from eigenvalues (torchmetrics), not `scipy.linalg.sqrtm`;
    - the CLIP is ours to choose (by default the offline evaluation CLIP); the authors use OpenAI's ViT-B/32.

    Returns:
        `{"cmd", "fd_real_fake", "fd_fake_sentences", "fd_real_sentences"}`.
    """
    fd_real_fake = frechet_distance(real_image_embeds, fake_image_embeds)
    fd_fake_sentences = frechet_distance(fake_image_embeds, sentence_embeds)
    fd_real_sentences = frechet_distance(real_image_embeds, sentence_embeds)
    return {
        "cmd": fd_real_fake + fd_fake_sentences - fd_real_sentences,
        "fd_real_fake": fd_real_fake,
        "fd_fake_sentences": fd_fake_sentences,
        "fd_real_sentences": fd_real_sentences,
    }


@torch.no_grad()
def part_swap_accuracy(
    clip_model,
    tokenizer,
    images,
    captions: Sequence[str],
    num_swaps: int = 5,
    seed: int = 0,
    value_range: tuple[float, float] = (-1.0, 1.0),
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    images_per_batch: int = 32,
) -> dict:
    """
    The matcher's part-level accuracy: for each image and each part whose colour its caption names (body, wing,
    crown, beak), the caption is compared with `num_swaps` copies of itself in which only that part's colour is
    changed (`synthbirds.swap_caption_attribute`, other colours drawn without replacement). A hit when the true
    caption scores strictly above every swapped copy; chance is `1 / (num_swaps + 1)`.

    Scored two ways: the sentence score (cosine of the global image and sentence embeddings) and the word-region score
    (`losses.word_region_similarity`, DAMSM's R(Q, D) with `gamma1`, `gamma2`).

    Returns:
        `{"sentence": {part: accuracy}, "word_region": {part: accuracy}, "count": {part: images}, "num_swaps",
        "chance"}` (parts named by no caption are left out).
    """
    captions = list(captions)
    image_embeds, region_embeds = clip_image_embeddings(clip_model, images, value_range, regions=True)
    if len(captions) != len(image_embeds):
        raise ValueError(f"Got {len(image_embeds)} images but {len(captions)} `captions`.")
    rng = np.random.default_rng(seed)
    # per image: the true caption, then `num_swaps` copies per named part
    groups = []
    for caption in captions:
        named = parse_caption(caption)
        texts, parts = [caption.lower()], []
        for part, values in SWAPPED_PARTS.items():
            if part not in named:
                continue
            others = [value for value in values if value != named[part]]
            if len(others) < num_swaps:
                raise ValueError(f"`num_swaps` must be <= {len(others)} (the other values of {part!r}), got {num_swaps}.")
            texts += [swap_caption_attribute(caption, part, value) for value in rng.choice(others, num_swaps, replace=False)]
            parts.append(part)
        groups.append((texts, parts))

    hits = {"sentence": {}, "word_region": {}}
    device = clip_model.device
    for start in range(0, len(groups), images_per_batch):
        chunk = groups[start : start + images_per_batch]
        texts = [text for group_texts, _ in chunk for text in group_texts]
        tokens = tokenize_prompts(tokenizer, texts)
        text = encode_text(clip_model, tokens.input_ids.to(device), tokens.attention_mask.to(device))
        offset = 0
        for k, (group_texts, parts) in enumerate(chunk):
            i = start + k
            rows = slice(offset, offset + len(group_texts))
            offset += len(group_texts)
            sentence = (text.sentence_embeds[rows].float().cpu() @ image_embeds[i]).numpy()  # (T,)
            word = word_region_similarity(
                region_embeds[i : i + 1].to(device), text.word_embeds[rows], text.word_mask[rows], gamma1, gamma2
            )[0].float().cpu().numpy()  # (T,)
            for p, part in enumerate(parts):
                swapped = slice(1 + p * num_swaps, 1 + (p + 1) * num_swaps)
                hits["sentence"].setdefault(part, []).append(sentence[0] > sentence[swapped].max())
                hits["word_region"].setdefault(part, []).append(word[0] > word[swapped].max())
    return {
        "sentence": {part: float(np.mean(values)) for part, values in hits["sentence"].items()},
        "word_region": {part: float(np.mean(values)) for part, values in hits["word_region"].items()},
        "count": {part: len(values) for part, values in hits["sentence"].items()},
        "num_swaps": num_swaps,
        "chance": 1.0 / (num_swaps + 1),
    }


__all__ = [
    "INCEPTION_WEIGHTS_FILE",
    "check_inception_weights",
    "clip_image_embeddings",
    "clip_score",
    "clip_text_embeddings",
    "cross_modal_distance",
    "frechet_distance",
    "inception_fid",
    "part_swap_accuracy",
    "r_precision",
]
