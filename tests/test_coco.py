"""`prepare_coco` / `hf-stagegan prepare-coco` on a fake COCO 2014 download written by the test."""

import json
import pickle

import datasets
import numpy as np
import pytest

from hf_stagegan.cli import main
from hf_stagegan.data.coco import prepare_coco

from .fake_datasets import COCO_IMAGES, coco_caption, coco_file_name, write_fake_coco


@pytest.fixture
def coco(tmp_path):
    return write_fake_coco(tmp_path / "downloads")


def load(folder, tmp_path):
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "datasets-cache"))


def test_train2014_is_train_and_val2014_is_test_with_five_captions(coco, tmp_path):
    out = tmp_path / "coco"
    report = prepare_coco(coco, out, size=40, image_format="png")
    assert report.split_counts == {"train": 4, "test": 3} and not report.counts
    dataset = load(out, tmp_path)
    for split, folder in (("train", "train2014"), ("test", "val2014")):
        images = sorted(COCO_IMAGES[folder])  # by image id
        rows = dataset[split]
        assert rows["image_id"] == [image_id for image_id, _, _ in images]
        assert rows["file_name"] == [f"{folder}/{coco_file_name(folder, image_id)}" for image_id, _, _ in images]
        for row, (image_id, (width, height), _) in zip(rows, images):
            assert row["captions"] == [coco_caption(image_id, k) for k in range(5)]  # first five by annotation id
            image = np.asarray(row["image"], dtype=np.float64)
            short = min(width, height)
            assert (image.shape[1], image.shape[0]) == (round(width * 40 / short), round(height * 40 / short))
            assert image[..., 0].mean() == pytest.approx((width - 1) / 2, abs=1.5)  # the whole image, not a crop
            assert image[..., 2].mean() == pytest.approx(image_id, abs=2)


def test_max_images_and_attngan_split_lists(coco, tmp_path):
    report = prepare_coco(coco, tmp_path / "subset", max_images=2, size=32)
    assert report.split_counts == {"train": 2, "test": 2}
    assert load(tmp_path / "subset", tmp_path)["train"]["image_id"] == [9, 25]

    lists = tmp_path / "lists"
    for split, names in (("train", ["COCO_train2014_000000000034", "COCO_train2014_000000000009"]),
                         ("test", ["COCO_val2014_000000000074", "COCO_val2014_000000000099"])):
        (lists / split).mkdir(parents=True)
        (lists / split / "filenames.pickle").write_bytes(pickle.dumps(names, protocol=2))
    report = prepare_coco(coco, tmp_path / "listed", split_dir=lists, size=32)
    assert report.split_counts == {"train": 2, "test": 1}
    assert report.counts == {"unknown_names": 1}
    assert load(tmp_path / "listed", tmp_path)["train"]["image_id"] == [34, 9]  # the lists' order


def test_problems_are_counted_and_printed(coco, tmp_path, capsys):
    (coco / "train2014" / coco_file_name("train2014", 30)).unlink()
    (coco / "val2014" / "COCO_val2014_000000000999.jpg").write_bytes(b"")  # a file no annotation lists
    annotations = coco / "annotations" / "captions_val2014.json"
    content = json.loads(annotations.read_text())
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] != 74 or a["id"] % 100 < 2]  # 2 left
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] != 42]  # none left
    content["annotations"].append({"id": 1, "image_id": 5, "caption": "an image nobody has"})
    content["annotations"].append({"id": 2, "image_id": 73, "caption": "   "})
    annotations.write_text(json.dumps(content))
    out = tmp_path / "coco"
    assert main(["prepare-coco", "--coco_dir", str(coco), "--output_dir", str(out), "--size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "COCO 2014 captions: train 3, test 2 examples" in printed
    for line in (
        "1 images in the annotations but missing on disk (left out), e.g. ['train2014/COCO_train2014_000000000030.jpg']",
        "1 images without a caption (left out), e.g. ['val2014/COCO_val2014_000000000042.jpg']",
        "1 captions of an image id the annotation file does not list (not used), e.g. ['val2014 image 5']",
        "1 image files the annotation files do not list (not used), e.g. ['val2014/COCO_val2014_000000000999.jpg']",
        "1 images with fewer than 5 captions (kept), e.g. ['val2014/COCO_val2014_000000000074.jpg (2)']",
        "1 captions without words (left out)",
    ):
        assert line in printed, printed
    test = load(out, tmp_path)["test"]
    assert test["image_id"] == [73, 74]
    assert test[0]["captions"] == [coco_caption(73, k) for k in range(5)]
    assert test[1]["captions"] == [coco_caption(74, k) for k in range(2)]


def test_errors_name_what_is_missing_or_malformed(coco, tmp_path, capsys):
    (coco / "annotations" / "captions_val2014.json").write_text('{"images": []}')
    with pytest.raises(ValueError, match="captions_val2014.json' is not a COCO captions file"):
        prepare_coco(coco, tmp_path / "a")
    (coco / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(SystemExit):
        main(["prepare-coco", "--coco_dir", str(coco), "--output_dir", str(tmp_path / "b")])
    assert "lacks ['annotations/captions_val2014.json']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare-coco", "--coco_dir", str(coco), "--output_dir", str(tmp_path / "c"), "--max_images", "0"])
    assert "--max_images must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare-coco", "--coco_dir", str(coco)])
    assert "give --output_dir, --push_to_hub, or both" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in "abc")
