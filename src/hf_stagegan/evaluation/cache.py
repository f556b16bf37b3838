"""Where the evaluation models (the SynthBirds judge, the offline evaluation CLIP) are kept once built.

`evaluation_cache_dir()` is, in order: the `cache_dir` argument, `$HF_STAGEGAN_CACHE`, or `$HF_HOME/hf_stagegan`
(`~/.cache/huggingface/hf_stagegan` by default), so that deleting the HF cache removes them too. Each model lives in
its own folder named by its recipe (`judge-v1-64px`, ...), written by `build_atomically`: into a hidden folder
beside it, renamed into place when complete, so an interrupted build never leaves half a model to be loaded.

Builds run on `BUILD_THREADS` (one) CPU thread whatever the machine has: how a CPU matmul or convolution splits its sums
over threads changes the last bits of every step, and a few hundred training steps turn that into another model
(the 64 px judge built on two threads scores the same generated images 5 points apart). On one thread the same
recipe gives the same weights, bit for bit, on this machine whatever its core count (checked: sha256 of the 64 px
judge, a fresh build against the one the documented figures used). Other CPU types or torch versions may still differ:
every report records the sha256 of the models it used.
"""

from __future__ import annotations

import inspect
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import constants


def evaluation_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds the built evaluation models (module docstring)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_STAGEGAN_CACHE"):
        return Path(os.environ["HF_STAGEGAN_CACHE"]).expanduser()
    return Path(constants.HF_HOME).expanduser() / "hf_stagegan"


BUILD_THREADS = 1


def build_atomically(
    folder: Path, build: Callable[[Path], None], complete_marker: str, overwrite: bool = False
) -> Path:
    """
    Runs `build(staging_folder)` on `BUILD_THREADS` CPU threads (module docstring; the caller's thread count is
    restored afterwards) with the caller's torch random state set aside and restored (a build seeds torch's global
    generator, and a training run that builds the judge on a fresh machine must draw the same weights as one that finds
    it cached), and renames the staging folder to `folder`; returns `folder`. If another process
    finished the same build first (its `complete_marker` file is there), its copy is kept and ours is dropped. With
    `overwrite`, an existing `folder` is replaced, but only once the new build has succeeded: a failed rebuild leaves
    the old copy in place.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.partial")
    retired = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.old")
    staging.mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        with torch.random.fork_rng(devices=[]):
            build(staging)
        if overwrite and folder.exists():
            folder.rename(retired)
        try:
            staging.rename(folder)
        except OSError:
            if not (folder / complete_marker).is_file():
                raise
    finally:
        torch.set_num_threads(threads)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return folder


def recipe_of(function: Callable, overrides: dict) -> dict:
    """The keyword arguments `function` ran with: its defaults updated by `overrides` (what a build report records)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {k: v for k, v in {**defaults, **overrides}.items() if k != "progress"}


__all__ = ["BUILD_THREADS", "build_atomically", "evaluation_cache_dir", "recipe_of"]
