"""Tiny copies of the personalization datasets' layouts and JSON schemas (datasets/LAYOUTS.md).

Each builder writes a few small PNG/JPEG files into a temporary folder, named and nested exactly
as the published dataset is, with annotation files in the published schema: Yo'LLaVA's visual
QA nested by concept with ``./yollava-data/test/...`` keys and ``<sks>`` (including the
published wrong answer of ``brown-duck/0.png``), RAP's text-only QA with its singular
``option`` key, This-Is-My-Img's test groups and pair folders, RAP's pair folders, pair index
and concept database.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import cv2
import numpy as np


def tiny_image(path: Path, tag: str) -> None:
    """A 16x12 image whose colour depends on ``tag`` (so files differ)."""
    seed = zlib.crc32(tag.encode())
    rgb = np.empty((12, 16, 3), np.uint8)
    rgb[:] = (seed % 251, (seed >> 8) % 251, (seed >> 16) % 251)
    rgb[::3, ::2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), path


def write_json(path: Path, doc: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=4))
    return path


# ----------------------------------------------------------------------------------------------
# Yo'LLaVA (WisconsinAIVision/YoLLaVA) and RAP's text-only QA
# ----------------------------------------------------------------------------------------------

YOLLAVA_CONCEPTS = {"bo": 6, "brown-duck": 6, "shiba-gray": 7}  # train images per concept
YOLLAVA_TEST = {"bo": [0, 1, 2], "brown-duck": [0, 3], "shiba-gray": [0, 1, 3, 10]}


def make_yollava(repo: Path) -> Path:
    """``repo/yollava-data/{train,test}/<concept>/<n>.png`` and ``yollava-visual-qa.json``."""
    data = repo / "yollava-data"
    for concept, count in YOLLAVA_CONCEPTS.items():
        for n in range(count):
            tiny_image(data / "train" / concept / f"{n}.png", f"train/{concept}/{n}")
        for n in YOLLAVA_TEST[concept]:
            tiny_image(data / "test" / concept / f"{n}.png", f"test/{concept}/{n}")
    write_json(data / "yollava-visual-qa.json", {
        "shiba-gray": {
            "./yollava-data/test/shiba-gray/3.png": {
                "question": "What animal does <sks> resemble?",
                "options": {"A": "Cat", "B": "Dog"}, "correct_answer": "B"},
            "./yollava-data/test/shiba-gray/10.png": {
                "question": "What animal does <sks> resemble?",
                "options": {"A": "Mouse", "B": "Dog"}, "correct_answer": "B"},
            "./yollava-data/test/shiba-gray/0.png": {
                "question": "What is the pattern on the top of <sks>'s head?",
                "options": {"A": "Stripes", "B": "Solid color"}, "correct_answer": "B"},
        },
        "bo": {
            "./yollava-data/test/bo/1.png": {
                "question": "What is the color of <sks>'s fur?",
                "options": {"A": "Brown and white", "B": "Black and grey"},
                "correct_answer": "A"},
        },
        "brown-duck": {
            "./yollava-data/test/brown-duck/3.png": {
                "question": "What kind of animal does <sks> resemble?",
                "options": {"A": "Duck", "B": "Platypus"}, "correct_answer": "A"},
            "./yollava-data/test/brown-duck/0.png": {  # published wrong: the answer is A
                "question": "What type of animal is <sks>?",
                "options": {"A": "Duck", "B": "Crocodile"}, "correct_answer": "B"},
        },
    })
    return repo


def make_yollava_text_qa(path: Path) -> Path:
    """RAP-MLLM's ``eval/yollava-text-only-qa.json``: numbered questions, key ``option``."""
    return write_json(path, {
        "bo": {
            "0": {"question": "Is sks a dog or a cat?", "option": {"A": "Dog", "B": "Cat"},
                  "correct_answer": "A"},
            "1": {"question": "What is sks's breed?", "option": {"A": "Corgi", "B": "Shiba inu"},
                  "correct_answer": "B"},
        },
        "brown-duck": {
            "0": {"question": "Is sks shaped like a rectangle?",
                  "option": {"A": "No", "B": "Yes"}, "correct_answer": "A"},
        },
    })


# ----------------------------------------------------------------------------------------------
# This-Is-My-Img (vdorovatas/personalization_toolkit)
# ----------------------------------------------------------------------------------------------

TIM_SINGLE_TRAIN = ("Alexs hat", "Reynards keyboard", "Reynards work chair")
TIM_MULTI_TRAIN = ("Alex", "Alexs hat", "Nikki", "Nikkis car")
# (group folder, label folder, file names)
TIM_SINGLE_TEST = (
    ("Positive", "Alexs hat-hat", ["0.png", "1.png"]),
    ("Positive", "Reynards keyboard-keyboard", ["0.png", "1_double.png"]),
    ("Positive", "Reynards work chair-chair", ["0.png"]),
    ("Fake", "Alexs hat-hat", ["0.png"]),
    ("Negative (Hard)", "Reynards keyboard-keyboard", ["0.png", "1.png"]),
    ("Negative (Other)", "Alexs hat-hat", ["0.png"]),
)
TIM_PAIRS = {"Alex_and_Alexs hat": ["0.png", "1.png"], "Nikki_and_Nikkis car": ["0.png"]}


def make_this_is_my(root: Path) -> Path:
    """``root/{Single-concept,Multi-concept}/...`` with their VQA files."""
    single = root / "Single-concept"
    for concept in TIM_SINGLE_TRAIN:
        for n in range(5):
            tiny_image(single / "train" / concept / f"{n}.png", f"s/{concept}/{n}")
    for group, folder, files in TIM_SINGLE_TEST:
        for name in files:
            tiny_image(single / "test" / group / folder / name, f"{group}/{folder}/{name}")
    write_json(single / "this-is-my-visual-qa.json", {
        "Alexs hat": {
            "./test/Positive/Alexs hat-hat/0.png": {
                "question": "What color is <sks>?", "options": {"A": "Red", "B": "Blue"},
                "correct_answer": "A"},
            "./train/Alexs hat/0.png": {  # a reference image: dropped, it would leak
                "question": "Is <sks> on a table?", "options": {"A": "Yes", "B": "No"},
                "correct_answer": "B"},
        },
        "Reynards keyboard": {
            "./test/Negative (Hard)/Reynards keyboard-keyboard/1.png": {
                "question": "Is <sks> in the image?", "options": {"A": "Yes", "B": "No"},
                "correct_answer": "B"},
        },
    })
    multi = root / "Multi-concept"
    for concept in TIM_MULTI_TRAIN:
        for n in range(5):
            tiny_image(multi / "train" / concept / f"{n}.png", f"m/{concept}/{n}")
    for pair, files in TIM_PAIRS.items():
        for name in files:
            tiny_image(multi / "test" / pair / name, f"pair/{pair}/{name}")
    write_json(multi / "VQA" / "this-is-my-visual-qa-multi-concept.json", {
        "Alex_and_Alexs hat": {
            "../test/Alex_and_Alexs hat/1.png": {
                "question": "Where are <sks>?", "answer": "<sks> are in a park."},
        },
        "Nikki_and_Nikkis car": {
            "../test/Nikki_and_Nikkis car/0.png": {
                "question": "Who is next to the car?",
                "options": {"A": "Nikki", "B": "Nobody"}, "correct_answer": "A"},
        },
    })
    return root


# ----------------------------------------------------------------------------------------------
# RAP multi-concept (Hoar012/RAP-MLLM; index republished by RePIC)
# ----------------------------------------------------------------------------------------------

RAP_PAIRS = {"Anya_and_Bond": 3, "Baby_Q_and_Bull_dog": 2}


def make_rap_multi(repo: Path) -> tuple[Path, Path]:
    """``repo/data/query-image-2-concepts/<A>_and_<B>/<A>_and_<B>_<n>.jpg`` with the pair index
    beside the pair folders, and a RAP concept database (``repo/rap_db/database.json``, image
    paths relative to ``repo``); returns (data folder, database folder)."""
    data = repo / "data"
    index = {}
    for pair, count in RAP_PAIRS.items():
        for n in range(1, count + 1):
            tiny_image(data / "query-image-2-concepts" / pair / f"{pair}_{n}.jpg", f"{pair}{n}")
            if pair != "Baby_Q_and_Bull_dog" or n == 1:  # one image left out of the index
                index[f"./data/query-image-2-concepts/{pair}/{pair}_{n}.jpg"] = [
                    f"<{c}>" for c in pair.split("_and_")]
    write_json(data / "multi_concept_test.json", index)
    db = repo / "rap_db"
    concepts = {}
    for name in ("Anya", "Bond", "Baby_Q", "Bull_dog"):
        tiny_image(db / f"{name}.png", f"ref/{name}")
        concepts[f"<{name}>"] = {"name": name, "image": f"rap_db/{name}.png",
                                 "info": f"<{name}> is a character.", "category": "person"}
    write_json(db / "database.json", {
        "concept_dict": concepts,
        "path_to_concept": {v["image"]: k for k, v in concepts.items()},
    })
    return data, db
