"""Resumable, atomic training checkpoints on top of `accelerator.save_state` / `load_state`.

A checkpoint is a folder `checkpoint-<step>` holding what accelerate saves (optimizers, RNG states, sampler) plus our
models as ordinary Hugging Face folders (`generator/`, `discriminator/`, `ema_generator/`: config + safetensors) and
`training_state.json`. It is written as `checkpoint-<step>.tmp` and renamed only once complete, so a process
killed mid-save never leaves a newest `checkpoint-<step>` that cannot be loaded.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import uuid
from pathlib import Path

import torch

from .modeling_stagegan import StageGANDiscriminator, StageGANGenerator

CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "training_state.json"


class GeneratorEMA:
    """
    Exponential moving average of the generator's weights; it is the EMA generator that gets saved (authors' code,
    decay 0.999). Buffers (batch-norm statistics, ...) are copied, not averaged.

    Given the training step, the decay warms up as `min(decay, (1 + step) / (10 + step))` (TensorFlow's
    `ExponentialMovingAverage` with `num_updates`): with a fixed 0.999, a 1,500-step run would still carry 0.999^1500
    = 22% of the random initial weights in the saved generator.
    """

    def __init__(self, generator: StageGANGenerator, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"`decay` must be in [0, 1), got {decay!r}.")
        self.decay = decay
        # a copy, not `StageGANGenerator(config)` + load: building a model draws its random initial weights from the
        # global RNG, so turning the average on would change every later noise draw, and with it the training
        self.model = copy.deepcopy(generator).eval().requires_grad_(False)
        for param in self.model.parameters():
            param.grad = None

    def decay_at(self, step: int | None) -> float:
        """The decay used at training step `step` (the warm-up above); `self.decay` when no step is given."""
        return self.decay if step is None else min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, generator: StageGANGenerator, step: int | None = None):
        decay = self.decay_at(step)
        for average, param in zip(self.model.parameters(), generator.parameters()):
            average.lerp_(param.detach(), 1.0 - decay)
        for average, buffer in zip(self.model.buffers(), generator.buffers()):
            average.copy_(buffer)


def list_checkpoints(output_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints under `output_dir`, oldest first. Unfinished `.tmp` folders are not checkpoints."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for path in output_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def resolve_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> Path | None:
    """`"latest"` -> the newest complete checkpoint in `output_dir` (None if there is none); a path -> that folder."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1][1] if checkpoints else None
    path = Path(resume_from_checkpoint)
    if not (path / STATE_FILE).is_file():
        raise ValueError(
            f"`resume_from_checkpoint` must be 'latest' or a checkpoint folder containing {STATE_FILE}, "
            f"got {resume_from_checkpoint!r}."
        )
    return path


def register_model_hooks(accelerator, generator: StageGANGenerator, discriminator: StageGANDiscriminator, ema=None):
    """
    Make `accelerator.save_state` / `load_state` store our models as Hugging Face folders (unwrapped, safetensors)
    instead of anonymous `model_<i>.safetensors` files. The prepared models are the generator and D1, D2, D3.
    """

    def save_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            generator.save_pretrained(Path(output_dir) / "generator")
            discriminator.save_pretrained(Path(output_dir) / "discriminator")
            if ema is not None:
                ema.model.save_pretrained(Path(output_dir) / "ema_generator")
        weights.clear()  # accelerate must not save them a second time

    def load_hook(models, input_dir):
        generator.load_state_dict(StageGANGenerator.from_pretrained(Path(input_dir) / "generator").state_dict())
        discriminator.load_state_dict(
            StageGANDiscriminator.from_pretrained(Path(input_dir) / "discriminator").state_dict()
        )
        if ema is not None:
            ema.model.load_state_dict(StageGANGenerator.from_pretrained(Path(input_dir) / "ema_generator").state_dict())
        models.clear()  # loaded above

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(accelerator, output_dir: str | os.PathLike, step: int, state: dict, total_limit: int | None = None):
    """
    `accelerator.save_state` into `checkpoint-<step>.tmp`, then (main process) rename it to `checkpoint-<step>`
    and delete the oldest checkpoints beyond `total_limit`. Returns the final path.
    """
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    temporary = output_dir / f"checkpoint-{step}.tmp"  # every process writes its part (RNG states) here
    if accelerator.is_main_process:
        for stale in output_dir.glob("checkpoint-*.tmp"):  # left by a run killed while saving
            shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / STATE_FILE).write_text(json.dumps(dict(state, step=step), indent=2))
        _fsync_tree(temporary)
        if final.exists():  # re-saving a step (after a resume): swap, never leave the step missing
            retired = output_dir / f"checkpoint-{step}.old-{uuid.uuid4().hex[:8]}"
            final.rename(retired)
            temporary.rename(final)
            shutil.rmtree(retired)
        else:
            temporary.rename(final)
        if total_limit is not None:
            for _, path in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(path)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: str | os.PathLike) -> dict:
    """`accelerator.load_state(path)` (models through the hooks) and the saved training state (step, epoch, ...)."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text())


def _fsync_tree(folder: Path):
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


__all__ = [
    "GeneratorEMA",
    "list_checkpoints",
    "load_checkpoint",
    "register_model_hooks",
    "resolve_checkpoint",
    "save_checkpoint",
]
