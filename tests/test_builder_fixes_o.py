"""CBIS-DDSM case CSVs without the columns read, or folders named like them; VQA-RAD / SLAKE items repeated verbatim,
QA files that cannot be read and items without a qid; PMC-OA caption files that start with a UTF-8 BOM."""

import csv
import json

import pytest

from dataset_scripts.sample_sources import cbis_ddsm, pmc_oa, slake, vqa_rad
from multimed_hf.api import build_dataset
from multimed_hf.builders.cbis_ddsm import FOLDER_NAME
from multimed_hf.data.errors import StrictBuildError
from multimed_hf.data.source_builder import PROVENANCE_FILE

MASS_TRAIN = "mass_case_description_train_set.csv"
CALC_TEST = "calc_case_description_test_set.csv"
QA = vqa_rad.QA_FILE


def _files(root) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE}


def _full_mammograms(entries, prefix: str) -> set[str]:
    """The full mammograms' DICOMs (not the ROI folders') under case folders starting with ``prefix``."""
    return {p for p in entries if p.startswith(f"CBIS-DDSM/{prefix}")
            and FOLDER_NAME.match(p.split("/")[1]).group(6) is None}


# ---------------------------------------------------------------------------------------------------- CBIS-DDSM
@pytest.mark.parametrize("damage, missing", [
    ("saved with semicolons", ["image file path", "pathology"]), ("pathology renamed", ["pathology"]),
])
def test_a_case_csv_without_the_columns_read_is_rejected_with_its_mammograms(tmp_path, damage, missing):
    """Before: the CSV was kept as an index file, each of its rows rejected as "no image file path" (or each
    mammogram as "pathology [''] is not one of"), each mammogram "no case-description CSV row names ..."; and
    ``--strict`` stopped at an image. Now the CSV is rejected naming the missing columns and its header, its
    mammograms name the CSV, and ``--strict`` stops at the CSV."""
    root = cbis_ddsm.make(tmp_path / "src")
    sheet = root / MASS_TRAIN
    text = sheet.read_text()
    sheet.write_text(text.replace(",", ";") if damage.startswith("saved") else text.replace("pathology", "diagnosis"))
    with sheet.open(newline="") as handle:
        header = next(csv.reader(handle))
    why = f"unusable: it lacks the column(s) {missing}; its header is {header}"

    report = build_dataset("breast_cancer", [root], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in report.entries}
    assert (entries[MASS_TRAIN].status, entries[MASS_TRAIN].reason) == ("rejected", f"{MASS_TRAIN} is {why}")
    assert not [p for p in entries if p.startswith(f"{MASS_TRAIN}:row")]  # no misleading per-row reasons
    mammograms = _full_mammograms(entries, "Mass-Training_")
    assert mammograms and {(entries[p].status, entries[p].reason) for p in mammograms} == {
        ("rejected", f"no label: {MASS_TRAIN}, the case-description CSV that labels it, is {why}")}
    assert report.splits["test"] > 0  # the other CSVs' mammograms still build
    with pytest.raises(StrictBuildError, match=rf"/{MASS_TRAIN}: {MASS_TRAIN} is unusable: it lacks the column"):
        build_dataset("breast_cancer", [root], tmp_path / "strict", progress=False, on_bad_files="error")


@pytest.mark.parametrize("holding_the_csv", [False, True])
def test_a_folder_named_like_a_case_csv_is_no_index(tmp_path, holding_the_csv):
    """Before: ``calc_case_description_test_set.csv/`` (a folder, as some unzip tools leave it) crashed the build
    with IsADirectoryError. Now it is no index: the CSV inside it is named as one the builder does not read, the
    mammograms it would label say the source lacks it, and every file is in the manifest."""
    root = cbis_ddsm.make(tmp_path / "src")
    data = (root / CALC_TEST).read_bytes()
    (root / CALC_TEST).unlink()
    (root / CALC_TEST).mkdir()
    if holding_the_csv:
        (root / CALC_TEST / CALC_TEST).write_bytes(data)

    report = build_dataset("breast_cancer", [root], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in report.entries}
    mammograms = _full_mammograms(entries, "Calc-Test_")
    assert mammograms and all(entries[p].status == "rejected" and entries[p].reason == (
        f"no case-description CSV row names {p.split('/')[1]!r} (the source has no {CALC_TEST} at the root, beside "
        "CBIS-DDSM/ or in it)") for p in mammograms)
    if holding_the_csv:
        nested = entries[f"{CALC_TEST}/{CALC_TEST}"]
        assert nested.status == "rejected"
        assert nested.reason.startswith(f"a case-description CSV where none is read ({CALC_TEST}/): move it")
    assert {p for p in entries if ":row" not in p} == _files(root)
    assert report.splits["train"] > 0 and not [e for e in report.entries if "IsADirectoryError" in e.reason]


# ---------------------------------------------------------------------------------------------------- VQA-RAD, SLAKE
def test_a_vqa_rad_item_repeated_verbatim_is_kept_once_and_one_without_a_qid_is_named(tmp_path):
    """Before: both copies of a repeated item were rejected as duplicate ids, without row numbers, and an item with
    ``"qid": null`` was kept as sample ``qid:None``."""
    root = vqa_rad.make(tmp_path / "src", bad_files=False)
    items = json.loads((root / QA).read_text())
    items.append(dict(items[9]))
    items[4]["qid"] = None
    (root / QA).write_text(json.dumps(items))
    report = build_dataset("med_vqa", [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    qid = items[9]["qid"]
    assert rejected == {
        f"{QA}:row {len(items)} (qid {qid})": f"repeated item: the same as {QA}:row 10 (qid {qid}) (kept once)",
        f"{QA}:row 5 (qid None)": "no qid: qid None names no sample",
    }
    ids = [e.sample_id for e in report.entries if e.sample_id]
    assert ids.count(f"qid:{qid}") == 1 and "qid:None" not in ids
    assert len(ids) == len(items) - 2


def test_an_image_that_cannot_be_opened_rejects_its_questions_not_the_qa_file(tmp_path, monkeypatch):
    # before: the PermissionError of one image (a file of another user) rejected the whole QA file: no sample kept
    import multimed_hf.builders.vqa_rad as builder

    root = vqa_rad.make(tmp_path / "src", bad_files=False)
    items = json.loads((root / QA).read_text())
    locked = items[0]["image_name"]
    read = builder.read_image_file

    def denied(path, relpath):
        if path.name == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return read(path, relpath)

    monkeypatch.setattr(builder, "read_image_file", denied)
    report = build_dataset("med_vqa", [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    asking = [n for n, item in enumerate(items, start=1) if item["image_name"] == locked]
    assert {p for p in rejected if p.startswith(QA)} == {f"{QA}:row {n} (qid {items[n - 1]['qid']})" for n in asking}
    assert all("unreadable: PermissionError" in rejected[p] for p in rejected if p.startswith(QA))
    assert len([e for e in report.entries if e.sample_id]) == len(items) - len(asking)


def test_a_slake_item_repeated_verbatim_is_kept_once(tmp_path):
    root = slake.make(tmp_path / "src", bad_files=False)
    items = json.loads((root / "train.json").read_text())
    items.append(dict(items[3]))
    (root / "test.json").write_text(json.dumps([{**i, "qid": None} if n == 0 else i for n, i in enumerate(
        json.loads((root / "test.json").read_text()))]))
    (root / "train.json").write_text(json.dumps(items))
    report = build_dataset("med_vqa", [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    qid = items[3]["qid"]
    assert rejected == {
        f"train.json:row {len(items)} (qid {qid})": f"repeated item: the same as train.json:row 4 (qid {qid}) "
                                                     "(kept once)",
        "test.json:row 1 (qid None)": "no qid: qid None names no sample",
    }
    kept = [e.sample_id for e in report.entries if e.sample_id and e.status in ("kept", "moved")]
    assert kept.count(f"train:{qid}") == 1 and "test:None" not in kept


def test_images_of_a_vqa_rad_qa_file_that_cannot_be_read_name_it(tmp_path):
    """Before: the JSON (cut short) was rejected, and each image was dropped as "not used: no question in the QA
    file(s) refers to this image"."""
    root = vqa_rad.make(tmp_path / "src", bad_files=False)
    (root / QA).write_bytes((root / QA).read_bytes()[:3000])
    report = build_dataset("med_vqa", [root], tmp_path / "out", progress=False)
    images = {e.source_path: e for e in report.entries if e.source_path.startswith(f"{vqa_rad.IMAGES}/")}
    assert images and {e.status for e in images.values()} == {"rejected"}
    assert all(e.reason.startswith("no question: no readable QA file refers to this image; its questions may be in a "
                                   f"QA file that cannot be read ({QA}: not valid JSON: ") for e in images.values())


def test_images_of_an_empty_slake_split_file_name_it(tmp_path):
    root = slake.make(tmp_path / "src", bad_files=False)
    def images(*names):
        return {f"imgs/{i['img_name']}" for name in names for i in json.loads((root / name).read_text())}

    only_train, others = images("train.json") - images("test.json", "validate.json"), images("test.json")
    (root / "train.json").write_bytes(b"")
    report = build_dataset("med_vqa", [root], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in report.entries}
    assert (entries["train.json"].status, entries["train.json"].reason) == ("rejected", "empty file (0 bytes)")
    assert only_train and all(entries[p].status == "rejected" and entries[p].reason.endswith(
        "cannot be read (train.json: empty file (0 bytes))") for p in only_train)
    assert all(entries[p].status == "kept" for p in others)
    assert not [e for e in report.entries if e.reason.startswith("not used: no question")]


# ---------------------------------------------------------------------------------------------------- PMC-OA
def test_a_pmc_oa_caption_file_with_a_bom_reads_like_one_without(tmp_path):
    """Before: row 1 of a ``pmc_oa.jsonl`` saved with a UTF-8 BOM was rejected ("Unexpected UTF-8 BOM") and its
    image dropped as not used."""
    plain = pmc_oa.make(tmp_path / "plain", bad_files=False)
    expected = build_dataset("pmc_pairs", [plain], tmp_path / "out_plain", progress=False)
    root = pmc_oa.make(tmp_path / "src", bad_files=False)
    captions = root / "pmc_oa.jsonl"
    captions.write_bytes(b"\xef\xbb\xbf" + captions.read_bytes())
    report = build_dataset("pmc_pairs", [root], tmp_path / "out", progress=False)
    assert report.counts == expected.counts and report.counts["rejected"] == 0
    kept = {(e.sample_id, e.source_path) for e in report.entries if e.status == "kept" and e.sample_id}
    assert kept and kept == {(e.sample_id, e.source_path) for e in expected.entries if e.status == "kept"
                             and e.sample_id}
