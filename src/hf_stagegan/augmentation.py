"""
Differentiable augmentation of the discriminators' inputs (DiffAugment, Zhao et al. 2020; not in the patent).

Every image a discriminator sees in training, real or generated, in its update and in the generator's, goes through
the same random transformations (drawn per image). Because each transformation is differentiable, the generator's
gradient passes through it; because the generated images are transformed too, the generator is not taught to draw
the transformations. `StageGANConfig.discriminator_augmentation` names the transformations, in order:

- `"translation"`: shift by up to 1/8 of the side in each direction, integer pixels, the uncovered border filled with
  0 (mid-grey in [-1, 1]);
- `"cutout"`: one square of half the side, at a random centre (partly outside the image at the borders), set to 0;
- `"color"`: random brightness, saturation and contrast. It changes colours, which a caption names: with
  colour-conditioned discriminators it weakens what D2 and D3 can check, so it is not in the recommended policy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .configuration_stagegan import DISCRIMINATOR_AUGMENTATIONS


def translate(images: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by its own random whole-pixel offset in [-ratio * side, ratio * side], zero-filled."""
    batch, _, height, width = images.shape
    pad_y, pad_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    if pad_y == 0 and pad_x == 0:
        return images
    shift_y = torch.randint(-pad_y, pad_y + 1, (batch, 1, 1), device=images.device)
    shift_x = torch.randint(-pad_x, pad_x + 1, (batch, 1, 1), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :, None] + pad_y - shift_y  # (B, H, 1) in the padded map
    cols = torch.arange(width, device=images.device)[None, None, :] + pad_x - shift_x  # (B, 1, W)
    padded = F.pad(images, (pad_x, pad_x, pad_y, pad_y)).permute(0, 2, 3, 1)  # (B, H + 2py, W + 2px, C)
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def cutout(images: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` x the side per image, centred anywhere in the image (clipped at its borders)."""
    batch, _, height, width = images.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    centre_y = torch.randint(0, height, (batch, 1, 1), device=images.device)
    centre_x = torch.randint(0, width, (batch, 1, 1), device=images.device)
    rows = torch.arange(height, device=images.device)[None, :, None] - (centre_y - size_y // 2)  # (B, H, 1)
    cols = torch.arange(width, device=images.device)[None, None, :] - (centre_x - size_x // 2)  # (B, 1, W)
    inside = (rows >= 0) & (rows < size_y) & (cols >= 0) & (cols < size_x)  # (B, H, W)
    return images * (~inside)[:, None].to(images.dtype)


def color(images: torch.Tensor) -> torch.Tensor:
    """DiffAugment's colour jitter: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5)."""
    batch = images.shape[0]

    def uniform(low, high):
        return torch.rand(batch, 1, 1, 1, device=images.device, dtype=images.dtype) * (high - low) + low

    images = images + uniform(-0.5, 0.5)
    mean = images.mean(dim=1, keepdim=True)
    images = (images - mean) * uniform(0.0, 2.0) + mean
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * uniform(0.5, 1.5) + mean


_TRANSFORMS = {"translation": translate, "cutout": cutout, "color": color}


def augment_for_discriminator(images: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """
    `images` `(B, 3, H, W)` through each transformation named in `policy` (see the module docstring), each drawn
    independently per image from torch's global random generator; `policy` empty returns `images` itself.
    """
    for name in policy:
        if name not in _TRANSFORMS:
            raise ValueError(
                f"Unknown discriminator augmentation {name!r} in `policy` {list(policy)!r}; expected names from "
                f"{list(DISCRIMINATOR_AUGMENTATIONS)}."
            )
        images = _TRANSFORMS[name](images)
    return images


__all__ = ["DISCRIMINATOR_AUGMENTATIONS", "augment_for_discriminator", "color", "cutout", "translate"]
