"""Small CUB-200-2011 and COCO 2014 download trees with the real layouts and file formats, written by the tests.

Images are gradients whose red channel is the x coordinate and green the y coordinate (images are at most 255 px), so a
crop can be located from its pixels.
"""

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
COLORS = ["red", "blue", "brown", "grey", "black", "white"]


def gradient_image(width: int, height: int, blue: int) -> Image.Image:
    x = np.broadcast_to(np.arange(width, dtype=np.uint8)[None, :], (height, width))
    y = np.broadcast_to(np.arange(height, dtype=np.uint8)[:, None], (height, width))
    return Image.fromarray(np.stack([x, y, np.full((height, width), blue, np.uint8)], axis=-1))


def cub_captions(index: int, count: int = 10) -> list[str]:
    color = COLORS[index % len(COLORS)]
    return [f"this bird {index} has a {color} crown and caption number {k}." for k in range(count)]


# (class index, image name, size, bbox x y w h): a box clipped on the left/top, one on the right/bottom, one inside
CUB_IMAGES = [
    (0, "Black_Footed_Albatross_0001_796111", (200, 150), (20.7, 10.2, 120.9, 100.0)),
    (0, "Black_Footed_Albatross_0002_55", (240, 180), (150.0, 90.0, 80.0, 85.5)),
    (0, "Black_Footed_Albatross_0003_796136", (160, 160), (60.0, 60.0, 40.0, 40.0)),
    (0, "Black_Footed_Albatross_0005_796090", (220, 170), (40.0, 30.0, 130.0, 110.0)),
    (1, "Laysan_Albatross_0002_1027", (200, 200), (50.0, 40.0, 90.0, 120.0)),
    (1, "Laysan_Albatross_0003_1033", (180, 140), (10.0, 5.0, 150.0, 120.0)),
    (1, "Laysan_Albatross_0004_930", (210, 160), (70.0, 20.0, 60.0, 100.0)),
    (1, "Laysan_Albatross_0005_565", (190, 190), (30.0, 30.0, 100.0, 100.0)),
    (2, "Sooty_Albatross_0001_1071", (200, 150), (40.0, 20.0, 100.0, 100.0)),
    (2, "Sooty_Albatross_0002_796395", (230, 170), (100.0, 60.0, 110.0, 95.0)),
    (2, "Sooty_Albatross_0003_1078", (170, 200), (20.0, 50.0, 120.0, 90.0)),
]
# AttnGAN's split is by class: classes 0 and 1 train, class 2 test; the lists are not in images.txt order
LITERATURE_TRAIN = [4, 0, 1, 5, 2, 3, 6, 7]
LITERATURE_TEST = [10, 8, 9]


def cub_name(index: int) -> str:
    class_index, name, _, _ = CUB_IMAGES[index]
    return f"{CLASSES[class_index]}/{name}"


def write_fake_cub(root: Path) -> dict[str, Path]:
    """`root/CUB_200_2011/...` and `root/birds/{text,train,test}` as the two downloads lay them out."""
    cub, birds = root / "CUB_200_2011", root / "birds"
    images_txt, boxes, labels, split = [], [], [], []
    for index, (class_index, name, size, bbox) in enumerate(CUB_IMAGES):
        image_id = index + 1
        path = cub / "images" / CLASSES[class_index] / f"{name}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        gradient_image(*size, blue=10 * index).save(path, quality=100, subsampling=0)
        images_txt.append(f"{image_id} {CLASSES[class_index]}/{name}.jpg")
        boxes.append(f"{image_id} " + " ".join(f"{value:.1f}" for value in bbox))
        labels.append(f"{image_id} {class_index + 1}")
        split.append(f"{image_id} {int(index % 2 == 0)}")
        caption_file = birds / "text" / f"{cub_name(index)}.txt"
        caption_file.parent.mkdir(parents=True, exist_ok=True)
        caption_file.write_text("\n".join(cub_captions(index)) + "\n")
    (cub / "images.txt").write_text("\n".join(images_txt) + "\n")
    (cub / "bounding_boxes.txt").write_text("\n".join(boxes) + "\n")
    (cub / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (cub / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (cub / "classes.txt").write_text("".join(f"{k + 1} {name}\n" for k, name in enumerate(CLASSES)))
    for split_name, indices in (("train", LITERATURE_TRAIN), ("test", LITERATURE_TEST)):
        (birds / split_name).mkdir(parents=True)
        with open(birds / split_name / "filenames.pickle", "wb") as file:
            pickle.dump([cub_name(index) for index in indices], file)
    return {"cub_dir": cub, "text_dir": birds / "text", "split_dir": birds}


def python2_pickle_of(names: list[str]) -> bytes:
    """The bytes Python 2's `pickle.dump(names, f, protocol=2)` writes for a list of `str` (byte strings)."""
    body = b"".join(b"U" + bytes([len(name)]) + name.encode() for name in names)  # SHORT_BINSTRING
    return b"\x80\x02]q\x00(" + body + b"e."  # PROTO 2, EMPTY_LIST, BINPUT, MARK, ..., APPENDS, STOP


COCO_IMAGES = {  # split folder: [(image id, size, number of captions)]
    "train2014": [(9, (200, 120), 5), (25, (120, 200), 6), (30, (150, 150), 5), (34, (180, 100), 5)],
    "val2014": [(42, (160, 120), 5), (73, (100, 140), 7), (74, (130, 130), 5)],
}


def coco_file_name(folder: str, image_id: int) -> str:
    return f"COCO_{folder}_{image_id:012d}.jpg"


def coco_caption(image_id: int, k: int) -> str:
    return f"A photo number {image_id} of a dog and a frisbee, caption {k}."


def write_fake_coco(root: Path) -> Path:
    """`root/coco/{train2014,val2014,annotations}` as the COCO 2014 download lays them out."""
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True)
    annotation_id = 1000
    for folder, images in COCO_IMAGES.items():
        (coco / folder).mkdir()
        content = {"info": {}, "licenses": [{"id": 1, "name": "CC BY"}], "images": [], "annotations": []}
        for image_id, size, num_captions in images:
            gradient_image(*size, blue=image_id).save(coco / folder / coco_file_name(folder, image_id), quality=100)
            content["images"].append({"id": image_id, "file_name": coco_file_name(folder, image_id), "width": size[0], "height": size[1], "license": 1})
            # annotations listed newest first: the preparation orders them by annotation id
            for k in reversed(range(num_captions)):
                content["annotations"].append({"id": annotation_id + k, "image_id": image_id, "caption": coco_caption(image_id, k)})
            annotation_id += 100
        content["images"].reverse()  # not in id order either
        (coco / "annotations" / f"captions_{folder}.json").write_text(json.dumps(content))
    return coco
