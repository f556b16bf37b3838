"""`hf-stagegan generate`: the console script end to end on a tiny pipeline, and its argument errors."""

import os
import shutil
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch

from hf_stagegan.cli import main

from .test_hub import REPO_ID, files_of, put_in_cache
from .test_pipeline import LONG, SHORT


def console_script() -> list[str]:
    """The installed `hf-stagegan` entry point; `python -m hf_stagegan.cli` where the package is not installed."""
    path = shutil.which("hf-stagegan")
    return [path] if path else [sys.executable, "-m", "hf_stagegan.cli"]


def test_console_script_generates_grids_from_a_hub_id_in_the_offline_cache(pipe, saved, tmp_path):
    # A fresh process, so huggingface_hub reads HF_HOME and HF_HUB_OFFLINE at import as it would for a user; the cache
    # has the `trees/` listing, the layout stock diffusers cannot load our pipeline from.
    home = tmp_path / "hf-home"
    put_in_cache(home / "hub", REPO_ID, files_of(saved), tree_listing=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1")
    out = tmp_path / "grid.png"
    command = console_script() + ["generate", SHORT, "--model", REPO_ID, "--num-images", "4", "--seed", "0"]
    result = subprocess.run(
        command + ["--out", str(out), "--levels", "--device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr

    grid = PIL.Image.open(out)
    assert grid.format == "PNG" and grid.size == (2 * 64, 2 * 64)  # 4 images of 64 px on a 2 x 2 grid
    levels = [PIL.Image.open(tmp_path / f"grid_level{level}.png").size for level in (1, 2, 3)]
    assert levels == [(32, 32), (64, 64), (128, 128)]
    assert result.stdout.split() == [str(out)] + [str(tmp_path / f"grid_level{level}.png") for level in (1, 2, 3)]

    # tile k is image k of the pipeline, seed 0 + k
    expected = pipe(SHORT, num_images_per_prompt=4, generator=[torch.Generator().manual_seed(k) for k in range(4)])
    tiles = [grid.crop((x, y, x + 64, y + 64)) for y in (0, 64) for x in (0, 64)]
    for tile, image in zip(tiles, expected.images):
        np.testing.assert_array_equal(np.asarray(tile), np.asarray(image))


def test_generate_from_a_local_folder_one_row_per_prompt(saved, tmp_path, capsys):
    out = tmp_path / "birds.png"
    assert main(["generate", SHORT, LONG, "--model", str(saved), "--num-images", "3", "--out", str(out)]) == 0
    assert PIL.Image.open(out).size == (3 * 64, 2 * 64)
    assert capsys.readouterr().out.strip() == str(out)


def test_truncation_and_cols(saved, tmp_path):
    out = tmp_path / "row.png"
    main(
        [
            "generate",
            SHORT,
            "--model",
            str(saved),
            "--num-images",
            "3",
            "--cols",
            "3",
            "--truncation",
            "0.5",
            "--out",
            str(out),
        ]
    )
    assert PIL.Image.open(out).size == (3 * 64, 64)


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--num-images", "0"], 2, "--num-images must be >= 1, got 0"),
        (["--cols", "0"], 2, "--cols must be >= 1, got 0"),
        (["--truncation", "-1"], 2, "--truncation must be > 0, got -1.0"),
        (["--device", "nodevice"], 2, "--device 'nodevice' is not a torch device"),
        (["--out", "/nonexistent-folder/grid.png"], 2, "--out: folder '/nonexistent-folder' does not exist"),
        (["--dtype", "float8"], 2, "invalid choice: 'float8'"),
    ],
)
def test_bad_arguments_exit_with_a_message(saved, tmp_path, capsys, args, code, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", SHORT, "--model", str(saved), "--out", str(tmp_path / "g.png")] + args)
    assert exit_info.value.code == code
    assert message in capsys.readouterr().err


def test_unloadable_model_and_bad_prompt_exit_with_a_message(saved, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", SHORT, "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")])
    assert exit_info.value.code == 1
    assert f"hf-stagegan: error: cannot load --model '{tmp_path / 'missing'}'" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "  ", "--model", str(saved), "--out", str(tmp_path / "g.png")])
    assert exit_info.value.code == 1
    assert "`prompt[0]` must be a non-empty string, got '  '" in capsys.readouterr().err
    assert not (tmp_path / "g.png").exists()


def test_command_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "required: COMMAND" in capsys.readouterr().err
