"""What a build warns of: which published release (``SourceSpec.expected_files``) a download matches, empty splits."""

from types import SimpleNamespace

from multimed_hf.data.build import INDEX_FILE, _FileCounts, _release_note


def _builder(expected, synthetic=False):
    spec = SimpleNamespace(expected_files=expected)
    return SimpleNamespace(spec=lambda: spec, provenance=lambda: {"synthetic": synthetic} if synthetic else {})


def _counts(samples=0, index=0, unused=0, ignored=0, copies=0):
    counts = _FileCounts()
    for reason, n in ((None, samples), (INDEX_FILE, index), ("not used: an ROI mask", unused),
                      ("not used: ignored: .DS_Store is macOS folder metadata", ignored),
                      ("not used: a second copy of the tree (chest_xray/)", copies)):
        for _ in range(n):
            counts.add(reason)
    return counts


def test_every_file_the_release_files_or_the_files_read_match():
    # every file (EEGMMIDB's zip as unpacked, its baseline runs "not used" included)
    assert _release_note(_builder({"zip": 20}), _counts(samples=12, unused=6, ignored=2)) == "20 files: the zip release"
    # Kaggle's chest_xray: the tree twice and __MACOSX/
    note = _release_note(_builder({"Kaggle": 10}), _counts(samples=10, copies=10, ignored=12))
    assert note == ("32 files (10 of them the release's files: no litter, documents or an archive's second copy): "
                    "the Kaggle release")
    # CBIS-DDSM's NBIA download: full mammograms (the count published) beside ROI masks and CSVs
    note = _release_note(_builder({"full mammograms": 7}), _counts(samples=7, index=4, unused=14))
    assert note == "25 files (7 of them the files this task reads samples from): the full mammograms release"


def test_a_source_without_a_published_count_matches_nothing_and_warns_of_nothing():
    # before: a user's own DICOM series warned "matching no published release (no published count)" on every build;
    # and a one-file count (Symptom2Disease's one sheet) "matched its release" whatever the sheet held
    from multimed_hf.data.build import NO_RELEASE_COUNT
    from multimed_hf.tasks import get_task

    assert _release_note(_builder({}), _counts(samples=44)) == f"44 files ({NO_RELEASE_COUNT})"
    assert "matching" not in _release_note(_builder({}), _counts(samples=44))
    assert not get_task("disease").source("symptom2disease").expected_files


def test_no_match_and_a_synthetic_sample_claim_no_release():
    assert "matching no published release (v1: 9)" in _release_note(_builder({"v1": 9}), _counts(samples=8))
    note = _release_note(_builder({"v1": 8}, synthetic=True), _counts(samples=8))
    assert "matching no published release" in note and "SYNTHETIC sample" in note


def test_an_empty_split_is_warned_of(tmp_path):
    # before: a build whose few groups all went to train and test left no validation split, said only by a count of 0
    # ("splits: train 7, validation 0, test 2"); load_dataset then has no validation split
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    report = build_dataset("protein_structure", [sample_generators()["pdb"](tmp_path / "src")], tmp_path / "out",
                           progress=False)
    assert report.splits["validation"] == 0 and report.splits["train"] and report.splits["test"]
    (warning,) = [w for w in report.warnings if "split is empty" in w]
    assert warning.startswith("the validation split is empty: every group went to the other splits (train ")
    assert "load_dataset gives no validation split" in warning


def test_vqa_images_count_as_files_the_task_reads(tmp_path, monkeypatch):
    # before: a VQA image (kept, stored with its questions' samples) counted as an index file, so the files-read
    # count of an intact VQA-RAD download (with the JSON's .xlsx and .xml copies) held only the JSON and could not
    # match the release's 315 images + the JSON
    import dataclasses

    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset
    from multimed_hf.builders.vqa_rad import VQARADBuilder

    root = sample_generators()["VQA_RAD"](tmp_path / "VQA_RAD", bad_files=False)
    (root / "MULTIMED_SOURCE.json").unlink()  # as downloaded
    (root / "VQA_RAD Dataset Public.xlsx").write_bytes(b"PK\x03\x04")  # the publisher's copies beside the JSON
    (root / "VQA_RAD Dataset Public.xml").write_text("<xml/>")
    read = len([p for p in root.rglob("*.jpg")]) + 1  # the images and the JSON
    spec = VQARADBuilder.spec()
    monkeypatch.setattr(VQARADBuilder, "spec", classmethod(lambda cls: dataclasses.replace(
        spec, expected_files={"images + the JSON": read})))
    report = build_dataset("med_vqa", [root], tmp_path / "out", progress=False)
    note = report.sources[0].release_note
    assert note.endswith(f"({read} of them the files this task reads samples from): the images + the JSON release")
