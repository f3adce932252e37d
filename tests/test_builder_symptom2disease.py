"""Symptom2Disease: clinical-text rows of the disease task, harmonised names, label masks, row-level reports;
and the disease config built from the malaria cells and the texts together."""

import csv
from collections import defaultdict

import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import lhncbc_malaria
from dataset_scripts.sample_sources import symptom2disease as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders.symptom2disease import SHEET
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "disease"
SPEC = get_task(TASK)
NAMES = SPEC.label("diseases").names


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "symptom2disease")


def test_every_publisher_label_maps_into_the_harmonised_names():
    mapping = SPEC.source("symptom2disease").label_map["diseases"]
    assert set(mapping) == set(sample.SYMPTOMS) and len(mapping) == 24
    assert set(mapping.values()) <= set(NAMES)
    # the image sources' names keep their indices: the text diagnoses were appended after them
    assert all(NAMES.index(name) > NAMES.index("breast_malignant") for name in set(mapping.values()) - {"malaria"})


def test_rows_are_text_samples(built):
    root, _, report, ds = built
    with (root / SHEET).open() as handle:
        sheet = list(csv.DictReader(handle))
    mapping = SPEC.source("symptom2disease").label_map["diseases"]
    mask = sorted(set(mapping.values()))
    for split in ds:
        for row in ds[split]:
            n = int(row["sample_id"].removeprefix("row-"))
            assert row["text"] == sheet[n - 1]["text"].strip() and row["image"] is None
            assert [NAMES[i] for i in row["diseases"]] == [mapping[sheet[n - 1]["label"]]]
            assert row["label_mask"] == mask and row["modality"] == "text" and row["source_path"] == SHEET
            assert row["organ"] is None  # the registry states no organ for clinical text of many conditions


def test_bad_rows_and_repeated_texts(built):
    root, out, report, ds = built
    entries = read_manifest(out / TASK)
    rows = {e.source_path: e.reason for e in entries if ":row" in e.source_path}
    assert rows == {
        f"{SHEET}:row 73": "unknown label: 'Leprosy' is not one of this source's 24 diagnoses",
        f"{SHEET}:row 74": "no text: the row's text is empty",
    }
    conflicts = {e.sample_id for e in entries if e.reason.startswith("label conflict")}
    assert conflicts == {"row-1", "row-75"}  # a Psoriasis text again (upper-cased) under Dengue
    reasons = {e.sample_id: e.reason for e in entries if e.reason.startswith("label conflict")}
    # before: "identical content at symptom2disease/Symptom2Disease.csv": this row's own file, not the other row
    assert reasons["row-1"].endswith(f"/{SHEET} (sample 'row-75') carries another label")
    assert reasons["row-75"].endswith(f"/{SHEET} (sample 'row-1') carries another label")
    groups = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            groups[row["group_id"]].add(split)
    assert all(len(s) == 1 for s in groups.values())
    with (root / SHEET).open() as handle:
        first_acne = next(n for n, r in enumerate(csv.DictReader(handle), start=1) if r["label"] == "Acne")
    group = {e.sample_id: e.group for e in entries if e.status == "kept" and e.sample_id}
    assert group["row-76"] == group[f"row-{first_acne}"]  # the same text, spaced out: one group
    assert report.duplicates["exact duplicate pairs"] == 1
    counts = report.sources[0].counts
    assert sum(counts.values()) == len(entries) and counts["rejected"] == 4


def test_a_sheet_without_its_columns_is_rejected(tmp_path):
    root = tmp_path / sample.FOLDER
    root.mkdir()
    (root / SHEET).write_text(",disease,text\n0,Malaria,fever\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    (entry,) = report.entries
    assert entry.status == "rejected"
    assert entry.reason == "Symptom2Disease.csv lacks the column(s) ['label']; its header is ['', 'disease', 'text']"


def test_images_and_texts_in_one_disease_config(tmp_path):
    roots = [
        lhncbc_malaria.make(tmp_path / lhncbc_malaria.FOLDER, bad_files=False),
        sample.make(tmp_path / sample.FOLDER, per_label=1, bad_files=False),
    ]
    build_dataset(TASK, roots, tmp_path / "multimed", progress=False)
    ds = load_dataset(str(tmp_path / "multimed"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    masks = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            masks[row["source"]].add(tuple(row["label_mask"]))
            assert (row["image"] is None) == (row["source"] == "symptom2disease")
            assert (row["text"] is None) == (row["source"] == "lhncbc_malaria")
            assert set(NAMES[i] for i in row["diseases"]) <= set(row["label_mask"])
    assert masks["lhncbc_malaria"] == {("malaria", "normal")}
    assert len(next(iter(masks["symptom2disease"]))) == 24 and "malaria" in next(iter(masks["symptom2disease"]))
