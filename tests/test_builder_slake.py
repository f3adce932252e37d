"""SLAKE: English and Chinese questions per image, its test.json kept as test, bad items named."""

import json
from collections import defaultdict

import pytest

from dataset_scripts.sample_sources import slake as sample
from multimed_hf.api import build_dataset
from multimed_hf.data.manifest import read_manifest
from multimed_hf.data.source_builder import PROVENANCE_FILE

TASK = "med_vqa"


@pytest.fixture(scope="module")
def built(build_sample):
    root, out, report, ds = build_sample(TASK, "slake")
    items = {
        f"{name}:{item['qid']}": item
        for name in sample.SPLIT_FILES.values()
        for item in json.loads((root / f"{name}.json").read_text())
    }
    return root, out, report, ds, items


def test_rows_languages_modalities_and_splits(built):
    _, _, report, ds, items = built
    languages = set()
    for split in ds:
        for row in ds[split]:
            item = items[row["sample_id"]]
            assert row["question"] == item["question"] and row["answer"] == item["answer"]
            assert row["modality"] == {"X-Ray": "xray", "MRI": "mri", "CT": "ct"}[item["modality"]]
            assert row["organ"] == item["location"] and row["question_type"] == item["content_type"]
            assert (split == "test") == row["sample_id"].startswith("test:")
            languages.add(row["language"])
    assert languages == {"en", "zh"}


def test_images_never_span_splits(built):
    *_, ds, _ = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values())


def test_bad_items_and_files_are_named(built):
    root, out, report, _, _ = built
    entries = read_manifest(out / TASK)
    rejected = {e.source_path: e.reason for e in entries if e.status == "rejected"}
    assert rejected.keys() == {
        "train.json:row 19 (qid 9001)", "train.json:row 20 (qid 9002)", "imgs/xmlab1/source_copy.jpg",
    }
    assert rejected["train.json:row 19 (qid 9001)"].startswith("missing image: imgs/xmlab42/source.jpg")
    assert rejected["train.json:row 20 (qid 9002)"] == "modality 'PET' is not CT, MRI or X-Ray"
    assert rejected["imgs/xmlab1/source_copy.jpg"].startswith("stray file")
    companions = [e for e in entries if e.source_path.endswith(("mask.png", "detection.json"))]
    # before: kept as "index file: no sample of its own", and the images behind the questions too
    assert companions and all(e.status == "dropped" and e.reason.startswith("not used: the publisher's annotation")
                              for e in companions)
    images = [e for e in entries if e.source_path.endswith("/source.jpg") and e.status == "kept"]
    assert images and all(e.reason.startswith("image of its questions") for e in images)
    assert report.index_files == 1 and report.data_files == len(images)  # the index file: KG/en_organ.csv
    assert f"{len(images)} files stored with other files' samples" in report.summary()
    assert sum(report.sources[0].counts.values()) == len(entries)
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE}
    assert {e.source_path for e in entries if ":row" not in e.source_path} == files


def test_real_file_names_and_a_partial_download(tmp_path):
    root = sample.make(tmp_path / "src", bad_files=False)
    assert (root / "validate.json").is_file() and not (root / "validation.json").exists()
    assert {p.name for p in root.glob("*.json")} - {PROVENANCE_FILE} == {"train.json", "validate.json", "test.json"}
    (root / "test.json").unlink()
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert any("partial download: no test.json" in w for w in report.warnings), report.warnings
    assert report.splits["test"] > 0 and report.counts["rejected"] == 0
    kept = {e.sample_id.split(":")[0] for e in report.entries if e.status == "kept" and e.sample_id}
    assert kept == {"train", "validate"}


def test_the_hub_repository_files_beside_the_splits_are_not_strays(tmp_path):
    """BoKelvin/SLAKE ships ``mask.txt``, ``README.md``, ``.gitattributes``, ``imgs.zip`` and ``KG.zip`` beside the
    split JSON files (its file listing; unpacked, ``imgs/`` and ``KG/``): none of them is a stray file."""
    root = sample.make(tmp_path / "src", bad_files=False)
    (root / "mask.txt").write_text("liver\nkidney\n")
    (root / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n")
    (root / ".gitattributes").write_text("*.zip filter=lfs diff=lfs merge=lfs -text\n")
    (root / "imgs.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    (root / "KG.zip").write_bytes(b"PK\x05\x06" + bytes(18))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert report.counts["rejected"] == 0, [e for e in report.entries if e.status == "rejected"]
    assert by_path["mask.txt"].status == "kept"
    assert all(by_path[name].status == "ignored" for name in ("README.md", ".gitattributes", "imgs.zip", "KG.zip"))


def test_an_entry_that_is_no_question_object_is_rejected_as_its_row(tmp_path):
    # before (sweep I4): one null in train.json rejected the whole file ("expected a JSON list of question objects")
    # and every image its questions named
    root = sample.make(tmp_path / "src", bad_files=False)
    clean = build_dataset(TASK, [root], tmp_path / "clean", progress=False)
    items = json.loads((root / "train.json").read_text())
    (root / "train.json").write_text(json.dumps([*items, None, "a stray string"]))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    reasons = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert reasons == {f"train.json:row {len(items) + 1}": "not a question object: null",
                       f"train.json:row {len(items) + 2}": 'not a question object: "a stray string"'}
    assert report.splits == clean.splits
