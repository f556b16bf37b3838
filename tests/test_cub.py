"""`prepare_cub` / `hf-stagegan prepare-cub` on a fake CUB-200-2011 download written by the test: the literature's crop
(checked against the formula, on images whose pixels give their coordinates), splits and captions exactly, the
restricted reading of the split pickles, and every error and count it promises."""

import os
import pickle
import shutil

import datasets
import numpy as np
import pytest
from huggingface_hub import DatasetCard

from hf_stagegan.cli import main
from hf_stagegan.data.cub import literature_crop_box, prepare_cub
from hf_stagegan.data.preparation import read_split_list

from .fake_datasets import (
    CLASSES,
    CUB_IMAGES,
    LITERATURE_TEST,
    LITERATURE_TRAIN,
    cub_captions,
    cub_name,
    python2_pickle_of,
    write_fake_cub,
)
from .test_hub import FakeHub


@pytest.fixture
def cub(tmp_path):
    return write_fake_cub(tmp_path / "downloads")


def load(folder, tmp_path):
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "datasets-cache"))


@pytest.mark.parametrize(
    "bbox, size, expected",
    [
        # side 1.5 x 325 = 487.5 -> radius int(243.75) = 243 around (222, 179); clipped left, top and bottom
        ((60.0, 27.0, 325.0, 304.0), (500, 375), (0, 0, 465, 375)),
        # a box well inside: radius int(0.75 * 40) = 30 around (80, 80)
        ((60.0, 60.0, 40.0, 40.0), (160, 160), (50, 50, 110, 110)),
        # floats are truncated first, as AttnGAN's pandas .astype(int): (20, 10, 120, 100) -> radius 90 around (80, 60)
        ((20.7, 10.2, 120.9, 100.0), (200, 150), (0, 0, 170, 150)),
        # clipped right and bottom: radius int(0.75 * 85) = 63 around (190, 132)
        ((150.0, 90.0, 80.0, 85.5), (240, 180), (127, 69, 240, 180)),
        # the taller side decides: radius int(0.75 * 120) = 90 around (95, 100)
        ((50.0, 40.0, 90.0, 120.0), (200, 200), (5, 10, 185, 190)),
    ],
)
def test_literature_crop_box_is_attngans_formula(bbox, size, expected):
    assert literature_crop_box(bbox, *size) == expected


def test_literature_split_crops_captions_and_order(cub, tmp_path):
    out = tmp_path / "cub"
    report = prepare_cub(**cub, output_dir=out, size=48, image_format="png")
    assert report.split_counts == {"train": 8, "test": 3} and not report.counts
    dataset = load(out, tmp_path)
    assert set(dataset) == {"train", "test"}
    features = dataset["train"].features
    assert features["class_label"].names == CLASSES
    assert isinstance(features["image"], datasets.Image)

    for split, indices in (("train", LITERATURE_TRAIN), ("test", LITERATURE_TEST)):
        rows = dataset[split]
        # the pickle's order, which is AttnGAN's dataset index order
        assert rows["file_name"] == [f"{cub_name(index)}.jpg" for index in indices]
        for row, index in zip(rows, indices):
            class_index, _, (width, height), bbox = CUB_IMAGES[index]
            assert row["captions"] == cub_captions(index)
            assert row["class_label"] == class_index
            np.testing.assert_allclose(row["bbox"], bbox, rtol=1e-6)
            left, top, right, bottom = literature_crop_box(bbox, width, height)
            crop_w, crop_h = right - left, bottom - top
            image = np.asarray(row["image"], dtype=np.float64)
            # shorter side at `size`, aspect ratio of the (possibly clipped) crop kept
            short = min(crop_w, crop_h)
            assert (image.shape[1], image.shape[0]) == (round(crop_w * 48 / short), round(crop_h * 48 / short))
            # red = x and green = y in the source: the crop's mean colour is its centre in source coordinates
            assert image[..., 0].mean() == pytest.approx((left + right - 1) / 2, abs=1.5)
            assert image[..., 1].mean() == pytest.approx((top + bottom - 1) / 2, abs=1.5)
            assert image[..., 2].mean() == pytest.approx(10 * index, abs=2)  # and it is this image


def test_official_split_follows_train_test_split_txt(cub, tmp_path):
    out = tmp_path / "cub"
    report = prepare_cub(cub["cub_dir"], cub["text_dir"], out, split="official", size=32)
    assert report.split_counts == {"train": 6, "test": 5}
    dataset = load(out, tmp_path)
    assert dataset["train"]["file_name"] == [f"{cub_name(i)}.jpg" for i in range(0, 11, 2)]
    assert dataset["test"]["file_name"] == [f"{cub_name(i)}.jpg" for i in range(1, 11, 2)]
    assert dataset["test"][0]["image"].format == "JPEG"  # the default storage
    assert min(dataset["test"][0]["image"].size) == 32


def test_problems_are_counted_and_printed(cub, tmp_path, capsys):
    cub_dir, text_dir = cub["cub_dir"], cub["text_dir"]
    (cub_dir / "images" / f"{cub_name(1)}.jpg").unlink()  # a missing image
    (text_dir / f"{cub_name(2)}.txt").unlink()  # an image without captions
    (text_dir / CLASSES[0] / "Black_Footed_Albatross_0999_1.txt").write_text("a stray caption\n")  # no such image
    (text_dir / f"{cub_name(3)}.txt").write_text("\n".join(cub_captions(3, 12)) + "\n")  # 12 captions: 10 kept
    (text_dir / f"{cub_name(5)}.txt").write_text("a bird\n   \n<|endoftext|>\nanother bird\n")  # 2 captions with words
    boxes = (cub_dir / "bounding_boxes.txt").read_text().splitlines()
    boxes[6] = "7 70.0 20.0 0.0 100.0"  # a box with no area
    (cub_dir / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    out = tmp_path / "cub"

    assert main(["prepare-cub", "--cub_dir", str(cub_dir), "--text_dir", str(text_dir), "--output_dir", str(out), "--size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "CUB-200-2011 (literature split): train 5, test 3 examples" in printed
    for line in (
        "1 images listed in images.txt but missing from images/ (left out), e.g. ['001.Black_footed_Albatross/Black_Footed_Albatross_0002_55.jpg']",
        "1 images without a caption file (left out)",
        "1 caption files without an image in images.txt (not used)",
        "1 caption files with more than 10 captions (the first 10 kept)",
        "1 caption lines without words (left out), e.g. [\"'<|endoftext|>'\"]",
        "1 caption files with fewer than 10 captions (kept)",
        "1 bounding boxes with a negative corner or no area (image left out), e.g. ['7 [70.0, 20.0, 0.0, 100.0]']",
    ):
        assert line in printed, printed
    train = load(out, tmp_path)["train"]
    assert train["file_name"] == [f"{cub_name(i)}.jpg" for i in (4, 0, 5, 3, 7)]
    assert train[2]["captions"] == ["a bird", "another bird"]
    assert train[3]["captions"] == cub_captions(3)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


class Names(list):
    pass


@pytest.mark.parametrize(
    "content, message",
    [
        (pickle.dumps({"train": ["a/b"]}), "expected a list of strings, got a dict"),
        (pickle.dumps(["a/b", 3]), "item 1 is a int"),
        (pickle.dumps(Names(["a/b"])), "it refers to tests.test_cub.Names"),
        (pickle.dumps([Payload()]), "it refers to posix.system"),
        (b"\x80\x04not a pickle", "Refusing split list"),
    ],
)
def test_split_pickles_hold_only_lists_of_strings(tmp_path, content, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "filenames.pickle"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_split_list(path)
    assert not (tmp_path / "pwned").exists()  # nothing was run


def test_python2_pickles_and_text_lists_are_read(tmp_path):
    names = [cub_name(0), cub_name(4)]
    (tmp_path / "py2.pickle").write_bytes(python2_pickle_of(names))
    assert pickle.loads((tmp_path / "py2.pickle").read_bytes(), encoding="bytes") == [n.encode() for n in names]
    assert read_split_list(tmp_path / "py2.pickle") == names
    (tmp_path / "filenames.txt").write_text("\n".join(names) + "\n\n")
    assert read_split_list(tmp_path / "filenames.txt") == names


def test_a_refused_pickle_stops_the_preparation(cub, tmp_path):
    with open(cub["split_dir"] / "test" / "filenames.pickle", "wb") as file:
        pickle.dump({"names": ["x"]}, file)
    out = tmp_path / "cub"
    with pytest.raises(ValueError, match="expected a list of strings, got a dict"):
        prepare_cub(**cub, output_dir=out)
    assert not out.exists() and not list(tmp_path.glob(".cub.*"))


def test_text_split_lists_replace_the_pickles(cub, tmp_path):
    for split, indices in (("train", LITERATURE_TRAIN[:3]), ("test", LITERATURE_TEST)):
        (cub["split_dir"] / split / "filenames.pickle").unlink()
        (cub["split_dir"] / split / "filenames.txt").write_text("\n".join(cub_name(i) for i in indices))
    report = prepare_cub(**cub, output_dir=tmp_path / "cub", size=32)
    assert report.split_counts == {"train": 3, "test": 3}


def test_errors_name_the_file_the_line_and_what_was_expected(tmp_path):
    def fresh(name):
        return write_fake_cub(tmp_path / name)

    cub = fresh("bad-box")
    boxes = cub["cub_dir"] / "bounding_boxes.txt"
    lines = boxes.read_text().splitlines()
    lines[3] = "4 60.0 60.0 forty 40.0"
    boxes.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"bounding_boxes.txt' line 4: expected '<image_id> <x> <y> <width> <height>', got '4 60.0 60.0 forty 40.0'"):
        prepare_cub(**cub, output_dir=tmp_path / "out")

    cub = fresh("no-labels")
    (cub["cub_dir"] / "image_class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks \['image_class_labels.txt'\]: is it the CUB_200_2011 folder"):
        prepare_cub(**cub, output_dir=tmp_path / "out")

    cub = fresh("no-test-list")
    shutil.rmtree(cub["split_dir"] / "test")
    with pytest.raises(FileNotFoundError, match="No split list for 'test' in `split_dir`"):
        prepare_cub(**cub, output_dir=tmp_path / "out")

    cub = fresh("unknown-class")
    (cub["cub_dir"] / "image_class_labels.txt").write_text("1 1\n2 9\n")
    with pytest.raises(ValueError, match="image 2 has class 9, which classes.txt does not define"):
        prepare_cub(**cub, output_dir=tmp_path / "out")

    with pytest.raises(ValueError, match="`split` must be one of"):
        prepare_cub(**cub, split="random", output_dir=tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="`text_dir`"):
        prepare_cub(cub["cub_dir"], tmp_path / "nowhere", output_dir=tmp_path / "out")
    with pytest.raises(ValueError, match="`size` must be a positive number of pixels, got 0"):
        prepare_cub(**cub, size=0, output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_broken_image_is_named_and_nothing_is_left_behind(cub, tmp_path, capsys):
    broken = cub["cub_dir"] / "images" / f"{cub_name(8)}.jpg"
    broken.write_bytes(broken.read_bytes()[:100])
    out = tmp_path / "cub"
    with pytest.raises(SystemExit):
        main(["prepare-cub", *(f"--{k}={v}" for k, v in cub.items()), "--output_dir", str(out)])
    assert broken.name in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".cub.*"))


def test_a_used_output_dir_is_kept_unless_overwrite(cub, tmp_path, capsys):
    out = tmp_path / "cub"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit):
        main(["prepare-cub", *(f"--{k}={v}" for k, v in cub.items()), "--output_dir", str(out)])
    assert "--overwrite_output_dir" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        prepare_cub(**cub, output_dir=out)
    assert (out / "mine.txt").read_text() == "keep me"
    prepare_cub(**cub, output_dir=out, size=32, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "README.md").is_file()


def test_push_to_hub_uploads_the_folder_with_a_dataset_card(cub, tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    report = prepare_cub(**cub, push_to_hub="org/cub-captions", size=32)
    assert report.repo_id == "org/cub-captions" and report.output_dir is None
    [commit] = hub.commits
    assert commit.repo_id == "org/cub-captions"
    assert sorted(commit.files) == ["README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet"]
    card = DatasetCard(commit.files["README.md"].decode())
    assert card.data.license == "other" and card.data.task_categories == ["text-to-image"]
    assert card.data.configs[0]["data_files"] == [{"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]
    splits = {split["name"]: split["num_examples"] for split in card.data.dataset_info["splits"]}
    assert splits == {"train": 8, "test": 3}
    for text in ("1.5 x the longer side", "class-disjoint", "| train | 8 |", "non-commercial research"):
        assert text in card.text
    # what was sent loads as the dataset
    folder = tmp_path / "downloaded"
    for name, content in commit.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    assert load(folder, tmp_path)["train"].features["class_label"].names == CLASSES


def test_a_failed_upload_keeps_the_prepared_folder(cub, tmp_path, monkeypatch):
    FakeHub(monkeypatch)

    def unreachable(*args, **kwargs):
        raise ConnectionError("the Hub is unreachable")

    monkeypatch.setattr("huggingface_hub.HfApi.create_commit", unreachable)
    out = tmp_path / "cub"
    with pytest.raises(ConnectionError):
        prepare_cub(**cub, output_dir=out, push_to_hub="org/cub-captions", size=32)
    assert load(out, tmp_path)["train"].num_rows == 8  # complete, and only then uploaded
