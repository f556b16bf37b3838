"""Hub plumbing of StageGAN: loading a pipeline from the Hub or the HF cache (with checks of what a folder names and
holds), saving and pushing it with its model card (`README.md` with Hub metadata and a sample grid), one save function
that training and `push_to_hub` share, and the upload.

`StageGANPipeline` takes its `download`, `from_pretrained`, `save_pretrained` and `push_to_hub` from
[`StageGANPipelineHubMixin`], so that `pipeline_stagegan.py` holds only the inference code.

Folder layout written by `save_stagegan_pipeline` (a diffusers pipeline folder plus two training-only extras):

```
model_index.json  README.md  samples.png
tokenizer/  text_encoder/  image_generator/      the pipeline: what `StageGANPipeline.from_pretrained` downloads
discriminator/                                   D1-D3, to resume training (`StageGANDiscriminator.from_pretrained(repo, subfolder="discriminator")`)
clip/                                            the full fine-tuned CLIP (text + vision), for evaluation and training
```
"""

from __future__ import annotations

import inspect
import json
import math
import os
import tempfile
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

import PIL.Image
import torch
from diffusers.utils import logging
from huggingface_hub import (
    EvalResult,
    HfApi,
    ModelCard,
    ModelCardData,
    hf_hub_download,
    is_offline_mode,
    snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from huggingface_hub.file_download import REGEX_COMMIT_HASH
from huggingface_hub.utils import validate_hf_hub_args

from .evaluation.protocol import headline_metrics, write_report

logger = logging.get_logger(__name__)

# Weight formats that are unpickled when read: never downloaded, never written (safetensors only).
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.msgpack", "*.h5", "*.onnx", "*.pb"]

MODEL_INDEX_NAME = "model_index.json"  # diffusers' `DiffusionPipeline.config_name`


# ---------------------------------------------------------------------------------------------------------------------
# Loading: what `model_index.json` may name, complete weight files, the download


def _library_of(component_class: type) -> str:
    """The library `model_index.json` records for a class, as diffusers' `register_modules` writes it."""
    module = component_class.__module__
    top = module.split(".")[0]
    return top if top in ("transformers", "diffusers") else module


def _classes_of(annotation) -> list[type]:
    """The classes an `__init__` annotation names: `A` -> [A], `A | B | None` -> [A, B]."""
    members = typing.get_args(annotation) or (annotation,)
    return [member for member in members if isinstance(member, type) and member is not type(None)]


def check_model_index(pipeline_class, model_index: dict, source: str) -> None:
    r"""
    Refuses a `model_index.json` that names anything `pipeline_class` does not take, before diffusers imports it.

    diffusers imports every `[library, class]` the index names and calls `from_pretrained` on it, and loads the
    pipeline class itself from a `.py` file in the folder when `_class_name` is a `[module, class]` pair. Accepted here:
    a string `_class_name`, and for each of the pipeline's components exactly the `[library, class]` that saving it
    records (from the `__init__` annotations), or `[null, null]` for a component saved as `None`.

    Raises:
        `ValueError` naming the entry, its value and what was expected.
    """
    where = f"`{MODEL_INDEX_NAME}` of {source!r}"
    class_name = model_index.get("_class_name")
    if not isinstance(class_name, str):
        raise ValueError(
            f"{where}: `_class_name` must be the name of a pipeline class such as {pipeline_class.__name__!r}, got "
            f"{class_name!r} (a [module, class] pair would load pipeline code from the folder)."
        )
    annotations = typing.get_type_hints(pipeline_class.__init__)
    accepted = {
        name: [[_library_of(cls), cls.__name__] for cls in _classes_of(annotations.get(name))]
        for name in inspect.signature(pipeline_class.__init__).parameters
        if name != "self"
    }
    for name, value in model_index.items():
        if name.startswith("_"):
            continue
        if name not in accepted:
            raise ValueError(
                f"{where} names a component {name!r} ({value!r}) that {pipeline_class.__name__} does not take; "
                f"its components are {list(accepted)}."
            )
        if value != [None, None] and value not in accepted[name]:
            choices = " or ".join(json.dumps(pair) for pair in accepted[name])
            raise ValueError(
                f"{where}: entry {name!r} is {json.dumps(value)}, but {pipeline_class.__name__} takes {choices} "
                "there (or [null, null] for no component)."
            )


def components_to_load(model_index: dict, passed: Mapping[str, object]) -> list[str]:
    """The component folders `from_pretrained` reads: those the index names (not `null`), minus those passed in."""
    return [
        name
        for name, value in model_index.items()
        if not name.startswith("_") and isinstance(value, list) and value[0] is not None and name not in passed
    ]


def _safetensors_problem(path: Path) -> str | None:
    """What makes `path` an incomplete safetensors file (reading only its header), or None when it is complete."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)  # little-endian u64: the length of the JSON header that follows
        if len(prefix) < 8:
            return f"it has {size} bytes, fewer than the 8 that give the length of its header"
        header_size = int.from_bytes(prefix, "little")
        if 8 + header_size > size:
            return f"its first 8 bytes announce a header of {header_size} bytes, but the file has only {size} bytes"
        try:
            header = json.loads(f.read(header_size))
            data_size = max(
                (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"), default=0
            )
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as error:
            return f"its header is not safetensors metadata ({type(error).__name__}: {error})"
    expected = 8 + header_size + data_size
    if size != expected:
        return f"its header describes {expected} bytes, but the file has {size}"
    return None


class IncompleteWeightsError(OSError):
    """A safetensors file cut short or damaged. `path` names it; `downloaded` is True for a file of a Hub snapshot."""

    def __init__(self, message: str, path: str, downloaded: bool):
        super().__init__(message)
        self.path = path
        self.downloaded = downloaded


def check_safetensors_files(folder: str | os.PathLike, subfolders: Sequence[str], downloaded: bool) -> None:
    r"""
    Raises [`IncompleteWeightsError`] (an `OSError`) naming the first `*.safetensors` file in `folder/<subfolder>` that
    is cut short or damaged (an interrupted download or copy, a full disk), and how to get a good copy. Reads only the
    files' headers.

    Args:
        downloaded (`bool`): the folder is a Hub snapshot in the HF cache (the fix is to download again) rather than
            a folder the user saved.
    """
    for subfolder in subfolders:
        for path in sorted(Path(folder, subfolder).glob("*.safetensors")):
            problem = _safetensors_problem(path)
            if problem is None:
                continue
            stored = path.resolve()  # in the HF cache, snapshot files are links to blobs
            name = f"`{path}`" + (f" (the cached file `{stored}`)" if stored != path.absolute() else "")
            if downloaded:
                fix = f"delete `{stored}` and load again, or load with `force_download=True` to download it again"
            else:
                fix = "save the model there again, or delete the folder and download it again"
            raise IncompleteWeightsError(
                f"{name} is not a complete safetensors file: {problem}. It was cut short or damaged (an interrupted "
                f"download or copy, a full disk): {fix}.",
                path=str(path),
                downloaded=downloaded,
            )


def _read_model_index(path: Path) -> dict:
    try:
        model_index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise OSError(f"Cannot read `{path}` as JSON ({error}); the folder is not a complete pipeline.") from error
    if not isinstance(model_index, dict):
        raise ValueError(f"`{path}` must hold a JSON object, got {type(model_index).__name__}.")
    return model_index


class StageGANPipelineHubMixin:
    r"""
    The Hub side of [`StageGANPipeline`]: `download` and `from_pretrained` with checks of the files, `save_pretrained`
    (safetensors only) and `push_to_hub` with the StageGAN model card. Mixed in before `DiffusionPipeline`.
    """

    @classmethod
    @validate_hf_hub_args
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        r"""
        Downloads (or finds in the HF cache) the files of a StageGAN pipeline repo and returns the snapshot folder.

        `DiffusionPipeline.download` (diffusers 0.42) rejects our repos whenever it knows the repo's file list, that is
        online (`model_info`) or offline once `snapshot_download` has cached `trees/<commit>.json`: in
        `_get_custom_components_and_folders` (`pipelines/pipeline_loading_utils.py`) every component whose library
        (`model_index.json`'s `["hf_stagegan.modeling_stagegan", "StageGANGenerator"]`) is neither a diffusers
        library nor a diffusers pipeline module must ship as a remote-code file `image_generator/<library>.py`,
        otherwise `ValueError: ... does not exist in <repo> and is not a module in 'diffusers/pipelines'`. Our
        component is installed code, so that file never exists. Loading itself is fine: diffusers resolves an
        imported module from `sys.modules`.

        This override fetches `model_index.json`, checks it (see [`check_model_index`]), then fetches exactly the
        component folders `from_pretrained` reads (every component it lists, minus components passed to
        `from_pretrained`, `None` included), without pickled weight formats, all pinned to the commit of
        `model_index.json`, and checks that their safetensors files are complete. Offline (`HF_HUB_OFFLINE=1` or
        `local_files_only=True`) the real `huggingface_hub` code serves them from the cache, and checks the snapshot is
        complete when a tree listing is cached.

        Args:
            pretrained_model_name (`str`): a Hub repo id, `"org/name"`.
            cache_dir, revision, token, local_files_only, force_download: as in `DiffusionPipeline.from_pretrained`.
        """
        cache_dir = kwargs.pop("cache_dir", None)
        revision = kwargs.pop("revision", None)
        token = kwargs.pop("token", None)
        # offline, say so to huggingface_hub: an incomplete snapshot is then reported with the missing files' names
        local_files_only = bool(kwargs.pop("local_files_only", False)) or is_offline_mode()
        force_download = kwargs.pop("force_download", False)
        if kwargs.pop("use_safetensors", None) is False:
            raise ValueError("`use_safetensors=False` is not supported: StageGAN checkpoints are safetensors only.")
        if kwargs.pop("custom_pipeline", None) is not None:
            raise ValueError("`custom_pipeline` is not supported by StageGANPipeline; load the repo without it.")
        for ignored in ("proxies", "use_onnx", "custom_revision", "variant", "load_connected_pipeline"):
            kwargs.pop(ignored, None)
        kwargs.pop("trust_remote_code", None)  # nothing remote is ever imported

        config_file = hf_hub_download(
            pretrained_model_name,
            MODEL_INDEX_NAME,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        commit = Path(config_file).parent.name
        if REGEX_COMMIT_HASH.fullmatch(commit):
            revision = commit  # the components come from the same commit as model_index.json

        model_index = _read_model_index(Path(config_file))
        check_model_index(cls, model_index, pretrained_model_name)
        folders = components_to_load(model_index, passed=kwargs)
        snapshot = snapshot_download(
            pretrained_model_name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=local_files_only,
            force_download=force_download,
            allow_patterns=[MODEL_INDEX_NAME] + [f"{folder}/*" for folder in folders],
            ignore_patterns=PICKLE_PATTERNS,
            user_agent={"pipeline_class": cls.__name__},
        )
        check_safetensors_files(snapshot, folders, downloaded=True)
        return snapshot

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        r"""
        `DiffusionPipeline.from_pretrained` (a Hub id or a local folder, all its arguments), after checking what the
        folder's `model_index.json` names (see [`check_model_index`]) and that the safetensors files of the components
        to load are complete: a bad folder is refused with an error naming the entry or the file, before anything it
        names is imported or read. Hub ids are checked in [`download`].
        """
        folder = Path(pretrained_model_name_or_path)
        if folder.is_dir() and (folder / MODEL_INDEX_NAME).is_file():
            model_index = _read_model_index(folder / MODEL_INDEX_NAME)
            check_model_index(cls, model_index, str(pretrained_model_name_or_path))
            check_safetensors_files(folder, components_to_load(model_index, passed=kwargs), downloaded=False)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ):
        r"""
        Saves the three components (safetensors only) and `model_index.json` into `save_directory`. With
        `push_to_hub=True` it also writes the StageGAN model card and uploads the folder, as [`push_to_hub`] does;
        `repo_id`, `commit_message`, `private`, `token`, `create_pr` and model-card arguments (see
        [`write_model_card`]) go in `kwargs`.
        """
        if not safe_serialization:
            raise ValueError("`safe_serialization=False` is not supported: StageGAN checkpoints are safetensors only.")
        super().save_pretrained(
            save_directory, safe_serialization=True, variant=variant, max_shard_size=max_shard_size
        )
        if push_to_hub:
            repo_id = kwargs.pop("repo_id", Path(save_directory).name)
            upload_kwargs = {
                key: kwargs.pop(key) for key in ("commit_message", "private", "token", "create_pr") if key in kwargs
            }
            write_model_card(save_directory, pipeline=self, repo_id=repo_id, **kwargs)
            return push_folder_to_hub(
                save_directory, repo_id, **{"commit_message": f"Upload {type(self).__name__}", **upload_kwargs}
            )

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        variant: str | None = None,
        **card_kwargs,
    ):
        r"""
        Uploads the pipeline (safetensors weights, configs, tokenizer) with a generated model card to `repo_id`, in one
        commit. Returns the `huggingface_hub.CommitInfo` of that commit.

        Args:
            repo_id (`str`): the Hub repo, `"org/name"`; created if it does not exist.
            commit_message (`str`, *optional*, defaults to `"Upload StageGANPipeline"`).
            private, token, create_pr: as in `huggingface_hub.HfApi.upload_folder`.
            card_kwargs: model card contents (license, datasets, hyperparameters, evaluation, sample prompts...),
                see [`write_model_card`].
        """
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, variant=variant)
            write_model_card(folder, pipeline=self, repo_id=repo_id, **card_kwargs)
            return push_folder_to_hub(
                folder,
                repo_id,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                private=private,
                token=token,
                create_pr=create_pr,
            )


# ---------------------------------------------------------------------------------------------------------------------
# The model card, the training save, the upload

SAMPLE_GRID_NAME = "samples.png"
LEVEL_GRID_NAME = "levels.png"
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
{% endif %}{% endif %}{% if level_grid %}
The same images at every level, top to bottom x1 ({{ resolutions[0] }} px, noise only), x2 ({{ resolutions[1] }} px,
sentence) and x3 ({{ resolutions[2] }} px, words), each shown at {{ resolutions[2] }} px:

![Levels]({{ level_grid }})
{% endif %}
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


def level_rows(levels: Sequence[Sequence[PIL.Image.Image]], columns: int) -> PIL.Image.Image:
    """
    One row per level (x1, x2, x3) of the first `columns` images, every image resized (nearest neighbour, so the
    pixels of the small levels stay visible) to the last level's size.
    """
    size = levels[-1][0].size
    rows = [image.resize(size, PIL.Image.NEAREST) for level in levels for image in list(level)[:columns]]
    return image_grid(rows, cols=columns)


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
    if pipeline is None or pipeline.image_generator is None:
        return {}
    config = pipeline.image_generator.config
    rows = {
        "stage resolutions": " -> ".join(f"{side} px" for side in config.stage_resolutions),
        "text fusion": config.fusion_type,
        "noise size (z_dim)": config.z_dim,
        "generator channels": config.generator_channels,
        "generator parameters": f"{pipeline.image_generator.num_parameters() / 1e6:.2f} M",
    }
    if pipeline.text_encoder is not None:
        text_config = pipeline.text_encoder.config
        rows["text encoder"] = (
            f"CLIP text tower, {text_config.num_hidden_layers} layers, hidden {text_config.hidden_size}, "
            f"projection {text_config.projection_dim}"
        )
        rows["text encoder parameters"] = f"{pipeline.text_encoder.num_parameters() / 1e6:.2f} M"
    if pipeline.tokenizer is not None:
        rows["max prompt length"] = f"{pipeline.tokenizer.model_max_length} tokens"
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
        sample_prompts (`Sequence[str]`, *optional*): listed under the grid and in the metadata's `widget` (the
            example prompts of the Hub page and of `hf-stagegan demo`); with `pipeline`, one image per prompt (image
            `i` from seed `seed + i`) is drawn at every level into `levels.png`, and, without `sample_grid`, its
            final images make the sample grid.
        seed (`int`, defaults to 0): first seed of the generated samples.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    repo_id = repo_id or folder.resolve().name
    model_name = model_name or repo_id.split("/")[-1]
    sample_prompts = list(sample_prompts) if sample_prompts else None

    generated_grid = sample_grid is None and bool(sample_prompts) and pipeline is not None
    level_grid = None
    if sample_prompts and pipeline is not None:
        # the prompts at every level (levels.png), and the sample grid from the same images unless the caller gave one
        generators = [torch.Generator().manual_seed(seed + index) for index in range(len(sample_prompts))]
        final, levels = pipeline(sample_prompts, generator=generators, return_all_levels=True, return_dict=False)
        if generated_grid:
            sample_grid = image_grid(final)
        level_grid = level_rows(levels, columns=min(len(sample_prompts), 8))
        level_grid.save(folder / LEVEL_GRID_NAME)
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
        widget=[{"text": prompt} for prompt in sample_prompts] if sample_prompts else None,
    )

    has_generator = pipeline is not None and pipeline.image_generator is not None
    resolutions = list(pipeline.image_generator.config.stage_resolutions) if has_generator else [64, 128, 256]
    files = {
        "model_index.json": "the pipeline's component index",
        "tokenizer": "CLIP tokenizer",
        "text_encoder": "CLIP text encoder with projection (safetensors)",
        "image_generator": "the three-level StageGAN generator (safetensors)",
        "discriminator": 'D1-D3, for resuming training: `StageGANDiscriminator.from_pretrained(repo, subfolder="discriminator")`',
        "clip": "the full fine-tuned CLIP (text + vision) used by the training losses",
        SAMPLE_GRID_NAME: "the sample grid above",
        LEVEL_GRID_NAME: "the same samples at every level (x1, x2, x3)",
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
        level_grid=LEVEL_GRID_NAME if level_grid is not None else None,
        sample_prompts=sample_prompts,
        generated_grid=generated_grid,
        seed=seed,
        model_table=_table(_model_rows(pipeline), ("property", "value"))
        if has_generator
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
    repo_type: str = "model",
):
    """
    Creates `repo_id` (a `repo_type` "model" or "dataset" repository) if needed and uploads `folder` in one commit;
    returns the `huggingface_hub.CommitInfo`. Pickled weight files (`*.bin`, `*.pt`, ...) are never uploaded;
    `ignore_patterns` adds more (e.g. `["checkpoint-*"]`).
    """
    api = HfApi(token=token, library_name="hf-stagegan")
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type).repo_id
    return api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message,
        create_pr=create_pr,
        ignore_patterns=PICKLE_PATTERNS + list(ignore_patterns or []),
        repo_type=repo_type,
    )


def card_sample_prompts(
    pretrained_model_name_or_path: str | os.PathLike,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | None = None,
) -> list[str]:
    r"""
    The sample prompts of a pipeline's model card (the `text` of each `widget` entry that [`write_model_card`] writes
    from `sample_prompts`, typically training captions), from a local folder or a Hub repo. An empty list when the
    folder or repo has no card (offline: when the card is not in the HF cache) or the card has no widget prompts.
    """
    folder = Path(pretrained_model_name_or_path)
    if folder.is_dir():
        card_path = folder / "README.md"
        if not card_path.is_file():
            return []
    else:
        try:
            card_path = hf_hub_download(
                str(pretrained_model_name_or_path),
                "README.md",
                revision=revision,
                cache_dir=cache_dir,
                token=token,
                local_files_only=is_offline_mode(),
            )
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return []
    widget = ModelCard.load(card_path).data.to_dict().get("widget") or []
    return [entry["text"] for entry in widget if isinstance(entry, dict) and isinstance(entry.get("text"), str)]


__all__ = [
    "IncompleteWeightsError",
    "StageGANPipelineHubMixin",
    "card_sample_prompts",
    "check_model_index",
    "check_safetensors_files",
    "image_grid",
    "push_folder_to_hub",
    "save_stagegan_pipeline",
    "write_model_card",
]
