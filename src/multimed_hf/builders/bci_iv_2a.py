"""BCI Competition IV 2a (Graz): ``A01T.gdf`` ... ``A09E.gdf``, GDF with event codes, plus the true-label files.

Training sessions (``T``) mark each cue with its class (769 left hand, 770 right hand, 771 feet, 772 tongue);
evaluation sessions (``E``) mark every cue 783 (unknown) and take their classes, in cue order, from the
``classlabel`` of ``A0xE.mat`` (the organisers' ``true_labels.zip``, in the folder or a sub-folder). Each cue becomes
one epoch of ``EPOCH_SECONDS`` from its onset (MOABB's BNCI2014_001 window, 2-6 s of the trial), the 22 EEG
channels named in the 10-10 system (the 3 EOG channels are left out), float32 volts; the run is counted from the
new-run events (32766).

The GDF is checked against its own header before MNE reads it (a cut file otherwise loses its tail or its event
table), and an evaluation session without its true labels, or with another number of labels than cues, is
rejected. Epochs running past the recording, flat or non-finite are reported per epoch (``<file>:row epoch N``).

The sessions are read at the top of the folder or one folder down (``BCICIV_2a_gdf/A01T.gdf``, as the zip
unpacks). BNCI Horizon's MATLAB copies of the sessions (``A01T.mat`` holding ``data``, no ``classlabel``) are
dropped, named: the GDF is read. Documents and system files are ignored.

Grouping: subject (cross-subject splits); ``within_subject_split`` is the competition's protocol (T train, E test).
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._records import RecordRejections
from multimed_hf.builders.eegmmidb import epochs_from_annotations
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["BCIIV2aBuilder", "EPOCH_SECONDS", "CHANNELS_10_10", "check_gdf_size"]

EPOCH_SECONDS = 4.0
_SESSION = re.compile(r"^A0([1-9])([TE])\.gdf$")
_LABELS = re.compile(r"^A0([1-9])([TE])\.mat$")
_CUES = ("769", "770", "771", "772")
_UNKNOWN_CUE = "783"
_NEW_RUN = "32766"
#: The GDF labels of the 22 EEG channels and their 10-10 names (the data set's montage, as MOABB names them).
CHANNELS_10_10 = {
    "EEG-Fz": "Fz", "EEG-0": "FC3", "EEG-1": "FC1", "EEG-2": "FCz", "EEG-3": "FC2", "EEG-4": "FC4",
    "EEG-5": "C5", "EEG-C3": "C3", "EEG-6": "C1", "EEG-Cz": "Cz", "EEG-7": "C2", "EEG-C4": "C4", "EEG-8": "C6",
    "EEG-9": "CP3", "EEG-10": "CP1", "EEG-11": "CPz", "EEG-12": "CP2", "EEG-13": "CP4", "EEG-14": "P1",
    "EEG-Pz": "Pz", "EEG-15": "P2", "EEG-16": "POz",
}
_DOCUMENTS = re.compile(r"^(desc_2a\.pdf|README.*|LICENSE.*)$", re.IGNORECASE)


def check_gdf_size(path: Path) -> None:
    """``BadSourceFile`` unless the file holds every data record and the event table its GDF header promises."""
    data = path.read_bytes()
    if len(data) < 256 or not data.startswith(b"GDF "):
        raise BadSourceFile(f"not a GDF file: {len(data)} bytes, no 'GDF ' version at the start")
    try:
        version = float(data[4:8].decode("ascii"))
    except ValueError:
        raise BadSourceFile(f"not a GDF file: version {data[:8]!r}") from None
    if version < 1.9:
        header = int(np.frombuffer(data, "<i8", 1, 184)[0])
        n_signals = int(np.frombuffer(data, "<u4", 1, 252)[0])
    else:
        header = int(np.frombuffer(data, "<u2", 1, 184)[0]) * 256
        n_signals = int(np.frombuffer(data, "<u2", 1, 252)[0])
    n_records = int(np.frombuffer(data, "<i8", 1, 236)[0])
    if header != 256 * (n_signals + 1) or len(data) < header:
        raise BadSourceFile(
            f"broken GDF header: {header} header bytes for {n_signals} signals, the file holds {len(data)} bytes"
        )
    offset = 256 + 216 * n_signals  # samples per record, then data type, per signal (GDF 1 and 2 alike)
    per_record = np.frombuffer(data, "<i4", n_signals, offset)
    types = np.frombuffer(data, "<i4", n_signals, offset + 4 * n_signals)
    sizes = {1: 1, 2: 1, 3: 2, 4: 2, 5: 4, 6: 4, 7: 8, 8: 8, 16: 4, 17: 8}
    if any(int(t) not in sizes for t in types):
        raise BadSourceFile(f"GDF data types {sorted(set(types.tolist()))} are not integer or float types")
    end = header + n_records * int(sum(int(n) * sizes[int(t)] for n, t in zip(per_record, types)))
    if len(data) < end + 8:
        raise BadSourceFile(
            f"truncated: the header promises {n_records} data records ending at byte {end} and an event table "
            f"after them; the file holds {len(data)} bytes"
        )
    mode = data[end]
    if version < 1.94:
        n_events = int(np.frombuffer(data, "<u4", 1, end + 4)[0])
    else:
        n_events = int.from_bytes(data[end + 1:end + 4], "little")
    table = end + 8 + n_events * (12 if mode == 3 else 6)
    if len(data) < table:
        raise BadSourceFile(
            f"truncated: the event table lists {n_events} events ({table} bytes in all), the file holds {len(data)}"
        )


def read_true_labels(path: Path) -> list[str]:
    """The classes (event codes 769-772) of an ``A0xE.mat`` / ``A0xT.mat`` ``classlabel`` (1-4), in cue order."""
    from scipy.io import loadmat

    try:
        content = loadmat(path)
    except (ValueError, OSError, TypeError) as err:
        raise BadSourceFile(f"cannot read MATLAB file: {type(err).__name__}: {err}") from None
    if "classlabel" not in content:
        held = sorted(k for k in content if not k.startswith("__"))
        raise BadSourceFile(f"no 'classlabel' variable (it holds {held})")
    labels = np.asarray(content["classlabel"]).ravel()
    if not np.isin(labels, [1, 2, 3, 4]).all():
        raise BadSourceFile(f"classlabel holds values other than 1-4: {sorted(set(labels.tolist()))}")
    return [str(768 + int(k)) for k in labels]


class BCIIV2aBuilder(NonDataFiles, RecordRejections, SourceBuilder):
    task = "motor_imagery"
    source = "bci_iv_2a"
    record_noun = "epoch"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(_SESSION.match(p.name) for pattern in ("*.gdf", "*/*.gdf") for p in root.glob(pattern))

    @cached_property
    def _label_files(self) -> dict[str, str]:
        """``{"A01E": relpath of A01E.mat}`` for the true-label files in the folder or one level below."""
        found = {}
        for pattern in ("*.mat", "*/*.mat"):
            for path in sorted(self.root.glob(pattern)):
                match = _LABELS.match(path.name)
                if match:
                    found.setdefault(path.stem, path.relative_to(self.root).as_posix())
        return found

    def read_file(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if _LABELS.match(name):
            from scipy.io import whosmat

            try:
                held = {entry[0] for entry in whosmat(self.root / relpath)}
            except (ValueError, OSError, TypeError):
                held = set()
            if "classlabel" not in held and "data" in held:
                raise UnusedSourceFile(
                    "not used: BNCI Horizon's MATLAB copy of the session (a 'data' struct); the GDF session is read"
                )
            read_true_labels(self.root / relpath)
            return []
        if _DOCUMENTS.match(name):
            return []
        match = _SESSION.match(name) if relpath.count("/") <= 1 else None
        if match is None:
            raise BadSourceFile("stray file: expected A0NT.gdf / A0NE.gdf (and A0NE.mat true labels)")
        subject, session = f"A0{match.group(1)}", match.group(2)
        import mne

        check_gdf_size(self.root / relpath)
        try:
            raw = mne.io.read_raw_gdf(self.root / relpath, preload=True, verbose="error")
        except (ValueError, RuntimeError, OSError) as err:
            raise BadSourceFile(f"cannot read GDF: {type(err).__name__}: {err}") from None
        picks = [i for i, ch in enumerate(raw.ch_names) if ch.upper().startswith("EEG")]
        if not picks:
            raise BadSourceFile(f"no EEG channels among {raw.ch_names}")
        channels = [CHANNELS_10_10.get(raw.ch_names[i], raw.ch_names[i].removeprefix("EEG-")) for i in picks]
        cues, run = [], 0
        for annotation in raw.annotations:
            code = str(annotation["description"]).strip()
            if code == _NEW_RUN:
                run += 1
            elif code in _CUES or code == _UNKNOWN_CUE:
                cues.append((float(annotation["onset"]), code, run))
        if not cues:
            raise BadSourceFile("no cue events (769-772 or 783): not a motor-imagery session")
        if any(code == _UNKNOWN_CUE for _, code, _ in cues):
            key = f"{subject}{session}"
            if key not in self._label_files:
                raise BadSourceFile(
                    f"evaluation session without its true labels: {key}.mat (true_labels.zip) is not in the folder, "
                    f"so its {len(cues)} cues (783) have no class"
                )
            labels = read_true_labels(self.root / self._label_files[key])
            if len(labels) != len(cues):
                raise BadSourceFile(f"{key}.mat holds {len(labels)} labels for {len(cues)} cues")
            cues = [(onset, label, r) for (onset, _, r), label in zip(cues, labels)]
        records = [(f"epoch {n}", onset, code) for n, (onset, code, _) in enumerate(cues, start=1)]
        runs = {f"epoch {n}": r for n, (_, _, r) in enumerate(cues, start=1)}
        sfreq = float(raw.info["sfreq"])
        good, bad = epochs_from_annotations(raw.get_data(picks=picks), sfreq, records, EPOCH_SECONDS)
        samples = [
            Sample(
                sample_id=f"{subject}{session}:{record.split()[-1]}", source_path=relpath,
                fields={
                    "eeg": epoch, "sfreq": sfreq, "channel_names": channels,
                    "movement": self.canonical("movement", code),
                    "subject": subject, "session": session, "run": str(max(runs[record], 1)), "cue_onset": onset,
                    "within_subject_split": "train" if session == "T" else "test",
                },
                group_key=f"subject:{subject}",
            )
            for record, onset, code, epoch in good
        ]
        return self.keep_records(relpath, samples, bad)
