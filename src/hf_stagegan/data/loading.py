"""
Image-caption data for training, the way diffusers' `train_text_to_image.py` takes it: a Hub dataset or a local
`imagefolder` (images + `metadata.jsonl`), an image column and a caption column, which may hold one string or a list
of captions (CUB has ten per image; one is sampled per example per epoch). With no dataset given, SynthBirds.

Captions that carry no words (empty, whitespace only, or special tokens only) are left out when a dataset is loaded,
with a warning that counts them: a text with no words gives the word-level losses nothing to match.

Image transforms (`IMAGE_TRANSFORMS`): "center" resizes the shorter side to the resolution and takes the centre
square; "literature" is what AttnGAN, DM-GAN, DF-GAN and GALIP train with (resize to 76/64 of the resolution, 304 px
for 256, random crop, random horizontal flip); "literature_eval" takes the centre crop of the same resize.

Reproducibility. Every random choice made for an example (which caption, crop offset, flip) is a pure function of
`(seed, epoch, index)`, and the shuffling order a pure function of `(seed, epoch)`:

- `EpochSampler` yields `(epoch, index)` pairs, so the epoch travels with each index into the `DataLoader` workers;
  nothing depends on worker count, worker seeds or `persistent_workers`.
- Resuming at epoch `e` (`dataloader.set_epoch(e)` under accelerate, or `sampler.set_epoch(e)`) gives the same
  order and the same captions as an uninterrupted run; accelerate's `skip_first_batches` then resumes mid-epoch.
- Each DDP process builds the same sampler, so all processes agree on the order; accelerate shards the batches.

>>> from hf_stagegan.data import build_dataloader, load_image_text_dataset
>>> from hf_stagegan.encoders import train_clip_tokenizer
>>> dataset = load_image_text_dataset(num_train=16, num_test=0, resolution=32)  # SynthBirds
>>> tokenizer = train_clip_tokenizer(["a red bird"] * 10, vocab_size=300, model_max_length=16)
>>> batch = next(iter(build_dataloader(dataset, tokenizer, resolution=32, batch_size=4)))
>>> sorted(batch), tuple(batch["pixel_values"].shape)
(['attention_mask', 'input_ids', 'pixel_values'], (4, 3, 32, 32))
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

import datasets
import numpy as np
import torch
from PIL import Image

from ..encoders import tokenize_prompts
from .negatives import ColorSwap
from .synthbirds import load_synthbirds

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_COLUMN = "image"
DEFAULT_CAPTION_COLUMNS = ("captions", "text")  # the first one present is used
# the special tokens of every CLIP tokenizer (OpenAI's, and ours from `train_clip_tokenizer`): a caption made of
# nothing else has no word once tokenized
CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
# AttnGAN's `Resize(int(imsize * 76 / 64))` before `RandomCrop(imsize)`, kept by DM-GAN, DF-GAN and GALIP: 304 px for 256
LITERATURE_RESIZE_RATIO = 76 / 64
IMAGE_TRANSFORMS = {
    "center": {"resize_ratio": 1.0, "center_crop": True, "random_flip": False},
    "literature": {"resize_ratio": LITERATURE_RESIZE_RATIO, "center_crop": False, "random_flip": True},
    "literature_eval": {"resize_ratio": LITERATURE_RESIZE_RATIO, "center_crop": True, "random_flip": False},
}
_SAMPLER_STREAM, _EXAMPLE_STREAM = 0, 1  # keep the shuffling and the per-example draws on separate random streams


# ---------------------------------------------------------------------------------------------------------------------
# Loading and checking


def load_image_text_dataset(
    dataset_name: str | None = None,
    train_data_dir: str | None = None,
    split: str = "train",
    cache_dir: str | None = None,
    dataset_config_name: str | None = None,
    caption_column: str | None = None,
    **synthbirds_kwargs,
) -> datasets.Dataset:
    """
    One split of an image-caption dataset, without the captions that carry no words (`drop_wordless_captions`).

    Args:
        dataset_name: a Hub dataset id ("org/name"), or a local folder `datasets.load_dataset` understands (an
            imagefolder with `metadata.jsonl`, parquet files, ...).
        train_data_dir: a local `imagefolder` (images plus `metadata.jsonl` with `file_name` and captions, optionally
            in `train/` and `test/` subfolders), loaded with the `imagefolder` builder.
        split: the split to return.
        cache_dir: `datasets`' cache; for SynthBirds, where the built dataset is kept (under `synthbirds/`).
        dataset_config_name: the dataset's configuration, for Hub datasets that have several.
        caption_column: the caption column to clean; default "captions", else "text" (as `check_columns`).
        **synthbirds_kwargs: with neither `dataset_name` nor `train_data_dir`, the built-in SynthBirds is used, and
            these go to `hf_stagegan.data.synthbirds.load_synthbirds` (`num_train`, `num_test`, `resolution`, `seed`).

    Returns:
        `datasets.Dataset` of that split.
    """
    if dataset_name is not None and train_data_dir is not None:
        raise ValueError(
            f"Give `dataset_name` or `train_data_dir`, not both (got {dataset_name!r} and {train_data_dir!r})."
        )
    if synthbirds_kwargs and (dataset_name is not None or train_data_dir is not None):
        raise ValueError(
            f"SynthBirds options {sorted(synthbirds_kwargs)} only apply when neither `dataset_name` nor "
            "`train_data_dir` is given."
        )
    if dataset_name is not None:
        source = f"dataset {dataset_name!r}"
        dataset = datasets.load_dataset(dataset_name, dataset_config_name, cache_dir=cache_dir)
    elif train_data_dir is not None:
        if not os.path.isdir(train_data_dir):
            raise ValueError(f"`train_data_dir` {train_data_dir!r} is not a folder.")
        source = f"imagefolder {train_data_dir!r}"
        dataset = datasets.load_dataset("imagefolder", data_dir=train_data_dir, cache_dir=cache_dir)
    else:
        source = "SynthBirds"
        synthbirds_cache = os.path.join(cache_dir, "synthbirds") if cache_dir is not None else None
        dataset = load_synthbirds(cache_dir=synthbirds_cache, **synthbirds_kwargs)
        logger.info("No `dataset_name` or `train_data_dir` given: using the built-in SynthBirds dataset.")
    if split not in dataset:
        raise ValueError(f"Split {split!r} not found in {source}; its splits are {list(dataset)}.")
    dataset = dataset[split]
    column = caption_column or next((name for name in DEFAULT_CAPTION_COLUMNS if name in dataset.column_names), None)
    if column in dataset.column_names:  # a missing column is `check_columns`' to report, with the columns there are
        dataset = drop_wordless_captions(dataset, column, source=f"the {split!r} split of {source}")
    return dataset


def caption_has_words(caption, special_tokens: Iterable[str] = CLIP_SPECIAL_TOKENS) -> bool:
    """False for a caption that is not a string, empty, whitespace only, or made of `special_tokens` only."""
    if not isinstance(caption, str):
        return False
    for token in special_tokens:
        caption = caption.replace(token, " ")
    return bool(caption.strip())


def drop_wordless_captions(
    dataset: datasets.Dataset,
    caption_column: str,
    special_tokens: Iterable[str] = CLIP_SPECIAL_TOKENS,
    source: str = "the dataset",
    num_examples: int = 3,
) -> datasets.Dataset:
    """
    `dataset` without the captions that carry no words (`caption_has_words`): for a string column, the examples whose
    caption has none; for a list-of-captions column, those captions, and the examples left with no caption.

    A warning counts what was left out and quotes up to `num_examples` of it; `ValueError` if no example is left. A
    dataset with nothing to leave out is returned as it is (nothing is copied; only the caption column is read).
    """
    feature = dataset.features[caption_column]
    values = list(dataset[caption_column])
    special_tokens = tuple(special_tokens)
    is_list = _is_string_list(feature)
    wordless, kept_rows, cleaned = [], [], []
    for index, value in enumerate(values):
        captions = list(value or []) if is_list else [value]
        good = [caption for caption in captions if caption_has_words(caption, special_tokens)]
        wordless.extend(caption for caption in captions if not caption_has_words(caption, special_tokens))
        if good:
            kept_rows.append(index)
        cleaned.append(good)
    num_rows_dropped = len(values) - len(kept_rows)
    if not wordless and not num_rows_dropped:
        return dataset
    num_captions = sum(len(value or []) for value in values) if is_list else len(values)
    if not kept_rows:
        raise ValueError(
            f"No caption with words in column {caption_column!r} of {source}: all {num_captions} captions of its "
            f"{len(values)} examples are empty, whitespace or special tokens only (e.g. {wordless[:num_examples]!r})."
        )
    if is_list and wordless:
        dataset = dataset.remove_columns(caption_column).add_column(caption_column, cleaned, feature=feature)
    message = (
        f"Left out {len(wordless)} of {num_captions} captions in column {caption_column!r} of {source} that carry no "
        f"words (empty, whitespace or special tokens only), e.g. {wordless[:num_examples]!r}"
    )
    if num_rows_dropped:
        message += f"; {num_rows_dropped} example(s) had no caption left and were left out"
    logger.warning(f"{message}. {len(kept_rows)} examples remain.")
    return dataset.select(kept_rows) if num_rows_dropped else dataset


def all_captions(dataset: datasets.Dataset, caption_column: str) -> list[str]:
    """Every caption of `dataset`, a list-of-captions column flattened: what a tokenizer is trained on."""
    captions = dataset[caption_column]
    return [caption for group in captions for caption in group] if captions and isinstance(captions[0], list) else captions


def _is_string(feature) -> bool:
    return isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")


def _is_string_list(feature) -> bool:
    inner = getattr(feature, "feature", None)
    return isinstance(feature, (datasets.List, datasets.LargeList, datasets.Sequence)) and _is_string(inner)


def check_columns(
    dataset: datasets.Dataset, image_column: str | None = None, caption_column: str | None = None
) -> tuple[str, str]:
    """
    Resolves and checks the image and caption columns; returns `(image_column, caption_column)`.

    Defaults: `image_column="image"`; `caption_column` is "captions" if the dataset has it, else "text". The image
    column must be a `datasets.Image` feature; the caption column a string or a list of strings.
    """
    columns = dataset.column_names
    image_column = image_column or DEFAULT_IMAGE_COLUMN
    if image_column not in columns:
        raise ValueError(f"`image_column` {image_column!r} is not a column of the dataset; its columns are {columns}.")
    if caption_column is None:
        found = [name for name in DEFAULT_CAPTION_COLUMNS if name in columns]
        if not found:
            raise ValueError(
                f"No caption column: looked for {list(DEFAULT_CAPTION_COLUMNS)} but the dataset's columns are "
                f"{columns}; pass `caption_column`."
            )
        caption_column = found[0]
        logger.info(f"Using caption column {caption_column!r} (of {columns}).")
    elif caption_column not in columns:
        raise ValueError(
            f"`caption_column` {caption_column!r} is not a column of the dataset; its columns are {columns}."
        )
    image_feature, caption_feature = dataset.features[image_column], dataset.features[caption_column]
    if not isinstance(image_feature, datasets.Image):
        raise ValueError(f"`image_column` {image_column!r} must hold images (datasets.Image), got {image_feature}.")
    if not (_is_string(caption_feature) or _is_string_list(caption_feature)):
        raise ValueError(
            f"`caption_column` {caption_column!r} must hold a string or a list of strings, got {caption_feature}."
        )
    return image_column, caption_column


# ---------------------------------------------------------------------------------------------------------------------
# Per-example processing


def decode_image(value: dict, name: str) -> Image.Image:
    """
    Decodes an undecoded `datasets.Image` value (`{"path", "bytes"}`) to RGB; a corrupt or unreadable file raises
    `OSError` naming it (`name` is used when the value has no path).
    """
    path = value.get("path") if isinstance(value, dict) else None
    try:
        return datasets.Image(mode="RGB").decode_example(value)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for broken files
        raise OSError(f"Could not read image {path or name!r}: {type(error).__name__}: {error}") from error


def preprocess_image(
    image: Image.Image,
    resolution: int,
    center_crop: bool = True,
    random_flip: bool = False,
    rng: np.random.Generator | None = None,
    resize_ratio: float = 1.0,
) -> torch.Tensor:
    """
    Resize (shorter side to `int(resolution * resize_ratio)`, LANCZOS), crop a `resolution` square (centre, or at a
    random offset), optionally flip left-right with probability 1/2; returns a `(3, resolution, resolution)` float
    tensor in [-1, 1]. Random choices come from `rng` (required when `center_crop=False` or `random_flip=True`).
    `resize_ratio=76/64` is the literature's training transform (304 px, then a random 256 crop); an image already at
    the resized size (a prepared CUB at 304 px trained at 256) is not resampled.
    """
    if (not center_crop or random_flip) and rng is None:
        raise ValueError("`rng` is required for a random crop or a random flip.")
    if not resize_ratio >= 1.0:
        raise ValueError(f"`resize_ratio` must be >= 1 (the crop is taken from the resized image), got {resize_ratio!r}.")
    image = image.convert("RGB")
    width, height = image.size
    side = int(resolution * resize_ratio)
    scale = side / min(width, height)
    size = (max(side, round(width * scale)), max(side, round(height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    draws = rng.random(3) if rng is not None else np.full(3, 0.5)  # always three draws: options never shift others
    left = round((size[0] - resolution) * (0.5 if center_crop else draws[0]))
    top = round((size[1] - resolution) * (0.5 if center_crop else draws[1]))
    image = image.crop((left, top, left + resolution, top + resolution))
    if random_flip and draws[2] < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)  # (3, R, R)
    return pixels.float() / 127.5 - 1.0


def label_classes(dataset: datasets.Dataset, column: str) -> list:
    """
    The distinct values of a label column, sorted: class `i` of an attribute classifier is `label_classes(...)[i]`.
    The column must exist and have no missing values.
    """
    if column not in dataset.column_names:
        raise ValueError(f"Label column {column!r} is not in the dataset; its columns are {dataset.column_names}.")
    values = dataset.unique(column)
    if any(value is None for value in values):
        raise ValueError(f"Label column {column!r} has missing values (None); every example needs a label.")
    if len(values) < 2:
        raise ValueError(f"Label column {column!r} must hold at least 2 distinct values to classify, got {values}.")
    return sorted(values)


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random stream of example `index` in `epoch`: caption choice, crop offset and flip all come from it."""
    return np.random.default_rng([_EXAMPLE_STREAM, seed, epoch, index])


class ImageTextDataset(torch.utils.data.Dataset):
    """
    A `datasets.Dataset` of images and captions as training examples `{"pixel_values": (3, R, R) in [-1, 1],
    "caption": str}`, plus `"negative_captions"` (list of str) when `num_negatives > 0`: up to that many mismatched
    versions of the caption, one colour word swapped each (`data.negatives.ColorSwap`, vocabulary from the dataset's
    own captions). With `label_columns`, also `"labels"`: a `(len(label_columns),)` long tensor, each column's value as
    its index in `label_classes[column]` (the column's distinct values, sorted), for attribute supervision of an image
    encoder (`clip_finetuning.pretrain_vision_tower`).

    Index it with `(epoch, index)` (what `EpochSampler` yields) or with a plain `index` (epoch `self.epoch`, which
    `set_epoch` sets). For a list-of-captions column, one caption is drawn per `(seed, epoch, index)`.
    """

    def __init__(
        self,
        dataset: datasets.Dataset,
        resolution: int,
        image_column: str | None = None,
        caption_column: str | None = None,
        seed: int = 0,
        center_crop: bool = True,
        random_flip: bool = False,
        resize_ratio: float = 1.0,
        num_negatives: int = 0,
        label_columns: Iterable[str] = (),
    ):
        self.image_column, self.caption_column = check_columns(dataset, image_column, caption_column)
        self.label_columns = tuple(label_columns)
        self.label_classes = {column: label_classes(dataset, column) for column in self.label_columns}
        if isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 0:
            raise ValueError(f"`num_negatives` must be an int >= 0, got {num_negatives!r}.")
        self.num_negatives = num_negatives
        self.color_swap = ColorSwap.from_captions(all_captions(dataset, self.caption_column)) if num_negatives else None
        # only the two columns are read per example; images are decoded here, so that a broken file is reported by
        # name rather than deep inside `datasets`
        dataset = dataset.select_columns(list(dict.fromkeys([self.image_column, self.caption_column, *self.label_columns])))
        self.dataset = dataset.cast_column(self.image_column, datasets.Image(decode=False))
        self.resolution = resolution
        self.seed = seed
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.resize_ratio = resize_ratio
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        index = int(index)
        row = self.dataset[index]
        rng = example_rng(self.seed, epoch, index)
        caption = row[self.caption_column]
        choice = rng.random()  # drawn for string columns too, so that the image draws below never depend on it
        if not isinstance(caption, str):
            if len(caption) == 0:
                raise ValueError(f"Example {index} has no captions in column {self.caption_column!r}.")
            caption = caption[int(choice * len(caption))]
        image = decode_image(row[self.image_column], name=f"example {index} of column {self.image_column!r}")
        pixel_values = preprocess_image(
            image, self.resolution, self.center_crop, self.random_flip, rng, self.resize_ratio
        )
        example = {"pixel_values": pixel_values, "caption": caption}
        if self.label_columns:
            example["labels"] = torch.tensor(
                [self.label_classes[column].index(row[column]) for column in self.label_columns], dtype=torch.long
            )
        if self.num_negatives:  # drawn last: the caption and image draws above are the same with or without negatives
            example["negative_captions"] = self.color_swap(caption, self.num_negatives, rng)
        return example


class EpochSampler(torch.utils.data.Sampler):
    """
    Yields `(epoch, index)` for every index once per epoch, shuffled by `(seed, epoch)` (or in order with
    `shuffle=False`). The epoch advances by one after each full pass; `set_epoch` (which accelerate calls at the start
    of every pass) sets it directly.
    """

    def __init__(self, num_samples: int, seed: int = 0, shuffle: bool = True):
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        epoch = self.epoch
        if self.shuffle:
            order = np.random.default_rng([_SAMPLER_STREAM, self.seed, epoch]).permutation(self.num_samples)
        else:
            order = np.arange(self.num_samples)
        for index in order.tolist():
            yield epoch, index
        self.epoch = epoch + 1


class ImageTextCollator:
    """
    Stacks `pixel_values` and tokenizes the captions (padding to the longest, truncation to the tokenizer's limit).

    With `num_negatives = K > 0`, the examples' `negative_captions` (see `ImageTextDataset`) also give
    `negative_input_ids` and `negative_attention_mask` `(B, K, L)` and `negative_mask` `(B, K)`, False where an
    example had fewer than K negatives (that slot repeats the true caption and must be ignored) or where the swapped
    colour word fell beyond the tokenizer's length limit.
    """

    def __init__(self, tokenizer, max_length: int | None = None, num_negatives: int = 0):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.num_negatives = num_negatives

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        captions = [example["caption"] for example in examples]
        num_negatives = self.num_negatives
        negatives = [
            example["negative_captions"][:num_negatives]
            + [example["caption"]] * (num_negatives - len(example["negative_captions"][:num_negatives]))
            for example in examples
        ] if num_negatives else []  # fmt: skip
        # one tokenizer call, so that true and mismatched captions share one padded length
        tokens = tokenize_prompts(self.tokenizer, captions + [text for group in negatives for text in group], self.max_length)
        batch_size = len(examples)
        batch = {
            "pixel_values": torch.stack([example["pixel_values"] for example in examples]),  # (B, 3, R, R)
            "input_ids": tokens.input_ids[:batch_size],  # (B, L)
            "attention_mask": tokens.attention_mask[:batch_size],  # (B, L)
        }
        if "labels" in examples[0]:
            batch["labels"] = torch.stack([example["labels"] for example in examples])  # (B, num label columns)
        if num_negatives:
            length = tokens.input_ids.shape[1]
            batch["negative_input_ids"] = tokens.input_ids[batch_size:].view(batch_size, num_negatives, length)
            batch["negative_attention_mask"] = tokens.attention_mask[batch_size:].view(batch_size, num_negatives, length)
            made = torch.tensor(
                [[k < len(example["negative_captions"]) for k in range(num_negatives)] for example in examples]
            )  # (B, K)
            # a colour swapped beyond the tokenizer's length limit leaves the tokens unchanged: not a mismatch
            truncated = (batch["negative_input_ids"] == batch["input_ids"][:, None]).all(dim=-1)
            batch["negative_mask"] = made & ~truncated
        return batch


def build_dataloader(
    dataset: datasets.Dataset,
    tokenizer,
    resolution: int,
    batch_size: int,
    seed: int = 0,
    image_column: str | None = None,
    caption_column: str | None = None,
    center_crop: bool = True,
    random_flip: bool = False,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    max_length: int | None = None,
    resize_ratio: float = 1.0,
    num_negatives: int = 0,
    label_columns: Iterable[str] = (),
) -> torch.utils.data.DataLoader:
    """
    A `DataLoader` of training batches `{"pixel_values": (B, 3, R, R) in [-1, 1], "input_ids": (B, L),
    "attention_mask": (B, L)}`; with `num_negatives > 0` also up to that many mismatched captions per example
    (`negative_input_ids`, `negative_attention_mask` `(B, K, L)`, `negative_mask` `(B, K)`; see `ImageTextCollator`);
    with `label_columns`, `labels` `(B, len(label_columns))`, class indices of those columns (see `ImageTextDataset`).

    The image transform is `center_crop`, `random_flip` and `resize_ratio` (`preprocess_image`); `IMAGE_TRANSFORMS`
    names the usual combinations: `build_dataloader(..., **IMAGE_TRANSFORMS["literature"])`.

    `drop_last=True` by default: a GAN step with batch norm cannot take a batch of one, and equal batches keep DDP
    processes in step. Order and captions are reproducible from `seed` (module docstring); call
    `dataloader.set_epoch(epoch)` (accelerate) or `dataloader.sampler.set_epoch(epoch)` when resuming.
    """
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"The dataset has {len(dataset)} examples, fewer than `batch_size`={batch_size}: with `drop_last=True` "
            "there would be no batch at all."
        )
    examples = ImageTextDataset(
        dataset, resolution, image_column, caption_column, seed, center_crop, random_flip, resize_ratio, num_negatives,
        label_columns,
    )
    return torch.utils.data.DataLoader(
        examples,
        batch_size=batch_size,
        sampler=EpochSampler(len(examples), seed=seed, shuffle=shuffle),
        collate_fn=ImageTextCollator(tokenizer, max_length, num_negatives),
        drop_last=drop_last,
        num_workers=num_workers,
        # each new iterator draws a worker base seed; from its own generator, not the global RNG, so that resuming
        # (a new iterator mid-epoch) leaves the noise sequence of training exactly as in an uninterrupted run
        generator=torch.Generator().manual_seed(seed),
    )


__all__ = [
    "CLIP_SPECIAL_TOKENS",
    "IMAGE_TRANSFORMS",
    "LITERATURE_RESIZE_RATIO",
    "EpochSampler",
    "ImageTextCollator",
    "ImageTextDataset",
    "build_dataloader",
    "caption_has_words",
    "check_columns",
    "decode_image",
    "drop_wordless_captions",
    "example_rng",
    "label_classes",
    "load_image_text_dataset",
    "preprocess_image",
]
