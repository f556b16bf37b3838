"""The real training scripts, run as a user runs them (subprocesses, tiny settings): single process, two processes,
checkpoint + resume, a kill while a checkpoint is written, faults, bad data, and the push to the (faked) Hub."""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPVisionConfig

from hf_stagegan import StageGANDiscriminator, StageGANGenerator, StageGANPipeline
from hf_stagegan.base_clip import base_clip_folder
from hf_stagegan.checkpointing import list_checkpoints, resolve_checkpoint
from hf_stagegan.cli import main as cli_main
from hf_stagegan.clip_finetuning import SMALL_CLIP
from hf_stagegan.data import all_captions
from hf_stagegan.data.synthbirds import build_synthbirds, load_synthbirds
from hf_stagegan.encoders import clip_tokenizer_from_bpe, find_clip_bpe, train_clip_tokenizer
from hf_stagegan.training import resolve_mixed_precision

from .fake_datasets import write_fake_cub
from .test_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
TRAIN = str(ROOT / "examples" / "train.py")
FINETUNE_CLIP = str(ROOT / "examples" / "finetune_clip.py")
TINY = [
    "--synthbirds_num_train", "32", "--clip_finetune_steps", "2", "--clip_batch_size", "8", "--train_batch_size", "8",
    "--generator_channels", "8", "--discriminator_channels", "8", "--resolution", "32", "--report_to", "none",
    "--validation_steps", "1000", "--checkpointing_steps", "2", "--evaluation_images", "0",
]

TINY_BASE_CLIP = dict(
    num_train=48, vision_pretrain_steps=2, max_train_steps=2, num_negatives=1, batch_size=16, resolution=32,
    projection_dim=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, patch_size=8,
)

pytestmark = pytest.mark.slow
try:
    BPE_AVAILABLE = bool(find_clip_bpe())
except FileNotFoundError:
    BPE_AVAILABLE = False


def load_script(path: Path, name: str):
    """A script (examples/, benchmarks/) imported as a module, to call its functions in-process."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def evaluation_cache(tmp_path_factory):
    """A tiny 32 px judge and evaluation CLIP, built by the real build functions, for the training script's evaluation,
    and a tiny SynthBirds base CLIP for its CLIP_FT to start from."""
    from hf_stagegan.base_clip import build_base_clip
    from hf_stagegan.evaluation.eval_clip import build_eval_clip
    from hf_stagegan.evaluation.judge import build_judge

    folder = tmp_path_factory.mktemp("evaluation-cache")
    build_judge(32, folder, num_test=20, num_train=64, max_train_steps=3, batch_size=16, channels=4, progress=False)
    build_eval_clip(
        folder, num_test=100, num_train=64, max_train_steps=3, batch_size=16, projection_dim=16, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
    )
    build_base_clip(folder, num_test=10, **TINY_BASE_CLIP)
    return folder


@pytest.fixture(autouse=True)
def use_evaluation_cache(evaluation_cache, monkeypatch):
    monkeypatch.setenv("HF_STAGEGAN_CACHE", str(evaluation_cache))  # seen by `run` and by in-process `train.main`


def run(args, tmp_path, check=True, timeout=600):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=tmp_path)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def safetensors_of(folder):
    return load_file(Path(folder) / "model.safetensors")


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_train_single_process_writes_a_loadable_pipeline(tmp_path):
    out = tmp_path / "out"
    run([TRAIN, *TINY, "--max_train_steps", "3", "--use_ema", "--ema_decay", "0.5", "--output_dir", str(out),
         "--report_to", "tensorboard", "--evaluation_images", "12", "--validation_steps", "2"], tmp_path)

    assert {"model_index.json", "README.md", "samples.png", "discriminator", "clip", "validation"} <= {p.name for p in out.iterdir()}
    assert [step for step, _ in list_checkpoints(out)] == [2, 3]
    assert (out / "validation" / "step-000003.png").is_file()
    assert "pipeline_tag: text-to-image" in (out / "README.md").read_text()
    # the pipeline carries the EMA generator, and it is the one the last checkpoint holds
    assert_same_weights(safetensors_of(out / "image_generator"), safetensors_of(out / "checkpoint-3" / "ema_generator"))
    # whose batch-norm statistics were recomputed for its own weights, not copied from the training generator
    ema, trained = safetensors_of(out / "checkpoint-3" / "ema_generator"), safetensors_of(out / "checkpoint-3" / "generator")
    running = [key for key in trained if key.endswith("running_mean")]
    assert running and all(not torch.equal(ema[key], trained[key]) for key in running)
    scalars, images = set(), set()
    for events in (out / "logs").rglob("events.out.tfevents.*"):
        tags = EventAccumulator(str(events)).Reload().Tags()
        scalars, images = scalars | set(tags["scalars"]), images | set(tags["images"])
    assert {"loss_d1", "loss_g3", "loss_clip_ft", "lr_generator", "lr_discriminator"} <= scalars and "validation" in images
    assert {"judge/body_color", "judge/beak_length", "eval/r_precision_eval_clip", "eval/judge_fd_ratio"} <= scalars
    # the final evaluation: `hf-stagegan evaluate`'s report (judge + R-precision on 12 held-out captions), in the card
    report = json.loads((out / "evaluation.json").read_text())
    assert set(report["metrics"]) == {"judge", "r_precision"} and report["generation"]["num_images"] == 12
    assert set(report["metrics"]["r_precision"]) == {"eval_clip", "clip_ft"}
    assert 0.0 <= report["metrics"]["judge"]["generated"]["accuracy"]["body_color"] <= 1.0
    assert "model-index" in (out / "README.md").read_text()
    # no --mixed_precision and no accelerate config: auto, resolved for this CPU and recorded in the card
    assert f"| mixed_precision | {resolve_mixed_precision('auto', 'cpu')} |" in (out / "README.md").read_text()

    pipe = StageGANPipeline.from_pretrained(out)
    image = pipe("a red bird", generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)
    clip = CLIPModel.from_pretrained(out / "clip")
    assert clip.config.projection_dim == pipe.image_generator.config.text_embed_dim
    # on SynthBirds, CLIP_FT started from the cached base CLIP: its tokenizer, its weights fine-tuned
    base = base_clip_folder()
    assert pipe.tokenizer.get_vocab() == AutoTokenizer.from_pretrained(base).get_vocab()
    base_weights, tuned = safetensors_of(base), safetensors_of(out / "clip")
    assert base_weights.keys() == tuned.keys() and any(not torch.equal(base_weights[k], tuned[k]) for k in tuned)


def test_clip_from_scratch_trains_its_own_tokenizer_and_clip(tmp_path):
    out = tmp_path / "out"
    run([TRAIN, *TINY, "--max_train_steps", "1", "--clip_from_scratch", "--output_dir", str(out)], tmp_path)
    birds = load_synthbirds(num_train=32, num_test=0, resolution=32)["train"]
    expected = train_clip_tokenizer(all_captions(birds, "captions"), vocab_size=1000)
    vocab = AutoTokenizer.from_pretrained(out / "clip").get_vocab()
    assert vocab == expected.get_vocab() != AutoTokenizer.from_pretrained(base_clip_folder()).get_vocab()
    assert CLIPModel.from_pretrained(out / "clip").config.vision_config.hidden_size == SMALL_CLIP["hidden_size"]
    refused = run([TRAIN, *TINY, "--clip_from_scratch", "--clip_model_name_or_path", str(out / "clip"),
                   "--output_dir", str(tmp_path / "other")], tmp_path, check=False)
    assert refused.returncode == 2 and "--clip_model_name_or_path or --clip_from_scratch, not both" in refused.stderr


def test_ablations_from_the_full_run_score_the_generators_their_flags_save(tmp_path):
    """`benchmarks/ablations.py` scores `no_ema` and `ema_copied_batch_norm` from the full run's last checkpoint
    instead of training again: that holds only while neither the moving average nor its batch-norm statistics feed
    back into training. Checked against real runs with each variant's flags."""
    ablations = load_script(ROOT / "benchmarks" / "ablations.py", "ablations_script")
    common = [TRAIN, *TINY, "--max_train_steps", "3", "--evaluation_images", "12", "--validation_steps", "2", "--seed", "3"]
    run([*common, "--output_dir", str(tmp_path / "full")], tmp_path)
    full = safetensors_of(tmp_path / "full" / "image_generator")
    for variant in sorted(ablations.FROM_FULL_RUN):
        run([*common, *ablations.VARIANTS[variant], "--output_dir", str(tmp_path / f"{variant}-trained")], tmp_path)
        ablations.evaluate_from_full_run(variant, tmp_path / "full", tmp_path / variant, seed=3, evaluation_images=12)

        derived = safetensors_of(tmp_path / variant / "image_generator")
        assert_same_weights(derived, safetensors_of(tmp_path / f"{variant}-trained" / "image_generator"))
        assert any(not torch.equal(full[key], derived[key]) for key in derived), variant  # the check above could fail
        derived, trained = (
            json.loads((tmp_path / name / "evaluation.json").read_text())["metrics"] for name in (variant, f"{variant}-trained")
        )
        assert derived["judge"]["generated"] == trained["judge"]["generated"]
        assert derived["r_precision"]["eval_clip"]["generated"]["mean"] == pytest.approx(
            trained["r_precision"]["eval_clip"]["generated"]["mean"]
        )

    with pytest.raises(FileNotFoundError, match="no checkpoint"):  # a run folder without checkpoints is named
        ablations.evaluate_from_full_run("no_ema", tmp_path / "no_ema", tmp_path / "again", seed=3, evaluation_images=12)
    with pytest.raises(ValueError, match="`variant` must be one of"):
        ablations.evaluate_from_full_run("full", tmp_path / "full", tmp_path / "again", seed=3, evaluation_images=12)


def test_checkpoint_curve_scores_each_checkpoint_as_the_run_scores_its_pipeline(tmp_path, capsys, monkeypatch):
    """`benchmarks/checkpoint_curve.py`: the last checkpoint's EMA generator is the saved one, so its row must be the
    run's own final evaluation; the earlier checkpoint is another generator."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # as when run as a script: it imports ablations.py
    curve = load_script(ROOT / "benchmarks" / "checkpoint_curve.py", "checkpoint_curve")
    out = tmp_path / "run"
    run([TRAIN, *TINY, "--max_train_steps", "4", "--evaluation_images", "12", "--seed", "3", "--output_dir", str(out)], tmp_path)
    plot = tmp_path / "curve.png"
    curve.main([str(out), "--evaluation_images", "12", "--seed", "3", "--out", str(tmp_path / "curve.jsonl"), "--plot", str(plot)])

    rows = [json.loads(line) for line in (tmp_path / "curve.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2, 4]
    final = json.loads((out / "evaluation.json").read_text())["metrics"]
    assert rows[1]["body"] == final["judge"]["generated"]["accuracy"]["body_color"]
    assert rows[1]["judge_fd_ratio"] == pytest.approx(final["judge"]["fd_ratio"])
    assert rows[1]["r_precision"] == pytest.approx(final["r_precision"]["eval_clip"]["generated"]["mean"])
    assert rows[0]["judge_fd_ratio"] != rows[1]["judge_fd_ratio"]
    assert "| 4 | " in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):  # not a run folder
        curve.main([str(tmp_path)])
    assert "is not a finished train.py output folder" in capsys.readouterr().err


def test_two_processes_keep_identical_weights(tmp_path):
    out = tmp_path / "ddp"
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]
    result = run([*launch, TRAIN, *TINY, "--cpu", "--max_train_steps", "2", "--output_dir", str(out)], tmp_path)
    log = result.stdout + result.stderr
    assert "2 process(es)" in log
    assert "Weights identical across 2 processes" in log
    assert log.count("Saved the pipeline to") == 1  # only the main process writes the result
    assert [step for step, _ in list_checkpoints(out)] == [2]
    assert sorted(p.name for p in (out / "checkpoint-2").glob("random_states_*.pkl")) == ["random_states_0.pkl", "random_states_1.pkl"]
    StageGANPipeline.from_pretrained(out)


def test_resume_equals_uninterrupted_training(tmp_path):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run([TRAIN, *TINY, "--max_train_steps", "4", "--output_dir", str(straight)], tmp_path)
    run([TRAIN, *TINY, "--max_train_steps", "2", "--output_dir", str(interrupted)], tmp_path)
    result = run([TRAIN, *TINY, "--max_train_steps", "4", "--output_dir", str(interrupted), "--resume_from_checkpoint", "latest"], tmp_path)
    assert "Resumed from" in result.stdout + result.stderr
    for component in ("image_generator", "discriminator"):
        assert_same_weights(safetensors_of(straight / component), safetensors_of(interrupted / component))


def test_resume_continues_the_learning_rate_schedule(tmp_path, capsys):
    cosine = ["--lr_scheduler", "cosine", "--lr_warmup_steps", "1"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run([TRAIN, *TINY, *cosine, "--max_train_steps", "5", "--output_dir", str(straight)], tmp_path)
    run([TRAIN, *TINY, *cosine, "--max_train_steps", "5", "--output_dir", str(interrupted)], tmp_path)
    shutil.rmtree(interrupted / "checkpoint-5")  # as if it had been stopped after step 4
    run([TRAIN, *TINY, *cosine, "--max_train_steps", "5", "--output_dir", str(interrupted), "--resume_from_checkpoint",
         "latest"], tmp_path)
    for component in ("image_generator", "discriminator"):
        assert_same_weights(safetensors_of(straight / component), safetensors_of(interrupted / component))
    # and the schedule is not a no-op: the same run at a constant rate ends elsewhere
    constant = tmp_path / "constant"
    run([TRAIN, *TINY, "--max_train_steps", "5", "--output_dir", str(constant)], tmp_path)
    assert not torch.equal(safetensors_of(constant / "image_generator")["level3.to_image.0.weight"],
                           safetensors_of(straight / "image_generator")["level3.to_image.0.weight"])
    train = load_script(TRAIN, "train_script")
    for bad, message in (
        (["--lr_warmup_steps", "10"], "--lr_warmup_steps 10 needs a schedule with a warm-up, not --lr_scheduler constant"),
        (["--lr_scheduler", "cosine", "--lr_warmup_steps", "-1"], "--lr_warmup_steps must be >= 0, got -1"),
        (["--lr_scheduler", "step"], "argument --lr_scheduler: invalid choice: 'step'"),
    ):
        with pytest.raises(SystemExit):
            train.parse_args(bad)
        assert message in capsys.readouterr().err


KILL_DURING_SAVE = """
import os, runpy, signal, sys
import hf_stagegan.checkpointing as checkpointing
saves = []
original = checkpointing._fsync_tree
def fsync_then_die(folder):
    saves.append(folder)
    if len(saves) == 2:  # everything of checkpoint-4 is in its .tmp folder; die before the rename
        os.kill(os.getpid(), signal.SIGKILL)
    original(folder)
checkpointing._fsync_tree = fsync_then_die
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_kill_while_writing_a_checkpoint_leaves_a_loadable_newest(tmp_path):
    out = tmp_path / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DURING_SAVE)
    killed = run([str(driver), TRAIN, *TINY, "--max_train_steps", "6", "--output_dir", str(out)], tmp_path, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert (out / "checkpoint-4.tmp").is_dir() and not (out / "checkpoint-4").exists()
    newest = resolve_checkpoint(out, "latest")
    assert newest.name == "checkpoint-2"
    StageGANGenerator.from_pretrained(newest / "generator")

    result = run([TRAIN, *TINY, "--max_train_steps", "6", "--output_dir", str(out), "--resume_from_checkpoint", "latest"], tmp_path)
    assert "checkpoint-2 at step 2" in result.stdout + result.stderr
    assert [step for step, _ in list_checkpoints(out)] == [4, 6]
    assert not list(out.glob("*.tmp"))


NAN_AT_STEP_3 = """
import runpy, sys
import torch
import hf_stagegan.training as training
calls = []
original = training.discriminator_loss
def nan_from_step_3(real, fake):
    calls.append(1)
    loss = original(real, fake)
    return loss * float("nan") if len(calls) > 6 else loss  # three D losses per step
training.discriminator_loss = nan_from_step_3
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_non_finite_loss_stops_with_the_last_checkpoint_intact(tmp_path):
    out = tmp_path / "out"
    driver = tmp_path / "driver.py"
    driver.write_text(NAN_AT_STEP_3)
    result = run([str(driver), TRAIN, *TINY, "--max_train_steps", "6", "--output_dir", str(out)], tmp_path, check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Loss `loss_d1` is nan" in log and "Training stopped at step 2" in log
    assert f"the last good checkpoint is {out / 'checkpoint-2'}" in log
    assert [step for step, _ in list_checkpoints(out)] == [2]
    assert not (out / "model_index.json").exists()  # no half-trained result passed off as the final one
    generator = StageGANGenerator.from_pretrained(out / "checkpoint-2" / "generator")
    assert all(torch.isfinite(p).all() for p in generator.parameters())


def test_second_run_into_a_used_output_dir_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model_index.json").write_text("{}")
    result = run([TRAIN, *TINY, "--output_dir", str(out)], tmp_path, check=False)
    assert result.returncode != 0
    assert "is not empty (it holds ['model_index.json'])" in result.stderr
    assert "--resume_from_checkpoint latest" in result.stderr and "--overwrite_output_dir" in result.stderr
    assert (out / "model_index.json").read_text() == "{}"  # untouched


def test_missing_caption_column_lists_the_columns(tmp_path):
    data = build_synthbirds(tmp_path / "birds", num_train=8, num_test=0, resolution=32)
    result = run([TRAIN, *TINY, "--train_data_dir", str(data), "--caption_column", "description", "--output_dir", str(tmp_path / "o")], tmp_path, check=False)
    assert result.returncode != 0
    assert "description" in result.stderr and "'captions'" in result.stderr and "'image'" in result.stderr


def test_unreadable_image_is_named(tmp_path):
    data = build_synthbirds(tmp_path / "birds", num_train=8, num_test=0, resolution=32)
    broken = sorted((data / "train").glob("*.png"))[3]
    broken.write_bytes(broken.read_bytes()[:40])  # a truncated PNG
    result = run([TRAIN, *TINY, "--train_data_dir", str(data), "--output_dir", str(tmp_path / "o")], tmp_path, check=False)
    assert result.returncode != 0
    assert broken.name in result.stderr


def test_finetune_clip_from_scratch_lowers_its_loss(tmp_path):
    out = tmp_path / "clip"
    run([FINETUNE_CLIP, "--synthbirds_num_train", "64", "--max_train_steps", "30", "--train_batch_size", "16",
         "--hidden_size", "64", "--output_dir", str(out)], tmp_path)
    metrics = json.loads((out / "clip_ft_metrics.json").read_text())
    for term in ("sentence", "word"):
        assert metrics["loss_after"][term] < metrics["loss_before"][term] - 0.2, metrics
    CLIPModel.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out)("a red bird").input_ids[0] == 0  # our trained tokenizer, start token


def test_finetune_clip_with_vision_pretraining_and_hard_negatives(tmp_path):
    out = tmp_path / "clip"
    run([FINETUNE_CLIP, "--synthbirds_num_train", "64", "--max_train_steps", "3", "--train_batch_size", "16",
         "--hidden_size", "32", "--vision_pretrain_steps", "4", "--num_negatives", "2", "--output_dir", str(out)], tmp_path)
    metrics = json.loads((out / "clip_ft_metrics.json").read_text())
    pretraining = metrics["vision_pretraining"]
    assert pretraining["steps"] == 4 and metrics["num_negatives"] == 2
    assert pretraining["columns"] == ["body_color", "wing_color", "crown_color", "beak_color"]  # SynthBirds' default
    assert set(pretraining["last_step"]) == {"loss", "accuracy"} and pretraining["last_step"]["loss"] > 0
    assert CLIPModel.from_pretrained(out).vision_model is not None

    result = run([FINETUNE_CLIP, "--vision_pretrain_steps", "2", "--vision_pretrain_columns", "tail_color",
                  "--synthbirds_num_train", "16", "--train_batch_size", "8", "--output_dir", str(tmp_path / "bad")],
                 tmp_path, check=False)
    assert result.returncode != 0 and "'tail_color' is not in the dataset" in result.stderr
    result = run([FINETUNE_CLIP, "--vision_pretrain_columns", "body_color", "--output_dir", str(tmp_path / "bad")],
                 tmp_path, check=False)
    assert result.returncode == 2 and "--vision_pretrain_columns needs --vision_pretrain_steps" in result.stderr
    assert not (tmp_path / "bad").exists()


@pytest.fixture
def fresh_accelerate_state():
    """train.py in this process as in a new one: accelerate's process-wide state, which earlier tests initialised
    (without mixed precision), is reset before and after, so that train.py's own choice (auto: bf16 on a bf16 CPU)
    applies."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def test_push_to_hub_uploads_the_result(tmp_path, monkeypatch, fresh_accelerate_state):
    hub = FakeHub(monkeypatch)
    train = load_script(TRAIN, "train_script")
    out = tmp_path / "out"
    train.main([*TINY, "--max_train_steps", "2", "--output_dir", str(out), "--push_to_hub", "--hub_model_id", "org/stagegan-tiny"])

    [commit] = hub.commits
    assert (commit.repo_id, commit.message) == ("org/stagegan-tiny", "StageGAN trained for 2 steps")
    folders = {path.split("/")[0] for path in commit.files}
    assert {"model_index.json", "README.md", "samples.png", "image_generator", "text_encoder", "tokenizer", "discriminator", "clip"} <= folders
    assert not folders & {"checkpoint-2", "logs", "validation"}
    assert not [path for path in commit.files if path.endswith((".bin", ".pkl", ".pt"))]
    assert Image.open(out / "samples.png").size[0] > 0


def test_judge_and_evaluation_clip_build_in_a_second_process_only_beside_a_base_clip_build(
    tmp_path, monkeypatch, evaluation_cache, fresh_accelerate_state
):
    from accelerate import Accelerator

    from hf_stagegan.base_clip import base_clip_folder
    from hf_stagegan.evaluation.judge import judge_folder

    train = load_script(TRAIN, "train_script")
    accelerator = Accelerator(cpu=True)
    evaluating = train.parse_args([*TINY, "--evaluation_images", "8"])
    assert train.start_evaluation_build(evaluating, accelerator, True) is None  # the fixture's cache has the base CLIP

    partial = tmp_path / "cache-without-base-clip"  # judge and evaluation CLIP cached, base CLIP missing
    shutil.copytree(evaluation_cache, partial, ignore=shutil.ignore_patterns(base_clip_folder(evaluation_cache).name))
    monkeypatch.setenv("HF_STAGEGAN_CACHE", str(partial))
    assert train.start_evaluation_build(evaluating, accelerator, True) is None  # nothing to build beside it

    empty = tmp_path / "empty-cache"
    monkeypatch.setenv("HF_STAGEGAN_CACHE", str(empty))
    for args in (train.parse_args([*TINY, "--clip_from_scratch"]), train.parse_args([*TINY, "--dataset_name", "x"])):
        assert train.start_evaluation_build(args, accelerator, True) is None  # no base CLIP to build
    assert train.start_evaluation_build(evaluating, accelerator, False) is None  # nothing evaluated on SynthBirds
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert train.start_evaluation_build(evaluating, accelerator, True) is None  # one core: nothing to overlap
    monkeypatch.setattr(train.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    build = train.start_evaluation_build(evaluating, accelerator, True)  # a fresh machine: the real builds start
    assert build is not None and build.process.is_alive() and "32 px" in build.description
    build.process.terminate()  # a full judge and evaluation CLIP take minutes; the builds themselves are tested elsewhere
    assert build.wait() is False and not judge_folder(32, empty).exists()


def test_discriminator_width_and_spectral_norm_flags_take_one_value_or_one_per_level(capsys):
    train = load_script(TRAIN, "train_script")
    per_level = train.parse_args(["--discriminator_channels", "64", "32", "32", "--discriminator_spectral_norm", "false", "true", "true"])
    config = train.build_config(per_level, 16)
    assert config.discriminator_channels == [64, 32, 32] and config.discriminator_spectral_norm == [False, True, True]
    config = train.build_config(train.parse_args(["--discriminator_channels", "48", "--discriminator_spectral_norm", "false"]), 16)
    assert config.discriminator_channels == 48 and config.discriminator_spectral_norm is False
    for bad, message in (
        (["--discriminator_channels", "64", "32"], "--discriminator_channels takes one width >= 1 or three (D1 D2 D3), got [64, 32]"),
        (["--discriminator_channels", "0"], "--discriminator_channels takes one width >= 1 or three (D1 D2 D3), got [0]"),
        (["--discriminator_spectral_norm", "false", "true"], "--discriminator_spectral_norm takes one value or three (D1 D2 D3)"),
        (["--discriminator_backbone", "conv", "clip"], "--discriminator_backbone takes one value or three (D1 D2 D3)"),
        (["--discriminator_backbone", "vit"], "argument --discriminator_backbone: invalid choice: 'vit'"),
    ):
        with pytest.raises(SystemExit):
            train.parse_args(bad)
        assert message in capsys.readouterr().err


def test_image_skip_flag_sets_the_config_and_defaults_to_the_patents_levels():
    train = load_script(TRAIN, "train_script")
    assert train.build_config(train.parse_args([]), 16).image_skip is False
    assert train.build_config(train.parse_args(["--image_skip"]), 16).image_skip is True
    assert train.build_config(train.parse_args(["--config_overrides", '{"image_skip": true}']), 16).image_skip is True


def test_generator_upsampling_flag_sets_the_config_and_refuses_other_modes(capsys):
    train = load_script(TRAIN, "train_script")
    assert train.build_config(train.parse_args([]), 16).generator_upsampling == "nearest"
    assert train.build_config(train.parse_args(["--generator_upsampling", "bilinear"]), 16).generator_upsampling == "bilinear"
    with pytest.raises(SystemExit):
        train.parse_args(["--generator_upsampling", "bicubic"])
    assert "invalid choice: 'bicubic'" in capsys.readouterr().err


def test_unconditional_discriminator_weight_flag_sets_the_config(capsys):
    train = load_script(TRAIN, "train_script")
    assert train.build_config(train.parse_args([]), 16).unconditional_discriminator_weight == 0.0
    config = train.build_config(train.parse_args(["--unconditional_discriminator_weight", "0.5"]), 16)
    assert config.unconditional_discriminator_weight == 0.5
    with pytest.raises(SystemExit):
        train.parse_args(["--unconditional_discriminator_weight", "-1"])
    assert "--unconditional_discriminator_weight must be >= 0, got -1.0" in capsys.readouterr().err


def test_adam_beta_flags_default_to_0_and_0_9_and_refuse_values_outside_0_1(capsys):
    train = load_script(TRAIN, "train_script")
    args = train.parse_args([])
    assert (args.generator_adam_beta1, args.generator_adam_beta2) == (0.0, 0.9)
    assert (args.discriminator_adam_beta1, args.discriminator_adam_beta2) == (0.0, 0.9)
    assert train.parse_args(["--discriminator_adam_beta2", "0.999"]).discriminator_adam_beta2 == 0.999
    with pytest.raises(SystemExit):
        train.parse_args(["--generator_adam_beta2", "1"])
    assert "--generator_adam_beta2 must be in [0, 1), got 1.0" in capsys.readouterr().err


def test_text_loss_hard_negatives_flag_sets_the_config_and_the_loader_makes_the_negatives(tmp_path):
    train = load_script(TRAIN, "train_script")
    assert train.build_config(train.parse_args([]), 16).text_loss_hard_negatives is False
    assert train.build_config(train.parse_args(["--text_loss_hard_negatives"]), 16).text_loss_hard_negatives is True
    # without the matching-aware D term nothing else asks the loader for swapped captions: the option alone must
    out = tmp_path / "run"
    run([TRAIN, *TINY, "--max_train_steps", "2", "--text_loss_hard_negatives", "--mismatched_text_weight", "0",
         "--output_dir", str(out)], tmp_path)
    assert json.loads((out / "image_generator" / "config.json").read_text())["text_loss_hard_negatives"] is True


def test_discriminator_backbone_flag_takes_clip_ft_s_vision_config():
    train = load_script(TRAIN, "train_script")
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, image_size=32, patch_size=8)
    config = train.build_config(train.parse_args(["--discriminator_backbone", "conv", "clip", "clip"]), 16, vision)
    assert config.discriminator_backbone == ["conv", "clip", "clip"]
    assert CLIPVisionConfig(**config.discriminator_vision_config).hidden_size == 16
    assert train.build_config(train.parse_args([]), 16, vision).discriminator_vision_config is None  # conv: none needed
    config = train.build_config(train.parse_args(["--config_overrides", '{"discriminator_backbone": "clip"}']), 16, vision)
    assert config.uses_vision_backbone and config.discriminator_vision_config["image_size"] == 32


def test_resume_equals_uninterrupted_training_with_discriminators_on_the_clip_tower(tmp_path):
    clip_levels = ["--discriminator_backbone", "conv", "clip", "clip", "--discriminator_spectral_norm", "true", "false", "false"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    run([TRAIN, *TINY, *clip_levels, "--max_train_steps", "4", "--output_dir", str(straight)], tmp_path)
    run([TRAIN, *TINY, *clip_levels, "--max_train_steps", "2", "--output_dir", str(interrupted)], tmp_path)
    run([TRAIN, *TINY, *clip_levels, "--max_train_steps", "4", "--output_dir", str(interrupted), "--resume_from_checkpoint",
         "latest"], tmp_path)
    for component in ("image_generator", "discriminator"):
        assert_same_weights(safetensors_of(straight / component), safetensors_of(interrupted / component))
    # the saved discriminator is whole: its frozen tower is CLIP_FT's image tower, as trained into this run's clip/
    discriminator = StageGANDiscriminator.from_pretrained(straight / "discriminator")
    assert discriminator.config.discriminator_backbone == ["conv", "clip", "clip"]
    clip_ft = CLIPModel.from_pretrained(straight / "clip").vision_model.state_dict()
    tower = discriminator.vision_backbone.state_dict()
    assert tower.keys() == clip_ft.keys() and all(torch.equal(tower[key], clip_ft[key]) for key in tower)


def test_train_two_steps_on_a_prepared_cub_folder(tmp_path):
    cub = write_fake_cub(tmp_path / "downloads")
    data = tmp_path / "cub"
    assert cli_main(["prepare-cub", *(f"--{key}={value}" for key, value in cub.items()), "--output_dir", str(data),
                     "--size", "48"]) == 0
    out = tmp_path / "out"
    result = run([TRAIN, *TINY, "--dataset_name", str(data), "--image_transform", "literature", "--max_train_steps", "2",
                  "--output_dir", str(out)], tmp_path)
    log = result.stdout + result.stderr
    assert "Using caption column 'captions'" in log and "8 examples, 1 steps per epoch, 2 steps" in log
    pipe = StageGANPipeline.from_pretrained(out)
    assert pipe("this bird has a red crown", generator=torch.Generator().manual_seed(0)).images[0].size == (32, 32)


@pytest.mark.skipif(not BPE_AVAILABLE, reason="needs open-clip-torch's BPE file: pip install --no-deps open-clip-torch")
def test_train_end_to_end_from_a_vit_b32_clip(tmp_path):
    # the pretrained-CLIP path (--clip_model_name_or_path openai/clip-vit-base-patch32), offline: the real architecture
    # and Hub config with random weights, OpenAI's BPE tokenizer; CLIP_FT fine-tunes it, regions from its 7 x 7 grid
    torch.manual_seed(0)
    clip_dir = tmp_path / "clip-vit-base-patch32"
    CLIPModel(CLIPConfig(text_config={"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1})).save_pretrained(clip_dir)
    clip_tokenizer_from_bpe().save_pretrained(clip_dir)
    out = tmp_path / "out"
    run([TRAIN, *TINY, "--synthbirds_num_train", "8", "--clip_batch_size", "4", "--train_batch_size", "4",
         "--clip_model_name_or_path", str(clip_dir), "--clip_finetune_steps", "1", "--clip_learning_rate", "1e-5",
         "--max_train_steps", "2", "--output_dir", str(out)], tmp_path)
    clip_ft = CLIPModel.from_pretrained(out / "clip")
    assert clip_ft.config.vision_config.patch_size == 32 and clip_ft.config.projection_dim == 512
    original, tuned = load_file(clip_dir / "model.safetensors"), clip_ft.state_dict()
    for name in ("text_model.embeddings.token_embedding.weight", "text_projection.weight",
                 "vision_model.embeddings.patch_embedding.weight", "visual_projection.weight"):
        assert not torch.equal(original[name], tuned[name]), name  # CLIP_FT fine-tuned both towers
    pipe = StageGANPipeline.from_pretrained(out)
    assert len(pipe.tokenizer) == 49408 and pipe.image_generator.config.text_embed_dim == 512
    assert pipe("a red bird", generator=torch.Generator().manual_seed(0)).images[0].size == (32, 32)
