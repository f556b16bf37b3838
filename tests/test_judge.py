"""The SynthBirds judge: the model, its training on real birds (it learns), scoring against captions, the judge FD
and its floor, and the cache."""

import json

import numpy as np
import pytest
import torch

from hf_stagegan.data.synthbirds import swap_caption_attribute
from hf_stagegan.evaluation.judge import (
    JUDGE_REPORT_NAME,
    SynthBirdsJudge,
    SynthBirdsJudgeConfig,
    attribute_accuracy,
    augment,
    build_judge,
    judge_attributes,
    judge_folder,
    judge_frechet_distance,
    judge_predict,
    load_judge,
    real_accuracy,
    synthbirds_arrays,
    train_judge,
)

TINY_RECIPE = dict(num_train=600, max_train_steps=150, batch_size=32, channels=8, learning_rate=3e-3)


@pytest.fixture(scope="module")
def trained():
    """A judge of a few KB trained for 150 steps on 600 real 32 px birds (about 10 s of CPU)."""
    return train_judge(32, progress=False, **TINY_RECIPE)


@pytest.fixture(scope="module")
def held_out():
    """100 held-out real birds (test split of the judge's seed) with their first captions."""
    from hf_stagegan.data.synthbirds import load_synthbirds
    from hf_stagegan.evaluation.judge import JUDGE_DATA_SEED

    birds = load_synthbirds(num_train=1, num_test=100, resolution=32, seed=JUDGE_DATA_SEED)["test"]
    return birds["image"], birds["text"]


def test_config_validates():
    with pytest.raises(ValueError, match="`image_size` must be a power of two >= 32, got 48"):
        SynthBirdsJudgeConfig(image_size=48)
    with pytest.raises(ValueError, match=r"`attribute_labels\['size'\]` must hold >= 2 distinct values"):
        SynthBirdsJudgeConfig(attribute_labels={"size": ["small"]})
    assert SynthBirdsJudgeConfig(image_size=256).fold == 8


def test_shapes_resizing_and_save_load(tmp_path):
    torch.manual_seed(0)
    judge = SynthBirdsJudge(SynthBirdsJudgeConfig(image_size=64, channels=4)).eval()
    pixels = torch.rand(3, 3, 64, 64) * 2 - 1
    output = judge(pixels)
    assert output.features.shape == (3, 32) == (3, judge.num_features)
    assert {name: tuple(logits.shape) for name, logits in output.logits.items()} == {
        "body_color": (3, 10), "wing_color": (3, 10), "crown_color": (3, 10), "beak_color": (3, 6),
        "beak_length": (3, 2), "size": (3, 3),
    }
    assert judge(torch.rand(2, 3, 128, 128)).features.shape == (2, 32)  # other sizes are resized
    with pytest.raises(ValueError, match=r"`pixel_values` must be \(batch, 3, H, W\)"):
        judge(torch.rand(2, 64, 64, 3))
    judge.save_pretrained(tmp_path / "judge")
    assert (tmp_path / "judge" / "model.safetensors").is_file()
    again = SynthBirdsJudge.from_pretrained(tmp_path / "judge").eval()
    torch.testing.assert_close(again(pixels).features, output.features)


def test_augment_keeps_range_and_is_seeded():
    pixels = torch.rand(4, 3, 32, 32) * 2 - 1
    first = augment(pixels, torch.Generator().manual_seed(1))
    again = augment(pixels, torch.Generator().manual_seed(1))
    other = augment(pixels, torch.Generator().manual_seed(2))
    assert first.shape == pixels.shape and first.min() >= -1 and first.max() <= 1
    torch.testing.assert_close(first, again)
    assert not torch.allclose(first, other)


@pytest.mark.slow  # shares the module's judge training (about 10 s of CPU)
def test_training_on_real_birds_learns(trained):
    """150 steps on 600 birds (a few KB of weights): the body colour well above chance (0.1) and above the untrained
    judge; the full recipe's figures are in docs/evaluation.md."""
    untrained = SynthBirdsJudge(SynthBirdsJudgeConfig(image_size=32, channels=8)).eval()
    before = real_accuracy(untrained, num_test=300)
    after = real_accuracy(trained, num_test=300)
    assert after["body_color"] >= 0.35 and after["body_color"] > before["body_color"] + 0.15
    assert after["size"] >= 0.5  # chance 0.33


@pytest.mark.slow  # shares the module's judge training (about 10 s of CPU)
def test_judge_attributes_scores_against_what_the_caption_names(trained, held_out):
    images, captions = held_out
    scores = judge_attributes(trained, images, captions)
    assert scores["count"] == {
        "body_color": 100, "wing_color": 100, "crown_color": 100, "beak_color": 100, "beak_length": 100, "size": 0,
    }
    assert scores["accuracy"]["size"] is None  # the full captions never name the size
    # the same images with every body colour in the caption changed: the judge now disagrees with the caption
    wrong = [swap_caption_attribute(c, "body_color", "purple" if "purple" not in c.split(" body")[0] else "red") for c in captions]
    swapped = judge_attributes(trained, images, wrong)
    assert swapped["accuracy"]["body_color"] < scores["accuracy"]["body_color"] - 0.15
    assert swapped["accuracy"]["wing_color"] == scores["accuracy"]["wing_color"]  # the rest is scored as before
    # tensors in [-1, 1] and [0, 1] read the same as PIL images
    pixels = torch.stack([torch.from_numpy(np.asarray(image)).permute(2, 0, 1) for image in images]).float() / 255
    assert judge_attributes(trained, pixels, captions, value_range=(0.0, 1.0)) == scores
    with pytest.raises(ValueError, match="Got 100 images but 3 `captions`"):
        judge_attributes(trained, images, captions[:3])


def test_attribute_accuracy_counts_only_named_attributes():
    predictions = {"body_color": ["red", "blue", "red"], "size": ["small", "large", "small"]}
    targets = [{"body_color": "red"}, {"body_color": "red", "size": "large"}, {}]
    result = attribute_accuracy(predictions, targets)
    assert result == {"accuracy": {"body_color": 0.5, "size": 1.0}, "count": {"body_color": 2, "size": 1}, "all_correct": 0.5}


@pytest.mark.slow  # shares the module's judge training (about 10 s of CPU)
def test_judge_fd_and_its_real_floor(trained):
    real, _ = synthbirds_arrays("test", 200, 32, seed=0)
    other_real, _ = synthbirds_arrays("test", 200, 32, seed=5)
    noise = np.random.default_rng(0).integers(0, 256, size=real.shape, dtype=np.uint8)
    same = judge_frechet_distance(trained, real, real, floor_images=other_real)
    assert same["fd"] == pytest.approx(0.0, abs=1e-6) and same["floor"] > 0
    realistic = judge_frechet_distance(trained, other_real, real)  # floor from the default floor seed
    assert realistic["ratio"] < 3.0
    noisy = judge_frechet_distance(trained, noise, real)
    assert noisy["ratio"] > 10 * realistic["ratio"]
    _, features = judge_predict(trained, real[:5])
    assert features.shape == (5, trained.num_features) and features.dtype == torch.float64


def test_build_caches_and_load_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_STAGEGAN_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="hf-stagegan build-judge --resolution 32"):
        load_judge(32, build_if_missing=False)
    folder = build_judge(32, num_test=50, progress=False, **{**TINY_RECIPE, "max_train_steps": 5})
    assert folder == judge_folder(32) == tmp_path / "cache" / "judge-v1-32px"
    report = json.loads((folder / JUDGE_REPORT_NAME).read_text())
    assert report["held_out_real_images"] == 50 and set(report["held_out_real_accuracy"]) >= {"body_color", "size"}
    weights = (folder / "model.safetensors").read_bytes()
    judge = load_judge(32, build_if_missing=False)
    assert judge.config.image_size == 32 and not judge.training
    assert build_judge(32) == folder and (folder / "model.safetensors").read_bytes() == weights  # kept, not rebuilt
    assert not list(folder.parent.glob(".*partial"))  # no staging folder left behind
