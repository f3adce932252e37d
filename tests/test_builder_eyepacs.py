"""EyePACS: both eyes of a patient in one group, the solution file's published test set, and the sheet checks;
and the diabetic_retinopathy config built from OCT and both fundus sources together."""

import csv
from collections import defaultdict

import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import aptos2019, oct2017
from dataset_scripts.sample_sources import eyepacs as sample
from multimed_hf.api import build_dataset
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "diabetic_retinopathy"
GRADES = get_task(TASK).label("dr_grade").names


def _levels(root, name):
    with (root / name).open() as handle:
        return {row["image"]: int(row["level"]) for row in csv.DictReader(handle) if row["level"].isdigit()}


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "eyepacs")


def test_levels_eyes_and_patients(built):
    root, _, report, ds = built
    levels = {**_levels(root, "trainLabels.csv"), **_levels(root, "retinopathy_solution.csv")}
    for split in ds:
        for row in ds[split]:
            folder, name = row["source_path"].split("/")
            stem = name.removesuffix(".jpeg")
            patient, eye = stem.split("_") if stem != "96_centre" else (stem, None)  # a name variant, kept
            assert row["sample_id"] == f"{folder}/{stem}"
            assert (row["patient_id"], row["eye"]) == (patient, eye)
            assert row["dr_grade"] == levels[stem] and row["oct_finding"] is None and row["modality"] == "fundus"
            assert (split == "test") == (folder == "test")  # the solution file's images are the published test set


def test_both_eyes_share_a_group_and_a_split(built):
    _, _, _, ds = built
    splits_of, eyes_of = defaultdict(set), defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["group_id"]].add(split)
            if row["patient_id"] != "96_centre":
                eyes_of[row["group_id"]].add(row["eye"])
            assert row["group_id"] == f"eyepacs:patient:{row['patient_id']}"
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(eyes == {"left", "right"} for eyes in eyes_of.values())
    assert all(ds[split].num_rows for split in ("train", "validation", "test"))


def test_bad_inputs_are_named(built):
    _, out, _, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    expected = {
        "trainLabels.csv:row 25": "missing image: no 99_left.jpeg under train/",
        "train/98_right.jpeg": "no label: id '98_right' has no row in trainLabels.csv",
        "train/97_left.jpeg": (
            "bad row: trainLabels.csv row 26: level '7' is not a DR grade (expected one of ['0', '1', '2', '3', '4'])"
        ),
        "train/95_left.jpeg": "cannot decode image: OSError: image file is truncated (74 bytes not processed)",
        "train/94_left.jpeg": "empty file (0 bytes)",
    }
    assert {p: e.reason for p, e in by_path.items() if e.status == "rejected"} == expected
    for sheet in ("trainLabels.csv", "retinopathy_solution.csv", "sampleSubmission.csv"):
        assert by_path[sheet].status == "kept"


def test_what_the_real_download_carries_besides_is_named_not_an_error(built):
    by_path = {e.source_path: e for e in read_manifest(built.out / TASK)}
    for name in ("sample/15_left.jpeg", "sample/15_right.jpeg"):
        assert by_path[name].status == "dropped" and "10-image preview (sample.zip)" in by_path[name].reason
    archive = by_path["trainLabels.csv.zip"]
    assert archive.status == "ignored", archive
    assert archive.reason.startswith("not used: ignored: trainLabels.csv.zip is a download archive"), archive
    # a valid image with a row, under a name outside the layout: kept, its stem the patient, noted
    variant = by_path["train/96_centre.jpeg"]
    assert variant.status == "kept" and variant.group == "eyepacs:patient:96_centre", variant
    assert variant.reason.startswith("name variant: '96_centre' is not <patient>_<left|right>")


def test_counts_of_each_outcome(built):
    _, _, report, _ = built
    counts = report.sources[0].counts
    assert counts == {"kept": 36, "moved": 0, "dropped": 2, "rejected": 5, "ignored": 1}


def test_without_the_solution_file_test_images_are_unlabelled(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    (root / "retinopathy_solution.csv").unlink()
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    tests = [e for e in report.entries if e.source_path.startswith("test/")]
    assert len(tests) == 8 and all(e.status == "dropped" for e in tests)  # no error: the labels are elsewhere
    assert tests[0].reason == (
        "not used: unlabelled: test/ images are labelled by retinopathy_solution.csv (published after the competition), "
        "which is not in this folder"
    )
    assert all(report.splits.values())  # the test split is drawn from training patients
    drawn = {e.sample_id for e in report.entries if e.split == "test"}
    assert drawn and all(s.startswith("train/") for s in drawn)


def test_a_training_patient_in_the_solution_file_is_dropped(tmp_path):
    """Leak repair on the published split: the test copy of a patient stays, its training eyes go."""
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    (root / "test" / "15_left.jpeg").write_bytes((root / "test" / "2_left.jpeg").read_bytes())
    with (root / "retinopathy_solution.csv").open("a", newline="") as handle:
        csv.writer(handle).writerow(["15_left", _levels(root, "retinopathy_solution.csv")["2_left"], "Private"])
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path["test/15_left.jpeg"].split == "test"
    for eye in ("left", "right"):
        entry = by_path[f"train/15_{eye}.jpeg"]
        assert entry.status == "dropped" and entry.reason.startswith("leak repair: group eyepacs:patient:15")
    # 2_left's copy (identical bytes, same level) joins patient 2 and 15 into one test group
    assert by_path["test/2_left.jpeg"].group == by_path["test/15_left.jpeg"].group


def test_oct_and_fundus_sources_in_one_config(tmp_path):
    roots = [
        oct2017.make(tmp_path / oct2017.FOLDER, bad_files=False),
        aptos2019.make(tmp_path / aptos2019.FOLDER, per_grade=2, bad_files=False),
        sample.make(tmp_path / sample.FOLDER, train_patients=4, test_patients=2, bad_files=False),
    ]
    report = build_dataset(TASK, roots, tmp_path / "multimed", progress=False)
    assert [s.name for s in report.sources] == ["oct2017", "aptos2019", "eyepacs"]
    ds = load_dataset(str(tmp_path / "multimed"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    by_modality = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            by_modality[row["modality"]].add(row["source"])
            if row["modality"] == "oct":
                assert row["oct_finding"] is not None and row["dr_grade"] is None
            else:
                assert row["dr_grade"] is not None and row["oct_finding"] is None
    assert by_modality == {"oct": {"oct2017"}, "fundus": {"aptos2019", "eyepacs"}}


def test_labels_left_zipped_are_named_in_the_layout_error(tmp_path):
    """Kaggle ships the labels as ``trainLabels.csv.zip``: with only the archive beside the images no layout matches,
    and the error names the archive and says to unpack it (the builders read unpacked files)."""
    from multimed_hf.builders import detect_builder
    from multimed_hf.data.errors import LayoutNotRecognised

    root = sample.make(tmp_path / "src")
    (root / "trainLabels.csv").unlink()
    (root / "retinopathy_solution.csv").unlink()
    assert (root / "trainLabels.csv.zip").is_file()
    with pytest.raises(LayoutNotRecognised, match=r"download archives: trainLabels\.csv\.zip\. .* unpack any"):
        detect_builder(TASK, root)
    (root / "trainLabels.csv.zip").unlink()
    with pytest.raises(LayoutNotRecognised) as err:  # no archive: no such line
        detect_builder(TASK, root)
    assert "download archives" not in str(err.value)
