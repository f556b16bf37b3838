"""Wall time of `hf-stagegan evaluate` (the whole protocol, every metric but Inception FID) on SynthBirds.

    python benchmarks/evaluate_speed.py                          # 1000 images, untrained main-job-sized 64 px pipeline
    python benchmarks/evaluate_speed.py --num_images 200 --metrics judge,r_precision   # the training script's final one
    python benchmarks/evaluate_speed.py --model stagegan-synthbirds --cache_dir ~/.cache/huggingface/hf_stagegan

Without `--model` the pipeline is the main job's architecture (16/32/64 px, 32 generator channels, `SMALL_CLIP` text
tower) with random weights, saved with its CLIP_FT (`clip/`). Without a `--cache_dir` that holds them, the judge and the
evaluation CLIP are the real architectures, built by the real build functions with a token training run (a few steps),
so the timing is right and the figures meaningless: it measures time only. Prints the report's per-stage timings, the
total wall time and the process's CPU time (steadier than wall time on a shared machine).
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from hf_stagegan import StageGANConfig, StageGANGenerator, StageGANPipeline
from hf_stagegan.clip_finetuning import SMALL_CLIP
from hf_stagegan.data import all_captions
from hf_stagegan.data.synthbirds import load_synthbirds
from hf_stagegan.encoders import build_clip_from_scratch, text_encoder_from_clip, train_clip_tokenizer
from hf_stagegan.evaluation.eval_clip import build_eval_clip, eval_clip_folder
from hf_stagegan.evaluation.judge import build_judge, judge_folder
from hf_stagegan.evaluation.protocol import evaluate


def untrained_pipeline(folder: Path) -> Path:
    captions = all_captions(load_synthbirds(num_train=200, num_test=0, resolution=64)["train"], "captions")
    tokenizer = train_clip_tokenizer(captions, vocab_size=1000)
    torch.manual_seed(0)
    clip_model = build_clip_from_scratch(tokenizer, **SMALL_CLIP).eval()
    config = StageGANConfig(
        stage_resolutions=[16, 32, 64], generator_channels=32, discriminator_channels=32,
        text_embed_dim=clip_model.config.projection_dim,
    )
    pipe = StageGANPipeline(tokenizer, text_encoder_from_clip(clip_model), StageGANGenerator(config).eval())
    pipe.save_pretrained(folder)
    clip_model.save_pretrained(folder / "clip")
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a saved pipeline (default: an untrained main-job-sized one)")
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--metrics", default="clip_score,r_precision,cmd,judge,matcher,fid")
    parser.add_argument("--fid_feature_extractor", default="judge", help="judge or clip (Inception needs its weights)")
    parser.add_argument("--cache_dir", help="built judge + evaluation CLIP (default: token-trained ones, timing only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", help="also write the whole report here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = args.model or str(untrained_pipeline(tmp / "pipeline"))
        cache_dir = args.cache_dir
        if cache_dir is None:  # token-trained evaluators in a temporary cache: never in a real one
            cache_dir = tmp / "cache"
            build_judge(64, cache_dir, num_test=100, num_train=256, max_train_steps=2, progress=False)
            build_eval_clip(cache_dir, num_test=100, num_train=256, max_train_steps=2)
        for folder in (judge_folder(64, cache_dir), eval_clip_folder(cache_dir)):
            if not (folder / "config.json").is_file():
                raise SystemExit(f"--cache_dir has no {folder.name}: build it with hf-stagegan build-judge / build-eval-clip")
        start, cpu_start = time.perf_counter(), time.process_time()
        report = evaluate(
            model, num_images=args.num_images, batch_size=args.batch_size, metrics=args.metrics,
            fid_feature_extractor=args.fid_feature_extractor, cache_dir=cache_dir, device="cpu", progress=False,
        )
        total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
    print(json.dumps({"num_images": args.num_images, "metrics": args.metrics, "threads": args.threads,
                      "timings_s": report["timings_s"], "wall_time_s": round(total, 1),
                      "process_cpu_time_s": round(cpu, 1)}, indent=2))


if __name__ == "__main__":
    main()
