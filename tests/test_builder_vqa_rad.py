"""VQA-RAD: one sample per question, grouped by image, the question-level test split repaired, bad items named."""

import json
from collections import defaultdict

import numpy as np
import pytest
from datasets import Image

from dataset_scripts.sample_sources import vqa_rad as sample
from multimed_hf.builders.vqa_rad import answer_text, modality_from_text
from multimed_hf.data.manifest import read_manifest

TASK = "med_vqa"
QA = sample.QA_FILE


@pytest.fixture(scope="module")
def built(build_sample):
    root, out, report, ds = build_sample(TASK, "vqa_rad")
    items = {f"qid:{i['qid']}": i for i in json.loads((root / QA).read_text())}
    return root, out, report, ds, items


def test_rows_keep_question_answer_and_image(built):
    root, _, report, ds, items = built
    for split in ds:
        for row in ds[split]:
            item = items[row["sample_id"]]
            assert row["question"] == item["question"] and row["answer"] == str(item["answer"])
            assert row["answer_type"] == item["answer_type"].lower() and row["organ"] == item["image_organ"]
            assert row["language"] == "en" and row["question_type"] == item["question_type"]
            assert row["modality"] == {"CHEST": "xray", "ABD": "ct"}.get(item["image_organ"], row["modality"])
    raw = ds["test"].cast_column("image", Image(decode=False))
    for row in raw:  # the original bytes, embedded
        image = (root / sample.IMAGES / items[row["sample_id"]]["image_name"]).read_bytes()
        assert row["image"]["bytes"] == image


def test_head_modality_comes_from_the_image_questions(built):
    *_, ds, items = built
    of_image = {}
    for split in ds:
        for row in ds[split]:
            of_image[items[row["sample_id"]]["image_name"]] = (items[row["sample_id"]]["image_organ"], row["modality"])
    head = {name: m for name, (organ, m) in of_image.items() if organ == "HEAD"}
    # 50248 and 50359 answer "Is this an MRI?" yes, 50285 "CT" (open), 50322 says nothing: MRI assumed
    assert head == {
        "synpic50248.jpg": "mri", "synpic50285.jpg": "ct", "synpic50322.jpg": "mri", "synpic50359.jpg": "mri",
    }


def test_closed_answers_carry_the_drawn_signal(built):
    *_, ds, items = built
    for split in ds:
        for row in ds[split].select_columns(["sample_id", "image", "question", "answer"]):
            if row["question"] != "Is there a mass?":
                continue
            image = np.asarray(row["image"], dtype=float) / 255
            assert ((image > 0.97).sum() > 20) == (row["answer"] == "yes"), row["sample_id"]  # a saturated mass


def test_questions_of_one_image_stay_together_and_test_stays_test(built):
    _, out, _, ds, items = built
    splits_of = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["group_id"]].add(split)
            assert (split == "test") == items[row["sample_id"]]["phrase_type"].startswith("test")
    assert all(len(s) == 1 for s in splits_of.values())
    dropped = {e.sample_id: e for e in read_manifest(out / TASK) if e.status == "dropped" and e.sample_id}
    # a training paraphrase on a test image, and a training question on an exact copy of that image
    assert {items[q]["image_name"] for q in dropped} == {"synpic50174.jpg", "synpic99001.jpg"}
    assert all(e.reason.startswith("leak repair") for e in dropped.values())
    assert len({e.group for e in dropped.values()}) == 1


def test_bad_items_and_files_are_named(built):
    _, out, *_ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK) if e.status == "rejected"}
    images = sample.IMAGES
    expected = {
        f"{QA}:row 48 (qid 48)": "missing image: VQA_RAD Image Folder/synpic77777.jpg",
        f"{QA}:row 49 (qid 49)": "image VQA_RAD Image Folder/synpic88888.jpg: cannot decode image",
        f"{QA}:row 50 (qid 50)": "empty answer",
        f"{QA}:row 51 (qid 51)": "answer_type '' is not CLOSED or OPEN",
        f"{images}/synpic88888.jpg": "cannot decode image",
    }
    assert set(by_path) == set(expected)
    for path, reason in expected.items():
        assert by_path[path].reason.startswith(reason), by_path[path]


def test_counts_of_each_outcome(built):
    _, out, report, ds, items = built
    entries = read_manifest(out / TASK)
    counts = report.sources[0].counts
    # dropped: 2 leaking questions, 1 unused image; ignored: the image folder's Thumbs.db (no data)
    assert counts["dropped"] == 3 and counts["rejected"] == 5 and counts["ignored"] == 1
    unused = next(e for e in read_manifest(out / TASK) if e.source_path.endswith("synpic66666.jpg"))
    assert unused.status == "dropped" and unused.reason.startswith("not used: no question")
    questions = [e for e in entries if e.source_path.startswith(QA)]
    assert len(questions) == len(items) == sum(ds[s].num_rows for s in ds) + 2 + 4  # kept + dropped + bad items
    # before: every image behind a question was "index file: no sample of its own", and "13 index files read"
    images = [e for e in entries if e.status == "kept" and e.source_path.startswith("VQA_RAD Image Folder/")]
    assert images and all(e.reason.startswith("image of its questions") for e in images)
    assert report.data_files == len(images) and report.index_files == 0
    assert "index files read" not in report.summary()


@pytest.mark.parametrize("value, text", [(2, "2"), (2.0, "2"), (" Yes ", "Yes"), ("", None), (None, None)])
def test_answers_become_text(value, text):
    assert answer_text(value) == text


@pytest.mark.parametrize("text, modality", [
    ("MR - T2 weighted", "mri"), ("CT with contrast", "ct"), ("x-ray", "xray"), ("Is this a PA film?", None),
])
def test_modality_words(text, modality):
    assert modality_from_text(text) == modality


def test_names_spelled_with_plus_signs_read_like_the_published_ones(tmp_path):
    """Downloaded copies name the files ``VQA_RAD+Dataset+Public.json`` and ``VQA_RAD+Image+Folder`` (URL-encoded
    spaces; e.g. the README of wjz25061666/Machine-Learning-Group-V-Final-Project): the same samples are built."""
    from multimed_hf.api import build_dataset

    plain = sample.make(tmp_path / "plain", bad_files=False)
    expected = build_dataset(TASK, [plain], tmp_path / "out_plain", progress=False)
    plus = sample.make(tmp_path / "plus", bad_files=False)
    (plus / QA).rename(plus / QA.replace(" ", "+"))
    (plus / sample.IMAGES).rename(plus / sample.IMAGES.replace(" ", "+"))
    (plus / "VQA_RAD+Dataset+Public.xlsx").write_bytes(b"PK\x03\x04")  # the same items as a spreadsheet
    report = build_dataset(TASK, [plus], tmp_path / "out_plus", progress=False)
    assert report.counts["rejected"] == 0, [e for e in report.entries if e.status == "rejected"]
    kept = {e.sample_id for e in report.entries if e.status == "kept" and e.sample_id}
    assert kept == {e.sample_id for e in expected.entries if e.status == "kept" and e.sample_id} and kept
    assert report.splits == expected.splits


def test_a_qid_given_twice_in_the_json_rejects_both_questions(tmp_path):
    """Two different items of the one JSON with the same ``qid`` (or 3 and "3", the same id) are ambiguous: both
    are rejected, each naming the other's row (``json:row N``), and the rest build as before (they were both kept
    under one sample id, so a prediction could be written beside the other question's answer)."""
    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / "src", bad_files=False)
    items = json.loads((root / QA).read_text())
    items[5]["qid"] = items[2]["qid"]
    items[7]["qid"] = str(items[3]["qid"])
    (root / QA).write_text(json.dumps(items))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    row = {i: f"{QA}:row {i + 1} (qid {items[i]['qid']})" for i in (2, 3, 5, 7)}
    assert rejected == {
        row[i]: f"duplicate id: 'qid:{items[i]['qid']}' is also {row[j]}, a different item: all are rejected"
        for i, j in ((2, 5), (5, 2), (3, 7), (7, 3))
    }
    kept = [e.sample_id for e in report.entries if e.status in ("kept", "moved") and e.sample_id]
    assert len(kept) == len(set(kept)) == len(items) - 4
