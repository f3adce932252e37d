"""A synthetic sample in PhysioNet EEGMMIDB's layout: ``files/S001/S001R04.edf``, EDF+ with T0/T1/T2 annotations.

Written with pyedflib as the publisher's files are (EDF+, 160 Hz, the publisher's padded channel labels such as
``C3..`` and ``Fcz.``, physical range +-8092 uV, T0 rest 4.2 s / T1, T2 cues 4.1 s), but with 9 of the 64
channels (over the motor cortex) and 6 cues per run, to stay small. Class-dependent signal: a 10 Hz mu and 20 Hz
beta rhythm that drops (event-related desynchronisation) over the hemisphere opposite an imagined fist (C4 side
for left, C3 side for right), over both for both fists and at the vertex (Cz) for the feet; rest keeps it.
Four subjects (1, 2, 7, 12) with imagery runs 4, 6 (within-subject train) and 12, 14 (test), plus a
motor-execution run, a truncated EDF, a run with an unknown annotation, one whose last cue runs past the
recording, and a stray file.

``make_eegmmidb_bids`` writes the same recordings (same seed: the same signals) in the layout of OpenNeuro's BIDS
copy, ds004362 1.0.0 (as its published file tree shows): ``sub-001/eeg/sub-001_task-motion_run-4_eeg.set`` (EEGLAB,
data inside the file in microvolts, MATLAB v6-style MAT file as EEGLAB saves by default, channel labels without
PhysioNet's dots: ``Fc3``), beside ``_events.tsv`` (``onset duration sample value``, duration ``n/a``, value
``TASK2T1``...), ``_channels.tsv``, ``_electrodes.tsv``, ``_coordsystem.json`` and ``_eeg.json``; top-level
``dataset_description.json``, ``participants.tsv/json``, ``task-motion_events.json``, ``README``, ``CHANGES`` and
``code/``; and, with ``sourcedata=True``, PhysioNet's EDF+ files under ``sourcedata/rawdata/S001/``. Each ``.set`` is
converted from its EDF, as OpenNeuro's were. Every file is synthetic.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance
from dataset_scripts.sample_sources._mat import write_mat

__all__ = [
    "FOLDER", "make", "make_eegmmidb", "make_eegmmidb_bids", "write_set", "CHANNELS", "SFREQ", "SUBJECTS", "RUNS",
]

FOLDER = "eeg-motor-movementimagery-dataset-1.0.0"
SFREQ = 160
CHANNELS = ("Fc3.", "Fcz.", "Fc4.", "C3..", "Cz..", "C4..", "Cp3.", "Cpz.", "Cp4.")
_LEFT, _MID, _RIGHT = (0, 3, 6), (1, 4, 7), (2, 5, 8)  # channel rows by hemisphere
#: Which channel rows lose their rhythm for each (run kind, code).
_ERD = {
    ("fists", "T1"): _RIGHT, ("fists", "T2"): _LEFT,
    ("fists_feet", "T1"): _LEFT + _RIGHT, ("fists_feet", "T2"): _MID,
}
_KIND = {3: "fists", 4: "fists", 8: "fists", 12: "fists", 6: "fists_feet", 10: "fists_feet", 14: "fists_feet"}


def _run_signal(run: int, rng: np.random.Generator, cues: int):
    """(signal in uV, channels x samples; annotations as (onset, duration, code))."""
    kind = _KIND[run]
    annotations, t = [], 0.0
    for n in range(cues):
        code = "T0" if n % 2 == 0 else ("T1" if rng.random() < 0.5 else "T2")
        duration = 4.2 if code == "T0" else 4.1
        annotations.append((round(t, 4), duration, code))
        t += duration
    total = int(np.ceil(t * SFREQ)) + SFREQ
    time = np.arange(total) / SFREQ
    amplitude = np.ones((len(CHANNELS), total))
    for onset, duration, code in annotations:
        if code != "T0":
            rows = list(_ERD[kind, code])
            amplitude[rows, int(onset * SFREQ): int((onset + duration) * SFREQ)] = 0.25
    phase = rng.uniform(0, 2 * np.pi, (len(CHANNELS), 2))
    rhythm = 12 * np.sin(2 * np.pi * 10 * time + phase[:, :1]) + 5 * np.sin(2 * np.pi * 20 * time + phase[:, 1:])
    noise = np.cumsum(rng.normal(0, 1.2, (len(CHANNELS), total)), axis=1)
    noise -= noise.mean(axis=1, keepdims=True)
    signal = amplitude * rhythm + 0.6 * noise + rng.normal(0, 3, (len(CHANNELS), total))
    return signal, annotations


def _write_edf(path: Path, signal: np.ndarray, annotations) -> None:
    import pyedflib

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = pyedflib.EdfWriter(str(path), len(CHANNELS), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setSignalHeaders([
            {
                "label": name, "dimension": "uV", "sample_frequency": SFREQ, "physical_max": 8092.0,
                "physical_min": -8092.0, "digital_max": 32767, "digital_min": -32768, "transducer": "",
                "prefilter": "HP:0.1Hz LP:100Hz",
            }
            for name in CHANNELS
        ])
        writer.setStartdatetime(datetime(2009, 8, 12, 16, 15, 0))
        for onset, duration, code in annotations:
            writer.writeAnnotation(onset, duration, code)
        writer.writeSamples(list(np.ascontiguousarray(signal)))
    finally:
        writer.close()


#: Four of the 109 subjects, picked so that the 70/15/15 split by subject fills train, validation and test.
SUBJECTS = (1, 2, 7, 12)
#: The imagery runs each sample subject has: 4, 6 (within-subject train) and 12, 14 (test).
RUNS = (4, 6, 12, 14)


def _write_imagery_runs(files: Path, subjects, rng: np.random.Generator, cues: int) -> list[str]:
    """PhysioNet's ``SNNN/SNNNRMM.edf`` for each subject's imagery runs under ``files``; their names."""
    records = []
    for s in subjects:
        for run in RUNS:
            name = f"S{s:03d}/S{s:03d}R{run:02d}.edf"
            _write_edf(files / name, *_run_signal(run, rng, cues))
            records.append(name)
    return records


def make_eegmmidb(root, *, subjects=SUBJECTS, cues: int = 6, seed: int = 3, bad_files: bool = True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    files = root / "files"
    rng = np.random.default_rng(seed)
    records = _write_imagery_runs(files, subjects, rng, cues)
    if bad_files:
        _write_edf(files / "S001/S001R03.edf", *_run_signal(3, rng, cues))  # motor execution: not imagery
        records.append("S001/S001R03.edf")
        good = (files / "S002/S002R04.edf").read_bytes()
        (files / "S005").mkdir(parents=True, exist_ok=True)
        (files / "S005/S005R04.edf").write_bytes(good[: int(len(good) * 0.6)])  # the download stopped
        signal, annotations = _run_signal(8, rng, cues)
        annotations[1] = (annotations[1][0], annotations[1][1], "T3")  # a code the publisher never uses
        _write_edf(files / "S001/S001R08.edf", signal, annotations)
        signal, annotations = _run_signal(10, rng, cues)
        annotations.append((signal.shape[1] / SFREQ - 1.0, 4.1, "T1"))  # a cue one second before the end
        _write_edf(files / "S002/S002R10.edf", signal, annotations)
        records += ["S001/S001R08.edf", "S002/S002R10.edf", "S005/S005R04.edf"]
        (files / "S002" / "notes.txt").write_text("subject reported drowsiness in run 12\n")
    (files / "RECORDS").write_text("".join(f"{r}\n" for r in sorted(records)))
    write_provenance(root, "generated by dataset_scripts/sample_sources/eegmmidb.py (not real EEG)")
    return root


make = make_eegmmidb


# --- OpenNeuro ds004362 (BIDS) ---------------------------------------------------------------------------------------

#: ds004362's event value prefix per run (its ``task-motion_events.json``): TASK1 real / TASK2 imagined fists,
#: TASK3 real / TASK4 imagined fists-or-feet.
_BIDS_TASK = {3: 1, 7: 1, 11: 1, 4: 2, 8: 2, 12: 2, 5: 3, 9: 3, 13: 3, 6: 4, 10: 4, 14: 4}


def write_set(path: Path, data_uv: np.ndarray, sfreq: float, labels, events) -> None:
    """An EEGLAB ``.set`` with the data inside (single precision, microvolts) and ``events`` as ``(onset s,
    type)``, saved as a MATLAB v5 (v6-compatible) MAT file holding one ``EEG`` struct."""
    n_channels, n_times = data_uv.shape
    chanlocs = np.zeros((1, n_channels), dtype=[("labels", object), ("type", object)])
    for i, label in enumerate(labels):
        chanlocs[0, i] = (label, "EEG")
    event = np.zeros((1, len(events)), dtype=[("type", object), ("latency", object), ("duration", object)])
    for i, (onset, kind) in enumerate(events):
        event[0, i] = (kind, float(round(onset * sfreq) + 1), 0.0)  # EEGLAB latencies count from 1
    eeg = {
        "setname": "synthetic EEGMMIDB run", "filename": path.name, "nbchan": float(n_channels), "trials": 1.0,
        "pnts": float(n_times), "srate": float(sfreq), "xmin": 0.0, "xmax": (n_times - 1) / sfreq,
        "data": data_uv.astype(np.float32), "chanlocs": chanlocs, "event": event, "ref": "common",
        "icawinv": np.zeros((0, 0)), "icasphere": np.zeros((0, 0)), "icaweights": np.zeros((0, 0)),
        "icaact": np.zeros((0, 0)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mat(path, {"EEG": eeg}, format="5", do_compression=False, oned_as="row")


def _bids_run(edf: Path, eeg_dir: Path, subject: int, run: int) -> None:
    """Convert one PhysioNet EDF+ to ds004362's ``.set`` and write its sidecars, as OpenNeuro's converter did."""
    import mne

    raw = mne.io.read_raw_edf(edf, preload=True, verbose="error")
    sfreq = float(raw.info["sfreq"])
    labels = [name.strip(".") for name in raw.ch_names]  # ds004362's channels.tsv: Fc5, Fcz, C3 (no dots)
    task = _BIDS_TASK[run]
    events = [(float(a["onset"]), f"TASK{task}{a['description']}") for a in raw.annotations]
    stem = f"sub-{subject:03d}_task-motion_run-{run}"
    write_set(eeg_dir / f"{stem}_eeg.set", raw.get_data() * 1e6, sfreq, labels, events)
    (eeg_dir / f"{stem}_events.tsv").write_text("onset\tduration\tsample\tvalue\n" + "".join(
        f"{onset:.10f}\tn/a\t{int(round(onset * sfreq))}\t{kind}\n" for onset, kind in events
    ))
    (eeg_dir / f"{stem}_channels.tsv").write_text(
        "name\ttype\tunits\n" + "".join(f"{label}\tn/a\tn/a\n" for label in labels)
    )
    (eeg_dir / f"{stem}_electrodes.tsv").write_text(
        "name\tx\ty\tz\n" + "".join(f"{label}\t0.0\t0.0\t0.0\n" for label in labels)
    )
    (eeg_dir / f"{stem}_coordsystem.json").write_text(json.dumps(
        {"EEGCoordinateUnits": "mm", "EEGCoordinateSystem": "CTF", "EEGCoordinateSystemDescription": "EEGLAB"}
    ))
    (eeg_dir / f"{stem}_eeg.json").write_text(json.dumps({
        "PowerLineFrequency": 60, "EEGPlacementScheme": "10-10", "TaskName": "motion",
        "EEGChannelCount": len(labels), "RecordingType": "continuous",
        "RecordingDuration": int(raw.n_times / sfreq), "SamplingFrequency": sfreq,
    }, indent=2))


def make_eegmmidb_bids(
    root, *, subjects=SUBJECTS, cues: int = 6, seed: int = 3, bad_files: bool = True, sourcedata: bool = False
) -> Path:
    """Write the sample in ds004362's BIDS layout under ``root`` and return it (see the module docstring)."""
    root = Path(root)
    rawdata = root / "sourcedata" / "rawdata"
    rng = np.random.default_rng(seed)
    records = _write_imagery_runs(rawdata, subjects, rng, cues)  # the same signals as make_eegmmidb's
    if bad_files:
        _write_edf(rawdata / "S001/S001R03.edf", *_run_signal(3, rng, cues))  # motor execution: not imagery
        records.append("S001/S001R03.edf")
    for name in records:
        subject, run = int(name[1:4]), int(name[-6:-4])
        _bids_run(rawdata / name, root / f"sub-{subject:03d}" / "eeg", subject, run)
        (rawdata / f"{name}.event").write_bytes(b"synthetic WFDB annotation copy\n")
    if bad_files:
        eeg = root / "sub-002" / "eeg"
        (eeg / "sub-002_task-motion_run-12_events.tsv").unlink()  # the .set without its cues
        events = root / "sub-001" / "eeg" / "sub-001_task-motion_run-6_events.tsv"
        lines = events.read_text().splitlines(keepends=True)
        lines[2] = lines[2].replace("TASK4", "TASK3")  # row 2: a value of another task
        events.write_text("".join(lines))
        good = (root / "sub-007/eeg/sub-007_task-motion_run-4_eeg.set").read_bytes()
        (root / "sub-005" / "eeg").mkdir(parents=True)
        (root / "sub-005/eeg/sub-005_task-motion_run-4_eeg.set").write_bytes(good[: len(good) // 2])  # cut
        shutil.copy(events.parent / "sub-001_task-motion_run-4_events.tsv",
                    root / "sub-005/eeg/sub-005_task-motion_run-4_events.tsv")
        (root / "sub-012/eeg/sub-012_task-motion_run-8_channels.tsv").write_text("name\ttype\tunits\n")  # no .set
        (eeg / "notes.txt").write_text("subject reported drowsiness in run 12\n")
    (root / "dataset_description.json").write_text(json.dumps({
        "Name": "EEG Motor Movement/Imagery Dataset (synthetic sample)", "License": "CC0", "BIDSVersion": "1.8.0",
    }, indent=2))
    (root / "participants.tsv").write_text("participant_id\tGender\tAge\tHandedness\n" + "".join(
        f"sub-{s:03d}\t{'FM'[s % 2]}\t{20 + s}\tR\n" for s in subjects
    ))
    (root / "participants.json").write_text(json.dumps({"participant_id": {"Description": "Unique participant label"}}))
    (root / "task-motion_events.json").write_text(json.dumps({"value": {"LongName": "Event marker"}}))
    (root / "README").write_text("Synthetic sample in the layout of OpenNeuro ds004362 (not real EEG).\n")
    (root / "CHANGES").write_text("1.0.0 2022-12-15\n  - Initial release on OpenNeuro\n")
    (root / "code").mkdir()
    (root / "code" / "runConversion.m").write_text("% synthetic stand-in for the converter script\n")
    if not sourcedata:
        shutil.rmtree(root / "sourcedata")
    write_provenance(root, "generated by dataset_scripts/sample_sources/eegmmidb.py, ds004362 layout (not real EEG)")
    return root
