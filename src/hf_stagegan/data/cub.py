"""
CUB-200-2011 with captions, prepared as the text-to-image literature does (StackGAN, AttnGAN, DM-GAN, DF-GAN, GALIP,
GR-GAN), from the two public downloads:

- `CUB_200_2011/`: `images/<class>/<image>.jpg`, `images.txt` ("<id> <class>/<image>.jpg"), `bounding_boxes.txt`
  ("<id> <x> <y> <width> <height>", floats, pixels), `classes.txt` ("<class id> <class>"), `image_class_labels.txt`
  ("<id> <class id>"), `train_test_split.txt` ("<id> <1 train / 0 test>");
- the caption folder StackGAN and AttnGAN ship (`birds/text/<class>/<image>.txt`, ten captions per image, from Reed
  et al. 2016), and AttnGAN's split lists `birds/train/filenames.pickle`, `birds/test/filenames.pickle`.

Each image is cropped as AttnGAN's `get_imgs` does (`literature_crop_box`): a square of side 1.5 x the longer side of
the bird's bounding box around its centre, clipped to the image; then stored once with its shorter side at `size`
(304 px by default: the literature's 256 px training resizes to 304 before its random crop).

Splits: "literature" is the class-disjoint 150 / 50 split of AttnGAN's `train/` and `test/` lists (8,855 / 2,933
images, in the lists' order); "official" is CUB's own `train_test_split.txt` (5,994 / 5,794, in `images.txt` order).

>>> from hf_stagegan.data.cub import literature_crop_box
>>> literature_crop_box((60.0, 27.0, 325.0, 304.0), width=500, height=375)  # a 325 x 304 box in a 500 x 375 image
(0, 0, 465, 375)
"""

from __future__ import annotations

import functools
import logging
import os
import time
from pathlib import Path

import datasets

from .preparation import (
    DEFAULT_SIZE,
    PreparationReport,
    captions_with_words,
    check_preparation_args,
    count_table,
    encode_image,
    finish_preparation,
    load_rgb,
    read_caption_file,
    read_literature_splits,
    resize_shorter_side,
)

logger = logging.getLogger(__name__)

CAPTIONS_PER_IMAGE = 10
EXPECTED_COUNTS = {"literature": {"train": 8855, "test": 2933}, "official": {"train": 5994, "test": 5794}}
NUM_IMAGES = 11788
SPLITS = ("literature", "official")
CUB_FILES = {  # file: (fields after the image or class id, what a line looks like)
    "images.txt": (1, "<image_id> <class>/<image>.jpg"),
    "bounding_boxes.txt": (4, "<image_id> <x> <y> <width> <height>"),
    "classes.txt": (1, "<class_id> <class_name>"),
    "image_class_labels.txt": (1, "<image_id> <class_id>"),
    "train_test_split.txt": (1, "<image_id> <is_training_image>"),
}


def literature_crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """
    AttnGAN's crop `(left, top, right, bottom)` of an image `width` x `height` around the bird's box `(x, y, w, h)`:
    side 1.5 x max(w, h), centred on the box, clipped to the image. The box is read as integers first (AttnGAN loads
    `bounding_boxes.txt` with pandas `.astype(int)`, which truncates), and so is every step of the formula.
    """
    x, y, w, h = (int(value) for value in bbox)
    radius = int(max(w, h) * 0.75)
    center_x, center_y = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, center_x - radius), max(0, center_y - radius), min(width, center_x + radius), min(height, center_y + radius)


def _read_table(path: Path, kind: str, parse) -> dict[int, tuple]:
    """
    `{id: parsed fields}` of one CUB metadata file; a line that does not parse is a `ValueError` naming the file, the
    line and what was expected.
    """
    num_fields, expected = CUB_FILES[kind]
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != num_fields + 1:
                raise ValueError(f"{len(fields)} fields")
            key, values = int(fields[0]), parse(fields[1:])
        except ValueError:
            raise ValueError(f"{str(path)!r} line {number}: expected {expected!r}, got {line!r}.") from None
        if key in table:
            raise ValueError(f"{str(path)!r} line {number}: id {key} appears a second time ({line!r}).")
        table[key] = values
    return table


def _parse_bbox(fields):
    bbox = tuple(float(value) for value in fields)
    if not all(value == value and abs(value) != float("inf") for value in bbox):  # NaN or infinite
        raise ValueError("not finite")
    return bbox


def read_cub_metadata(cub_dir: str | os.PathLike, split: str) -> dict:
    """
    The metadata of `CUB_200_2011/`: `names` (image id -> "<class>/<image>" without extension), `paths`, `bboxes`,
    `labels` (0-based), `class_names`, and for `split="official"` `is_train`. `FileNotFoundError` names a missing file.
    """
    cub_dir = Path(cub_dir)
    if not cub_dir.is_dir():
        raise FileNotFoundError(f"`cub_dir` {str(cub_dir)!r} is not a folder (expected the CUB_200_2011 download).")
    needed = [name for name in CUB_FILES if name != "train_test_split.txt" or split == "official"] + ["images"]
    missing = [name for name in needed if not (cub_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"`cub_dir` {str(cub_dir)!r} lacks {missing}: is it the CUB_200_2011 folder?")
    paths = _read_table(cub_dir / "images.txt", "images.txt", lambda f: f[0])
    classes = _read_table(cub_dir / "classes.txt", "classes.txt", lambda f: f[0])
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise ValueError(f"{str(cub_dir / 'classes.txt')!r}: class ids must be 1..{len(classes)}, got {sorted(classes)[:5]}...")
    labels = _read_table(cub_dir / "image_class_labels.txt", "image_class_labels.txt", lambda f: int(f[0]))
    for image_id, class_id in labels.items():
        if class_id not in classes:
            raise ValueError(
                f"{str(cub_dir / 'image_class_labels.txt')!r}: image {image_id} has class {class_id}, which "
                f"classes.txt does not define (1..{len(classes)})."
            )
    metadata = {
        "paths": paths,
        "names": {image_id: os.path.splitext(path)[0] for image_id, path in paths.items()},
        "bboxes": _read_table(cub_dir / "bounding_boxes.txt", "bounding_boxes.txt", _parse_bbox),
        "labels": {image_id: class_id - 1 for image_id, class_id in labels.items()},
        "class_names": [classes[class_id] for class_id in sorted(classes)],
    }
    if split == "official":
        metadata["is_train"] = _read_table(
            cub_dir / "train_test_split.txt", "train_test_split.txt", lambda f: {"1": True, "0": False}[f[0]]
        )
    return metadata


def cub_features(class_names: list[str]) -> datasets.Features:
    return datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "class_label": datasets.ClassLabel(names=class_names),
            "file_name": datasets.Value("string"),
            "bbox": datasets.List(datasets.Value("float32"), length=4),
        }
    )


def _cub_example(row: tuple, size: int, image_format: str) -> dict:
    """One prepared example from `(path, file_name, bbox, label, captions)`: cropped, resized, encoded."""
    path, file_name, bbox, label, captions = row
    image = load_rgb(path)
    box = literature_crop_box(bbox, *image.size)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"The bounding box {list(bbox)} of {file_name!r} lies outside its {image.size} image.")
    image = resize_shorter_side(image.crop(box), size)
    return {
        "image": encode_image(image, image_format, file_name),
        "captions": captions,
        "class_label": label,
        "file_name": file_name,
        "bbox": list(bbox),
    }


def _split_ids(metadata: dict, split: str, split_dir, report: PreparationReport) -> dict[str, list[int]]:
    if split == "official":
        ids = sorted(metadata["paths"])
        for image_id in ids:
            if image_id not in metadata["is_train"]:
                report.count("no_split", "images with no line in train_test_split.txt (left out)", metadata["names"][image_id])
        return {
            "train": [i for i in ids if metadata["is_train"].get(i) is True],
            "test": [i for i in ids if metadata["is_train"].get(i) is False],
        }
    ids_by_name = {name: image_id for image_id, name in metadata["names"].items()}
    splits = {}
    for split_name, names in read_literature_splits(split_dir).items():
        splits[split_name] = []
        for name in names:
            name = name[: -len(".jpg")] if name.lower().endswith(".jpg") else name  # lists written with the extension
            if name in ids_by_name:
                splits[split_name].append(ids_by_name[name])
            else:
                report.count("unknown_names", "names in the split lists that images.txt does not have (left out)", name)
    return splits


def prepare_cub(
    cub_dir: str | os.PathLike,
    text_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    split: str = "literature",
    split_dir: str | os.PathLike | None = None,
    size: int = DEFAULT_SIZE,
    image_format: str = "jpeg",
    push_to_hub: str | None = None,
    overwrite: bool = False,
    num_proc: int | None = None,
    private: bool | None = None,
    token: str | None = None,
) -> PreparationReport:
    """
    CUB-200-2011 with its captions as a Hub dataset folder (`datasets.load_dataset(output_dir)`): splits `train` and
    `test`; columns `image` (the literature's crop, shorter side `size`), `captions` (the image's ten captions, in
    file order), `class_label` (`ClassLabel` of the 200 species), `file_name` (`images.txt`'s path), `bbox` (the
    bird's box `[x, y, width, height]` in the original image, as `bounding_boxes.txt` gives it).

    Args:
        cub_dir: the `CUB_200_2011` folder.
        text_dir: the captions, `<class>/<image>.txt` (AttnGAN's `birds/text`, StackGAN's `text_c10`).
        output_dir: where the dataset folder is written (atomically; refused if not empty unless `overwrite`).
        split: "literature" (AttnGAN's class-disjoint lists, from `split_dir`) or "official" (`train_test_split.txt`).
        split_dir: holds `train/filenames.pickle` and `test/filenames.pickle` (or `filenames.txt`, one name per line);
            default: the folder that holds `text_dir` (AttnGAN's `birds/`).
        size: the stored images' shorter side in pixels (304 for 256 px training).
        image_format: "jpeg" (quality 95) or "png".
        push_to_hub: a Hub dataset id to upload the folder to, with its dataset card.
        num_proc: processes that crop and encode images.

    Returns:
        `PreparationReport`: the examples per split and every counted problem. Missing metadata files and lines that
        do not parse raise; missing images, images without captions, caption files without an image, short caption
        files and unusable boxes are counted, warned about, and printed by `hf-stagegan prepare-cub`.
    """
    started = time.perf_counter()
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}.")
    check_preparation_args(size, image_format)
    cub_dir, text_dir = Path(cub_dir).expanduser(), Path(text_dir).expanduser()
    if not text_dir.is_dir():
        raise FileNotFoundError(f"`text_dir` {str(text_dir)!r} is not a folder (expected `<class>/<image>.txt` files).")
    split_dir = Path(split_dir).expanduser() if split_dir is not None else text_dir.parent
    report = PreparationReport(dataset=f"CUB-200-2011 ({split} split)")
    metadata = read_cub_metadata(cub_dir, split)
    split_ids = _split_ids(metadata, split, split_dir, report)

    used = set()
    rows = {}
    for split_name, ids in split_ids.items():
        rows[split_name] = []
        for image_id in ids:
            name, file_name = metadata["names"][image_id], metadata["paths"][image_id]
            used.add(name)
            image_path, caption_path = cub_dir / "images" / file_name, text_dir / f"{name}.txt"
            bbox = metadata["bboxes"].get(image_id)
            if not image_path.is_file():
                report.count("missing_images", "images listed in images.txt but missing from images/ (left out)", file_name)
                continue
            if not caption_path.is_file():
                report.count("no_captions", "images without a caption file (left out)", str(caption_path))
                continue
            if bbox is None:
                report.count("no_bbox", "images without a line in bounding_boxes.txt (left out)", file_name)
                continue
            if bbox[2] <= 0 or bbox[3] <= 0 or bbox[0] < 0 or bbox[1] < 0:
                report.count("bad_bbox", "bounding boxes with a negative corner or no area (image left out)", f"{image_id} {list(bbox)}")
                continue
            captions, wordless = captions_with_words(read_caption_file(caption_path))
            if wordless:
                report.count("wordless", "caption lines without words (left out)", repr(wordless[0]), len(wordless))
            if len(captions) > CAPTIONS_PER_IMAGE:
                report.count("extra_captions", f"caption files with more than {CAPTIONS_PER_IMAGE} captions (the first {CAPTIONS_PER_IMAGE} kept)", str(caption_path))
                captions = captions[:CAPTIONS_PER_IMAGE]
            if not captions:
                report.count("empty_caption_files", "caption files without a caption (image left out)", str(caption_path))
                continue
            if len(captions) < CAPTIONS_PER_IMAGE:
                report.count("few_captions", f"caption files with fewer than {CAPTIONS_PER_IMAGE} captions (kept)", f"{caption_path} ({len(captions)})")
            rows[split_name].append((str(image_path), file_name, bbox, metadata["labels"][image_id], captions))

    known = set(metadata["names"].values())
    for caption_file in sorted(text_dir.rglob("*.txt")):
        name = caption_file.relative_to(text_dir).with_suffix("").as_posix()
        if name not in known:
            report.count("orphan_captions", "caption files without an image in images.txt (not used)", str(caption_file))
    if len(metadata["paths"]) == NUM_IMAGES:
        expected = EXPECTED_COUNTS[split]
        found = {name: len(split_rows) for name, split_rows in rows.items()}
        if found != expected:
            logger.warning(f"The {split} split of the full CUB usually has {expected} images; this preparation has {found}.")

    features = cub_features(metadata["class_names"])
    make_example = functools.partial(_cub_example, size=size, image_format=image_format)
    card = functools.partial(_card, split=split, size=size, image_format=image_format)
    finish_preparation(report, rows, make_example, features, card, output_dir, push_to_hub, overwrite, num_proc, private, token)
    report.seconds = time.perf_counter() - started
    return report


def _card(split_counts, split: str, size: int, image_format: str) -> dict:
    split_text = {
        "literature": "the class-disjoint split of StackGAN and AttnGAN (150 training species, 50 test species), read "
        "from AttnGAN's `train/filenames.pickle` and `test/filenames.pickle`, in their order",
        "official": "CUB-200-2011's own `train_test_split.txt`, in `images.txt` order",
    }[split]
    body = f"""
# CUB-200-2011 with captions ({split} split)

Caltech-UCSD Birds-200-2011 (11,788 photographs of 200 bird species, Wah et al. 2011) with ten English captions per
image (Reed et al., "Learning Deep Representations of Fine-Grained Visual Descriptions", CVPR 2016), prepared for
text-to-image training as the literature does (StackGAN, AttnGAN, DM-GAN, DF-GAN, GALIP, GR-GAN) by
`hf-stagegan prepare-cub`.

{count_table(split_counts)}

## Preparation

- **Crop**: a square of side 1.5 x the longer side of the bird's bounding box, centred on the box, clipped to the
  image (AttnGAN's `get_imgs`; the box read as integers, as AttnGAN does).
- **Size**: the crop's shorter side resized to {size} px (bilinear), stored as {image_format.upper()}
  {"(quality 95)" if image_format == "jpeg" else ""}. Training at 256 px takes a random 256 crop of it and a random
  horizontal flip (`examples/train.py --image_transform literature`).
- **Split**: {split_text}.
- **Captions**: the non-empty lines of `text/<class>/<image>.txt`, in order, at most {CAPTIONS_PER_IMAGE} (lines
  without words are left out).

## Columns

- `image`: the cropped bird.
- `captions`: list of the image's captions.
- `class_label`: the species (`ClassLabel`, `classes.txt`'s names).
- `file_name`: the image's path in `CUB_200_2011/images/`.
- `bbox`: the bird's bounding box `[x, y, width, height]` in the original image, pixels.

## Licence

The images come from Flickr and are distributed by Caltech for non-commercial research and educational purposes only
(see the CUB-200-2011 page); the captions are Reed et al.'s. This card records how the data was prepared; the terms of
both sources apply to anyone who uses it.
"""
    return {"pretty_name": f"CUB-200-2011 with captions ({split} split)", "license_id": "other", "body": body}


__all__ = ["CAPTIONS_PER_IMAGE", "EXPECTED_COUNTS", "cub_features", "literature_crop_box", "prepare_cub", "read_cub_metadata"]
