"""What loading refuses, and how: a checkpoint of the other StageGAN class, a cut-short weight file, a `model_index.json`
that names code the pipeline does not take. And what AutoModel returns for each StageGAN folder."""

import json
import os
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from transformers import AutoModel

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator, StageGANPipeline
from hf_stagegan.cli import main
from hf_stagegan.hub import IncompleteWeightsError

from .conftest import tiny_config
from .test_hub import REPO_ID, files_of, put_in_cache
from .test_pipeline import SHORT


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    expected, got = a.state_dict(), b.state_dict()
    return expected.keys() == got.keys() and all(torch.equal(expected[key], got[key]) for key in expected)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------------------------------
# AutoModel and the two StageGAN classes


@pytest.fixture
def models(tmp_path):
    """A generator and a discriminator built from one shared config (as training does), each saved to its folder."""
    torch.manual_seed(0)
    config = tiny_config()
    generator, discriminator = StageGANGenerator(config), StageGANDiscriminator(config)
    generator.save_pretrained(tmp_path / "generator")
    discriminator.save_pretrained(tmp_path / "discriminator")
    return generator, discriminator, tmp_path


def test_auto_model_returns_the_saved_class_with_its_weights(models):
    generator, discriminator, folder = models
    loaded_d = AutoModel.from_pretrained(folder / "discriminator")
    loaded_g = AutoModel.from_pretrained(folder / "generator")
    assert type(loaded_d) is StageGANDiscriminator and same_weights(discriminator, loaded_d)
    assert type(loaded_g) is StageGANGenerator and same_weights(generator, loaded_g)
    assert type(AutoModel.from_config(StageGANConfig(stage_resolutions=[16, 32, 64]))) is StageGANGenerator


def test_auto_model_loads_the_discriminator_of_a_pipeline_repo(pipe, saved, tmp_path, offline):
    torch.manual_seed(1)
    discriminator = StageGANDiscriminator(tiny_config())
    discriminator.save_pretrained(saved / "discriminator")
    put_in_cache(tmp_path / "hub", REPO_ID, files_of(saved), tree_listing=True)
    loaded = AutoModel.from_pretrained(REPO_ID, subfolder="discriminator", cache_dir=tmp_path / "hub")
    assert type(loaded) is StageGANDiscriminator and same_weights(discriminator, loaded)
    # and the pipeline in the same repo loads as before
    pipeline = StageGANPipeline.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub")
    assert same_weights(pipe.image_generator, pipeline.image_generator)


@pytest.mark.parametrize(
    "wrong_class, folder, saved_name",
    [
        (StageGANGenerator, "discriminator", "StageGANDiscriminator"),
        (StageGANDiscriminator, "generator", "StageGANGenerator"),
    ],
)
def test_loading_a_folder_into_the_other_class_names_both(models, wrong_class, folder, saved_name):
    path = models[2] / folder
    message = rf"holds a {saved_name} \(`architectures` in its config.json\), not a {wrong_class.__name__}"
    with pytest.raises(ValueError, match=message):
        wrong_class.from_pretrained(path)


# ---------------------------------------------------------------------------------------------------------------------
# cut-short weight files


def cut(path: Path, keep: int):
    """Keeps the first `keep` bytes of `path` (all but the last `-keep` when negative)."""
    path.write_bytes(path.read_bytes()[:keep])


@pytest.mark.parametrize(
    "keep, problem",
    [
        (4, r"it has 4 bytes, fewer than the 8 that give the length of its header"),
        (1000, r"its first 8 bytes announce a header of \d+ bytes, but the file has only 1000 bytes"),
        (-10, r"its header describes (\d+) bytes, but the file has \d+"),
    ],
)
def test_cut_short_weights_in_a_folder_are_named(saved, keep, problem):
    weights = saved / "image_generator" / "model.safetensors"
    cut(weights, keep)
    with pytest.raises(IncompleteWeightsError, match=problem) as error:
        StageGANPipeline.from_pretrained(saved)
    assert f"`{weights}` is not a complete safetensors file" in str(error.value)
    assert "save the model there again" in str(error.value) and not error.value.downloaded
    assert isinstance(error.value, OSError) and error.value.path == str(weights)


def test_cut_short_weights_in_the_hub_cache_name_the_blob_and_force_download(saved, tmp_path, offline):
    snapshot = put_in_cache(tmp_path / "hub", REPO_ID, files_of(saved), tree_listing=True)
    # lay the weights out as huggingface_hub does: the snapshot file links to a blob
    link = snapshot / "text_encoder" / "model.safetensors"
    blob = snapshot.parents[1] / "blobs" / "0123abcd"
    blob.parent.mkdir(exist_ok=True)
    blob.write_bytes(link.read_bytes()[:-100])
    link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))

    with pytest.raises(IncompleteWeightsError) as error:
        StageGANPipeline.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub")
    message = str(error.value)
    assert f"`{link}` (the cached file `{blob.resolve()}`) is not a complete safetensors file" in message
    assert f"delete `{blob.resolve()}` and load again, or load with `force_download=True`" in message
    assert error.value.downloaded


def test_cli_reports_a_cut_short_file_in_one_line(saved, tmp_path, capsys):
    weights = saved / "image_generator" / "model.safetensors"
    cut(weights, 1000)
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", SHORT, "--model", str(saved), "--out", str(tmp_path / "x.png")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"hf-stagegan: error: cannot load --model {str(saved)!r}: `{weights}`"
    )
    assert "--force-download" not in err  # a folder the user saved: downloading again does not apply


def test_cli_suggests_force_download_for_a_cut_short_download(saved, tmp_path, capsys, offline, monkeypatch):
    snapshot = put_in_cache(tmp_path / "hub", REPO_ID, files_of(saved), tree_listing=True)
    cut(snapshot / "image_generator" / "model.safetensors", 1000)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SystemExit):
        main(["generate", SHORT, "--model", REPO_ID, "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err
    assert "image_generator/model.safetensors` is not a complete safetensors file" in err
    assert err.rstrip().endswith("Add --force-download to download it again.")


# ---------------------------------------------------------------------------------------------------------------------
# model_index.json names only what the pipeline takes


@pytest.fixture
def probe_module(tmp_path, monkeypatch):
    """An importable module that leaves a marker file when imported: proof that nothing imported it."""
    code = tmp_path / "code"
    code.mkdir()
    marker = tmp_path / "imported"
    (code / "stagegan_probe.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nclass Generator:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(code))
    yield marker
    sys.modules.pop("stagegan_probe", None)


def edit_model_index(folder: Path, **entries):
    path = folder / "model_index.json"
    model_index = json.loads(path.read_text())
    model_index.update(entries)
    path.write_text(json.dumps(model_index))


@pytest.mark.parametrize(
    "entries, message",
    [
        (
            {"image_generator": ["os", "system"]},
            r"entry 'image_generator' is \[\"os\", \"system\"\], but StageGANPipeline takes "
            r"\[\"hf_stagegan.modeling_stagegan\", \"StageGANGenerator\"\] there \(or \[null, null\] for no component\)",
        ),
        (
            {"image_generator": ["stagegan_probe", "Generator"]},
            r"entry 'image_generator' is \[\"stagegan_probe\", \"Generator\"\]",
        ),
        (
            {"text_encoder": ["transformers", "CLIPTextModel"]},
            r"entry 'text_encoder' is \[\"transformers\", \"CLIPTextModel\"\], but StageGANPipeline takes "
            r"\[\"transformers\", \"CLIPTextModelWithProjection\"\]",
        ),
        (
            {"safety_checker": ["stagegan_probe", "Generator"]},
            r"names a component 'safety_checker' \(\['stagegan_probe', 'Generator'\]\) that StageGANPipeline does "
            r"not take; its components are \['tokenizer', 'text_encoder', 'image_generator'\]",
        ),
        (
            {"_class_name": ["stagegan_probe", "Generator"]},
            r"`_class_name` must be the name of a pipeline class such as 'StageGANPipeline', got \['stagegan_probe'",
        ),
    ],
)
def test_model_index_naming_other_code_is_refused_before_any_import(saved, probe_module, entries, message):
    edit_model_index(saved, **entries)
    (saved / "stagegan_probe.py").write_text("raise SystemExit('a pipeline file next to model_index.json ran')\n")
    with pytest.raises(ValueError, match=message):
        StageGANPipeline.from_pretrained(saved)
    assert not probe_module.exists() and "stagegan_probe" not in sys.modules


def test_model_index_check_covers_passed_components(pipe, saved, probe_module):
    # diffusers imports the library named for a component even when that component is passed in
    edit_model_index(saved, image_generator=["stagegan_probe", "Generator"])
    with pytest.raises(ValueError, match="entry 'image_generator'"):
        StageGANPipeline.from_pretrained(saved, image_generator=pipe.image_generator)
    assert not probe_module.exists()


def test_model_index_of_a_hub_repo_is_checked_before_the_components_are_fetched(
    saved, tmp_path, probe_module, offline
):
    edit_model_index(saved, image_generator=["stagegan_probe", "Generator"])
    files = files_of(saved)
    only_index = {"model_index.json": files["model_index.json"]}
    put_in_cache(tmp_path / "hub", REPO_ID, only_index, tree_listing=True, listed_only=files)
    # the components are not in the cache: asking for them would fail with IncompleteSnapshotError instead
    with pytest.raises(ValueError, match=rf"`model_index.json` of '{REPO_ID}': entry 'image_generator'"):
        StageGANPipeline.from_pretrained(REPO_ID, cache_dir=tmp_path / "hub")
    assert not probe_module.exists()
