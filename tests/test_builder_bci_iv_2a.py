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
from multimed_hf.data.sample import Sample
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
    # a header giving the number of records as -1 (GDF's unknown), said so (before, sweep I4: "truncated: the event
    # table lists 16400635 events", data bytes read as its table)
    unknown = bytearray(data)
    unknown[236:244] = (-1).to_bytes(8, "little", signed=True)
    (tmp_path / "A03T.gdf").write_bytes(bytes(unknown))
    with pytest.raises(BadSourceFile, match=r"the GDF header gives the number of data records as -1 \(unknown"):
        check_gdf_size(tmp_path / "A03T.gdf")


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


def _entries(entries, prefix=""):
    """The manifest's entries as comparable tuples, ``prefix`` taken off the paths they name."""
    return {(e.source_path.removeprefix(prefix), e.status, e.reason.replace(prefix, ""), e.sample_id, e.split)
            for e in entries}


def test_true_labels_beside_sessions_one_folder_down(built, tmp_path):
    """The download inside one more folder (as an archive or "Extract All" leaves it): ``BCICIV_2a_gdf/A01T.gdf`` and
    ``BCICIV_2a_gdf/true_labels/A01E.mat``. The labels are found relative to the sessions, so every file gets the
    entry it gets at the top (the sweep saw the labels rejected as stray files and A01E/A05E without their labels)."""
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    root = sample.make(tmp_path / "download" / sample.FOLDER)  # the bundled sample, bad files too
    (root / PROVENANCE_FILE).unlink()
    assert (root / "true_labels" / "A01E.mat").is_file()
    report = build_dataset(TASK, [tmp_path / "download"], tmp_path / "out", progress=False)
    assert _entries(report.entries, f"{sample.FOLDER}/") == _entries(read_manifest(built.out / TASK))


def test_extensions_in_capitals_read_like_lower_case_ones(built, tmp_path):
    """``A01T.GDF`` and ``true_labels/A01E.MAT`` (a copy made on Windows or from a CD): detected and read as the
    lower-case files are, each path as it is on disk."""
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    root = sample.make(tmp_path / sample.FOLDER)
    renamed = {}
    for path in sorted([*root.glob("*.gdf"), *root.glob("true_labels/*.mat")]):
        upper = path.rename(path.with_suffix(path.suffix.upper()))
        renamed[upper.relative_to(root).as_posix()] = path.relative_to(root).as_posix()
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    entries = {(renamed.get(e.source_path, e.source_path), e.status, e.reason, e.sample_id, e.split)
               for e in report.entries}
    assert entries == _entries(read_manifest(built.out / TASK))
    assert {e.source_path for e in report.entries if e.sample_id} <= set(renamed)


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
    with pytest.raises(BadSourceFile, match=r"^no readable true labels .*: A01E\.mat: empty file \(0 bytes\)"):
        BCIIV2aBuilder(tmp_path).read_file(TRUE_LABELS_ZIP)


def test_a_session_whose_labels_zip_is_unreadable_names_the_zip(tmp_path):
    # before: "A01E.mat (in true_labels.zip or unpacked) is not in the folder", with the archive there
    from dataset_scripts.sample_sources.bci_iv_2a import make_bci_iv_2a

    root = make_bci_iv_2a(tmp_path / "bci", bad_files=False, labels="zip")
    archive = root / TRUE_LABELS_ZIP
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a download cut short
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert rejected[TRUE_LABELS_ZIP].startswith("not a readable zip archive")
    sessions = [p for p in rejected if p.endswith("E.gdf")]
    assert sessions and all(rejected[p].startswith(
        f"evaluation session without its true labels: {p[:4]}.mat is not unpacked here, and true_labels.zip is there "
        f"but not a readable zip archive") for p in sessions), rejected


# BNCI Horizon's MATLAB copies, as MOABB's BNCI2014_001 downloads them (moabb/datasets/bnci.py: _load_data_001_2014,
# _convert_mi, _convert_run): ~/mne_data/MNE-bnci-data/database/data-sets/001-2014/A0NT.mat / A0NE.mat


def _read(root):
    """Every file of ``root`` read by the builder: ``(samples by id, {path or record: reason})``."""
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    builder, samples, reasons = BCIIV2aBuilder(root), {}, {}
    for relpath in builder.list_files():
        try:
            records = builder.read_file(relpath)
        except BadSourceFile as err:
            reasons[relpath] = err.reason
            continue
        for record in records:
            if isinstance(record, Sample):
                samples[record.sample_id] = record
            else:
                reasons[record.where] = record.reason
    return samples, reasons


def test_the_moabb_cache_is_detected_from_any_of_its_folders(tmp_path):
    from dataset_scripts.sample_sources import bci_iv_2a as sample
    from multimed_hf.builders import detect_builder
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    root = sample.make(tmp_path / "mne_data", layout="bnci", bad_files=False)
    assert not list(root.rglob("*.gdf"))
    folder = root
    for name in sample.BNCI_FOLDER.split("/"):  # MNE-bnci-data, database, data-sets, 001-2014
        folder = folder / name
        assert isinstance(detect_builder(TASK, folder), BCIIV2aBuilder), folder
    # true labels alone (classlabel, no 'data') are no sessions
    labels = tmp_path / "labels_only"
    labels.mkdir()
    savemat(labels / "A01E.mat", {"classlabel": np.array([[1], [2]], np.uint8)})
    assert not BCIIV2aBuilder.detect(labels)


def test_bnci_copies_give_the_gdf_routes_samples(tmp_path):
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    gdf = sample.make(tmp_path / "gdf", eog_runs=3, bad_files=False)  # 3 EOG runs, then the imagery run
    bnci = sample.make(tmp_path / "bnci", layout="bnci", bad_files=False)
    one_eog = sample.make(tmp_path / "one_eog", eog_runs=1, bad_files=False)
    assert {s.fields["run"] for s in _read(one_eog)[0].values()} == {"1"}
    from_gdf, rejected_gdf = _read(gdf)
    from_mat, rejected_mat = _read(bnci)
    assert not rejected_gdf and not rejected_mat, (rejected_gdf, rejected_mat)
    assert set(from_mat) == set(from_gdf) and len(from_gdf) == 24
    for sample_id, mat in from_mat.items():
        assert mat.source_path == f"{sample.BNCI_FOLDER}/{sample_id.split(':')[0]}.mat"
        expected = from_gdf[sample_id]
        assert mat.group_key == expected.group_key == f"subject:{sample_id[:3]}"
        # the session's first imagery run, EOG runs not counted (they counted before: "4" here, "2" in a session of
        # one EOG run, such as A04T, for the same recording)
        assert mat.fields["run"] == expected.fields["run"] == "1"
        for name, value in expected.fields.items():
            if name == "eeg":
                assert value.dtype == mat.fields[name].dtype == np.float32 and value.shape == (22, 1000)
                np.testing.assert_allclose(mat.fields[name], value, rtol=0, atol=1e-12)  # volts
            else:
                assert mat.fields[name] == value, (sample_id, name)


def test_the_moabb_cache_builds_and_names_its_bad_and_foreign_files(build_sample):
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    root, out, report, ds = build_sample(TASK, "bci_iv_2a", layout="bnci")
    entries = {e.source_path: e for e in read_manifest(out / TASK)}
    cut, foreign = f"{sample.BNCI_FOLDER}/A09T.mat", "MNE-bnci-data/database/data-sets/002-2014/S01T.mat"
    assert entries[cut].status == "rejected" and entries[cut].reason.startswith("cannot read MATLAB file")
    assert entries[foreign].status == "dropped" and "another BNCI Horizon data set" in entries[foreign].reason
    names = ds["train"].features["movement"].names
    rows = [(row["sample_id"], names[row["movement"]], split, row["within_subject_split"])
            for split in ds for row in ds[split]]
    assert len(rows) == 24 and all(w == ("train" if sid[3] == "T" else "test") for sid, _, _, w in rows)
    for session in ("A01T", "A05E"):  # y of every session (the E ones too) gives the classes, in trial order
        content = loadmat(root / sample.BNCI_FOLDER / f"{session}.mat", struct_as_record=False, squeeze_me=True)
        truth = [int(k) for run in content["data"] for k in np.atleast_1d(run.y)]
        got = sorted((int(sid.split(":")[1]), label) for sid, label, _, _ in rows if sid.startswith(session))
        assert [label for _, label in got] == [CLASSES[768 + k] for k in truth]


def test_a_session_held_both_ways_is_read_from_its_gdf(tmp_path):
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    root = sample.make(tmp_path / "download", eog_runs=3, bad_files=False)
    sample.make(root, layout="bnci", bad_files=False)  # the MOABB cache beside the GDF sessions
    (root / "A05T.gdf").unlink()  # only BNCI's copy of A05T
    (root / "true_labels" / "A08E.mat").unlink()  # A08E.gdf has no true labels: its copy (y) gives them
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    mat = f"{sample.BNCI_FOLDER}/A0{{}}.mat".format
    assert by_path[mat("1T")].status == "dropped"
    assert by_path[mat("1T")].reason.endswith("the GDF session A01T.gdf is read")
    assert by_path["A08E.gdf"].status == "rejected"
    assert by_path["A08E.gdf"].reason.endswith(f"BNCI Horizon's copy {mat('8E')} is read instead")
    kept = defaultdict(set)
    for e in report.entries:
        if e.status == "kept" and e.sample_id:
            kept[e.sample_id.split(":")[0]].add(e.source_path)
    assert kept == {
        **{f"A0{s}{t}": {f"A0{s}{t}.gdf"} for s in (1, 5, 8) for t in "TE"},
        "A05T": {mat("5T")}, "A08E": {mat("8E")},
    }
    assert not [e for e in report.entries if "duplicate" in (e.reason or "")]
    # the GDF gone, its copy is read: the cached decision is not reused
    (root / "A01T.gdf").unlink()
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path[mat("1T")].status == "kept", by_path[mat("1T")]


def _bad_copy(tmp_path, change):
    """A BNCI copy of one session (A02T) in the 001-2014 folder, ``change(cells)`` applied to its runs."""
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    signal, events, bounds, classes = sample.session_signal()
    cells = sample.bnci_runs(signal, events, bounds, classes)
    change(cells)
    folder = tmp_path / "001-2014"
    folder.mkdir(exist_ok=True)
    savemat(folder / "A02T.mat", {"data": cells})
    return tmp_path, "001-2014/A02T.mat"


@pytest.mark.parametrize("change, reason", [
    (lambda cells: cells[0, 3].pop("y"), r"^data: run 4 lacks y \(it holds \["),
    (lambda cells: cells[0, 3].update(X=cells[0, 3]["X"][:, :22]),
     r"^data: run 4: X is float64 \(\d+, 22\), expected samples x 25 channels \(22 EEG \+ 3 EOG\)$"),
    (lambda cells: cells[0, 3]["y"].__setitem__(2, 5.0), r"^data: run 4: y holds classes other than 1-4: \[5\.0\]$"),
    (lambda cells: cells[0, 3]["y"].__setitem__(0, np.nan), r"^data: run 4: y holds classes other than 1-4: \[nan\]$"),
    (lambda cells: cells[0, 3]["trial"].__setitem__(3, 10 ** 6),
     r"^data: run 4: trial starts \[1000000\.0\] are not samples of the run \(1-\d+\): past the recording$"),
    (lambda cells: cells[0, 3].update(y=np.ones((3, 1))), r"^data: run 4: 3 classes \(y\) for 4 trials$"),
    (lambda cells: [cells[0, k].update(trial=np.zeros((0, 1)), y=np.zeros((0, 1))) for k in range(4)],
     r"^no trials in any of its 4 runs: not a motor-imagery session$"),
    (lambda cells: cells[0, 2].update(fs=500.0), r"^data: the runs' fs differ: \[250\.0, 500\.0\]$"),
])
def test_bad_bnci_copies_are_rejected_naming_the_problem(tmp_path, change, reason):
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    root, relpath = _bad_copy(tmp_path, change)
    with pytest.raises(BadSourceFile, match=reason):
        BCIIV2aBuilder(root).read_file(relpath)


def test_unreadable_or_foreign_mat_files_are_rejected(tmp_path):
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    root, relpath = _bad_copy(tmp_path, lambda cells: None)
    data = (root / relpath).read_bytes()
    (root / relpath).write_bytes(data[: len(data) // 3])
    with pytest.raises(BadSourceFile, match=r"^cannot read MATLAB file: "):
        BCIIV2aBuilder(root).read_file(relpath)
    savemat(root / relpath, {"signals": np.zeros((3, 2))})
    with pytest.raises(BadSourceFile, match=r"^no 'data' variable \(it holds \['signals'\]\)"):
        BCIIV2aBuilder(root).read_file(relpath)
    savemat(root / relpath, {"data": np.zeros((1, 3))})  # a matrix, not a cell
    with pytest.raises(BadSourceFile, match=r"^data is a float64 array \(3,\), not a cell of run structs"):
        BCIIV2aBuilder(root).read_file(relpath)


def test_bad_epochs_of_a_bnci_copy_are_reported_per_epoch(tmp_path):
    def spoil(cells):
        run = cells[0, 3]
        x, trial = run["X"], run["trial"].ravel().astype(int)
        x[trial[0] - 1 + 500: trial[0] - 1 + 1500] = 7.0  # flat
        x[trial[1] - 1 + 700] = np.nan  # non-finite
        run["X"] = x[: trial[3] - 1 + 500 + 600]  # the last epoch runs past the run's end

    root, relpath = _bad_copy(tmp_path, spoil)
    samples, reasons = _read(root)
    assert sorted(samples) == ["A02T:3"]
    where = f"{relpath}:row epoch {{}}".format
    assert set(reasons) == {where(1), where(2), where(4)}
    run = "run 1 (cell 4 of data): "  # the session's first imagery run, the 4th cell of its data
    assert reasons[where(1)].startswith(run) and reasons[where(1)].endswith("every channel is flat "
                                                                              "(a disconnected amplifier)")
    assert reasons[where(2)].startswith(run) and reasons[where(2)].endswith("non-finite samples")
    assert reasons[where(4)].startswith(run) and "window ends past the recording's end" in reasons[where(4)]


_V73 = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .".ljust(116)


@pytest.mark.parametrize("content, file_reason, session_reason", [
    # an error page saved in the file's place (the sweep saw "IndexError: index out of range" and "A05E.mat ... is not
    # in the folder, ...; true_labels/A05E.mat hold(s) no readable classlabel")
    (b"<html>403</html>\n", "not a MATLAB file: no 'MATLAB 5.0 MAT-file' header, it begins b'<html>403</html>\\n'",
     "is there but unreadable (not a MATLAB file: no 'MATLAB 5.0 MAT-file' header"),
    (b"", "empty file (0 bytes)", "is there but unreadable (empty file (0 bytes))"),
    (_V73 + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 400, "a MATLAB v7.3 (HDF5) file, which scipy cannot read",
     "is there but unreadable (a MATLAB v7.3 (HDF5) file"),
    ({"labels": np.arange(1, 5)}, "no 'classlabel' variable (it holds ['labels'])",
     "is there but holds no 'classlabel' variable (it holds ['labels'])"),
])
def test_a_true_labels_file_that_is_there_but_unreadable_is_named_so(tmp_path, content, file_reason, session_reason):
    """The label file says what it is (not a MATLAB file, empty, v7.3, no classlabel) and the session it should label
    says the file is there but unreadable, not that it "is not in the folder"; a session whose file is absent still
    says so."""
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    root = sample.make(tmp_path / "download", subjects=(5, 8), bad_files=False)
    (root / "true_labels" / "A08E.mat").unlink()
    path = root / "true_labels" / "A05E.mat"
    if isinstance(content, dict):
        savemat(path, content)
    else:
        path.write_bytes(content)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert set(rejected) == {"true_labels/A05E.mat", "A05E.gdf", "A08E.gdf"}
    assert rejected["true_labels/A05E.mat"].startswith(file_reason)
    assert rejected["A05E.gdf"].startswith(
        f"evaluation session without its true labels: true_labels/A05E.mat {session_reason}")
    assert "not in the folder" not in rejected["A05E.gdf"] and "cues (783) have no class" in rejected["A05E.gdf"]
    assert rejected["A08E.gdf"].startswith(
        "evaluation session without its true labels: A08E.mat (in true_labels.zip or unpacked) is not in the folder, "
        "so its ")


def test_a_session_saved_twice_is_read_once(tmp_path):
    # before: A01T.gdf at the top and in BCICIV_2a_gdf/ (the archive unpacked twice): both rejected epoch by epoch
    # as duplicate ids, so the subject's whole training session was lost
    import shutil

    from dataset_scripts.sample_sources import bci_iv_2a as sample
    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / "bci", bad_files=False)
    top = sorted(root.glob("A0*T.gdf"))[0]
    (root / "BCICIV_2a_gdf").mkdir()
    shutil.copy(top, root / "BCICIV_2a_gdf" / top.name)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    copy = {e.source_path: e for e in report.entries if not e.sample_id}[f"BCICIV_2a_gdf/{top.name}"]
    assert copy.status == "dropped" and copy.reason.startswith(f"not used: a byte-identical copy of {top.name}")
    kept = [e for e in report.entries if e.sample_id and e.sample_id.startswith(top.stem + ":")]
    assert kept and all(e.status in ("kept", "moved") and e.source_path == top.name for e in kept)
