"""Data: loading image-caption datasets for training (`loading`) and the procedural SynthBirds benchmark (`synthbirds`)."""

from .loading import (
    EpochSampler,
    ImageTextCollator,
    ImageTextDataset,
    all_captions,
    build_dataloader,
    check_columns,
    decode_image,
    example_rng,
    load_image_text_dataset,
    preprocess_image,
)
from .synthbirds import build_synthbirds, generate_bird, load_synthbirds

__all__ = [
    "EpochSampler",
    "ImageTextCollator",
    "ImageTextDataset",
    "all_captions",
    "build_dataloader",
    "build_synthbirds",
    "check_columns",
    "decode_image",
    "example_rng",
    "generate_bird",
    "load_image_text_dataset",
    "load_synthbirds",
    "preprocess_image",
]
