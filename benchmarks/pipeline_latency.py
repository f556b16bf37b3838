"""End-to-end latency of StageGANPipeline per image, and the share spent outside the generator.

    python benchmarks/pipeline_latency.py                     # 256 px config, CLIP ViT-B/32-sized text tower, 2 threads
    python benchmarks/pipeline_latency.py --batch_sizes 1 8 --repeats 5 --output_type np
    python benchmarks/pipeline_latency.py --batch_sizes 4 8 --num_images_per_prompt 4   # text encoded once per prompt
    python benchmarks/pipeline_latency.py --dtype bfloat16                                # the whole pipeline in bf16

Random weights, built offline: the default `StageGANConfig()` (64 -> 128 -> 256 px, text_embed_dim 512) and a text
encoder with the shape of CLIP ViT-B/32's text tower (vocabulary 49408, hidden 512, 12 layers, 8 heads, projection
512, 77 positions), with a CLIP tokenizer trained on a few captions. Prompts are 8 distinct CUB-style captions of 16-20 tokens.

For each batch size it runs the whole `pipe(prompts)` call `--repeats` times after warm-up and, inside each call,
times its parts: `encode_prompt` (tokenize + text encoder), the generator forward and post-processing to
`--output_type`. "Outside the generator" is the whole call minus the generator, as a share of the same call; the
figures are medians over the repeats (per-call shares are robust to load from other processes, absolute times less
so). The target is under 10% outside the generator. One JSON line per measurement.
"""

import argparse
import statistics
import time

import torch
from common import DTYPES, emit, machine
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from hf_stagegan import StageGANConfig, StageGANGenerator, StageGANPipeline
from hf_stagegan.encoders import train_clip_tokenizer

CAPTIONS = [
    "this bird has a red body with black wings and a short pointed orange beak",
    "a small bird with a blue crown, white belly and grey wings with white wingbars",
    "this bird is yellow with black on its wings and has a very short beak",
    "a medium sized bird with a brown back, a white throat and a long thin beak",
    "this bird has a black head, an orange breast and white patches on its dark wings",
    "a green bird with a yellow belly, a red eyering and a small curved bill",
    "the bird has a grey body, a black tail and a bright red crest on its head",
    "a tiny brown bird with streaks on its chest and a short conical beak",
]


class PartTimer:
    """Wall time of the pipeline's parts within one call: `encode_prompt`, the generator forward, `postprocess`."""

    def __init__(self, pipe: StageGANPipeline):
        self.seconds: dict[str, float] = {}
        pipe.encode_prompt = self.wrap("text encoding", pipe.encode_prompt)
        pipe.image_processor.postprocess = self.wrap("post-processing", pipe.image_processor.postprocess)
        pipe.image_generator.register_forward_pre_hook(lambda *_: self.start("generator"))
        pipe.image_generator.register_forward_hook(lambda *_: self.stop("generator"))
        self._started: dict[str, float] = {}

    def start(self, name):
        self._started[name] = time.perf_counter()

    def stop(self, name):
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - self._started.pop(name)

    def wrap(self, name, fn):
        def timed(*args, **kwargs):
            self.start(name)
            try:
                return fn(*args, **kwargs)
            finally:
                self.stop(name)

        return timed


# CLIP ViT-B/32's text tower
VIT_B32_TEXT = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8, projection_dim=512)


def build_pipeline(generator_config: StageGANConfig | None = None, text_config: dict | None = None) -> StageGANPipeline:
    """Random weights: `generator_config` (default: `StageGANConfig()`, 256 px) and a CLIP text tower (default: ViT-B/32's)."""
    torch.manual_seed(0)
    tokenizer = train_clip_tokenizer(CAPTIONS * 25, vocab_size=1000, model_max_length=77)
    text_config = CLIPTextConfig(
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(text_config or VIT_B32_TEXT),
    )
    text_encoder = CLIPTextModelWithProjection(text_config).eval()
    generator = StageGANGenerator(generator_config or StageGANConfig()).eval()
    pipe = StageGANPipeline(tokenizer=tokenizer, text_encoder=text_encoder, image_generator=generator)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output_type", default="pil", choices=["pil", "np", "pt"])
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="pipe.to(dtype)")
    parser.add_argument(
        "--num_images_per_prompt", type=int, default=1, help="1: every image has its own prompt (the worst case)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    pipe = build_pipeline().to(DTYPES[args.dtype])
    tokens = [len(ids) for ids in pipe.tokenizer(CAPTIONS).input_ids]
    emit(
        benchmark="pipeline_latency", **machine(torch.device("cpu")), dtype=args.dtype,
        resolution=pipe.image_generator.config.stage_resolutions,
        generator_parameters=pipe.image_generator.num_parameters(), text_encoder_parameters=pipe.text_encoder.num_parameters(),
        output_type=args.output_type, prompt_tokens=[min(tokens), max(tokens)], repeats=args.repeats,
    )

    timer = PartTimer(pipe)
    for batch in args.batch_sizes:
        per_prompt = args.num_images_per_prompt
        if batch % per_prompt:
            parser.error(f"batch size {batch} is not a multiple of --num_images_per_prompt {per_prompt}")
        prompts = [CAPTIONS[index % len(CAPTIONS)] for index in range(batch // per_prompt)]
        runs = []
        for index in range(1 + args.repeats):  # the first run warms up
            timer.seconds = {}
            start = time.perf_counter()
            pipe(
                prompts,
                num_images_per_prompt=per_prompt,
                generator=torch.Generator().manual_seed(index),
                output_type=args.output_type,
            )
            runs.append({"total": time.perf_counter() - start, **timer.seconds})
        runs = runs[1:]

        def median_ms(key, runs=runs, batch=batch):
            return statistics.median(run[key] for run in runs) / batch * 1e3

        def median_share(key, runs=runs):
            return 100 * statistics.median(run[key] / run["total"] for run in runs)

        for run in runs:  # input checks, noise, eval-mode switching, device moves: the pipeline's own overhead
            run["other"] = run["total"] - run["generator"] - run["text encoding"] - run["post-processing"]
        outside = 100 * statistics.median(1 - run["generator"] / run["total"] for run in runs)
        emit(
            benchmark="pipeline_latency", dtype=args.dtype, batch=batch, prompts=len(prompts),
            num_images_per_prompt=per_prompt, ms_per_image=median_ms("total"),
            generator_ms_per_image=median_ms("generator"), text_encoding_ms_per_image=median_ms("text encoding"),
            postprocessing_ms_per_image=median_ms("post-processing"), other_ms_per_image=median_ms("other"),
            percent_outside_generator=outside, percent_text=median_share("text encoding"),
            percent_postprocessing=median_share("post-processing"), percent_other=median_share("other"),
        )


if __name__ == "__main__":
    main()
