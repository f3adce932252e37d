"""CBIS-DDSM mammograms: full mammograms kept, ROI folders dropped, CSV joins, leaks repaired, bad DICOMs named."""

from collections import defaultdict

import numpy as np
import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import cbis_ddsm as sample
from multimed_hf.api import build_dataset
from multimed_hf.data.manifest import read_manifest

TASK = "breast_cancer"


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "cbis_ddsm")


def test_full_mammograms_load_as_16_bit_with_their_labels(built):
    ds = built.ds
    names = ds["train"].features["malignancy"].names
    rows = [row for split in ds for row in ds[split]]
    malignant = {f"{l}-{s}_{p}_{side}_{v}" for l, s, p, side, v, path in sample.CASES if path == "MALIGNANT"}
    assert len(rows) == len(sample.CASES) - 1  # one leaking training image dropped
    for row in rows:
        folder = row["sample_id"].split("/")[0]
        assert names[row["malignancy"]] == ("malignant" if folder in malignant else "benign")
        assert row["modality"] == "mammography" and row["subtype"] is None and row["patient_id"] in folder
        assert row["image"].mode == "I;16" and np.asarray(row["image"]).max() > 1500  # the mass, 12-bit values


def test_pngs_hold_the_stored_values_whatever_the_encoding(built):
    """Every kept PNG equals the DICOM's decoded pixels (JPEG 2000 lossless decoded by pylibjpeg; MONOCHROME1
    inverted within BitsStored, so the empty background is 0 and the mass bright in every image)."""
    import pydicom

    root, ds = built.root, built.ds
    seen = set()
    for row in (r for split in ds for r in ds[split]):
        dicom = pydicom.dcmread(root / row["source_path"])
        expected = dicom.pixel_array.astype(np.int64)
        if dicom.PhotometricInterpretation == "MONOCHROME1":
            expected = (1 << dicom.BitsStored) - 1 - expected
            seen.add("monochrome1")
        if dicom.file_meta.TransferSyntaxUID.is_compressed:
            seen.add(dicom.file_meta.TransferSyntaxUID.name)
        image = np.asarray(row["image"]).astype(np.int64)
        assert np.array_equal(image, expected), row["source_path"]
        assert image[0, -1] == 0 and image.max() > 2000  # background corner; the dense mass
    assert seen == {"monochrome1", "JPEG 2000 Image Compression (Lossless Only)"}
    assert set(sample.ENCODED) <= {row["patient_id"] for split in ds for row in ds[split]}


def test_manifest_names_every_case(built):
    _, out, report, _ = built
    entries = read_manifest(out / TASK)
    by_path = {e.source_path: e for e in entries}
    rois = [e for e in entries if "_1/" in e.source_path]
    assert rois and all(e.status == "dropped" and e.reason.startswith("not used: ROI mask") for e in rois)
    leak = [e for e in entries if e.status == "dropped" and e.reason.startswith("leak repair")]
    assert [e.source_path.split("/")[1] for e in leak] == ["Calc-Training_P_00005_LEFT_CC"]
    reasons = {e.source_path.split("/")[1] if "/" in e.source_path else e.source_path: e.reason
               for e in entries if e.status == "rejected"}
    assert reasons["Mass-Training_P_00012_LEFT_CC"].startswith("no pixel data: a RT Plan Storage object")
    # a file cut inside its pixels (pydicom reads it short, without an error): named as truncated
    assert reasons["Mass-Training_P_00013_RIGHT_MLO"].startswith("truncated: the file (")
    assert "ends inside (7FE0,0010) Pixel Data" in reasons["Mass-Training_P_00013_RIGHT_MLO"]
    licence = next(e for e in entries if e.source_path.endswith("LICENSE.txt"))
    assert licence.status == "ignored" and licence.reason.startswith("not used: ignored: LICENSE.txt"), licence
    assert by_path["metadata.csv"].status == "kept" and by_path["metadata.csv"].reason.startswith("index file")
    assert reasons["mass_case_description_test_set.csv:row 4"] == (
        "missing image: no folder 'Mass-Test_P_00011_LEFT_CC' in the tree")
    assert by_path["calc_case_description_train_set.csv"].reason == "index file: no sample of its own"
    assert sum(report.sources[0].counts.values()) == len(entries)


def test_patients_never_span_splits_and_test_stays_test(built):
    out = built.out
    splits = defaultdict(set)
    for e in read_manifest(out / TASK):
        if e.split:
            splits[e.group].add(e.split)
            assert (e.split == "test") == ("-Test_" in e.source_path)
    assert all(len(s) == 1 for s in splits.values())


def test_an_edited_csv_revalidates_the_images(built, tmp_path):
    root = built.root
    import shutil

    copy = shutil.copytree(root, tmp_path / "copy")
    first = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    csv_path = copy / "mass_case_description_train_set.csv"
    csv_path.write_text(csv_path.read_text().replace("BENIGN_WITHOUT_CALLBACK", "MALIGNANT"))
    second = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    assert first.sources[0].fingerprint != second.sources[0].fingerprint
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    row = next(r for s in ds for r in ds[s] if "P_00003" in r["sample_id"])
    assert ds["train"].features["malignancy"].names[row["malignancy"]] == "malignant"


def test_split_repairs_count_leaks_only(built):
    import json

    out = built.out
    info = json.loads((out / TASK / "build_info.json").read_text())
    assert info["split_repairs"]["dropped"] == 1 and info["counts"]["dropped"] == 1 + len(sample.CASES)
    assert info["counts"]["ignored"] == 1  # LICENSE.txt
    assert "Split repair: 1 training files of 1 groups" in (out / "README.md").read_text()


#: The NBIA Data Retriever's download folder for the TCIA manifest (e.g. ``manifest-ZkhPvrLo5216730872708713142/``
#: holding ``CBIS-DDSM/`` and ``metadata.csv``), and the places users keep the separately downloaded CSVs.
NBIA_FOLDER = "manifest-ZkhPvrLo5216730872708713142"


@pytest.mark.parametrize("csvs_in", ["root", "download folder", "tree"])
def test_the_tree_inside_the_data_retrievers_download_folder_builds_alike(built, tmp_path, csvs_in):
    """NBIA writes ``<download folder>/CBIS-DDSM/`` and ``<download folder>/metadata.csv``; the case CSVs (a
    separate download) sit at the root, in the download folder or inside ``CBIS-DDSM/``: the same images, labels and
    splits come out, the CSVs and ``metadata.csv`` are read as index files, and the ``.tcia`` manifest is ignored."""
    import shutil

    root = tmp_path / "src"
    wrapper = root / NBIA_FOLDER
    shutil.copytree(built.root / "CBIS-DDSM", wrapper / "CBIS-DDSM")
    shutil.copy(built.root / "metadata.csv", wrapper / "metadata.csv")
    target = {"root": root, "download folder": wrapper, "tree": wrapper / "CBIS-DDSM"}[csvs_in]
    csv_names = sorted(p.name for p in built.root.glob("*_case_description_*_set.csv"))
    for name in csv_names:
        shutil.copy(built.root / name, target / name)
    # the manifest file the TCIA page hands out, which the Data Retriever opens (saved beside the download)
    (root / "CBIS-DDSM-All-doiJNLP-zzWs5zfZ.tcia").write_text(
        "downloadServerUrl=https://public.cancerimagingarchive.net/nbia-download/servlet/DownloadServlet\n"
        "includeAnnotation=true\nnoOfrRetry=4\ndatabasketId=manifest-1534787024127.tcia\nmanifestVersion=3.0\n"
        "ListOfSeriesToDownload=\n1.3.6.1.4.1.9590.100.1.2.1\n")
    build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entries = read_manifest(tmp_path / "out" / TASK)
    base = {(e.source_path.split("CBIS-DDSM/", 1)[1], e.status, e.split) for e in read_manifest(built.out / TASK)
            if "CBIS-DDSM/" in e.source_path and ".csv" not in e.source_path}
    assert {(e.source_path.split("CBIS-DDSM/", 1)[1], e.status, e.split) for e in entries
            if "CBIS-DDSM/" in e.source_path and ".csv" not in e.source_path} == base
    by_path = {e.source_path: e for e in entries}
    prefix = target.relative_to(root).as_posix() + "/" if target != root else ""
    for name in csv_names:
        assert by_path[prefix + name].status == "kept", by_path[prefix + name]
    assert by_path[f"{NBIA_FOLDER}/metadata.csv"].reason.startswith("index file")
    tcia = by_path["CBIS-DDSM-All-doiJNLP-zzWs5zfZ.tcia"]
    assert tcia.status == "ignored" and "the TCIA manifest the NBIA Data Retriever" in tcia.reason, tcia
    where = prefix + "mass_case_description_test_set.csv:row 4"
    assert by_path[where].reason == "missing image: no folder 'Mass-Test_P_00011_LEFT_CC' in the tree"
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    labels = {r["sample_id"]: r["malignancy"] for s in ds for r in ds[s]}
    assert labels == {r["sample_id"]: r["malignancy"] for s in built.ds for r in built.ds[s]}


def test_a_mammogram_in_both_the_mass_and_the_calc_set_is_labelled_by_all_its_abnormalities(built, tmp_path):
    """A DDSM case with a mass and a calcification is in both CBIS-DDSM sets: the same full mammogram under a
    ``Mass-`` and a ``Calc-`` folder. Each copy's label counts the rows of both CSVs (a benign mass and a malignant
    calcification: malignant), so the copies agree and are grouped; by its own CSV alone each would disagree with
    the other and a label conflict would reject both."""
    mass = "Mass-Training_P_00002_RIGHT_CC"  # a BENIGN mass in the sample
    calc = "Calc-Training_P_00002_RIGHT_CC"
    copy = _with_calc_twin(built, tmp_path, "MALIGNANT")
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    entries = [e for e in read_manifest(tmp_path / "out" / TASK) if "P_00002_RIGHT_CC/" in e.source_path]
    assert sorted(e.status for e in entries if e.sample_id) == ["kept", "kept"], entries
    assert len({e.group for e in entries if e.sample_id}) == 1 and report.duplicates["label conflicts rejected"] == 0
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    labels = {r["sample_id"].split("/")[0]: ds[s].features["malignancy"].names[r["malignancy"]]
              for s in ds for r in ds[s] if "P_00002_RIGHT_CC" in r["sample_id"]}
    assert labels == {mass: "malignant", calc: "malignant"}


def test_a_case_csv_that_is_not_utf8_is_rejected_with_the_mammograms_it_labels(built, tmp_path):
    """A case-description CSV saved by Excel in cp1252 (one ``é``): that CSV is rejected, named, and so is every
    full mammogram it would label (its own lesion kind and split, and a mammogram the tree also holds under the
    other kind); the other CSVs' mammograms build as before, and ``--strict`` names the CSV."""
    from multimed_hf.builders.cbis_ddsm import FOLDER_NAME
    from multimed_hf.data.errors import StrictBuildError

    cross = "Calc-Training_P_00002_RIGHT_CC"  # the mass set's P_00002 RIGHT CC, in the calc set too
    copy = _with_calc_twin(built, tmp_path, "BENIGN")
    plain = {e.source_path: e for e in build_dataset(TASK, [copy], tmp_path / "plain", progress=False).entries}
    mass = copy / "mass_case_description_train_set.csv"
    mass.write_bytes(mass.read_bytes().replace(b"BENIGN", b"B\xe9NIGN", 1))

    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in report.entries}
    sheet_entry = entries.pop("mass_case_description_train_set.csv")
    assert sheet_entry.status == "rejected"
    assert sheet_entry.reason.startswith("mass_case_description_train_set.csv is not UTF-8 text: 'utf-8' codec ")
    unlabelled = {path for path, e in entries.items() if e.reason.startswith(
        "no label: mass_case_description_train_set.csv, the case-description CSV that labels it, is not UTF-8 text")}
    assert all(entries[path].status == "rejected" for path in unlabelled)
    full = {path.split("/")[1] for path in plain if path.startswith("CBIS-DDSM/Mass-Training_")}
    assert {path.split("/")[1] for path in unlabelled} == {
        f for f in full if FOLDER_NAME.match(f).group(6) is None} | {cross}
    rest = {path for path in entries if path not in unlabelled and not path.startswith("mass_case_description_train")}
    assert {p: (entries[p].status, entries[p].split) for p in rest} == {p: (plain[p].status, plain[p].split)
                                                                         for p in rest}
    with pytest.raises(StrictBuildError, match=r"/mass_case_description_train_set\.csv: mass_case_description_train_set"
                                               r"\.csv is not UTF-8 text: 'utf-8' codec"):  # the CSV, not an image
        build_dataset(TASK, [copy], tmp_path / "strict", progress=False, on_bad_files="error")


def _with_calc_twin(built, tmp_path, pathology: str):
    """A copy of the sample source where the mass set's P_00002 RIGHT CC mammogram is also a calcification case
    (its folder copied as ``Calc-Training_P_00002_RIGHT_CC``, a calc CSV row of ``pathology`` naming it)."""
    import csv
    import shutil

    copy = shutil.copytree(built.root, tmp_path / "copy")
    calc = "Calc-Training_P_00002_RIGHT_CC"
    shutil.copytree(copy / "CBIS-DDSM" / "Mass-Training_P_00002_RIGHT_CC", copy / "CBIS-DDSM" / calc)
    sheet = copy / "calc_case_description_train_set.csv"
    with sheet.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows.append({**rows[0], "patient_id": "P_00002", "left or right breast": "RIGHT", "image view": "CC",
                 "pathology": pathology, "image file path": f"{calc}/1.2/000000.dcm"})
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return copy


def test_a_train_csv_row_naming_a_test_folder_is_not_used_and_backslashed_paths_read(built, tmp_path):
    # before (sweep I4): a train CSV row naming Mass-Test_P_00009 (BENIGN in the test CSV) made that test mammogram
    # malignant, unsaid; a path written with backslashes was "no folder '<the whole path>'"
    import csv
    import shutil

    copy = shutil.copytree(built.root, tmp_path / "copy")
    sheet = copy / "mass_case_description_train_set.csv"
    with sheet.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    n = len(rows) + 2  # the CSV row number of the appended row (the header is row 1)
    rows.append({**rows[0], "patient_id": "P_00009", "left or right breast": "LEFT", "image view": "CC",
                 "pathology": "MALIGNANT", "image file path": "Mass-Test_P_00009_LEFT_CC/1.2/000000.dcm"})
    rows[0] = {**rows[0], "image file path": rows[0]["image file path"].replace("/", "\\")}
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in report.entries}
    assert entries[f"mass_case_description_train_set.csv:row {n}"].reason == (
        "not used: it names Mass-Test_P_00009_LEFT_CC, a folder of the test set, in a train set CSV")
    assert not any("\\" in e.reason for e in entries.values())  # the backslashed row joined its folder
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    labels = {r["sample_id"].split("/")[0]: ds[s].features["malignancy"].names[r["malignancy"]]
              for s in ds for r in ds[s]}
    assert labels["Mass-Test_P_00009_LEFT_CC"] == "benign"
    assert len(labels) == len(sample.CASES) - 1
