"""Data loading: sources, column checks, caption sampling, transforms, corrupt files, batches."""

import json

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from hf_stagegan.data import (
    EpochSampler,
    ImageTextDataset,
    build_dataloader,
    check_columns,
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
