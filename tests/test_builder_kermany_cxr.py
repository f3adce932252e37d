"""Kermany pediatric chest X-rays: labels and patients from file names, val/ as training, the leaked patient."""

from collections import defaultdict
from pathlib import Path

import pytest

from dataset_scripts.sample_sources import kermany_cxr as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders import detect_builder
from multimed_hf.builders.kermany_cxr import KermanyCXRBuilder
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest

TASK = "radiographic_findings"
FINDING = {"normal": "normal", "bacteria": "bacterial_pneumonia", "virus": "viral_pneumonia"}


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "kermany_cxr")


def test_features_labels_and_patients(built):
    _, _, report, ds = built
    names = ds["train"].features["finding"].names
    drawn = {name: label for folders in sample.FILES.values() for files in folders.values() for name, label in files}
    drawn[sample.UNKNOWN_NORMAL] = "normal"
    for split in ds:
        for row in ds[split]:
            name = Path(row["source_path"]).name
            assert names[row["finding"]] == FINDING[drawn[name]]
            assert row["severity"] is None and row["modality"] == "xray" and row["window"] is None
            if name == sample.UNKNOWN_NORMAL:
                assert row["patient_id"] == "scan_0042"
                continue
            patient = name.split("_")[0] if name.startswith("person") else "IM-" + name.split("IM-")[1].split("-")[0]
            assert row["patient_id"] == patient
            row["image"].load()


def test_val_is_training_data_and_test_stays_test(built):
    _, out, _, _ = built
    entries = [e for e in read_manifest(out / TASK) if e.status == "kept" and e.sample_id]
    assert {e.split for e in entries if e.source_path.startswith("val/")} <= {"train", "validation"}
    assert {e.split for e in entries if e.source_path.startswith("test/")} == {"test"}
    assert all(e.source_path.startswith("test/") for e in entries if e.split == "test")
    assert any(e.split == "validation" for e in entries), "validation is drawn from training patients"


def test_groups_never_span_splits(built):
    _, out, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    assert by_path["train/NORMAL/IM-0125-0001.jpeg"].group == by_path["train/NORMAL/IM-0125-0002.jpeg"].group
    assert by_path["train/NORMAL/NORMAL2-IM-0427-0001.jpeg"].group == "kermany_cxr:patient:IM-0427"
    # the real IM-XXXX-0001-000N naming: one patient, kept without a note
    variants = [by_path[f"train/NORMAL/IM-0505-0001-000{n}.jpeg"] for n in (1, 2)]
    assert {e.group for e in variants} == {"kermany_cxr:patient:IM-0505"}
    assert all(e.status == "kept" and e.reason == "" for e in variants)


def test_unknown_name_in_a_class_folder_is_kept_with_a_note(built):
    _, out, report, _ = built
    entry = {e.source_path: e for e in read_manifest(out / TASK)}[f"train/NORMAL/{sample.UNKNOWN_NORMAL}"]
    assert entry.status == "kept" and entry.reason.startswith("name variant: 'scan_0042.jpeg'"), entry
    assert "patient id 'scan_0042'" in entry.reason and entry.group == "kermany_cxr:patient:scan_0042"
    assert report.kept_notes == {"name variant": 1}
    assert "Kept with a note in the manifest: 1 x name variant." in (out / "README.md").read_text()


def test_partial_download_builds_with_a_warning(tmp_path):
    root = sample.make(tmp_path / "src" / sample.FOLDER, bad_files=False)
    for split in ("test", "val"):
        for path in sorted((root / split).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (root / split).rmdir()
    assert isinstance(detect_builder(TASK, root), KermanyCXRBuilder)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert any("partial download: no test/ folder" in w for w in report.warnings), report.warnings
    assert any("no sample of the publisher's test set" in w for w in report.warnings), report.warnings
    assert all(report.splits[s] > 0 for s in ("train", "validation", "test")), report.splits


def test_leaked_test_patient_and_bad_files(built):
    _, out, _, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    for name in ("person101_bacteria_480.jpeg", "person101_bacteria_481.jpeg"):
        entry = by_path[f"train/PNEUMONIA/{name}"]
        assert entry.status == "dropped" and entry.reason.startswith("leak repair"), entry
    assert by_path["test/PNEUMONIA/person101_bacteria_484.jpeg"].split == "test"
    expected = {
        "train/NORMAL/person30_virus_69.jpeg": "file name says 'virus', its folder says 'NORMAL'",
        "train/PNEUMONIA/pneumonia_case_12.jpeg": "file name 'pneumonia_case_12.jpeg' matches neither",
        "train/PNEUMONIA/person31_bacteria_70.jpeg": "cannot decode image",  # cut in half
        "train/PNEUMONIA/person32_bacteria_71.jpeg": "empty file",
        "train/PNEUMONIA/person33_bacteria_72.jpeg": "cannot decode image",  # text named .jpeg
    }
    for path, reason in expected.items():
        assert by_path[path].status == "rejected" and by_path[path].reason.startswith(reason), by_path[path]
    assert {p for p, e in by_path.items() if e.status == "rejected"} == set(expected)
    # what the real archive carries besides the images: dropped or ignored with the reason, never errors
    not_data = {
        "chest_xray/train/NORMAL/IM-0115-0001.jpeg": "not used: a second copy of the tree (chest_xray/",
        "__MACOSX/train/NORMAL/._IM-0115-0001.jpeg": "not used: ignored: __MACOSX/",
        "train/.DS_Store": "not used: ignored: .DS_Store",
    }
    for path, reason in not_data.items():
        status = "ignored" if reason.startswith("not used: ignored: ") else "dropped"
        assert by_path[path].status == status and by_path[path].reason.startswith(reason), by_path[path]


def test_counts_of_each_outcome(built):
    _, out, report, _ = built
    entries = read_manifest(out / TASK)
    counts = report.sources[0].counts
    assert counts["dropped"] == 3 and counts["rejected"] == 5 and counts["ignored"] == 2
    assert not any(":row" in e.source_path for e in entries)  # no record entries: one per file


@pytest.mark.parametrize("path, label, patient", [
    ("train/NORMAL/NORMAL-1049278-0001.jpeg", "NORMAL", "1049278"),
    ("test/PNEUMONIA/BACTERIA-1008087-0001.jpeg", "bacteria", "1008087"),
    ("train/PNEUMONIA/VIRUS-1001471-0002.jpeg", "virus", "1001471"),
    ("train/PNEUMONIA/person1946_bacteria_4874.jpeg", "bacteria", "person1946"),
    ("test/NORMAL/NORMAL2-IM-0007-0001.jpeg", "NORMAL", "IM-0007"),
    ("train/NORMAL/IM-0505-0001-0002.jpeg", "NORMAL", "IM-0505"),
])
def test_both_releases_namings(tmp_path, path, label, patient):
    info = KermanyCXRBuilder(tmp_path).parse_path(path)
    assert info.labels == {"finding": label} and info.group_key == f"patient:{patient}"
    assert info.published_split == ("test" if path.startswith("test/") else "train")


def test_the_tree_inside_the_kaggle_archive_folder(tmp_path):
    root = sample.make(tmp_path / "chest-xray-pneumonia" / "chest_xray", bad_files=False).parent
    (root / "chest_xray" / "MULTIMED_SOURCE.json").rename(root / "MULTIMED_SOURCE.json")
    assert isinstance(detect_builder(TASK, root), KermanyCXRBuilder)
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entries = read_manifest(tmp_path / "out" / TASK)
    assert entries and all(e.source_path.startswith("chest_xray/") for e in entries)
    assert {e.status for e in entries} <= {"kept", "dropped"}
    assert {e.split for e in entries if e.source_path.startswith("chest_xray/test/")} == {"test"}


def test_a_whole_kaggle_archive_is_recognised_as_the_release(tmp_path, monkeypatch):
    # before: the release check counted every file, so Kaggle's archive (the tree twice, __MACOSX/, .DS_Store) could
    # never match the release's count: "matching no published release" for an intact download
    import dataclasses

    root = sample.make(tmp_path / "chest_xray")
    (root / "MULTIMED_SOURCE.json").unlink()  # as downloaded: no sample's provenance
    ours = build_dataset(TASK, [root], tmp_path / "first", progress=False)
    entries = ours.entries
    release = sum(not (e.status == "ignored" or e.reason.startswith("not used: a second copy of the tree"))
                  for e in entries if ":row" not in e.source_path)
    assert ours.sources[0].files_seen > release > 0
    spec = KermanyCXRBuilder.spec()
    monkeypatch.setattr(KermanyCXRBuilder, "spec", classmethod(lambda cls: dataclasses.replace(
        spec, expected_files={"Kaggle (test count)": release})))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    note = report.sources[0].release_note
    assert note.endswith("the Kaggle (test count) release") and f"{release} of them the release's" in note, note
    assert not any("matching no published release" in w for w in report.warnings), report.warnings


def test_name_and_folder_must_agree(tmp_path):
    with pytest.raises(BadSourceFile, match="file name says 'NORMAL', its folder says 'PNEUMONIA'"):
        KermanyCXRBuilder(tmp_path).parse_path("train/PNEUMONIA/NORMAL-1049278-0001.jpeg")
