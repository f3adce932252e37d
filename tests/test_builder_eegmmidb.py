"""EEGMMIDB: EDF+ imagery runs (PhysioNet, or OpenNeuro ds004362's EEGLAB .set + events.tsv) cut into cue epochs,
subjects kept apart, truncated files and bad cues named."""

import shutil
from collections import defaultdict

import numpy as np
import pytest

from dataset_scripts.sample_sources import eegmmidb as sample
from multimed_hf.builders.eegmmidb import check_edf_size, read_edf, standard_channel_name
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest

TASK = "motor_imagery"


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "eegmmidb")


def test_epochs_are_typed_and_described(built):
    _, _, report, ds = built
    row = ds["train"].with_format("numpy")[0]
    assert row["eeg"].shape == (len(sample.CHANNELS), 480) and row["eeg"].dtype == np.float32
    assert list(ds["train"][0]["channel_names"]) == ["FC3", "FCz", "FC4", "C3", "Cz", "C4", "CP3", "CPz", "CP4"]
    assert 5e-6 < float(np.abs(row["eeg"]).mean()) < 1e-4  # volts (tens of microvolts)
    assert row["sfreq"] == 160


def test_epochs_match_the_edf_and_its_cues(built):
    root, _, _, ds = built
    raw = read_edf(root / "files/S007/S007R06.edf")
    data = raw.get_data()
    rows = {r["sample_id"]: r for split in ds for r in ds[split] if r["source_path"] == "files/S007/S007R06.edf"}
    names = ds["train"].features["movement"].names
    codes = {"T0": "rest", "T1": "both_fists", "T2": "both_feet"}
    assert len(rows) == len(raw.annotations) == 6
    for n, annotation in enumerate(raw.annotations, start=1):
        row = rows[f"S007R06:{n}"]
        start = int(round(annotation["onset"] * 160))
        np.testing.assert_allclose(np.array(row["eeg"]), data[:, start:start + 480], rtol=1e-6, atol=1e-12)
        assert names[row["movement"]] == codes[annotation["description"]]
        assert row["cue_onset"] == pytest.approx(annotation["onset"])
        assert row["run"] == "R06" and row["subject"] == "S007" and row["within_subject_split"] == "train"


def test_imagined_fists_desynchronise_the_opposite_hemisphere(built):
    _, _, _, ds = built
    names = ds["train"].features["movement"].names
    channels = list(ds["train"][0]["channel_names"])
    c3, c4 = channels.index("C3"), channels.index("C4")
    ratios = defaultdict(list)
    for split in ds:
        for row in ds[split].with_format("numpy"):
            spectrum = np.abs(np.fft.rfft(row["eeg"], axis=1)) ** 2
            mu = spectrum[:, 27:33].sum(axis=1)  # 9-11 Hz at 1/3 Hz resolution
            ratios[names[row["movement"]]].append(np.log(mu[c4] / mu[c3]))
    assert np.mean(ratios["left_hand"]) < -1 < 1 < np.mean(ratios["right_hand"])
    assert abs(np.mean(ratios["rest"])) < 0.5


def test_subjects_never_span_splits_and_within_subject_option(built):
    _, _, _, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            splits_of[row["subject"]].add(split)
            assert row["group_id"] == f"eegmmidb:subject:{row['subject']}"
            assert row["within_subject_split"] == ("test" if row["run"] in ("R12", "R14") else "train")
    assert all(len(s) == 1 for s in splits_of.values())
    assert {s for splits in splits_of.values() for s in splits} == {"train", "validation", "test"}


def test_bad_files_and_epochs_are_named(built):
    _, out, _, _ = built
    entries = read_manifest(out / TASK)
    by_path = {e.source_path: e for e in entries if e.status != "kept" or e.sample_id is None}
    expected = {
        "files/S005/S005R04.edf": ("rejected", "truncated: the header promises 26 data records"),
        "files/S001/S001R03.edf": ("dropped", "not used: run 3 is motor execution"),
        "files/S001/S001R08.edf:row epoch 2": ("rejected", "annotation 'T3' at 4.20 s is not T0, T1 or T2"),
        "files/S002/S002R10.edf:row epoch 7": ("rejected", "T1 at 24.90 s: the 3 s window ends past the recording"),
        "files/S002/notes.txt": ("rejected", "stray file"),
        "files/RECORDS": ("kept", "index file"),
    }
    assert set(by_path) == set(expected)
    for path, (status, reason) in expected.items():
        assert by_path[path].status == status and by_path[path].reason.startswith(reason), by_path[path]
    kept = [e for e in entries if e.source_path == "files/S001/S001R08.edf"]
    assert len(kept) == 5 and all(e.status == "kept" for e in kept)  # the run's other cues stay


def test_counts_of_each_outcome(built):
    _, _, report, ds = built
    counts = report.sources[0].counts
    assert counts["rejected"] == 4 and counts["dropped"] == 1
    assert counts["kept"] == sum(ds[s].num_rows for s in ds) + 1  # + RECORDS


def test_edf_size_check_names_the_problem(built, tmp_path):
    root, *_ = built
    data = (root / "files/S001/S001R04.edf").read_bytes()
    check_edf_size(root / "files/S001/S001R04.edf")
    for cut, message in ((100, "shorter than an EDF header"), (len(data) - 1, "truncated: the header promises")):
        (tmp_path / "x.edf").write_bytes(data[:cut])
        with pytest.raises(BadSourceFile, match=message):
            check_edf_size(tmp_path / "x.edf")


@pytest.mark.parametrize("label, name", [
    ("Fc5.", "FC5"), ("Cz..", "Cz"), ("Fp1.", "Fp1"), ("Afz.", "AFz"), ("T10.", "T10"),
])
def test_channel_names_follow_mne(label, name):
    assert standard_channel_name(label) == name


def test_mne_and_wget_tree_is_detected_and_read(tmp_path):
    """MNE's eegbci.load_data (and PhysioNet's ``wget -r``) keep the URL's path: ``files/eegmmidb/1.0.0/S001/``."""
    from multimed_hf.api import build_dataset
    from multimed_hf.builders import detect_builder
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder

    flat = sample.make(tmp_path / "flat", bad_files=False)
    root = tmp_path / "MNE-eegbci-data"
    tree = root / "files" / "eegmmidb" / "1.0.0"
    tree.parent.mkdir(parents=True)
    (flat / "files").rename(tree)
    # wget -r also saves the server's directory listings and robots.txt: named as no data, never errors
    crawl = ["robots.txt", "files/eegmmidb/1.0.0/index.html", "files/eegmmidb/1.0.0/S001/index.html"]
    for name in crawl:
        (root / name).write_text("<html></html>")
    assert isinstance(detect_builder(TASK, root), EEGMMIDBBuilder)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert report.counts["rejected"] == 0, [e for e in report.entries if e.status == "rejected"]
    ignored = {e.source_path: e.reason for e in report.entries if e.status == "ignored"}
    assert all("wget -r saved" in ignored.get(name, "") for name in crawl), ignored
    kept = [e for e in report.entries if e.status == "kept" and e.sample_id]
    assert len(kept) == len(sample.SUBJECTS) * 4 * 6
    assert all(e.source_path.startswith("files/eegmmidb/1.0.0/S") for e in kept)


def _write_edf(path, rates, cues, seconds=30):
    """An EDF+ of the sample's channels, each at its rate in ``rates`` (Hz), noise of ``seconds``, the ``(onset,
    code)`` cues as annotations, written with pyedflib."""
    import pyedflib

    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    writer = pyedflib.EdfWriter(str(path), len(sample.CHANNELS), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setSignalHeaders([
            {"label": name, "dimension": "uV", "sample_frequency": rate, "physical_max": 8092.0,
             "physical_min": -8092.0, "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""}
            for name, rate in zip(sample.CHANNELS, rates)
        ])
        for onset, code in cues:
            writer.writeAnnotation(onset, 4.1, code)
        writer.writeSamples([rng.normal(0, 20, rate * seconds) for rate in rates])
    finally:
        writer.close()


def test_a_128_hz_subject_keeps_its_own_rate(tmp_path):
    """Subject 88 was recorded at 128 Hz (MOABB's PhysionetMI note): its epochs hold 3 s at 128 Hz, said in sfreq."""
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder

    rate = 128
    _write_edf(tmp_path / "files/S088/S088R04.edf", [rate] * len(sample.CHANNELS),
               ((0.0, "T0"), (4.2, "T1"), (8.3, "T0"), (12.5, "T2")))
    samples = EEGMMIDBBuilder(tmp_path).read_file("files/S088/S088R04.edf")
    assert len(samples) == 4
    for s in samples:
        assert s.fields["sfreq"] == rate and s.fields["eeg"].shape == (len(sample.CHANNELS), 3 * rate)


def test_an_edf_whose_signals_have_different_rates_is_rejected(tmp_path):
    """MNE resamples the slower signals to the fastest, unsaid: such a file is rejected, naming the rates."""
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder
    from multimed_hf.data.errors import BadSourceFile

    _write_edf(tmp_path / "files/S001/S001R04.edf", [160] * (len(sample.CHANNELS) - 1) + [80], ((4.2, "T1"),))
    with pytest.raises(BadSourceFile, match=r"different rates \(samples a data record: 160 for .* ...; 80 for"):
        EEGMMIDBBuilder(tmp_path).read_file("files/S001/S001R04.edf")


# --- OpenNeuro ds004362: the BIDS copy (EEGLAB .set + _events.tsv; PhysioNet's EDFs under sourcedata/rawdata/) ---

def _build(root, out):
    from multimed_hf.api import build_dataset

    return build_dataset(TASK, [root], out, progress=False)


@pytest.fixture(scope="module")
def two_routes(tmp_path_factory):
    """The same synthetic recordings in PhysioNet's layout and in ds004362's (no damaged files), built."""
    tmp = tmp_path_factory.mktemp("eegmmidb-routes")
    physionet = sample.make_eegmmidb(tmp / "physionet", bad_files=False)
    bids = sample.make_eegmmidb_bids(tmp / "ds004362", bad_files=False)
    return physionet, bids, _build(physionet, tmp / "out-physionet"), _build(bids, tmp / "out-bids")


def test_the_bids_copy_is_detected(two_routes, tmp_path):
    from multimed_hf.builders import detect_builder
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder

    _, bids, *_ = two_routes
    assert isinstance(detect_builder(TASK, bids), EEGMMIDBBuilder)
    assert (bids / "sub-001/eeg/sub-001_task-motion_run-4_eeg.set").is_file()
    assert not list(bids.rglob("*.edf"))  # detected by its .set files alone
    only_sourcedata = sample.make_eegmmidb_bids(tmp_path / "x", subjects=(1,), bad_files=False, sourcedata=True)
    for path in only_sourcedata.glob("sub-*"):
        shutil.rmtree(path)
    assert isinstance(detect_builder(TASK, only_sourcedata), EEGMMIDBBuilder)


def test_bids_route_gives_the_physionet_samples(two_routes):
    """Same ids, subject groups, runs, splits, cues, labels, channel names, rate and (to float32) the same volts."""
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder

    physionet, bids, report_p, report_b = two_routes
    kept_p = {e.sample_id: e for e in report_p.entries if e.status == "kept" and e.sample_id}
    kept_b = {e.sample_id: e for e in report_b.entries if e.status == "kept" and e.sample_id}
    assert len(kept_p) == len(sample.SUBJECTS) * len(sample.RUNS) * 6
    assert set(kept_b) == set(kept_p)
    for sid, entry in kept_b.items():
        assert (entry.group, entry.split) == (kept_p[sid].group, kept_p[sid].split), sid
        assert entry.source_path.endswith("_eeg.set") and entry.source_path.startswith("sub-")
    assert report_b.counts["rejected"] == 0, [e for e in report_b.entries if e.status == "rejected"]

    builder_p, builder_b = EEGMMIDBBuilder(physionet), EEGMMIDBBuilder(bids)
    for s in sample.SUBJECTS:
        for run in sample.RUNS:
            edf = builder_p.read_file(f"files/S{s:03d}/S{s:03d}R{run:02d}.edf")
            bset = builder_b.read_file(f"sub-{s:03d}/eeg/sub-{s:03d}_task-motion_run-{run}_eeg.set")
            assert [x.sample_id for x in bset] == [x.sample_id for x in edf]
            for a, b in zip(edf, bset):
                assert a.group_key == b.group_key
                assert a.fields["eeg"].dtype == b.fields["eeg"].dtype == np.float32
                np.testing.assert_allclose(b.fields["eeg"], a.fields["eeg"], rtol=1e-5, atol=1e-10)
                assert 5e-6 < float(np.abs(b.fields["eeg"]).mean()) < 1e-4  # volts, not microvolts
                for key in ("sfreq", "channel_names", "movement", "subject", "session", "run", "cue_onset",
                            "within_subject_split"):
                    assert a.fields[key] == b.fields[key], (a.sample_id, key)


def test_bids_metadata_and_sidecars_are_accounted_for(two_routes):
    _, bids, _, report = two_routes
    status = {e.source_path: (e.status, e.reason) for e in report.entries if not e.sample_id}
    for name in ("dataset_description.json", "participants.tsv", "participants.json", "task-motion_events.json",
                 "CHANGES", "sub-001/eeg/sub-001_task-motion_run-4_events.tsv",
                 "sub-001/eeg/sub-001_task-motion_run-4_channels.tsv",
                 "sub-001/eeg/sub-001_task-motion_run-4_eeg.json"):
        assert status[name][0] == "kept" and status[name][1].startswith("index file"), (name, status[name])
    assert status["code/runConversion.m"][0] == "ignored" and "conversion scripts" in status["code/runConversion.m"][1]
    assert status["README"][0] == "ignored"
    files = {p.relative_to(bids).as_posix() for p in bids.rglob("*") if p.is_file()} - {"MULTIMED_SOURCE.json"}
    listed = {e.source_path for e in report.entries}
    assert files <= listed


def test_bids_bad_files_are_named(tmp_path):
    root = sample.make_eegmmidb_bids(tmp_path / "ds004362")
    report = _build(root, tmp_path / "out")
    by_path = {e.source_path: e for e in report.entries if e.status != "kept" or e.sample_id is None}
    expected = {
        "sub-002/eeg/sub-002_task-motion_run-12_eeg.set": (
            "rejected", "no events file sub-002_task-motion_run-12_events.tsv"),
        "sub-001/eeg/sub-001_task-motion_run-6_eeg.set:row epoch 2": (
            "rejected", "sub-001_task-motion_run-6_events.tsv: value 'TASK3T"),
        "sub-005/eeg/sub-005_task-motion_run-4_eeg.set": ("rejected", "cannot read EEGLAB .set"),
        "sub-012/eeg/sub-012_task-motion_run-8_channels.tsv": (
            "rejected", "sidecar without its recording sub-012_task-motion_run-8_eeg.set"),
        "sub-002/eeg/notes.txt": ("rejected", "stray file"),
        "sub-001/eeg/sub-001_task-motion_run-3_eeg.set": ("dropped", "not used: run 3 is motor execution"),
    }
    for path, (status, reason) in expected.items():
        assert by_path[path].status == status and by_path[path].reason.startswith(reason), by_path[path]
    rejected = {path for path, e in by_path.items() if e.status == "rejected"}
    assert rejected == {p for p, (status, _) in expected.items() if status == "rejected"}
    kept = [e for e in report.entries if e.source_path == "sub-001/eeg/sub-001_task-motion_run-6_eeg.set"]
    assert len(kept) == 5 and all(e.status == "kept" for e in kept)  # the run's other cues stay


def test_sourcedata_edfs_are_read_once_and_the_set_copies_dropped(two_routes, tmp_path):
    """ds004362 ships PhysioNet's EDF+ under sourcedata/rawdata/: each recording becomes samples once, from the
    EDF; a .set is read only where its EDF is cut."""
    _, _, report_p, _ = two_routes
    root = sample.make_eegmmidb_bids(tmp_path / "ds004362", bad_files=False, sourcedata=True)
    cut = root / "sourcedata/rawdata/S007/S007R12.edf"
    cut.write_bytes(cut.read_bytes()[:5000])
    report = _build(root, tmp_path / "out")
    kept = {e.sample_id: e for e in report.entries if e.status == "kept" and e.sample_id}
    assert set(kept) == {e.sample_id for e in report_p.entries if e.status == "kept" and e.sample_id}
    for sid, entry in kept.items():
        if sid.startswith("S007R12:"):
            assert entry.source_path == "sub-007/eeg/sub-007_task-motion_run-12_eeg.set"
        else:
            assert entry.source_path.startswith("sourcedata/rawdata/S"), entry
    dropped = {e.source_path: e.reason for e in report.entries if e.status == "dropped"}
    assert dropped["sub-001/eeg/sub-001_task-motion_run-4_eeg.set"] == (
        "not used: a copy of sourcedata/rawdata/S001/S001R04.edf, PhysioNet's EDF+ of the same recording, which is "
        "read instead"
    )
    assert sum(path.endswith("_eeg.set") for path in dropped) == len(sample.SUBJECTS) * len(sample.RUNS) - 1
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert list(rejected) == ["sourcedata/rawdata/S007/S007R12.edf"]
    assert rejected["sourcedata/rawdata/S007/S007R12.edf"].startswith("truncated")


def test_editing_an_events_file_changes_the_reading_version(tmp_path):
    """A .set's samples come from its events file, so the validation cache must not outlive an edit of it."""
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder

    root = sample.make_eegmmidb_bids(tmp_path / "ds004362", subjects=(1,), bad_files=False)
    before = EEGMMIDBBuilder(root).version
    events = root / "sub-001/eeg/sub-001_task-motion_run-4_events.tsv"
    events.write_text(events.read_text().replace("TASK2T1", "TASK2T2", 1))
    assert EEGMMIDBBuilder(root).version != before
    physionet = sample.make_eegmmidb(tmp_path / "physionet", subjects=(1,), bad_files=False)
    assert EEGMMIDBBuilder(physionet).version == EEGMMIDBBuilder.reading_version  # no events file: the reading alone


@pytest.mark.parametrize("bids", [False, True], ids=["physionet", "ds004362"])
def test_edf_extensions_in_capitals_read_like_lower_case_ones(tmp_path, bids):
    """``S001R04.EDF`` (a copy made on Windows or from a CD): detected and read as the lower-case files are, each
    path as it is on disk; in ds004362 an ``.EDF`` original still replaces its ``.set`` copy."""
    from multimed_hf.api import build_dataset

    def make(where):
        return sample.make_eegmmidb_bids(where, sourcedata=True) if bids else sample.make_eegmmidb(where)

    def entries(report):  # the upper-case build's, with the names it read written as the lower-case build has them
        return {(e.source_path.replace(".EDF", ".edf"), e.status, e.reason.replace(".EDF", ".edf"), e.sample_id,
                 e.split) for e in report.entries}

    lower = build_dataset(TASK, [make(tmp_path / "lower")], tmp_path / "out_lower", progress=False)
    root = make(tmp_path / "upper")
    renamed = {}
    for path in sorted(root.rglob("*.edf")):
        upper = path.rename(path.with_suffix(".EDF"))
        renamed[upper.relative_to(root).as_posix()] = path.relative_to(root).as_posix()
    assert renamed
    report = build_dataset(TASK, [root], tmp_path / "out_upper", progress=False)
    assert entries(report) == entries(lower)
    assert any(e.source_path in renamed and e.status == "kept" for e in report.entries)


def test_the_physionet_zips_documents_build_strictly(tmp_path):
    """PhysioNet's eeg-motor-movementimagery-dataset-1.0.0.zip holds three montage figures beside the runs
    (``64_channel_sharbrough-old.png`` too), checksums, annotator list and WFDB copies of the events: none is a
    stray file, so ``--strict`` builds the unmodified download (it stopped on the -old.png figure)."""
    from multimed_hf.api import build_dataset

    root = sample.make(tmp_path / "src", bad_files=False)
    files = root / "files"
    documents = ["64_channel_sharbrough-old.png", "64_channel_sharbrough.pdf", "64_channel_sharbrough.png",
                 "ANNOTATORS", "SHA256SUMS.txt", "wfdbcal"]
    for name in documents:
        (files / name).write_bytes(b"publisher document")
    for edf in sorted(files.glob("S*/S*R*.edf"))[:2]:
        (edf.parent / (edf.name + ".event")).write_bytes(b"WFDB annotations")
    report = build_dataset(TASK, [root], tmp_path / "out", on_bad_files="error", progress=False)
    statuses = {e.source_path: e.status for e in report.entries}
    assert all(statuses[f"files/{name}"] == "kept" for name in documents), statuses
    assert report.counts["rejected"] == 0
