"""OCT2017: the tree read inside the archives' own folders (Kaggle's ``OCT2017 /`` with its second copy, Mendeley
v3's ``CellData/OCT/`` beside its chest X-rays), ignored non-data files, a partial download."""

import pytest

from dataset_scripts.sample_sources import oct2017 as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders import detect_builder
from multimed_hf.builders.oct2017 import OCT2017Builder
from multimed_hf.data.manifest import read_manifest

TASK = "diabetic_retinopathy"


def _build(root, out):
    assert isinstance(detect_builder(TASK, root), OCT2017Builder)
    report = build_dataset(TASK, [root], out, progress=False)
    return report, {e.source_path: e for e in read_manifest(out / TASK)}


def test_kaggle_archive_trailing_space_folder_and_its_second_copy(tmp_path):
    root = sample.make(tmp_path / "kermany2018", archive="kaggle", train_patients=2, test_patients=1,
                       images_per_patient=1, bad_files=False)
    assert (root / "OCT2017 " / "train" / "CNV").is_dir()
    report, entries = _build(root, tmp_path / "out")
    kept = [p for p, e in entries.items() if e.status == "kept"]
    assert kept and all(p.startswith("OCT2017 /") for p in kept)
    copies = [e for p, e in entries.items() if p.startswith("oct2017/")]
    assert copies and all(e.status == "dropped" and "second copy of the tree" in e.reason for e in copies), copies
    ds_store = entries["OCT2017 /train/.DS_Store"]
    assert ds_store.status == "ignored" and ds_store.reason.startswith("not used: ignored: .DS_Store"), ds_store
    assert {e.status for e in entries.values()} == {"kept", "dropped", "ignored"}
    assert {e.split for e in entries.values() if e.source_path.startswith("OCT2017 /test/")} == {"test"}


def test_v3_celldata_tree_beside_its_chest_xrays(tmp_path):
    root = sample.make(tmp_path / "ZhangLabData", archive="v3", train_patients=2, test_patients=1,
                       images_per_patient=1, bad_files=False)
    _, entries = _build(root, tmp_path / "out")
    xray = entries["CellData/chest_xray/train/NORMAL/IM-0115-0001.jpeg"]
    assert xray.status == "dropped" and "kermany_cxr" in xray.reason, xray
    assert all(e.status == "kept" for p, e in entries.items() if p.startswith("CellData/OCT/"))


def test_default_sample_ignores_ds_store(build_sample):
    built = build_sample(TASK, "oct2017")
    entry = {e.source_path: e for e in read_manifest(built.out / TASK)}["train/DRUSEN/.DS_Store"]
    assert entry.status == "ignored" and entry.reason.startswith("not used: ignored: .DS_Store"), entry


def test_partial_download_builds_with_a_warning(tmp_path):
    root = sample.make(tmp_path / "OCT2017", train_patients=3, test_patients=1, images_per_patient=2,
                       bad_files=False)
    for split in ("test", "val"):
        for path in sorted((root / split).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        (root / split).rmdir()
    report, _ = _build(root, tmp_path / "out")
    assert any("partial download: no test/ or val/ folder" in w for w in report.warnings), report.warnings
    assert report.splits["train"] > 0 and report.splits["test"] > 0, report.splits


@pytest.mark.parametrize("name, patient", [("CNV-1016042-1.jpeg", "1016042"), ("scan 1016042 (2).jpeg", "1016042"),
                                           ("oct_final.jpg", "oct_final")])
def test_names_give_the_patient(tmp_path, name, patient):
    info = OCT2017Builder(tmp_path).parse_path(f"train/CNV/{name}")
    assert info.group_key == f"patient:{patient}" and info.labels == {"oct_finding": "CNV"}
    assert bool(info.note) == (not name.startswith("CNV-"))
