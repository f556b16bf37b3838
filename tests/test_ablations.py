"""The ablation study's script: every variant is a valid main-job command, and its table is built from reports."""

import importlib.util
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
