"""Saving, loading and sharing: local round trips, the two offline HF cache layouts, captured pushes, the model card.

Nothing here reaches the network: `HF_HUB_OFFLINE` is on, so any Hub call that is not faked fails. Pushes are faked at
the network boundary (`HfApi.create_repo`, `HfApi.create_commit`, and the Hub-side YAML check of `upload_folder`);
everything above them (diffusers, transformers, `upload_folder`'s file selection) is the real code.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import huggingface_hub
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import DiffusionPipeline
from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard, RepoUrl, get_cached_repo_tree
from huggingface_hub.errors import IncompleteSnapshotError
from transformers import AutoConfig, CLIPModel

import hf_stagegan
from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator, StageGANPipeline
from hf_stagegan.encoders import text_encoder_from_clip
from hf_stagegan.hub import image_grid, push_folder_to_hub, save_stagegan_pipeline, write_model_card

from .conftest import tiny_config
from .test_pipeline import LONG, SHORT, seeded

REPO_ID = "org/stagegan-tiny"
PIPELINE_FILES = {
    "model_index.json",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "image_generator/config.json",
    "image_generator/model.safetensors",
}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def images_of(pipe):
    return pipe([SHORT, LONG], generator=seeded(0, 1), output_type="pt").images


def files_of(folder) -> dict[str, bytes]:
    folder = Path(folder)
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def put_in_cache(
    cache_dir, repo_id, files: dict[str, bytes], tree_listing: bool, commit: str | None = None, listed_only=None
) -> Path:
    """
    Lays `files` out as the HF cache does after a download of `repo_id` at `commit`: `snapshots/<commit>/...` and
    `refs/main`; with `tree_listing`, also `trees/<commit>.json`, the listing `snapshot_download` writes (format 1 of
    `huggingface_hub._tree_cache`: path -> size, git blob id, and sha256/size for LFS files). `listed_only` files are
    in the repo's listing but were not downloaded.
    """
    commit = commit or hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
    storage = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    snapshot = storage / "snapshots" / commit
    for path, data in files.items():
        (snapshot / path).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / path).write_bytes(data)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / "main").write_text(commit)
    if tree_listing:
        listing = {}
        for path, data in sorted({**files, **(listed_only or {})}.items()):
            entry = {"size": len(data), "blob_id": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
            if path.endswith(".safetensors"):
                entry.update(lfs_sha256=hashlib.sha256(data).hexdigest(), lfs_size=len(data))
            listing[path] = entry
        (storage / "trees").mkdir(exist_ok=True)
        (storage / "trees" / f"{commit}.json").write_text(
            json.dumps({"format_version": 1, "files": listing}, indent=1)
        )
    return snapshot


@pytest.fixture
def offline(monkeypatch):
    """`HF_HUB_OFFLINE=1` as huggingface_hub sees it (it reads the variable once, at import)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------------------------------
# local folder


def test_save_pretrained_writes_safetensors_only_and_loads_back_identical(pipe, saved):
    files = files_of(saved)
    assert set(files) == PIPELINE_FILES
    assert not [path for path in files if path.endswith(PICKLE_SUFFIXES)]
    model_index = json.loads(files["model_index.json"])
    assert model_index["_class_name"] == "StageGANPipeline"
    assert model_index["image_generator"] == ["hf_stagegan.modeling_stagegan", "StageGANGenerator"]
    assert model_index["text_encoder"] == ["transformers", "CLIPTextModelWithProjection"]

    loaded = StageGANPipeline.from_pretrained(saved)
    assert not loaded.image_generator.training
    torch.testing.assert_close(images_of(loaded), images_of(pipe), rtol=0, atol=0)


def test_save_pretrained_refuses_pickle(pipe, tmp_path):
    with pytest.raises(ValueError, match="`safe_serialization=False` is not supported"):
        pipe.save_pretrained(tmp_path, safe_serialization=False)


# ---------------------------------------------------------------------------------------------------------------------
# HF cache, offline


@pytest.mark.parametrize("tree_listing", [False, True], ids=["snapshot-only", "with-trees-listing"])
@pytest.mark.parametrize("cache", ["cache_dir", "default-cache"])
def test_from_pretrained_hub_id_from_offline_cache(pipe, saved, tmp_path, offline, monkeypatch, tree_listing, cache):
    cache_dir = tmp_path / "hub"
    snapshot = put_in_cache(cache_dir, REPO_ID, files_of(saved), tree_listing)
    if tree_listing:  # the listing is in the format huggingface_hub itself reads
        assert {file.path for file in get_cached_repo_tree(REPO_ID, cache_dir=cache_dir)} == PIPELINE_FILES

    if cache == "default-cache":
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache_dir))
        loaded = StageGANPipeline.from_pretrained(REPO_ID)
    else:
        loaded = StageGANPipeline.from_pretrained(REPO_ID, cache_dir=cache_dir)
    assert Path(loaded.image_generator.name_or_path) == snapshot / "image_generator"  # read from the cache
    torch.testing.assert_close(images_of(loaded), images_of(pipe), rtol=0, atol=0)


def test_stock_diffusers_download_rejects_our_repo_once_it_knows_the_file_list(saved, tmp_path, offline):
    """
    Why `StageGANPipeline.download` exists (diffusers 0.42): with the `trees/` listing cached, the stock download
    demands a remote-code file for every component outside diffusers/transformers. If this starts failing, diffusers
    has fixed it and the override can go.
    """
    cache_dir = tmp_path / "hub"
    put_in_cache(cache_dir, REPO_ID, files_of(saved), tree_listing=True)
    with pytest.raises(
        ValueError,
        match=r"image_generator/hf_stagegan\.modeling_stagegan\.py as defined in `model_index\.json` does not exist",
    ):
        DiffusionPipeline.download(REPO_ID, cache_dir=cache_dir)
    assert Path(StageGANPipeline.download(REPO_ID, cache_dir=cache_dir), "model_index.json").is_file()


def test_download_fetches_only_pipeline_components_and_no_pickles(pipe, saved, tmp_path, offline):
    # The listing names files the snapshot lacks: a pickled duplicate, training-only folders. The offline snapshot
    # check of huggingface_hub would refuse the snapshot if `download` asked for any of them.
    cache_dir = tmp_path / "hub"
    listed_only = {
        "image_generator/pytorch_model.bin": b"x",
        "discriminator/model.safetensors": b"x",
        "clip/config.json": b"{}",
    }
    snapshot = put_in_cache(cache_dir, REPO_ID, files_of(saved), tree_listing=True, listed_only=listed_only)

    assert Path(StageGANPipeline.download(REPO_ID, cache_dir=cache_dir)) == snapshot
    # ...while a file the pipeline does need, missing from the snapshot, is reported
    (snapshot / "image_generator" / "model.safetensors").unlink()
    with pytest.raises(IncompleteSnapshotError, match="image_generator/model.safetensors"):
        StageGANPipeline.from_pretrained(REPO_ID, cache_dir=cache_dir)


def test_passed_components_are_not_downloaded(pipe, saved, tmp_path, offline):
    cache_dir = tmp_path / "hub"
    snapshot = put_in_cache(cache_dir, REPO_ID, files_of(saved), tree_listing=True)
    for path in (snapshot / "text_encoder").iterdir():
        path.unlink()  # listed, but not in the cache
    loaded = StageGANPipeline.from_pretrained(REPO_ID, cache_dir=cache_dir, text_encoder=pipe.text_encoder)
    assert loaded.text_encoder is pipe.text_encoder
    torch.testing.assert_close(images_of(loaded), images_of(pipe), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------------------
# push_to_hub, faked at the network boundary


@dataclass
class Commit:
    repo_id: str
    message: str
    files: dict[str, bytes]
    oid: str


class FakeHub:
    """Records what would be sent to the Hub; `put_in_cache` then plays it back as a download would leave it."""

    def __init__(self, monkeypatch):
        self.created_repos: list[str] = []
        self.commits: list[Commit] = []
        self.validated_cards: list[str] = []
        hub = self

        def create_repo(api, repo_id, *, token=None, private=None, repo_type=None, exist_ok=False, **kwargs):
            hub.created_repos.append(repo_id)
            return RepoUrl(f"https://huggingface.co/{repo_id}")

        def create_commit(api, repo_id, operations, *, commit_message, commit_description=None, **kwargs):
            files = {}
            for operation in operations:
                assert isinstance(operation, CommitOperationAdd), operation
                source = operation.path_or_fileobj
                files[operation.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
            oid = hashlib.sha1(repr(sorted(files.items())).encode()).hexdigest()
            hub.commits.append(Commit(repo_id, commit_message, files, oid))
            return CommitInfo(
                commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}",
                commit_message=commit_message,
                commit_description=commit_description or "",
                oid=oid,
            )

        def validate_yaml(api, content, *, repo_type=None, token=None):
            hub.validated_cards.append(ModelCard(content).data.to_dict())  # the Hub's check: the metadata parses

        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # anything not faked fails loudly
        monkeypatch.setattr(HfApi, "create_repo", create_repo)
        monkeypatch.setattr(HfApi, "create_commit", create_commit)
        monkeypatch.setattr(HfApi, "_validate_yaml", validate_yaml)
        # with hf_xet installed, upload_folder streams to the xet storage backend; without, it makes one create_commit
        monkeypatch.setattr(huggingface_hub.hf_api, "is_xet_available", lambda: False)

    def download_to(self, cache_dir, commit: Commit) -> Path:
        return put_in_cache(cache_dir, commit.repo_id, commit.files, tree_listing=True, commit=commit.oid)


@pytest.fixture
def fake_hub(monkeypatch):
    return FakeHub(monkeypatch)


def test_pipeline_push_to_hub_sends_one_commit_and_loads_back(pipe, fake_hub, tmp_path):
    info = pipe.push_to_hub(
        REPO_ID,
        license="mit",
        datasets=["org/synthbirds"],
        hyperparameters={"batch_size": 8, "generator_lr": 2e-4},
        evaluation={"clip_score": 0.31},
        sample_prompts=[SHORT, LONG],
    )
    assert fake_hub.created_repos == [REPO_ID]
    [commit] = fake_hub.commits
    assert (commit.repo_id, commit.message, info.oid) == (REPO_ID, "Upload StageGANPipeline", commit.oid)
    assert set(commit.files) == PIPELINE_FILES | {"README.md", "samples.png", "levels.png"}
    assert not [path for path in commit.files if path.endswith(PICKLE_SUFFIXES)]
    assert fake_hub.validated_cards[0]["library_name"] == "diffusers"

    fake_hub.download_to(tmp_path / "hub", commit)
    loaded = StageGANPipeline.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub")
    torch.testing.assert_close(images_of(loaded), images_of(pipe), rtol=0, atol=0)


def test_save_pretrained_with_push_to_hub(pipe, fake_hub, tmp_path):
    pipe.save_pretrained(tmp_path / "out", push_to_hub=True, repo_id=REPO_ID, commit_message="Epoch 3")
    [commit] = fake_hub.commits
    assert (commit.repo_id, commit.message) == (REPO_ID, "Epoch 3")
    assert set(commit.files) == PIPELINE_FILES | {"README.md"}
    assert commit.files == files_of(tmp_path / "out")  # what was saved is what was sent


def test_push_folder_skips_pickles(saved, fake_hub):
    (saved / "image_generator" / "optimizer.pt").write_bytes(b"pickle")
    (saved / "checkpoint-10").mkdir()
    (saved / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    push_folder_to_hub(saved, REPO_ID, ignore_patterns=["checkpoint-*"])
    assert set(fake_hub.commits[0].files) == PIPELINE_FILES


@pytest.mark.parametrize("kind", ["generator", "discriminator", "config"])
def test_models_and_config_push_to_hub_and_load_back(kind, fake_hub, tmp_path):
    torch.manual_seed(0)
    config = tiny_config()
    obj = {"generator": StageGANGenerator, "discriminator": StageGANDiscriminator}.get(kind, lambda c: c)(config)
    repo_id = f"org/stagegan-{kind}"
    obj.push_to_hub(repo_id)

    [commit] = fake_hub.commits
    expected_files = {"config.json", "README.md"} | ({"model.safetensors"} if kind != "config" else set())
    assert (commit.repo_id, set(commit.files)) == (repo_id, expected_files)
    assert commit.message == ("Upload config" if kind == "config" else f"Upload {type(obj).__name__}")

    fake_hub.download_to(tmp_path / "hub", commit)
    if kind == "config":
        loaded = AutoConfig.from_pretrained(repo_id, cache_dir=tmp_path / "hub")
        assert isinstance(loaded, StageGANConfig)
        assert loaded.to_diff_dict() == config.to_diff_dict() and loaded.stage_resolutions == [16, 32, 64]
    else:
        loaded = type(obj).from_pretrained(repo_id, cache_dir=tmp_path / "hub")
        expected, got = obj.state_dict(), loaded.state_dict()
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[key], got[key]) for key in expected)


# ---------------------------------------------------------------------------------------------------------------------
# model card and the training save


def test_model_card_metadata_and_content(pipe, tmp_path):
    card = write_model_card(
        tmp_path,
        pipeline=pipe,
        repo_id=REPO_ID,
        datasets="org/synthbirds",
        base_model="openai/clip-vit-base-patch32",
        tags=["birds"],
        hyperparameters={"batch_size": 8, "generator_lr": 0.0002},
        evaluation={"fid": 23.5, "clip_score": 0.31},
        sample_prompts=[SHORT, LONG, SHORT],
        seed=7,
    )
    reloaded = ModelCard.load(tmp_path / "README.md")
    data = reloaded.data
    assert data.library_name == "diffusers" and data.pipeline_tag == "text-to-image" and data.license == "apache-2.0"
    assert data.datasets == ["org/synthbirds"] and data.base_model == "openai/clip-vit-base-patch32"
    assert {"hf-stagegan", "text-to-image", "birds"} <= set(data.tags)
    assert [(result.metric_type, result.metric_value) for result in data.eval_results] == [
        ("fid", 23.5),
        ("clip_score", 0.31),
    ]

    text = reloaded.text
    assert f'StageGANPipeline.from_pretrained("{REPO_ID}")' in text
    assert f'hf-stagegan generate "{SHORT}" --model {REPO_ID}' in text
    assert "| batch_size | 8 |" in text and "| generator_lr | 0.0002 |" in text
    assert "| fid | 23.5 |" in text
    assert "16 px -> 32 px -> 64 px" in text
    assert "![Samples](samples.png)" in text and "seeds 7, 8" in text
    grid = PIL.Image.open(tmp_path / "samples.png")
    assert grid.size == (2 * 64, 2 * 64)  # 3 samples on a 2 x 2 grid
    # the first tile is the pipeline's image for the first prompt at the first seed
    first = pipe(SHORT, generator=torch.Generator().manual_seed(7)).images[0]
    # (the grid is drawn as one batch: float rounding may move a pixel by one 8-bit level)
    tile, expected = np.asarray(grid.crop((0, 0, 64, 64)), dtype=int), np.asarray(first, dtype=int)
    assert np.abs(tile - expected).max() <= 1
    # the per-level grid: one row per level, the three samples in each, every image shown at x3's size
    assert "![Levels](levels.png)" in text and "x1 (16 px, noise only)" in text
    levels = np.asarray(PIL.Image.open(tmp_path / "levels.png"), dtype=int)
    assert levels.shape == (3 * 64, 3 * 64, 3)
    assert np.abs(levels[128:, :64] - expected).max() <= 1  # the x3 row is the final image
    x1 = pipe(SHORT, generator=torch.Generator().manual_seed(7), return_all_levels=True).level_images[0][0]
    assert x1.size == (16, 16)
    upscaled = np.asarray(x1.resize((64, 64), PIL.Image.NEAREST), dtype=int)
    assert np.abs(levels[:64, :64] - upscaled).max() <= 1  # x1, 16 px, upscaled by nearest neighbours
    assert card.text == text


def test_model_card_without_extras_has_no_empty_sections(tmp_path):
    write_model_card(tmp_path, repo_id=REPO_ID)
    text = ModelCard.load(tmp_path / "README.md").text
    assert "## Usage" in text
    assert "## Training hyperparameters" not in text and "## Evaluation" not in text and "![Samples]" not in text
    assert not (tmp_path / "samples.png").exists()


def test_save_stagegan_pipeline_for_training(pipe, clip_model, tmp_path, offline):
    torch.manual_seed(0)
    discriminator = StageGANDiscriminator(tiny_config())
    out = tmp_path / "out"
    save_stagegan_pipeline(
        out,
        pipe,
        discriminator=discriminator,
        clip_model=clip_model,
        repo_id=REPO_ID,
        sample_grid=PIL.Image.new("RGB", (8, 8)),
        sample_prompts=[SHORT, LONG],
    )
    files = files_of(out)
    assert PIPELINE_FILES | {
        "README.md",
        "samples.png",
        "discriminator/model.safetensors",
        "clip/model.safetensors",
    } <= set(files)
    assert not [path for path in files if path.endswith(PICKLE_SUFFIXES)]
    card = files["README.md"].decode()
    assert "`discriminator`" in card and "`clip`" in card and "![Samples](samples.png)" in card
    assert f"Prompts: {SHORT}; {LONG}." in card and "seeds" not in card  # the caller's grid: no seeds claimed
    assert PIL.Image.open(out / "samples.png").size == (8, 8)
    # the caller's sample grid is kept, and the prompts are still drawn at every level (2 prompts x 3 levels)
    assert "![Levels](levels.png)" in card and PIL.Image.open(out / "levels.png").size == (2 * 64, 3 * 64)

    torch.testing.assert_close(images_of(StageGANPipeline.from_pretrained(out)), images_of(pipe), rtol=0, atol=0)
    loaded_d = StageGANDiscriminator.from_pretrained(out, subfolder="discriminator")
    assert all(torch.equal(value, loaded_d.state_dict()[key]) for key, value in discriminator.state_dict().items())
    loaded_clip = CLIPModel.from_pretrained(out / "clip")
    reloaded_text = text_encoder_from_clip(loaded_clip)
    assert all(
        torch.equal(value, reloaded_text.state_dict()[key]) for key, value in pipe.text_encoder.state_dict().items()
    )


def test_image_grid():
    tiles = [PIL.Image.new("RGB", (4, 3), color) for color in ("red", "green", "blue")]
    grid = image_grid(tiles)
    assert grid.size == (8, 6) and grid.getpixel((5, 0)) == (0, 128, 0) and grid.getpixel((5, 4)) == (0, 0, 0)
    assert image_grid(tiles, cols=3).size == (12, 3)
    with pytest.raises(ValueError, match=r"`images\[1\]` is \(2, 2\), but `images\[0\]` is \(4, 3\)"):
        image_grid([tiles[0], PIL.Image.new("RGB", (2, 2))])
    with pytest.raises(ValueError, match="at least one image"):
        image_grid([])


def test_nothing_in_the_package_unpickles():
    # one exception: the split lists of the literature (`filenames.pickle`), read by an unpickler that refuses every
    # class and function, so that nothing but lists of strings can come out (tests/test_cub.py)
    package = Path(hf_stagegan.__file__).parent
    restricted = package / "data" / "preparation.py"
    for path in package.rglob("*.py"):
        source = path.read_text()
        assert ("import pickle" in source) == (path == restricted), path
        for call in re.findall(r"torch\.load\([^)]*\)", source):
            assert "weights_only=True" in call, (path, call)
    source = restricted.read_text()
    assert "pickle.load(" not in source and "pickle.loads(" not in source
    assert re.findall(r"pickle\.(\w+)", source) == ["Unpickler", "UnpicklingError", "UnpicklingError", "UnpicklingError"]
