"""`hf-stagegan export-space`: a folder that, pushed as a Gradio Space, serves the demo of a StageGAN model on the Hub.

```bash
hf-stagegan export-space --model org/stagegan-cub --output_dir space/
hf upload org/stagegan-cub-demo space/ --repo-type space      # or push the folder to the Space's git repo
```

The folder holds `app.py` (loads the model with `hf_stagegan.demo.load_demo` and launches it; Spaces set the host and
port through `GRADIO_SERVER_NAME` / `GRADIO_SERVER_PORT`), `requirements.txt` (hf-stagegan with its `demo` extra; the
Space installs it before starting `app.py`) and `README.md`, whose metadata makes it a Gradio Space linked to the model.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from . import __version__

# the Gradio release the demo was written and tested against; used when Gradio is not installed here
TESTED_GRADIO_VERSION = "6.31.0"

APP_TEMPLATE = '''"""The Space of {model_id}: the hf-stagegan demo (written by `hf-stagegan export-space`)."""

from hf_stagegan.demo import load_demo

# the pipeline is downloaded, loaded and run once before the server starts
demo = load_demo({model_id!r}, revision={revision!r})

if __name__ == "__main__":
    demo.launch()
'''

README_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A demo of [{{ model_id }}](https://huggingface.co/{{ model_id }}), a StageGAN text-to-image model (GR-GAN, patent
CN113781598B): type a prompt, get images, and see the three levels of each (noise only, + the sentence, + the words).

Run it locally:

```bash
pip install -r requirements.txt
python app.py
```

Written by `hf-stagegan export-space --model {{ model_id }}`.
"""


def export_space(
    model_id: str,
    output_dir: str | os.PathLike,
    *,
    revision: str | None = None,
    title: str | None = None,
    requirement: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    r"""
    Writes `app.py`, `requirements.txt` and `README.md` into `output_dir` and returns their paths.

    Args:
        model_id (`str`): the Hub repo of the pipeline, `"org/name"` (a Space loads its model from the Hub: push a
            local folder first with `StageGANPipeline.push_to_hub`).
        revision (`str`, *optional*): a branch, tag or commit to pin the model to.
        title (`str`, *optional*): the Space's title, default `"StageGAN <name>"`.
        requirement (`str`, *optional*): the pip requirement that installs hf-stagegan on the Space, default
            `"hf-stagegan[demo]==<this version>"`; e.g. a `git+https://...` URL for an unreleased version.
        overwrite (`bool`, defaults to `False`): replace those files when `output_dir` already has them.

    Raises:
        `ValueError` when `model_id` is not a Hub repo id; `FileExistsError` when a file would be replaced without
        `overwrite`.
    """
    if Path(model_id).is_dir():
        raise ValueError(
            f"`model_id` must be a Hub repo id, got the local folder {model_id!r}: a Space loads its model from the "
            "Hub. Push it first (`StageGANPipeline.from_pretrained(folder).push_to_hub('org/name')`) and pass 'org/name'."
        )
    try:
        validate_repo_id(model_id)
    except HFValidationError as error:
        raise ValueError(
            f"`model_id` must be a Hub repo id such as 'org/stagegan-cub', got {model_id!r}: {error}"
        ) from error

    output_dir = Path(output_dir)
    files = {
        "app.py": APP_TEMPLATE.format(model_id=model_id, revision=revision),
        "requirements.txt": (
            "# installed by the Space before it runs app.py (Gradio itself comes from sdk_version in README.md)\n"
            f"{requirement or f'hf-stagegan[demo]=={__version__}'}\n"
        ),
        "README.md": _space_card(model_id, title).content + "\n",
    }
    existing = [name for name in files if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{str(output_dir)!r} already has {existing}; pass `overwrite=True` (--overwrite) to replace them."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        (output_dir / name).write_text(text, encoding="utf-8")
        written.append(output_dir / name)
    return written


def _space_card(model_id: str, title: str | None) -> SpaceCard:
    try:
        gradio_version = importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        gradio_version = TESTED_GRADIO_VERSION
    title = title or f"StageGAN {model_id.split('/')[-1]}"
    card_data = SpaceCardData(
        title=title,
        sdk="gradio",
        sdk_version=gradio_version,
        app_file="app.py",
        license="apache-2.0",
        models=[model_id],  # links the Space and the model on both pages
        tags=["hf-stagegan", "stagegan", "text-to-image", "gan"],
        emoji="🐦",
        colorFrom="indigo",
        colorTo="green",
        pinned=False,
        short_description="Text-to-image with a three-level GAN (StageGAN)",
    )
    return SpaceCard.from_template(card_data, template_str=README_TEMPLATE, title=title, model_id=model_id)


__all__ = ["export_space"]
