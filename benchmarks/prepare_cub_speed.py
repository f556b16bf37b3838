"""Seconds per 1,000 images of `hf-stagegan prepare-cub` on this machine, on a synthetic CUB-sized download.

The real CUB cannot be downloaded here, so the script writes a CUB_200_2011 tree of the same shape: JPEGs of about
500 x 375 px (CUB's typical size; quality 90, textured so that they compress like photographs, ~50-80 KB), bounding
boxes covering 30-80 % of the image, ten captions per image, and AttnGAN-style split lists. Then it runs the
preparation (literature crop, resize to 304 px, JPEG quality 95, Parquet) with 1 and 2 processes.

    python benchmarks/prepare_cub_speed.py                  # 1,000 images
    python benchmarks/prepare_cub_speed.py --num_images 2000 --num_proc 1 2
"""

import argparse
import pickle
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from hf_stagegan.data.cub import prepare_cub


def write_synthetic_cub(root: Path, num_images: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    cub, birds = root / "CUB_200_2011", root / "birds"
    classes = [f"{k + 1:03d}.Bird_{k + 1}" for k in range(20)]
    lines = {name: [] for name in ("images", "boxes", "labels", "split")}
    names = []
    for index in range(num_images):
        class_index = index % len(classes)
        width, height = int(rng.integers(440, 501)), int(rng.integers(330, 376))
        noise = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = Image.fromarray(noise).resize((width, height), Image.Resampling.BICUBIC)
        image = Image.blend(image, Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)), 0.15)
        name = f"{classes[class_index]}/Bird_{class_index + 1}_{index:05d}"
        path = cub / "images" / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.filter(ImageFilter.SMOOTH).save(path, quality=90)
        box_w, box_h = rng.uniform(0.3, 0.8) * width, rng.uniform(0.3, 0.8) * height
        x, y = rng.uniform(0, width - box_w), rng.uniform(0, height - box_h)
        lines["images"].append(f"{index + 1} {name}.jpg")
        lines["boxes"].append(f"{index + 1} {x:.1f} {y:.1f} {box_w:.1f} {box_h:.1f}")
        lines["labels"].append(f"{index + 1} {class_index + 1}")
        lines["split"].append(f"{index + 1} {index % 2}")
        caption_file = birds / "text" / f"{name}.txt"
        caption_file.parent.mkdir(parents=True, exist_ok=True)
        caption_file.write_text("".join(f"this bird number {index} has a red crown and black wings, caption {k}\n" for k in range(10)))
        names.append((class_index, name))
    for key, file in (("images", "images.txt"), ("boxes", "bounding_boxes.txt"), ("labels", "image_class_labels.txt"), ("split", "train_test_split.txt")):
        (cub / file).write_text("\n".join(lines[key]) + "\n")
    (cub / "classes.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(classes)))
    for split, keep in (("train", lambda c: c < 15), ("test", lambda c: c >= 15)):  # class-disjoint, as AttnGAN's
        (birds / split).mkdir(parents=True)
        (birds / split / "filenames.pickle").write_bytes(pickle.dumps([n for c, n in names if keep(c)], protocol=2))
    return {"cub_dir": cub, "text_dir": birds / "text", "split_dir": birds}


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=1000)
    parser.add_argument("--num_proc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=304)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="prepare-cub-bench-"))
    try:
        start = time.perf_counter()
        cub = write_synthetic_cub(root / "downloads", args.num_images)
        source = folder_bytes(cub["cub_dir"] / "images")
        print(f"synthetic download: {args.num_images} JPEGs, {source / args.num_images / 1e3:.0f} KB each on average "
              f"(written in {time.perf_counter() - start:.1f} s)")
        for num_proc in args.num_proc:
            out = root / f"cub-{num_proc}"
            start = time.perf_counter()
            report = prepare_cub(**cub, output_dir=out, size=args.size, num_proc=num_proc)
            seconds = time.perf_counter() - start
            done = sum(report.split_counts.values())
            print(f"num_proc {num_proc}: {seconds:.1f} s for {done} images = {1000 * seconds / done:.1f} s per 1,000 "
                  f"images; output {folder_bytes(out) / 1e6:.0f} MB ({report.split_counts})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
