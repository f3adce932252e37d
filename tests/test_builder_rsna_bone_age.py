"""RSNA bone age: CSV-indexed hand radiographs, months and their registry bin, sex, and the sheet checks."""

import csv
import shutil
import sys
from collections import defaultdict

import numpy as np
import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import rsna_bone_age as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders.rsna_bone_age import (
    TEST_TRUTH_XLSX, TRAINING_SHEET, RSNABoneAgeBuilder, bone_age_bin, read_excel_sheet,
)
from multimed_hf.data.errors import BadSourceFile, StrictBuildError
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "bone_age"
TRAIN_DIR = f"{sample.TRAIN}/{sample.TRAIN}"
BIN = get_task(TASK).label("bone_age_bin")


def _sheet(root, name):
    with (root / name).open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "rsna_bone_age")


def test_months_bins_and_sex_come_from_the_training_sheet(built):
    root, _, report, ds = built
    rows = {r["id"]: r for r in _sheet(root, TRAINING_SHEET)}
    seen_bins = set()
    for split in ds:
        for row in ds[split]:
            sheet_row = rows[row["sample_id"].removeprefix("train/")]
            assert row["source_path"] == f"{TRAIN_DIR}/{sheet_row['id']}.png"
            assert row["bone_age_months"] == float(sheet_row["boneage"])
            assert row["sex"] == ("M" if sheet_row["male"] == "True" else "F")
            name = BIN.names[row["bone_age_bin"]]
            i = BIN.names.index(name)
            upper = BIN.bins[i + 1] if i + 1 < len(BIN.bins) else float("inf")
            assert BIN.bins[i] <= row["bone_age_months"] < upper
            seen_bins.add(name)
            assert row["modality"] == "xray" and row["image"].mode == "L"
    assert seen_bins == set(BIN.names)


def test_each_image_is_its_own_group(built):
    _, _, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["group_id"]].add(split)
            assert row["group_id"] == f"rsna_bone_age:{row['sample_id']}"
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(ds[split].num_rows for split in ("train", "validation", "test"))  # no labelled test sheet: drawn


def test_bad_inputs_are_named(built):
    _, out, report, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    expected = {
        f"{TRAINING_SHEET}:row 25": "missing image: no 15600.png under boneage-training-dataset/",
        f"{TRAIN_DIR}/15601.png": "no label: id '15601' has no row in boneage-training-dataset.csv",
        f"{TRAIN_DIR}/15602.png":
            "bad row: boneage-training-dataset.csv row 26: boneage 'unknown' is not a number of months",
        f"{TRAIN_DIR}/15603.png": "bad row: boneage-training-dataset.csv row 27: male 'maybe' is not True or False",
        f"{TRAIN_DIR}/15604.png": "cannot decode image: OSError: image file is truncated",
        f"{TRAIN_DIR}/15605.png": "empty file (0 bytes)",
        f"{TRAIN_DIR}/15606.png": "cannot decode image: not a format Pillow recognises",
    }
    rejected = {p: e.reason for p, e in by_path.items() if e.status == "rejected"}
    assert rejected == expected
    assert {p: e.reason for p, e in by_path.items() if e.status == "dropped"} == {  # no ages published: no error
        f"{sample.TEST}/{sample.TEST}/{n}.png":
            f"not used: unlabelled: boneage-test-dataset.csv (the publisher's test list) names '{n}' without a label"
        for n in range(4360, 4363)
    }
    assert by_path[TRAINING_SHEET].status == "kept" and by_path[f"{sample.TEST}.csv"].status == "kept"


def test_counts_of_each_outcome(built):
    _, _, report, _ = built
    counts = report.sources[0].counts
    assert counts == {"kept": 26, "moved": 0, "dropped": 3, "rejected": 7, "ignored": 0}


def test_bins_use_the_registry_edges():
    assert bone_age_bin(0, BIN.bins, BIN.names) == BIN.names[0]
    assert bone_age_bin(BIN.bins[1] - 0.5, BIN.bins, BIN.names) == BIN.names[0]
    assert bone_age_bin(BIN.bins[1], BIN.bins, BIN.names) == BIN.names[1]
    assert bone_age_bin(BIN.bins[-1] + 100, BIN.bins, BIN.names) == BIN.names[-1]
    with pytest.raises(BadSourceFile, match="below the first bin edge"):
        bone_age_bin(-1, BIN.bins, BIN.names)


def _workbook_rows(path):
    """The workbook's rows as openpyxl reads them (not through the builder's pandas reader)."""
    openpyxl = pytest.importorskip("openpyxl")
    return [list(row) for row in openpyxl.load_workbook(path, read_only=True).active.iter_rows(values_only=True)]


def test_the_challenge_release_reads_its_excel_test_truth(tmp_path):
    pytest.importorskip("openpyxl")
    root = sample.make(tmp_path / "Bone Age Datasets", layout="rsna", n_train=8, n_test=2)
    truth = root / "Bone Age Test Set" / TEST_TRUTH_XLSX
    assert RSNABoneAgeBuilder.detect(root)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert dict(report.counts) == {"kept": 8 + 2 + 2 + 3}  # images (train, validation, test) and the 3 sheets
    assert not any("Excel" in w for w in report.warnings), report.warnings
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[f"Bone Age Test Set/{TEST_TRUTH_XLSX}"].reason == "index file: no sample of its own"
    header, *rows = _workbook_rows(truth)
    assert header == ["Case ID", "Sex", "Ground truth bone age (months)"]
    assert {e.sample_id for e in report.entries if e.split == "test"} == {f"test/{r[0]}" for r in rows}
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    got = {r["sample_id"]: (r["sex"], r["bone_age_months"]) for r in ds["test"]}
    assert got == {f"test/{case}": (sex, float(months)) for case, sex, months in rows}
    # a CSV copy saved beside the workbook (as this build once needed) is read instead of it
    (truth.with_suffix(".csv")).write_text("Case ID,Sex,Ground truth bone age (months)\n4360,F,101.5\n4361,M,121\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[f"Bone Age Test Set/{TEST_TRUTH_XLSX}"].status == "dropped"
    assert by_path[f"Bone Age Test Set/{TEST_TRUTH_XLSX}"].reason == (
        "not used: its CSV copy Bone Age Test Set/Bone age ground truth.csv beside it is read instead"
    )
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache2"))
    assert sorted(r["bone_age_months"] for r in ds["test"]) == [101.5, 121.0]


def test_the_release_as_its_box_share_downloads(tmp_path):
    """Folders downloaded from the Stanford AIMI Box share unpack as ``Bone+Age+Training+Set/`` (the images),
    ``Bone+Age+Training+Set+Annotations/train.csv`` (their sheet, alone in a folder of its own) and
    ``Bone+Age+Validation+Set/Bone Age Validation Set/`` (its sheet two folders down): every image gets its row."""
    pytest.importorskip("openpyxl")
    root = sample.make(tmp_path / "downloads", layout="box", n_train=8, n_test=2)
    folders = sample.RELEASE_FOLDERS["box"]
    validation_sheet = f"{folders['validation']}/Validation Dataset.csv"
    assert (root / validation_sheet).is_file() and RSNABoneAgeBuilder.detect(root)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert dict(report.counts) == {"kept": 8 + 2 + 2 + 3}, [
        (e.source_path, e.reason) for e in report.entries if e.status != "kept"]
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[validation_sheet].reason == "index file: no sample of its own"
    kept = {e.sample_id: e for e in report.entries if e.sample_id}
    assert {i for i in kept if i.startswith("train/")} == {f"train/{1377 + i}" for i in range(8)}
    assert {i for i in kept if i.startswith("validation/")} == {"validation/1386", "validation/1392"}
    assert {i for i, e in kept.items() if e.split == "test"} == {"test/4360", "test/4361"}
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    rows = {r["sample_id"]: r for split in ds for r in ds[split]}
    assert rows["validation/1386"]["bone_age_months"] == 30.0 and rows["validation/1386"]["sex"] == "F"
    assert rows["train/1377"]["bone_age_months"] == 6.0


def test_excel_sheets_build_as_their_csv_copies(built, build_sample):
    """The Kaggle layout with both sheets as workbooks: every file, row and label as the CSV sheets give them."""
    pytest.importorskip("openpyxl")
    root, out, _, ds = build_sample(TASK, "rsna_bone_age", sheets="xlsx")
    assert not list(root.glob("*.csv")) and RSNABoneAgeBuilder.detect(root)
    header, *rows = _workbook_rows(root / "boneage-training-dataset.xlsx")
    assert header == ["id", "boneage", "male"] and {type(r[2]) for r in rows} == {bool, str}  # Excel booleans

    def outcomes(config):
        return {
            e.source_path.replace(".csv", ".xlsx"): (e.status, e.reason.replace(".csv", ".xlsx"), e.sample_id)
            for e in read_manifest(config / TASK)
        }

    def rows_of(dataset):
        return sorted((r["sample_id"], r["bone_age_months"], r["bone_age_bin"], r["sex"], split)
                      for split in dataset for r in dataset[split])

    assert outcomes(out) == outcomes(built.out) and len(outcomes(out)) == sum(built.report.counts.values())
    assert rows_of(ds) == rows_of(built.ds) and len(rows_of(ds)) == 24


def test_without_openpyxl_a_workbook_and_its_images_are_rejected_until_installed(tmp_path, monkeypatch):
    pytest.importorskip("openpyxl")
    root = sample.make(tmp_path / "rsna", layout="rsna", n_train=4, n_test=2)
    relpath = f"Bone Age Test Set/{TEST_TRUTH_XLSX}"
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "openpyxl", None)  # as if the tables extra were not installed
        report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
        with pytest.raises(StrictBuildError, match=r"needs openpyxl \(pip install multimed_hf\[tables\]\)"):
            build_dataset(TASK, [root], tmp_path / "strict", progress=False, on_bad_files="error")
    needs = f"{relpath} is an Excel sheet: reading it needs openpyxl (pip install multimed_hf[tables])"
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert rejected == {
        relpath: needs,
        **{
            f"Bone Age Test Set/Test Set Images/{n}.png": f"no label: its sheet {relpath} is unusable ({needs})"
            for n in (4360, 4361)
        },
    }
    assert f"rsna_bone_age: {relpath} is an Excel sheet and openpyxl is not installed: it and the images it labels " \
        "are rejected (pip install multimed_hf[tables] to read it)" in report.warnings
    # installed (the patch undone): the same output folder reads the workbook, the cached rejections do not stick
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert report.counts["rejected"] == 0 and not any("openpyxl" in w for w in report.warnings), report.warnings
    assert {e.sample_id for e in report.entries if e.split == "test"} == {"test/4360", "test/4361"}


def test_a_damaged_workbook_is_named(tmp_path):
    pytest.importorskip("openpyxl")
    root = sample.make(tmp_path / "rsna", layout="rsna", n_train=2, n_test=1)
    truth = root / "Bone Age Test Set" / TEST_TRUTH_XLSX
    truth.write_bytes(truth.read_bytes()[:200])  # a cut download
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    reason = f"Bone Age Test Set/{TEST_TRUTH_XLSX} is not a readable Excel workbook: BadZipFile: File is not a zip file"
    assert rejected == {
        f"Bone Age Test Set/{TEST_TRUTH_XLSX}": reason,
        "Bone Age Test Set/Test Set Images/4360.png":
            f"no label: its sheet Bone Age Test Set/{TEST_TRUTH_XLSX} is unusable ({reason})",
    }


def test_excel_cells_follow_the_csv_rules(tmp_path):
    """Stripped text, blank rows numbered, Excel numbers and booleans as their text."""
    pytest.importorskip("openpyxl")
    path = tmp_path / "sheet.xlsx"
    sample.write_xlsx(path, [[" Image ID ", "male", "Bone Age (months)"], [1386, False, 30], [None, None, None],
                             ["1392", " True ", 150.5]])
    header, rows = read_excel_sheet(path, "sheet.xlsx")
    assert header == ["Image ID", "male", "Bone Age (months)"]
    assert rows == [{"Image ID": "1386", "male": "False", "Bone Age (months)": "30"}, None,
                    {"Image ID": "1392", "male": "True", "Bone Age (months)": "150.5"}]


def test_the_challenge_validation_and_test_sheets(tmp_path):
    """Official sheet headers: validation is training data, the test ground truth the published test set."""
    root = tmp_path / "rsna"
    sample.make(root, n_train=8, n_test=0, bad_files=False)
    (root / f"{sample.TEST}.csv").unlink()
    shutil.rmtree(root / sample.TEST)
    rng = np.random.default_rng(1)
    val = root / "Bone Age Validation Set"
    test = root / "Bone Age Test Set"
    for folder in (val / "boneage-validation-dataset-1", test / "images"):
        folder.mkdir(parents=True)
    for image_id, months in ((1386, 30), (1392, 150)):
        (val / "boneage-validation-dataset-1" / f"{image_id}.png").write_bytes(sample.encode(sample.hand(months, rng)))
    (val / "Validation Dataset.csv").write_text("Image ID,male,Bone Age (months)\n1386,FALSE,30.0\n1392,TRUE,150\n")
    train_id = sorted((root / TRAIN_DIR).glob("*.png"))[0].stem  # the test set reuses a training id: another child
    (test / "images" / f"{train_id}.png").write_bytes(sample.encode(sample.hand(200, rng)))
    (test / "Bone age ground truth.csv").write_text(f"Case ID,Sex,Ground truth bone age (months)\n{train_id},F,200.5\n")
    assert RSNABoneAgeBuilder.detect(root)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert report.counts["rejected"] == 0
    kept = {e.sample_id: e for e in report.entries if e.sample_id}
    assert kept[f"test/{train_id}"].split == "test"
    assert kept[f"train/{train_id}"].split in ("train", "validation")
    assert {kept[f"validation/{n}"].split for n in (1386, 1392)} <= {"train", "validation"}
    assert sum(report.splits.values()) == 8 + 2 + 1
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    (row,) = ds["test"]
    assert (row["bone_age_months"], row["sex"], BIN.names[row["bone_age_bin"]]) == (200.5, "F", BIN.names[-1])
    validation = {r["sample_id"]: r for split in ds for r in ds[split] if r["sample_id"].startswith("validation/")}
    assert validation["validation/1386"]["sex"] == "F" and validation["validation/1392"]["sex"] == "M"


@pytest.mark.parametrize("where", ["", f"{sample.TEST}/"])
def test_the_ground_truth_beside_kaggles_test_list_labels_the_test_set(tmp_path, where):
    # before: with RSNA's ground-truth sheet dropped at the root of a Kaggle download, Kaggle's unlabelled test list
    # (deeper) shadowed it: every test image "unlabelled", the test split drawn from training images; inside
    # boneage-test-dataset/ it worked, by file-name order
    root = tmp_path / "rsna"
    sample.make(root, n_train=8, n_test=3, bad_files=False)
    ids = [row["Case ID"] for row in _sheet(root, f"{sample.TEST}.csv")]
    truth = root / where / "Bone age ground truth.csv"
    truth.write_text("Case ID,Sex,Ground truth bone age (months)\n"
                     + "".join(f"{i},F,{100 + n}.5\n" for n, i in enumerate(ids)))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert report.counts["rejected"] == 0 and report.counts["dropped"] == 0, report.summary()
    kept = {e.sample_id: e.split for e in report.entries if e.sample_id}
    assert {kept[f"test/{i}"] for i in ids} == {"test"}
    ds = load_dataset(str(tmp_path / "out"), TASK, split="test", cache_dir=str(tmp_path / "hf_cache"))
    assert sorted(ds["bone_age_months"]) == [100.5, 101.5, 102.5]


def test_an_edited_sheet_is_read_again(tmp_path):
    root = sample.make(tmp_path / "rsna", n_train=6, n_test=0, bad_files=False)
    out = tmp_path / "out"
    build_dataset(TASK, [root], out, progress=False)
    rows = _sheet(root, TRAINING_SHEET)
    rows[0]["boneage"] = "199"
    with (root / TRAINING_SHEET).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "boneage", "male"])
        writer.writeheader()
        writer.writerows(rows)
    build_dataset(TASK, [root], out, progress=False)
    ds = load_dataset(str(out), TASK, cache_dir=str(tmp_path / "hf_cache"))
    ages = {r["sample_id"]: r["bone_age_months"] for split in ds for r in ds[split]}
    assert ages[f"train/{rows[0]['id']}"] == 199.0


def test_a_sheet_without_its_columns_labels_nothing(tmp_path):
    root = sample.make(tmp_path / "rsna", n_train=4, n_test=0, bad_files=False)
    (root / TRAINING_SHEET).write_text("id,age,male\n1377,10,True\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[TRAINING_SHEET].reason == (
        "boneage-training-dataset.csv lacks the column(s) ['boneage']; its header is ['id', 'age', 'male']"
    )
    images = [e for e in report.entries if e.source_path.endswith(".png")]
    assert images and all(
        e.status == "rejected" and e.reason.startswith("no label: its sheet boneage-training-dataset.csv is unusable")
        for e in images
    )


@pytest.mark.parametrize("damage, reason", [
    ("title row", "boneage-training-dataset.xlsx lacks the column(s) ['id', 'boneage', 'male']; its header is "
                  "['RSNA bone age training set', '', '']"),
    ("empty first worksheet", "boneage-training-dataset.xlsx: its first worksheet 'Notes', the one read, is empty; "
                              "the workbook's other worksheets: ['data'] (move the rows to the first)"),
])
def test_a_damaged_training_workbook_is_named_as_the_csv_is(tmp_path, damage, reason):
    # before: the folder "matched none of the source layouts of task 'bone_age'", the workbook and its problem unsaid
    openpyxl = pytest.importorskip("openpyxl")
    root = tmp_path / "rsna"
    sample.make(root, n_train=6, n_test=0, bad_files=False)
    sheet = root / f"{sample.TRAIN}.csv"
    rows = [line.split(",") for line in sheet.read_text().splitlines()]
    sheet.unlink()
    book = openpyxl.Workbook()
    if damage == "title row":
        book.active.append(["RSNA bone age training set"])
        data = book.active
    else:
        book.active.title = "Notes"
        data = book.create_sheet("data")
    for row in rows:
        data.append(row)
    book.save(root / f"{sample.TRAIN}.xlsx")
    assert RSNABoneAgeBuilder.detect(root)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert {e.source_path: e.reason for e in report.entries}[f"{sample.TRAIN}.xlsx"] == reason
