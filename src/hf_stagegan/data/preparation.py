"""
What the dataset preparations (`cub` for CUB-200-2011, `coco` for COCO 2014) share: reading the split lists the
literature ships as pickles without unpickling arbitrary objects, reading caption files, the stored image (shorter side
resized, JPEG or PNG), the counted warnings and their report, and writing a `datasets.DatasetDict` atomically as a Hub
dataset folder (Parquet shards under `data/` and a dataset card), optionally pushed to the Hub.

The folder loads with `datasets.load_dataset(folder)` (and `examples/train.py --dataset_name folder`), and the same
files are what `--push_to_hub` uploads.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle  # only through `_ListOfStringsUnpickler`, which refuses every object but lists of strings
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from PIL import Image

from .loading import caption_has_words

logger = logging.getLogger(__name__)

DEFAULT_SIZE = 304  # 256 * 76 / 64: the literature resizes to 304 px before its random 256 px crop
IMAGE_FORMATS = {"jpeg": ("JPEG", ".jpg", {"quality": 95}), "png": ("PNG", ".png", {})}
SHARD_BYTES = 500 * 2**20  # Parquet shards of about this size, as `datasets.push_to_hub` writes them
SPLIT_LIST_NAMES = ("filenames.pickle", "filenames.txt")


# ---------------------------------------------------------------------------------------------------------------------
# Split lists: AttnGAN's `train/filenames.pickle` and `test/filenames.pickle`, read without unpickling objects


class _ListOfStringsUnpickler(pickle.Unpickler):
    """
    Builds nothing but the pickle's own containers and strings: every reference to a class or a function (how a
    pickle runs code) and every persistent id is refused.
    """

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, and only lists of strings are accepted")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it holds a persistent id, and only lists of strings are accepted")


def read_split_list(path: str | os.PathLike) -> list[str]:
    """
    The names in a split list: a `.pickle` holding a list of strings (AttnGAN's `filenames.pickle`, also the protocol 2
    pickles written by Python 2, whose byte strings are read as UTF-8), or a text file with one name per line.

    Anything else in a pickle (a class instance, a function, a dict, a list of numbers) is refused with `ValueError`
    before any of it is built.
    """
    path = Path(path)
    if path.suffix != ".pickle":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, "rb") as file:
        try:
            names = _ListOfStringsUnpickler(file, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as error:
            raise ValueError(f"Refusing split list {str(path)!r}: {error}.") from None
    if not isinstance(names, (list, tuple)):
        raise ValueError(f"Refusing split list {str(path)!r}: expected a list of strings, got a {type(names).__name__}.")
    decoded = []
    for index, name in enumerate(names):
        if isinstance(name, bytes):
            name = name.decode("utf-8")
        if not isinstance(name, str):
            raise ValueError(
                f"Refusing split list {str(path)!r}: expected a list of strings, but item {index} is a "
                f"{type(name).__name__} ({name!r})."
            )
        decoded.append(name)
    return decoded


def find_split_list(split_dir: str | os.PathLike, split: str) -> Path:
    """`split_dir/<split>/filenames.pickle`, or `filenames.txt` in its place; `FileNotFoundError` naming both."""
    folder = Path(split_dir) / split
    for name in SPLIT_LIST_NAMES:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"No split list for {split!r} in `split_dir` {str(split_dir)!r}: expected {str(folder / SPLIT_LIST_NAMES[0])!r} "
        f"(AttnGAN's metadata) or {str(folder / SPLIT_LIST_NAMES[1])!r} (one name per line)."
    )


def read_literature_splits(split_dir: str | os.PathLike, splits: Iterable[str] = ("train", "test")) -> dict[str, list[str]]:
    """Each split's names from `split_dir`; `ValueError` if a name is listed twice or in two splits."""
    names = {split: read_split_list(find_split_list(split_dir, split)) for split in splits}
    seen: dict[str, str] = {}
    for split, split_names in names.items():
        for name in split_names:
            if name in seen:
                where = "twice" if seen[name] == split else f"in both {seen[name]!r} and {split!r}"
                raise ValueError(f"{name!r} is listed {where} in the split lists of `split_dir` {str(split_dir)!r}.")
            seen[name] = split
    return names


# ---------------------------------------------------------------------------------------------------------------------
# Captions, images


def read_caption_file(path: str | os.PathLike) -> list[str]:
    """
    The captions of one caption file, one per non-blank line, stripped. Bytes that are not UTF-8 are decoded as
    U+FFFD, and the pair "\\ufffd\\ufffd" some CUB files hold where a character was lost is read as a space, as AttnGAN
    does.
    """
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    lines = (line.replace("\ufffd\ufffd", " ").strip() for line in text.splitlines())
    return [line for line in lines if line]


def resize_shorter_side(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size`, aspect ratio kept (torchvision's `Resize(size)` on a PIL image: bilinear)."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    return image if new_size == image.size else image.resize(new_size, Image.Resampling.BILINEAR)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """The image at `path` in RGB; `OSError` naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise OSError(f"Could not read image {str(path)!r}: {type(error).__name__}: {error}") from error


def encode_image(image: Image.Image, image_format: str, name: str) -> dict:
    """A `datasets.Image` value `{"bytes", "path"}`: `image` encoded once as JPEG (quality 95) or PNG."""
    pil_format, extension, options = IMAGE_FORMATS[image_format]
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return {"bytes": buffer.getvalue(), "path": f"{Path(name).stem}{extension}"}


def check_preparation_args(size: int, image_format: str):
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` must be a positive number of pixels, got {size!r}.")
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"`image_format` must be one of {sorted(IMAGE_FORMATS)}, got {image_format!r}.")


# ---------------------------------------------------------------------------------------------------------------------
# Counted warnings


@dataclass
class PreparationReport:
    """
    What a preparation found and did: the examples written per split, and every kind of problem it counted (each
    with a few examples). `summary()` is what `hf-stagegan prepare-*` prints at the end.
    """

    dataset: str
    split_counts: dict[str, int] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    output_dir: str | None = None
    repo_id: str | None = None
    seconds: float = 0.0

    def count(self, kind: str, description: str, example: str, num: int = 1):
        """Counts `num` problems of `kind` (worded by `description`), keeping up to three examples."""
        self.counts[kind] += num
        self.descriptions[kind] = description
        kept = self.examples.setdefault(kind, [])
        if len(kept) < 3:
            kept.append(example)

    def warn(self):
        for kind, num in self.counts.items():
            logger.warning(f"{self.dataset}: {num} {self.descriptions[kind]}, e.g. {self.examples[kind]}")

    def summary(self) -> str:
        lines = [f"{self.dataset}: " + ", ".join(f"{split} {num}" for split, num in self.split_counts.items()) + " examples"]
        lines += [f"  {num} {self.descriptions[kind]}, e.g. {self.examples[kind]}" for kind, num in self.counts.items()]
        if not self.counts:
            lines.append("  no problems found")
        if self.output_dir:
            lines.append(f"  written to {self.output_dir}")
        if self.repo_id:
            lines.append(f"  pushed to the Hub dataset {self.repo_id}")
        lines.append(f"  in {self.seconds:.1f} s")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# Writing: atomic folder, Parquet shards, dataset card, upload


@contextmanager
def atomic_folder(output_dir: str | os.PathLike, overwrite: bool = False, argument: str = "output_dir") -> Iterator[Path]:
    """
    Yields a hidden staging folder beside `output_dir`, renamed to `output_dir` when the block ends without error and
    removed when it does not: an interrupted write never leaves a partial folder under the final name. A non-empty
    `output_dir` raises `FileExistsError` unless `overwrite`; it is replaced only after the new copy is complete.
    """
    output_dir = Path(output_dir).expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(f"`{argument}` {str(output_dir)!r} exists and is not a folder.")
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"`{argument}` {str(output_dir)!r} exists and is not empty; pass `overwrite=True`.")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.{uuid.uuid4().hex}.partial")  # hidden, beside the target
    staging.mkdir()
    try:
        yield staging
        if output_dir.exists():
            if overwrite:
                # move the old copy aside first: the final rename below is then a single step onto a free name
                trash = output_dir.with_name(f".{output_dir.name}.{uuid.uuid4().hex}.old")
                output_dir.rename(trash)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                output_dir.rmdir()  # empty (checked above); raises if another process filled it meanwhile
        staging.rename(output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _generate(rows: list, make_example: Callable[[object], dict]) -> Iterator[dict]:
    for row in rows:
        yield make_example(row)


def write_parquet_splits(
    folder: Path,
    splits: Mapping[str, list],
    make_example: Callable[[object], dict],
    features: datasets.Features,
    num_proc: int | None = None,
) -> dict[str, int]:
    """
    Writes each split's examples (`make_example(row)` for each of its `rows`, in order, over `num_proc` processes) as
    `folder/data/<split>-NNNNN-of-NNNNN.parquet` shards of about 500 MB; returns `{split: (examples, bytes)}`, the
    bytes of the split's Arrow data.
    """
    (folder / "data").mkdir()
    cache = Path(tempfile.mkdtemp(prefix=".cache-", dir=folder))
    written = {}
    try:
        for split, rows in splits.items():
            num_proc_split = min(num_proc or 1, len(rows)) or None
            try:
                dataset = datasets.Dataset.from_generator(
                    _generate, features=features, cache_dir=str(cache), num_proc=num_proc_split if num_proc_split > 1 else None,
                    gen_kwargs={"rows": list(rows), "make_example": make_example}, split=datasets.Split(split),
                )
            except datasets.exceptions.DatasetGenerationError as error:
                # our own error (an unreadable image, a box outside its image) says which file; datasets' wrapper does not
                if isinstance(error.__cause__, (OSError, ValueError)):
                    raise error.__cause__ from None
                raise
            num_shards = max(1, math.ceil(dataset.data.nbytes / SHARD_BYTES))
            for index in range(num_shards):
                shard = dataset.shard(num_shards, index, contiguous=True)
                shard.to_parquet(str(folder / "data" / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"))
            written[split] = (len(dataset), dataset.data.nbytes)
            del dataset
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return written


def write_dataset_card(
    folder: Path,
    features: datasets.Features,
    split_sizes: Mapping[str, tuple[int, int]],
    pretty_name: str,
    license_id: str,
    body: str,
):
    """
    `folder/README.md`: YAML metadata (configs pointing at the shards, features, split sizes from `split_sizes`,
    `{split: (examples, bytes)}`) and `body`.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    total = sum(num for num, _ in split_sizes.values())
    size_category = next(
        (name for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")) if total < limit),
        "n>1M",
    )
    data = DatasetCardData(
        pretty_name=pretty_name,
        license=license_id,
        language=["en"],
        task_categories=["text-to-image"],
        size_categories=[size_category],
        configs=[
            {"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"} for split in split_sizes]}
        ],
    )
    splits = {
        split: datasets.SplitInfo(name=split, num_examples=num, num_bytes=num_bytes)
        for split, (num, num_bytes) in split_sizes.items()
    }
    info = datasets.DatasetInfo(features=features, splits=datasets.SplitDict(splits))
    datasets.info.DatasetInfosDict({"default": info}).to_dataset_card_data(data)
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n")
    card.save(folder / "README.md")


def finish_preparation(
    report: PreparationReport,
    splits: Mapping[str, list],
    make_example: Callable[[object], dict],
    features: datasets.Features,
    card: Callable[[Mapping[str, int]], dict],
    output_dir: str | os.PathLike | None,
    push_to_hub: str | None,
    overwrite: bool,
    num_proc: int | None,
    private: bool | None = None,
    token: str | None = None,
):
    """
    Writes the splits and the card into `output_dir` (atomically), or into a temporary folder when only `push_to_hub`
    is given, and uploads that folder as the Hub dataset `push_to_hub` (one commit). The upload starts only once
    `output_dir` is complete, so a failed upload never costs the prepared folder.
    """
    if output_dir is None and push_to_hub is None:
        raise ValueError("Give `output_dir`, `push_to_hub`, or both: the prepared dataset has to go somewhere.")
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{report.dataset}: no example is left in the {split!r} split ({report.summary()}).")
    report.warn()

    def write(folder: Path):
        split_sizes = write_parquet_splits(folder, splits, make_example, features, num_proc)
        report.split_counts = {split: num for split, (num, _) in split_sizes.items()}
        write_dataset_card(folder, features, split_sizes, **card(report.split_counts))

    def push(folder: Path):
        from ..hub import push_folder_to_hub

        push_folder_to_hub(
            folder, push_to_hub, repo_type="dataset", private=private, token=token,
            commit_message=f"Upload {report.dataset} prepared by hf-stagegan",
        )
        report.repo_id = push_to_hub

    if output_dir is None:
        with tempfile.TemporaryDirectory() as folder:
            write(Path(folder))
            push(Path(folder))
        return
    with atomic_folder(output_dir, overwrite) as folder:
        write(folder)
    report.output_dir = str(Path(output_dir).expanduser())
    if push_to_hub is not None:
        push(Path(report.output_dir))


def count_table(counts: Mapping[str, int]) -> str:
    """A Markdown table of the split sizes, for dataset cards."""
    return "| split | examples |\n|---|---|\n" + "\n".join(f"| {split} | {num:,} |" for split, num in counts.items())


def captions_with_words(captions: Iterable[str]) -> tuple[list[str], list[str]]:
    """`(kept, wordless)`: the captions that carry words, and those that do not (empty, special tokens only)."""
    captions = list(captions)
    return [c for c in captions if caption_has_words(c)], [c for c in captions if not caption_has_words(c)]


__all__ = [
    "DEFAULT_SIZE",
    "IMAGE_FORMATS",
    "PreparationReport",
    "atomic_folder",
    "captions_with_words",
    "count_table",
    "encode_image",
    "find_split_list",
    "finish_preparation",
    "load_rgb",
    "read_caption_file",
    "read_literature_splits",
    "read_split_list",
    "resize_shorter_side",
    "write_dataset_card",
    "write_parquet_splits",
]
