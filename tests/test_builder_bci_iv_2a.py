"""BCI Competition IV 2a: GDF sessions cut at the cues, evaluation classes from the true labels, bad files named."""

import io
import zipfile
from collections import defaultdict

import numpy as np
import pytest
from scipy.io import loadmat, savemat

from multimed_hf.api import build_dataset
from multimed_hf.builders.bci_iv_2a import CHANNELS_10_10, TRUE_LABELS_ZIP, check_gdf_size
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest
from multimed_hf.data.source_builder import PROVENANCE_FILE

TASK = "motor_imagery"
CLASSES = {769: "left_hand", 770: "right_hand", 771: "both_feet", 772: "tongue"}


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "bci_iv_2a")


def test_epochs_channels_and_classes(built):
    root, _, report, ds = built
    names = ds["train"].features["movement"].names
    for split in ds:
        for row in ds[split].with_format("numpy"):
            assert row["eeg"].shape == (22, 1000) and row["sfreq"] == 250
            assert list(row["channel_names"]) == list(CHANNELS_10_10.values())
            assert row["within_subject_split"] == ("train" if row["session"] == "T" else "test")
    # every session holds one trial of each class; E sessions' classes come from true_labels/A0NE.mat
    by_file = defaultdict(list)
    for split in ds:
        for row in ds[split]:
            by_file[row["source_path"]].append((row["sample_id"], names[row["movement"]]))
    assert set(by_file) == {"A01T.gdf", "A01E.gdf", "A05T.gdf", "A05E.gdf", "A08T.gdf"}
    for rows in by_file.values():
        assert sorted(label for _, label in rows) == sorted(CLASSES.values())
    truth = loadmat(root / "true_labels" / "A05E.mat")["classlabel"].ravel()
    assert [label for _, label in sorted(by_file["A05E.gdf"])] == [CLASSES[768 + int(k)] for k in truth]


def test_imagined_hands_desynchronise_the_opposite_hemisphere(built):
    _, _, _, ds = built
    names = ds["train"].features["movement"].names
    channels = list(CHANNELS_10_10.values())
    c3, c4 = channels.index("C3"), channels.index("C4")
    ratio = defaultdict(list)
    for split in ds:
        for row in ds[split].with_format("numpy"):
            power = np.abs(np.fft.rfft(row["eeg"][:, 125:], axis=1)) ** 2  # after the first half second
            mu = power[:, 38:50].sum(axis=1)  # about 10.7-14 Hz at 0.29 Hz resolution
            ratio[names[row["movement"]]].append(np.log(mu[c4] / mu[c3]))
    assert max(ratio["left_hand"]) < -0.5 and min(ratio["right_hand"]) > 0.5


def test_subjects_never_span_splits(built):
    _, _, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["subject"]].add(split)
    assert all(len(s) == 1 for s in splits_of.values()) and len(splits_of) == 3


def test_bad_files_are_named_and_counts_reconcile(built):
    root, out, report, ds = built
    entries = read_manifest(out / TASK)
    rejected = {e.source_path: e.reason for e in entries if e.status == "rejected"}
    assert set(rejected) == {"A08E.gdf", "A09T.gdf", "A01T_backup.gdf.part"}
    assert rejected["A08E.gdf"].startswith("evaluation session without its true labels: A08E.mat")
    assert rejected["A09T.gdf"].startswith("truncated: the header promises 29 data records")
    assert rejected["A01T_backup.gdf.part"].startswith("stray file")
    counts = report.sources[0].counts
    assert sum(counts.values()) == len(entries)
    assert counts["kept"] == sum(ds[s].num_rows for s in ds) + 2  # + the two true-label files
    files = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE}
    assert {e.source_path for e in entries if ":row" not in e.source_path} == files


def test_cut_event_table_is_caught(built, tmp_path):
    root, *_ = built
    data = (root / "A01T.gdf").read_bytes()
    check_gdf_size(root / "A01T.gdf")
    (tmp_path / "A02T.gdf").write_bytes(data[:-10])  # every record present, the event table cut
    with pytest.raises(BadSourceFile, match="truncated: the event table lists 9 events"):
        check_gdf_size(tmp_path / "A02T.gdf")


def test_sessions_one_folder_down_as_the_zip_unpacks(tmp_path):
    from dataset_scripts.sample_sources import bci_iv_2a as sample
    from multimed_hf.api import build_dataset
    from multimed_hf.builders import detect_builder
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    root = sample.make(tmp_path / "download", bad_files=False)
    inner = root / "BCICIV_2a_gdf"
    inner.mkdir()
    for path in root.glob("*.gdf"):
        path.rename(inner / path.name)
    assert isinstance(detect_builder("motor_imagery", root), BCIIV2aBuilder)
    report = build_dataset("motor_imagery", [root], tmp_path / "out", progress=False)
    assert report.counts["rejected"] == 0 and report.counts["kept"] > 0, report.counts
    assert all(e.source_path.startswith(("BCICIV_2a_gdf/", "true_labels")) or e.source_path.endswith(".mat")
               for e in report.entries if e.status == "kept"), report.entries


def _movements(ds):
    names = ds["train"].features["movement"].names
    return {(row["sample_id"], names[row["movement"]], split) for split in ds for row in ds[split]}


def test_true_labels_read_from_the_zip_as_downloaded(built, build_sample):
    root, out, report, ds = build_sample(TASK, "bci_iv_2a", labels="zip")
    assert not (root / "true_labels").exists()
    assert _movements(ds) == _movements(built.ds)  # the same sessions and classes as from the unpacked files
    with zipfile.ZipFile(root / TRUE_LABELS_ZIP) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    for session in ("A01E", "A05E"):  # the evaluation classes are the members' classlabel, in cue order
        truth = loadmat(io.BytesIO(members[f"{session}.mat"]))["classlabel"].ravel()
        rows = sorted((int(sid.split(":")[1]), label) for sid, label, _ in _movements(ds) if sid.startswith(session))
        assert [label for _, label in rows] == [CLASSES[768 + int(k)] for k in truth]
    entries = read_manifest(out / TASK)
    rejected = {e.source_path: e.reason for e in entries if e.status == "rejected"}
    assert set(rejected) == {
        "A08E.gdf", "A09T.gdf", "A01T_backup.gdf.part",
        f"{TRUE_LABELS_ZIP}:row A05T.mat", f"{TRUE_LABELS_ZIP}:row labels.txt",
    }
    assert rejected["A08E.gdf"].startswith("evaluation session without its true labels: A08E.mat (in true_labels.zip")
    assert rejected["true_labels.zip:row A05T.mat"].startswith("cannot read MATLAB file: ")  # a cut member
    assert rejected["true_labels.zip:row labels.txt"].startswith("stray member")
    # every member is used, rejected, or litter of the archive (not data)
    used = {f"{s}.mat" for s in ("A01E", "A05E", "A01T", "A08T")}
    assert set(members) == used | {"A05T.mat", "labels.txt", "__MACOSX/._A01E.mat"}
    assert report.sources[0].counts["kept"] == sum(ds[s].num_rows for s in ds)  # the archive: records only


def test_true_labels_added_later_validate_the_session_again(tmp_path):
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    root = sample.make(tmp_path / "download", subjects=(1, 5, 8), labels="zip", bad_files=False)
    (root / TRUE_LABELS_ZIP).rename(tmp_path / TRUE_LABELS_ZIP)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert set(rejected) == {"A01E.gdf", "A05E.gdf", "A08E.gdf"}
    # the zip put back, beside a BNCI Horizon copy of a session (a 'data' struct, no classlabel) named like a label
    (tmp_path / TRUE_LABELS_ZIP).rename(root / TRUE_LABELS_ZIP)
    savemat(root / "A01E.mat", {"data": np.zeros((3, 2))})
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert report.counts["rejected"] == 0, [e for e in report.entries if e.status == "rejected"]
    assert by_path["A01E.mat"].status == "dropped" and "BNCI Horizon's MATLAB copy" in by_path["A01E.mat"].reason
    assert by_path[TRUE_LABELS_ZIP].reason == "index file: no sample of its own"
    kept = [e for e in report.entries if e.status == "kept" and e.sample_id]
    assert {e.source_path for e in kept} == {f"A0{s}{t}.gdf" for s in (1, 5, 8) for t in "TE"}


def test_an_unreadable_true_labels_zip_is_named(tmp_path):
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    (tmp_path / TRUE_LABELS_ZIP).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(BadSourceFile, match="^not a readable zip archive: BadZipFile"):
        BCIIV2aBuilder(tmp_path).read_file(TRUE_LABELS_ZIP)
    with zipfile.ZipFile(tmp_path / TRUE_LABELS_ZIP, "w") as archive:
        archive.writestr("README.txt", "the labels")  # a document: not data, skipped
        archive.writestr("A01E.mat", b"")
    with pytest.raises(BadSourceFile, match=r"^no readable true labels .*: A01E\.mat: cannot read MATLAB file"):
        BCIIV2aBuilder(tmp_path).read_file(TRUE_LABELS_ZIP)
