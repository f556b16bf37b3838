"""Sharing StageGAN checkpoints: the model card (`README.md` with Hub metadata and a sample grid), one save function
that training and `push_to_hub` share, and the upload.

Folder layout written by `save_stagegan_pipeline` (a diffusers pipeline folder plus two training-only extras):

```
model_index.json  README.md  samples.png
tokenizer/  text_encoder/  image_generator/      the pipeline: what `StageGANPipeline.from_pretrained` downloads
discriminator/                                   D1-D3, to resume training (`StageGANDiscriminator.from_pretrained(repo, subfolder="discriminator")`)
clip/                                            the full fine-tuned CLIP (text + vision), for evaluation and training
```
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import PIL.Image
import torch
from diffusers.utils import logging
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from .evaluation.protocol import headline_metrics, write_report
from .pipeline_stagegan import PICKLE_PATTERNS

logger = logging.get_logger(__name__)

SAMPLE_GRID_NAME = "samples.png"
EVALUATION_REPORT_NAME = "evaluation.json"
DEFAULT_TAGS = ["hf-stagegan", "stagegan", "gr-gan", "gan", "text-to-image"]

# `library_name: diffusers`: the repo is a diffusers-format pipeline (model_index.json + one folder per component).
# The Hub then lists it under the diffusers and text-to-image filters and counts its downloads through
# `model_index.json`, which every `from_pretrained` fetches; with an unregistered name such as "hf-stagegan" the Hub
# falls back to counting a root `config.json`, which a pipeline repo does not have. No hosted widget can run it
# (its generator class is not in diffusers), so the card's own usage snippet is the way in.
LIBRARY_NAME = "diffusers"

MODEL_CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ description }}

StageGAN is a three-level text-to-image GAN (GR-GAN, patent CN113781598B): level 1 draws a
{{ resolutions[0] }} px image from noise alone, level 2 refines it to {{ resolutions[1] }} px with the sentence vector,
level 3 to {{ resolutions[2] }} px with the word vectors. Text features come from a CLIP text encoder in the same
embedding space as the image features used in training.
{% if sample_grid %}
![Samples]({{ sample_grid }})
{% if sample_prompts and generated_grid %}
Prompts, left to right and top to bottom (seeds {{ seed }}, {{ seed + 1 }}, ...): {{ sample_prompts | join("; ") }}.
{% elif sample_prompts %}
Prompts: {{ sample_prompts | join("; ") }}.
{% endif %}{% endif %}
## Usage

```bash
pip install hf-stagegan
```

```python
import torch
from hf_stagegan import StageGANPipeline

pipe = StageGANPipeline.from_pretrained("{{ repo_id }}")
generator = torch.Generator().manual_seed(0)
image = pipe("{{ example_prompt }}", generator=generator).images[0]
image.save("bird.png")

# every level's image (x1, x2, x3)
out = pipe("{{ example_prompt }}", return_all_levels=True, generator=generator)
```

From the command line:

```bash
hf-stagegan generate "{{ example_prompt }}" --model {{ repo_id }} --num-images 4 --seed 0 --out grid.png
```

Load it with `StageGANPipeline.from_pretrained`, not `DiffusionPipeline.from_pretrained`: the generator class is
defined by the `hf-stagegan` package.

## Model

{{ model_table }}
{% if hyperparameters_table %}
## Training hyperparameters

{{ hyperparameters_table }}
{% endif %}{% if evaluation_table %}
## Evaluation

{{ evaluation_table }}
{% endif %}
## Files

{{ files_list }}
"""


def image_grid(images: Sequence[PIL.Image.Image], cols: int | None = None) -> PIL.Image.Image:
    """
    Pastes `images` (all the same size) into one grid, row by row, `cols` per row (default: ceil(sqrt(n))). Empty
    cells of the last row stay black.
    """
    if not images:
        raise ValueError("`images` must contain at least one image, got an empty sequence.")
    cols = cols or math.ceil(math.sqrt(len(images)))
    if cols < 1:
        raise ValueError(f"`cols` must be >= 1, got {cols}.")
    width, height = images[0].size
    for index, image in enumerate(images):
        if image.size != (width, height):
            raise ValueError(f"`images[{index}]` is {image.size}, but `images[0]` is {(width, height)}.")
    rows = math.ceil(len(images) / cols)
    grid = PIL.Image.new("RGB", (cols * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((index % cols) * width, (index // cols) * height))
    return grid


def _table(rows: Mapping[str, object], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {_format_value(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


def _format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _report_results(report: Mapping) -> tuple[dict[str, float], list[EvalResult]]:
    """A `hf-stagegan evaluate` report -> (table rows, model-index results on the report's dataset and split)."""
    rows = headline_metrics(dict(report))
    dataset = report.get("dataset", {})
    dataset_id = dataset.get("name") or "unknown"
    num_images = report.get("generation", {}).get("num_images")
    results = [
        EvalResult(
            task_type="text-to-image",
            dataset_type=dataset_id,
            dataset_name="SynthBirds" if dataset_id == "synthbirds" else dataset_id,
            dataset_split=dataset.get("split"),
            metric_type=row["type"],
            metric_name=row["name"],
            metric_value=row["value"],
            metric_config=f"{num_images} images" if num_images else None,
        )
        for row in rows
    ]
    return {row["name"]: row["value"] for row in rows}, results


def _evaluation_table(evaluation: Mapping[str, float], report: Mapping | None) -> str:
    table = _table(dict(evaluation), ("metric", "value"))
    if report is None:
        return table
    dataset, generation = report.get("dataset", {}), report.get("generation", {})
    return (
        f"`hf-stagegan evaluate` on {generation.get('num_images')} held-out captions of {dataset.get('name')} "
        f"(split `{dataset.get('split')}`), one image each, seeds {generation.get('seed')}, "
        f"{generation.get('seed')} + 1, ...; every setting, and the figures on real images to read these against, "
        f"are in [`{EVALUATION_REPORT_NAME}`]({EVALUATION_REPORT_NAME}).\n\n{table}"
    )


def _model_rows(pipeline) -> dict[str, object]:
    if pipeline is None:
        return {}
    config = pipeline.image_generator.config
    text_config = pipeline.text_encoder.config
    rows = {
        "stage resolutions": " -> ".join(f"{side} px" for side in config.stage_resolutions),
        "text fusion": config.fusion_type,
        "noise size (z_dim)": config.z_dim,
        "generator channels": config.generator_channels,
        "generator parameters": f"{pipeline.image_generator.num_parameters() / 1e6:.2f} M",
        "text encoder": (
            f"CLIP text tower, {text_config.num_hidden_layers} layers, hidden {text_config.hidden_size}, "
            f"projection {text_config.projection_dim}"
        ),
        "text encoder parameters": f"{pipeline.text_encoder.num_parameters() / 1e6:.2f} M",
        "max prompt length": f"{pipeline.tokenizer.model_max_length} tokens",
    }
    return rows


def write_model_card(
    folder: str | os.PathLike,
    *,
    pipeline=None,
    repo_id: str | None = None,
    model_name: str | None = None,
    description: str | None = None,
    license: str = "apache-2.0",
    datasets: str | list[str] | None = None,
    base_model: str | list[str] | None = None,
    tags: list[str] | None = None,
    hyperparameters: Mapping[str, object] | None = None,
    evaluation: Mapping[str, float] | None = None,
    evaluation_report: Mapping | None = None,
    sample_grid: PIL.Image.Image | None = None,
    sample_prompts: Sequence[str] | None = None,
    seed: int = 0,
) -> ModelCard:
    r"""
    Writes `README.md` (and the sample grid `samples.png`) into `folder` and returns the `ModelCard`.

    Args:
        folder: the saved pipeline folder (the card lists the sub-folders it finds there).
        pipeline ([`StageGANPipeline`], *optional*): gives the model table and, with `sample_prompts`, the samples.
        repo_id (`str`, *optional*): the Hub id used in the usage snippets (defaults to the folder's name).
        model_name, description: the card's title and first paragraph.
        license (`str`, defaults to `"apache-2.0"`), datasets, base_model (the CLIP that was fine-tuned), tags: Hub
            metadata; `tags` are added to `hf-stagegan, stagegan, gr-gan, gan, text-to-image`.
        hyperparameters (`Mapping`, *optional*): training hyperparameters, one table row each.
        evaluation (`Mapping[str, float]`, *optional*): metric name -> value (e.g. `{"fid": 23.1, "clip_score":
            0.31}`); a table, and `model-index` results in the metadata when `datasets` is given.
        evaluation_report (`Mapping`, *optional*): a report of `hf_stagegan.evaluation.evaluate` (`hf-stagegan
            evaluate`): its main figures (`headline_metrics`) become the table and the `model-index` results, on the
            report's own dataset and split; the report itself is saved beside the card as `evaluation.json`.
        sample_grid (`PIL.Image.Image`, *optional*): saved as `samples.png` and shown in the card.
        sample_prompts (`Sequence[str]`, *optional*): listed under the grid; without `sample_grid`, `pipeline`
            draws one image per prompt (image `i` from seed `seed + i`) to make it.
        seed (`int`, defaults to 0): first seed of the generated samples.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    repo_id = repo_id or folder.resolve().name
    model_name = model_name or repo_id.split("/")[-1]
    sample_prompts = list(sample_prompts) if sample_prompts else None

    generated_grid = sample_grid is None and bool(sample_prompts) and pipeline is not None
    if generated_grid:
        generators = [torch.Generator().manual_seed(seed + index) for index in range(len(sample_prompts))]
        sample_grid = image_grid(pipeline(sample_prompts, generator=generators).images)
    if sample_grid is not None:
        sample_grid.save(folder / SAMPLE_GRID_NAME)

    datasets = [datasets] if isinstance(datasets, str) else datasets
    eval_results = None
    if evaluation_report is not None:
        evaluation, eval_results = _report_results(evaluation_report)
        write_report(dict(evaluation_report), folder / EVALUATION_REPORT_NAME)
    elif evaluation and datasets:
        eval_results = [
            EvalResult(
                task_type="text-to-image",
                dataset_type=datasets[0],
                dataset_name=datasets[0],
                metric_type=name,
                metric_value=float(value),
            )
            for name, value in evaluation.items()
        ]
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag="text-to-image",
        license=license,
        datasets=datasets,
        base_model=base_model,
        tags=DEFAULT_TAGS + [tag for tag in (tags or []) if tag not in DEFAULT_TAGS],
        model_name=model_name,
        eval_results=eval_results,
    )

    resolutions = list(pipeline.image_generator.config.stage_resolutions) if pipeline is not None else [64, 128, 256]
    files = {
        "model_index.json": "the pipeline's component index",
        "tokenizer": "CLIP tokenizer",
        "text_encoder": "CLIP text encoder with projection (safetensors)",
        "image_generator": "the three-level StageGAN generator (safetensors)",
        "discriminator": 'D1-D3, for resuming training: `StageGANDiscriminator.from_pretrained(repo, subfolder="discriminator")`',
        "clip": "the full fine-tuned CLIP (text + vision) used by the training losses",
        SAMPLE_GRID_NAME: "the sample grid above",
        EVALUATION_REPORT_NAME: "the evaluation report (`hf-stagegan evaluate`): every setting and figure",
    }
    files_list = "\n".join(f"- `{name}`: {what}" for name, what in files.items() if (folder / name).exists())

    card = ModelCard.from_template(
        card_data,
        template_str=MODEL_CARD_TEMPLATE,
        model_name=model_name,
        description=description or f"A StageGAN text-to-image model, `{repo_id}`.",
        repo_id=repo_id,
        resolutions=resolutions,
        example_prompt=(sample_prompts or ["this bird has a red body and black wings"])[0].replace('"', "'"),
        sample_grid=SAMPLE_GRID_NAME if sample_grid is not None else None,
        sample_prompts=sample_prompts,
        generated_grid=generated_grid,
        seed=seed,
        model_table=_table(_model_rows(pipeline), ("property", "value"))
        if pipeline is not None
        else "See `image_generator/config.json`.",
        hyperparameters_table=_table(dict(hyperparameters), ("hyperparameter", "value")) if hyperparameters else None,
        evaluation_table=_evaluation_table(evaluation, evaluation_report) if evaluation else None,
        files_list=files_list,
    )
    card.save(folder / "README.md")
    return card


def save_stagegan_pipeline(
    output_dir: str | os.PathLike,
    pipeline,
    *,
    discriminator=None,
    clip_model=None,
    **card_kwargs,
) -> ModelCard:
    r"""
    Saves everything a training run shares, in one folder that `StageGANPipeline.from_pretrained` loads: the pipeline
    (safetensors), optionally the discriminator (`discriminator/`) and the full fine-tuned CLIP (`clip/`), and the
    model card with its sample grid. Returns the card.

    Args:
        output_dir: the folder (created if needed).
        pipeline ([`StageGANPipeline`]): tokenizer, text encoder and (EMA) generator.
        discriminator ([`StageGANDiscriminator`], *optional*): D1-D3, saved to `discriminator/`.
        clip_model ([`~transformers.CLIPModel`], *optional*): the whole fine-tuned CLIP, saved to `clip/`.
        card_kwargs: passed to [`write_model_card`] (`repo_id`, `license`, `datasets`, `base_model`, `tags`,
            `hyperparameters`, `evaluation`, `evaluation_report`, `sample_grid`, `sample_prompts`, `seed`,
            `model_name`, `description`).

    Example:

    ```python
    >>> save_stagegan_pipeline(
    ...     "out", pipeline, discriminator=discriminator, clip_model=clip_model, repo_id="org/stagegan-cub",
    ...     datasets=["org/cub-captions"], hyperparameters={"batch_size": 8, "generator_lr": 2e-4},
    ...     evaluation={"fid": 23.1}, sample_prompts=["a red bird", "a blue bird"],
    ... )
    >>> push_folder_to_hub("out", "org/stagegan-cub")
    ```
    """
    output_dir = Path(output_dir)
    pipeline.save_pretrained(output_dir)
    if discriminator is not None:
        discriminator.save_pretrained(output_dir / "discriminator")
    if clip_model is not None:
        clip_model.save_pretrained(output_dir / "clip")
    return write_model_card(output_dir, pipeline=pipeline, **card_kwargs)


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    commit_message: str = "Upload StageGANPipeline",
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    ignore_patterns: list[str] | None = None,
):
    """
    Creates `repo_id` if needed and uploads `folder` in one commit; returns the `huggingface_hub.CommitInfo`. Pickled
    weight files (`*.bin`, `*.pt`, ...) are never uploaded; `ignore_patterns` adds more (e.g. `["checkpoint-*"]`).
    """
    api = HfApi(token=token, library_name="hf-stagegan")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message,
        create_pr=create_pr,
        ignore_patterns=PICKLE_PATTERNS + list(ignore_patterns or []),
    )


__all__ = ["image_grid", "push_folder_to_hub", "save_stagegan_pipeline", "write_model_card"]
