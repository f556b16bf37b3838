"""
Data: loading image-caption datasets for training (`loading`), the procedural SynthBirds benchmark (`synthbirds`), and
the preparation of the real datasets as the literature uses them (`cub` for CUB-200-2011, `coco` for COCO 2014, with
what they share in `preparation`).
"""

from .coco import prepare_coco
from .cub import literature_crop_box, prepare_cub
from .loading import (
    IMAGE_TRANSFORMS,
    EpochSampler,
    ImageTextCollator,
    ImageTextDataset,
    all_captions,
    build_dataloader,
    caption_has_words,
    check_columns,
    decode_image,
    drop_wordless_captions,
    example_rng,
    label_classes,
    load_image_text_dataset,
    preprocess_image,
)
from .preparation import PreparationReport, read_split_list
from .synthbirds import build_synthbirds, generate_bird, load_synthbirds

__all__ = [
    "IMAGE_TRANSFORMS",
    "EpochSampler",
    "ImageTextCollator",
    "ImageTextDataset",
    "PreparationReport",
    "all_captions",
    "build_dataloader",
    "build_synthbirds",
    "caption_has_words",
    "check_columns",
    "decode_image",
    "drop_wordless_captions",
    "example_rng",
    "generate_bird",
    "label_classes",
    "literature_crop_box",
    "load_image_text_dataset",
    "load_synthbirds",
    "preprocess_image",
    "prepare_coco",
    "prepare_cub",
    "read_split_list",
]
