"""Evaluation: how generated images are judged (DESIGN.md §3b)."""

from .colors import (
    COLOR_NAMES,
    body_color_from_caption,
    color_accuracy,
    color_confusion,
    color_fraction,
    format_confusion,
    predict_colors,
)

__all__ = [
    "COLOR_NAMES",
    "body_color_from_caption",
    "color_accuracy",
    "color_confusion",
    "color_fraction",
    "format_confusion",
    "predict_colors",
]
