"""Brain Tumor MRI: both namings of the release, the SARTAJ release's folders and names, ignored non-data files,
partial downloads."""

from collections import Counter

import pytest

from dataset_scripts.sample_sources import brain_tumor_mri as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders import detect_builder
from multimed_hf.builders.brain_tumor_mri import BrainTumorMRIBuilder
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "brain_tumor"


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "brain_tumor_mri")


def test_the_second_naming_is_kept_and_thumbs_db_ignored(built):
    entries = {e.source_path: e for e in read_manifest(built.out / TASK)}
    for path in ("Training/glioma/Tr-glTr_0000.jpg", "Testing/notumor/Te-noTr_0000.jpg"):
        assert entries[path].status == "kept" and entries[path].reason == "", entries[path]
    thumbs = entries["Training/glioma/Thumbs.db"]
    assert thumbs.status == "ignored" and thumbs.reason.startswith("not used: ignored: Thumbs.db"), thumbs
    # one stem in two folders: two images, each kept under its own id
    assert entries["Testing/meningioma/Tr-gl_0002.jpg"].sample_id == "Testing/meningioma/Tr-gl_0002"
    assert entries["Training/glioma/Tr-gl_0002.jpg"].status == "kept"


def test_the_sartaj_release_builds_with_its_folders_and_reused_names(tmp_path):
    root = sample.make(tmp_path / "src", release="sartaj", train_per_class=3, test_per_class=2, size=64)
    assert {p.name for p in (root / "Training").iterdir()} == {"glioma_tumor", "meningioma_tumor", "no_tumor",
                                                               "pituitary_tumor"}
    assert (root / "Training" / "no_tumor" / "image(1).jpg").is_file()
    assert (root / "Testing" / "no_tumor" / "image(1).jpg").is_file()  # the same name in both splits
    assert isinstance(detect_builder(TASK, root), BrainTumorMRIBuilder)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entries = read_manifest(tmp_path / "out" / TASK)
    assert {e.status for e in entries} == {"kept"}, [e for e in entries if e.status != "kept"]
    names = get_task(TASK).label("tumor").names
    from datasets import load_dataset

    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "cache"))
    seen = Counter(names[row["tumor"]] for split in ds for row in ds[split])
    assert set(seen) == {"glioma", "meningioma", "no_tumor", "pituitary"}
    assert not [w for w in report.warnings if "partial download" in w], report.warnings


def test_partial_download_builds_with_a_warning(tmp_path):
    root = sample.make(tmp_path / "src", bad_files=False, train_per_class=8, test_per_class=1, size=64)
    for path in sorted((root / "Testing").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "Testing").rmdir()
    for path in (root / "Training" / "pituitary").iterdir():
        path.unlink()
    (root / "Training" / "pituitary").rmdir()
    assert isinstance(detect_builder(TASK, root), BrainTumorMRIBuilder)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert any("partial download: no Testing/ folder" in w for w in report.warnings), report.warnings
    said = "Training/ has no folder of class pituitary (folder pituitary or pituitary_tumor)"
    assert any(said in w for w in report.warnings), report.warnings
    # a class whose folder the two releases name otherwise is named by both (before, sweep D4: "no_tumor" alone,
    # read as the folder to make where this release names it notumor)
    no_tumor = next(p for p in (root / "Training").iterdir() if p.name in ("notumor", "no_tumor"))
    for path in no_tumor.iterdir():
        path.unlink()
    no_tumor.rmdir()
    report = build_dataset(TASK, [root], tmp_path / "out2", progress=False)
    said = "has no folder of class no_tumor (folder no_tumor or notumor), pituitary"
    assert any(said in w for w in report.warnings), report.warnings
    assert report.splits["train"] > 0 and report.splits["test"] > 0, report.splits
