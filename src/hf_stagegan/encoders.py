"""CLIP features in one embedding space: sentence vectors, word vectors (+ mask), global image and region features.

Any transformers CLIP works, by name or path (`CLIPModel` for training, which needs the image side too;
`CLIPTextModelWithProjection` is enough to generate). Words and regions are projected with the same heads as the
sentence and the global image, so that all four live in CLIP's joint space (DESIGN.md §1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.utils import ModelOutput


@dataclass
class TextFeatures(ModelOutput):
    """
    Args:
        sentence_embeds (`torch.FloatTensor` of shape `(batch, dim)`): c_s, L2-normalised.
        word_embeds (`torch.FloatTensor` of shape `(batch, seq_len, dim)`): c_w, L2-normalised, one per token.
        word_mask (`torch.BoolTensor` of shape `(batch, seq_len)`): True at real words; False at padding and at the
            start/end tokens.
    """

    sentence_embeds: torch.FloatTensor | None = None
    word_embeds: torch.FloatTensor | None = None
    word_mask: torch.BoolTensor | None = None


@dataclass
class ImageFeatures(ModelOutput):
    """
    Args:
        image_embeds (`torch.FloatTensor` of shape `(batch, dim)`): the global image feature, L2-normalised.
        region_embeds (`torch.FloatTensor` of shape `(batch, num_patches, dim)`): one feature per image patch
            ("region", claim 7), L2-normalised.
    """

    image_embeds: torch.FloatTensor | None = None
    region_embeds: torch.FloatTensor | None = None


def tokenize_prompts(tokenizer, prompts: list[str], max_length: int | None = None):
    """Pads and truncates `prompts` to the tokenizer's limit; returns a `BatchEncoding` of PyTorch tensors."""
    max_length = max_length or tokenizer.model_max_length
    return tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")


def encode_text(text_model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextFeatures:
    """
    Sentence and word vectors of tokenized text (claim 1: sentence-level and word-level encoding).

    `text_model` is a `CLIPModel` or a `CLIPTextModelWithProjection`: anything with `.text_model` and
    `.text_projection`. The sentence vector is CLIP's projected end-of-text feature; each word vector is the same
    projection applied to that token's final hidden state.
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    outputs = text_model.text_model(input_ids=input_ids, attention_mask=attention_mask)
    sentence = text_model.text_projection(outputs.pooler_output)  # (B, D)
    words = text_model.text_projection(outputs.last_hidden_state)  # (B, L, D)

    config = text_model.text_model.config
    special = (input_ids == config.bos_token_id) | (input_ids == config.eos_token_id)
    word_mask = attention_mask.bool() & ~special
    return TextFeatures(
        sentence_embeds=F.normalize(sentence, dim=-1),
        word_embeds=F.normalize(words, dim=-1),
        word_mask=word_mask,
    )


def prepare_images(
    images: torch.Tensor,
    image_size: int,
    image_mean: Iterable[float] = OPENAI_CLIP_MEAN,
    image_std: Iterable[float] = OPENAI_CLIP_STD,
) -> torch.Tensor:
    """Generator images in [-1, 1] `(B, 3, H, W)` -> CLIP pixel values `(B, 3, image_size, image_size)`, differentiably."""
    pixels = (images + 1) / 2
    if pixels.shape[-1] != image_size or pixels.shape[-2] != image_size:
        # resized in at least fp32: the antialiased CPU kernel has no bf16 version (bf16 generators, mixed precision)
        resized = F.interpolate(
            pixels.to(torch.promote_types(pixels.dtype, torch.float32)),
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        pixels = resized.to(pixels.dtype)
    mean = torch.tensor(list(image_mean), device=pixels.device, dtype=pixels.dtype)[None, :, None, None]
    std = torch.tensor(list(image_std), device=pixels.device, dtype=pixels.dtype)[None, :, None, None]
    return (pixels - mean) / std


def encode_images(
    clip_model,
    images: torch.Tensor,
    image_mean: Iterable[float] = OPENAI_CLIP_MEAN,
    image_std: Iterable[float] = OPENAI_CLIP_STD,
) -> ImageFeatures:
    """
    Global and region features of images in [-1, 1] (claims 6, 7: the "preset image encoder").

    The images are resized and normalised as the CLIP vision tower expects, keeping the graph, so generator losses
    built on these features back-propagate into the generator.
    """
    pixel_values = prepare_images(images, clip_model.config.vision_config.image_size, image_mean, image_std)
    vision = clip_model.vision_model(pixel_values=pixel_values)
    image = clip_model.visual_projection(vision.pooler_output)  # (B, D)
    patches = clip_model.vision_model.post_layernorm(vision.last_hidden_state[:, 1:])  # (B, R, hidden)
    regions = clip_model.visual_projection(patches)  # (B, R, D)
    return ImageFeatures(image_embeds=F.normalize(image, dim=-1), region_embeds=F.normalize(regions, dim=-1))


def text_encoder_from_clip(clip_model: CLIPModel) -> CLIPTextModelWithProjection:
    """
    The text half of a (fine-tuned) `CLIPModel` as a `CLIPTextModelWithProjection`, all that generation needs.

    Loading a `CLIPModel` folder directly with `CLIPTextModelWithProjection.from_pretrained` would take the text
    config's default `projection_dim` rather than the model's, so the projection is copied explicitly here.
    """
    text_config = clip_model.config.text_config.to_dict()
    text_config["projection_dim"] = clip_model.config.projection_dim
    text_encoder = CLIPTextModelWithProjection(type(clip_model.config.text_config)(**text_config))
    state = {k: v for k, v in clip_model.state_dict().items() if k.startswith(("text_model.", "text_projection."))}
    text_encoder.load_state_dict(state, strict=True)
    return text_encoder.to(clip_model.device, clip_model.dtype).eval()


def train_clip_tokenizer(captions: Iterable[str], vocab_size: int = 1000, model_max_length: int = 77) -> CLIPTokenizer:
    """
    A CLIP tokenizer (same normaliser, pre-tokeniser, BPE with `</w>`, start/end tokens) whose vocabulary is learnt
    from `captions`: the offline stand-in for a pretrained CLIP's tokenizer.

    The ids are canonical (special tokens, then the base symbols sorted, then the merges in order): the BPE trainer
    numbers base symbols in hash-map order, which differs between processes, and the same captions must give the
    same token ids every time (reproducible and resumable training).
    """
    if vocab_size < 300:
        raise ValueError(f"`vocab_size` must be >= 300 (256 byte symbols + special tokens + merges), got {vocab_size}.")
    trained = CLIPTokenizer().train_new_from_iterator(captions, vocab_size=vocab_size)
    model = json.loads(trained.backend_tokenizer.to_str())["model"]
    merges = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    vocab = model["vocab"]
    special = sorted((token for token in vocab if token in trained.all_special_tokens), key=vocab.get)
    products = list(dict.fromkeys(left + right for left, right in merges))
    alphabet = sorted(set(vocab) - set(special) - set(products))
    ordered = special + alphabet + [token for token in products if token not in special]
    tokenizer = CLIPTokenizer(vocab={token: index for index, token in enumerate(ordered)}, merges=merges)
    tokenizer.model_max_length = model_max_length  # CLIP's context length (77) unless the text model is shorter
    return tokenizer


def build_clip_from_scratch(
    tokenizer,
    projection_dim: int = 256,
    hidden_size: int = 256,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    image_size: int = 64,
    patch_size: int = 8,
) -> CLIPModel:
    """
    A randomly initialised `CLIPModel` sized for `tokenizer` (vocabulary, special tokens, context length): the offline
    starting point of CLIP_FT when no pretrained CLIP can be downloaded. The patch grid (`image_size // patch_size`
    squared) is the number of image regions the word-region loss attends over.
    """
    if image_size % patch_size:
        raise ValueError(f"`image_size` ({image_size}) must be a multiple of `patch_size`, got {patch_size}.")
    shared = dict(
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
    )
    text_config = dict(
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **shared,
    )
    vision_config = dict(image_size=image_size, patch_size=patch_size, **shared)
    return CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=projection_dim))


__all__ = [
    "build_clip_from_scratch",
    "ImageFeatures",
    "TextFeatures",
    "encode_images",
    "encode_text",
    "prepare_images",
    "text_encoder_from_clip",
    "tokenize_prompts",
    "train_clip_tokenizer",
]
