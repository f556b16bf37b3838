"""
The evaluation protocol behind `hf-stagegan evaluate`: one function, `evaluate`, that draws one image per held-out
caption and writes one JSON report with every setting needed to reproduce it.

Protocol (the defaults):

1. **Data**: the split's images and captions (SynthBirds' test split by default: seed 0, the same birds' test split
   that `examples/train.py` never trains on; its first caption names every part). One caption per image: the caption
   column's string, or the first caption of a list column. Real images are resized (shorter side, LANCZOS) and
   centre-cropped to the model's output resolution.
2. **Generation**: image `i` from `torch.Generator().manual_seed(seed + i)` (independent of the batch size), with
   optional truncation, in batches, with a progress bar.
3. **Metrics** (`METRICS`): `fid` (Fréchet distance, Inception by default, or the judge's / a CLIP's feature space),
   `clip_score`, `r_precision` and `cmd` with the evaluation CLIP (on SynthBirds the offline one, which no generator
   trained against) and, labelled `clip_ft`, the model's own CLIP_FT when its folder has `clip/`; on SynthBirds also
   `judge` (attribute accuracy against the captions, judge FD and its real-vs-real floor) and `matcher` (the CLIPs'
   part-swap accuracy on the real images). Each text-consistency figure is also given on the real images: the
   ceiling to read the generated one against.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import check_columns, load_image_text_dataset, preprocess_image
from ..data.loading import decode_image
from ..data.synthbirds import parse_caption
from .judge import (
    FLOOR_DATA_SEED,
    JUDGE_RESOLUTIONS,
    attribute_accuracy,
    judge_predict,
    judge_report,
    load_judge,
    synthbirds_arrays,
)
from .metrics import (
    clip_image_embeddings,
    clip_score,
    clip_text_embeddings,
    cross_modal_distance,
    frechet_distance,
    inception_fid,
    part_swap_accuracy,
    r_precision,
)

logger = logging.getLogger(__name__)

METRICS = ("fid", "clip_score", "r_precision", "cmd", "judge", "matcher")
SYNTHBIRDS_METRICS = ("judge", "matcher")  # need SynthBirds' attributes and caption grammar
FID_FEATURE_EXTRACTORS = ("inception", "judge", "clip")  # or a CLIP folder / Hub id
DEFAULT_EVAL_CLIP = "openai/clip-vit-base-patch32"  # outside SynthBirds (a download; offline, from the HF cache)
SYNTHBIRDS_SEED = 0  # the test split of the seed the training script uses
REPORT_VERSION = 1
_PACKAGES = ("hf-stagegan", "torch", "transformers", "diffusers", "accelerate", "datasets", "torchmetrics", "numpy")


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


def parse_metrics(metrics: str | Sequence[str] | None, synthbirds: bool) -> tuple[list[str], bool]:
    """`(metrics, explicit)`: the metrics to run, in `METRICS` order, and whether the caller named them."""
    if metrics is None:
        return [m for m in METRICS if synthbirds or m not in SYNTHBIRDS_METRICS], False
    names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise ValueError(f"Unknown metric(s) {unknown or names!r} in `metrics`; expected some of {list(METRICS)}.")
    if not synthbirds and any(m in SYNTHBIRDS_METRICS for m in names):
        wanted = [m for m in names if m in SYNTHBIRDS_METRICS]
        raise ValueError(f"Metric(s) {wanted} need SynthBirds (attributes and caption grammar); drop them for this dataset.")
    return [m for m in METRICS if m in names], True


def load_captioned_images(
    dataset_name: str | None,
    split: str,
    num_images: int | None,
    resolution: int,
    image_column: str | None = None,
    caption_column: str | None = None,
    cache_dir: str | None = None,
) -> tuple[torch.Tensor, list[str], dict]:
    """
    `(real_images, captions, dataset_info)`: up to `num_images` images of `split` as a `(N, 3, R, R)` tensor in
    [-1, 1] at `resolution`, one caption each (a list column's first one), and what the report records of the data.
    `dataset_name` is a Hub id or a local folder (`datasets.load_dataset`), or None for SynthBirds.
    """
    synthbirds = dataset_name is None
    if synthbirds:
        count = 1000 if num_images is None else num_images
        if count < 1:
            raise ValueError(f"`num_images` must be >= 1, got {count}.")
        dataset = load_image_text_dataset(
            split=split, cache_dir=cache_dir, num_train=count if split == "train" else 1,
            num_test=count if split == "test" else 0, resolution=resolution, seed=SYNTHBIRDS_SEED,
        )
    else:  # a Hub id, or a local folder whose format `datasets` infers (imagefolder + metadata.jsonl, parquet, ...)
        try:
            dataset = load_image_text_dataset(dataset_name, split=split, cache_dir=cache_dir)
        except ValueError as error:  # `datasets` refuses to build a split of 0 rows from files
            if "corresponds to no data" not in str(error):
                raise
            dataset = None
    if dataset is None or len(dataset) == 0:
        raise ValueError(f"Split {split!r} of {dataset_name or 'SynthBirds'!r} is empty: nothing to evaluate.")
    image_column, caption_column = check_columns(dataset, image_column, caption_column)
    if num_images is not None:
        if num_images < 1:
            raise ValueError(f"`num_images` must be >= 1, got {num_images}.")
        dataset = dataset.select(range(min(num_images, len(dataset))))
    captions = []
    for index, caption in enumerate(dataset[caption_column]):
        if not isinstance(caption, str):
            if not caption:
                raise ValueError(f"Example {index} has no captions in column {caption_column!r}.")
            caption = caption[0]
        captions.append(caption)
    raw = dataset.cast_column(image_column, datasets.Image(decode=False))[image_column]
    images = torch.stack(
        [preprocess_image(decode_image(value, f"example {i}"), resolution) for i, value in enumerate(raw)]
    )  # (N, 3, R, R) in [-1, 1]
    info = {
        "name": "synthbirds" if synthbirds else dataset_name,
        "split": split,
        "num_images": len(captions),
        "image_column": image_column,
        "caption_column": caption_column,
        "caption_choice": "the caption column's string, or the first caption of a list",
        "real_image_preprocessing": f"shorter side to {resolution} px (LANCZOS), centre crop",
        "fingerprint": getattr(dataset, "_fingerprint", None),
    }
    if synthbirds:
        info["synthbirds"] = {"seed": SYNTHBIRDS_SEED, f"num_{split}": len(captions), "resolution": resolution}
    return images, captions, info


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weights_id(folder: str | os.PathLike) -> dict:
    """What identifies a saved model: its folder and the sha256 of its safetensors file(s)."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    return {"path": str(folder), "sha256": {f.name: _sha256(f) for f in files}}


def _package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def resolve_model_folder(model: str, revision: str | None = None) -> tuple[Path, str | None]:
    """`(folder, commit)`: a local pipeline folder as is, or a Hub id's snapshot (`StageGANPipeline.download`)."""
    from huggingface_hub.file_download import REGEX_COMMIT_HASH

    from ..pipeline_stagegan import StageGANPipeline

    if os.path.isdir(model):
        return Path(model), None
    folder = Path(StageGANPipeline.download(model, revision=revision))
    return folder, folder.name if REGEX_COMMIT_HASH.fullmatch(folder.name) else None


def _clip_ft_folder(model: str, folder: Path, commit: str | None) -> Path | None:
    """The model's own CLIP_FT (`clip/`, saved by `hub.save_stagegan_pipeline`), fetched from the Hub if needed."""
    if (folder / "clip" / "config.json").is_file():
        return folder / "clip"
    if os.path.isdir(model):
        return None
    from huggingface_hub import is_offline_mode, snapshot_download

    from ..pipeline_stagegan import PICKLE_PATTERNS

    try:
        snapshot = snapshot_download(
            model, revision=commit, allow_patterns=["clip/*"], ignore_patterns=PICKLE_PATTERNS,
            local_files_only=is_offline_mode(),
        )
    except Exception as error:  # not in the cache offline, or no such folder in the repo
        logger.warning(f"No CLIP_FT for {model!r}: {error}")
        return None
    path = Path(snapshot) / "clip"
    return path if (path / "config.json").is_file() else None


# ---------------------------------------------------------------------------------------------------------------------
# Generation


@torch.no_grad()
def generate_images(
    pipeline, captions: Sequence[str], seed: int = 0, batch_size: int = 64, truncation: float | None = None, progress: bool = True
) -> torch.Tensor:
    """
    One image per caption, `(N, 3, R, R)` in [-1, 1]: image `i` drawn with `torch.Generator().manual_seed(seed + i)`,
    so it does not depend on `batch_size`.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
    pipeline.set_progress_bar_config(disable=True)
    images = []
    for start in tqdm(range(0, len(captions), batch_size), desc="generating", disable=not progress):
        prompts = list(captions[start : start + batch_size])
        generators = [torch.Generator().manual_seed(seed + start + k) for k in range(len(prompts))]
        out = pipeline(prompts, generator=generators, truncation_threshold=truncation, output_type="pt")
        images.append(out.images.float().cpu() * 2 - 1)  # "pt" is in [0, 1]
    return torch.cat(images)


# ---------------------------------------------------------------------------------------------------------------------
# The protocol


def _clip_block(clip_model, tokenizer, real, fake, captions, metrics, seed, num_candidates, num_folds) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """CLIP score, R-precision (generated and real) of one CLIP; returns the block and the image embeddings."""
    text = clip_text_embeddings(clip_model, tokenizer, captions)
    real_embeds, fake_embeds = clip_image_embeddings(clip_model, real), clip_image_embeddings(clip_model, fake)
    block = {}
    if "clip_score" in metrics:
        block["clip_score"] = {"generated": clip_score(fake_embeds, text), "real": clip_score(real_embeds, text)}
    if "r_precision" in metrics:
        candidates = min(num_candidates, len(set(captions)))
        block["r_precision"] = {
            "generated": r_precision(fake_embeds, text, captions, candidates, num_folds, seed),
            "real": r_precision(real_embeds, text, captions, candidates, num_folds, seed),
        }
    return block, (real_embeds, fake_embeds), text


def evaluate(
    model,
    dataset_name: str | None = None,
    split: str = "test",
    num_images: int | None = None,
    batch_size: int = 64,
    metrics: str | Sequence[str] | None = None,
    seed: int = 0,
    truncation: float | None = None,
    fid_feature_extractor: str = "inception",
    inception_weights: str | os.PathLike | None = None,
    eval_clip: str | None = None,
    image_column: str | None = None,
    caption_column: str | None = None,
    num_candidates: int = 100,
    num_folds: int = 10,
    num_swaps: int = 5,
    clip_ft=None,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict:
    """
    Evaluates a StageGAN pipeline (module docstring) and returns the report (a JSON-serialisable dict).

    Args:
        model: a Hub id or a local folder of a saved pipeline, or a loaded [`StageGANPipeline`].
        dataset_name: a Hub dataset id or a local folder (imagefolder with `metadata.jsonl`); None: SynthBirds' test
            split (seed 0, `num_images` birds, default 1000) at the model's resolution.
        split: the split to evaluate on.
        num_images: evaluate on the first `num_images` examples (default: all; 1000 on SynthBirds).
        batch_size: images per generator call.
        metrics: names from `METRICS` (a list or a comma-separated string); default: all that apply. FID is skipped,
            with the reason in the report, when it is not asked for by name and its Inception weights are missing.
        seed: image `i` is drawn from seed `seed + i`; also the seed of R-precision's mismatched draws and the
            matcher's swaps.
        truncation: the pipeline's `truncation_threshold` (None: plain Gaussian noise).
        fid_feature_extractor: `"inception"` (FID), `"judge"` (SynthBirds), `"clip"` (the evaluation CLIP) or a CLIP
            folder / Hub id.
        inception_weights: path of `pt_inception-2015-12-05-6726825d.pth` (default: torch hub's cache).
        eval_clip: a CLIP folder / Hub id to score text consistency with; default: the offline SynthBirds evaluation
            CLIP on SynthBirds (built and cached on first use), `openai/clip-vit-base-patch32` elsewhere.
        image_column, caption_column: the dataset's columns (defaults as in training).
        num_candidates, num_folds: R-precision's settings (DM-GAN: 100, 10).
        num_swaps: swapped captions per part for the matcher's part accuracy.
        clip_ft: the model's own CLIP_FT (a `CLIPModel` or a folder), scored alongside the evaluation CLIP and
            labelled `clip_ft`; default: the model folder's `clip/` (saved by `hub.save_stagegan_pipeline`), if any.
            Its tokenizer is the pipeline's.
        revision: the model's Hub revision.
        cache_dir: where the judge and the evaluation CLIP are cached (`evaluation.cache`).
        device: where models run (default: cuda if available).
    """
    start_time = time.perf_counter()
    timings: dict[str, float] = {}
    synthbirds = dataset_name is None
    metrics, explicit = parse_metrics(metrics, synthbirds)
    if truncation is not None and not truncation > 0:
        raise ValueError(f"`truncation` must be > 0 or None, got {truncation!r}.")
    if fid_feature_extractor == "judge" and not synthbirds and "fid" in metrics:
        raise ValueError("`fid_feature_extractor='judge'` needs SynthBirds (the judge reads SynthBirds birds).")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    skipped: dict[str, str] = {}
    if "fid" in metrics and fid_feature_extractor == "inception":
        from .metrics import check_inception_weights

        try:
            check_inception_weights(inception_weights)
        except FileNotFoundError as error:
            if explicit:
                raise
            metrics.remove("fid")
            skipped["fid"] = str(error)
            logger.warning(f"Skipping FID: {error}")

    # 1. the model
    from ..pipeline_stagegan import StageGANPipeline

    clip_ft_path, commit = None, None
    if isinstance(model, StageGANPipeline):
        name_or_path = getattr(model, "name_or_path", None)  # diffusers keeps what from_pretrained got: a str or a Path
        pipeline, model_info = model, {"name_or_path": str(name_or_path) if name_or_path else "(in memory)"}
    else:
        folder, commit = resolve_model_folder(str(model), revision)
        pipeline = StageGANPipeline.from_pretrained(folder)
        clip_ft_path = _clip_ft_folder(str(model), folder, commit)
        model_info = {"name_or_path": str(model), "revision": revision, "commit": commit}
        model_info["image_generator"] = _weights_id(folder / "image_generator")
    pipeline = pipeline.to(device)
    resolution = pipeline.image_generator.config.stage_resolutions[-1]
    model_info["stage_resolutions"] = list(pipeline.image_generator.config.stage_resolutions)

    # 2. data and generated images
    tick = time.perf_counter()
    real, captions, dataset_info = load_captioned_images(
        dataset_name, split, num_images, resolution, image_column, caption_column
    )
    timings["load_data"] = time.perf_counter() - tick
    tick = time.perf_counter()
    fake = generate_images(pipeline, captions, seed, batch_size, truncation, progress)
    timings["generate"] = time.perf_counter() - tick

    report = {
        "report_version": REPORT_VERSION,
        "model": model_info,
        "dataset": dataset_info,
        "generation": {
            "num_images": len(captions),
            "seed": seed,
            "seeding": "image i is drawn from torch.Generator().manual_seed(seed + i)",
            "truncation": truncation,
            "batch_size": batch_size,
            "resolution": resolution,
            "device": str(device),
        },
        "metrics": {},
        "feature_extractors": {},
        "skipped": skipped,
    }
    results = report["metrics"]

    # 3. the evaluation CLIP (and the model's CLIP_FT)
    clips = {}
    fid_in = "fid" in metrics and fid_feature_extractor
    if any(m in metrics for m in ("clip_score", "r_precision", "cmd", "matcher")) or fid_in == "clip":
        from transformers import AutoTokenizer, CLIPModel

        from .eval_clip import EVAL_CLIP_REPORT_NAME, eval_clip_folder, load_eval_clip

        tick = time.perf_counter()
        if eval_clip is None and synthbirds:
            clip_model, tokenizer = load_eval_clip(cache_dir, device=device)
            folder = eval_clip_folder(cache_dir)
            clip_id = {"id": "hf-stagegan SynthBirds evaluation CLIP", **_weights_id(folder)}
            built = json.loads((folder / EVAL_CLIP_REPORT_NAME).read_text())
            clip_id["held_out_real_r_precision"] = built.get("held_out_real_r_precision")
        else:
            name = eval_clip or DEFAULT_EVAL_CLIP
            clip_model = CLIPModel.from_pretrained(name).to(device).eval()
            tokenizer = AutoTokenizer.from_pretrained(name)
            clip_id = {"id": name, **(_weights_id(name) if os.path.isdir(name) else {})}
        clips["eval_clip"] = (clip_model, tokenizer)
        report["feature_extractors"]["eval_clip"] = {**clip_id, "image_size": clip_model.config.vision_config.image_size}
        clip_ft = clip_ft if clip_ft is not None else clip_ft_path
        if clip_ft is not None:
            where = {"path": "(in memory)"}
            if isinstance(clip_ft, (str, os.PathLike)):
                where = _weights_id(clip_ft)
                clip_ft = CLIPModel.from_pretrained(clip_ft)
            clip_ft = clip_ft.to(device).eval()
            clips["clip_ft"] = (clip_ft, pipeline.tokenizer)
            report["feature_extractors"]["clip_ft"] = {
                "id": "the model's own CLIP_FT (it trained against it)", **where,
                "image_size": clip_ft.config.vision_config.image_size,
            }
        else:
            skipped["clip_ft"] = "the model folder has no clip/ (the CLIP_FT it trained with)"
        timings["load_clips"] = time.perf_counter() - tick

    embeddings = {}
    for label, (clip_model, tokenizer) in clips.items():
        if not any(m in metrics for m in ("clip_score", "r_precision", "cmd")):
            break
        tick = time.perf_counter()
        block, embeds, text = _clip_block(clip_model, tokenizer, real, fake, captions, metrics, seed, num_candidates, num_folds)
        embeddings[label] = (embeds, text)
        for name, value in block.items():
            results.setdefault(name, {})[label] = value
        timings[f"clip_metrics_{label}"] = time.perf_counter() - tick
    if "cmd" in metrics:
        (real_embeds, fake_embeds), text = embeddings["eval_clip"]
        results["cmd"] = {
            **cross_modal_distance(real_embeds, fake_embeds, text),
            "feature_extractor": "eval_clip (L2-normalised image and sentence embeddings)",
        }

    # 4. SynthBirds: the judge and the matcher
    judge = None
    if "judge" in metrics or fid_in == "judge":
        if resolution not in JUDGE_RESOLUTIONS:
            raise ValueError(f"The judge reads {JUDGE_RESOLUTIONS} px images; this model draws {resolution} px.")
        tick = time.perf_counter()
        judge = load_judge(resolution, cache_dir, device=device)
        built = judge_report(judge) or {}
        report["feature_extractors"]["judge"] = {
            "id": f"hf-stagegan SynthBirds judge {resolution}px", **_weights_id(judge.name_or_path),
            "held_out_real_accuracy": built.get("held_out_real_accuracy"),
        }
        fake_predictions, fake_features = judge_predict(judge, fake)
        real_predictions, real_features = judge_predict(judge, real)
        named = [parse_caption(caption) for caption in captions]
        floor_images, _ = synthbirds_arrays("test", len(captions), resolution, FLOOR_DATA_SEED)
        _, floor_features = judge_predict(judge, floor_images)
        fd, floor = frechet_distance(real_features, fake_features), frechet_distance(real_features, floor_features)
        if "judge" in metrics:
            results["judge"] = {
                "generated": attribute_accuracy(fake_predictions, named),
                "real": attribute_accuracy(real_predictions, named),
                "fd": fd,
                "fd_floor": floor,
                "fd_ratio": fd / floor if floor > 0 else None,
                "fd_floor_set": f"{len(captions)} SynthBirds test birds of seed {FLOOR_DATA_SEED}",
                "resolution": resolution,
            }
        timings["judge"] = time.perf_counter() - tick
    if "matcher" in metrics:
        tick = time.perf_counter()
        results["matcher"] = {
            label: part_swap_accuracy(clip_model, tokenizer, real, captions, num_swaps, seed)
            for label, (clip_model, tokenizer) in clips.items()
        }
        timings["matcher"] = time.perf_counter() - tick

    # 5. the Fréchet distance of `--fid_feature_extractor`
    if "fid" in metrics:
        tick = time.perf_counter()
        results["fid"] = _fid(
            fid_feature_extractor, real, fake, judge, clips.get("eval_clip"), inception_weights, device, embeddings
        )
        timings["fid"] = time.perf_counter() - tick

    report["packages"] = _package_versions()
    report["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    report["wall_time_s"] = round(time.perf_counter() - start_time, 2)
    return report


def _fid(extractor, real, fake, judge, eval_clip, inception_weights, device, embeddings) -> dict:
    if extractor == "inception":
        return {
            "value": inception_fid(real, fake, inception_weights, device=device),
            "feature_extractor": "inception-v3 pool3 (2048), torchmetrics FrechetInceptionDistance + torch-fidelity",
            "resolution": 299,
        }
    if extractor == "judge":
        _, real_features = judge_predict(judge, real)
        _, fake_features = judge_predict(judge, fake)
        value, size = frechet_distance(real_features, fake_features), judge.config.image_size
    elif extractor == "clip":
        (real_embeds, fake_embeds), _ = embeddings.get("eval_clip") or (
            (clip_image_embeddings(eval_clip[0], real), clip_image_embeddings(eval_clip[0], fake)), None
        )
        value, size = frechet_distance(real_embeds, fake_embeds), eval_clip[0].config.vision_config.image_size
    else:
        from transformers import CLIPModel

        clip_model = CLIPModel.from_pretrained(extractor).to(device).eval()
        value = frechet_distance(clip_image_embeddings(clip_model, real), clip_image_embeddings(clip_model, fake))
        size = clip_model.config.vision_config.image_size
    return {"value": value, "feature_extractor": extractor, "resolution": size}


def synthbirds_evaluation_models_built(resolution: int = 64, cache_dir: str | os.PathLike | None = None) -> bool:
    """Whether the cache holds what `evaluate` loads on SynthBirds at `resolution`: its judge and the evaluation CLIP."""
    from .cache import is_built
    from .eval_clip import EVAL_CLIP_REPORT_NAME, eval_clip_folder
    from .judge import JUDGE_REPORT_NAME, judge_folder

    return is_built(judge_folder(resolution, cache_dir), JUDGE_REPORT_NAME) and is_built(
        eval_clip_folder(cache_dir), EVAL_CLIP_REPORT_NAME
    )


def build_synthbirds_evaluation_models(resolution: int = 64, cache_dir: str | os.PathLike | None = None) -> None:
    """
    Builds into the cache, where missing, what `evaluate` loads on SynthBirds at `resolution`: the judge for it, then
    the evaluation CLIP (each once, on one thread; `build_judge`, `build_eval_clip`). The training script runs it in a
    second process (`cache.BackgroundBuild`) while it builds the base CLIP.
    """
    from .eval_clip import build_eval_clip
    from .judge import build_judge

    build_judge(resolution, cache_dir)
    build_eval_clip(cache_dir)


def headline_metrics(report: dict) -> list[dict]:
    """
    The report's main figures as rows `{"type", "name", "value"}` (`type` is a metric id for the Hub's model-index,
    `name` says what was measured and with what): what a model card shows.
    """
    rows, metrics = [], report.get("metrics", {})

    def add(metric_type, name, value):
        if value is not None:
            rows.append({"type": metric_type, "name": name, "value": float(value)})

    if "judge" in metrics:
        judge = metrics["judge"]
        for attribute, value in judge["generated"]["accuracy"].items():
            add(f"judge_{attribute}_accuracy", f"judge: {attribute.replace('_', ' ')} accuracy", value)
        add("judge_fd", "judge FD", judge["fd"])
        add("judge_fd_ratio", "judge FD / real-vs-real floor", judge["fd_ratio"])
    for label, clip_name in (("eval_clip", "evaluation CLIP"), ("clip_ft", "model's CLIP_FT")):
        r_precision_ = metrics.get("r_precision", {}).get(label)
        if r_precision_:
            add(f"r_precision_{label}", f"R-precision ({clip_name})", r_precision_["generated"]["mean"])
            add(f"r_precision_{label}_real", f"R-precision of real images ({clip_name})", r_precision_["real"]["mean"])
        score = metrics.get("clip_score", {}).get(label)
        if score:
            add(f"clip_score_{label}", f"CLIP score ({clip_name})", score["generated"])
    if "cmd" in metrics:
        add("cmd", "CMD (evaluation CLIP)", metrics["cmd"]["cmd"])
    if "fid" in metrics:
        fid = metrics["fid"]
        extractor = fid["feature_extractor"]
        add("fid" if extractor.startswith("inception") else f"fd_{extractor}", f"FID ({extractor})", fid["value"])
    return rows


def write_report(report: dict, path: str | os.PathLike) -> Path:
    """Writes `report` as indented JSON, atomically (a temporary file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    staging.write_text(json.dumps(report, indent=2, default=_json_default))
    staging.replace(path)
    return path


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


__all__ = [
    "METRICS",
    "build_synthbirds_evaluation_models",
    "evaluate",
    "generate_images",
    "headline_metrics",
    "load_captioned_images",
    "parse_metrics",
    "synthbirds_evaluation_models_built",
    "write_report",
]
