"""EEGMMIDB (EDF+) and BCI IV 2a (GDF): a cue outside the recording keeps its epoch number and is rejected as its own
record, every other epoch keeping its clean id (MNE dropped such a cue and the later epochs took its number); the
RECORDS index checked against the folder; a true-label file that cannot be opened named so (found by sweep I3)."""

import builtins
import re
import shutil

import numpy as np
import pytest

from multimed_hf.api import build_dataset
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample

TASK = "motor_imagery"
CUES = ("769", "770", "771", "772", "783")


def _split(records):
    """``({sample id: (cue onset, movement)}, {record where: reason})`` of what ``read_file`` returned."""
    kept = {r.sample_id: (r.fields["cue_onset"], r.fields["movement"]) for r in records if isinstance(r, Sample)}
    rejected = {r.where: r.reason for r in records if not isinstance(r, Sample)}
    return kept, rejected


# --- EEGMMIDB: the EDF+ annotations in the file's own order ---------------------------------------------------------

@pytest.fixture(scope="module")
def eegmmidb(tmp_path_factory):
    from dataset_scripts.sample_sources import eegmmidb as sample

    return sample.make(tmp_path_factory.mktemp("eegmmidb") / "src", subjects=(2,), bad_files=False)


def _edf_copy(eegmmidb, tmp_path, onset_text: bytes):
    """A copy of the sample with S002R04's second annotation (onset 4.2 s) moved to ``onset_text`` (7 bytes, so the
    file keeps its size): the byte edit of sweep I3's reproduction."""
    root = tmp_path / "src"
    shutil.copytree(eegmmidb, root)
    path = root / "files/S002/S002R04.edf"
    data = bytearray(path.read_bytes())
    at = data.find(b"+4.2000\x15")
    assert at > 0 and data.find(b"+4.2000\x15", at + 1) < 0 and len(onset_text) == 7
    data[at:at + 7] = onset_text
    path.write_bytes(bytes(data))
    return root


def test_the_edf_annotations_are_mnes_in_the_files_order(eegmmidb):
    from multimed_hf.builders.eegmmidb import read_edf, read_edf_annotations

    for path in sorted(eegmmidb.rglob("*.edf")):
        raw = read_edf(path)
        mine = [(round(onset, 6), text) for onset, text in read_edf_annotations(path)]
        assert mine == [(round(float(a["onset"]), 6), a["description"]) for a in raw.annotations], path


@pytest.mark.parametrize("onset_text, onset, where", [
    (b"+27.200", "27.20", "the cue lies past the recording's end (26.00 s)"),  # the recording is 26 s
    (b"-4.2000", "-4.20", "the cue lies before the recording's start"),
])
def test_an_edf_cue_outside_the_recording_is_rejected_as_its_epoch(eegmmidb, tmp_path, onset_text, onset, where):
    # before: MNE dropped the cue (a warning the builder silences) and S002R04:2 named the T0 at 8.3 s, :3 the cue
    # at 12.5 s ..., with no manifest row for the lost cue
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder, read_edf

    relpath = "files/S002/S002R04.edf"
    clean, none = _split(EEGMMIDBBuilder(eegmmidb).read_file(relpath))
    assert not none and len(clean) == 6 and clean["S002R04:2"][0] == pytest.approx(4.2)
    code = read_edf(eegmmidb / relpath).annotations[1]["description"]
    root = _edf_copy(eegmmidb, tmp_path, onset_text)
    assert len(read_edf(root / relpath).annotations) == 5  # what MNE gives
    kept, rejected = _split(EEGMMIDBBuilder(root).read_file(relpath))
    assert rejected == {f"{relpath}:row epoch 2": f"{code} at {onset} s: {where}"}
    assert kept == {sample_id: value for sample_id, value in clean.items() if sample_id != "S002R04:2"}


def test_an_edf_tal_that_does_not_parse_is_rejected_as_its_epoch(eegmmidb, tmp_path):
    # before: the TAL pattern skipped it unsaid, and the later epochs kept their numbers with no row for the lost cue
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder, read_edf_annotations

    relpath = "files/S002/S002R04.edf"
    clean, _ = _split(EEGMMIDBBuilder(eegmmidb).read_file(relpath))
    root = _edf_copy(eegmmidb, tmp_path, b"+4.2x00")
    annotations = read_edf_annotations(root / relpath)
    assert len(annotations) == 6 and np.isnan(annotations[1][0]) and "+4.2x00" in annotations[1][1]
    kept, rejected = _split(EEGMMIDBBuilder(root).read_file(relpath))
    (reason,) = rejected.values()
    assert list(rejected) == [f"{relpath}:row epoch 2"] and "has no readable onset" in reason
    assert kept == {sample_id: value for sample_id, value in clean.items() if sample_id != "S002R04:2"}


def test_the_built_manifest_names_the_lost_cue(eegmmidb, tmp_path):
    root = _edf_copy(eegmmidb, tmp_path, b"+27.200")
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in report.entries if e.status == "rejected"}
    assert list(rejected) == ["files/S002/S002R04.edf:row epoch 2"]
    assert "past the recording's end" in rejected["files/S002/S002R04.edf:row epoch 2"]
    ids = {e.sample_id for e in report.entries if e.status == "kept" and e.sample_id}
    assert {i for i in ids if i.startswith("S002R04:")} == {f"S002R04:{n}" for n in (1, 3, 4, 5, 6)}


# --- EEGMMIDB: RECORDS checked against the folder -------------------------------------------------------------------

def test_edf_files_records_lists_but_the_folder_lacks_are_warned_of(eegmmidb, tmp_path):
    # before: RECORDS was "kept: index file" and the missing recordings were named nowhere
    from multimed_hf.builders.eegmmidb import EEGMMIDBBuilder

    assert EEGMMIDBBuilder(eegmmidb).layout_warnings() == []
    root = tmp_path / "src"
    shutil.copytree(eegmmidb, root)
    records = root / "files/RECORDS"
    listed = sorted([*records.read_text().split(), "S002/S002R01.edf"])  # a baseline run too, not downloaded
    records.write_text("".join(f"{name}\n" for name in listed))
    (root / "files/S002/S002R12.edf").unlink()  # an imagery run, lost
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert [w for w in report.warnings if "RECORDS" in w] == [
        "eegmmidb: partial download: 2 of the 5 EDF files files/RECORDS lists are not in the folder "
        "(S002/S002R01.edf, S002/S002R12.edf; 1 of them imagery runs, whose epochs are missing); built from what is "
        "there"
    ]
    records.write_text("".join(f"S002/S002R{run:02d}.edf\n" for run in range(1, 15)))  # the subject's 14 runs
    (warning,) = EEGMMIDBBuilder(root).layout_warnings()  # here: 4, 6, 14; missing: 1-3, 5, 7-13 (imagery 8, 10, 12)
    assert warning.startswith(
        "partial download: 11 of the 14 EDF files files/RECORDS lists are not in the folder (S002/S002R01.edf, "
        "S002/S002R02.edf, S002/S002R03.edf, S002/S002R05.edf, S002/S002R07.edf and 6 more; 3 of them imagery runs")


# --- BCI IV 2a: the GDF event table in its own order ----------------------------------------------------------------

@pytest.fixture(scope="module")
def bci(tmp_path_factory):
    from dataset_scripts.sample_sources import bci_iv_2a as sample

    return sample.make(tmp_path_factory.mktemp("bci") / "src", subjects=(5,), bad_files=False, eog_runs=1)


def _move_cue(path, n: int, position: int) -> None:
    """Set the event table position (1-based sample) of the session's ``n``th cue (as sweep I3's edit of A05T.gdf)."""
    data = bytearray(path.read_bytes())
    # write_gdf's table of k events (mode 3) closes the file: 8 bytes (mode 3, count k, rate), then 12 per event
    k = next(k for k in range(1, 1000)
             if data[-12 * k - 8] == 3 and int.from_bytes(data[-12 * k - 7:-12 * k - 4], "little") == k)
    at = len(data) - 12 * k  # positions (u4), codes (u2), channels (u2), durations (u4)
    codes = [str(c) for c in np.frombuffer(bytes(data[at + 4 * k:at + 6 * k]), "<u2")]
    index = [i for i, code in enumerate(codes) if code in CUES][n - 1]
    positions = np.frombuffer(bytes(data[at:at + 4 * k]), "<u4").copy()
    positions[index] = position
    data[at:at + 4 * k] = positions.tobytes()
    path.write_bytes(bytes(data))


def test_the_gdf_events_are_mnes_in_the_tables_order(bci):
    import mne

    from multimed_hf.builders.bci_iv_2a import read_gdf_events

    for path in sorted(bci.glob("*.gdf")):
        raw = mne.io.read_raw_gdf(path, verbose="error")
        events = [(sample / raw.info["sfreq"], code) for sample, code in read_gdf_events(path)]
        assert events == [(float(a["onset"]), str(a["description"])) for a in raw.annotations], path


@pytest.mark.parametrize("session", ["A05T", "A05E"])
def test_a_gdf_cue_past_the_recording_is_rejected_as_its_epoch(bci, tmp_path, session):
    # before: A05T kept 3 epochs, no rejected row, A05T:2 / :3 naming the cues that were :3 / :4; A05E was rejected
    # whole ("holds 4 labels for 3 cues"): its true labels are one per cue of the table, the lost one included
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    relpath = f"{session}.gdf"
    clean, none = _split(BCIIV2aBuilder(bci).read_file(relpath))
    assert not none and len(clean) == 4
    root = tmp_path / "src"
    shutil.copytree(bci, root)
    _move_cue(root / relpath, 2, 10 ** 6)
    kept, rejected = _split(BCIIV2aBuilder(root).read_file(relpath))
    (reason,) = rejected.values()
    assert list(rejected) == [f"{relpath}:row epoch 2"]
    assert re.fullmatch(r"77[1-4] at 4000\.00 s: the cue lies past the recording's end \(\d+\.\d\d s\)", reason)
    # the other cues keep their ids, onsets and classes (an E session's labels still paired cue by cue)
    assert kept == {sample_id: value for sample_id, value in clean.items() if sample_id != f"{session}:2"}


# --- BCI IV 2a: a true-label file that cannot be opened -------------------------------------------------------------

def test_a_true_labels_file_that_cannot_be_opened_says_permission_denied(bci, tmp_path, monkeypatch):
    # before: "cannot read MATLAB file: OSError: Reader needs file name or open file-like object" (scipy's words for
    # any path it fails to open); the root of the test machine reads every file, so the denial is simulated
    from multimed_hf.builders.bci_iv_2a import BCIIV2aBuilder

    root = tmp_path / "src"
    shutil.copytree(bci, root)
    denied = root / "true_labels" / "A05E.mat"
    real_open = builtins.open

    def open_(file, *args, **kwargs):
        if str(file) == str(denied):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    builder = BCIIV2aBuilder(root)
    reason = "cannot open: permission denied (PermissionError): give your user read access to the file"
    with pytest.raises(BadSourceFile) as label_file:
        builder.read_file("true_labels/A05E.mat")
    assert label_file.value.reason == reason
    with pytest.raises(BadSourceFile) as session:
        builder.read_file("A05E.gdf")
    assert session.value.reason.startswith(
        f"evaluation session without its true labels: true_labels/A05E.mat is there but unreadable ({reason})")
