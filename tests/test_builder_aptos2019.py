"""APTOS 2019: CSV-indexed fundus photographs, DR grades, duplicate groups and the sheet checks."""

import csv
from collections import defaultdict

import pytest

from dataset_scripts.sample_sources import aptos2019 as sample
from multimed_hf.api import build_dataset
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "diabetic_retinopathy"
GRADES = get_task(TASK).label("dr_grade").names


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "aptos2019")


def test_grades_come_from_train_csv(built):
    root, _, report, ds = built
    with (root / "train.csv").open() as handle:
        grades = {}
        for row in csv.DictReader(handle):
            grades.setdefault(row["id_code"], row["diagnosis"])
    seen = set()
    for split in ds:
        for row in ds[split]:
            id_code = row["sample_id"].removeprefix("train/")
            assert row["source_path"] == f"train_images/{id_code}.png"
            assert GRADES[row["dr_grade"]] == GRADES[int(grades[id_code])]
            assert row["oct_finding"] is None and row["modality"] == "fundus"
            assert row["patient_id"] is None and row["eye"] is None
            assert row["image"].mode == "RGB"
            seen.add(row["dr_grade"])
    assert seen == set(range(5))


def test_groups_and_drawn_splits(built):
    _, out, report, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values()), "a group spans two splits"
    assert all(ds[split].num_rows for split in ("train", "validation", "test"))  # no labelled test set: drawn
    groups = {e.sample_id: e.group for e in read_manifest(out / TASK) if e.status == "kept" and e.sample_id}
    # the re-encoded brighter copy shares its original's group (a near duplicate)
    near = groups["train/near2copy"]
    assert sum(1 for g in groups.values() if g == near) == 2
    assert report.duplicates["near-duplicate pairs"] == 1
    assert report.duplicates["label conflicts rejected"] == 2


def test_bad_inputs_are_named(built):
    root, out, _, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    with (root / "train.csv").open() as handle:
        grade0 = [r["id_code"] for r in csv.DictReader(handle)][1]
    test_ids = [line.strip() for line in (root / "test.csv").read_text().splitlines()[1:]]
    expected = {
        "train.csv:row 33": "missing image: no a0b1c2d3e4f5.png under train_images/",
        "train_images/ffffeeee0000.png": "no label: id 'ffffeeee0000' has no row in train.csv",
        "train_images/grade5image.png": (
            "bad row: train.csv row 34: diagnosis '5' is not a DR grade (expected one of ['0', '1', '2', '3', '4'])"
        ),
        "train_images/twice0graded.png":
            "conflicting rows: id 'twice0graded' has rows 35, 36 in train.csv that disagree",
        "train_images/bad0half_cut.png": "cannot decode image: OSError: image file is truncated",
        "train_images/bad0empty.png": "empty file (0 bytes)",
        "train_images/bad0not_an_image.png": "cannot decode image: not a format Pillow recognises",
        "train_images/dup0conflict.png": (
            f"label conflict: identical content at aptos2019/train_images/{grade0}.png carries another label"
        ),
        f"train_images/{grade0}.png": (
            "label conflict: identical content at aptos2019/train_images/dup0conflict.png carries another label"
        ),
    }
    assert {p: e.reason for p, e in by_path.items() if e.status == "rejected"} == expected
    # the test images' grades were never published: dropped with the reason, no error of the download
    assert {p: e.reason for p, e in by_path.items() if e.status == "dropped"} == {
        f"test_images/{id_code}.png":
            f"not used: unlabelled: test.csv (the publisher's test list) names '{id_code}' without a label"
        for id_code in test_ids
    }
    for sheet in ("train.csv", "test.csv", "sample_submission.csv"):
        assert by_path[sheet].status == "kept" and by_path[sheet].reason == "index file: no sample of its own"


def test_counts_of_each_outcome(built):
    _, _, report, _ = built
    counts = report.sources[0].counts
    assert counts == {"kept": 33, "moved": 0, "dropped": 3, "rejected": 9, "ignored": 0}


def test_a_stray_file_and_a_stray_csv(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, per_grade=1, bad_files=False)
    (root / "notes.csv").write_text("a,b\n1,2\n")
    (root / "train_images" / "notes.txt").write_text("APTOS\n")
    (root / "train_images" / "readme.txt").write_text("APTOS\n")
    (root / "train_images.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    for path, reason in (("train_images/readme.txt", "readme.txt is the publisher's documentation"),
                         ("train_images.zip", "train_images.zip is a download archive")):  # no data: ignored
        assert by_path[path].status == "ignored" and by_path[path].reason.startswith(f"not used: ignored: {reason}")
    for path in ("notes.csv", "train_images/notes.txt"):
        assert by_path[path].status == "rejected"
        assert by_path[path].reason == "stray file: neither an index sheet of this layout nor an image (.png)"
