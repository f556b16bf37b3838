"""
The SynthBirds judge: a small attribute classifier trained only on real SynthBirds images, never on generated ones,
that reads a bird's body, wing, crown and beak colour, beak length and size (DESIGN.md §3b).

On generated images it gives two measurements:

- **attribute accuracy** (`judge_attributes`): for each attribute the caption names (`synthbirds.parse_caption`),
  how often the judge reads that value in the image drawn for it;
- **the Fréchet distance in the judge's feature space** (`judge_frechet_distance`), next to its real-vs-real floor:
  the same distance between two independent sets of real birds of the same size.

The judge is trained on its own SynthBirds seed (`JUDGE_DATA_SEED`), disjoint from the training runs' (seed 0) and the
evaluation protocol's, at the resolution it will judge. `build_judge` trains one (a few minutes on 2 CPU cores at
64 px), measures its accuracy on held-out real birds and caches it (`evaluation.cache`); `load_judge` loads the cached
one, building it first when missing.

>>> from hf_stagegan.evaluation import judge_attributes, load_judge
>>> judge = load_judge(resolution=64)  # doctest: +SKIP
>>> judge_attributes(judge, images, captions)["accuracy"]["wing_color"]  # doctest: +SKIP
0.93
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..data.synthbirds import BEAK_COLORS, BEAK_LENGTHS, PALETTE, PART_IDS, SIZES, iter_birds, parse_caption
from .cache import build_cached_model, ensure_built, evaluation_cache_dir, recipe_of
from .images import to_tensor

logger = logging.getLogger(__name__)

JUDGE_DATA_SEED = 1001  # SynthBirds seed of the judge's own images; training runs use seed 0
FLOOR_DATA_SEED = 3003  # SynthBirds seed of the second real set whose FD to the reference set is the floor
JUDGE_RECIPE_VERSION = 1  # bump when the architecture or the training recipe changes: cached judges are keyed by it
JUDGE_RESOLUTIONS = (32, 64, 128, 256)
JUDGE_REPORT_NAME = "judge_report.json"
NUM_PART_CLASSES = len(PART_IDS)
NUM_COLOR_CLASSES = len(PALETTE) + 1  # the palette colours, and "no named colour" (background, eye, legs, perch)
# which part a 32x32 cell is labelled with when several meet in it: the small ones first
_PART_PRIORITY = ("beak", "crown", "eye", "wing", "legs", "body", "perch", "background")
_COLORED_PARTS = {"body": "body_color", "wing": "wing_color", "crown": "crown_color", "beak": "beak_color"}
_PART_OF = {"body_color": "body", "wing_color": "wing", "crown_color": "crown", "beak_color": "beak", "beak_length": "beak"}
DEFAULT_ATTRIBUTE_LABELS: dict[str, list[str]] = {
    "body_color": list(PALETTE),
    "wing_color": list(PALETTE),
    "crown_color": list(PALETTE),
    "beak_color": list(BEAK_COLORS),
    "beak_length": list(BEAK_LENGTHS),
    "size": list(SIZES),
}


# ---------------------------------------------------------------------------------------------------------------------
# Model


class SynthBirdsJudgeConfig(PretrainedConfig):
    r"""
    Configuration of a [`SynthBirdsJudge`].

    Args:
        image_size (`int`, *optional*, defaults to 64):
            Side of the images it judges (a power of two >= 32); other sizes are resized to it. The trunk always
            works on a 32x32 grid: larger images are first folded into channels (pixel unshuffle), so no pixel is
            thrown away and the cost hardly grows with the resolution.
        channels (`int`, *optional*, defaults to 16):
            Width of the 32x32 stage; doubled at 16x16 and 8x8.
        attribute_labels (`dict[str, list[str]]`, *optional*):
            The attributes it reads and their values, one classification head each. Defaults to SynthBirds' six
            judged attributes (`facing` is never named in a caption, so it is not judged).
        initializer_range (`float`, *optional*, defaults to 0.02): not used by convolutions (Kaiming init).

    Example:

    ```python
    >>> from hf_stagegan.evaluation.judge import SynthBirdsJudge, SynthBirdsJudgeConfig

    >>> judge = SynthBirdsJudge(SynthBirdsJudgeConfig(image_size=32, channels=8))
    >>> sorted(judge.config.attribute_labels)[:2]
    ['beak_color', 'beak_length']
    ```
    """

    model_type = "synthbirds_judge"

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 16,
        attribute_labels: dict[str, list[str]] | None = None,
        initializer_range: float = 0.02,
        **kwargs,
    ):
        self.image_size = image_size
        self.channels = channels
        self.attribute_labels = {k: list(v) for k, v in (attribute_labels or DEFAULT_ATTRIBUTE_LABELS).items()}
        self.initializer_range = initializer_range
        super().__init__(**kwargs)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32 or image_size & (image_size - 1):
            raise ValueError(f"`image_size` must be a power of two >= 32, got {image_size!r}.")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be an int >= 1, got {channels!r}.")
        for name, labels in self.attribute_labels.items():
            if len(labels) < 2 or len(set(labels)) != len(labels):
                raise ValueError(f"`attribute_labels[{name!r}]` must hold >= 2 distinct values, got {labels!r}.")

    @property
    def fold(self) -> int:
        """Pixel-unshuffle factor that brings `image_size` to the 32x32 trunk."""
        return self.image_size // 32


@dataclass
class SynthBirdsJudgeOutput(ModelOutput):
    """
    Args:
        logits (`dict[str, torch.FloatTensor]`): per attribute, `(batch, num_values)` classification logits, values in
            the order of `config.attribute_labels[attribute]`.
        features (`torch.FloatTensor` of shape `(batch, 8 * channels)`): the pooled image features the heads read
            (average- and max-pooled 8x8 maps): the judge's feature space for Fréchet distances.
        part_logits (`torch.FloatTensor` of shape `(batch, len(PART_IDS) + len(PALETTE) + 1, 32, 32)`, *optional*):
            with `return_parts=True`: per cell of the 32x32 grid, which part is there and its colour (or none),
            trained on SynthBirds' part masks. Each attribute head reads the global features and the features pooled
            over the cells of its part (body, wing, crown, beak), weighted by this map.
    """

    logits: dict[str, torch.FloatTensor] | None = None
    features: torch.FloatTensor | None = None
    part_logits: torch.FloatTensor | None = None


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SynthBirdsJudge(PreTrainedModel):
    r"""
    A small CNN that reads a SynthBirds bird's attributes: pixel unshuffle to a 32x32 grid, three stages of 3x3
    convolutions (32x32, 16x16, 8x8), average- and max-pooling; a part map (which part, which colour, per cell of the
    32x32 grid) whose weights pool the 16x16 features per part; one linear head per attribute, reading the global
    features and its part's pooled features.

    Input: `pixel_values` `(batch, 3, H, W)` in [-1, 1] (the generator's range); resized to `config.image_size` (bilinear,
    antialiased) when `H, W` differ.
    """

    config_class = SynthBirdsJudgeConfig
    main_input_name = "pixel_values"

    def __init__(self, config: SynthBirdsJudgeConfig):
        super().__init__(config)
        width = config.channels
        self.unshuffle = nn.PixelUnshuffle(config.fold)
        self.trunk = nn.Sequential(
            _conv_block(3 * config.fold**2, width, 1),  # 32x32
            _conv_block(width, width, 1),
            _conv_block(width, 2 * width, 2),  # 16x16
            _conv_block(2 * width, 2 * width, 1),
            _conv_block(2 * width, 4 * width, 2),  # 8x8
            _conv_block(4 * width, 4 * width, 1),
        )
        # per cell of the 16x16 stage (read on the 32x32 grid): which part is there, and its colour
        self.part_head = nn.Conv2d(2 * width, NUM_PART_CLASSES + NUM_COLOR_CLASSES, 1)
        # each head reads the global features and the features pooled over its part's cells
        self.heads = nn.ModuleDict(
            {name: nn.Linear(10 * width, len(labels)) for name, labels in config.attribute_labels.items()}
        )
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range)
            init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)

    @property
    def num_features(self) -> int:
        return 8 * self.config.channels

    def forward(self, pixel_values: torch.Tensor, return_parts: bool = False) -> SynthBirdsJudgeOutput:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"`pixel_values` must be (batch, 3, H, W), got shape {tuple(pixel_values.shape)}.")
        size = self.config.image_size
        if pixel_values.shape[-2:] != (size, size):
            pixel_values = F.interpolate(pixel_values, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        middle = self.trunk[:4](self.unshuffle(pixel_values))  # (B, 2C, 16, 16)
        hidden = self.trunk[4:](middle)  # (B, 4C, 8, 8)
        features = torch.cat([hidden.mean(dim=(2, 3)), hidden.amax(dim=(2, 3))], dim=1)  # (B, 8C)
        # part pooling: the small parts (beak, crown) are a few pixels; their heads read the cells the part map finds
        middle = F.interpolate(middle, scale_factor=2, mode="bilinear", align_corners=False)  # (B, 2C, 32, 32)
        part_logits = self.part_head(middle)  # (B, parts + colours, 32, 32)
        where = part_logits[:, :NUM_PART_CLASSES].softmax(dim=1)  # (B, parts, 32, 32)
        pooled = torch.einsum("bphw,bchw->bpc", where, middle) / (where.sum(dim=(2, 3))[..., None] + 1e-3)  # (B, P, 2C)
        logits = {
            name: head(torch.cat([features, pooled[:, PART_IDS[_PART_OF.get(name, "body")]]], dim=1))
            for name, head in self.heads.items()
        }
        return SynthBirdsJudgeOutput(logits=logits, features=features, part_logits=part_logits if return_parts else None)


# ---------------------------------------------------------------------------------------------------------------------
# Reading images


@torch.no_grad()
def judge_predict(
    judge: SynthBirdsJudge,
    images,
    value_range: tuple[float, float] = (-1.0, 1.0),
    batch_size: int = 256,
) -> tuple[dict[str, list[str]], torch.Tensor]:
    """
    The judge's reading of `images` (any form `evaluation.images.to_tensor` accepts) and its features.

    Returns:
        `(predictions, features)`: per attribute, one value per image; and the `(N, judge.num_features)` float64
        features (for `frechet_distance`).
    """
    judge.eval()
    device = judge.device
    pixels = to_tensor(images, value_range)
    predictions = {name: [] for name in judge.config.attribute_labels}
    features = []
    for start in range(0, len(pixels), batch_size):
        output = judge(pixels[start : start + batch_size].to(device))
        for name, logits in output.logits.items():
            labels = judge.config.attribute_labels[name]
            predictions[name] += [labels[i] for i in logits.argmax(dim=-1).tolist()]
        features.append(output.features.double().cpu())
    return predictions, torch.cat(features)


def attribute_accuracy(predictions: dict[str, list[str]], targets: Sequence[dict[str, str]]) -> dict[str, dict]:
    """
    Per attribute: the fraction of images whose predicted value is the target one, over the images whose target names
    that attribute (`None` when no target does), and how many images that was.

    Args:
        predictions: per attribute, one predicted value per image (`judge_predict`).
        targets: one dict per image, attribute -> value (a caption's `parse_caption`, or the true attributes).

    Returns:
        `{"accuracy": {attribute: float | None}, "count": {attribute: int}, "all_correct": float | None}`:
        `all_correct` is the fraction of images (naming at least one attribute) whose every named attribute is read
        right.
    """
    num_images = len(targets)
    for name, values in predictions.items():
        if len(values) != num_images:
            raise ValueError(f"Got {num_images} targets but {len(values)} predictions of {name!r}.")
    accuracy, count = {}, {}
    for name, values in predictions.items():
        hits = [values[i] == target[name] for i, target in enumerate(targets) if name in target]
        accuracy[name] = float(np.mean(hits)) if hits else None
        count[name] = len(hits)
    complete = [
        all(predictions[name][i] == value for name, value in target.items() if name in predictions)
        for i, target in enumerate(targets)
        if any(name in predictions for name in target)
    ]
    return {"accuracy": accuracy, "count": count, "all_correct": float(np.mean(complete)) if complete else None}


def judge_attributes(
    judge: SynthBirdsJudge,
    images,
    captions: Sequence[str],
    value_range: tuple[float, float] = (-1.0, 1.0),
    batch_size: int = 256,
) -> dict[str, dict]:
    """
    Text consistency, attribute by attribute: how often the judge reads, in the image drawn for each caption, the
    value that caption names (`synthbirds.parse_caption`; attributes a caption does not name are not scored for it).

    Args:
        judge: a [`SynthBirdsJudge`] (`load_judge`).
        images: the generated images, one per caption, in any form `evaluation.images.to_tensor` accepts.
        captions: the prompts they were drawn for.
        value_range: the range of tensor / float-array images: `(-1, 1)` for generator output, `(0, 1)` for a
            pipeline's `"pt"` / `"np"` output.

    Returns:
        See `attribute_accuracy`.
    """
    captions = [captions] if isinstance(captions, str) else list(captions)
    predictions, _ = judge_predict(judge, images, value_range, batch_size)
    if len(captions) != len(next(iter(predictions.values()))):
        raise ValueError(f"Got {len(next(iter(predictions.values())))} images but {len(captions)} `captions`.")
    return attribute_accuracy(predictions, [parse_caption(caption) for caption in captions])


def judge_frechet_distance(
    judge: SynthBirdsJudge,
    fake_images,
    real_images,
    floor_images=None,
    value_range: tuple[float, float] = (-1.0, 1.0),
    batch_size: int = 256,
) -> dict[str, float]:
    """
    The Fréchet distance between generated and real images in the judge's feature space, and its real-vs-real floor:
    the same distance between `real_images` and `floor_images`, another set of real birds of the same size (default:
    as many SynthBirds test birds of seed `FLOOR_DATA_SEED`, at the judge's resolution). An FD is biased upwards by
    the finite sample, so it is read against the floor measured with the same number of images.

    `fake_images` and `real_images` (and `floor_images`) are in any form `evaluation.images.to_tensor` accepts, tensors
    and float arrays in `value_range` (PIL images and uint8 arrays are always 0..255).

    Returns:
        `{"fd", "floor", "ratio"}` with `ratio = fd / floor`.
    """
    from .metrics import frechet_distance

    _, fake = judge_predict(judge, fake_images, value_range, batch_size)
    _, real = judge_predict(judge, real_images, value_range, batch_size)
    if floor_images is None:
        floor_images, _ = synthbirds_arrays("test", len(real), judge.config.image_size, FLOOR_DATA_SEED)
    _, floor = judge_predict(judge, floor_images, value_range, batch_size)
    fd, floor_fd = frechet_distance(real, fake), frechet_distance(real, floor)
    return {"fd": fd, "floor": floor_fd, "ratio": fd / floor_fd if floor_fd > 0 else float("inf")}


# ---------------------------------------------------------------------------------------------------------------------
# Training


def synthbirds_arrays(split: str, num_images: int, resolution: int, seed: int) -> tuple[np.ndarray, list[dict[str, str]]]:
    """`num_images` real SynthBirds birds as a uint8 `(N, H, W, 3)` array, and their attributes."""
    images, attributes = np.empty((num_images, resolution, resolution, 3), dtype=np.uint8), []
    for index, (image, bird, _) in enumerate(iter_birds(split, num_images, resolution, seed)):
        images[index] = np.asarray(image)
        attributes.append(bird)
    return images, attributes


def part_targets(mask: np.ndarray, attributes: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """
    The auxiliary targets of one bird on the judge's 32x32 grid: the part of each cell (a cell where several parts
    meet takes the smallest, `_PART_PRIORITY`) and that part's colour (palette index, or `len(PALETTE)` for none).
    """
    fold = mask.shape[0] // 32
    rank = np.empty(len(PART_IDS), dtype=np.int64)
    for order, name in enumerate(_PART_PRIORITY):
        rank[PART_IDS[name]] = len(_PART_PRIORITY) - order
    ranked = rank[mask].reshape(32, fold, 32, fold).max(axis=(1, 3))  # (32, 32): highest-priority part per cell
    by_rank = {len(_PART_PRIORITY) - order: name for order, name in enumerate(_PART_PRIORITY)}
    parts = np.vectorize(lambda r: PART_IDS[by_rank[r]])(ranked)
    colors = np.full((32, 32), len(PALETTE), dtype=np.int64)
    for part, attribute in _COLORED_PARTS.items():
        colors[parts == PART_IDS[part]] = list(PALETTE).index(attributes[attribute])
    return parts.astype(np.int64), colors


def _gaussian_blur(pixels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blurs image `i` of `(B, 3, H, W)` with a Gaussian of standard deviation `sigma[i]` pixels (0: unchanged)."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=pixels.dtype)
    kernel = torch.exp(-(offsets[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))  # (B, K)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    batch, channels, height, width = pixels.shape
    kernel = kernel.repeat_interleave(channels, dim=0)  # (B * 3, K): one kernel per image and channel
    flat = F.pad(pixels.reshape(1, batch * channels, height, width), (radius,) * 4, mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=batch * channels)  # along x
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=batch * channels)  # along y
    return flat.reshape(batch, channels, height, width)


def augment(pixels: torch.Tensor, generator: torch.Generator, maps: tuple[torch.Tensor, ...] = ()):
    """
    Light augmentation so that the judge reads softer, noisier images (a GAN's) as it reads real ones, without ever
    seeing a generated image: a random flip (the facing is never judged), a shift of up to 1/16 of the side (whole
    cells of the 32x32 grid, so that the part `maps` `(B, 32, 32)` shift with it), a Gaussian blur (sigma up to 1 px
    at 64 px, scaled with the side) on half the images, and Gaussian noise (std up to 0.08 in [-1, 1] units). Colours
    are never changed: they are the labels. Returns the pixels, or `(pixels, maps)` when `maps` are given.
    """
    batch, _, side, _ = pixels.shape
    fold = side // 32
    flip = torch.rand(batch, generator=generator) < 0.5
    pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    maps = tuple(torch.where(flip[:, None, None], m.flip(-1), m) for m in maps)
    # shift by whole cells, borders replicated (SynthBirds' backgrounds are smooth gradients)
    shifts = torch.randint(-2, 3, (batch, 2), generator=generator)  # cells of the 32x32 grid: up to 1/16 of the side
    rows = (torch.arange(32)[None, :] - shifts[:, :1]).clamp(0, 31)  # (B, 32) source cell of each target cell
    cols = (torch.arange(32)[None, :] - shifts[:, 1:]).clamp(0, 31)
    pixel_rows = (rows[:, :, None] * fold + torch.arange(fold)).reshape(batch, side)  # (B, side)
    pixel_cols = (cols[:, :, None] * fold + torch.arange(fold)).reshape(batch, side)
    index = torch.arange(batch)[:, None, None]
    pixels = pixels.permute(0, 2, 3, 1)[index, pixel_rows[:, :, None], pixel_cols[:, None, :]].permute(0, 3, 1, 2)
    maps = tuple(m[index, rows[:, :, None], cols[:, None, :]] for m in maps)
    sigma = torch.rand(batch, generator=generator) * (side / 64) * (torch.rand(batch, generator=generator) < 0.5)
    pixels = _gaussian_blur(pixels, sigma)
    noise = torch.randn(pixels.shape, generator=generator) * torch.rand(batch, 1, 1, 1, generator=generator) * 0.08
    pixels = (pixels + noise).clamp(-1, 1)
    return (pixels, maps) if maps else pixels


def train_judge(
    resolution: int = 64,
    num_train: int = 5000,
    max_train_steps: int = 1000,
    batch_size: int = 48,
    learning_rate: float = 3e-3,
    channels: int = 16,
    data_seed: int = JUDGE_DATA_SEED,
    seed: int = 0,
    progress: bool = True,
) -> SynthBirdsJudge:
    """
    Trains a [`SynthBirdsJudge`] on `num_train` real SynthBirds birds (train split of `data_seed`) with light
    augmentation (`augment`): AdamW, one-cycle learning rate, summed cross-entropy of the heads. Returns it in eval
    mode. Deterministic for a given `seed` on a given machine.
    """
    if resolution not in JUDGE_RESOLUTIONS:
        raise ValueError(f"`resolution` must be one of {JUDGE_RESOLUTIONS}, got {resolution!r}.")
    for name, value in (("num_train", num_train), ("max_train_steps", max_train_steps), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}.")
    torch.manual_seed(seed)
    judge = SynthBirdsJudge(SynthBirdsJudgeConfig(image_size=resolution, channels=channels))
    images = torch.empty(num_train, 3, resolution, resolution, dtype=torch.uint8)  # 4x smaller than floats
    parts = torch.empty(num_train, 32, 32, dtype=torch.long)
    colors = torch.empty(num_train, 32, 32, dtype=torch.long)
    attributes = []
    for index, (image, bird, _, mask) in enumerate(iter_birds("train", num_train, resolution, data_seed, return_mask=True)):
        images[index] = torch.from_numpy(np.array(image)).permute(2, 0, 1)
        part, color = part_targets(mask, bird)
        parts[index], colors[index] = torch.from_numpy(part), torch.from_numpy(color)
        attributes.append(bird)
    labels = {
        name: torch.tensor([values.index(bird[name]) for bird in attributes])
        for name, values in judge.config.attribute_labels.items()
    }
    optimizer = torch.optim.AdamW(judge.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=max_train_steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    judge.train()
    bar = tqdm(range(max_train_steps), desc=f"judge {resolution}px", disable=not progress)
    judge = judge.to(memory_format=torch.channels_last)  # about 1.4x faster convolutions on CPU
    for _ in bar:
        index = torch.randint(len(images), (batch_size,), generator=generator)
        pixels, (part, color) = augment(images[index].float() / 127.5 - 1.0, generator, (parts[index], colors[index]))
        output = judge(pixels.contiguous(memory_format=torch.channels_last), return_parts=True)
        loss = sum(F.cross_entropy(output.logits[name], labels[name][index]) for name in output.logits)
        # the auxiliary part / colour maps (module docstring of `SynthBirdsJudgeOutput.part_logits`)
        part_logits, color_logits = output.part_logits.split([NUM_PART_CLASSES, NUM_COLOR_CLASSES], dim=1)
        loss = loss + F.cross_entropy(part_logits, part) + F.cross_entropy(color_logits, color)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return judge.to(memory_format=torch.contiguous_format).eval()


def real_accuracy(judge: SynthBirdsJudge, num_test: int = 2000, data_seed: int = JUDGE_DATA_SEED, resolution=None) -> dict:
    """The judge's accuracy per attribute on `num_test` held-out real birds (test split of `data_seed`)."""
    images, attributes = synthbirds_arrays("test", num_test, resolution or judge.config.image_size, data_seed)
    predictions, _ = judge_predict(judge, images)
    return attribute_accuracy(predictions, attributes)["accuracy"]


# ---------------------------------------------------------------------------------------------------------------------
# Cache


def judge_folder(resolution: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the judge for `resolution` is cached: `<evaluation_cache_dir>/judge-v<recipe>-<resolution>px`."""
    return evaluation_cache_dir(cache_dir) / f"judge-v{JUDGE_RECIPE_VERSION}-{resolution}px"


def build_judge(
    resolution: int = 64,
    cache_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    num_test: int = 2000,
    **train_kwargs,
) -> Path:
    """
    Trains the judge for `resolution` (`train_judge`), measures its accuracy on `num_test` held-out real birds, and
    saves both into the cache (`judge_folder`): `config.json`, `model.safetensors` and `judge_report.json` (accuracy,
    recipe, seeds, wall time). Returns the folder. An existing judge is kept unless `overwrite=True`.
    """
    report = {
        "resolution": resolution,
        "recipe_version": JUDGE_RECIPE_VERSION,
        "recipe": recipe_of(train_judge, {"resolution": resolution, **train_kwargs}),
    }
    return build_cached_model(
        judge_folder(resolution, cache_dir), JUDGE_REPORT_NAME,
        train=lambda: train_judge(resolution, **train_kwargs),
        measure=lambda judge: {"held_out_real_images": num_test, "held_out_real_accuracy": real_accuracy(judge, num_test)},
        save=lambda judge, staging: judge.save_pretrained(staging),
        report=report, description=f"SynthBirds judge {resolution}px", overwrite=overwrite,
    )


def load_judge(
    resolution: int = 64,
    cache_dir: str | os.PathLike | None = None,
    build_if_missing: bool = True,
    device: str | torch.device | None = None,
) -> SynthBirdsJudge:
    """
    The cached SynthBirds judge for `resolution` (a folder path also works as `resolution`'s place via
    `SynthBirdsJudge.from_pretrained`). Builds it first (`build_judge`, a few minutes) when it is missing, unless
    `build_if_missing=False`, which raises `FileNotFoundError` naming the command that builds it.
    """
    folder = judge_folder(resolution, cache_dir)
    missing = (
        f"No SynthBirds judge for {resolution} px in {folder}. Build it with `hf-stagegan build-judge "
        f"--resolution {resolution}` (a few minutes on a CPU)."
    )
    ensure_built(
        folder, JUDGE_REPORT_NAME, lambda: build_judge(resolution, cache_dir), build_if_missing, missing,
        f"the SynthBirds judge for {resolution} px",
    )
    judge = SynthBirdsJudge.from_pretrained(folder)
    return judge.to(device).eval() if device is not None else judge.eval()


def judge_report(judge: SynthBirdsJudge) -> dict | None:
    """The `judge_report.json` saved beside a cached judge (its held-out real accuracy, recipe, seeds), if any."""
    path = Path(judge.name_or_path) / JUDGE_REPORT_NAME
    return json.loads(path.read_text()) if path.is_file() else None


__all__ = [
    "FLOOR_DATA_SEED",
    "JUDGE_DATA_SEED",
    "SynthBirdsJudge",
    "SynthBirdsJudgeConfig",
    "SynthBirdsJudgeOutput",
    "attribute_accuracy",
    "augment",
    "build_judge",
    "judge_attributes",
    "judge_folder",
    "judge_frechet_distance",
    "judge_predict",
    "judge_report",
    "load_judge",
    "real_accuracy",
    "synthbirds_arrays",
    "train_judge",
]
