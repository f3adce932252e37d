"""A synthetic sample in BCI Competition IV 2a's layout: ``A0NT.gdf`` / ``A0NE.gdf`` + ``true_labels/A0NE.mat``.

GDF 2.10 files written byte by byte as the format defines them (fixed header, one 256-byte block per channel,
int16 records, an event table of mode 3) with the publisher's 25 channel labels (``EEG-Fz``, ``EEG-0`` ...
``EOG-right``) at 250 Hz, and its event codes: 32766 new run, 768 trial start, 769-772 cues in the training
session, 783 (class unknown) in the evaluation session, whose classes are in ``true_labels/A0NE.mat``
(``classlabel`` 1-4). One run of 4 trials per session (the real one has 6 x 48). Class-dependent signal: the mu
and beta rhythm drops over the hemisphere opposite the imagined hand, at the vertex for the feet and laterally
(C5/C6) for the tongue. Subjects A01, A05 and A08 (train, validation and test under the subject split); A08's
evaluation session comes without its true labels, and a cut A09T.gdf and a stray file are the bad inputs.

``labels="zip"`` writes the labels as the organisers publish them instead: ``true_labels.zip`` holding ``A0NE.mat``
and ``A0NT.mat`` (``classlabel`` for both sessions); with ``bad_files`` it also holds a cut ``A0NT.mat``, a stray
member and macOS litter (``__MACOSX/._A0NE.mat``).

``layout="bnci"`` writes the same sessions as BNCI Horizon's MATLAB copies in MOABB's cache instead
(``MNE-bnci-data/database/data-sets/001-2014/A0NT.mat`` / ``A0NE.mat``, as ``moabb.datasets.BNCI2014_001`` downloads
them): ``data``, a 1 x N cell of run structs (``X`` samples x 25 in microvolts, ``trial`` 1-based trial starts,
``y`` classes 1-4 in both sessions, ``fs``, ``classes``, ``artifacts``, ``gender``, ``age``), the EOG runs first with
no trial. ``X`` holds what the GDF's int16 records decode to, so both layouts give the same epochs. ``eog_runs``
(default 0 for the GDF, 3 for BNCI's copies, as the real sessions open with eyes open, closed and moving) puts
that many EOG runs (32766 and 276 / 277 / 1072 in the GDF) before the imagery run. With ``bad_files`` the BNCI
layout holds a cut ``A09T.mat`` and another BNCI data set of the cache (``002-2014/S01T.mat``).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance
from dataset_scripts.sample_sources._mat import mat_bytes, write_mat
from dataset_scripts.sample_sources._zip import write_zip

__all__ = [
    "FOLDER", "BNCI_FOLDER", "make", "make_bci_iv_2a", "write_gdf", "write_bnci_mat", "bnci_runs", "session_signal",
    "gdf_values", "LABELS", "SFREQ",
]

FOLDER = "BCICIV_2a_gdf"
SFREQ = 250
LABELS = (
    "EEG-Fz", "EEG-0", "EEG-1", "EEG-2", "EEG-3", "EEG-4", "EEG-5", "EEG-C3", "EEG-6", "EEG-Cz", "EEG-7", "EEG-C4",
    "EEG-8", "EEG-9", "EEG-10", "EEG-11", "EEG-12", "EEG-13", "EEG-14", "EEG-Pz", "EEG-15", "EEG-16",
    "EOG-left", "EOG-central", "EOG-right",
)
_ROWS = {name: i for i, name in enumerate(LABELS)}
#: Channel rows losing their rhythm per class (event code).
_ERD = {
    769: ("EEG-C4", "EEG-4", "EEG-13", "EEG-8"),  # left hand: right hemisphere
    770: ("EEG-C3", "EEG-0", "EEG-9", "EEG-5"),  # right hand: left hemisphere
    771: ("EEG-Cz", "EEG-2", "EEG-11"),  # feet: vertex
    772: ("EEG-5", "EEG-8"),  # tongue: lateral
}
SUBJECTS = (1, 5, 8)
#: Where MOABB keeps BNCI Horizon's copies (``~/mne_data/`` + this).
BNCI_FOLDER = "MNE-bnci-data/database/data-sets/001-2014"
#: The GDF's physical and digital ranges (microvolts, int16).
_PMIN, _PMAX, _DMIN, _DMAX = -400.0, 400.0, -32768.0, 32767.0
_EOG_CODES = (276, 277, 1072)  # eyes open, eyes closed, eye movements
_EOG_SECONDS = 3


def _digital(signal_uv: np.ndarray) -> np.ndarray:
    """The int16 values ``write_gdf`` stores for ``signal_uv``."""
    digital = np.round((signal_uv - _PMIN) / (_PMAX - _PMIN) * (_DMAX - _DMIN) + _DMIN)
    return np.clip(digital, _DMIN, _DMAX).astype("<i2")


def gdf_values(signal_uv: np.ndarray) -> np.ndarray:
    """What a GDF reader decodes ``write_gdf``'s records to, in microvolts."""
    return (_digital(signal_uv).astype(float) - _DMIN) * ((_PMAX - _PMIN) / (_DMAX - _DMIN)) + _PMIN


def write_gdf(path: Path, signal_uv: np.ndarray, labels, events, sfreq: int = SFREQ) -> None:
    """Write a GDF 2.10 file: ``signal_uv`` channels x samples (microvolts), ``events`` as (sample, code, duration)."""
    n_channels, n_samples = signal_uv.shape
    record = sfreq  # one-second records
    n_records = int(np.ceil(n_samples / record))
    padded = np.zeros((n_channels, n_records * record))
    padded[:, :n_samples] = signal_uv
    pmin, pmax, dmin, dmax = _PMIN, _PMAX, _DMIN, _DMAX
    digital = _digital(padded)
    fixed = bytearray(256)
    fixed[0:8] = b"GDF 2.10"
    fixed[8:74] = b"X X".ljust(66)
    fixed[88:152] = b"synthetic BCI IV 2a sample".ljust(64)
    struct.pack_into("<H", fixed, 184, n_channels + 1)  # header length in 256-byte blocks
    struct.pack_into("<q", fixed, 236, n_records)
    struct.pack_into("<II", fixed, 244, 1, 1)  # record duration 1/1 s
    struct.pack_into("<H", fixed, 252, n_channels)
    n = n_channels
    blocks = [
        b"".join(label.encode().ljust(16) for label in labels),
        b" " * 80 * n,  # transducer
        b" " * 6 * n,  # physical dimension (text, obsolete)
        struct.pack(f"<{n}H", *[4275] * n),  # physical dimension code: microvolt
        struct.pack(f"<{n}d", *[pmin] * n), struct.pack(f"<{n}d", *[pmax] * n),
        struct.pack(f"<{n}d", *[dmin] * n), struct.pack(f"<{n}d", *[dmax] * n),
        b" " * 68 * n,  # prefiltering (text, obsolete)
        struct.pack(f"<{n}f", *[100.0] * n), struct.pack(f"<{n}f", *[0.5] * n), struct.pack(f"<{n}f", *[50.0] * n),
        struct.pack(f"<{n}i", *[record] * n), struct.pack(f"<{n}i", *[3] * n),  # samples per record, int16
        b"\x00" * 12 * n,  # sensor positions
        b"\xff" * n + b"\x00" * 19 * n,  # impedance unknown, reserved
    ]
    variable = b"".join(blocks)
    assert len(variable) == 256 * n
    data = b"".join(digital[:, r * record:(r + 1) * record].tobytes() for r in range(n_records))
    k = len(events)
    table = bytes([3]) + k.to_bytes(3, "little") + struct.pack("<f", float(sfreq))  # mode 3, count, rate
    table += struct.pack(f"<{k}I", *[e[0] + 1 for e in events])  # positions, 1-based
    table += struct.pack(f"<{k}H", *[e[1] for e in events])  # event codes
    table += struct.pack(f"<{k}H", *[0] * k) + struct.pack(f"<{k}I", *[e[2] for e in events])  # channel, duration
    path.write_bytes(bytes(fixed) + variable + data + table)


def _session(rng: np.random.Generator, classes: list[int], evaluation: bool):
    """(signal in uV, events) of one run: 768 at trial start, the cue 2 s later, 4 s of imagery, 0.5 s rest."""
    trial = int(6.5 * SFREQ)
    start = 2 * SFREQ
    total = start + trial * len(classes) + SFREQ
    time = np.arange(total) / SFREQ
    amplitude = np.ones((len(LABELS), total))
    events = [(0, 32766, 0)]
    for k, code in enumerate(classes):
        t0 = start + k * trial
        cue = t0 + 2 * SFREQ
        events += [(t0, 768, 0), (cue, 783 if evaluation else code, int(1.25 * SFREQ))]
        amplitude[[_ROWS[c] for c in _ERD[code]], cue + SFREQ // 2: cue + 4 * SFREQ] = 0.3
    phase = rng.uniform(0, 2 * np.pi, (len(LABELS), 2))
    rhythm = 10 * np.sin(2 * np.pi * 11 * time + phase[:, :1]) + 4 * np.sin(2 * np.pi * 22 * time + phase[:, 1:])
    drift = np.cumsum(rng.normal(0, 0.8, (len(LABELS), total)), axis=1)
    drift -= drift.mean(axis=1, keepdims=True)
    signal = amplitude * rhythm + 0.3 * drift + rng.normal(0, 2, (len(LABELS), total))
    signal[-3:] = rng.normal(0, 15, (3, total))  # EOG
    return signal, events


def _with_eog_runs(rng: np.random.Generator, signal: np.ndarray, events: list, eog_runs: int):
    """The session with ``eog_runs`` EOG runs (32766, then 276 / 277 / 1072) before its imagery run, and the runs'
    ``(first sample, length)``."""
    length = _EOG_SECONDS * SFREQ
    eog = rng.normal(0, 5, (len(LABELS), eog_runs * length))
    eog[-3:] *= 6
    shifted = [(eog_runs * length + sample, code, duration) for sample, code, duration in events]
    opening = [e for k in range(eog_runs) for e in ((k * length, 32766, 0), (k * length, _EOG_CODES[k % 3], length))]
    bounds = [(k * length, length) for k in range(eog_runs)] + [(eog_runs * length, signal.shape[1])]
    return np.concatenate([eog, signal], axis=1), opening + shifted, bounds


def bnci_runs(signal_uv: np.ndarray, events, bounds, classes) -> np.ndarray:
    """BNCI Horizon's ``data`` for a session: a 1 x N cell of run structs (dicts) cut at ``bounds`` (first sample,
    length); ``trial`` the 1-based trial starts (768) within each run, ``y`` the classes (1-4) in ``classes``'
    order, ``X`` samples x 25 in microvolts, as the GDF decodes them."""
    values = gdf_values(signal_uv)
    starts = [sample for sample, code, _ in events if code == 768]
    cells = np.empty((1, len(bounds)), dtype=object)
    for k, (first, length) in enumerate(bounds):
        inside = [(i, s) for i, s in enumerate(starts) if first <= s < first + length]
        cells[0, k] = {
            "X": values[:, first:first + length].T.copy(),
            "trial": np.array([[s - first + 1] for _, s in inside], float).reshape(-1, 1),
            "y": np.array([[classes[i] - 768] for i, _ in inside], float).reshape(-1, 1),
            "fs": float(SFREQ),
            "classes": np.array(["left hand", "right hand", "feet", "tongue"], dtype=object).reshape(1, 4),
            "artifacts": np.zeros((len(inside), 1)),
            "gender": "f", "age": 24.0,
        }
    return cells


def write_bnci_mat(path: Path, signal_uv: np.ndarray, events, bounds, classes) -> None:
    """Write BNCI Horizon's copy of a session (``bnci_runs``) as ``data``."""
    write_mat(path, {"data": bnci_runs(signal_uv, events, bounds, classes)})


def _classlabel_mat(classes) -> bytes:
    """A true-label file (``classlabel``, 1-4 in cue order) as bytes."""
    return mat_bytes({"classlabel": np.array([[c - 768] for c in classes], np.uint8)})


def make_bci_iv_2a(root, *, subjects=SUBJECTS, seed: int = 23, bad_files: bool = True, labels: str = "folder",
                   layout: str = "gdf", eog_runs: int | None = None) -> Path:
    """Write the sample under ``root`` and return it (``labels``: ``"folder"``, the unpacked ``true_labels/``, or
    ``"zip"``, the organisers' ``true_labels.zip``; ``layout``: ``"gdf"``, or ``"bnci"``, BNCI Horizon's copies in
    MOABB's cache)."""
    if labels not in ("folder", "zip"):
        raise ValueError(f"labels {labels!r}: expected 'folder' or 'zip'")
    if layout not in ("gdf", "bnci"):
        raise ValueError(f"layout {layout!r}: expected 'gdf' or 'bnci'")
    if eog_runs is None:
        eog_runs = 3 if layout == "bnci" else 0
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if layout == "bnci":
        return _make_bnci(root, rng, subjects, bad_files, eog_runs)
    members = {}
    for s in subjects:
        for session in ("T", "E"):
            classes = [int(c) for c in rng.permutation([769, 770, 771, 772])]
            signal, events = _session(rng, classes, evaluation=session == "E")
            if eog_runs:
                signal, events, _ = _with_eog_runs(rng, signal, events, eog_runs)
            write_gdf(root / f"A0{s}{session}.gdf", signal, LABELS, events)
            if (session == "T" and labels == "zip") or (session == "E" and not (bad_files and s == subjects[-1])):
                members[f"A0{s}{session}.mat"] = _classlabel_mat(classes)
    if labels == "zip":
        if bad_files:
            cut = f"A0{subjects[1]}T.mat"
            members[cut] = members[cut][: len(members[cut]) // 2]
            members["labels.txt"] = b"left hand, right hand, feet, tongue"
            members[f"__MACOSX/._A0{subjects[0]}E.mat"] = b"\x00\x05\x16\x07"
        write_zip(root / "true_labels.zip", members)
    else:
        (root / "true_labels").mkdir(exist_ok=True)
        for name, data in members.items():
            (root / "true_labels" / name).write_bytes(data)
    if bad_files:
        data = (root / f"A0{subjects[0]}T.gdf").read_bytes()
        (root / "A09T.gdf").write_bytes(data[: int(len(data) * 0.7)])
        (root / "A01T_backup.gdf.part").write_bytes(data[:1000])
    write_provenance(root, "generated by dataset_scripts/sample_sources/bci_iv_2a.py (not real EEG)")
    return root


def session_signal(seed: int = 23, evaluation: bool = False, eog_runs: int = 3):
    """One synthetic session: ``(signal in uV, events, run bounds, classes)``, the EOG runs first."""
    rng = np.random.default_rng(seed)
    classes = [int(c) for c in rng.permutation([769, 770, 771, 772])]
    signal, events = _session(rng, classes, evaluation=evaluation)
    bounds = [(0, signal.shape[1])]
    if eog_runs:
        signal, events, bounds = _with_eog_runs(rng, signal, events, eog_runs)
    return signal, events, bounds, classes


def _make_bnci(root: Path, rng: np.random.Generator, subjects, bad_files: bool, eog_runs: int) -> Path:
    """The sessions of ``make_bci_iv_2a`` (the same draws) as BNCI Horizon's copies in MOABB's cache."""
    folder = root / BNCI_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for s in subjects:
        for session in ("T", "E"):
            classes = [int(c) for c in rng.permutation([769, 770, 771, 772])]
            signal, events = _session(rng, classes, evaluation=session == "E")
            bounds = [(0, signal.shape[1])]
            if eog_runs:
                signal, events, bounds = _with_eog_runs(rng, signal, events, eog_runs)
            write_bnci_mat(folder / f"A0{s}{session}.mat", signal, events, bounds, classes)
    if bad_files:
        data = (folder / f"A0{subjects[0]}T.mat").read_bytes()
        (folder / "A09T.mat").write_bytes(data[: len(data) // 2])
        other = root / "MNE-bnci-data/database/data-sets/002-2014"
        other.mkdir(parents=True, exist_ok=True)
        write_mat(other / "S01T.mat", {"data": np.zeros((1, 1))})
    write_provenance(root, "generated by dataset_scripts/sample_sources/bci_iv_2a.py (not real EEG)")
    return root


make = make_bci_iv_2a
