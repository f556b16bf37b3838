"""The colour-consistency metric, validated on real SynthBirds images."""

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from hf_stagegan.data.synthbirds import PALETTE, load_synthbirds
from hf_stagegan.evaluation import (
    COLOR_NAMES,
    body_color_from_caption,
    color_accuracy,
    color_confusion,
    color_fraction,
    format_confusion,
    predict_colors,
)


@pytest.fixture(scope="module")
def birds():
    return load_synthbirds(num_train=1, num_test=60, resolution=64, seed=3)["test"]


def shifted(colors, by=3):
    """Each colour replaced by another one: deliberately wrong labels."""
    return [COLOR_NAMES[(COLOR_NAMES.index(color) + by) % len(COLOR_NAMES)] for color in colors]


def to_tensor(images, low=-1.0, high=1.0):
    pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 for image in images])
    return pixels * (high - low) + low  # (B, 3, H, W)


def test_true_body_colours_score_high_wrong_ones_low(birds):
    images, colors = birds["image"], birds["body_color"]
    assert len(set(colors)) == len(COLOR_NAMES)  # every colour is tested
    assert color_accuracy(images, colors) >= 0.95
    assert color_accuracy(images, shifted(colors)) <= 0.05
    assert color_accuracy(images, birds["wing_color"]) <= 0.3  # the wing is not what the metric reads
    assert color_fraction(images, colors) > 0.45
    assert color_fraction(images, shifted(colors)) < 0.1


def test_robust_to_blur_and_noise(birds):
    """Generated images are softer and noisier than SynthBirds: the mix model keeps blurred edges on their colour."""
    images, colors = birds["image"], birds["body_color"]
    blurred = [image.filter(ImageFilter.GaussianBlur(2)) for image in images]
    assert color_accuracy(blurred, colors) >= 0.85
    rng = np.random.default_rng(0)
    noisy = [np.clip(np.asarray(image) + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8) for image in images]
    assert color_accuracy(noisy, colors) >= 0.85


def test_image_formats_agree(birds):
    images = birds["image"][:12]
    expected = predict_colors(images)
    assert predict_colors(to_tensor(images)) == expected  # generator output in [-1, 1]
    assert predict_colors(to_tensor(images, 0.0, 1.0), value_range=(0.0, 1.0)) == expected  # pipeline "pt" output
    assert predict_colors([np.asarray(image) for image in images]) == expected  # uint8 arrays
    as_np = to_tensor(images, 0.0, 1.0).permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) floats: output_type="np"
    assert predict_colors(as_np, value_range=(0.0, 1.0)) == expected
    assert predict_colors(images[0]) == expected[:1]  # a single image


def test_simple_drawings_and_blank_images():
    sky = Image.new("RGB", (32, 32), (170, 200, 230))
    bird = sky.copy()
    bird.paste(PALETTE["purple"], (8, 10, 24, 22))  # a purple body...
    bird.paste(PALETTE["yellow"], (12, 12, 18, 16))  # ...with a smaller yellow wing
    assert predict_colors([bird, sky]) == ["purple", None]
    assert color_accuracy([bird, sky], ["purple", "purple"]) == 0.5


def test_confusion_matrix_counts(birds):
    images, colors = birds["image"], birds["body_color"]
    matrix = color_confusion(images, colors)
    assert matrix.shape == (len(COLOR_NAMES), len(COLOR_NAMES) + 1)
    assert matrix.sum() == len(images)
    assert [row.sum() for row in matrix] == [colors.count(name) for name in COLOR_NAMES]
    assert np.trace(matrix[:, :-1]) / len(images) == color_accuracy(images, colors)
    table = format_confusion(matrix)
    assert table.splitlines()[1].startswith("red") and "acc" in table.splitlines()[0]


def test_body_colour_from_captions(birds):
    assert body_color_from_caption("this bird has a red body, black wings and a short yellow beak") == "red"
    assert body_color_from_caption("the bird has a yellow crown, black wings and a blue belly") == "blue"
    assert body_color_from_caption("a small gray bird") == "grey"
    assert body_color_from_caption("the bird is mostly green with a black cap") == "green"
    assert body_color_from_caption("a bird with long legs") is None
    for captions, color in zip(birds["captions"], birds["body_color"]):  # every SynthBirds caption parses
        assert {body_color_from_caption(caption) for caption in captions} == {color}


def test_invalid_requests_raise(birds):
    images = birds["image"][:2]
    with pytest.raises(ValueError, match="Got 2 images but 1 `requested_colors`"):
        color_accuracy(images, ["red"])
    with pytest.raises(ValueError, match=r"Unknown colour\(s\) \['pink'\]"):
        color_accuracy(images, ["red", "pink"])
    with pytest.raises(ValueError, match=r"must be \(B, 3, H, W\)"):
        predict_colors(torch.zeros(2, 64, 64, 3))


def test_build_atomically_overwrites_only_after_a_successful_build(tmp_path):
    from hf_stagegan.evaluation.cache import build_atomically

    folder = tmp_path / "judge"

    def write(text):
        def build(staging):
            (staging / "report.json").write_text(text)
        return build

    def fail(staging):
        (staging / "half").write_text("x")
        raise RuntimeError("interrupted")

    build_atomically(folder, write("old"), "report.json")
    with pytest.raises(RuntimeError, match="interrupted"):
        build_atomically(folder, fail, "report.json", overwrite=True)
    assert (folder / "report.json").read_text() == "old" and not (folder / "half").exists()  # the cached copy survives
    build_atomically(folder, write("new"), "report.json", overwrite=True)
    assert (folder / "report.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["judge"]  # no staging or retired folder left behind


def test_a_build_leaves_the_callers_random_state_as_it_was(tmp_path):
    # train.py builds the judge between seeding and drawing the GAN's weights: the weights must not depend on whether
    # the judge was cached
    from hf_stagegan.evaluation.cache import build_atomically

    def build(staging):
        torch.manual_seed(1234)  # what the judge and evaluation-CLIP builds do
        torch.rand(10)
        (staging / "report.json").write_text("{}")

    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    build_atomically(tmp_path / "model", build, "report.json")
    assert torch.equal(torch.rand(4), expected)


def test_builds_run_on_one_thread_and_give_the_same_model_whatever_the_caller_uses(tmp_path):
    from safetensors.torch import load_file

    from hf_stagegan.evaluation.cache import BUILD_THREADS, build_atomically
    from hf_stagegan.evaluation.judge import build_judge

    caller = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        seen = []

        def failing_build(staging):
            seen.append(torch.get_num_threads())
            raise RuntimeError("interrupted")

        with pytest.raises(RuntimeError, match="interrupted"):
            build_atomically(tmp_path / "x", failing_build, "report.json")
        assert seen == [BUILD_THREADS] == [1] and torch.get_num_threads() == 2  # restored, also after a failure

        kwargs = dict(num_test=20, num_train=64, max_train_steps=6, batch_size=16, channels=8, progress=False)
        weights = []
        for threads in (2, 1):
            torch.set_num_threads(threads)
            folder = build_judge(32, tmp_path / f"cache-{threads}", **kwargs)
            weights.append(load_file(folder / "model.safetensors"))
            assert json.loads((folder / "judge_report.json").read_text())["threads"] == 1
    finally:
        torch.set_num_threads(caller)
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


def test_a_background_build_makes_the_same_model_as_a_foreground_one_and_leaves_this_process_alone(
    tmp_path, caplog, capfd
):
    from safetensors.torch import load_file

    from hf_stagegan.evaluation.cache import BackgroundBuild
    from hf_stagegan.evaluation.judge import build_judge

    kwargs = dict(num_test=20, num_train=64, max_train_steps=4, batch_size=16, channels=8, progress=False)
    torch.manual_seed(0)
    expected_draw = torch.rand(4)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    caplog.set_level("INFO")  # the child logs at this process's level
    capfd.readouterr()
    build = BackgroundBuild(build_judge, 32, tmp_path / "background", description="a tiny judge", **kwargs)
    assert build.wait() is True and build.process.exitcode == 0
    assert "INFO hf_stagegan.evaluation.cache: SynthBirds judge 32px: {'held_out_real_images': 20" in capfd.readouterr().err
    foreground = build_judge(32, tmp_path / "foreground", **kwargs)
    background = tmp_path / "background" / foreground.name
    assert json.loads((background / "judge_report.json").read_text())["threads"] == 1
    weights = load_file(background / "model.safetensors")
    reference = load_file(foreground / "model.safetensors")
    assert weights.keys() == reference.keys() and all(torch.equal(weights[k], reference[k]) for k in weights)
    # this process's random stream and thread count are as they were (the foreground build forks and restores them)
    assert torch.equal(torch.rand(4), expected_draw) and torch.get_num_threads() == threads


def test_a_failed_or_killed_background_build_is_reported_and_leaves_no_model(tmp_path, caplog):
    from hf_stagegan.evaluation.cache import BackgroundBuild
    from hf_stagegan.evaluation.judge import build_judge, judge_folder

    failing = BackgroundBuild(build_judge, 48, tmp_path, description="a judge for 48 px")  # no judge reads 48 px
    with caplog.at_level("WARNING", logger="hf_stagegan.evaluation.cache"):
        assert failing.wait() is False
    assert failing.process.exitcode not in (0, None)
    assert "a judge for 48 px failed" in caplog.text and "built in this process when it is needed" in caplog.text

    killed = BackgroundBuild(build_judge, 32, tmp_path, description="a judge, killed", progress=False)
    killed.process.terminate()  # as when the training run that started it dies: the child is a daemon
    assert killed.wait() is False
    assert not judge_folder(32, tmp_path).exists()  # built atomically: never half a model in the cache
