"""CLIP features in one embedding space: sentence vectors, word vectors (+ mask), global image and region features.

Any transformers CLIP works, by name or path (`CLIPModel` for training, which needs the image side too;
`CLIPTextModelWithProjection` is enough to generate). Words and regions are projected with the same heads as the
sentence and the global image, so that all four live in CLIP's joint space (DESIGN.md §1).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

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


def repeat_features(features: TextFeatures, times: int) -> TextFeatures:
    """Each prompt's text features `times` times in a row (one copy per image of that prompt)."""
    return TextFeatures(
        sentence_embeds=features.sentence_embeds.repeat_interleave(times, dim=0),
        word_embeds=features.word_embeds.repeat_interleave(times, dim=0),
        word_mask=features.word_mask.repeat_interleave(times, dim=0),
    )


def check_text_features(features, dim: int, name: str = "text_features") -> int:
    """
    Raises `TypeError` / `ValueError` naming `name` unless `features` is a complete `TextFeatures` of size `dim`
    (sentence `(batch, dim)`, words `(batch, L, dim)`, mask `(batch, L)`); returns its batch size.
    """
    if not isinstance(features, TextFeatures):
        raise TypeError(
            f"`{name}` has to be a `TextFeatures` (from `pipe.encode_prompt`), got {type(features).__name__}."
        )
    sentence, words, mask = features.sentence_embeds, features.word_embeds, features.word_mask
    if sentence is None or sentence.ndim != 2 or sentence.shape[1] != dim:
        shape = None if sentence is None else tuple(sentence.shape)
        raise ValueError(f"`{name}.sentence_embeds` must have shape (batch, {dim}), got {shape}.")
    batch = sentence.shape[0]
    if words is None or words.ndim != 3 or words.shape[0] != batch or words.shape[2] != dim:
        shape = None if words is None else tuple(words.shape)
        raise ValueError(f"`{name}.word_embeds` must have shape ({batch}, num_words, {dim}), got {shape}.")
    if mask is None or tuple(mask.shape) != tuple(words.shape[:2]):
        shape = None if mask is None else tuple(mask.shape)
        raise ValueError(f"`{name}.word_mask` must have shape {tuple(words.shape[:2])}, got {shape}.")
    return batch


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


def special_token_ids(text_config) -> tuple[int, int]:
    """
    `(start, end)` token ids of a CLIP text config. OpenAI's checkpoints on the Hub (openai/clip-vit-base-patch32 and
    the text encoders copied from them) record bos 0 and eos 2, an old mistake that transformers keeps and recognises
    by `eos_token_id == 2`, pooling at the highest id instead; their tokenizer's real ids are the vocabulary's last
    two, <|startoftext|> = vocab_size - 2 and <|endoftext|> = vocab_size - 1.
    """
    if text_config.eos_token_id == 2:
        return text_config.vocab_size - 2, text_config.vocab_size - 1
    return text_config.bos_token_id, text_config.eos_token_id


def encode_text(text_model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> TextFeatures:
    """
    Sentence and word vectors of tokenized text (claim 1: sentence-level and word-level encoding).

    `text_model` is a `CLIPModel` or a `CLIPTextModelWithProjection`: anything with `.text_model` and
    `.text_projection`. `input_ids` `(B, L)`, or `(B, K, L)` for K texts per example (every output then has the
    extra `K` dimension). The sentence vector is CLIP's projected end-of-text feature; each word vector is the same
    projection applied to that token's final hidden state. The word mask leaves out padding and the start and end
    tokens (`special_token_ids`).
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if input_ids.ndim > 2:  # several texts per example, e.g. mismatched captions (B, K, L): encoded as one batch
        flat = encode_text(text_model, input_ids.flatten(0, -2), attention_mask.flatten(0, -2))
        lead = input_ids.shape[:-1]
        return TextFeatures(
            sentence_embeds=flat.sentence_embeds.unflatten(0, lead),
            word_embeds=flat.word_embeds.unflatten(0, lead),
            word_mask=flat.word_mask.unflatten(0, lead),
        )
    outputs = text_model.text_model(input_ids=input_ids, attention_mask=attention_mask)
    sentence = text_model.text_projection(outputs.pooler_output)  # (B, D)
    words = text_model.text_projection(outputs.last_hidden_state)  # (B, L, D)

    bos_token_id, eos_token_id = special_token_ids(text_model.text_model.config)
    special = (input_ids == bos_token_id) | (input_ids == eos_token_id)
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


OPENAI_CLIP_BPE = "bpe_simple_vocab_16e6.txt.gz"
NUM_OPENAI_CLIP_MERGES = 49152 - 256 - 2  # OpenAI's tokenizer reads this many merges: a vocabulary of 49,408


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from the 256 byte values to printable characters, which byte-level BPE vocabularies are written in."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return {**{byte: chr(byte) for byte in printable}, **{byte: chr(256 + n) for n, byte in enumerate(others)}}


def find_clip_bpe() -> Path:
    """OpenAI's BPE merges file as `open_clip` (open-clip-torch) or OpenAI's `clip` package ship it, found without
    importing either; `FileNotFoundError` saying what to install if neither is there."""
    for package in ("open_clip", "clip"):
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            if (Path(folder) / OPENAI_CLIP_BPE).is_file():
                return Path(folder) / OPENAI_CLIP_BPE
    raise FileNotFoundError(
        f"No {OPENAI_CLIP_BPE} found: pass its path, or install a package that ships it without its dependencies, "
        "e.g. `pip install --no-deps open-clip-torch`."
    )


def clip_tokenizer_from_bpe(bpe_path: str | os.PathLike | None = None, model_max_length: int = 77) -> CLIPTokenizer:
    """
    OpenAI CLIP's tokenizer (what `CLIPTokenizer.from_pretrained("openai/clip-vit-base-patch32")` downloads), built
    offline from its BPE merges file `bpe_simple_vocab_16e6.txt.gz` (default: the copy `open_clip` ships). The
    vocabulary is laid out as OpenAI's `SimpleTokenizer` lays it out: the 256 byte symbols, the same with `</w>`, one
    token per merge in order, then <|startoftext|> (49406) and <|endoftext|> (49407); the same text gives the same ids.
    """
    path = Path(bpe_path) if bpe_path is not None else find_clip_bpe()
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    lines = raw.decode("utf-8").split("\n")  # line 0 is a version header
    merges = [tuple(line.split()) for line in lines[1 : NUM_OPENAI_CLIP_MERGES + 1]]
    if len(merges) != NUM_OPENAI_CLIP_MERGES or any(len(merge) != 2 for merge in merges):
        raise ValueError(
            f"{str(path)!r} is not OpenAI CLIP's BPE file: expected a header line and {NUM_OPENAI_CLIP_MERGES} merges "
            "of two symbols each."
        )
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [symbol + "</w>" for symbol in symbols] + ["".join(merge) for merge in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={token: index for index, token in enumerate(tokens)}, merges=merges)
    tokenizer.model_max_length = model_max_length
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
    "check_text_features",
    "clip_tokenizer_from_bpe",
    "find_clip_bpe",
    "special_token_ids",
    "ImageFeatures",
    "TextFeatures",
    "encode_images",
    "encode_text",
    "prepare_images",
    "repeat_features",
    "text_encoder_from_clip",
    "tokenize_prompts",
    "train_clip_tokenizer",
]
