"""
Text-consistency metrics that need no download: does a generated bird have the body colour its prompt asked for?

The rule is a colour vote with a background model, validated on real SynthBirds images (see `docs/data.md`):

1. Background: the image's border pixels (SynthBirds keeps every bird inside a 4 % margin; its gradients and perches
   reach the border).
2. Each pixel is explained as a mix `alpha * colour + (1 - alpha) * background` of one palette colour
   (`synthbirds.PALETTE`) and its nearest border colour, choosing the colour whose mixing line passes closest to it.
   Pixels with `alpha >= 0.5` vote for their colour. Modelling the mix keeps soft, blurry edges (a GAN's, or a
   downsampled image's) voting for the colour they blur rather than for grey.
3. The predicted colour is the one with most votes. The body covers about 60 % of a SynthBirds bird (wing, tail,
   crown and beak the rest), so the vote picks the body colour.

`color_accuracy(images, requested_colors)` is the fraction of images whose predicted colour is the requested one;
`color_fraction` is a soft version (the requested colour's share of the votes), smoother for training curves;
`color_confusion` shows which colours are mistaken for which.

>>> from hf_stagegan.data.synthbirds import load_synthbirds
>>> birds = load_synthbirds(num_train=1, num_test=20, resolution=64)["test"]
>>> color_accuracy(birds["image"], birds["body_color"]) > 0.9
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.synthbirds import PALETTE, parse_caption
from .images import to_arrays

COLOR_NAMES: tuple[str, ...] = tuple(PALETTE)
_PALETTE_RGB = np.array([PALETTE[name] for name in COLOR_NAMES], dtype=np.float32)  # (K, 3)
_MAX_BORDER_SAMPLES = 128
_BACKGROUND_RADIUS = 10.0  # RGB distance to the nearest border colour under which a pixel is background
_PURE_RADIUS = 40.0  # RGB distance: SynthBirds' colour jitter (<= 17) plus anti-aliasing and some noise


def _color_votes(image: np.ndarray) -> np.ndarray:
    """Votes per palette colour, `(K,)`, for one (H, W, 3) image in 0..255 (module docstring, steps 1-2)."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])  # (S, 3)
    if len(border) > _MAX_BORDER_SAMPLES:  # evenly spaced samples keep the cost flat at high resolution
        border = border[np.linspace(0, len(border) - 1, _MAX_BORDER_SAMPLES).astype(int)]
    pixels = image.reshape(-1, 3)  # (N, 3)
    # nearest border colour of each pixel, without an (N, S, 3) intermediate
    to_border = (pixels**2).sum(1)[:, None] - 2 * pixels @ border.T + (border**2).sum(1)[None, :]  # (N, S)
    nearest_border = to_border.argmin(axis=1)  # (N,)
    # pixels within a few levels of a border colour are background; only the others are explained (cheaper)
    candidates = np.flatnonzero(to_border[np.arange(len(pixels)), nearest_border] >= _BACKGROUND_RADIUS**2)
    pixels, background = pixels[candidates], border[nearest_border[candidates]]  # (M, 3) each
    # project each pixel on the segment background -> colour, for every palette colour
    direction = _PALETTE_RGB[None] - background[:, None]  # (M, K, 3)
    offset = pixels - background  # (M, 3)
    alpha = (offset[:, None] * direction).sum(-1) / np.maximum((direction**2).sum(-1), 1e-6)  # (M, K)
    alpha = alpha.clip(0.0, 1.0)
    residual = ((offset[:, None] - alpha[..., None] * direction) ** 2).sum(-1)  # (M, K)
    best = residual.argmin(axis=1)  # (M,)
    votes = alpha[np.arange(len(best)), best] >= 0.5  # at least half of the pixel is that colour
    # a pixel close to a palette colour is that colour, even where it also lies on another colour's mixing line
    # (grey is nearly a mix of sky blue and brown)
    to_palette = ((pixels[:, None] - _PALETTE_RGB[None]) ** 2).sum(-1)  # (M, K)
    pure = (to_palette.min(axis=1) < _PURE_RADIUS**2) & (to_palette.min(axis=1) < (offset**2).sum(-1))
    best[pure] = to_palette[pure].argmin(axis=1)
    votes |= pure
    return np.bincount(best[votes], minlength=len(COLOR_NAMES))


def _check_colors(requested_colors: Sequence[str], num_images: int) -> list[str]:
    requested_colors = [requested_colors] if isinstance(requested_colors, str) else list(requested_colors)
    if len(requested_colors) != num_images:
        raise ValueError(f"Got {num_images} images but {len(requested_colors)} `requested_colors`.")
    unknown = sorted({color for color in requested_colors if color not in PALETTE})
    if unknown:
        raise ValueError(f"Unknown colour(s) {unknown} in `requested_colors`; expected some of {list(COLOR_NAMES)}.")
    return requested_colors


def predict_colors(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> list[str | None]:
    """
    The dominant (body) colour of each image: the palette colour with most votes (module docstring); `None` for an
    image where no pixel votes (a blank or background-only image).

    Args:
        images: PIL images; a `(B, 3, H, W)` tensor (generator output); `(B, H, W, 3)` / `(H, W, 3)` arrays, uint8
            in 0..255 or floats in `value_range` (a pipeline's `output_type="np"`); or a list of such arrays.
        value_range: the range of tensors and float arrays: `(-1, 1)` for generator output, `(0, 1)` for a
            pipeline's `output_type="pt"` or `"np"`. PIL images and uint8 arrays are always 0..255.
    """
    predictions = []
    for image in to_arrays(images, value_range):
        counts = _color_votes(image)
        predictions.append(COLOR_NAMES[int(counts.argmax())] if counts.sum() else None)
    return predictions


def color_accuracy(images, requested_colors: Sequence[str], value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """
    Text consistency on colour: the fraction of images whose dominant colour (`predict_colors`) is the requested one.

    Args:
        images: see `predict_colors`.
        requested_colors: one palette colour name per image (e.g. from `body_color_from_caption(prompt)`).
        value_range: see `predict_colors`.
    """
    predictions = predict_colors(images, value_range)
    requested_colors = _check_colors(requested_colors, len(predictions))
    return float(np.mean([p == r for p, r in zip(predictions, requested_colors)]))


def color_fraction(images, requested_colors: Sequence[str], value_range: tuple[float, float] = (-1.0, 1.0)) -> float:
    """
    A soft `color_accuracy`: the mean, over images, of the requested colour's share of the votes (about 0.6 on real
    SynthBirds images, whose body is about 60 % of the bird; 0 when the colour is absent).
    """
    arrays = to_arrays(images, value_range)
    requested_colors = _check_colors(requested_colors, len(arrays))
    shares = []
    for image, color in zip(arrays, requested_colors):
        counts = _color_votes(image)
        shares.append(counts[COLOR_NAMES.index(color)] / counts.sum() if counts.sum() else 0.0)
    return float(np.mean(shares))


def color_confusion(images, true_colors: Sequence[str], value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """
    `(K, K + 1)` counts: row = true colour, column = predicted colour, in `COLOR_NAMES` order; the last column counts
    images where no pixel votes. `format_confusion` prints it.
    """
    predictions = predict_colors(images, value_range)
    true_colors = _check_colors(true_colors, len(predictions))
    matrix = np.zeros((len(COLOR_NAMES), len(COLOR_NAMES) + 1), dtype=np.int64)
    for predicted, true in zip(predictions, true_colors):
        column = len(COLOR_NAMES) if predicted is None else COLOR_NAMES.index(predicted)
        matrix[COLOR_NAMES.index(true), column] += 1
    return matrix


def format_confusion(matrix: np.ndarray) -> str:
    """A plain-text table of a `color_confusion` matrix, with per-colour accuracy."""
    names = list(COLOR_NAMES) + ["none"]
    width = max(len(name) for name in names) + 1
    lines = ["true \\ pred".ljust(width + 2) + "".join(name[:6].rjust(7) for name in names) + "    acc"]
    for row, name in zip(matrix, COLOR_NAMES):
        accuracy = row[COLOR_NAMES.index(name)] / row.sum() if row.sum() else float("nan")
        lines.append(name.ljust(width + 2) + "".join(str(v).rjust(7) for v in row) + f"  {accuracy:5.2f}")
    return "\n".join(lines)


def body_color_from_caption(caption: str) -> str | None:
    """
    The body colour a SynthBirds/CUB-style caption asks for, or `None` if it names none: "this bird has a red body,
    black wings ..." -> "red"; "a small blue bird" -> "blue"; "gray" is read as "grey" (`synthbirds.parse_caption`).
    """
    return parse_caption(caption).get("body_color")


__all__ = [
    "COLOR_NAMES",
    "body_color_from_caption",
    "color_accuracy",
    "color_confusion",
    "color_fraction",
    "format_confusion",
    "predict_colors",
]
