"""MosMedData NIfTI volumes: decoded fully, oriented, cut into lung-window PNG slices; bad volumes rejected."""

import filecmp
import gzip
import io
from collections import defaultdict

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from PIL import Image

from dataset_scripts.sample_sources import mosmeddata as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders._ct import LUNG_WINDOW, Window
from multimed_hf.builders.mosmeddata import MosMedDataBuilder, load_axial_volume
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.manifest import read_manifest
from multimed_hf.data.sample import SourceFileRef
from multimed_hf.data.push import left_out_sources

TASK = "radiographic_findings"
SLICES = sample.SHAPE[2]


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "mosmeddata")


def test_every_good_study_becomes_its_slices(built):
    _, _, report, ds = built
    severities = ds["train"].features["severity"].names
    slices = defaultdict(list)
    for split in ds:
        for row in ds[split]:
            folder, name = row["source_path"].split("/")[1:]
            study = name.split(".")[0]
            assert severities[row["severity"]] == "ct" + folder[-1] and row["finding"] is None
            assert row["modality"] == "ct" and row["window"] == "-600/1500" == str(LUNG_WINDOW)
            assert row["patient_id"] == row["volume_id"] == study and row["group_id"] == f"mosmeddata:patient:{study}"
            assert row["image"].size == sample.SHAPE[:2] and row["image"].mode == "L"
            slices[study].append(row["slice_index"])
    expected = {f"study_{n:04d}" for numbers in sample.STUDIES.values() for n in numbers}
    assert set(slices) == expected
    assert all(sorted(v) == list(range(SLICES)) for v in slices.values())  # each slice once (the copy dropped)


def test_severity_shows_in_the_slices(built):
    _, _, _, ds = built
    grey = defaultdict(list)
    for split in ds:
        for row in ds[split]:
            grey[row["severity"]].append(np.asarray(row["image"], dtype=float).mean())
    means = [np.mean(grey[k]) for k in sorted(grey)]
    assert means == sorted(means), f"ground glass should brighten the lungs with severity: {means}"


def test_shards_hold_the_png_bytes_under_a_relative_name(built):
    root, out, _, _ = built
    shard = next((out / TASK / "mosmeddata").rglob("train-*.parquet"))
    cell = pq.read_table(shard).column("image")[0].as_py()
    assert cell["path"].startswith("studies/CT-") and "#slice=" in cell["path"] and cell["path"].endswith(".png")
    assert cell["bytes"][:8] == b"\x89PNG\r\n\x1a\n" and str(root) not in cell["path"]


def test_groups_never_span_splits(built):
    _, _, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(ds[split].num_rows for split in ("train", "validation", "test"))


def test_bad_volumes_and_files(built):
    _, out, _, _ = built
    by_path = {}
    for e in read_manifest(out / TASK):
        by_path.setdefault(e.source_path, e)
    expected = {
        "studies/CT-1/study_0302.nii.gz": "cannot read NIfTI volume: EOFError",  # cut in half
        "studies/CT-2/study_1004.nii.gz": "not a 3-D volume: the volume has shape (64, 64, 6, 2)",
        "studies/CT-0/study_0041.nii.gz": "non-finite values: 16 of the 24576 values",
        "studies/CT-3/study_1078.nii.gz": "not Hounsfield units",
        "studies/CT-5/study_1111.nii.gz": "label 'CT-5' is not one of this source's severity names",
    }
    for path, reason in expected.items():
        assert by_path[path].status == "rejected" and by_path[path].reason.startswith(reason), by_path[path]
    assert {p for p, e in by_path.items() if e.status == "rejected"} == set(expected)
    assert by_path["studies/.DS_Store"].status == "ignored" and "ignored" in by_path["studies/.DS_Store"].reason
    # a byte-identical copy under a re-download's name: dropped, named (before: kept, every slice of the study twice,
    # two slices at each slice_index of one volume_id)
    variant = by_path["studies/CT-2/study_0939 (1).nii.gz"]
    assert variant.status == "dropped" and variant.reason.startswith(
        "not used: a copy (the same voxels) of study_0939.nii.gz beside it (read instead)"), variant
    mask = by_path["masks/study_0255_mask.nii.gz"]
    assert mask.status == "kept" and mask.sample_id is None


def test_counts_of_each_outcome(built):
    _, out, report, _ = built
    entries = read_manifest(out / TASK)
    counts = report.sources[0].counts
    assert counts["rejected"] == 5 and counts["dropped"] == 1 and counts["ignored"] == 1  # dropped: the byte copy
    good_studies = sum(len(v) for v in sample.STUDIES.values())
    assert counts["kept"] == good_studies * SLICES + 1  # + the mask
    assert not any(":row" in e.source_path for e in entries)  # no record entries: one per file


def test_not_redistributable_so_left_out_of_a_push(built):
    _, out, _, _ = built
    assert "CC-BY-NC-ND" in left_out_sources(out)["mosmeddata"]


def test_rebuild_from_the_cache_and_in_worker_processes_gives_the_same_shards(built, tmp_path):
    root, out, report, _ = built
    again = build_dataset(TASK, [root], out, progress=False)  # cached samples: slices re-rendered at write time
    assert again.sources[0].fingerprint == report.sources[0].fingerprint and again.counts == report.counts
    workers = build_dataset(TASK, [root], tmp_path / "multimed", progress=False, num_proc=2)
    assert workers.sources[0].fingerprint == report.sources[0].fingerprint


def _save(path, data, affine):
    nib.save(nib.Nifti1Image(data.astype(np.int16), affine), path)
    return path


@pytest.mark.parametrize("stored_as", ["RAS", "LPS", "z flipped", "x and y swapped"])
def test_slices_are_shown_as_a_radiologist_views_them(tmp_path, stored_as):
    # a marker at the patient's right-anterior corner of axial slice 1 (in RAS voxel order: x max, y max)
    ras = np.full((10, 12, 4), -1000, dtype=np.int16)
    ras[9, 11, 1] = 500
    data, affine, stored_slice = {
        "RAS": (ras, np.diag([1.0, 1.0, 1.0, 1.0]), 1),
        "LPS": (ras[::-1, ::-1, :], np.diag([-1.0, -1.0, 1.0, 1.0]), 1),
        "z flipped": (ras[:, :, ::-1], np.diag([1.0, 1.0, -1.0, 1.0]), 2),
        "x and y swapped": (ras.transpose(1, 0, 2), np.eye(4)[[1, 0, 2, 3]], 1),
    }[stored_as]
    volume = load_axial_volume(_save(tmp_path / "v.nii.gz", data, affine))
    shown = volume.display(volume.z_of(stored_slice), LUNG_WINDOW)
    assert shown.shape == (12, 10)  # rows run anterior -> posterior, columns the patient's right -> left
    assert shown[0, 0] == 255 and (shown > 200).sum() == 1


def test_a_render_reads_back_the_validated_bytes(built):
    root, *_ = built
    builder = MosMedDataBuilder(root)
    sample_ = builder.read_file("studies/CT-4/study_1109.nii.gz")[3]
    ref = sample_.fields["image"]
    data = builder.read_ref(ref)
    assert len(data) == ref.size
    shown = load_axial_volume(root / sample_.source_path).display(3, LUNG_WINDOW)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), shown)


def test_publisher_documents_are_index_files_and_odd_names_plain_paths(built):
    root, *_ = built
    builder = MosMedDataBuilder(root)
    assert builder.read_file("dataset_registry.xlsx") == []
    with pytest.raises(UnusedSourceFile, match="ignored: README_EN.pdf is the publisher's documentation"):
        builder.read_file("README_EN.pdf")
    (root / "notes#1.png").write_bytes(b"a publisher file whose name holds a '#'")
    ref = SourceFileRef(path="notes#1.png", sha256="", size=0)
    assert builder.read_ref(ref) == (root / "notes#1.png").read_bytes()  # not a rendered slice: a plain file
    (root / "notes#1.png").unlink()


def test_the_registry_and_masks_are_not_called_index_files_read(built, tmp_path):
    # before: "index file: no sample of its own" for the registry (never read, even an HTML page saved in its place)
    # and the masks, and the summary counted them among the "index files read"
    import shutil

    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    (copy / "dataset_registry.xlsx").write_text("<html>not found</html>")
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    notes = {e.source_path: e.reason for e in report.entries if e.status == "kept" and not e.sample_id}
    assert notes["dataset_registry.xlsx"].startswith("the publisher's document: not read")
    assert [n for n in notes.values() if n.startswith("lesion mask: checked")]
    assert "index files read" not in report.summary()


def test_windows():
    assert Window.parse("-600/1500") == Window.parse("-600,1500") == LUNG_WINDOW
    assert LUNG_WINDOW.to_uint8(np.array([-2000, -1350, -600, 150, 3000])).tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(ValueError, match="expected a positive width"):
        Window(40, 0)


def test_a_degenerate_affine_is_rejected(tmp_path):
    path = _save(tmp_path / "flat.nii", np.full((10, 10, 3), -1000), np.eye(4))
    header = bytearray(path.read_bytes())
    header[252:256] = np.array([0, 1], dtype="<i2").tobytes()  # qform_code 0, sform_code 1
    header[280:328] = bytes(48)  # srow_x, srow_y, srow_z: all zero
    path.write_bytes(bytes(header))
    with pytest.raises(BadSourceFile, match="degenerate affine"):
        load_axial_volume(path)


def test_the_archives_covid19_1110_folder_is_found_under_the_folder_given(built, tmp_path):
    """The download unpacks to ``COVID19_1110/`` (``<download>/COVID19_1110/studies/CT-k/``, ``.../masks/``): a
    build of the folder around it reads the same studies as a build of the tree itself, and names what lies beside."""
    import shutil

    outer = tmp_path / "dataset_covid-1110_ct-scans"
    shutil.copytree(built.root, outer / sample.FOLDER)
    shutil.move(outer / sample.FOLDER / "MULTIMED_SOURCE.json", outer)  # our sample's provenance: the root's
    (outer / "notes.txt").write_text("my notes\n")
    build_dataset(TASK, [outer], tmp_path / "out", progress=False)
    entries = read_manifest(tmp_path / "out" / TASK)
    prefix = f"{sample.FOLDER}/"
    base = {(e.source_path, e.status, e.reason, e.split) for e in read_manifest(built.out / TASK)}
    inside = {(e.source_path.removeprefix(prefix), e.status, e.reason, e.split)
              for e in entries if e.source_path.startswith(prefix)}
    assert inside == base
    stray = next(e for e in entries if e.source_path == "notes.txt")
    assert stray.status == "rejected" and stray.reason.startswith("stray file: outside the archive's tree")


def test_nifti_extensions_in_capitals_read_like_lower_case_ones(built, tmp_path):
    """``study_0001.NII.GZ`` (a copy made on Windows or from a CD): every volume and mask read as the lower-case
    files are, each path as it is on disk (the sweep saw 20 of 22 rejected as stray files)."""
    _, out, _, _ = built
    root = sample.make(tmp_path / sample.FOLDER)
    for path in sorted(root.rglob("*.nii.gz")):
        path.rename(path.with_name(path.name.replace(".nii.gz", ".NII.GZ")))
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entries = {(e.source_path.replace(".NII.GZ", ".nii.gz"), e.status, e.reason.replace(".NII.GZ", ".nii.gz"),
                e.sample_id, e.split) for e in report.entries}
    assert entries == {(e.source_path, e.status, e.reason, e.sample_id, e.split) for e in read_manifest(out / TASK)}
    assert any(e.source_path.endswith(".NII.GZ") and e.sample_id for e in report.entries)


def test_a_copy_of_the_same_voxels_in_other_bytes_is_read_once(tmp_path):
    # before: a re-exported "(1)" copy (other header bytes) was kept as a volume of its own, every slice twice; a
    # study gunzipped beside its .nii.gz gave both the same sample ids, and both were rejected (the study lost)
    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    folder = root / "studies" / "CT-1"
    original = folder / sorted(p.name for p in folder.glob("study_*.nii.gz"))[0]
    image = nib.load(original)
    image.header["descrip"] = b"second export"  # the same volume, other bytes
    export = original.with_name(original.name.replace(".nii.gz", " (1).nii.gz"))
    nib.save(image, export)
    plain = original.with_name(original.name.replace(".nii.gz", ".nii"))
    plain.write_bytes(gzip.decompress(original.read_bytes()))
    assert not filecmp.cmp(original, export, shallow=False)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries if not e.sample_id}
    for copy in (export, plain):
        entry = by_path[copy.relative_to(root).as_posix()]
        assert entry.status == "dropped" and entry.reason.startswith(
            f"not used: a copy (the same voxels) of {original.name} beside it (read instead)"), entry
    kept = [e for e in report.entries if e.sample_id and e.source_path == original.relative_to(root).as_posix()]
    assert kept and all(e.status == "kept" for e in kept)


def test_a_nii_of_other_voxels_beside_its_nii_gz_is_a_volume_of_its_own(tmp_path):
    # before: both files gave the sample ids study_NNNN/<slice>, and every slice of both was rejected (the study lost)
    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    folder = root / "studies" / "CT-1"
    original = folder / sorted(p.name for p in folder.glob("study_*.nii.gz"))[0]
    image = nib.load(original)
    voxels = np.asarray(image.dataobj).copy()[::-1]  # other voxels (mirrored)
    plain = original.with_name(original.name.replace(".nii.gz", ".nii"))
    nib.save(nib.Nifti1Image(voxels, image.affine, image.header), plain)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert not [e for e in report.entries if e.status == "rejected"], report.summary()
    ids = {e.source_path: e.sample_id for e in report.entries if e.sample_id}
    study = original.name.removesuffix(".nii.gz")
    assert ids[original.relative_to(root).as_posix()].startswith(f"{study}/")
    assert ids[plain.relative_to(root).as_posix()].startswith(f"{plain.name}/")


def test_a_renamed_volume_that_differs_is_kept_as_its_own_volume(tmp_path):
    # a "(1)" file of other voxels (another export of the study): kept with the study's patient, under a volume id
    # of its own, so that volume_id + slice_index name one slice
    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / sample.FOLDER, bad_files=False)
    original = root / "studies" / "CT-1" / next(p.name for p in (root / "studies" / "CT-1").glob("study_*.nii.gz"))
    other = original.with_name(original.name.replace(".nii.gz", " (1).nii.gz"))
    image = nib.load(original)
    voxels = np.asarray(image.dataobj).copy()
    voxels[0, 0, 0] += 10  # another volume of the study (one voxel differs)
    nib.save(nib.Nifti1Image(voxels, image.affine, image.header), other)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    relpath = other.relative_to(root).as_posix()
    assert [e for e in report.entries if e.source_path == relpath and e.sample_id], report.summary()
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf"))
    volumes = {(r["volume_id"], r["patient_id"]) for split in ds for r in ds[split].remove_columns("image")
               if r["source_path"].endswith(other.name)}
    assert volumes == {(other.name.removesuffix(".nii.gz"), original.name.removesuffix(".nii.gz"))}


def test_the_minimum_slice_size_is_that_of_the_axial_slices_written(tmp_path):
    # before (sweep I4): checked on the file's first two axes, before turning to the patient's: a 64x64x6 volume whose
    # affine runs its second axis inferior-superior was kept as 64 "axial" slices of 64x6 px
    data = np.full((64, 64, 6), -1000, dtype=np.int16)
    with pytest.raises(BadSourceFile, match=r"slices too small: the volume's axial slices are 64x6 px"):
        load_axial_volume(_save(tmp_path / "v.nii.gz", data, np.eye(4)[[0, 2, 1, 3]]))
    assert load_axial_volume(_save(tmp_path / "w.nii.gz", data, np.eye(4))).hu.shape == (64, 64, 6)
    tall = np.full((6, 64, 64), -1000, dtype=np.int16)  # a first axis under 8 voxels that runs inferior-superior
    assert load_axial_volume(_save(tmp_path / "t.nii.gz", tall, np.eye(4)[[1, 2, 0, 3]])).hu.shape == (64, 64, 6)
