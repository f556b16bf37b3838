"""
MS-COCO 2014 with captions, prepared as AttnGAN, DM-GAN, DF-GAN and GR-GAN use it, from the public download:
`train2014/`, `val2014/` and `annotations/captions_{train,val}2014.json`.

The 2014 train images are the training split and the 2014 val images the test split (82,783 / 40,504 images), as in
AttnGAN and GR-GAN; AttnGAN's own lists (`coco/train/filenames.pickle`, `coco/test/filenames.pickle`) may select
them instead (`split_dir`). Each image is stored whole (COCO has no single object box) with its shorter side at
`size`, and its first five captions (by annotation id).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections import defaultdict
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
    read_literature_splits,
    resize_shorter_side,
)

CAPTIONS_PER_IMAGE = 5
COCO_SPLITS = {"train": "train2014", "test": "val2014"}  # our split: COCO's folder (and annotation file) name


def coco_features() -> datasets.Features:
    return datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "file_name": datasets.Value("string"),
            "image_id": datasets.Value("int64"),
        }
    )


def _read_annotations(path: Path) -> tuple[list[dict], dict[int, list[tuple[int, str]]]]:
    """`(images, captions by image id)` of a COCO captions file; `ValueError` naming it if it is not one."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        images = [{"id": int(image["id"]), "file_name": str(image["file_name"])} for image in content["images"]]
        captions = defaultdict(list)
        for annotation in content["annotations"]:
            captions[int(annotation["image_id"])].append((int(annotation["id"]), annotation["caption"]))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(
            f"{str(path)!r} is not a COCO captions file (expected JSON with 'images' [{{'id', 'file_name'}}] and "
            f"'annotations' [{{'id', 'image_id', 'caption'}}]): {type(error).__name__}: {error}"
        ) from None
    return images, captions


def _coco_example(row: tuple, size: int, image_format: str) -> dict:
    path, file_name, image_id, captions = row
    image = resize_shorter_side(load_rgb(path), size)
    return {"image": encode_image(image, image_format, file_name), "captions": captions, "file_name": file_name, "image_id": image_id}


def prepare_coco(
    coco_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    max_images: int | None = None,
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
    COCO 2014 captions as a Hub dataset folder (`datasets.load_dataset(output_dir)`): splits `train` (train2014) and
    `test` (val2014); columns `image` (shorter side `size`), `captions` (the first five by annotation id),
    `file_name` ("train2014/COCO_train2014_000000000009.jpg"), `image_id` (COCO's id).

    Args:
        coco_dir: holds `train2014/`, `val2014/` and `annotations/captions_{train,val}2014.json`.
        output_dir: where the dataset folder is written (atomically; refused if not empty unless `overwrite`).
        max_images: keep only the first `max_images` images of each split (by image id, or the split lists' order).
        split_dir: optional AttnGAN lists `train/filenames.pickle`, `test/filenames.pickle` (names like
            "COCO_val2014_000000000042"); by default every image of train2014 / val2014, by image id.
        size, image_format, push_to_hub, num_proc: as `hf_stagegan.data.cub.prepare_cub`.

    Returns:
        `PreparationReport`. Missing folders and annotation files raise; images missing from disk, images without
        captions, captions of unknown images and images with fewer than five captions are counted and warned about.
    """
    started = time.perf_counter()
    check_preparation_args(size, image_format)
    if max_images is not None and (not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"`max_images` must be a positive number, got {max_images!r}.")
    coco_dir = Path(coco_dir).expanduser()
    needed = [*COCO_SPLITS.values(), *(f"annotations/captions_{folder}.json" for folder in COCO_SPLITS.values())]
    missing = [name for name in needed if not (coco_dir / name).exists()]
    if missing:
        raise FileNotFoundError(f"`coco_dir` {str(coco_dir)!r} lacks {missing} (expected the COCO 2014 download).")
    report = PreparationReport(dataset="COCO 2014 captions")
    wanted = read_literature_splits(split_dir) if split_dir is not None else None

    rows = {}
    for split, folder in COCO_SPLITS.items():
        images, captions = _read_annotations(coco_dir / "annotations" / f"captions_{folder}.json")
        by_name = {os.path.splitext(image["file_name"])[0]: image for image in images}
        known_ids = {image["id"] for image in images}
        for image_id, texts_of_image in captions.items():
            if image_id not in known_ids:
                report.count("orphan_captions", "captions of an image id the annotation file does not list (not used)", f"{folder} image {image_id}", len(texts_of_image))
        if wanted is None:
            selected = sorted(images, key=lambda image: image["id"])
        else:
            selected = []
            for name in wanted[split]:
                if name in by_name:
                    selected.append(by_name[name])
                else:
                    report.count("unknown_names", f"names in the split lists that captions_{folder}.json does not have (left out)", name)
        rows[split] = []
        for image in selected:
            if max_images is not None and len(rows[split]) == max_images:
                break
            path = coco_dir / folder / image["file_name"]
            if not path.is_file():
                report.count("missing_images", "images in the annotations but missing on disk (left out)", f"{folder}/{image['file_name']}")
                continue
            texts, wordless = captions_with_words(text for _, text in sorted(captions.get(image["id"], [])))
            if wordless:
                report.count("wordless", "captions without words (left out)", repr(wordless[0]), len(wordless))
            if not texts:
                report.count("no_captions", "images without a caption (left out)", f"{folder}/{image['file_name']}")
                continue
            if len(texts) < CAPTIONS_PER_IMAGE:
                report.count("few_captions", f"images with fewer than {CAPTIONS_PER_IMAGE} captions (kept)", f"{folder}/{image['file_name']} ({len(texts)})")
            rows[split].append((str(path), f"{folder}/{image['file_name']}", image["id"], texts[:CAPTIONS_PER_IMAGE]))

        listed = {image["file_name"] for image in images}
        for entry in sorted(os.scandir(coco_dir / folder), key=lambda entry: entry.name):
            if entry.name.lower().endswith((".jpg", ".jpeg", ".png")) and entry.name not in listed:
                report.count("unlisted_images", "image files the annotation files do not list (not used)", f"{folder}/{entry.name}")

    make_example = functools.partial(_coco_example, size=size, image_format=image_format)
    card = functools.partial(_card, size=size, image_format=image_format, max_images=max_images, split_dir=split_dir)
    finish_preparation(report, rows, make_example, coco_features(), card, output_dir, push_to_hub, overwrite, num_proc, private, token)
    report.seconds = time.perf_counter() - started
    return report


def _card(split_counts, size: int, image_format: str, max_images, split_dir) -> dict:
    selection = "AttnGAN's split lists (`train/filenames.pickle`, `test/filenames.pickle`), in their order" if split_dir else "every image with a caption, by image id"
    subset = f" Only the first {max_images} images of each split were kept (`--max_images`)." if max_images else ""
    body = f"""
# COCO 2014 captions

MS-COCO 2014 (Lin et al. 2014) images with their English captions, prepared for text-to-image training as AttnGAN,
DM-GAN, DF-GAN and GR-GAN use it, by `hf-stagegan prepare-coco`.

{count_table(split_counts)}

## Preparation

- **Split**: `train` = COCO's train2014, `test` = val2014 ({selection}).{subset}
- **Image**: the whole image, shorter side resized to {size} px (bilinear), stored as {image_format.upper()}.
  Training at 256 px takes a random 256 crop and a random horizontal flip (`--image_transform literature`).
- **Captions**: the first {CAPTIONS_PER_IMAGE} captions of each image by annotation id (captions without words left out).

## Columns

`image`, `captions` (list of str), `file_name` (path in the COCO download), `image_id` (COCO's image id).

## Licence

The annotations are COCO's, under CC BY 4.0; the images come from Flickr, each under the licence the annotation files
record for it (`licenses`, `images[].license`), as the COCO terms of use describe. Those terms apply to anyone who uses
this data.
"""
    return {"pretty_name": "COCO 2014 captions", "license_id": "other", "body": body}


__all__ = ["CAPTIONS_PER_IMAGE", "coco_features", "prepare_coco"]
