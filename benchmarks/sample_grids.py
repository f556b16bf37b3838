"""
Sample grids of a trained pipeline for `docs/results.md`: every level of the same images (x1, x2, x3, one row each),
and captions that differ in one part's colour ("... red wings" against "... blue wings"), same noise per column.

    python benchmarks/sample_grids.py stagegan-synthbirds --out docs/images/main-job
    python benchmarks/sample_grids.py stagegan-synthbirds --out grids --seed 1 --columns 8

Writes `<out>-levels.png` and `<out>-one-word.png` (each cell upscaled to `--cell` px with nearest neighbours, so the
pixels stay visible) and prints one JSON line per grid with the captions it drew.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from PIL import Image

from hf_stagegan import StageGANPipeline

# full captions, as the held-out split words them; each one-word row changes a single part of BASE
BASE = {"body": "red", "wing": "black", "crown": "blue", "beak": "yellow"}
SWAPS = [("body", "blue"), ("wing", "white"), ("crown", "yellow"), ("beak", "red")]
LEVEL_CAPTIONS = [
    "this bird has a red body, black wings, a blue crown and a short yellow beak",
    "this bird has a yellow body, blue wings, a red crown and a long black beak",
    "this bird has a blue body, white wings, a yellow crown and a short orange beak",
    "this bird has a green body, brown wings, a purple crown and a long red beak",
]


def caption(colors: dict[str, str], beak_length: str = "short") -> str:
    return (
        f"this bird has {'an' if colors['body'][0] in 'aeiou' else 'a'} {colors['body']} body, {colors['wing']} wings, "
        f"{'an' if colors['crown'][0] in 'aeiou' else 'a'} {colors['crown']} crown and a {beak_length} "
        f"{colors['beak']} beak"
    )


def grid(rows: list[list[Image.Image]], cell: int) -> Image.Image:
    canvas = Image.new("RGB", (cell * max(len(row) for row in rows), cell * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            canvas.paste(image.resize((cell, cell), Image.NEAREST), (c * cell, r * cell))
    return canvas


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a pipeline folder or Hub id")
    parser.add_argument("--out", type=Path, required=True, help="path prefix of the two PNG files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--columns", type=int, default=6, help="noise draws per caption in the one-word grid")
    parser.add_argument("--cell", type=int, default=96, help="side of each cell in the PNG")
    args = parser.parse_args(argv)
    if args.columns < 1 or args.cell < 1:
        parser.error(f"--columns and --cell must be >= 1, got {args.columns} and {args.cell}")

    pipe = StageGANPipeline.from_pretrained(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    # every level of four captions, two noise draws each: rows x1, x2, x3
    prompts = [text for text in LEVEL_CAPTIONS for _ in range(2)]
    _, levels = pipe(prompts, generator=torch.Generator().manual_seed(args.seed), return_all_levels=True, return_dict=False)
    path = args.out.with_name(args.out.name + "-levels.png")
    grid([list(level) for level in levels], args.cell).save(path)
    print(json.dumps({"grid": "levels", "path": str(path), "rows": ["x1", "x2", "x3"], "captions": prompts}))

    # one row per caption, the same noise in every row: only the named part should change from the first row
    rows, captions = [], [caption(BASE)]
    for part, color in SWAPS:
        captions.append(caption({**BASE, part: color}))
    noise = torch.randn(args.columns, pipe.image_generator.config.z_dim, generator=torch.Generator().manual_seed(args.seed))
    for text in captions:
        rows.append(pipe([text] * args.columns, latents=noise.clone()).images)
    path = args.out.with_name(args.out.name + "-one-word.png")
    grid(rows, args.cell).save(path)
    print(json.dumps({"grid": "one_word", "path": str(path), "captions": captions}))


if __name__ == "__main__":
    main()
