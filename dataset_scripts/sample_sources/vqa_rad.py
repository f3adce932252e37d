"""A synthetic sample in VQA-RAD's layout: ``VQA_RAD Dataset Public.json`` + ``VQA_RAD Image Folder/synpicN.jpg``.

Grey images of three organs (CHEST, HEAD, ABD), some with a bright mass on the left or right. Questions follow
VQA-RAD's fields and kinds: presence (closed yes/no, answered by the drawing), organ (open), position (open),
count (a number, as VQA-RAD stores some), modality (closed or open, for head images). Test questions are
``test_freeform``; one test image also has a training question (the publisher's question-level split), and an
exact copy of a test image under another name carries training questions too: both are dropped by the grouping.
Bad inputs: a question on a missing image, one on a cut image, an empty answer, an unknown answer type, an image
no question refers to, and a stray file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import blob, smooth_noise, to_jpeg, write_provenance

__all__ = ["FOLDER", "make", "make_vqa_rad", "draw_organ", "ORGANS"]

FOLDER = "VQA_RAD"
QA_FILE = "VQA_RAD Dataset Public.json"
IMAGES = "VQA_RAD Image Folder"
ORGANS = {"CHEST": "chest", "HEAD": "brain", "ABD": "abdomen"}


def draw_organ(organ: str, mass: str | None, rng: np.random.Generator, size: int = 96) -> np.ndarray:
    """A grey image in [0, 1] of ``organ`` with a bright mass on the image's ``"left"`` or ``"right"`` (or none)."""
    shape = (size, size)
    c = size / 2
    if organ == "CHEST":
        image = 0.15 + 0.55 * blob(shape, (c, c), (0.45 * size, 0.42 * size))
        for side in (-1, 1):
            image -= 0.45 * blob(shape, (c, c + side * 0.2 * size), (0.3 * size, 0.13 * size), rng)
    elif organ == "HEAD":
        skull = blob(shape, (c, c), (0.42 * size, 0.36 * size), rng)  # each head its own outline and ventricles
        image = 0.8 * skull - 0.5 * blob(shape, (c, c), (0.37 * size, 0.31 * size), rng)
        image += 0.3 * blob(shape, (c + rng.uniform(-0.12, 0.12) * size, c + rng.uniform(-0.12, 0.12) * size),
                            (rng.uniform(0.06, 0.14) * size, rng.uniform(0.04, 0.1) * size), rng)
    else:
        image = 0.45 * blob(shape, (c, c), (0.4 * size, 0.45 * size), rng)
        image += 0.25 * blob(shape, (c - 0.1 * size, c - 0.15 * size), (0.15 * size, 0.12 * size))
    image = image + 0.06 * smooth_noise(shape, rng, scale=6)
    if mass:
        x = c + (-1 if mass == "left" else 1) * 0.18 * size
        image += 0.9 * blob(shape, (c + rng.uniform(-0.1, 0.1) * size, x), (0.08 * size, 0.08 * size))
    return np.clip(image, 0, 1)


def _questions(organ: str, mass: str | None, modality: str | None) -> list[tuple[str, str, str, object]]:
    """(question, question_type, answer_type, answer) asked of one image."""
    qa = [
        ("Is there a mass?", "PRES", "CLOSED", "yes" if mass else "no"),
        ("What organ system is shown?", "ORGAN", "OPEN", ORGANS[organ]),
        ("How many masses are there?", "COUNT", "OPEN", 1 if mass else 0),
    ]
    if mass:
        qa.append(("On which side is the mass?", "POS", "OPEN", mass))
    if modality == "MRI":
        qa.append(("Is this an MRI?", "MODALITY", "CLOSED", "yes"))
    elif modality == "CT":
        qa.append(("What imaging modality was used?", "MODALITY", "OPEN", "CT"))
    return qa


def make_vqa_rad(root, *, seed: int = 11, bad_files: bool = True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    images = root / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # (organ, mass, modality question, split): 12 images, a third of them test
    plan = [
        ("CHEST", "left", None, "train"), ("CHEST", None, None, "train"), ("CHEST", "right", None, "test"),
        ("CHEST", None, None, "train"), ("HEAD", "right", "MRI", "train"), ("HEAD", None, "CT", "test"),
        ("HEAD", "left", None, "train"), ("HEAD", None, "MRI", "train"), ("ABD", "left", None, "test"),
        ("ABD", None, None, "train"), ("ABD", "right", None, "train"), ("ABD", None, None, "test"),
    ]
    items, qid = [], 0

    def add(name, organ, question, qtype, atype, answer, phrase):
        nonlocal qid
        qid += 1
        items.append({
            "qid": qid, "phrase_type": phrase, "qid_linked_id": f"{name}-{qid}",
            "image_case_url": f"https://medpix.nlm.nih.gov/case?id={name}", "image_name": name,
            "image_organ": organ, "evaluation": "given", "question": question, "question_rephrase": "NULL",
            "question_relation": "NULL", "question_frame": "NULL", "question_type": qtype, "answer": answer,
            "answer_type": atype,
        })

    for n, (organ, mass, modality, split) in enumerate(plan):
        name = f"synpic{50100 + 37 * n}.jpg"
        (images / name).write_bytes(to_jpeg(draw_organ(organ, mass, rng)))
        for question, qtype, atype, answer in _questions(organ, mass, modality):
            add(name, organ, question, qtype, atype, answer, "test_freeform" if split == "test" else "freeform")
    if bad_files:
        test_image = f"synpic{50100 + 37 * 2}.jpg"
        # the publisher's split is by question: a training paraphrase on a test image
        add(test_image, "CHEST", "Is a mass present?", "PRES", "CLOSED", "yes", "para")
        # the same picture under a second name (MedPix reuses images across cases), asked in training
        shutil.copyfile(images / test_image, images / "synpic99001.jpg")
        add("synpic99001.jpg", "CHEST", "Is there a mass?", "PRES", "CLOSED", "yes", "freeform")
        add("synpic77777.jpg", "HEAD", "Is there a mass?", "PRES", "CLOSED", "no", "freeform")  # image missing
        data = to_jpeg(draw_organ("ABD", "left", rng))
        (images / "synpic88888.jpg").write_bytes(data[: len(data) // 2])
        add("synpic88888.jpg", "ABD", "Is there a mass?", "PRES", "CLOSED", "yes", "freeform")  # image cut
        add(f"synpic{50100}.jpg", "CHEST", "What is abnormal?", "ABN", "OPEN", " ", "freeform")  # empty answer
        add(f"synpic{50100 + 37}.jpg", "CHEST", "Is this normal?", "ABN", "", "yes", "freeform")  # no answer type
        (images / "synpic66666.jpg").write_bytes(to_jpeg(draw_organ("HEAD", None, rng)))  # no question
        (images / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / QA_FILE).write_text(json.dumps(items, indent=1))
    write_provenance(root, "generated by dataset_scripts/sample_sources/vqa_rad.py (not real radiology)")
    return root


make = make_vqa_rad
