"""
Level 1 alone: G1 and D1 of a StageGAN (noise -> x1, no text; claim 2) trained as an unconditional GAN on SynthBirds
at x1's size, the main job's way (the patent's L_D1 / L_G1, Adam with the main job's rates and betas, batch 16), and
scored by the Fréchet distance in the SynthBirds judge's feature space against real birds of the same size, read
against the real-vs-real floor. A quick screen of what level 1 needs to draw a bird (about 3 minutes a run on one CPU
thread at 16 px): with isolated levels (claim 8) level 1 learns from D1 alone, so D1's settings are its whole teacher.

    python benchmarks/level1_gan.py --out runs/level1/base                                        # the main job's D1
    python benchmarks/level1_gan.py --discriminator_channels 64 --no_spectral_norm --out runs/level1/d1-64-nosn

`--model PATH` trains nothing: it scores the x1 of a saved pipeline's generator the same way (what level 1 of a whole
run, e.g. the main job's, ends up drawing):

    python benchmarks/level1_gan.py --model stagegan-synthbirds --out runs/level1/main-job

Writes `<out>.json` (the settings, `fd`, `floor`, `ratio`, seconds) and `<out>.png` (two rows of generated x1 over two
rows of real birds, 4x nearest-neighbour) and prints the JSON line. The judge is the cached one for `--judge_resolution`
(32 px by default: it reads x1 upsampled, real birds the same way); the floor is the FD between two sets of real test
birds (seeds `FLOOR_DATA_SEED` and `--reference_seed`), the fake set is compared with the first.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from hf_stagegan import StageGANConfig, StageGANDiscriminator, StageGANGenerator
from hf_stagegan.evaluation.judge import FLOOR_DATA_SEED, judge_predict, load_judge, synthbirds_arrays
from hf_stagegan.evaluation.metrics import frechet_distance
from hf_stagegan.losses import discriminator_loss, generator_loss
from hf_stagegan.training import frozen


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2300, help="the main job's length when docs/results.md measured level 1 (3500 since)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resolution", type=int, default=64, help="x3's side; level 1 draws a quarter of it")
    parser.add_argument("--num_train", type=int, default=2000, help="SynthBirds training birds (the main job's)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--generator_channels", type=int, default=32)
    parser.add_argument("--discriminator_channels", type=int, default=32, help="D1's width")
    parser.add_argument("--no_spectral_norm", action="store_true", help="D1 without spectral norm")
    parser.add_argument("--learning_rate", type=float, default=5e-4, help="G1's and D1's")
    parser.add_argument("--num_images", type=int, default=500, help="generated and real images in each FD")
    parser.add_argument("--judge_resolution", type=int, default=32)
    parser.add_argument("--reference_seed", type=int, default=4004, help="SynthBirds seed of the floor's second real set")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache_dir", help="the judge's cache folder (default: the evaluation cache)")
    parser.add_argument("--model", help="score the x1 of this saved pipeline (folder) instead of training level 1")
    parser.add_argument("--out", required=True, help="path prefix of the JSON report and the grid")
    args = parser.parse_args(argv)
    for name in ("steps", "batch_size", "num_train", "num_images", "threads"):
        if getattr(args, name) < (0 if name == "steps" else 1):
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    return args


def to_level1(images: np.ndarray, side: int) -> torch.Tensor:
    """uint8 `(N, H, W, 3)` birds -> `(N, 3, side, side)` in [-1, 1], downsampled as training does for x1."""
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return F.interpolate(pixels, size=(side, side), mode="bilinear", antialias=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.model:  # a trained generator's level 1, nothing to train
        generator = StageGANGenerator.from_pretrained(Path(args.model) / "image_generator")
        config, g1 = generator.config, generator.level1
        args.resolution, args.steps = config.stage_resolutions[-1], 0
    else:
        side = args.resolution // 4
        config = StageGANConfig(
            stage_resolutions=[side, 2 * side, 4 * side], generator_channels=args.generator_channels,
            discriminator_channels=args.discriminator_channels, discriminator_spectral_norm=not args.no_spectral_norm,
        )
        g1, d1 = StageGANGenerator(config).level1, StageGANDiscriminator(config).level1
        g_optimizer = torch.optim.Adam(g1.parameters(), lr=args.learning_rate, betas=(0.5, 0.999))
        d_optimizer = torch.optim.Adam(d1.parameters(), lr=args.learning_rate, betas=(0.5, 0.999))
        real = to_level1(synthbirds_arrays("train", args.num_train, args.resolution, 0)[0], side)
    side = config.stage_resolutions[0]
    draws = torch.Generator().manual_seed(args.seed)
    start, d_loss, g_loss = time.perf_counter(), None, None
    for _ in range(args.steps):
        batch = real[torch.randint(0, len(real), (args.batch_size,), generator=draws)]
        _, fake = g1(torch.randn(args.batch_size, config.z_dim, generator=draws))
        d_loss = discriminator_loss(d1(batch), d1(fake.detach()))
        d_optimizer.zero_grad()
        d_loss.backward()
        d_optimizer.step()
        with frozen(d1):
            g_loss = generator_loss(d1(fake))
        g_optimizer.zero_grad()
        g_loss.backward()
        g_optimizer.step()
    train_seconds = time.perf_counter() - start

    g1.eval()
    with torch.no_grad():
        fake = torch.cat([g1(torch.randn(min(250, n), config.z_dim, generator=draws))[1]
                          for n in range(args.num_images, 0, -250)])
    judge = load_judge(args.judge_resolution, args.cache_dir)
    reference = to_level1(synthbirds_arrays("test", args.num_images, args.resolution, FLOOR_DATA_SEED)[0], side)
    second = to_level1(synthbirds_arrays("test", args.num_images, args.resolution, args.reference_seed)[0], side)
    features = [judge_predict(judge, images)[1] for images in (reference, second, fake)]
    fd, floor = frechet_distance(features[0], features[2]), frechet_distance(features[0], features[1])
    report = {
        "benchmark": "level1_gan", **{k: v for k, v in vars(args).items() if k not in ("out", "cache_dir")},
        "fd": fd, "floor": floor, "ratio": fd / floor, "train_seconds": round(train_seconds, 1),
        "final_d_loss": None if d_loss is None else d_loss.item(), "final_g_loss": None if g_loss is None else g_loss.item(),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    grid = torch.cat([fake[:16], reference[:16]])
    grid = F.interpolate(grid, scale_factor=4, mode="nearest")
    cells = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    rows = [np.concatenate(list(cells[i : i + 8]), axis=1) for i in range(0, len(cells), 8)]
    Image.fromarray(np.concatenate(rows, axis=0)).save(out.with_suffix(".png"))
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
