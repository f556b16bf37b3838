"""
SynthBirds: a procedural, seeded stand-in for CUB-200 that needs no download (DESIGN.md §2).

Each image is one bird drawn with PIL (body, head, crown patch, wing, tail, beak, eye, legs, usually on a perch) over a
soft sky / foliage / sand / mist gradient. Seven attributes vary and are stored with the image:

| attribute     | values                                                                               |
|---------------|--------------------------------------------------------------------------------------|
| `body_color`  | red, blue, yellow, green, black, white, brown, grey, orange, purple (also the head)  |
| `wing_color`  | same palette (also the tail)                                                         |
| `crown_color` | same palette                                                                         |
| `beak_color`  | black, grey, yellow, orange, brown, red                                              |
| `beak_length` | short, long                                                                          |
| `size`        | small, medium, large (the body's width: about 28 / 38 / 48 % of the image)           |
| `facing`      | left, right (plus a tilt of up to 12 degrees, and a random position)                 |

The body colour covers most of the bird, so that "a red bird" is visibly red and the text consistency of a model is
measurable (`hf_stagegan.evaluation.color_accuracy`). Captions are in CUB's style, 5-8 long ones ("this bird has a red
body, black wings and a short yellow beak") and two short ones ("a red bird", "a small red bird"); every caption
names the body colour. `facing` is stored but never written in a caption, so a random horizontal flip keeps captions
true.

Determinism: image `i` of split `s` is a pure function of `(seed, s, i, resolution)`: the same seed gives the same PNG
bytes and captions, and image 7 of the train split is the same whether 100 or 2000 images are built.

>>> from hf_stagegan.data.synthbirds import generate_bird, short_caption
>>> image, attributes, captions = generate_bird(0, resolution=64)
>>> image.size, sorted(attributes)[:2], captions[-2] == short_caption(attributes["body_color"])
((64, 64), ['beak_color', 'beak_length'], True)
"""

from __future__ import annotations

import io
import json
import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Named colours as CUB's captions use them, far enough apart (>= 80 in RGB) that a nearest-colour rule separates them
# after the per-image jitter; `hf_stagegan.evaluation` classifies against the same table.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (205, 30, 35),
    "blue": (35, 75, 205),
    "yellow": (245, 215, 35),
    "green": (40, 150, 55),
    "black": (25, 25, 28),
    "white": (242, 242, 238),
    "brown": (125, 75, 35),
    "grey": (128, 128, 128),
    "orange": (245, 135, 25),
    "purple": (125, 50, 165),
}
BEAK_COLORS = ("black", "grey", "yellow", "orange", "brown", "red")
BEAK_LENGTHS = ("short", "long")
SIZES = ("small", "medium", "large")
FACINGS = ("left", "right")
ATTRIBUTE_NAMES = ("body_color", "wing_color", "crown_color", "beak_color", "beak_length", "size", "facing")
COLOR_JITTER = 10  # per channel, uniform in [-10, 10]: small next to the >= 80 between palette colours

# Backgrounds: soft, low-saturation gradients (top, bottom). Every background colour, and the perch (90 % of it), stays
# >= 60 (RGB distance) from every palette colour, so bird and background never share a colour name.
_BACKGROUNDS = {
    "sky": ((140, 180, 225), (178, 205, 235)),
    "foliage": ((178, 208, 150), (198, 220, 172)),
    "sand": ((212, 192, 150), (226, 210, 172)),
    "mist": ((180, 172, 208), (198, 192, 222)),
}
_BODY_WIDTH = {"small": 0.28, "medium": 0.38, "large": 0.48}  # fraction of the image width
_LEG_COLOR = (70, 60, 55)
_SPLITS = ("train", "test")
_FORMAT_VERSION = 1  # bump when the drawing or the captions change: cached builds are keyed by it
_INFO_FILE = "synthbirds.json"

# Part ids of the mask returned by `generate_bird(..., return_mask=True)`.
PART_IDS = {"background": 0, "body": 1, "wing": 2, "crown": 3, "beak": 4, "eye": 5, "legs": 6, "perch": 7}


# ---------------------------------------------------------------------------------------------------------------------
# Attributes and captions


def sample_attributes(rng: np.random.Generator) -> dict[str, str]:
    """Draws the seven attributes, each uniformly (wing and crown may equal the body colour, as in real birds)."""
    colors = list(PALETTE)
    return {
        "body_color": colors[rng.integers(len(colors))],
        "wing_color": colors[rng.integers(len(colors))],
        "crown_color": colors[rng.integers(len(colors))],
        "beak_color": BEAK_COLORS[rng.integers(len(BEAK_COLORS))],
        "beak_length": BEAK_LENGTHS[rng.integers(len(BEAK_LENGTHS))],
        "size": SIZES[rng.integers(len(SIZES))],
        "facing": FACINGS[rng.integers(len(FACINGS))],
    }


def _pick(rng: np.random.Generator, options):
    return options[rng.integers(len(options))]


def _join(phrases: list[str]) -> str:
    """["a", "b", "c"] -> "a, b and c", as CUB annotators write lists."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _a(word: str) -> str:
    """The article for `word`: "an orange", "a red"."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


_SIZE_WORDS = {"small": "small", "medium": "medium sized", "large": "large"}


def short_caption(body_color: str, size: str | None = None) -> str:
    """The short SynthBirds caption: "a red bird", "an orange bird", "a small red bird", "a medium sized red bird"."""
    if size is not None and size not in _SIZE_WORDS:
        raise ValueError(f"`size` must be one of {list(_SIZE_WORDS)} or None, got {size!r}.")
    return f"{_a(_SIZE_WORDS[size])} {body_color} bird" if size else f"{_a(body_color)} bird"


def make_captions(attributes: dict[str, str], rng: np.random.Generator) -> list[str]:
    """
    CUB-style captions: 5-8 long ones (the first names every part) and two short ones (`short_caption`: "a red bird",
    "a small red bird"), in that order. Every caption names the body colour; the facing is never named.
    """
    body, wing, crown = attributes["body_color"], attributes["wing_color"], attributes["crown_color"]
    beak, length = attributes["beak_color"], attributes["beak_length"]
    size = _SIZE_WORDS[attributes["size"]]

    def body_phrase():
        return _pick(rng, (f"{_a(body)} body", f"{_a(body)} body", f"{_a(body)} belly", f"{_a(body)} breast"))

    def part_phrases(k: int) -> list[str]:
        parts = [
            _pick(rng, (f"{wing} wings", f"{wing} wings", f"{wing} wing feathers")),
            _pick(rng, (f"{_a(crown)} crown", f"{_a(crown)} crown", f"{_a(crown)} cap")),
            _pick(rng, (f"a {length} {beak} beak", f"a {length} {beak} bill", f"{_a(beak)} beak that is {length}")),
        ]
        order = rng.permutation(len(parts))[:k]
        return [parts[i] for i in order]

    def with_body(phrases: list[str]) -> list[str]:  # the body anywhere in the list
        phrases.insert(int(rng.integers(len(phrases) + 1)), body_phrase())
        return phrases

    templates = (
        lambda k: f"this bird has {_join([body_phrase()] + part_phrases(k))}",
        lambda k: f"the bird has {_join(with_body(part_phrases(k)))}",
        lambda k: f"a {size} bird with {_join(with_body(part_phrases(k)))}",
        lambda k: f"this {size} bird has {_join([body_phrase()] + part_phrases(k))}",
        lambda k: f"{_a(body)} bird with {_join(part_phrases(k))}",
        lambda k: f"this {body} bird has {_join(part_phrases(k))}",
        lambda k: f"the bird is mostly {body} with {_join(part_phrases(k))}",
        lambda k: f"this is {_a(size)} {body} bird with {_join(part_phrases(k))}",
        lambda k: f"this bird is {body} and has {_join(part_phrases(k))}",
    )
    captions = [f"this bird has {_join([body_phrase()] + part_phrases(3))}"]  # one complete description
    num_long = int(rng.integers(5, 9))
    for _ in range(100):  # distinct captions; 100 tries is far more than the template space ever needs
        if len(captions) == num_long:
            break
        caption = templates[rng.integers(len(templates))](int(rng.integers(1, 4)))
        if caption not in captions:
            captions.append(caption)
    return captions + [short_caption(body), short_caption(body, attributes["size"])]


# Reading captions back: the grammar above, inverted. `parse_caption` finds every attribute a caption names, and
# `swap_caption_attribute` rewrites one of them (with the article fixed: "a red body" -> "an orange body"). Both use the
# patterns below, which mirror the phrases of `make_captions` and `short_caption`; `tests/test_synthbirds.py` checks
# them against `make_captions` for many seeds, so the two cannot drift apart.

_COLOR_RE = "|".join(PALETTE) + "|gray"
_BEAK_RE = "|".join(BEAK_COLORS) + "|gray"
_LENGTH_RE = "|".join(BEAK_LENGTHS)
_SIZE_RE = "|".join(_SIZE_WORDS.values())
_ARTICLE = r"(?:(?P<article>an?) )?"  # an article right before the value, which must agree with it
_CAPTION_PATTERNS: dict[str, tuple[str, ...]] = {
    "body_color": (
        rf"\b{_ARTICLE}(?P<value>{_COLOR_RE}) (?:body|belly|breast)\b",  # "a red body"
        rf"\bbird is (?:mostly )?(?P<value>{_COLOR_RE})\b",  # "the bird is mostly red", "this bird is red and has"
        rf"\b{_ARTICLE}(?P<value>{_COLOR_RE}) bird\b",  # "a red bird", "this red bird has", "a small red bird"
    ),
    "wing_color": (rf"\b(?P<value>{_COLOR_RE}) (?:wings|wing feathers)\b",),  # "black wings"
    "crown_color": (rf"\b{_ARTICLE}(?P<value>{_COLOR_RE}) (?:crown|cap)\b",),  # "a blue crown", "an orange cap"
    "beak_color": (
        rf"\b(?:{_LENGTH_RE}) (?P<value>{_BEAK_RE}) (?:beak|bill)\b",  # "a short yellow beak", "a long red bill"
        rf"\b{_ARTICLE}(?P<value>{_BEAK_RE}) beak that is\b",  # "an orange beak that is short"
    ),
    "beak_length": (
        rf"\b(?P<value>{_LENGTH_RE}) (?:{_BEAK_RE}) (?:beak|bill)\b",
        rf"\bbeak that is (?P<value>{_LENGTH_RE})\b",
    ),
    "size": (rf"\b{_ARTICLE}(?P<value>{_SIZE_RE})(?: (?:{_COLOR_RE}))? bird\b",),  # "a small bird", "a large red bird"
}
_SIZE_FROM_WORDS = {words: size for size, words in _SIZE_WORDS.items()}
CAPTION_ATTRIBUTES = tuple(_CAPTION_PATTERNS)  # the attributes a caption can name (never `facing`)


def _find(caption: str, attribute: str) -> re.Match | None:
    """The first phrase of `caption` that names `attribute` (patterns tried in order), or None."""
    for pattern in _CAPTION_PATTERNS[attribute]:
        match = re.search(pattern, caption)
        if match:
            return match
    return None


def _canonical(attribute: str, words: str) -> str:
    if attribute == "size":
        return _SIZE_FROM_WORDS[words]
    return "grey" if words == "gray" else words


def parse_caption(caption: str) -> dict[str, str]:
    """
    The attributes a SynthBirds (or CUB-style) caption names, as attribute values (`sample_attributes`' vocabulary);
    attributes it does not name are absent. "gray" reads as "grey", "medium sized" as "medium".

    >>> parse_caption("this bird has an orange body, black wings, a blue crown and a short yellow beak")
    {'body_color': 'orange', 'wing_color': 'black', 'crown_color': 'blue', 'beak_color': 'yellow', 'beak_length': 'short'}
    >>> parse_caption("a medium sized red bird")
    {'body_color': 'red', 'size': 'medium'}
    """
    caption = caption.lower()
    named = {}
    for attribute in CAPTION_ATTRIBUTES:
        match = _find(caption, attribute)
        if match:
            named[attribute] = _canonical(attribute, match.group("value"))
    return named


def swap_caption_attribute(caption: str, attribute: str, value: str) -> str:
    """
    `caption` with the value of `attribute` replaced by `value` (in `sample_attributes`' vocabulary), keeping the
    grammar: "this bird has a red body, ..." with `("body_color", "orange")` -> "this bird has an orange body, ...".
    The caption is lower-cased. Raises `ValueError` if the caption does not name `attribute` or `value` is not one of
    its values.
    """
    vocabularies = {
        "body_color": tuple(PALETTE), "wing_color": tuple(PALETTE), "crown_color": tuple(PALETTE),
        "beak_color": BEAK_COLORS, "beak_length": BEAK_LENGTHS, "size": SIZES,
    }
    if attribute not in vocabularies:
        raise ValueError(f"`attribute` must be one of {list(vocabularies)}, got {attribute!r}.")
    if value not in vocabularies[attribute]:
        raise ValueError(f"`value` for {attribute!r} must be one of {list(vocabularies[attribute])}, got {value!r}.")
    caption = caption.lower()
    match = _find(caption, attribute)
    if match is None:
        raise ValueError(f"`caption` {caption!r} does not name {attribute!r}.")
    words = _SIZE_WORDS[value] if attribute == "size" else value
    start, end = match.span("value")
    if match.groupdict().get("article"):  # the article agrees with the new word
        start = match.start("article")
        words = _a(words)
    return caption[:start] + words + caption[end:]


# ---------------------------------------------------------------------------------------------------------------------
# Drawing. The bird is built facing right in "body units" (1 = the body's width, origin at the body's centre, y down),
# then mirrored, tilted, scaled and placed; shapes are polygons, so the transform is exact and needs no resampling.


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float = 0.0, n: int = 48) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    c, s = math.cos(angle), math.sin(angle)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)  # (n, 2)


def _bird_parts(attributes: dict[str, str], rng: np.random.Generator) -> list[tuple[str, str, np.ndarray]]:
    """(part, colour name, polygon in body units) in drawing order, back to front."""
    beak_length = 0.15 if attributes["beak_length"] == "short" else 0.32
    head = (0.40, -0.30, 0.205)  # centre x, centre y, radius
    # the wing: an ellipse whose rear half is stretched into a pointed tip toward the tail
    wing = _ellipse(0.0, 0.0, 0.29, 0.13)
    back = wing[:, 0] < 0
    wing[back, 0] *= 1.45
    wing[back, 1] *= 1 - 0.55 * (wing[back, 0] / wing[:, 0].min())
    wing = wing @ np.array([[math.cos(0.18), math.sin(0.18)], [-math.sin(0.18), math.cos(0.18)]]) + [-0.07, -0.05]
    crown_arc = np.linspace(math.radians(-160), math.radians(-20), 24)
    crown = np.stack([head[0] + head[2] * np.cos(crown_arc), head[1] + head[2] * np.sin(crown_arc)], axis=1)
    droop = 0.03 if attributes["beak_length"] == "long" else 0.0
    beak = np.array([[0.55, -0.345], [0.58, -0.245], [head[0] + head[2] + beak_length, -0.29 + droop]])
    tail = np.array([[-0.36, -0.10], [-0.76, -0.27], [-0.86, -0.07], [-0.34, 0.05]])  # a fan, wider at the tip
    tail_spread = rng.uniform(-0.03, 0.03)  # a little variety in how the tail is held
    tail[1:3, 1] += tail_spread
    eye = _ellipse(0.475, -0.30, 0.038, 0.038, n=16)
    pupil = _ellipse(0.48, -0.30, 0.024, 0.024, n=16)
    return [
        ("wing", attributes["wing_color"], tail),  # tail feathers take the wing colour
        ("body", attributes["body_color"], _ellipse(0.0, 0.0, 0.5, 0.31, angle=-0.12)),
        ("body", attributes["body_color"], _ellipse(*head[:2], head[2], head[2])),
        ("crown", attributes["crown_color"], crown),
        ("wing", attributes["wing_color"], wing),
        ("beak", attributes["beak_color"], beak),
        ("eye", "_eye_white", eye),
        ("eye", "_eye_black", pupil),
    ]


def _legs() -> list[np.ndarray]:
    """Two legs with three toes each, as polylines in body units."""
    legs = []
    for x in (-0.05, 0.10):
        foot = (x - 0.02, 0.47)
        legs.append(np.array([[x, 0.22], foot]))
        legs += [
            np.array([foot, (foot[0] + dx, foot[1] + dy)]) for dx, dy in ((0.07, 0.0), (0.05, 0.03), (-0.05, 0.01))
        ]
    return legs


def _jitter(rgb, rng: np.random.Generator) -> tuple[int, int, int]:
    noise = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + noise, 0, 255))


def generate_bird(
    rng: np.random.Generator | int,
    resolution: int = 64,
    return_mask: bool = False,
):
    """
    Draws one bird.

    Args:
        rng (`np.random.Generator` or `int`): the randomness; an int is a seed (`np.random.default_rng(seed)`).
        resolution (`int`): the square image's side in pixels (>= 16).
        return_mask (`bool`): also return the part mask.

    Returns:
        `(image, attributes, captions)`: an RGB `PIL.Image` of `resolution` x `resolution`, the attribute dict (see the
        module docstring) and the list of captions; with `return_mask=True`, a fourth item: a `(resolution,
        resolution)` uint8 array of part ids (`PART_IDS`) at the output resolution.
    """
    if resolution < 16:
        raise ValueError(f"`resolution` must be >= 16 pixels, got {resolution}.")
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    attributes = sample_attributes(rng)
    captions = make_captions(attributes, rng)

    # draw at 4x (2x from 256 px up) and downsample with LANCZOS: anti-aliased edges at little cost
    supersample = 4 if resolution <= 128 else 2
    size = resolution * supersample

    # 1. background: a soft vertical gradient
    top, bottom = _BACKGROUNDS[_pick(rng, tuple(_BACKGROUNDS))]
    top, bottom = _jitter(top, rng), _jitter(bottom, rng)
    ramp = np.linspace(0.0, 1.0, size)[:, None]  # (S, 1)
    column = (1 - ramp) * np.asarray(top) + ramp * np.asarray(bottom)  # (S, 3)
    canvas = Image.fromarray(np.repeat(column[:, None, :], size, axis=1).round().astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    mask = Image.new("L", (size, size), 0) if return_mask else None
    mask_draw = ImageDraw.Draw(mask) if return_mask else None

    # 2. pose: mirror, tilt, scale; then a position that keeps the whole bird inside a 4 % margin
    width = size * (_BODY_WIDTH[attributes["size"]] + rng.uniform(-0.015, 0.015))
    mirror = -1.0 if attributes["facing"] == "left" else 1.0
    tilt = math.radians(rng.uniform(-12, 12))
    rotation = np.array([[math.cos(tilt), math.sin(tilt)], [-math.sin(tilt), math.cos(tilt)]]) * width

    def place(points: np.ndarray) -> np.ndarray:
        return (points * [mirror, 1.0]) @ rotation

    parts = _bird_parts(attributes, rng)
    legs = _legs()
    placed = np.concatenate([place(p) for _, _, p in parts] + [place(p) for p in legs])
    low, high = placed.min(axis=0), placed.max(axis=0)
    margin = 0.04 * size
    offset = np.array([rng.uniform(margin - lo, max(margin - lo, size - margin - hi)) for lo, hi in zip(low, high)])

    def to_canvas(points: np.ndarray) -> list[tuple[float, float]]:
        return [tuple(p) for p in place(points) + offset]

    # 3. the perch: a branch through the feet, in a darker shade of the background (never near a palette colour)
    colors = {name: _jitter(rgb, rng) for name, rgb in PALETTE.items()}
    colors["_eye_white"], colors["_eye_black"] = (235, 235, 230), (15, 15, 15)
    if rng.random() < 0.75:
        feet = np.array(to_canvas(np.array([[-0.07, 0.49], [0.08, 0.49]])))
        y = feet[:, 1].mean()
        slope = math.tan(math.radians(rng.uniform(-6, 6)))
        shade = column[int(np.clip(y, 0, size - 1))] * rng.uniform(0.88, 0.92)
        branch = [
            (-size, y - slope * (size + feet[:, 0].mean())),
            (2 * size, y + slope * (2 * size - feet[:, 0].mean())),
        ]
        draw.line(branch, fill=tuple(int(v) for v in shade), width=max(2, int(0.06 * width)))
        if return_mask:
            mask_draw.line(branch, fill=PART_IDS["perch"], width=max(2, int(0.06 * width)))

    # 4. the bird, back to front
    leg_width = max(1, int(0.025 * width))
    for leg in legs:
        draw.line(to_canvas(leg), fill=_LEG_COLOR, width=leg_width)
        if return_mask:
            mask_draw.line(to_canvas(leg), fill=PART_IDS["legs"], width=leg_width)
    for part, color, polygon in parts:
        draw.polygon(to_canvas(polygon), fill=colors[color])
        if return_mask:
            mask_draw.polygon(to_canvas(polygon), fill=PART_IDS[part])

    image = canvas.resize((resolution, resolution), Image.Resampling.LANCZOS)
    if not return_mask:
        return image, attributes, captions
    return image, attributes, captions, np.asarray(mask.resize((resolution, resolution), Image.Resampling.NEAREST))


# ---------------------------------------------------------------------------------------------------------------------
# Datasets


def _example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Image `index` of `split`: its own stream, so images do not depend on how many others are built."""
    return np.random.default_rng([seed, _SPLITS.index(split), index])


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # no timestamp or other metadata: identical pixels give identical bytes
    return buffer.getvalue()


def iter_birds(split: str, num_examples: int, resolution: int, seed: int, return_mask: bool = False):
    """
    Yields `(image, attributes, captions)` (with `return_mask=True`, also the part mask; see `generate_bird`) for the
    examples of one split, in index order.
    """
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {_SPLITS}, got {split!r}.")
    for index in range(num_examples):
        yield generate_bird(_example_rng(seed, split, index), resolution, return_mask=return_mask)


def iter_examples(split: str, num_examples: int, resolution: int, seed: int):
    """Yields `(file_name, png_bytes, metadata)` for the examples of one split; `metadata` is the `metadata.jsonl` row."""
    for index, (image, attributes, captions) in enumerate(iter_birds(split, num_examples, resolution, seed)):
        file_name = f"{index:05d}.png"
        yield (
            file_name,
            _png_bytes(image),
            {"file_name": file_name, "captions": captions, "text": captions[0], **attributes},
        )


def _check_counts(num_train: int, num_test: int) -> None:
    if num_train < 1 or num_test < 0:
        raise ValueError(f"Need `num_train` >= 1 and `num_test` >= 0, got num_train={num_train}, num_test={num_test}.")


def _build_info(num_train: int, num_test: int, resolution: int, seed: int) -> dict:
    return {
        "name": "synthbirds",
        "format_version": _FORMAT_VERSION,
        "num_train": num_train,
        "num_test": num_test,
        "resolution": resolution,
        "seed": seed,
    }


def build_synthbirds(
    output_dir: str | os.PathLike,
    num_train: int = 2000,
    num_test: int = 500,
    resolution: int = 64,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """
    Writes SynthBirds as an `imagefolder` dataset: `output_dir/{train,test}/NNNNN.png` and a `metadata.jsonl` per split
    with `file_name`, `captions` (list of str), `text` (the first caption) and the seven attributes, plus
    `synthbirds.json` recording the build arguments. Load it with `datasets.load_dataset("imagefolder",
    data_dir=output_dir)`.

    The build is written to a hidden temporary folder beside `output_dir` and renamed into place at the end, so an
    interrupted build never leaves a partial dataset under `output_dir`.

    Args:
        output_dir: where the dataset goes; must not exist yet (or be empty) unless `overwrite=True`.
        num_train, num_test: images per split (defaults sized for the CPU job: about 2-3 s to build at 64 px).
        resolution: image side in pixels.
        seed: the dataset's seed; the same arguments always give the same bytes.
        overwrite: replace an existing `output_dir`.

    Returns:
        `Path` to `output_dir`.
    """
    from .preparation import atomic_folder  # here: `preparation` imports `loading`, which imports this module

    _check_counts(num_train, num_test)
    output_dir = Path(output_dir).expanduser()
    with atomic_folder(output_dir, overwrite) as staging:
        for split, count in (("train", num_train), ("test", num_test)):
            if count == 0:
                continue
            (staging / split).mkdir()
            with open(staging / split / "metadata.jsonl", "w", encoding="utf-8") as metadata:
                for file_name, png, row in iter_examples(split, count, resolution, seed):
                    (staging / split / file_name).write_bytes(png)
                    metadata.write(json.dumps(row) + "\n")
        (staging / _INFO_FILE).write_text(json.dumps(_build_info(num_train, num_test, resolution, seed), indent=2))
    return output_dir


def _features():
    import datasets

    return datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "text": datasets.Value("string"),
            **{name: datasets.Value("string") for name in ATTRIBUTE_NAMES},
        }
    )


def load_synthbirds(
    num_train: int = 2000,
    num_test: int = 500,
    resolution: int = 64,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
):
    """
    SynthBirds as a `datasets.DatasetDict` with "train" and "test" splits (the "test" split is left out when
    `num_test=0`).

    Columns: `image` (`datasets.Image`), `captions` (list of str), `text` (str), and the attributes `body_color`,
    `wing_color`, `crown_color`, `beak_color`, `beak_length`, `size`, `facing` (str).

    Without `cache_dir` the images are generated in memory (PNG bytes, about 3 KB each at 64 px). With `cache_dir` the
    dataset is built once with `build_synthbirds` into `cache_dir/synthbirds-v{version}-{resolution}px-{num_train}-
    {num_test}-seed{seed}` and loaded with the `imagefolder` builder (its Arrow cache in `cache_dir/arrow`); later calls
    reuse it, and concurrent callers are safe (the build is atomic). Both ways give the same data.

    >>> from hf_stagegan.data.synthbirds import load_synthbirds
    >>> birds = load_synthbirds(num_train=8, num_test=4, resolution=32)
    >>> birds["train"].column_names[:3], birds["test"].num_rows
    (['image', 'captions', 'text'], 4)
    """
    import datasets

    _check_counts(num_train, num_test)
    counts = {"train": num_train, "test": num_test}
    if cache_dir is None:
        splits = {}
        for split, count in counts.items():
            if count == 0:
                continue
            rows = []
            for file_name, png, row in iter_examples(split, count, resolution, seed):
                row = dict(row)
                row.pop("file_name")
                rows.append({"image": {"bytes": png, "path": file_name}, **row})
            splits[split] = datasets.Dataset.from_list(rows, features=_features(), split=datasets.Split(split))
        return datasets.DatasetDict(splits)

    cache_dir = Path(cache_dir).expanduser()
    folder = cache_dir / f"synthbirds-v{_FORMAT_VERSION}-{resolution}px-{num_train}-{num_test}-seed{seed}"
    if not (folder / _INFO_FILE).is_file():
        try:
            build_synthbirds(folder, num_train, num_test, resolution, seed)
        except OSError:
            # another process finished the same build first (its rename won); use its copy if it is complete
            if not (folder / _INFO_FILE).is_file():
                raise
    # datasets' own (Arrow) cache goes beside the build, so that deleting `cache_dir` removes everything
    dataset = datasets.load_dataset("imagefolder", data_dir=str(folder), cache_dir=str(cache_dir / "arrow"))
    features = _features()  # imagefolder infers these same types from metadata.jsonl; make sure of it
    return datasets.DatasetDict(
        {split: ds if ds.features == features else ds.cast(features) for split, ds in dataset.items()}
    )


__all__ = [
    "ATTRIBUTE_NAMES",
    "BEAK_COLORS",
    "CAPTION_ATTRIBUTES",
    "PALETTE",
    "PART_IDS",
    "build_synthbirds",
    "generate_bird",
    "iter_birds",
    "iter_examples",
    "load_synthbirds",
    "make_captions",
    "parse_caption",
    "sample_attributes",
    "short_caption",
    "swap_caption_attribute",
]
