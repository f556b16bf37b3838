"""Images in every form the metrics accept (PIL, uint8 / float arrays, tensors) -> one array or tensor layout."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_arrays(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> list[np.ndarray]:
    """
    Images -> a list of float32 `(H, W, 3)` arrays in 0..255.

    Args:
        images: PIL images; a `(B, 3, H, W)` tensor; `(B, H, W, 3)` / `(H, W, 3)` arrays, uint8 in 0..255 or floats in
            `value_range`; or a list of such arrays. A single image is a batch of one.
        value_range: the range of tensors and float arrays: `(-1, 1)` for generator output, `(0, 1)` for a
            pipeline's `output_type="pt"` or `"np"`. PIL images and uint8 arrays are always 0..255.
    """
    low, high = value_range
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"`images` tensor must be (B, 3, H, W), got shape {tuple(images.shape)}.")
        pixels = (images.detach().float().cpu().clamp(low, high) - low) / (high - low) * 255.0
        return list(pixels.permute(0, 2, 3, 1).numpy())  # (H, W, 3) each
    if isinstance(images, Image.Image) or (isinstance(images, np.ndarray) and images.ndim == 3):
        images = [images]
    arrays = []
    for image in images:
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Each image must be RGB (H, W, 3), got shape {image.shape}.")
        if np.issubdtype(image.dtype, np.floating):  # e.g. a pipeline's output_type="np": floats in `value_range`
            image = (image.clip(low, high) - low) / (high - low) * 255.0
        arrays.append(image.astype(np.float32))
    return arrays


def to_tensor(images, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """
    Images (any form `to_arrays` accepts, all the same size) -> a float32 `(B, 3, H, W)` tensor in [-1, 1], the
    generator's range. A tensor already in `value_range` is rescaled without a round trip through numpy.
    """
    if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] == 3:
        low, high = value_range
        return ((images.detach().float().clamp(low, high) - low) / (high - low)) * 2.0 - 1.0
    arrays = to_arrays(images, value_range)
    if not arrays:
        raise ValueError("`images` is empty.")
    sizes = {array.shape for array in arrays}
    if len(sizes) > 1:
        raise ValueError(f"All images must have the same size, got {sorted(sizes)}.")
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0  # (B, 3, H, W)


__all__ = ["to_arrays", "to_tensor"]
