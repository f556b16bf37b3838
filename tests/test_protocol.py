"""`hf-stagegan evaluate` end to end on a tiny pipeline (with a tiny judge and evaluation CLIP built into a temporary
cache), its report, its errors, and the model card that carries it."""

import json

import datasets
import pytest
import torch
import yaml
from PIL import Image

from hf_stagegan.cli import main
from hf_stagegan.evaluation.eval_clip import build_eval_clip
from hf_stagegan.evaluation.judge import build_judge
from hf_stagegan.evaluation.metrics import INCEPTION_WEIGHTS_FILE
from hf_stagegan.evaluation.protocol import evaluate, generate_images, headline_metrics, parse_metrics
from hf_stagegan.hub import write_model_card

TINY_CLIP = dict(projection_dim=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A tiny 64 px judge and a tiny evaluation CLIP, built by the real build functions (seconds, not minutes)."""
    folder = tmp_path_factory.mktemp("evaluation-cache")
    build_judge(64, folder, num_test=20, num_train=64, max_train_steps=3, batch_size=16, channels=4, progress=False)
    build_eval_clip(folder, num_test=100, num_train=64, max_train_steps=3, batch_size=16, **TINY_CLIP)
    return folder


@pytest.fixture
def model_folder(saved, clip_model):
    """The tiny pipeline (16/32/64 px) saved with its CLIP_FT in `clip/`, as training saves it."""
    clip_model.save_pretrained(saved / "clip")
    return saved


@pytest.fixture(autouse=True)
def no_inception(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # the Inception weights are never there


def test_cli_writes_a_complete_report(model_folder, cache, tmp_path, capsys):
    output = tmp_path / "report.json"
    assert main([
        "evaluate", "--model", str(model_folder), "--num_images", "24", "--batch_size", "10", "--seed", "3",
        "--output", str(output), "--cache_dir", str(cache), "--device", "cpu",
    ]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    report = json.loads(output.read_text())

    assert report["model"]["name_or_path"] == str(model_folder)
    assert set(report["model"]["image_generator"]["sha256"]) == {"model.safetensors"}
    assert report["dataset"] == {**report["dataset"], "name": "synthbirds", "split": "test", "num_images": 24}
    assert report["dataset"]["synthbirds"] == {"seed": 0, "num_test": 24, "resolution": 64}
    assert report["generation"] == {**report["generation"], "seed": 3, "truncation": None, "batch_size": 10, "resolution": 64}
    assert {"torch", "transformers", "diffusers", "torchmetrics", "hf-stagegan"} <= set(report["packages"])
    assert report["wall_time_s"] > 0 and "generate" in report["timings_s"]
    # FID was not asked for by name and its Inception weights are missing: skipped, with the reason
    assert "fid" not in report["metrics"] and INCEPTION_WEIGHTS_FILE in report["skipped"]["fid"]

    metrics = report["metrics"]
    assert set(metrics) == {"clip_score", "r_precision", "cmd", "judge", "matcher"}
    for label in ("eval_clip", "clip_ft"):  # every CLIP figure for both CLIPs, labelled, on generated and real images
        assert set(metrics["clip_score"][label]) == {"generated", "real"}
        r_precision = metrics["r_precision"][label]["generated"]
        assert r_precision["num_candidates"] == 24 and r_precision["num_folds"] == 10 and 0 <= r_precision["mean"] <= 1
        assert set(metrics["matcher"][label]["sentence"]) == {"body_color", "wing_color", "crown_color", "beak_color"}
    assert report["feature_extractors"]["eval_clip"]["path"] == str(cache / "eval-clip-v1-64px")
    assert len(report["feature_extractors"]["eval_clip"]["sha256"]["model.safetensors"]) == 64
    assert report["feature_extractors"]["clip_ft"]["path"] == str(model_folder / "clip")
    judge = metrics["judge"]
    assert judge["generated"]["count"]["body_color"] == 24 and judge["generated"]["count"]["size"] == 0
    assert judge["fd"] > 0 and judge["fd_floor"] > 0 and judge["fd_ratio"] == pytest.approx(judge["fd"] / judge["fd_floor"])
    assert set(metrics["cmd"]) >= {"cmd", "fd_real_fake", "fd_fake_sentences", "fd_real_sentences"}


def test_same_seed_same_report_and_batch_size_does_not_change_images(model_folder, cache, pipe):
    captions = ["a red bird", "a blue bird", "a small blue bird", "a red bird", "a blue bird"]
    torch.testing.assert_close(
        generate_images(pipe, captions, seed=5, batch_size=2, progress=False),
        generate_images(pipe, captions, seed=5, batch_size=5, progress=False),
    )
    kwargs = dict(num_images=12, metrics="judge,r_precision", cache_dir=cache, device="cpu", progress=False)
    first, second = evaluate(str(model_folder), **kwargs), evaluate(str(model_folder), **kwargs)
    assert first["metrics"] == second["metrics"]
    other_seed = evaluate(str(model_folder), **{**kwargs, "metrics": "judge"}, seed=1)
    assert other_seed["metrics"]["judge"]["fd"] != first["metrics"]["judge"]["fd"]


def test_a_pipeline_loaded_from_a_path_gives_a_writable_report(model_folder, cache, tmp_path):
    from hf_stagegan import StageGANPipeline
    from hf_stagegan.evaluation.protocol import write_report

    pipeline = StageGANPipeline.from_pretrained(model_folder)  # a pathlib.Path: diffusers keeps it as name_or_path
    report = evaluate(
        pipeline, num_images=12, metrics="judge,r_precision", clip_ft=model_folder / "clip", cache_dir=cache, device="cpu",
        progress=False,
    )
    written = json.loads(write_report(report, tmp_path / "report.json").read_text())
    assert written["model"]["name_or_path"] == str(model_folder)
    assert written["feature_extractors"]["clip_ft"]["path"] == str(model_folder / "clip")


def test_fid_in_the_judge_and_clip_feature_spaces_works_offline(model_folder, cache):
    for extractor in ("judge", "clip"):
        report = evaluate(
            str(model_folder), num_images=12, metrics=["fid"], fid_feature_extractor=extractor, cache_dir=cache,
            device="cpu", progress=False,
        )
        assert report["metrics"]["fid"]["feature_extractor"] == extractor and report["metrics"]["fid"]["value"] > 0


def test_bad_input_is_a_named_error(model_folder, cache, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"Unknown metric\(s\) \['fidd'\] in `metrics`; expected some of"):
        parse_metrics("fid,fidd", synthbirds=True)
    with pytest.raises(ValueError, match=r"Metric\(s\) \['judge'\] need SynthBirds"):
        parse_metrics("judge", synthbirds=False)

    def run(*args):
        with pytest.raises(SystemExit) as exit_info:
            main(["evaluate", "--model", str(model_folder), "--cache_dir", str(cache), *args])
        return exit_info.value.code, capsys.readouterr().err

    code, err = run("--metrics", "fid,nope")
    assert code == 1 and "Unknown metric(s) ['nope']" in err
    # FID asked for by name without the Inception weights: the file to provide and where
    code, err = run("--metrics", "fid", "--num_images", "4")
    assert code == 1 and INCEPTION_WEIGHTS_FILE in err and str(tmp_path / "torch-home" / "hub" / "checkpoints") in err
    code, err = run("--num_images", "0")
    assert code == 2 and "--num_images must be >= 1, got 0" in err

    # an imagefolder whose captions are in a column we cannot guess, and an empty split
    folder = tmp_path / "birds"
    (folder / "test").mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "test" / "0.png")
    (folder / "test" / "metadata.jsonl").write_text(json.dumps({"file_name": "0.png", "title": "a red bird"}) + "\n")
    code, err = run("--dataset", str(folder), "--metrics", "clip_score", "--eval_clip", str(model_folder / "clip"))
    assert code == 1 and "No caption column" in err and "title" in err
    code, err = run("--dataset", str(folder), "--metrics", "clip_score", "--caption_column", "caption")
    assert code == 1 and "`caption_column` 'caption' is not a column" in err
    empty = tmp_path / "empty"
    datasets.Dataset.from_dict(
        {"image": [], "text": []}, features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})
    ).to_parquet(str(empty / "test.parquet"))
    code, err = run("--dataset", str(empty), "--metrics", "clip_score", "--eval_clip", str(model_folder / "clip"))
    assert code == 1 and "Split 'test' of" in err and "is empty" in err


def test_model_card_carries_the_report(model_folder, cache, pipe, tmp_path):
    report = evaluate(str(model_folder), num_images=12, metrics="judge,r_precision,clip_score", cache_dir=cache, device="cpu", progress=False)
    card_folder = tmp_path / "card"
    write_model_card(card_folder, pipeline=pipe, repo_id="org/tiny", evaluation_report=report)
    text = (card_folder / "README.md").read_text()
    metadata = yaml.safe_load(text.split("---")[1])
    results = metadata["model-index"][0]["results"]
    assert {r["dataset"]["type"] for r in results} == {"synthbirds"} and {r["dataset"]["split"] for r in results} == {"test"}
    by_type = {metric["type"]: metric["value"] for r in results for metric in r["metrics"]}
    rows = {row["type"]: row["value"] for row in headline_metrics(report)}
    assert by_type == rows
    assert by_type["judge_body_color_accuracy"] == report["metrics"]["judge"]["generated"]["accuracy"]["body_color"]
    assert by_type["r_precision_eval_clip"] == report["metrics"]["r_precision"]["eval_clip"]["generated"]["mean"]
    assert "| R-precision (evaluation CLIP) |" in text and "12 held-out captions of synthbirds" in text
    assert json.loads((card_folder / "evaluation.json").read_text()) == report


def test_build_commands_report_the_cached_models(cache, capsys):
    assert main(["build-judge", "--resolution", "64", "--cache_dir", str(cache)]) == 0  # cached: printed, not rebuilt
    folder, summary = capsys.readouterr().out.strip().splitlines()
    assert folder == str(cache / "judge-v1-64px") and summary.startswith("held-out real accuracy {'body_color':")
    assert main(["build-eval-clip", "--cache_dir", str(cache)]) == 0
    folder, summary = capsys.readouterr().out.strip().splitlines()
    assert folder == str(cache / "eval-clip-v1-64px") and summary.startswith("held-out real R-precision {'mean':")
    with pytest.raises(SystemExit) as exit_info:
        main(["build-judge", "--resolution", "48", "--cache_dir", str(cache)])
    assert exit_info.value.code == 2 and "--resolution must be one of [32, 64, 128, 256], got 48" in capsys.readouterr().err
