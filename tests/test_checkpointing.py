import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from hf_stagegan import StageGANDiscriminator, StageGANGenerator
from hf_stagegan.checkpointing import (
    GeneratorEMA,
    list_checkpoints,
    load_checkpoint,
    register_model_hooks,
    resolve_checkpoint,
    save_checkpoint,
)
from hf_stagegan.training import build_optimizers, training_step

from .conftest import tiny_config
from .test_training import toy_batch


class Run:
    """A tiny training run wired like examples/train.py: prepared G, D1-D3, six optimizers, EMA, checkpoint hooks."""

    def __init__(self, clip_model, seed=0):
        set_seed(seed)
        self.accelerator = Accelerator(cpu=True)
        self.generator = StageGANGenerator(tiny_config())
        self.discriminator = StageGANDiscriminator(tiny_config())
        self.ema = GeneratorEMA(self.generator, decay=0.9)
        optimizers = build_optimizers(self.generator, self.discriminator)
        prepared = self.accelerator.prepare(self.generator, *self.discriminator.levels, *optimizers.values())
        self.generator_p, self.levels_p = prepared[0], prepared[1:4]
        self.optimizers = dict(zip(optimizers, prepared[4:]))
        register_model_hooks(self.accelerator, self.generator, self.discriminator, self.ema)
        self.clip = clip_model.requires_grad_(False)

    def steps(self, tokenizer, start, stop):
        for step in range(start, stop):
            training_step(
                toy_batch(tokenizer, 4, seed=step), generator=self.generator_p, discriminator_levels=self.levels_p,
                clip_model=self.clip, optimizers=self.optimizers, accelerator=self.accelerator,
            )
            self.ema.update(self.generator)

    def weights(self):
        return {
            **{f"g.{k}": v for k, v in self.generator.state_dict().items()},
            **{f"d.{k}": v for k, v in self.discriminator.state_dict().items()},
            **{f"ema.{k}": v for k, v in self.ema.model.state_dict().items()},
        }


def test_resume_equals_uninterrupted(tokenizer, clip_model, tmp_path):
    straight = Run(clip_model)
    straight.steps(tokenizer, 0, 6)

    first = Run(clip_model)
    first.steps(tokenizer, 0, 3)
    path = save_checkpoint(first.accelerator, tmp_path, 3, {"epoch": 0})
    saved = {p.name for p in path.iterdir()}
    assert {"discriminator", "ema_generator", "generator", "training_state.json", "optimizer_5.bin"} <= saved
    assert not any(name.startswith("model") for name in saved)  # models live in their HF folders only
    assert (path / "generator" / "model.safetensors").is_file()

    resumed = Run(clip_model, seed=123)  # different init and RNG: everything must come from the checkpoint
    state = load_checkpoint(resumed.accelerator, resolve_checkpoint(tmp_path, "latest"))
    assert state == {"epoch": 0, "step": 3}
    resumed.steps(tokenizer, 3, 6)

    expected, actual = straight.weights(), resumed.weights()
    assert expected.keys() == actual.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=1e-5, atol=1e-6, msg=key)


def test_killed_save_leaves_previous_checkpoint_loadable(tokenizer, clip_model, tmp_path, monkeypatch):
    run = Run(clip_model)
    run.steps(tokenizer, 0, 1)
    save_checkpoint(run.accelerator, tmp_path, 1, {})
    run.steps(tokenizer, 1, 2)

    original_save = run.generator.save_pretrained

    def dies_midway(*args, **kwargs):
        original_save(*args, **kwargs)
        raise KeyboardInterrupt("killed while writing the checkpoint")

    monkeypatch.setattr(run.generator, "save_pretrained", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(run.accelerator, tmp_path, 2, {})
    assert (tmp_path / "checkpoint-2.tmp").is_dir() and not (tmp_path / "checkpoint-2").exists()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [1]
    latest = resolve_checkpoint(tmp_path, "latest")
    assert latest.name == "checkpoint-1"
    assert load_checkpoint(Run(clip_model).accelerator, latest)["step"] == 1

    monkeypatch.undo()
    save_checkpoint(run.accelerator, tmp_path, 2, {})  # the next save clears the stale temporary folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1", "checkpoint-2"]


def test_total_limit_keeps_newest(tokenizer, clip_model, tmp_path):
    run = Run(clip_model)
    for step in (1, 2, 3):
        save_checkpoint(run.accelerator, tmp_path, step, {}, total_limit=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    assert json.loads((tmp_path / "checkpoint-3" / "training_state.json").read_text())["step"] == 3


def test_resolve_checkpoint_errors(tmp_path):
    assert resolve_checkpoint(tmp_path, None) is None
    assert resolve_checkpoint(tmp_path, "latest") is None
    with pytest.raises(ValueError, match=r"`resume_from_checkpoint` must be 'latest' or a checkpoint folder .* got '/nope'"):
        resolve_checkpoint(tmp_path, "/nope")


def test_ema_tracks_weights():
    generator = StageGANGenerator(tiny_config())
    ema = GeneratorEMA(generator, decay=0.5)
    param = next(generator.parameters())
    start = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    ema.update(generator)
    torch.testing.assert_close(next(ema.model.parameters()), start + 0.5)
    with pytest.raises(ValueError, match="`decay` must be in \\[0, 1\\), got 1.5"):
        GeneratorEMA(generator, decay=1.5)


def test_ema_leaves_the_random_state_alone():
    """Turning the average on must not change the training: making it draws nothing from the global RNG."""
    generator = StageGANGenerator(tiny_config())
    torch.manual_seed(7)
    expected = torch.randn(4)
    torch.manual_seed(7)
    ema = GeneratorEMA(generator)
    torch.testing.assert_close(torch.randn(4), expected, rtol=0, atol=0)
    for average, param in zip(ema.model.state_dict().values(), generator.state_dict().values()):
        assert torch.equal(average, param)
    assert not any(param.requires_grad for param in ema.model.parameters()) and not ema.model.training


def test_ema_decay_warms_up_with_the_step():
    """Early steps average fast, so a short run's saved generator is not mostly its random initial weights."""
    generator = StageGANGenerator(tiny_config())
    ema = GeneratorEMA(generator, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(90) == pytest.approx(0.91)
    assert ema.decay_at(100_000) == 0.999 and ema.decay_at(None) == 0.999
    param = next(generator.parameters())
    start = param.detach().clone()
    with torch.no_grad():
        param.add_(1.0)
    ema.update(generator, step=0)
    torch.testing.assert_close(next(ema.model.parameters()), start + 0.9)
