"""The ablation study's script: every variant is a valid main-job command, and its table is built from reports."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ablations = load("ablations_script", ROOT / "benchmarks" / "ablations.py")
train = load("train_script_for_ablations", ROOT / "examples" / "train.py")


@pytest.mark.parametrize("variant", list(ablations.VARIANTS))
def test_every_variant_is_a_valid_train_command(variant, tmp_path):
    args = ablations.main.__globals__["argparse"].Namespace(evaluation_images=10, max_train_steps=5, extra=["--cpu"])
    command = ablations.train_command(variant, 1, tmp_path / "run", args)
    parsed = train.parse_args(command[2:])  # what train.py makes of it: no flag refused
    assert parsed.seed == 1 and parsed.max_train_steps == 5 and parsed.cpu


def test_variants_differ_from_the_full_model_in_what_they_name():
    full = vars(train.parse_args(ablations.VARIANTS["full"]))
    for variant, flags in ablations.VARIANTS.items():
        if variant != "full":
            assert vars(train.parse_args(flags)) != full, variant


def test_table_rows_come_from_the_report():
    report = {
        "metrics": {
            "judge": {
                "generated": {"accuracy": {"body_color": 0.9, "wing_color": 0.8, "crown_color": 0.7, "beak_color": 0.6}},
                "fd_ratio": 2.5,
            },
            "r_precision": {"eval_clip": {"generated": {"mean": 0.4}, "real": {"mean": 0.55}}},
        }
    }
    assert ablations.scores(report) == {
        "body": 0.9, "wing": 0.8, "crown": 0.7, "beak": 0.6, "judge_fd_ratio": 2.5, "r_precision": 0.4,
        "r_precision_real": 0.55,
    }


def fake_report(body, fd_ratio):
    return {
        "metrics": {
            "judge": {
                "generated": {"accuracy": {"body_color": body, "wing_color": 0.2, "crown_color": 0.1, "beak_color": 0.2}},
                "fd_ratio": fd_ratio,
            },
            "r_precision": {"eval_clip": {"generated": {"mean": 0.25}, "real": {"mean": 0.6}}},
        }
    }


def test_report_only_tabulates_finished_runs_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    for name, body, fd_ratio in (("full-seed0", 0.7, 20.0), ("full-seed1", 0.6, 24.0), ("end_to_end-seed0", 0.5, 30.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "evaluation.json").write_text(json.dumps(fake_report(body, fd_ratio)))
    plot = tmp_path / "bars.png"
    ablations.main([
        "--variants", "full", "end_to_end", "--seeds", "0", "1", "--output_dir", str(tmp_path), "--report_only",
        "--plot", str(plot),
    ])
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert {"variant": "end_to_end", "seed": 1, "missing": str(tmp_path / "end_to_end-seed1" / "evaluation.json")} in records
    assert not (tmp_path / "end_to_end-seed1").exists()  # nothing was trained
    full = next(r for r in records if r.get("variant") == "full" and "seeds" in r)
    assert full["seeds"] == [0, 1] and full["body"] == pytest.approx({"mean": 0.65, "std": 0.05})
    assert full["judge_fd_ratio"] == pytest.approx({"mean": 22.0, "std": 2.0})
    assert "| full | 0 1 | 0.650 ± 0.050 |" in "\n".join(lines)
    assert "| end_to_end | 0 | 0.500 |" in "\n".join(lines)  # one seed: no std to show
    assert plot.stat().st_size > 0 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_where_clip_ft_starts_and_how_long_it_trains_by_default():
    """The main job starts from the SynthBirds base CLIP and trains the GAN against it as built (0 CLIP_FT steps); a
    CLIP from scratch (asked for, or on other data) gets 600 steps; a given CLIP 0; an explicit count always wins."""
    cases = [
        ([], True, 0),
        (["--clip_from_scratch"], False, 600),
        (["--train_data_dir", "birds"], False, 600),
        (["--clip_model_name_or_path", "openai/clip-vit-base-patch32"], False, 0),
        (["--clip_finetune_steps", "300"], True, 300),
    ]
    for flags, base, steps in cases:
        parsed = train.parse_args(flags)
        assert (train.uses_base_clip(parsed), parsed.clip_finetune_steps) == (base, steps), flags
