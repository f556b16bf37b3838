"""Where the evaluation models (the SynthBirds judge, the offline evaluation CLIP) are kept once built, and the SynthBirds
base CLIP that the training script fine-tunes (`hf_stagegan.base_clip`), which is built and cached the same way.

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
import json
import logging
import multiprocessing
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants

logger = logging.getLogger(__name__)


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


def is_built(folder: Path, report_name: str) -> bool:
    """Whether `folder` holds a complete build: its report (written last) is there."""
    return (folder / report_name).is_file()


def build_cached_model(
    folder: Path,
    report_name: str,
    train: Callable[[], Any],
    measure: Callable[[Any], dict],
    save: Callable[[Any, Path], None],
    report: dict,
    description: str,
    overwrite: bool = False,
) -> Path:
    """
    Builds a model into the cache once, with its JSON report (what the judge, the evaluation CLIP and the base CLIP
    share): `train()` returns the model (timed), `measure(model)` the report's measured fields, `save(model, staging)`
    writes it; the report is `report`, then `train_seconds`, the measured fields, torch's version and the thread count,
    written last as `report_name` (the marker of a complete build). Atomic and on `BUILD_THREADS` (`build_atomically`).
    An existing build is kept unless `overwrite`. Returns `folder`.
    """
    if is_built(folder, report_name) and not overwrite:
        return folder

    def build(staging: Path):
        start = time.perf_counter()
        model = train()
        train_seconds = time.perf_counter() - start
        measured = measure(model)
        save(model, staging)
        full = {
            **report, "train_seconds": round(train_seconds, 1), **measured,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
        }
        (staging / report_name).write_text(json.dumps(full, indent=2))
        logger.info(f"{description}: {measured} (trained in {train_seconds:.0f} s)")

    return build_atomically(folder, build, report_name, overwrite=overwrite)


def ensure_built(
    folder: Path, report_name: str, build: Callable[[], Path], build_if_missing: bool, missing: str, description: str
) -> Path:
    """`folder` once it holds a complete build: built by `build()` first when missing, or, with `build_if_missing=False`,
    a `FileNotFoundError` with the message `missing` (which names the command that builds it)."""
    if not is_built(folder, report_name):
        if not build_if_missing:
            raise FileNotFoundError(missing)
        logger.info(f"Building {description} (once; cached in {folder})")
        build()
    return folder


def _logged(target: Callable[..., Any], level: int, args: tuple, kwargs: dict) -> None:
    """`target(*args, **kwargs)` in a spawned child, whose logging starts unconfigured: set up as the parent's was."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=level)
    target(*args, **kwargs)


class BackgroundBuild:
    """
    Runs `target(*args, **kwargs)` (a module-level function that builds cached models, e.g. `build_judge`) in a
    second process while this one goes on, so that two one-thread builds use two cores: the training script builds the
    judge and the evaluation CLIP this way while it builds the base CLIP itself. The child is a fresh interpreter (`spawn`), so it
    inherits no random state, and each build inside it runs on `BUILD_THREADS` as always: the same weights as a build
    in the foreground. A daemon: it dies with this process (a build it leaves unfinished leaves no model behind,
    `build_atomically`). `wait()` joins it; a failed build is logged, not raised, since whoever loads the model later
    builds it then.
    """

    def __init__(self, target: Callable[..., Any], *args: Any, description: str, **kwargs: Any):
        self.description = description
        context = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()  # the child logs what this process would (its builds' results)
        self.process = context.Process(target=_logged, args=(target, level, args, kwargs), daemon=True)
        self.process.start()
        logger.info(f"Building {description} in a second process (pid {self.process.pid})")

    def wait(self) -> bool:
        """Blocks until the build has finished; `True` if it succeeded."""
        self.process.join()
        if self.process.exitcode != 0:
            logger.warning(
                f"The background build of {self.description} failed (exit code {self.process.exitcode}); "
                "it is built in this process when it is needed"
            )
        return self.process.exitcode == 0


def recipe_of(function: Callable, overrides: dict) -> dict:
    """The keyword arguments `function` ran with: its defaults updated by `overrides` (what a build report records)."""
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    return {k: v for k, v in {**defaults, **overrides}.items() if k != "progress"}


__all__ = ["BUILD_THREADS", "build_atomically", "build_cached_model", "ensure_built", "evaluation_cache_dir", "recipe_of"]
