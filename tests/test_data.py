"""Data loading: sources, column checks, caption sampling, transforms, corrupt files, batches."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_stagegan.data import (
    IMAGE_TRANSFORMS,
    EpochSampler,
    ImageTextDataset,
    build_dataloader,
    caption_has_words,
    check_columns,
    drop_wordless_captions,
    load_image_text_dataset,
    preprocess_image,
)

CAPTIONS = [f"a {color} bird" for color in ("red", "blue", "green", "black", "white", "brown", "grey", "orange")]


def make_imagefolder(root, num_images=4, caption="list", size=(40, 30)):
    """A local imagefolder: `num_images` PNGs of `size` (W, H), each of one colour, and metadata.jsonl."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.jsonl", "w") as metadata:
        for i in range(num_images):
            Image.new("RGB", size, (30 * i, 255 - 30 * i, 100)).save(root / f"bird_{i}.png")
            row = {"file_name": f"bird_{i}.png"}
            row.update({"captions": CAPTIONS} if caption == "list" else {"text": f"a bird number {i}"})
            metadata.write(json.dumps(row) + "\n")
    return root


def in_memory(captions, size=(40, 30)):
    images = [Image.new("RGB", size, (200, 30, 30)) for _ in captions]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "captions": datasets.List(datasets.Value("string")),
            "label": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {"image": images, "captions": captions, "label": list(range(len(captions)))}, features=features
    )


# ---------------------------------------------------------------------------------------------------------------------
# sources and columns


def test_local_sources(tmp_path):
    folder = make_imagefolder(tmp_path / "birds", caption="text")
    cache = str(tmp_path / "cache")
    by_dir = load_image_text_dataset(train_data_dir=str(folder), cache_dir=cache)
    by_name = load_image_text_dataset(dataset_name=str(folder), cache_dir=cache)
    assert by_dir.num_rows == by_name.num_rows == 4
    assert by_dir.column_names == by_name.column_names == ["image", "text"]
    with pytest.raises(ValueError, match=r"Split 'test' not found in imagefolder .*its splits are \['train'\]"):
        load_image_text_dataset(train_data_dir=str(folder), split="test", cache_dir=cache)
    with pytest.raises(ValueError, match="not both"):
        load_image_text_dataset(dataset_name=str(folder), train_data_dir=str(folder))
    with pytest.raises(ValueError, match=r"SynthBirds options \['num_train'\]"):
        load_image_text_dataset(train_data_dir=str(folder), num_train=3)
    with pytest.raises(ValueError, match="is not a folder"):
        load_image_text_dataset(train_data_dir=str(tmp_path / "missing"))


def test_check_columns_names_the_missing_column_and_lists_the_existing_ones():
    dataset = in_memory([["a red bird"]])
    with pytest.raises(ValueError, match=r"`image_column` 'img' .* columns are \['image', 'captions', 'label'\]"):
        check_columns(dataset, image_column="img")
    with pytest.raises(
        ValueError, match=r"`caption_column` 'caption' .* columns are \['image', 'captions', 'label'\]"
    ):
        check_columns(dataset, caption_column="caption")
    no_captions = dataset.remove_columns("captions")
    with pytest.raises(ValueError, match=r"looked for \['captions', 'text'\] .* columns are \['image', 'label'\]"):
        check_columns(no_captions)
    with pytest.raises(ValueError, match="`caption_column` 'label' must hold a string or a list of strings"):
        check_columns(dataset, caption_column="label")
    with pytest.raises(ValueError, match="`image_column` 'label' must hold images"):
        check_columns(dataset, image_column="label")


def test_caption_column_default_prefers_captions_then_text():
    dataset = in_memory([["a red bird"]])
    assert check_columns(dataset) == ("image", "captions")
    both = dataset.add_column("text", ["one caption"])
    assert check_columns(both) == ("image", "captions")
    assert check_columns(both, caption_column="text") == ("image", "text")
    assert check_columns(both.remove_columns("captions")) == ("image", "text")


# ---------------------------------------------------------------------------------------------------------------------
# caption sampling


def test_list_captions_vary_across_epochs_and_are_reproducible():
    dataset = in_memory([CAPTIONS, CAPTIONS])
    examples = ImageTextDataset(dataset, resolution=16, seed=0)
    per_epoch = [examples[(epoch, 0)]["caption"] for epoch in range(20)]
    assert len(set(per_epoch)) >= 4  # not stuck on one caption
    assert per_epoch == [
        ImageTextDataset(dataset, resolution=16, seed=0)[(epoch, 0)]["caption"] for epoch in range(20)
    ]
    assert per_epoch != [
        ImageTextDataset(dataset, resolution=16, seed=1)[(epoch, 0)]["caption"] for epoch in range(20)
    ]
    assert per_epoch != [examples[(epoch, 1)]["caption"] for epoch in range(20)]  # each example draws its own
    examples.set_epoch(3)  # a plain index uses the current epoch
    assert examples[0]["caption"] == per_epoch[3]


def test_string_caption_column(tmp_path):
    dataset = load_image_text_dataset(train_data_dir=str(make_imagefolder(tmp_path / "d", caption="text")))
    examples = ImageTextDataset(dataset, resolution=16)
    assert examples.caption_column == "text"
    assert [examples[(epoch, 2)]["caption"] for epoch in range(3)] == ["a bird number 2"] * 3


def test_sampler_order_depends_on_seed_and_epoch_only():
    sampler = EpochSampler(10, seed=0)
    first, second = list(sampler), list(sampler)  # the epoch advances after a full pass
    assert [epoch for epoch, _ in first] == [0] * 10 and [epoch for epoch, _ in second] == [1] * 10
    assert sorted(index for _, index in first) == list(range(10))
    assert [i for _, i in first] != [i for _, i in second]
    resumed = EpochSampler(10, seed=0)
    resumed.set_epoch(1)
    assert list(resumed) == second
    assert [i for _, i in EpochSampler(10, seed=0, shuffle=False)] == list(range(10))


def test_batches_are_the_same_with_workers_and_after_resuming(tokenizer):
    dataset = in_memory([CAPTIONS] * 6)

    def epochs(num_workers, start=0, count=2):
        loader = build_dataloader(
            dataset, tokenizer, 16, batch_size=3, seed=5, random_flip=True, num_workers=num_workers
        )
        loader.sampler.set_epoch(start)
        return [[batch["input_ids"].tolist() for batch in loader] for _ in range(count)]

    uninterrupted = epochs(num_workers=0)
    assert uninterrupted[0] != uninterrupted[1]
    assert epochs(num_workers=2) == uninterrupted
    assert epochs(num_workers=0, start=1, count=1) == uninterrupted[1:]


def test_resuming_under_accelerate_replays_the_same_batches(tokenizer):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)
    dataset = in_memory([CAPTIONS] * 8)

    def prepared():
        return accelerator.prepare(build_dataloader(dataset, tokenizer, 16, batch_size=2, seed=3, random_flip=True))

    def ids(batches):
        return [batch["input_ids"].tolist() + batch["pixel_values"].sum(dim=(1, 2, 3)).tolist() for batch in batches]

    loader = prepared()
    uninterrupted = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        uninterrupted.append(ids(loader))
    assert uninterrupted[0] != uninterrupted[1]
    resumed = prepared()  # a new process resuming at epoch 1, batch 2
    resumed.set_epoch(1)
    assert ids(accelerator.skip_first_batches(resumed, 2)) == uninterrupted[1][2:]


def test_data_parallel_shards_split_each_epoch(tokenizer):
    from accelerate.data_loader import prepare_data_loader

    # image i is filled with red = 20 * i, so a batch's red channel tells which examples it holds
    images = [Image.new("RGB", (8, 8), (20 * i, 0, 0)) for i in range(8)]
    dataset = datasets.Dataset.from_dict({"image": images, "text": ["a red bird"] * 8})
    orders = []
    for epoch in range(2):
        shards = []
        for rank in range(2):  # what each of two DDP processes would see
            loader = build_dataloader(dataset, tokenizer, 8, batch_size=2, seed=1)
            loader = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False)
            loader.set_epoch(epoch)
            red = torch.cat([batch["pixel_values"][:, 0, 0, 0] for batch in loader])
            shards.append(((red + 1) * 127.5 / 20).round().int().tolist())
        assert len(shards[0]) == len(shards[1]) == 4
        assert sorted(shards[0] + shards[1]) == list(range(8))  # disjoint and complete
        orders.append(shards)
    assert orders[0] != orders[1]


# ---------------------------------------------------------------------------------------------------------------------
# transforms and decoding


def test_preprocess_resizes_crops_and_scales_to_minus_one_one():
    image = Image.new("RGB", (60, 30), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 30, 30))  # left half black, right half white
    pixels = preprocess_image(image, resolution=16)
    assert pixels.shape == (3, 16, 16) and pixels.dtype == torch.float32
    assert pixels.min() == -1.0 and pixels.max() == 1.0
    # centre crop of the 32x16 resize: its columns 8..24, i.e. half black, half white (LANCZOS rings at the edge)
    assert torch.all(pixels[:, :, :6] < -0.98) and torch.all(pixels[:, :, -6:] > 0.98)
    flips = []
    for seed in range(8):  # the third draw of the rng decides the flip
        flips.append(np.random.default_rng(seed).random(3)[2] < 0.5)
        out = preprocess_image(image, 16, random_flip=True, rng=np.random.default_rng(seed))
        assert torch.equal(out, pixels.flip(-1) if flips[-1] else pixels)
    assert any(flips) and not all(flips)
    crops = {
        preprocess_image(image, 16, center_crop=False, rng=np.random.default_rng(s))[0, 0].sum().item()
        for s in range(8)
    }
    assert len(crops) > 1  # random crops move
    with pytest.raises(ValueError, match="`rng` is required"):
        preprocess_image(image, 16, random_flip=True)


def test_dataset_examples_have_the_training_shape_and_range(tmp_path):
    dataset = load_image_text_dataset(train_data_dir=str(make_imagefolder(tmp_path / "d", size=(48, 30))))
    example = ImageTextDataset(dataset, resolution=24, random_flip=True)[1]
    assert example["pixel_values"].shape == (3, 24, 24)
    assert -1.0 <= example["pixel_values"].min() and example["pixel_values"].max() <= 1.0
    expected = torch.tensor([30, 225, 100]) / 127.5 - 1  # image 1's colour
    torch.testing.assert_close(example["pixel_values"][:, 12, 12], expected)
    assert example["caption"] in CAPTIONS


def test_corrupt_image_error_names_the_file(tmp_path):
    folder = make_imagefolder(tmp_path / "d")
    data = (folder / "bird_2.png").read_bytes()
    (folder / "bird_2.png").write_bytes(data[: len(data) // 2])  # truncated
    examples = ImageTextDataset(load_image_text_dataset(train_data_dir=str(folder), cache_dir=str(tmp_path / "c")), 16)
    assert examples[1]["pixel_values"].shape == (3, 16, 16)  # the others still load
    with pytest.raises(OSError, match=r"Could not read image '.*bird_2\.png'"):
        examples[2]


# ---------------------------------------------------------------------------------------------------------------------
# batches


def test_synthbirds_by_default_end_to_end(tokenizer):
    dataset = load_image_text_dataset(num_train=8, num_test=0, resolution=32)
    assert "body_color" in dataset.column_names
    loader = build_dataloader(dataset, tokenizer, resolution=32, batch_size=4, seed=0)
    batches = list(loader)
    assert len(batches) == 2
    batch = batches[0]
    assert sorted(batch) == ["attention_mask", "input_ids", "pixel_values"]
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert -1.0 <= batch["pixel_values"].min() < 0 < batch["pixel_values"].max() <= 1.0
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].shape[1] <= tokenizer.model_max_length
    assert batch["attention_mask"].all(dim=1).any()  # padded to the longest caption: one row has no padding


def test_captions_longer_than_the_tokenizer_are_truncated(tokenizer):
    dataset = in_memory([["a red bird " * 20], ["a bird"]])
    batch = next(iter(build_dataloader(dataset, tokenizer, 16, batch_size=2, shuffle=False)))
    assert batch["input_ids"].shape == (2, tokenizer.model_max_length)
    assert batch["input_ids"][0, -1] == tokenizer.eos_token_id
    assert batch["attention_mask"][1].sum() < tokenizer.model_max_length


def test_dataloader_refuses_a_dataset_smaller_than_a_batch(tokenizer):
    with pytest.raises(ValueError, match="fewer than `batch_size`=4"):
        build_dataloader(in_memory([["a"], ["b"]]), tokenizer, 16, batch_size=4)
    assert len(build_dataloader(in_memory([["a"], ["b"]]), tokenizer, 16, batch_size=4, drop_last=False)) == 1


# ---------------------------------------------------------------------------------------------------------------------
# captions that carry no words; the literature's transforms


def test_an_empty_caption_among_twelve_is_counted_and_left_out_and_odd_images_load(tmp_path, caplog, tokenizer):
    # the user: an imagefolder with one empty caption among 12, and grayscale, RGBA, 8x8 and 300x90 images
    root = tmp_path / "birds"
    root.mkdir()
    odd = {0: Image.new("L", (40, 30), 90), 1: Image.new("RGBA", (40, 30), (200, 30, 30, 128)),
           2: Image.new("RGB", (8, 8), (10, 200, 10)), 3: Image.new("RGB", (300, 90), (10, 10, 200))}
    with open(root / "metadata.jsonl", "w") as metadata:
        for i in range(12):
            odd.get(i, Image.new("RGB", (40, 30), (30 * i, 100, 100))).save(root / f"bird_{i}.png")
            metadata.write(json.dumps({"file_name": f"bird_{i}.png", "text": "" if i == 5 else f"a bird number {i}"}) + "\n")
    with caplog.at_level("WARNING", logger="hf_stagegan.data.loading"):
        dataset = load_image_text_dataset(train_data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert len(dataset) == 11 and "" not in dataset["text"]
    [warning] = [r.getMessage() for r in caplog.records]
    assert "Left out 1 of 12 captions in column 'text'" in warning and "e.g. ['']" in warning
    assert "11 examples remain" in warning
    batches = list(build_dataloader(dataset, tokenizer, resolution=16, batch_size=4, seed=0, drop_last=False))
    assert [len(batch["pixel_values"]) for batch in batches] == [4, 4, 3]
    assert all(batch["attention_mask"][:, 1:].any(dim=1).all() for batch in batches)  # every caption has a token


def test_wordless_captions_in_lists_are_left_out_and_empty_rows_dropped(caplog):
    dataset = in_memory([["a red bird", "", "  "], ["<|startoftext|> <|endoftext|>"], ["a blue bird", "\n"], []])
    with caplog.at_level("WARNING", logger="hf_stagegan.data.loading"):
        cleaned = drop_wordless_captions(dataset, "captions", source="the toy set")
    assert cleaned["captions"] == [["a red bird"], ["a blue bird"]]
    assert cleaned["label"] == [0, 2]  # the other columns follow their rows
    assert cleaned.features == dataset.features
    message = caplog.records[-1].getMessage()
    assert "Left out 4 of 6 captions in column 'captions' of the toy set" in message
    assert "2 example(s) had no caption left and were left out" in message
    clean = in_memory([["a red bird"], ["a blue bird"]])
    assert drop_wordless_captions(clean, "captions") is clean  # nothing to leave out: not even copied
    with pytest.raises(ValueError, match=r"No caption with words in column 'captions' of the dataset: all 3 captions"):
        drop_wordless_captions(in_memory([["", " "], ["<|endoftext|>"]]), "captions")


def test_every_source_is_cleaned_when_loaded(tmp_path, caplog):
    # a Hub-style dataset folder (Parquet, what prepare-cub / prepare-coco write and a Hub download holds)
    folder = tmp_path / "hub-like"
    (folder / "data").mkdir(parents=True)
    in_memory([["a red bird", ""], ["a blue bird"]]).to_parquet(str(folder / "data" / "train-00000-of-00001.parquet"))
    with caplog.at_level("WARNING", logger="hf_stagegan.data.loading"):
        dataset = load_image_text_dataset(dataset_name=str(folder), cache_dir=str(tmp_path / "cache"))
    assert dataset["captions"] == [["a red bird"], ["a blue bird"]]
    assert "'train' split of dataset" in caplog.records[-1].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="hf_stagegan.data.loading"):
        load_image_text_dataset(num_train=8, num_test=0, resolution=16)  # SynthBirds: nothing to leave out
    assert not caplog.records


def test_caption_has_words():
    assert caption_has_words("a bird") and caption_has_words("!") and caption_has_words("<|endoftext|> bird")
    for caption in ("", "   ", "\t\n", "<|endoftext|>", "<|startoftext|><|endoftext|>", None, 3):
        assert not caption_has_words(caption)


def test_literature_transform_resizes_to_304_for_256_then_crops_and_flips():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 200, 3), dtype=np.uint8))
    transform = IMAGE_TRANSFORMS["literature"]
    assert transform == {"resize_ratio": 76 / 64, "center_crop": False, "random_flip": True}
    assert int(256 * transform["resize_ratio"]) == 304
    resized = np.asarray(image.resize((152, 76), Image.Resampling.LANCZOS))  # at 64 px: shorter side to 76
    flips = []
    for seed in range(8):  # each a 64 x 64 window of the resize at the rng's offsets, flipped by its third draw
        draws = np.random.default_rng(seed).random(3)
        left, top = round((152 - 64) * draws[0]), round((76 - 64) * draws[1])
        window = resized[top : top + 64, left : left + 64]
        flips.append(draws[2] < 0.5)
        window = window[:, ::-1] if flips[-1] else window
        out = preprocess_image(image, 64, rng=np.random.default_rng(seed), **transform)
        torch.testing.assert_close(out, torch.from_numpy(window.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    assert any(flips) and not all(flips)
    # evaluation: the centre window of the same resize
    out = preprocess_image(image, 64, **IMAGE_TRANSFORMS["literature_eval"])
    window = resized[6:70, 44:108]
    torch.testing.assert_close(out, torch.from_numpy(window.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    with pytest.raises(ValueError, match="`resize_ratio` must be >= 1"):
        preprocess_image(image, 64, resize_ratio=0.5)


def test_a_prepared_304_image_is_not_resampled_at_256():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (304, 400, 3), dtype=np.uint8))
    out = preprocess_image(image, 256, center_crop=False, rng=np.random.default_rng(1), resize_ratio=76 / 64)
    draws = np.random.default_rng(1).random(3)
    left, top = round((400 - 256) * draws[0]), round((304 - 256) * draws[1])
    crop = np.asarray(image)[top : top + 256, left : left + 256]  # cut straight from the stored pixels
    torch.testing.assert_close(out, torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 127.5 - 1)


def test_dataloader_takes_the_literature_transform_reproducibly(tokenizer):
    dataset = in_memory([["a red bird"]] * 8, size=(64, 48))
    first = next(iter(build_dataloader(dataset, tokenizer, 32, batch_size=4, seed=3, **IMAGE_TRANSFORMS["literature"])))
    again = next(iter(build_dataloader(dataset, tokenizer, 32, batch_size=4, seed=3, **IMAGE_TRANSFORMS["literature"])))
    assert first["pixel_values"].shape == (4, 3, 32, 32)
    assert torch.equal(first["pixel_values"], again["pixel_values"])  # a pure function of (seed, epoch, index)
