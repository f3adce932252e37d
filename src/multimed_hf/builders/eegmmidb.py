"""PhysioNet EEG Motor Movement/Imagery (EEGMMIDB): ``[files/]S001/S001R04.edf``, EDF+ with T0/T1/T2 annotations.

The subject folders are found at the top, under ``files/``, or under ``files/eegmmidb/<version>/``: the tree that
MNE's ``eegbci.load_data`` (``MNE-eegbci-data/files/eegmmidb/1.0.0/S001/...``) and PhysioNet's ``wget -r``
(``physionet.org/files/eegmmidb/1.0.0/S001/...``) leave. The sampling rate is each file's own (subjects 88, 92
and 100 were recorded at 128 Hz, not 160 Hz), so an epoch holds ``EPOCH_SECONDS`` at its file's rate, stated in
``sfreq``.

Only the imagery runs give samples: runs 4, 8, 12 (imagined left / right fist: T1 / T2) and 6, 10, 14 (imagined
both fists / both feet: T1 / T2); T0 is rest in every run. Each cue becomes one epoch of ``EPOCH_SECONDS`` from
its onset (MOABB's PhysionetMI window), all channels, float32 volts, with channel names standardised as MNE's
``eegbci.standardize`` does (``Fc5.`` -> ``FC5``). Baseline and motor-execution runs are reported as not used.

An EDF is checked against its own header before MNE reads it: MNE returns a cut file's first records with only
a warning, so a file shorter than its header's record count is rejected as truncated. The cues are the file's own
annotations in its order (epoch N is its Nth annotation; MNE would drop one past the recording's end and sort the
rest). Annotations other than T0/T1/T2, cues or epochs running past the recording's end, and flat or non-finite
epochs are reported per epoch (``<file>:row epoch N``) while the run's other epochs are kept.

OpenNeuro's BIDS copy (ds004362 1.0.0, CC0) is read too, giving the same samples: the same ids, subjects, runs and
cue onsets. Its recordings are EEGLAB files, ``sub-001/eeg/sub-001_task-motion_run-4_eeg.set`` (data inside the
``.set``, in microvolts; MNE returns volts), with PhysioNet's run numbers unpadded and the cues in the sidecar
``sub-001_task-motion_run-4_events.tsv`` (columns ``onset duration sample value``; value ``TASK2T0/T1/T2`` in runs
4, 8, 12 and ``TASK4T0/T1/T2`` in runs 6, 10, 14): row N of the events file is cue N. The release also holds
PhysioNet's EDF+ files under ``sourcedata/rawdata/S001/S001R04.edf``: where that file is whole it is read (as above)
and the ``.set`` made from it is dropped as a duplicate. The other sidecars and ``participants.tsv``,
``dataset_description.json``, ``task-motion_events.json``, ``CHANGES`` are index files; ``code/`` (the converter's
MATLAB scripts) and ``.datalad/`` are ignored; a sidecar without its ``.set`` is rejected.

Extensions are matched in any case (``S001R04.EDF``, as a Windows or CD copy may name them), names as published.
PhysioNet's ``RECORDS`` (its list of the release's EDF files, beside the subject folders) is an index file: the files
it lists that are not in the folder are named in a partial-download warning.

Grouping: subject (the cross-subject default: test subjects are unseen). ``within_subject_split`` offers the
within-subject protocol on the same rows: runs 4, 6, 8, 10 train, runs 12 and 14 test.
"""

from __future__ import annotations

import csv
import hashlib
import re
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._records import RecordRejections
from multimed_hf.data.errors import BadSourceFile, IgnoredSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = [
    "EEGMMIDBBuilder", "EPOCH_SECONDS", "check_edf_size", "epochs_from_annotations", "read_bids_events",
    "read_edf_annotations", "read_set", "standard_channel_name",
]

EPOCH_SECONDS = 3.0
_RUN = re.compile(r"^S(\d{3})R(\d{2})\.(?i:edf)$")
#: An EDF file's name in a glob pattern: the extension in any case.
_EDF = "*.[eE][dD][fF]"
#: The publisher's phrase for each annotation code, per imagery run (PhysioNet's description of the data set).
_IMAGERY = {
    **{run: {"T0": "rest", "T1": "left fist", "T2": "right fist"} for run in (4, 8, 12)},
    **{run: {"T0": "rest", "T1": "both fists", "T2": "both feet"} for run in (6, 10, 14)},
}
_OTHER_RUNS = {1: "baseline, eyes open", 2: "baseline, eyes closed"}
_OTHER_RUNS.update({run: "motor execution (real movement)" for run in (3, 5, 7, 9, 11, 13)})
_WITHIN_TEST_RUNS = (12, 14)
#: Where the subject folders are: the top, ``files/``, MNE's / ``wget -r``'s ``files/eegmmidb/1.0.0/``, or the
#: ``sourcedata/rawdata/`` of OpenNeuro's ds004362; and ds004362's own BIDS recordings.
_FOLDERS = ("", "files/", "files/eegmmidb/*/", "sourcedata/rawdata/")
_TREES = tuple(f"{tree}S*/{_EDF}" for tree in _FOLDERS)
#: How many of the recordings missing from a RECORDS index a warning names.
_SHOWN_MISSING = 5
_BIDS_TREE = "sub-*/eeg/sub-*_task-motion_run-*_eeg.set"
#: ds004362's per-run files: ``sub-001_task-motion_run-4_eeg.set`` and its sidecars (run numbers unpadded).
_BIDS_RUN = re.compile(
    r"^sub-(\d{3})_task-motion_run-([1-9]\d?)_(eeg\.set|events\.tsv|channels\.tsv|electrodes\.tsv|"
    r"coordsystem\.json|eeg\.json)$"
)
#: ds004362's top-level metadata: read by people, not needed for the samples (the subject is in the path).
_BIDS_TOP = {"dataset_description.json", "participants.tsv", "participants.json", "task-motion_events.json", "CHANGES"}
_BIDS_IGNORED = {
    "code": "code/ holds OpenNeuro's conversion scripts (MATLAB) and the montage figure, not data",
    ".datalad": ".datalad/ is DataLad's dataset metadata, not data",
}
#: ds004362's event values (``TASK<k>T<n>``): the task number of each imagery run.
_BIDS_TASK = {4: 2, 8: 2, 12: 2, 6: 4, 10: 4, 14: 4}
_DOCUMENTS = re.compile(
    r"^(RECORDS|ANNOTATORS|SHA256SUMS\.txt|wfdbcal|LICENSE.*|README.*|64_channel_sharbrough(-old)?\.(pdf|png))$"
)


def standard_channel_name(name: str) -> str:
    """EEGMMIDB's padded labels in 10-10 spelling, as MNE's ``eegbci.standardize``: ``Fc5.`` -> ``FC5``."""
    std = name.strip(".").strip().upper()
    if std.endswith("Z"):
        std = std[:-1] + "z"
    if std.startswith("FP"):
        std = "Fp" + std[2:]
    return std


def _edf_layout(data: bytes) -> tuple[int, int, list[str], list[int]]:
    """``(header bytes, data records, signal labels, samples per record)`` of an EDF file's bytes; ``BadSourceFile``
    unless the file holds every data record its header promises."""
    if len(data) < 256:
        raise BadSourceFile(f"truncated: {len(data)} bytes, shorter than an EDF header (256 bytes)")
    try:
        header_bytes = int(data[184:192].decode("ascii").strip())
        n_records = int(data[236:244].decode("ascii").strip())
        n_signals = int(data[252:256].decode("ascii").strip())
    except ValueError:
        raise BadSourceFile(
            "not an EDF file: the header's byte count, record count or signal count is not a number"
        ) from None
    if header_bytes != 256 * (n_signals + 1) or len(data) < header_bytes:
        raise BadSourceFile(
            f"broken EDF header: it says {header_bytes} header bytes for {n_signals} signals "
            f"(expected {256 * (n_signals + 1)}; the file holds {len(data)} bytes)"
        )
    offset = 256 + 216 * n_signals
    try:
        per_record = [int(data[offset + 8 * i: offset + 8 * (i + 1)].decode("ascii").strip()) for i in range(n_signals)]
    except ValueError:
        raise BadSourceFile("broken EDF header: a signal's samples-per-record is not a number") from None
    record_bytes = 2 * sum(per_record)
    if n_records < 1:
        raise BadSourceFile(f"the EDF header gives {n_records} data records (-1: the recording was never closed)")
    expected = header_bytes + n_records * record_bytes
    if len(data) < expected:
        raise BadSourceFile(
            f"truncated: the header promises {n_records} data records ({expected} bytes), the file holds "
            f"{len(data)} bytes ({(len(data) - header_bytes) // max(record_bytes, 1)} whole records)"
        )
    labels = [data[256 + 16 * i: 256 + 16 * (i + 1)].decode("latin-1").strip() for i in range(n_signals)]
    return header_bytes, n_records, labels, per_record


def check_edf_size(path: Path) -> None:
    """``BadSourceFile`` unless the file holds every data record its EDF header promises and its signals share one
    sampling rate (MNE would resample the slower ones to the fastest, unsaid)."""
    _, _, labels, per_record = _edf_layout(path.read_bytes())
    rates = {}
    for label, n in zip(labels, per_record):
        if label != "EDF Annotations":
            rates.setdefault(n, []).append(label)
    if len(rates) > 1:
        described = "; ".join(f"{n} for {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                              for n, names in sorted(rates.items(), key=lambda item: -len(item[1])))
        raise BadSourceFile(f"signals sampled at different rates (samples a data record: {described}); "
                            "an epoch needs one rate for every channel")


#: One TAL (time-stamped annotation list) of an EDF+ annotation signal: onset, duration, its texts (MNE's pattern).
_TAL = re.compile(rb"([+-]\d+\.?\d*)(\x15(\d+\.?\d*))?(\x14.*?)\x14\x00")


def read_edf_annotations(path: Path) -> list[tuple[float, str]]:
    """Every annotation of an EDF+ file as ``(onset s, text)``, in the file's own order (after the size check).

    MNE's reader drops the annotations outside the recording (with a warning only) and sorts the others by onset:
    read from the ``EDF Annotations`` signal itself, as MNE parses it (onsets from the first data record's start),
    a cue past the recording's end stays the file's cue N, to be reported as such; so does a TAL that does not parse
    (its onset NaN, its bytes as the text)."""
    data = path.read_bytes()
    header_bytes, n_records, labels, per_record = _edf_layout(data)
    record_bytes = 2 * sum(per_record)
    starts = np.cumsum([0, *(2 * n for n in per_record)]).tolist()
    tals = b"".join(
        data[header_bytes + r * record_bytes + starts[i]: header_bytes + r * record_bytes + starts[i + 1]]
        for i, label in enumerate(labels) if label == "EDF Annotations"
        for r in range(n_records)
    )
    found, offset = [], 0.0
    pieces = [piece.lstrip(b"\x00") for piece in tals.split(b"\x14\x00")]
    for k, piece in enumerate(piece for piece in pieces if piece):
        match = _TAL.fullmatch(piece + b"\x14\x00")
        if match is None:  # kept, to be reported as the file's cue N rather than skipped unsaid
            found.append((float("nan"), piece.decode("utf-8", "replace").replace("\x14", " ").replace("\x15", " ")))
            continue
        onset = float(match.group(1)) + offset
        texts = [text.decode("utf-8", "replace") for text in match.group(4).split(b"\x14")[1:] if text]
        if not texts and k == 0:
            offset = -onset  # the first record's time-keeping TAL: the recording starts there
        found += [(onset, text) for text in texts]
    return found


def read_edf(path: Path):
    """The recording, loaded fully with MNE, after the size check."""
    import mne

    check_edf_size(path)
    try:
        return mne.io.read_raw_edf(path, preload=True, verbose="error")
    except (ValueError, RuntimeError, OSError) as err:
        raise BadSourceFile(f"cannot read EDF: {type(err).__name__}: {err}") from None


def read_set(path: Path):
    """An EEGLAB ``.set`` recording (ds004362's format, data inside the file), loaded fully with MNE (volts)."""
    import mne

    try:
        return mne.io.read_raw_eeglab(path, preload=True, verbose="error")
    except (ValueError, RuntimeError, OSError, NotImplementedError, KeyError, IndexError, TypeError) as err:
        # scipy's MAT reader and MNE raise any of these on a cut file or a .set without the EEG fields
        raise BadSourceFile(f"cannot read EEGLAB .set: {type(err).__name__}: {err}") from None


def read_bids_events(path: Path, run: int):
    """Cues of a ds004362 ``_events.tsv`` for imagery ``run``: ``(cues, bad)``, cues as ``(record, onset, code)``
    with code ``T0``/``T1``/``T2``, bad as ``(record, reason)``; record ``epoch N`` is the file's row N."""
    if not path.is_file():
        raise BadSourceFile(f"no events file {path.name}: the BIDS copy's cues are in it")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t")
            rows = list(reader)
            columns = [name.strip() for name in reader.fieldnames or []]
    except (OSError, UnicodeError, csv.Error) as err:
        raise BadSourceFile(f"cannot read {path.name}: {type(err).__name__}: {err}") from None
    missing = [name for name in ("onset", "value") if name not in columns]
    if missing:
        raise BadSourceFile(f"{path.name} has no {' or '.join(missing)} column (its columns: {columns})")
    codes = {f"TASK{_BIDS_TASK[run]}T{n}": f"T{n}" for n in range(3)}
    cues, bad = [], []
    for n, row in enumerate(rows, start=1):
        row = {key.strip(): (value or "").strip() for key, value in row.items() if isinstance(key, str)}
        value, onset_text = row.get("value", ""), row.get("onset", "")
        try:
            onset = float(onset_text)
        except ValueError:
            onset = float("nan")
        if not np.isfinite(onset) or onset < 0:
            bad.append((f"epoch {n}", f"{path.name}: onset {onset_text!r} is not a time in seconds"))
            continue
        if value not in codes:
            bad.append((f"epoch {n}", (
                f"{path.name}: value {value!r} at {onset:.2f} s is not {', '.join(sorted(codes))} (run {run})"
            )))
            continue
        cues.append((f"epoch {n}", onset, codes[value]))
    return cues, bad


def epochs_from_annotations(data: np.ndarray, sfreq: float, cues, seconds: float):
    """Epochs of ``seconds`` from each cue ``(record name, onset s, code)``: ``(good, bad)`` where good items are
    ``(record, onset, code, array)`` and bad ones ``(record, reason)``."""
    length = int(round(seconds * sfreq))
    total = data.shape[1]
    good, bad = [], []
    for record, onset, code in cues:
        start = int(round(onset * sfreq))
        if start < 0:
            bad.append((record, f"{code} at {onset:.2f} s: the cue lies before the recording's start"))
            continue
        if start >= total:
            bad.append((record, (
                f"{code} at {onset:.2f} s: the cue lies past the recording's end ({total / sfreq:.2f} s)"
            )))
            continue
        if start + length > total:
            bad.append((record, (
                f"{code} at {onset:.2f} s: the {seconds:g} s window ends past the recording's end "
                f"({total / sfreq:.2f} s)"
            )))
            continue
        epoch = data[:, start:start + length]
        if not np.isfinite(epoch).all():
            bad.append((record, f"{code} at {onset:.2f} s: non-finite samples"))
            continue
        if np.all(epoch.max(axis=1) == epoch.min(axis=1)):
            bad.append((record, f"{code} at {onset:.2f} s: every channel is flat (a disconnected amplifier)"))
            continue
        good.append((record, onset, code, epoch.astype(np.float32)))
    return good, bad


class EEGMMIDBBuilder(NonDataFiles, RecordRejections, SourceBuilder):
    task = "motor_imagery"
    source = "eegmmidb"
    record_noun = "epoch"
    reading_version = "7"  # 2: OpenNeuro's BIDS copy (ds004362) read too; 3: .EDF in any case; 4: the zip's
    # 64_channel_sharbrough-old.png is a document (it was a stray file); 5: the EDF's own annotations, in its order
    # (a cue past the recording's end is reported as its epoch; MNE dropped it and the later epochs took its number);
    # 6: a TAL that does not parse is reported as its epoch (it was skipped unsaid); 7: a file whose signals have
    # different rates is rejected (MNE resampled the slower ones)

    @classmethod
    def detect(cls, root: Path) -> bool:
        return any(
            _RUN.match(p.name) and p.parent.name == f"S{_RUN.match(p.name).group(1)}"
            for pattern in _TREES
            for p in root.glob(pattern)
        ) or any(_BIDS_RUN.match(p.name) for p in root.glob(_BIDS_TREE))

    @cached_property
    def version(self) -> str:
        """The reading version; in a BIDS tree also the events files' content and which PhysioNet EDFs lie in
        ``sourcedata/`` (a ``.set``'s samples come from its events file, or it is dropped for the EDF)."""
        events = sorted(self.root.glob("sub-*/eeg/sub-*_task-motion_run-*_events.tsv"))
        if not events:
            return self.reading_version
        digest = hashlib.sha256()
        for path in events:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        for path in sorted(self.root.glob(f"sourcedata/rawdata/S*/S*R{_EDF}")):
            digest.update(f"{path.name}:{path.stat().st_size}\0".encode())
        return f"{self.reading_version}:{digest.hexdigest()[:12]}"

    def layout_warnings(self) -> list[str]:
        """The EDF files a ``RECORDS`` index (PhysioNet's list of the release's files, beside the subject folders)
        lists that are not in the folder: a partial download, named with its count and its first few files."""
        warnings = []
        for index in (p for folder in _FOLDERS for p in sorted(self.root.glob(f"{folder}RECORDS")) if p.is_file()):
            where = index.relative_to(self.root).as_posix()
            try:
                lines = index.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError as err:
                warnings.append(f"{where} cannot be read ({type(err).__name__}: {err.strerror or err}): the folder "
                                "is not checked against the release's list of files")
                continue
            listed = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
            present = {p.relative_to(index.parent).as_posix().lower() for p in index.parent.glob(f"S*/{_EDF}")
                       if p.is_file()}
            missing = [name for name in listed
                       if (name if name.lower().endswith(".edf") else f"{name}.edf").lower() not in present]
            if not missing:
                continue
            imagery = sum(1 for name in missing
                          if (match := _RUN.match(PurePosixPath(name).name)) and int(match.group(2)) in _IMAGERY)
            shown = ", ".join(missing[:_SHOWN_MISSING])
            more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
            warnings.append(
                f"partial download: {len(missing)} of the {len(listed)} EDF files {where} lists are not in the "
                f"folder ({shown}{more}; {imagery} of them imagery runs, whose epochs are missing); built from what "
                "is there"
            )
        return warnings

    def read_file(self, relpath: str) -> list[Sample]:
        path = PurePosixPath(relpath)
        if path.parts[0] in _BIDS_IGNORED and len(path.parts) > 1:
            raise IgnoredSourceFile(_BIDS_IGNORED[path.parts[0]])
        if _DOCUMENTS.match(path.name) or path.name.lower().endswith(".edf.event"):
            return []  # the publisher's index, checksums, montage and WFDB annotation copies
        if len(path.parts) == 1 and path.name in _BIDS_TOP:
            return []  # ds004362's dataset description, participants table and events dictionary
        if path.name.startswith("sub-"):
            return self._read_bids(path)
        match = _RUN.match(path.name)
        if match is None or path.parent.name != f"S{match.group(1)}":
            raise BadSourceFile(
                "stray file: expected [files/]SNNN/SNNNRMM.edf or sub-NNN/eeg/sub-NNN_task-motion_run-N_eeg.set "
                "and its sidecars"
            )
        subject, run = f"S{match.group(1)}", int(match.group(2))
        self._check_run(run)
        raw = read_edf(self.root / relpath)
        cues, bad = [], []
        # the file's own annotations, not raw.annotations: MNE drops a cue past the recording's end, and the run's
        # later epochs would take its number
        for n, (onset, text) in enumerate(read_edf_annotations(self.root / relpath), start=1):
            code = text.strip()
            if not np.isfinite(onset):
                bad.append((f"epoch {n}", f"annotation {code!r} has no readable onset (not an EDF+ TAL)"))
                continue
            if code not in _IMAGERY[run]:
                bad.append((f"epoch {n}", f"annotation {code!r} at {onset:.2f} s is not T0, T1 or T2"))
                continue
            cues.append((f"epoch {n}", onset, code))
        if not cues and not bad:
            raise BadSourceFile("no annotations: an imagery run without T0/T1/T2 cues (EDF instead of EDF+?)")
        return self._samples(relpath, raw, subject, run, cues, bad)

    @staticmethod
    def _check_run(run: int) -> None:
        if run not in _IMAGERY:
            raise UnusedSourceFile(
                f"not used: run {run} is {_OTHER_RUNS.get(run, 'not a run of this data set')}, not motor imagery "
                f"(imagery runs are {sorted(_IMAGERY)})"
            )

    def _read_bids(self, path: PurePosixPath) -> list[Sample]:
        """A file of ds004362's ``sub-NNN/eeg/``: a ``.set`` recording (with its events file) or a sidecar."""
        match = _BIDS_RUN.match(path.name)
        if match is None or path.parent.as_posix() != f"sub-{match.group(1)}/eeg":
            raise BadSourceFile(
                "stray file: expected sub-NNN/eeg/sub-NNN_task-motion_run-N_<eeg.set|events.tsv|channels.tsv|"
                "electrodes.tsv|coordsystem.json|eeg.json>"
            )
        number, run, suffix = match.group(1), int(match.group(2)), match.group(3)
        recording = path.parent / f"sub-{number}_task-motion_run-{run}_eeg.set"
        if suffix != "eeg.set":
            if not (self.root / recording).is_file():
                raise BadSourceFile(f"sidecar without its recording {recording.name}")
            return []  # read with its .set (events) or describing it (channels, electrodes, recording settings)
        subject = f"S{number}"
        self._check_run(run)
        original = self._original_edf(subject, run)
        if original is not None:
            try:
                check_edf_size(self.root / original)
            except BadSourceFile:
                pass  # a cut original is rejected on its own; this copy is read instead
            else:
                raise UnusedSourceFile(
                    f"not used: a copy of {original}, PhysioNet's EDF+ of the same recording, which is read instead"
                )
        events = path.parent / f"sub-{number}_task-motion_run-{run}_events.tsv"
        cues, bad = read_bids_events(self.root / events, run)
        if not cues and not bad:
            raise BadSourceFile(f"no cues: {events.name} has no rows")
        raw = read_set(self.root / path)
        return self._samples(path.as_posix(), raw, subject, run, cues, bad)

    def _original_edf(self, subject: str, run: int) -> str | None:
        """PhysioNet's EDF+ of a BIDS recording in ``sourcedata/rawdata/`` (its extension in any case), or None."""
        found = sorted(self.root.glob(f"sourcedata/rawdata/{subject}/{subject}R{run:02d}.[eE][dD][fF]"))
        return next((p.relative_to(self.root).as_posix() for p in found if p.is_file()), None)

    def _samples(self, relpath: str, raw, subject: str, run: int, cues, bad) -> list[Sample]:
        """The cue epochs of one imagery run, whichever file it came from."""
        sfreq = float(raw.info["sfreq"])
        channels = [standard_channel_name(name) for name in raw.ch_names]
        codes = _IMAGERY[run]
        good, more_bad = epochs_from_annotations(raw.get_data(), sfreq, cues, EPOCH_SECONDS)
        samples = []
        for record, onset, code, epoch in good:
            samples.append(Sample(
                sample_id=f"{subject}R{run:02d}:{record.split()[-1]}", source_path=relpath,
                fields={
                    "eeg": epoch, "sfreq": sfreq, "channel_names": channels,
                    "movement": self.canonical("movement", codes[code]),
                    "subject": subject, "session": "1", "run": f"R{run:02d}", "cue_onset": onset,
                    "within_subject_split": "test" if run in _WITHIN_TEST_RUNS else "train",
                },
                group_key=f"subject:{subject}",
            ))
        return self.keep_records(relpath, samples, bad + more_bad)
