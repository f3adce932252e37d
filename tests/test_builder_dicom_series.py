"""User DICOM CT series: Hounsfield units through the modality LUT, labels.csv, slice order, rejected DICOMs."""

import io
import re
from collections import defaultdict

import numpy as np
import pydicom
import pytest
from datasets import load_dataset
from PIL import Image
from pydicom.pixels import apply_modality_lut

from dataset_scripts.sample_sources import dicom_series as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders._ct import LUNG_WINDOW
from multimed_hf.builders.dicom_series import LABELS_FILE, DicomSeriesBuilder
from multimed_hf.data.manifest import read_manifest
from multimed_hf.data.source_builder import PROVENANCE_FILE

TASK = "radiographic_findings"


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "dicom_series")


def _rows(ds):
    return [row for split in ds for row in ds[split]]


def test_labels_from_patients_and_series(built):
    _, _, report, ds = built
    findings, severities = ds["train"].features["finding"].names, ds["train"].features["severity"].names
    labels = {}
    for row in _rows(ds):
        finding = findings[row["finding"]] if row["finding"] is not None else None
        severity = severities[row["severity"]] if row["severity"] is not None else None
        labels.setdefault("/".join(row["source_path"].split("/")[:2]), set()).add((finding, severity))
    assert labels == {
        "PAT001/ST01": {("normal", None)},
        "PAT002/ST01": {("novel_coronavirus_pneumonia", None)},
        "PAT003/ST01": {("common_pneumonia", None)},
        "PAT004/ST01": {(None, "ct2")},  # its series row wins over its patient row
        "PAT004/ST02": {(None, "ct1")},
        "PAT008/ST01": {("novel_coronavirus_pneumonia", None)},
        "PAT009/ST01": {("viral_pneumonia", None)},
    }


def test_volume_slice_order_and_window(built):
    root, _, _, ds = built
    for row in _rows(ds):
        ds_file = pydicom.dcmread(root / row["source_path"], stop_before_pixels=True)
        assert row["volume_id"] == ds_file.SeriesInstanceUID and row["patient_id"] == ds_file.PatientID
        # files are numbered top down; the index runs along the slice normal, bottom up
        assert row["slice_index"] == sample.SLICES - ds_file.InstanceNumber
        assert row["window"] == "-600/1500" and row["modality"] == "ct"


@pytest.mark.parametrize("path", [
    "PAT001/ST01/SE01/IM0002.dcm",  # Explicit VR Little Endian
    "PAT002/ST01/SE01/IM0002.dcm",  # RLE Lossless
    "PAT003/ST01/SE01/IM0002.dcm",  # JPEG 2000 Lossless, through pylibjpeg
])
def test_pixels_are_hounsfield_units_in_the_lung_window(built, path):
    root, _, _, ds = built
    row = next(r for r in _rows(ds) if r["source_path"] == path)
    dataset = pydicom.dcmread(root / path)
    hu = apply_modality_lut(dataset.pixel_array, dataset)
    assert hu.min() < -900  # air: the intercept -1024 was applied
    assert np.array_equal(np.asarray(row["image"]), LUNG_WINDOW.to_uint8(hu))


def test_groups_never_span_splits(built):
    _, _, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert splits_of["dicom_series:patient:PAT004"] and all(ds[s].num_rows for s in ("train", "validation", "test"))


def test_bad_files_and_labels(built):
    _, out, _, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    expected = {
        "PAT001/ST01/SE01/IM0005.dcm": "no pixel data: a RT Plan Storage object (modality RTPLAN)",
        "PAT002/ST01/SE01/IM0005.dcm": "unsupported transfer syntax: MPEG2 Main Profile / Main Level",
        # pydicom's MR_truncated.dcm, and a CT slice cut in half: named as cut short, with what was expected
        "PAT003/ST01/SE01/IM0005.dcm": "truncated: the file (9,630 bytes) ends inside (7FE0,0010) Pixel Data, whose "
                                       "header declares 8,192 bytes; 8,130 are there",
        "PAT009/ST01/SE02/IM0005.dcm": "truncated: the file (7,290 bytes) ends inside (7FE0,0010) Pixel Data",
        "PAT009/ST01/SE02/IM0006.dcm": "not a DICOM file (no DICM preamble/File Meta header): it begins b'exported",
        "PAT008/ST01/SE01/IM0005.dcm": "modality 'MR'",
        "PAT001/ST01/SE01/notes.txt": "stray file",
        "labels.csv:row 9": "missing patient: 'PAT006'",
        **{f"PAT005/ST01/SE01/IM000{n}.dcm": "no label: neither series" for n in range(1, 5)},
        **{f"PAT007/ST01/SE01/IM000{n}.dcm": "no label: labels.csv row 8 says 'pneumonia'" for n in range(1, 5)},
    }
    for path, reason in expected.items():
        assert by_path[path].status == "rejected" and by_path[path].reason.startswith(reason), by_path[path]
    assert {p for p, e in by_path.items() if e.status == "rejected"} == set(expected)
    assert by_path[LABELS_FILE].status == "kept"


def test_counts_of_each_outcome(built):
    _, _, report, _ = built
    counts = report.sources[0].counts
    assert counts["rejected"] == 16 and counts["dropped"] == 0


def test_editing_labels_csv_revalidates(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    out = tmp_path / "multimed"
    before = build_dataset(TASK, [root], out, progress=False)
    labels = root / LABELS_FILE
    labels.write_text(labels.read_text().replace("PAT001,,normal", "PAT001,,ct0"))
    after = build_dataset(TASK, [root], out, progress=False)
    assert after.sources[0].fingerprint != before.sources[0].fingerprint
    ds = load_dataset(str(out), TASK, cache_dir=str(tmp_path / "hf_cache"))
    severity = {r["severity"] for r in _rows(ds) if r["patient_id"] == "PAT001"}
    assert severity == {ds["train"].features["severity"].names.index("ct0")}


def test_a_rendered_slice_reads_back_byte_for_byte(built):
    root, *_ = built
    builder = DicomSeriesBuilder(root)
    ref = builder.read_file("PAT003/ST01/SE01/IM0001.dcm")[0].fields["image"]
    assert ref.path == "PAT003/ST01/SE01/IM0001.dcm#window=-600,1500.png"
    data = builder.read_ref(ref)
    assert len(data) == ref.size and Image.open(io.BytesIO(data)).format == "PNG"


def test_upper_case_dcm_names_read_like_lower_case_ones(tmp_path):
    """PACS exports name slices in capitals (dcm4chee: ``FILE08.DCM``, dcm4che/dcm4che#946): a tree whose files
    all end in ``.DCM`` is detected, every slice is kept in its place and its patient's label row is not missing."""
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    for path in list(root.rglob("*.dcm")):
        path.rename(path.with_name(path.stem.upper() + ".DCM"))
    assert DicomSeriesBuilder.detect(root)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    slices = {p.relative_to(root).as_posix() for p in root.rglob("*.DCM")}
    unlabelled = {p for p in slices if p.startswith(("PAT005/", "PAT007/"))}  # as in the sample: no usable label
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert set(rejected) == unlabelled | {"labels.csv:row 9"}
    assert all(rejected[path].startswith("no label") for path in unlabelled)
    assert rejected["labels.csv:row 9"].startswith("missing patient: 'PAT006'")  # the one patient with no files
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    rows = _rows(ds)
    assert {r["source_path"] for r in rows} == slices - unlabelled
    for row in rows:
        number = pydicom.dcmread(root / row["source_path"], stop_before_pixels=True).InstanceNumber
        assert row["slice_index"] == sample.SLICES - number


def _slice_indices(out):
    ds = load_dataset(str(out), TASK, cache_dir=str(out.parent / f"hf_cache_{out.name}"))
    return {row["source_path"]: row["slice_index"] for row in _rows(ds)}


@pytest.mark.parametrize("change", ["slice_arrives", "sibling_cut"])
def test_an_incremental_build_equals_a_fresh_one_when_a_series_changes(tmp_path, change):
    """A slice's index is its rank among its folder's slices: a slice that arrives (removed, built, put back) or a
    sibling cut short changes the others' indices, so an incremental build must give what a fresh build gives."""
    import shutil

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    series = root / "PAT003" / "ST01" / "SE01"
    out = tmp_path / "incremental"
    if change == "slice_arrives":
        shutil.move(series / "IM0002.dcm", tmp_path / "IM0002.dcm")
        build_dataset(TASK, [root], out, progress=False)
        shutil.move(tmp_path / "IM0002.dcm", series / "IM0002.dcm")
    else:
        build_dataset(TASK, [root], out, progress=False)
        whole = (series / "IM0004.dcm").read_bytes()  # the lowest slice (index 0): the others move down
        (series / "IM0004.dcm").write_bytes(whole[:200])  # cut inside its file meta: it loses its place
    again = build_dataset(TASK, [root], out, progress=False)
    fresh = build_dataset(TASK, [root], tmp_path / "fresh", progress=False)
    indices = _slice_indices(out)
    assert indices == _slice_indices(tmp_path / "fresh")
    patient = sorted(index for path, index in indices.items() if path.startswith("PAT003/"))
    assert patient == list(range(len(patient)))  # no two slices share an index
    assert again.sources[0].fingerprint == fresh.sources[0].fingerprint


def test_slices_without_extension_are_read_and_dicomdir_is_ignored(tmp_path):
    """Scanner exports and DICOM CDs name slices without extension (``IM000001``, a SOP instance UID): a file whose
    bytes 128-131 are ``DICM`` is a slice, kept as its ``.dcm`` twin is (a tree of nothing else is recognised);
    DICOMDIR (the CD's index) is ignored, and an extension-less file that is no DICOM is a stray file, named."""
    import shutil

    from pydicom.data import get_testdata_file

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    uid_named = set()
    for path in sorted(root.rglob("*.dcm")):
        if path.parts[-4] == "PAT003":  # named by its SOP instance UID, whose dots are no extension
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            uid_named.add(path.rename(path.with_name(uid)).relative_to(root).as_posix())
        else:
            path.rename(path.with_suffix(""))  # IM0001.dcm -> IM0001
    for where in (root, root / "PAT001" / "ST01" / "SE01"):
        shutil.copy(get_testdata_file("DICOMDIR"), where / "DICOMDIR")
    (root / "PAT001" / "ST01" / "SE01" / "IM0009").write_text("exported report, not an image\n")
    assert DicomSeriesBuilder.detect(root)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    for dicomdir in ("DICOMDIR", "PAT001/ST01/SE01/DICOMDIR"):
        assert by_path[dicomdir].status == "ignored" and "index of its files" in by_path[dicomdir].reason
    stray = by_path.pop("PAT001/ST01/SE01/IM0009")
    assert stray.status == "rejected" and stray.reason.startswith("stray file") and "'DICM'" in stray.reason
    rejected = {path for path, e in by_path.items() if e.status == "rejected"}
    unlabelled = {p.relative_to(root).as_posix() for p in root.glob("PAT00[57]/*/*/IM*")}  # as in the sample
    assert rejected == unlabelled | {"labels.csv:row 9"}  # PAT006, the one patient without files
    kept = {e.source_path: e.sample_id for e in report.entries if e.status in ("kept", "moved") and e.sample_id}
    slices = {p.relative_to(root).as_posix() for p in root.glob("*/*/*/*") if p.name not in ("DICOMDIR", "IM0009")}
    assert set(kept) == slices - unlabelled
    assert kept["PAT002/ST01/SE01/IM0001"] == "PAT002/ST01/SE01/IM0001"
    assert uid_named <= set(kept) and all(kept[path] == path for path in uid_named)  # the whole UID, no "stem"
    for path, index in _slice_indices(tmp_path / "out").items():
        number = pydicom.dcmread(root / path, stop_before_pixels=True).InstanceNumber
        assert index == sample.SLICES - number


@pytest.mark.parametrize("path, cut, reason", [
    ("PAT001/ST01/SE01/IM0001.dcm", 200, "truncated: the file (200 bytes) ends inside its file meta information"),
    ("PAT001/ST01/SE01/IM0001.dcm", 0.2, "truncated: the file (2,916 bytes) ends 4 bytes into the header of the "
                                         "element after (0027,101D)"),  # pydicom stops there without a word
    ("PAT001/ST01/SE01/IM0001.dcm", 0.6, "truncated: the file (8,748 bytes) ends inside (7FE0,0010) Pixel Data, "
                                         "whose header declares 8,192 bytes; 2,498 are there"),
    ("PAT001/ST01/SE01/IM0001.dcm", 0.9, "truncated: the file (13,122 bytes) ends inside (7FE0,0010) Pixel Data"),
    # encapsulated (RLE) pixel data without its delimiter: pydicom drops the data set with only a warning
    ("PAT002/ST01/SE01/IM0001.dcm", 0.6, "truncated: the file (6,912 bytes) was cut short: End of file reached "
                                         "before delimiter (FFFE,E0DD)"),
])
def test_a_slice_cut_short_is_named_truncated(tmp_path, path, cut, reason):
    """pydicom reads a cut file without an error (the sweep saw "no pixel data: ... not an image" and "unknown SOP
    class"): the reason says it was cut short, and where."""
    from multimed_hf.data.errors import BadSourceFile
    from multimed_hf.builders.dicom_series import read_ct_slice

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    whole = (root / path).read_bytes()
    cut_file = tmp_path / "cut.dcm"
    cut_file.write_bytes(whole[: cut if isinstance(cut, int) else int(len(whole) * cut)])
    with pytest.raises(BadSourceFile, match="^" + re.escape(reason)):
        read_ct_slice(cut_file)


def test_a_row_without_label_or_key_is_rejected_alone_and_the_other_patients_are_kept(tmp_path):
    """One empty label cell made the whole labels.csv unusable (every slice of every patient rejected): only that
    row is rejected, naming what it lacks, with the slices it leaves unlabelled; a row without key labels nothing,
    an empty row is skipped, an empty label beside a row that states one gives way, and every file is listed."""
    clean = build_dataset(TASK, [sample.make(tmp_path / "clean", bad_files=False)], tmp_path / "o1", progress=False)
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    labels = root / LABELS_FILE
    lines = labels.read_text().splitlines()
    assert lines[7] == "PAT009,,viral_pneumonia" and lines[2] == "PAT001,,normal"
    lines[7] = "PAT009,,"
    lines += [",,normal", ",,", "PAT001,,"]  # rows 10, 11 (empty: skipped) and 12
    labels.write_text("\n".join(lines) + "\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[LABELS_FILE].status == "kept"
    rows = {p: e.reason for p, e in by_path.items() if p.startswith(f"{LABELS_FILE}:") and e.status == "rejected"}
    assert rows == {
        "labels.csv:row 7": "no label: the row gives patient_id 'PAT009' an empty label; the slices it names have no "
                            "label",
        "labels.csv:row 9": "missing patient: 'PAT006' has no <patient>/<study>/<series>/*.dcm files",
        "labels.csv:row 10": "no patient_id or series_uid: the row's label 'normal' applies to no series",
        "labels.csv:row 12": "no label: the row gives patient_id 'PAT001' an empty label; row 2 labels it",
    }
    pat009 = {p for p in by_path if p.startswith("PAT009/")}
    assert pat009 and all(by_path[p].status == "rejected" and by_path[p].reason == (
        "no label: labels.csv row 7 gives patient 'PAT009' an empty label") for p in pat009)
    kept = lambda r: {e.sample_id for e in r.entries if e.status == "kept" and e.sample_id}  # noqa: E731
    assert kept(report) == {s for s in kept(clean) if not s.startswith("PAT009/")} and kept(report)
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {PROVENANCE_FILE}
    assert files <= set(by_path)  # every file accounted for
    assert report.counts["rejected"] == sum(1 for e in clean.entries if e.status == "rejected") + len(pat009) + 3


def test_a_key_labelled_two_ways_still_makes_labels_csv_unusable(tmp_path):
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    labels = root / LABELS_FILE
    labels.write_text(labels.read_text() + "PAT001,,ct1\n")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entry = next(e for e in report.entries if e.source_path == LABELS_FILE)
    assert entry.status == "rejected" and "'PAT001' is labelled 'normal' (row 2) and 'ct1' (row 10)" in entry.reason
    assert not any(e.sample_id for e in report.entries if e.status == "kept")


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file (0 bytes)"),
    (b"<html><body>403 Forbidden</body></html>\n",
     "not a DICOM file (no DICM preamble/File Meta header): it begins b'<html><body>403 Forbidde'..."),
])
def test_an_empty_or_foreign_dcm_is_named_without_pydicoms_force_advice(tmp_path, content, reason):
    """pydicom's "... Use force=True to force reading." points at an option no command offers: an empty file and
    a file that is no DICOM (an error page saved as .dcm) say what they are; the build names the file."""
    from multimed_hf.builders.dicom_series import read_ct_slice
    from multimed_hf.data.errors import BadSourceFile

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    path = root / "PAT001" / "ST01" / "SE01" / "IM0002.dcm"
    path.write_bytes(content)
    with pytest.raises(BadSourceFile, match="^" + re.escape(reason) + "$"):
        read_ct_slice(path)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entry = next(e for e in report.entries if e.source_path == "PAT001/ST01/SE01/IM0002.dcm")
    assert entry.status == "rejected" and entry.reason == reason and "force" not in entry.reason
    kept = {e.source_path for e in report.entries if e.status == "kept" and e.source_path.startswith("PAT001/")}
    assert kept == {f"PAT001/ST01/SE01/IM000{n}.dcm" for n in (1, 3, 4)}  # its series' other slices keep their place


@pytest.mark.parametrize("damage, instance", [("no_position", 2), ("no_position", 1), ("no_position", 4),
                                              ("other_series", 2)])
def test_slice_indices_rank_each_series_and_place_a_slice_without_a_position(tmp_path, damage, instance):
    # before: a slice without ImagePositionPatient sorted after every positioned one (the volume's far end), and a
    # slice of another series in the folder took a rank of the first series' (their indices 0, 2, 3); then (sweep
    # K10) a first or last slice without one took its neighbour's position and was put before it by file name
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    path = root / "PAT003" / "ST01" / "SE01" / f"IM000{instance}.dcm"
    ds = pydicom.dcmread(path)
    if damage == "no_position":
        del ds.ImagePositionPatient
    else:
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path)
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    indices = {p: i for p, i in _slice_indices(tmp_path / "out").items() if p.startswith("PAT003/")}
    if damage == "no_position":  # instance 2 of 4 lies between instances 1 and 3, 1 and 4 at the ends
        assert indices == {f"PAT003/ST01/SE01/IM000{n}.dcm": sample.SLICES - n for n in range(1, 5)}
    else:
        others = sorted(i for p, i in indices.items() if not p.endswith("IM0002.dcm"))
        assert others == [0, 1, 2] and indices["PAT003/ST01/SE01/IM0002.dcm"] == 0


def test_a_localizer_image_is_rejected_not_kept_as_a_slice(tmp_path):
    # before (sweep D4): a CT study's scout / topogram (Image Type LOCALIZER), exported beside its axial series, was
    # kept as a slice of the patient's labelled volume, unsaid
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    series = root / "PAT003" / "ST01" / "SE01"
    scout = pydicom.dcmread(series / "IM0001.dcm")
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    (series.parent / "SE09").mkdir()
    scout.SeriesInstanceUID = pydicom.uid.generate_uid()
    scout.save_as(series.parent / "SE09" / "IM0001.dcm")
    in_series = pydicom.dcmread(series / "IM0002.dcm")  # one in the axial series' own folder too
    in_series.ImageType = "LOCALIZER"
    in_series.save_as(series / "IM0002.dcm")
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    indices = {p: i for p, i in _slice_indices(tmp_path / "out").items() if p.startswith("PAT003/")}
    assert sorted(indices) == [f"PAT003/ST01/SE01/IM000{n}.dcm" for n in (1, 3, 4)]
    assert sorted(indices.values()) == [0, 1, 2]
    rejected = {e.source_path: e.reason for e in read_manifest(tmp_path / "out" / TASK)
                if e.status == "rejected"}
    for path in ("PAT003/ST01/SE09/IM0001.dcm", "PAT003/ST01/SE01/IM0002.dcm"):
        assert "a localizer (scout / topogram) image" in rejected[path]


def test_a_series_over_two_folders_is_ranked_whole_and_a_repeated_slice_is_read_once(tmp_path):
    # before (sweep I4): ranked folder by folder (indices 0, 1, 0, 1 in one volume), and a second file of one SOP
    # instance kept as one more slice of the volume
    import shutil

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    series = root / "PAT003" / "ST01" / "SE01"
    (series.parent / "SE01b").mkdir()
    for n in (3, 4):
        shutil.move(series / f"IM000{n}.dcm", series.parent / "SE01b" / f"IM000{n}.dcm")
    shutil.copy(series / "IM0002.dcm", series / "IM0002 (1).dcm")
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    indices = {p: i for p, i in _slice_indices(tmp_path / "out").items() if p.startswith("PAT003/")}
    assert sorted(indices.values()) == list(range(sample.SLICES))
    assert indices == {f"PAT003/ST01/{'SE01' if n < 3 else 'SE01b'}/IM000{n}.dcm": sample.SLICES - n
                       for n in range(1, 5)}
    entries = {e.source_path: e for e in read_manifest(tmp_path / "out" / TASK)}
    copy = entries["PAT003/ST01/SE01/IM0002 (1).dcm"]
    assert copy.status != "kept" and "a second file of SOP instance" in copy.reason
    assert "PAT003/ST01/SE01/IM0002.dcm read instead" in copy.reason


def test_a_slice_of_another_plane_than_its_series_is_rejected(tmp_path):
    # before (sweep I4): coronal slices in an axial series were ranked with them, each along its own normal
    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    series = root / "PAT003" / "ST01" / "SE01"
    path = series / "IM0004.dcm"
    ds = pydicom.dcmread(path)
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    ds.save_as(path)
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    indices = {p: i for p, i in _slice_indices(tmp_path / "out").items() if p.startswith("PAT003/")}
    assert sorted(indices.values()) == [0, 1, 2] and "PAT003/ST01/SE01/IM0004.dcm" not in indices
    entry = next(e for e in read_manifest(tmp_path / "out" / TASK) if e.source_path.endswith("SE01/IM0004.dcm")
                 and e.source_path.startswith("PAT003/"))
    assert entry.status == "rejected" and entry.reason.startswith("a slice of another plane (normal [0.0, 1.0, 0.0])")
    assert "its series' 3 of 4 slices (normal [0.0, 0.0, 1.0])" in entry.reason


def test_series_folders_without_a_series_uid_are_ranked_each_as_its_own_volume(tmp_path):
    # before (sweep K13): slices without SeriesInstanceUID were ranked together over the study's folders (indices
    # 0..7 interleaved), where each folder is its own volume
    import shutil

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    study = root / "PAT003" / "ST01"
    shutil.copytree(study / "SE01", study / "SE02")
    for path in sorted(study.glob("SE0*/*.dcm")):
        ds = pydicom.dcmread(path)
        del ds.SeriesInstanceUID
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(path)
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    indices = {p: i for p, i in _slice_indices(tmp_path / "out").items() if p.startswith("PAT003/")}
    for folder in ("SE01", "SE02"):
        assert {n: indices[f"PAT003/ST01/{folder}/IM000{n}.dcm"] for n in range(1, 5)} == {
            n: sample.SLICES - n for n in range(1, 5)}
