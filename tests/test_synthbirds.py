"""SynthBirds: determinism, captions, the imagefolder layout, on-the-fly loading and atomic builds."""

import json
import re

import datasets
import numpy as np
import pytest

from hf_stagegan.data import synthbirds
from hf_stagegan.data.synthbirds import (
    ATTRIBUTE_NAMES,
    PALETTE,
    PART_IDS,
    build_synthbirds,
    generate_bird,
    iter_examples,
    load_synthbirds,
    make_captions,
    parse_caption,
    sample_attributes,
    short_caption,
    swap_caption_attribute,
)

COLUMNS = ["image", "captions", "text", *ATTRIBUTE_NAMES]


def folder_bytes(root):
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_generate_bird_is_deterministic():
    image, attributes, captions = generate_bird(3, resolution=48)
    again = generate_bird(np.random.default_rng(3), resolution=48)
    assert image.size == (48, 48) and image.mode == "RGB"
    assert image.tobytes() == again[0].tobytes() and attributes == again[1] and captions == again[2]
    other = generate_bird(4, resolution=48)
    assert image.tobytes() != other[0].tobytes()


def test_build_same_seed_identical_bytes_other_seed_differs(tmp_path):
    first = build_synthbirds(tmp_path / "a", num_train=6, num_test=3, resolution=32, seed=1)
    second = build_synthbirds(tmp_path / "b", num_train=6, num_test=3, resolution=32, seed=1)
    other = build_synthbirds(tmp_path / "c", num_train=6, num_test=3, resolution=32, seed=2)
    files = folder_bytes(first)
    assert len([name for name in files if name.endswith(".png")]) == 9
    assert files == folder_bytes(second)
    other_files = folder_bytes(other)
    assert all(files[name] != other_files[name] for name in files if name.endswith(".png"))


def test_images_do_not_depend_on_dataset_size():
    few = list(iter_examples("train", 3, resolution=32, seed=0))
    more = list(iter_examples("train", 6, resolution=32, seed=0))
    assert few == more[:3]
    test_split = list(iter_examples("test", 3, resolution=32, seed=0))
    assert [png for _, png, _ in test_split] != [png for _, png, _ in few]  # train and test are separate streams


def test_captions_name_the_attributes():
    for seed in range(40):
        _, attributes, captions = generate_bird(seed, resolution=16)
        body, wing, crown = attributes["body_color"], attributes["wing_color"], attributes["crown_color"]
        beak, length = attributes["beak_color"], attributes["beak_length"]
        assert 7 <= len(captions) <= 10 and len(set(captions)) == len(captions)
        assert all(body in caption for caption in captions)
        assert captions[-2:] == [short_caption(body), short_caption(body, attributes["size"])]
        assert "a orange" not in " ".join(captions)  # "an orange"
        text = " | ".join(captions)
        assert f"{wing} wing" in text
        assert re.search(rf"\ban? {crown} (crown|cap)\b", text)
        assert f"{length} {beak} b" in text or f"{beak} beak that is {length}" in text
        assert "left" not in text and "right" not in text  # the facing is never written: flips keep captions true
        assert captions[0].startswith("this bird has ")


def test_body_color_dominates_the_bird():
    areas = {"small": [], "medium": [], "large": []}
    for seed in range(30):
        image, attributes, _, mask = generate_bird(seed, resolution=64, return_mask=True)
        pixels = np.asarray(image).astype(float)
        bird = np.isin(mask, [PART_IDS[p] for p in ("body", "wing", "crown", "beak", "eye")])
        body = mask == PART_IDS["body"]
        assert body.sum() / bird.sum() > 0.55  # the body is most of the bird...
        median = np.median(pixels[body], axis=0)
        assert np.abs(median - PALETTE[attributes["body_color"]]).max() <= 14  # ...and has the palette colour
        areas[attributes["size"]].append(bird.sum())
    assert np.mean(areas["small"]) < np.mean(areas["medium"]) < np.mean(areas["large"])


def test_build_loads_as_imagefolder(tmp_path):
    root = build_synthbirds(tmp_path / "birds", num_train=6, num_test=3, resolution=32)
    birds = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert set(birds) == {"train", "test"}
    assert birds["train"].num_rows == 6 and birds["test"].num_rows == 3
    assert birds["train"].column_names == COLUMNS
    example = birds["train"][0]
    assert example["image"].size == (32, 32)
    assert example["text"] == example["captions"][0]
    assert example["size"] in ("small", "medium", "large") and example["facing"] in ("left", "right")
    rows = [json.loads(line) for line in (root / "train" / "metadata.jsonl").read_text().splitlines()]
    assert [row["file_name"] for row in rows] == [f"{i:05d}.png" for i in range(6)]


def assert_same_data(left, right):
    assert set(left) == set(right)
    for split in left:
        assert left[split].features == right[split].features
        for a, b in zip(left[split], right[split], strict=True):
            assert np.array_equal(np.asarray(a.pop("image")), np.asarray(b.pop("image")))
            assert a == b


def test_on_the_fly_and_cached_builds_give_the_same_data(tmp_path, monkeypatch):
    in_memory = load_synthbirds(num_train=5, num_test=2, resolution=32, seed=7)
    assert in_memory["train"].column_names == COLUMNS
    cached = load_synthbirds(num_train=5, num_test=2, resolution=32, seed=7, cache_dir=tmp_path)
    assert_same_data(in_memory, cached)
    root = build_synthbirds(tmp_path / "built", num_train=5, num_test=2, resolution=32, seed=7)
    from_folder = datasets.load_dataset("imagefolder", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert_same_data(in_memory, from_folder)

    # a second call reuses the cached build instead of drawing again
    monkeypatch.setattr(synthbirds, "generate_bird", lambda *args, **kwargs: pytest.fail("rebuilt the cache"))
    assert_same_data(cached, load_synthbirds(num_train=5, num_test=2, resolution=32, seed=7, cache_dir=tmp_path))


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = synthbirds.generate_bird

    def fails_on_the_fifth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # an interrupt, not only an exception, must clean up
        return real(*args, **kwargs)

    monkeypatch.setattr(synthbirds, "generate_bird", fails_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        build_synthbirds(tmp_path / "birds", num_train=6, num_test=2, resolution=16)
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor the staging folder
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        load_synthbirds(num_train=6, num_test=2, resolution=16, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_existing_output_is_not_overwritten_by_default(tmp_path):
    root = build_synthbirds(tmp_path / "birds", num_train=2, num_test=1, resolution=16, seed=0)
    before = folder_bytes(root)
    with pytest.raises(FileExistsError, match="birds"):
        build_synthbirds(root, num_train=2, num_test=1, resolution=16, seed=1)
    assert folder_bytes(root) == before
    build_synthbirds(root, num_train=2, num_test=1, resolution=16, seed=1, overwrite=True)
    assert folder_bytes(root) != before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["birds"]


def test_short_captions():
    assert short_caption("red") == "a red bird" and short_caption("orange") == "an orange bird"
    assert short_caption("orange", "medium") == "a medium sized orange bird"
    with pytest.raises(ValueError, match="`size` must be one of"):
        short_caption("red", "huge")


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="resolution"):
        generate_bird(0, resolution=8)
    with pytest.raises(ValueError, match="num_train"):
        load_synthbirds(num_train=0)


SIZE_WORDS = {"small": "small", "medium": "medium sized", "large": "large"}


def test_parse_caption_reads_back_what_make_captions_wrote():
    """The parser and the caption grammar cannot drift apart: every attribute a caption names is read back right,
    and an attribute is found exactly when the caption mentions its part."""
    named_counts = dict.fromkeys(synthbirds.CAPTION_ATTRIBUTES, 0)
    for seed in range(1500):
        rng = np.random.default_rng(seed)
        attributes = sample_attributes(rng)
        captions = make_captions(attributes, rng)
        full = {k: attributes[k] for k in ("body_color", "wing_color", "crown_color", "beak_color", "beak_length")}
        assert parse_caption(captions[0]) == full  # the first caption names every part (but not the size)
        for caption in captions:
            named = parse_caption(caption)
            assert named == {k: attributes[k] for k in named}, caption
            assert "body_color" in named  # every caption names the body colour
            assert ("wing_color" in named) == ("wing" in caption)
            assert ("crown_color" in named) == bool(re.search(r"\b(crown|cap)\b", caption))
            assert ("beak_color" in named) == ("beak_length" in named) == bool(re.search(r"\b(beak|bill)\b", caption))
            assert ("size" in named) == any(f"{words} " in caption for words in SIZE_WORDS.values())
            for name in named:
                named_counts[name] += 1
    assert min(named_counts.values()) > 500  # every pattern was exercised


def test_swap_caption_attribute_changes_one_part_and_keeps_the_grammar():
    caption = "this bird has a red body, black wings, a blue crown and a short yellow beak"
    assert swap_caption_attribute(caption, "body_color", "orange") == (
        "this bird has an orange body, black wings, a blue crown and a short yellow beak"
    )
    assert swap_caption_attribute(caption, "crown_color", "orange").endswith("an orange crown and a short yellow beak")
    assert swap_caption_attribute("an orange beak that is long", "beak_color", "red") == "a red beak that is long"
    assert swap_caption_attribute("a medium sized red bird", "size", "large") == "a large red bird"
    for seed in range(300):
        rng = np.random.default_rng(seed)
        attributes = sample_attributes(rng)
        for caption in make_captions(attributes, rng):
            named = parse_caption(caption)
            for part in ("body_color", "wing_color", "crown_color", "beak_color"):
                if part not in named:
                    continue
                value = "orange" if named[part] != "orange" else "grey"
                swapped = swap_caption_attribute(caption, part, value)
                assert parse_caption(swapped) == {**named, part: value}
                assert not re.search(r"\ba [aeiou]|\ban [^aeiou]", swapped), swapped
    with pytest.raises(ValueError, match="does not name 'crown_color'"):
        swap_caption_attribute("a red bird", "crown_color", "blue")
    with pytest.raises(ValueError, match=r"`value` for 'beak_color' must be one of .* got 'purple'"):
        swap_caption_attribute(caption, "beak_color", "purple")
    with pytest.raises(ValueError, match="`attribute` must be one of"):
        swap_caption_attribute(caption, "facing", "left")
