"""Evaluation: how generated images are judged (DESIGN.md §3b).

- `metrics`: Fréchet distances (FID and any feature space), CLIP score, R-precision, CMD, the matcher's part accuracy;
- `judge`: the SynthBirds attribute judge (trained on real birds only) and its scores of generated images;
- `eval_clip`: the offline evaluation CLIP for SynthBirds;
- `protocol`: `evaluate()`, the one protocol behind `hf-stagegan evaluate`, and its JSON report;
- `colors`: the body-colour vote (no model needed), kept for quick checks.
"""

from .colors import (
    COLOR_NAMES,
    body_color_from_caption,
    color_accuracy,
    color_confusion,
    color_fraction,
    format_confusion,
    predict_colors,
)
from .eval_clip import build_eval_clip, load_eval_clip
from .judge import (
    SynthBirdsJudge,
    SynthBirdsJudgeConfig,
    build_judge,
    judge_attributes,
    judge_predict,
    load_judge,
)
from .metrics import (
    clip_score,
    cross_modal_distance,
    frechet_distance,
    inception_fid,
    part_swap_accuracy,
    r_precision,
)
from .protocol import evaluate, headline_metrics, write_report

__all__ = [
    "COLOR_NAMES",
    "SynthBirdsJudge",
    "SynthBirdsJudgeConfig",
    "body_color_from_caption",
    "build_eval_clip",
    "build_judge",
    "clip_score",
    "color_accuracy",
    "color_confusion",
    "color_fraction",
    "cross_modal_distance",
    "evaluate",
    "format_confusion",
    "frechet_distance",
    "headline_metrics",
    "inception_fid",
    "judge_attributes",
    "judge_predict",
    "load_eval_clip",
    "load_judge",
    "part_swap_accuracy",
    "predict_colors",
    "r_precision",
    "write_report",
]
