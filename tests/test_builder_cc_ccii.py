"""CC-CCII CT slices: class folders, scans as volumes, patient groups, and the unzip_filenames.csv checks."""

from collections import defaultdict

import pytest

from dataset_scripts.sample_sources import cc_ccii as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders.cc_ccii import INDEX_FILE
from multimed_hf.data.manifest import read_manifest

TASK = "radiographic_findings"
FINDING = {"NCP": "novel_coronavirus_pneumonia", "CP": "common_pneumonia", "Normal": "normal"}


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "cc_ccii")


def test_slices_carry_class_scan_and_slice_number(built):
    _, _, report, ds = built
    names = ds["train"].features["finding"].names
    for split in ds:
        for row in ds[split]:
            folder, patient, scan, name = row["source_path"].split("/")
            assert names[row["finding"]] == FINDING[folder] and row["severity"] is None
            assert row["modality"] == "ct" and row["window"] is None  # the publisher's images: window unknown
            assert row["patient_id"] == patient and row["volume_id"] == f"{folder}/{patient}/{scan}"
            number = name.split(".")[0] if row["source_path"] != sample.NAME_VARIANT else name[4:8]
            assert row["slice_index"] == int(number)
            image = row["image"]
            image.load()
            assert image.size == (64, 64)


def test_patient_groups_span_scans_and_class_folders(built):
    _, out, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values()), "a group spans two splits"
    assert len(splits_of) >= 3 and all(ds[split].num_rows for split in ("train", "validation", "test"))
    entries = [e for e in read_manifest(out / TASK) if e.status == "kept" and e.sample_id]
    two_scans = {e.group for e in entries if e.source_path.startswith(("NCP/2/1802/", "NCP/2/1803/"))}
    assert two_scans == {"cc_ccii:patient:2"}
    # patient id 7 under CP/ and Normal/: one group (the ids are not known to be per class)
    assert {e.group for e in entries if e.source_path.split("/")[1] == "7"} == {"cc_ccii:patient:7"}


def test_index_rows_checked_against_the_folders(built):
    _, out, _, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    assert by_path[INDEX_FILE].status == "kept" and by_path["lesions_slices.csv"].status == "kept"
    rows = {p: e.reason for p, e in by_path.items() if p.startswith(f"{INDEX_FILE}:row")}
    assert rows == {
        f"{INDEX_FILE}:row 4": "slice count mismatch: NCP/3/1804 holds 3 slice files, n_slice says 5 "
                               "(the slices present are kept)",
        f"{INDEX_FILE}:row 15": "label mismatch: scan 24/4005 is filed under Normal/, the index says CP (its "
                                "slices are rejected)",
    }
    assert all(by_path[p].status == "rejected" for p in rows)
    # before: the misfiled scan's slices were kept under the folder's class (here in the test split), unflagged
    slices = {p: e for p, e in by_path.items() if p.startswith("Normal/24/4005/")}
    assert slices and all(e.status == "rejected" and e.reason == "label conflict: scan 24/4005 is filed under "
                          f"Normal/, {INDEX_FILE} lists it under CP" for e in slices.values()), slices
    assert by_path["NCP/3/1804/0002.png"].status == "kept"  # a short scan keeps its slices
    # a zip part none of whose scans is here (NCP-13.zip is reported broken): one warning, no error per scan
    assert any(w.startswith("cc_ccii: partial download: none of the 1 scans (40 slices)") and "NCP-13.zip" in w
               for w in built.report.warnings), built.report.warnings


def test_every_real_slice_format_and_a_name_variant_are_kept(built):
    by_path = {e.source_path: e for e in read_manifest(built.out / TASK)}
    for scan, (_, suffix) in sample.FORMATS.items():
        kept = [e for p, e in by_path.items() if p.split("/")[2:3] == [scan] and p.endswith(f".{suffix}")]
        assert len(kept) >= 2 and all(e.status == "kept" and not e.reason for e in kept), kept
    variant = by_path[sample.NAME_VARIANT]
    assert variant.status == "kept" and variant.reason.startswith("name variant: 'IMG-0007.jpg'"), variant
    assert "slice index 7" in variant.reason
    thumbs = by_path["Normal/8/4002/Thumbs.db"]
    assert thumbs.status == "ignored" and thumbs.reason.startswith("not used: ignored: Thumbs.db"), thumbs


def test_partial_download_builds_with_warnings(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    for path in sorted((root / "CP").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (root / "CP").rmdir()
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert any("partial download: no CP/ folder" in w for w in report.warnings), report.warnings
    assert any("CP-1.zip" in w for w in report.warnings), report.warnings
    assert report.counts["rejected"] == 0 and report.counts["kept"] > 0, report.counts


def test_bad_files_and_label_conflict(built):
    _, out, report, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    expected = {
        "CP/5/3101/0002.png": "cannot decode image",  # cut in half
        "CP/6/3102/0002.jpg": "empty file",
        "NCP/2/notes.txt": "stray file",
        "CP/9/3104/0002.png": "label conflict",  # an NCP slice copied into a CP scan
        "NCP/3/1804/0001.png": "label conflict",
    }
    misfiled = [p for p in by_path if p.startswith("Normal/24/4005/")]  # the index lists the scan under CP
    expected.update((p, "label conflict: scan 24/4005 is filed under Normal/") for p in misfiled)
    for path, reason in expected.items():
        assert by_path[path].status == "rejected" and by_path[path].reason.startswith(reason), by_path[path]
    files = {p for p in by_path if ":row" not in p}
    assert {p for p in files if by_path[p].status == "rejected"} == set(expected)
    assert report.duplicates["label conflicts rejected"] == 2


def test_counts_of_each_outcome(built):
    _, _, report, _ = built
    counts = report.sources[0].counts
    misfiled = 3  # Normal/24/4005's slices, which the index lists under CP
    assert counts["rejected"] == 5 + misfiled + 2 and counts["dropped"] == 0 and counts["ignored"] == 1


def test_a_malformed_index_is_rejected_and_checks_nothing(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    (root / INDEX_FILE).write_text("zip_file,label,patient_id,scan_id\nNCP-1.zip,NCP,1,1801\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[INDEX_FILE].status == "rejected"
    assert by_path[INDEX_FILE].reason == (
        "unzip_filenames.csv lacks the column(s) ['n_slice']; "
        "its header is ['zip_file', 'label', 'patient_id', 'scan_id']"
    )
    assert not [p for p in by_path if ":row" in p]
    assert report.counts["rejected"] == 1


@pytest.mark.parametrize("row, reason", [
    # a download cut mid-line (before: AttributeError on None, the whole build stopped), and a blank count (before:
    # the rejected index still labelled slices and checked scans)
    ("NCP-2.zip,NCP,2,1802", "unzip_filenames.csv: row 2 has 4 field(s), the header 5"),
    ("NCP-2.zip,NCP,2,1802,", "unzip_filenames.csv: row 2: n_slice '' is not a count"),
])
def test_an_index_row_cut_short_rejects_the_index_which_then_checks_nothing(tmp_path, row, reason):
    root = sample.make(tmp_path / sample.FOLDER)  # with the misfiled and short scans the index's rows check
    lines = (root / INDEX_FILE).read_text().splitlines()
    lines[2] = row
    (root / INDEX_FILE).write_text("\n".join(lines) + "\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[INDEX_FILE].status == "rejected" and by_path[INDEX_FILE].reason == reason
    assert not [p for p in by_path if ":row" in p]
    assert not [e for e in report.entries if "the index says" in (e.reason or "")]


def test_macos_resource_forks_are_no_slices_of_a_scan(tmp_path):
    # before: ._0000.png forks (a folder copied from a Mac) counted as slices: every index row "slice count mismatch"
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    clean = build_dataset(TASK, [root], tmp_path / "clean", progress=False)
    for path in [p for p in root.rglob("*.png")]:
        (path.parent / f"._{path.name}").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    forked = build_dataset(TASK, [root], tmp_path / "forked", progress=False)
    rows = lambda report: {(e.source_path, e.status, e.reason) for e in report.entries if ":row" in e.source_path}
    assert rows(forked) == rows(clean)


def test_an_index_named_in_capitals_is_read_as_the_index(tmp_path):
    # before: UNZIP_FILENAMES.CSV (a CD or Windows copy) was a "stray file: not an image", and its label check was
    # skipped: a scan misfiled under another class was kept with that class
    root = sample.make(tmp_path / sample.FOLDER)
    clean = build_dataset(TASK, [root], tmp_path / "clean", progress=False)
    (root / INDEX_FILE).rename(root / INDEX_FILE.upper())
    upper = build_dataset(TASK, [root], tmp_path / "upper", progress=False)
    status = lambda report: sorted((e.source_path.replace(INDEX_FILE.upper(), INDEX_FILE), e.status, e.reason)
                                   for e in report.entries)
    assert status(upper) == status(clean)
