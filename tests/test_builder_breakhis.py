"""BreakHis: malignancy, subtype and magnification from the path, patient groups, name/folder consistency."""

from collections import defaultdict

import numpy as np
import pytest

from dataset_scripts.sample_sources import breakhis as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders import detect_builder
from multimed_hf.builders.breakhis import BreakHisBuilder
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "breast_cancer"
SPEC = get_task(TASK)
BASE = "histology_slides/breast"
ADENOSIS_40X = f"{BASE}/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X"


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "breakhis")


def test_labels_and_magnification_come_from_the_path(built):
    _, _, report, ds = built
    malignancy, subtype = SPEC.label("malignancy").names, SPEC.label("subtype").names
    subtypes = set()
    for split in ds:
        for row in ds[split]:
            _, _, cls, _, sub, folder, mag, name = row["source_path"].split("/")
            assert malignancy[row["malignancy"]] == cls and subtype[row["subtype"]] == sub
            assert row["magnification"] == mag and f"-{mag[:-1]}-" in name
            assert row["patient_id"] == folder.rsplit("_", 1)[1] and row["modality"] == "pathology"
            assert row["sample_id"] == name.removesuffix(".png") and row["image"].size == (70, 46)
            subtypes.add(subtype[row["subtype"]])
    assert subtypes == set(subtype)


def test_patients_are_grouped_never_images(built):
    _, out, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["group_id"]].add(split)
    assert all(len(s) == 1 for s in splits_of.values()), "a group spans two splits"
    assert all(ds[split].num_rows for split in ("train", "validation", "test"))
    groups = defaultdict(set)
    for e in read_manifest(out / TASK):
        if e.status == "kept" and e.sample_id:
            groups[e.source_path.split("/")[5]].add(e.group)
    # slide letters dropped: one patient number, one group; 14-13412 under DC and LC: one group
    assert groups["SOB_B_A_14-22549AB"] == groups["SOB_B_A_14-22549G"] == {"breakhis:patient:14-22549"}
    assert groups["SOB_M_DC_14-13412"] == groups["SOB_M_LC_14-13412"] == {"breakhis:patient:14-13412"}
    assert all(len(g) == 1 for g in groups.values())


def test_name_and_folder_mismatches_are_rejected_by_name(built):
    _, out, report, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    copy = f"{BASE}/malignant/SOB/lobular_carcinoma/SOB_M_LC_14-13412/100X/SOB_M_LC-14-13412-100-002.png"
    original = f"{BASE}/malignant/SOB/ductal_carcinoma/SOB_M_DC_14-13412/100X/SOB_M_DC-14-13412-100-001.png"
    expected = {
        f"{ADENOSIS_40X}/SOB_B_A-14-22549AB-100-002.png":
            "name/folder mismatch: magnification '100X' in the file name, '40X' in the folders",
        f"{ADENOSIS_40X}/SOB_M_A-14-22549AB-40-003.png":
            "name/folder mismatch: class letter 'M' in the file name, 'B' in the patient folder",
        f"{ADENOSIS_40X}/SOB_B_F-14-22549AB-40-004.png":
            "name/folder mismatch: subtype letters 'F' in the file name, 'A' in the patient folder",
        f"{ADENOSIS_40X}/SOB_B_A-14-22549AB-40-005.png": "cannot decode image: OSError: image file is truncated",
        copy: f"label conflict: identical content at breakhis/{original} carries another label",
        original: f"label conflict: identical content at breakhis/{copy} carries another label",
    }
    assert {p: e.reason for p, e in by_path.items() if e.status == "rejected"} == expected
    assert report.duplicates["label conflicts rejected"] == 2
    for path in (f"{ADENOSIS_40X}/Thumbs.db", f"{BASE}/benign/SOB/README.txt"):  # no data: ignored, no error
        assert by_path[path].status == "ignored" and by_path[path].reason.startswith("not used: ignored:")


def test_counts_of_each_outcome(built):
    _, out, report, _ = built
    entries = read_manifest(out / TASK)
    counts = report.sources[0].counts
    assert counts == {"kept": len(sample.PATIENTS) * 4 - 1, "moved": 0, "dropped": 0, "rejected": 6, "ignored": 2}
    assert not any(":row" in e.source_path for e in entries)  # no record entries: one per file


@pytest.mark.parametrize("relpath, reason", [
    (f"{BASE}/benign/SOB/ductal_carcinoma/SOB_M_DC_14-2523/40X/SOB_M_DC-14-2523-40-001.png",
     "folder mismatch: subtype 'ductal_carcinoma' filed under benign/"),
    (f"{BASE}/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549CD-40-001.png",
     "name/folder mismatch: patient '14-22549CD' in the file name, '14-22549AB' in the patient folder"),
    (f"{BASE}/benign/SOB/adenosis/SOB_B_A_14-22549AB/60X/SOB_B_A-14-22549AB-60-001.png",
     "magnification folder '60X' is not one of ['40X', '100X', '200X', '400X']"),
    (f"{BASE}/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.jpg",
     "stray file: not an image of this layout (expected .png)"),
    (f"{BASE}/benign/SOB/adenosis/SOB_B_A_14-22549AB/SOB_B_A-14-22549AB-40-001.png", "stray file: expected"),
    (f"{BASE}/benign/SOB/adenosis/B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001.png",
     "patient folder 'B_A_14-22549AB' is not SOB_<B|M>_<subtype>_<year>-<id>"),
])
def test_misfiled_paths(tmp_path, relpath, reason):
    root = tmp_path / sample.FOLDER
    (root / BASE / "benign").mkdir(parents=True)
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(sample.encode(sample.tile("adenosis", 40, np.random.default_rng(0))))
    builder = BreakHisBuilder(root)
    with pytest.raises(ValueError) as err:
        builder.read_file(relpath)
    assert err.value.reason.startswith(reason)


def test_unknown_name_in_a_patient_folder_is_kept_with_a_note(tmp_path):
    root = tmp_path / sample.FOLDER
    relpath = f"{BASE}/benign/SOB/adenosis/SOB_B_A_14-22549AB/40X/SOB_B_A-14-22549AB-40-001 (1).png"
    path = root / relpath
    path.parent.mkdir(parents=True)
    path.write_bytes(sample.encode(sample.tile("adenosis", 40, np.random.default_rng(0))))
    [kept] = BreakHisBuilder(root).read_file(relpath)
    assert kept.fields["malignancy"] == "benign" and kept.fields["subtype"] == "adenosis"
    assert kept.fields["magnification"] == "40X" and kept.fields["patient_id"] == "14-22549AB"
    assert kept.group_key == "patient:14-22549"
    assert kept.extra["note"].startswith("name variant: 'SOB_B_A-14-22549AB-40-001 (1).png' is not SOB_")


def test_the_kaggle_mirror_folders_and_its_folds_file(tmp_path):
    root = sample.make(tmp_path / "breakhis", archive="kaggle", bad_files=False)
    assert (root / "BreaKHis_v1" / "BreaKHis_v1" / "histology_slides" / "breast").is_dir()
    assert isinstance(detect_builder(TASK, root), BreakHisBuilder)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path["Folds.csv"].status == "dropped" and "community fold file" in by_path["Folds.csv"].reason
    images = [e for p, e in by_path.items() if p.endswith(".png")]
    assert images and all(e.status == "kept" and e.source_path.startswith("BreaKHis_v1/BreaKHis_v1/") for e in images)
    assert report.counts["rejected"] == 0
