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
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_bci_iv_2a", "write_gdf", "LABELS", "SFREQ"]

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


def write_gdf(path: Path, signal_uv: np.ndarray, labels, events, sfreq: int = SFREQ) -> None:
    """Write a GDF 2.10 file: ``signal_uv`` channels x samples (microvolts), ``events`` as (sample, code, duration)."""
    n_channels, n_samples = signal_uv.shape
    record = sfreq  # one-second records
    n_records = int(np.ceil(n_samples / record))
    padded = np.zeros((n_channels, n_records * record))
    padded[:, :n_samples] = signal_uv
    pmin, pmax, dmin, dmax = -400.0, 400.0, -32768.0, 32767.0
    digital = np.clip(np.round((padded - pmin) / (pmax - pmin) * (dmax - dmin) + dmin), dmin, dmax).astype("<i2")
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


def _classlabel_mat(classes) -> bytes:
    """A true-label file (``classlabel``, 1-4 in cue order) as bytes."""
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, {"classlabel": np.array([[c - 768] for c in classes], np.uint8)})
    return buffer.getvalue()


def make_bci_iv_2a(root, *, subjects=SUBJECTS, seed: int = 23, bad_files: bool = True, labels: str = "folder") -> Path:
    """Write the sample under ``root`` and return it (``labels``: ``"folder"``, the unpacked ``true_labels/``, or
    ``"zip"``, the organisers' ``true_labels.zip``)."""
    if labels not in ("folder", "zip"):
        raise ValueError(f"labels {labels!r}: expected 'folder' or 'zip'")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    members = {}
    for s in subjects:
        for session in ("T", "E"):
            classes = [int(c) for c in rng.permutation([769, 770, 771, 772])]
            signal, events = _session(rng, classes, evaluation=session == "E")
            write_gdf(root / f"A0{s}{session}.gdf", signal, LABELS, events)
            if (session == "T" and labels == "zip") or (session == "E" and not (bad_files and s == subjects[-1])):
                members[f"A0{s}{session}.mat"] = _classlabel_mat(classes)
    if labels == "zip":
        if bad_files:
            cut = f"A0{subjects[1]}T.mat"
            members[cut] = members[cut][: len(members[cut]) // 2]
            members["labels.txt"] = b"left hand, right hand, feet, tongue"
            members[f"__MACOSX/._A0{subjects[0]}E.mat"] = b"\x00\x05\x16\x07"
        with zipfile.ZipFile(root / "true_labels.zip", "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
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


make = make_bci_iv_2a
