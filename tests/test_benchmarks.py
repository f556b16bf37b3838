"""The benchmark scripts run as documented and print one JSON line per measurement, with tiny settings.

Correctness only: what the lines say and how their figures relate, never how fast anything was."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_stagegan import StageGANGenerator

from .conftest import tiny_config
from .test_fast_paths import randomise_norms

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"


def run_benchmark(script: str, *args: str, cwd: Path) -> list[dict]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, result.stderr[-5000:]
    lines = [line for line in result.stdout.splitlines() if line.strip()]  # the tokenizer trainer prints blank lines
    assert lines and all(line.startswith("{") for line in lines), result.stdout  # nothing but JSON lines
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_vs_diffusion_quick_times_all_pipelines_in_both_dtypes(tmp_path):
    records = run_benchmark("vs_diffusion.py", "--quick", "--threads", "1", cwd=tmp_path)
    assert records[0]["benchmark"] == "vs_diffusion" and records[0]["quick"] is True
    sizes = {r["pipeline"]: r for r in records if "image_model_parameters_m" in r}
    assert set(sizes) == {"stagegan", "sd15", "small_ldm"}
    assert all(r["image_model_parameters_m"] > 0 and r["text_encoder_parameters_m"] > 0 for r in sizes.values())

    timed = {(r["pipeline"], r["dtype"]): r for r in records if "seconds_per_image" in r}
    assert set(timed) == {(p, d) for p in sizes for d in ("float32", "bfloat16")}
    for (pipeline, _), record in timed.items():
        assert record["seconds_per_image"] > 0
        if pipeline != "stagegan":  # set-up + 2 steps x the median step + decode (1 of 2 steps timed: extrapolated)
            assert record["num_inference_steps"] == 2 and record["timed_steps"] == 1 and record["extrapolated"]
            expected = record["setup_and_text_s"] + 2 * record["seconds_per_step"] + record["decode_and_postprocess_s"]
            assert record["seconds_per_image"] == pytest.approx(expected, rel=1e-3)

    ratios = [r for r in records if r.get("measurement") == "ratio"]
    assert {(r["diffusion"], r["dtype"]) for r in ratios} == {(p, d) for p in ("sd15", "small_ldm") for d in ("float32", "bfloat16")}
    for ratio in ratios:
        diffusion, ours = timed[ratio["diffusion"], ratio["dtype"]], timed["stagegan", ratio["dtype"]]
        assert ratio["times_slower_than_stagegan"] == pytest.approx(
            diffusion["seconds_per_image"] / ours["seconds_per_image"], rel=1e-3
        )


def test_glu_backward_times_every_glu_of_a_generator_step(tmp_path):
    records = run_benchmark(
        "glu_backward.py", "--resolution", "32", "--generator_channels", "4", "--batch_size", "2", "--rounds", "2",
        "--threads", "1", cwd=tmp_path,
    )
    header = records[0]
    # level 1: the projection's GLU and three upsampling blocks; levels 2 and 3: two residual blocks and one upsampling
    assert header["benchmark"] == "glu_backward" and header["shapes"] == 1 + 3 + 2 * (2 + 1)
    per_shape = [r for r in records if "shape" in r]
    assert {r["dtype"] for r in per_shape} == {"float32", "bfloat16"}
    for dtype in ("float32", "bfloat16"):
        rows = [r for r in per_shape if r["dtype"] == dtype]
        assert sum(r["calls_per_step"] for r in rows) == header["shapes"]
        assert all(r["shape"][0] == 2 and r["shape"][1] % 2 == 0 for r in rows)  # batch 2, both GLU halves
        (total,) = [r for r in records if r.get("part") and r["dtype"] == dtype]
        assert total["aten_ms"] == pytest.approx(sum(r["calls_per_step"] * r["aten_ms"] for r in rows), rel=1e-2)
        assert total["decomposed_vs_aten"] == pytest.approx(total["decomposed_ms"] / total["aten_ms"], rel=1e-2)


@pytest.mark.slow
def test_generator_speed_counts_the_phase_convolutions_and_plots(tmp_path):
    torch.manual_seed(0)
    generator = StageGANGenerator(tiny_config(initializer_range=0.1)).eval()
    randomise_norms(generator)
    generator.save_pretrained(tmp_path / "pipeline" / "image_generator")  # as in a saved pipeline
    records = run_benchmark(
        "generator_speed.py", "--generator", str(tmp_path / "pipeline"), "--batch_sizes", "1", "2", "--repeats", "1",
        "--threads", "1", cwd=tmp_path,
    )
    header = records[0]
    assert header["resolution"] == [16, 32, 64] and header["parameters"] == generator.num_parameters()
    # UpBlock runs nearest-x2 + 3x3 conv as 2x2 phase convolutions: fewer FLOPs executed than the architecture names
    assert 0 < header["flops_per_image"] < header["nominal_flops_per_image"]
    measured = {(r["mode"], r["batch"]): r for r in records if "mode" in r}
    assert set(measured) == {(mode, batch) for mode in ("float32", "bfloat16") for batch in (1, 2)}
    for batch in (1, 2):  # the bf16 error against fp32, on contrasted images
        assert measured["float32", batch]["float32_image_std"] > 0.05
        assert 0 < measured["bfloat16", batch]["max_error_percent_of_range"] < 3
    assert {r["measurement"] for r in records if "measurement" in r} == {"matmul_float32", "matmul_bfloat16", "peak_memory"}

    pytest.importorskip("matplotlib")  # the `benchmarks` extra
    results = tmp_path / "batch.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in records))
    out = tmp_path / "plot.png"
    (written,) = run_benchmark("plot_batch_sizes.py", str(results), "--out", str(out), cwd=tmp_path)
    assert written["modes"] == ["bfloat16", "float32"]
    assert out.read_bytes().startswith(b"\x89PNG")


def test_sample_grids_draw_every_level_and_the_one_word_rows(pipe, saved, tmp_path):
    records = run_benchmark("sample_grids.py", str(saved), "--out", str(tmp_path / "g"), "--columns", "3", "--cell", "32", cwd=tmp_path)
    levels, one_word = records
    assert levels["rows"] == ["x1", "x2", "x3"] and len(levels["captions"]) == 8
    grid = np.asarray(Image.open(levels["path"]), dtype=int)
    assert grid.shape == (3 * 32, 8 * 32, 3)  # one row per level, 4 captions x 2 noise draws
    # five captions, each differing from the first in exactly one colour word
    first, *others = [caption.split() for caption in one_word["captions"]]
    assert len(others) == 4 and all(sum(a != b for a, b in zip(first, other)) == 1 for other in others)
    rows = np.asarray(Image.open(one_word["path"]), dtype=int)
    assert rows.shape == (5 * 32, 3 * 32, 3)
    # the same noise per column in every row: the first row is the pipeline's images of the first caption
    noise = torch.randn(3, pipe.image_generator.config.z_dim, generator=torch.Generator().manual_seed(0))
    expected = pipe([one_word["captions"][0]] * 3, latents=noise).images[0].resize((32, 32), Image.NEAREST)
    assert np.abs(rows[:32, :32] - np.asarray(expected, dtype=int)).max() <= 1


def test_plot_training_logs_reads_tensorboard_scalars(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    writer = SummaryWriter(str(run / "logs" / "stagegan"))
    for step in range(1, 41):
        writer.add_scalar("loss_d1", 1.0 / step, step)
        writer.add_scalar("loss_g1", 2.0, step)
    writer.add_scalar("judge/body_color", 0.25, 20)
    writer.add_scalar("judge/body_color", 0.75, 40)
    writer.close()
    records = {r["curve"]: r for r in run_benchmark("plot_training_logs.py", str(run), "--out", str(tmp_path / "c.png"), "--smooth", "4", cwd=tmp_path)}
    assert set(records) == {"loss_d1", "loss_g1", "judge/body_color"}
    assert records["loss_d1"]["points"] == 40 and records["loss_d1"]["first"] == 1.0
    assert records["loss_d1"]["last"] == pytest.approx(sum(1 / s for s in range(37, 41)) / 4)  # trailing mean of 4
    assert (records["judge/body_color"]["first"], records["judge/body_color"]["last"]) == (0.25, 0.75)
    assert (tmp_path / "c.png").stat().st_size > 0


def test_plot_training_logs_names_a_run_without_logs(tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "plot_training_logs.py"), str(tmp_path), "--out", str(tmp_path / "c.png")],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode != 0 and "no TensorBoard event file under" in result.stderr and "--report_to tensorboard" in result.stderr


@pytest.mark.slow
def test_level1_gan_learns_and_reports_its_distance_to_real_birds_against_the_floor(tmp_path):
    from hf_stagegan.evaluation.judge import build_judge

    cache = tmp_path / "cache"
    build_judge(32, cache, num_test=20, num_train=64, max_train_steps=3, batch_size=16, channels=4, progress=False)
    tiny = ["--resolution", "32", "--num_train", "64", "--num_images", "64", "--generator_channels", "8",
            "--discriminator_channels", "8", "--judge_resolution", "32", "--cache_dir", str(cache)]
    [untrained] = run_benchmark("level1_gan.py", *tiny, "--steps", "0", "--out", str(tmp_path / "untrained"), cwd=tmp_path)
    [trained] = run_benchmark("level1_gan.py", *tiny, "--steps", "150", "--no_spectral_norm", "--out",
                              str(tmp_path / "trained"), cwd=tmp_path)
    assert untrained["floor"] == trained["floor"] > 0  # the same two real sets
    for report in (untrained, trained):
        assert report["ratio"] == pytest.approx(report["fd"] / report["floor"])
        assert json.loads((tmp_path / f"{'trained' if report is trained else 'untrained'}.json").read_text()) == report
    assert trained["no_spectral_norm"] is True and untrained["no_spectral_norm"] is False
    assert trained["fd"] < 0.8 * untrained["fd"]  # 150 steps of L_D1 / L_G1 move x1 towards real birds
    # two rows of generated x1 over two rows of real ones, 8 a row, each 8 px cell drawn 4x
    assert Image.open(tmp_path / "trained.png").size == (8 * 32, 4 * 32)


@pytest.mark.slow
def test_level1_gan_scores_the_x1_of_a_saved_pipeline(saved, tmp_path):
    from hf_stagegan.evaluation.judge import build_judge

    cache = tmp_path / "cache"
    build_judge(32, cache, num_test=20, num_train=64, max_train_steps=3, batch_size=16, channels=4, progress=False)
    [report] = run_benchmark("level1_gan.py", "--model", str(saved), "--num_images", "64", "--cache_dir", str(cache),
                             "--out", str(tmp_path / "saved-x1"), cwd=tmp_path)
    generator = StageGANGenerator.from_pretrained(saved / "image_generator").eval()
    assert report["steps"] == 0 and report["resolution"] == generator.config.stage_resolutions[-1] == 64
    assert report["fd"] > 0 and report["ratio"] == pytest.approx(report["fd"] / report["floor"])
    # the grid's first cell is the saved level 1's first x1 for the report's seed, drawn 4x
    with torch.no_grad():
        noise = torch.randn(64, generator.config.z_dim, generator=torch.Generator().manual_seed(0))
        x1 = generator.level1(noise)[1][0]
    expected = ((x1.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy().repeat(4, 0).repeat(4, 1)
    cell = np.asarray(Image.open(tmp_path / "saved-x1.png"))[:64, :64]
    assert np.abs(cell.astype(int) - expected.astype(int)).max() <= 1
