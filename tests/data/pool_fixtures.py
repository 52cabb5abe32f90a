"""Small, realistic input files for the pool, importer and exporter tests (made on the fly, deterministic).

- :func:`datacomp_frame`: DataComp CommonPool metadata rows (uid, url, text,
  sizes, CLIP scores, face boxes, sha256), as in the released parquet shards.
- :func:`llava_records`: LLaVA-1.5-mix-style instruction records covering every
  source rule, with the int and string ids the real 665K file mixes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl

WORDS = ("a photo of the red bus parked near old stone bridge at sunset with two dogs running "
         "across green field beside wooden fence under cloudy sky").split()


def datacomp_frame(n: int = 100, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    uids = [rng.bytes(16).hex() for _ in range(n)]
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 12)))) for _ in range(n)]
    faces = [[[float(x) for x in rng.random(4).round(3)] for _ in range(int(rng.integers(0, 3)))] for _ in range(n)]
    return pl.DataFrame(
        {
            "uid": uids,
            "url": [f"https://images.example.org/{i:06d}.jpg" for i in range(n)],
            "text": texts,
            "original_width": rng.integers(64, 2048, size=n).astype(np.int64),
            "original_height": rng.integers(64, 2048, size=n).astype(np.int64),
            "clip_b32_similarity_score": rng.uniform(0.1, 0.45, size=n),
            "clip_l14_similarity_score": rng.uniform(0.05, 0.4, size=n),
            "face_bboxes": faces,
            "sha256": [hashlib.sha256(u.encode()).hexdigest() for u in uids],
        },
        schema_overrides={"face_bboxes": pl.List(pl.List(pl.Float64))},
    )


def write_datacomp(directory: Path, n: int = 100, files: int = 1, seed: int = 0) -> Path:
    """DataComp metadata shards ``0000000.parquet`` ... in ``directory``; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    frame = datacomp_frame(n, seed)
    per = -(-n // files)
    for i in range(files):
        frame.slice(i * per, per).write_parquet(directory / f"{i:07d}.parquet")
    return directory


def _conv(*turns: str) -> list[dict[str, str]]:
    return [{"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(turns)]


SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."

# (record, expected source)
LLAVA_CASES: list[tuple[dict, str]] = [
    ({"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
      "conversations": _conv("<image>\nWhat are the colors of the bus in the image?",
                             "The bus in the image is white and red.",
                             "What feature can be seen on the back of the bus?",
                             "The back of the bus features an advertisement.")}, "llava_instruct"),
    ({"id": "000000052846", "image": "coco/train2017/000000052846.jpg",
      "conversations": _conv("Where is the cat positioned in the image?\n<image>",
                             "The cat is positioned on top of the back of the couch.")}, "llava_instruct"),
    ({"id": 1, "image": "coco/train2017/000000391895.jpg",
      "conversations": _conv(f"<image>\nIs the man wearing a helmet?\n{SHORT}", "Yes",
                             f"What is he riding?\n{SHORT}", "Motorcycle")}, "vqa"),
    ({"id": 2, "image": "coco/train2017/000000522418.jpg",
      "conversations": _conv(f"<image>\nHow many people are there?\n{SHORT}", "1")}, "vqa"),
    ({"id": "aokvqa-22jbM6gDxdaMaunuzgrsBB", "image": "coco/train2017/000000299207.jpg",
      "conversations": _conv(f"<image>\nWhat is in the motorcyclist's mouth?\nA. toothpick\nB. food\n"
                             f"C. popsicle stick\nD. cigarette\n{LETTER}", "D")}, "aokvqa"),
    ({"id": "aokvqa-2E5nr4ngt4gWBfyebKPk7P", "image": "coco/train2017/000000463240.jpg",
      "conversations": _conv(f"<image>\nWhich number birthday is probably being celebrated?\nA. one\n"
                             f"B. ten\nC. nine\nD. thirty\n{LETTER}", "D")}, "aokvqa"),
    ({"id": "refcoco-1", "image": "coco/train2017/000000580957.jpg",
      "conversations": _conv("<image>\nPlease provide a short description for this region: "
                             "[0.42, 0.19, 0.65, 0.79].", "Man in white shirt.")}, "refcoco"),
    ({"id": "refcoco-2", "image": "coco/train2017/000000580957.jpg",
      "conversations": _conv("<image>\nPlease provide the bounding box coordinate of the region this "
                             "sentence describes: left woman.", "[0.0, 0.25, 0.33, 0.98]")}, "refcoco"),
    ({"id": "wFM2LyS_0", "conversations": _conv(
        "Summarize the main ideas of Jeff Walker's Product Launch Formula.",
        "Jeff Walker's Product Launch Formula is a step-by-step system for launching products.",
        "Give me an example of a launch sequence.", "Pre-launch content, then the open cart.")}, "sharegpt"),
    ({"id": "i6IyJda_0", "conversations": _conv("How to tell if a customer segment is well segmented?",
                                                 "A well-segmented group is identifiable and reachable.")}, "sharegpt"),
    ({"id": "0", "image": "gqa/images/2354786.jpg",
      "conversations": _conv(f"<image>\nIs the sky dark?\n{SHORT}", "Yes")}, "gqa"),
    ({"id": 2375429, "image": "gqa/images/2375429.jpg",
      "conversations": _conv(f"<image>\nWhat is the pole made of?\n{SHORT}", "Metal",
                             f"Is the fence to the left of the car?\n{SHORT}", "No")}, "gqa"),
    ({"id": "71916", "image": "ocr_vqa/images/71916.jpg",
      "conversations": _conv("<image>\nWho wrote this book?", "Sandra Boynton",
                             "What is the title of this book?", "Moo, Baa, La La La!")}, "ocr_vqa"),
    ({"id": "140031996", "image": "ocr_vqa/images/140031996.jpg",
      "conversations": _conv("<image>\nIs this a comedy book?", "No")}, "ocr_vqa"),
    ({"id": "textvqa-0054c91397f2fe05", "image": "textvqa/train_images/0054c91397f2fe05.jpg",
      "conversations": _conv(f"<image>\nwhat is the brand of this camera?\n{SHORT}", "Dakota")}, "textvqa"),
    ({"id": "textvqa-005635e119b9f32f", "image": "textvqa/train_images/005635e119b9f32f.jpg",
      "conversations": _conv("<image>\nwhat does the small white text spell?", "copenhagen")}, "textvqa"),
    ({"id": 2316838, "image": "vg/VG_100K/2316838.jpg",
      "conversations": _conv("<image>\nPlease provide a short description for this region: [0.25, 0.1, 0.5, 0.4].",
                             "A white cloud in the blue sky.")}, "vg"),
    ({"id": "vg-2", "image": "vg/VG_100K_2/2.jpg",
      "conversations": _conv("<image>\nPlease provide the bounding box coordinate of the region this sentence "
                             "describes: a tall green tree.", "[0.61, 0.02, 0.99, 0.55]")}, "vg"),
    ({"id": "sam-1", "image": "sam/images/sa_10000.jpg",
      "conversations": _conv("<image>\nDescribe the image.", "A street market.")}, "sam"),
]
# fill to 30 records with more of the common kinds (ints and strings mixed)
for k in range(11):
    if k % 3 == 0:
        LLAVA_CASES.append(({"id": 5000 + k, "image": f"coco/train2017/{k:012d}.jpg",
                             "conversations": _conv(f"<image>\nWhat color is the train?\n{SHORT}", "Red")}, "vqa"))
    elif k % 3 == 1:
        LLAVA_CASES.append(({"id": f"{k:012d}", "image": f"coco/train2017/{k:012d}.jpg",
                             "conversations": _conv("<image>\nWhat might be the purpose of this gathering?",
                                                    "It looks like a birthday party for a child.")}, "llava_instruct"))
    else:
        LLAVA_CASES.append(({"id": f"sg_{k}", "conversations": _conv(f"Write a haiku about autumn #{k}.",
                                                                     "Red leaves drift down slow")}, "sharegpt"))


def llava_records() -> list[dict]:
    return [json.loads(json.dumps(rec)) for rec, _ in LLAVA_CASES]


def write_llava(path: Path, records: list[dict] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(llava_records() if records is None else records, indent=2), encoding="utf-8")
    return path


def write_llava_images(folder: Path, records: list[dict] | None = None) -> Path:
    """An image folder for LLaVA records: a small real JPEG at each record's ``image`` path (deterministic,
    different pixels per path); returns the folder."""
    import io

    from PIL import Image

    for rec in llava_records() if records is None else records:
        path = rec.get("image")
        if not path or (folder / path).exists():
            continue
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shade = int(hashlib.sha256(path.encode()).hexdigest()[:2], 16)
        buf = io.BytesIO()
        Image.new("RGB", (12, 8), (shade, 255 - shade, 90)).save(buf, format="JPEG")
        (folder / path).write_bytes(buf.getvalue())
    return folder
