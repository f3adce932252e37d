"""A synthetic sample in PhysioNet EEGMMIDB's layout: ``files/S001/S001R04.edf``, EDF+ with T0/T1/T2 annotations.

Written with pyedflib as the publisher's files are (EDF+, 160 Hz, the publisher's padded channel labels such as
``C3..`` and ``Fcz.``, physical range +-8092 uV, T0 rest 4.2 s / T1, T2 cues 4.1 s), but with 9 of the 64
channels (over the motor cortex) and 6 cues per run, to stay small. Class-dependent signal: a 10 Hz mu and 20 Hz
beta rhythm that drops (event-related desynchronisation) over the hemisphere opposite an imagined fist (C4 side
for left, C3 side for right), over both for both fists and at the vertex (Cz) for the feet; rest keeps it.
Four subjects (1, 2, 7, 12) with imagery runs 4, 6 (within-subject train) and 12, 14 (test), plus a
motor-execution run, a truncated EDF, a run with an unknown annotation, one whose last cue runs past the
recording, and a stray file.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_eegmmidb", "CHANNELS", "SFREQ", "SUBJECTS"]

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


def make_eegmmidb(root, *, subjects=SUBJECTS, cues: int = 6, seed: int = 3, bad_files: bool = True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    files = root / "files"
    rng = np.random.default_rng(seed)
    records = []
    for s in subjects:
        for run in (4, 6, 12, 14):
            name = f"S{s:03d}/S{s:03d}R{run:02d}.edf"
            _write_edf(files / name, *_run_signal(run, rng, cues))
            records.append(name)
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
