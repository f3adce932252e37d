"""BCI Competition IV 2a (Graz): ``A01T.gdf`` ... ``A09E.gdf``, GDF with event codes, plus the true-label files; or
BNCI Horizon's MATLAB copies of the sessions (``A01T.mat`` ... ``A09E.mat``), as MOABB's ``BNCI2014_001`` downloads
them.

Training sessions (``T``) mark each cue with its class (769 left hand, 770 right hand, 771 feet, 772 tongue);
evaluation sessions (``E``) mark every cue 783 (unknown) and take their classes, in cue order, from the
``classlabel`` of ``A0xE.mat``: the organisers' ``true_labels.zip`` (read as it is downloaded, each member straight
from the archive) or its files unpacked, in the folder or a sub-folder, or, where the sessions lie one folder down,
in a sub-folder of theirs (``BCICIV_2a_gdf/true_labels/A01E.mat``: labels are found relative to the sessions). Each
cue becomes one epoch of ``EPOCH_SECONDS`` from its onset (MOABB's BNCI2014_001 window, 2-6 s of the trial), the 22
EEG channels named in the 10-10 system (the 3 EOG channels are left out), float32 volts; the run is the session's
motor-imagery run, 1-6 in order (MOABB numbers them 0-5), the EOG calibration runs before them not counted: A04T,
which lacks them, numbers its imagery runs as the other sessions do.

The GDF is checked against its own header before MNE reads it (a cut file otherwise loses its tail or its event
table), and an evaluation session without its true labels, or with another number of labels than cues, is
rejected: its reason says whether the label file is not in the folder or is there but unreadable (a ``.mat`` without
the ``MATLAB 5.0 MAT-file`` header, such as an error page saved in its place, is named "not a MATLAB file"; one that
cannot be opened, "cannot open"). The cues are the GDF's own event table in its order (epoch N is its Nth cue, and
an evaluation session's Nth label is its class; MNE would drop an event past the recording's end and sort the rest).
Cues or epochs running past the recording, flat or non-finite epochs are reported per epoch (``<file>:row epoch N``).

The sessions are read at the top of the folder or one folder down (``BCICIV_2a_gdf/A01T.gdf``, as the zip
unpacks). Extensions are matched in any case (``A01T.GDF``, ``A01E.MAT``), names as published. Documents and system
files are ignored.

BNCI Horizon's copies (``http://bnci-horizon-2020.eu/database/data-sets/001-2014/A01T.mat``, which MOABB keeps as
``~/mne_data/MNE-bnci-data/database/data-sets/001-2014/A01T.mat``) hold ``data``, a 1 x N cell of runs, each a
struct of ``X`` (samples x 25: the 22 EEG channels in the order of ``CHANNELS_10_10``, then 3 EOG, microvolts),
``trial`` (1-based sample of each trial's start), ``y`` (class 1-4, in the E sessions too), ``fs`` (250),
``classes``, ``artifacts``, ``gender``, ``age``; the first runs (EOG calibration: eyes open, closed, moving) hold no
trial. They are read at the top, one folder down, or anywhere along MOABB's tree (the folder given may be
``MNE-bnci-data``, ``database``, ``data-sets`` or ``001-2014``); the cache's other BNCI data sets
(``data-sets/002-2014/`` ...) are listed as not used. ``trial`` is the trial start (GDF event 768, the fixation
cross; MOABB cuts ``trial - 1`` + 2-6 s), the cue comes ``TRIAL_TO_CUE_SECONDS`` later, so an epoch is the run's
samples ``trial - 1 + 500`` to ``trial - 1 + 1500``: the GDF route's cue-onset window. The samples match the GDF
route's: ids ``A01T:<n>`` counting the session's trials in order, the run counted among the cells that hold trials
(the imagery runs, as the GDF route counts them), ``cue_onset`` on the session's runs laid end to end (the GDF's time
where the runs tile it), ``X / 1e6`` volts. A file that cannot be read, lacks ``X``/``trial``/``y``/``fs``, holds
another number of channels than 25, classes outside 1-4 or a trial start outside its run is rejected, named.
When a session is there both as GDF and as BNCI's copy, the GDF is read and the copy listed as not used, unless the
GDF is an evaluation session without its true labels: then the copy (whose ``y`` holds them) is read.

True labels: an unpacked ``A0xE.mat`` holding ``classlabel`` is read before a member of ``true_labels.zip``. The
archive is validated member by member: a member that is not a readable ``classlabel`` file of 1-4 (damaged, or a
stray name) is rejected as ``true_labels.zip:row <member>``, the sessions that need it name it, and the archive's
system litter (``__MACOSX/``, documents) is skipped as such files are. The label files a session's classes come
from join the builder's version, so adding or changing them validates the sessions again; so do the sessions held
both ways.

Grouping: subject (cross-subject splits); ``within_subject_split`` is the competition's protocol (T train, E test).
"""

from __future__ import annotations

import glob
import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from multimed_hf.builders._copies import listing_digest, refuse_later_copy
from multimed_hf.builders._download import NonDataFiles, non_data_reason
from multimed_hf.builders._records import RecordRejections, record_where
from multimed_hf.builders.eegmmidb import epochs_from_annotations
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.sample import RejectedRecord, Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = [
    "BCIIV2aBuilder", "BNCI_TREE", "EPOCH_SECONDS", "CHANNELS_10_10", "TRIAL_TO_CUE_SECONDS", "TRUE_LABELS_ZIP",
    "check_gdf_size", "read_gdf_events", "read_true_labels",
]

EPOCH_SECONDS = 4.0
#: The organisers' archive of the true labels (``A01E.mat`` ... ``A09E.mat``, and ``A0xT.mat``).
TRUE_LABELS_ZIP = "true_labels.zip"
_SESSION = re.compile(r"^A0([1-9])([TE])\.(?i:gdf)$")
_LABELS = re.compile(r"^A0([1-9])([TE])\.(?i:mat)$")
#: What unpacking a damaged zip member raises.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
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
#: Where MOABB keeps BNCI Horizon's copies (``~/mne_data/MNE-bnci-data/database/data-sets/001-2014/A01T.mat``).
BNCI_TREE = ("MNE-bnci-data", "database", "data-sets", "001-2014")
#: From the trial start (``trial`` of a BNCI run, GDF event 768) to the cue: the paradigm's t = 2 s.
TRIAL_TO_CUE_SECONDS = 2.0
#: Columns of a BNCI run's ``X``: the 22 EEG channels (``CHANNELS_10_10``'s order), then EOG1-3.
_MAT_CHANNELS = 25
_RUN_FIELDS = ("X", "trial", "y", "fs")
#: The folders of MOABB's other BNCI data sets beside ``001-2014`` (``002-2014/S01T.mat``, ``BNCIHorizon2020-AMUSE/``).
_OTHER_DATA_SET = re.compile(r"^(\d{3}-\d{4}|BNCIHorizon2020-.+)$")


def _bnci_place(relpath: str) -> str | None:
    """Where a ``.mat`` session copy lies: ``"session"`` at the top, one folder down or along ``BNCI_TREE``;
    ``"other"`` inside the tree but off ``001-2014`` (another BNCI data set); else None."""
    parents = tuple(relpath.split("/")[:-1])
    if len(parents) == 1 and parents[0] != BNCI_TREE[-1] and _OTHER_DATA_SET.match(parents[0]):
        return "other"
    if len(parents) <= 1:
        return "session"
    for start in range(len(BNCI_TREE) - 1):
        tail = BNCI_TREE[start:]
        if parents == tail:
            return "session"
        shared = next((n for n, (a, b) in enumerate(zip(parents, tail)) if a != b), min(len(parents), len(tail)))
        if shared and shared < len(tail):
            return "other"
    return None


def _gdf_event_table(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, codes)`` of a GDF file's event table (positions 1-based samples), in the table's order;
    ``BadSourceFile`` unless the file holds every data record and the event table its header promises."""
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
    if n_records < 0:  # GDF's "unknown" (-1): a recording stopped before its header was completed
        raise BadSourceFile(f"the GDF header gives the number of data records as {n_records} (unknown: the recording "
                            f"was not closed), so its event table cannot be found")
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
    positions = np.frombuffer(data, "<u4", n_events, end + 8)
    codes = np.frombuffer(data, "<u2", n_events, end + 8 + 4 * n_events)
    return positions, codes


def check_gdf_size(path: Path) -> None:
    """``BadSourceFile`` unless the file holds every data record and the event table its GDF header promises."""
    _gdf_event_table(path.read_bytes())


def read_gdf_events(path: Path) -> list[tuple[int, str]]:
    """Every event of a GDF file as ``(sample, code)`` in its table's order, the sample counted from 0 as MNE counts
    it (``BadSourceFile`` where the size check fails). MNE's reader drops the events outside the recording (with a
    warning only) and sorts the others by onset: read from the table itself, a cue past the end stays cue N."""
    positions, codes = _gdf_event_table(path.read_bytes())
    return [(int(position) - 1, str(int(code))) for position, code in zip(positions, codes)]


def _mat_errors() -> tuple[type[BaseException], ...]:
    """What scipy's MATLAB reader raises on a damaged file (a cut one raises MatReadError or IndexError; a v7.3 file,
    HDF5, NotImplementedError)."""
    from scipy.io.matlab import MatReadError

    return (ValueError, OSError, TypeError, EOFError, IndexError, MatReadError, NotImplementedError)


#: How a MATLAB 5 / 7 / 7.3 file begins: its 116-byte text header ("MATLAB 5.0 MAT-file, Platform: ...").
_MAT_HEADER = b"MATLAB"


def _mat_unreadable(source: Path | bytes, err: BaseException) -> BadSourceFile:
    """Why scipy cannot read a MATLAB file (path or bytes): empty, not a MATLAB file at all (no ``MATLAB 5.0
    MAT-file`` header: an HTML page saved in its place), a v7.3 (HDF5) file, or a damaged one (scipy's error)."""
    try:
        if isinstance(source, bytes):
            head = source[:25]
        else:
            with open(source, "rb") as handle:
                head = handle.read(25)
    except OSError:
        head = None
    if head == b"":
        return BadSourceFile("empty file (0 bytes)")
    if isinstance(err, NotImplementedError):
        return BadSourceFile("a MATLAB v7.3 (HDF5) file, which scipy cannot read: save it again with save(..., '-v7')")
    if head is not None and not head.startswith(_MAT_HEADER):
        shown = f"{head[:24]!r}{'...' if len(head) > 24 else ''}"
        return BadSourceFile(f"not a MATLAB file: no 'MATLAB 5.0 MAT-file' header, it begins {shown}")
    return BadSourceFile(f"cannot read MATLAB file: {type(err).__name__}: {err}")


def _load_mat(source: Path | bytes, **options) -> dict:
    """scipy's ``loadmat`` of a MATLAB file (path or bytes); ``BadSourceFile`` naming why it cannot be read. A path is
    opened here: scipy words any failure to open one "Reader needs file name or open file-like object"."""
    from scipy.io import loadmat

    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
    except OSError as err:
        if isinstance(err, PermissionError):
            raise BadSourceFile(
                f"cannot open: permission denied ({type(err).__name__}): give your user read access to the file"
            ) from None
        raise BadSourceFile(f"cannot open: {type(err).__name__}: {err.strerror or err}") from None
    with handle:
        try:
            return loadmat(handle, **options)
        except _mat_errors() as err:
            raise _mat_unreadable(source, err) from None


def _mat_variables(source: Path | bytes) -> set[str]:
    """The variable names a MATLAB file (path or bytes) holds; empty where it cannot be read."""
    from scipy.io import whosmat

    try:
        return {entry[0] for entry in whosmat(io.BytesIO(source) if isinstance(source, bytes) else source)}
    except _mat_errors():
        return set()


def _vector(value) -> np.ndarray:
    """A struct field as a flat array (``squeeze_me`` turns one trial into a scalar, none into an empty array)."""
    return np.atleast_1d(np.asarray(value)).ravel()


def _bnci_runs(path: Path) -> tuple[float, list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]]:
    """``(sfreq, runs)`` of a BNCI Horizon session copy: per run ``(number, first sample in the session, X, trial,
    y)``; ``BadSourceFile`` naming what does not hold."""
    from scipy.io.matlab import mat_struct

    content = _load_mat(path, struct_as_record=False, squeeze_me=True)
    if "data" not in content:
        held = sorted(k for k in content if not k.startswith("__"))
        raise BadSourceFile(f"no 'data' variable (it holds {held}): not a BNCI Horizon copy of a session")
    data = content["data"]
    if isinstance(data, np.ndarray) and data.dtype != object:
        raise BadSourceFile(f"data is a {data.dtype} array {data.shape}, not a cell of run structs (X, trial, y, fs)")
    cells = list(np.ravel(data)) if isinstance(data, np.ndarray) else [data]
    runs, rates, offset = [], set(), 0
    for number, run in enumerate(cells, start=1):
        if not isinstance(run, mat_struct):
            raise BadSourceFile(f"data: run {number} is a {type(run).__name__}, not a struct of X, trial, y, fs")
        missing = [name for name in _RUN_FIELDS if name not in run._fieldnames]
        if missing:
            raise BadSourceFile(f"data: run {number} lacks {', '.join(missing)} (it holds {run._fieldnames})")
        x = np.asarray(run.X)
        if x.ndim != 2 or x.shape[1] != _MAT_CHANNELS or x.dtype.kind not in "fiu":
            raise BadSourceFile(
                f"data: run {number}: X is {x.dtype} {x.shape}, expected samples x {_MAT_CHANNELS} channels "
                "(22 EEG + 3 EOG)"
            )
        try:
            fs = _vector(run.fs).astype(float)
            trial = _vector(run.trial).astype(float)
            y = _vector(run.y).astype(float)
        except (TypeError, ValueError) as err:
            raise BadSourceFile(f"data: run {number}: fs, trial or y is not numeric ({err})") from None
        if fs.size != 1 or not np.isfinite(fs[0]) or fs[0] <= 0:
            raise BadSourceFile(f"data: run {number}: fs is {fs.tolist()}, not one sampling rate")
        rates.add(float(fs[0]))
        if trial.size:
            if y.size != trial.size:
                raise BadSourceFile(f"data: run {number}: {y.size} classes (y) for {trial.size} trials")
            if not np.isin(y, [1, 2, 3, 4]).all():
                raise BadSourceFile(
                    f"data: run {number}: y holds classes other than 1-4: {sorted(set(y.tolist()) - {1, 2, 3, 4})}"
                )
            outside = trial[~np.isfinite(trial) | (trial != np.round(trial)) | (trial < 1) | (trial > len(x))]
            if outside.size:
                raise BadSourceFile(
                    f"data: run {number}: trial starts {outside[:5].tolist()} are not samples of the run "
                    f"(1-{len(x)}): past the recording"
                )
            runs.append((number, offset, x, trial.astype(np.int64), y.astype(np.int64)))
        offset += len(x)
    if len(rates) > 1:
        raise BadSourceFile(f"data: the runs' fs differ: {sorted(rates)}")
    if not runs:
        raise BadSourceFile(f"no trials in any of its {len(cells)} runs: not a motor-imagery session")
    return rates.pop(), runs


def read_true_labels(source: Path | bytes) -> list[str]:
    """The classes (event codes 769-772) of an ``A0xE.mat`` / ``A0xT.mat`` ``classlabel`` (1-4), in cue order, from
    its path or its bytes (a member of ``true_labels.zip``)."""
    content = _load_mat(source)
    if "classlabel" not in content:
        held = sorted(k for k in content if not k.startswith("__"))
        raise BadSourceFile(f"no 'classlabel' variable (it holds {held})")
    labels = np.asarray(content["classlabel"]).ravel()
    if not np.isin(labels, [1, 2, 3, 4]).all():
        raise BadSourceFile(f"classlabel holds values other than 1-4: {sorted(set(labels.tolist()))}")
    return [str(768 + int(k)) for k in labels]


def _mat_copy_paths(root: Path) -> list[Path]:
    """The ``A0NT.mat`` / ``A0NE.mat`` files where BNCI Horizon's copies are read: the top, one folder down, and
    MOABB's tree below any of its levels."""
    patterns = ["*", "*/*"] + ["/".join(BNCI_TREE[start:]) + "/*" for start in range(len(BNCI_TREE) - 1)]
    return [p for pattern in patterns for p in sorted(root.glob(pattern)) if _LABELS.match(p.name) and p.is_file()]


def _sessions_in(root: Path) -> list[Path]:
    """The GDF sessions (``A01T.gdf``, extension in any case) at the top and one folder down, sorted per level."""
    return [p for pattern in ("*", "*/*") for p in sorted(root.glob(pattern)) if _SESSION.match(p.name)]


@dataclass(frozen=True)
class _LabelFile:
    """Where one session's true labels are: a ``.mat`` file, or a member of a ``true_labels.zip``."""

    relpath: str
    member: str | None = None

    @property
    def where(self) -> str:
        return self.relpath if self.member is None else f"{self.relpath}:{self.member}"

    def source(self, root: Path) -> Path | bytes:
        """The file's path, or the member's bytes (``BadSourceFile`` where the member does not unpack)."""
        if self.member is None:
            return root / self.relpath
        try:
            with zipfile.ZipFile(root / self.relpath) as archive:
                return archive.read(self.member)
        except _ZIP_ERRORS as err:
            raise BadSourceFile(f"cannot unpack {self.where}: {type(err).__name__}: {err}") from None


class BCIIV2aBuilder(NonDataFiles, RecordRejections, SourceBuilder):
    task = "motor_imagery"
    source = "bci_iv_2a"
    #: 3: true labels beside sessions one folder down; .GDF / .MAT in any case
    version = "8"  # 4: a file that is no MATLAB file named so; a session's label file there but unreadable named so;
    # 5: run counts the imagery runs only; 6: a byte-identical copy of a session dropped; 7: an unreadable zip named;
    # 8: the GDF's own event table, in its order (a cue past the recording's end reported as its epoch; MNE dropped
    # it and the later epochs took its number); a label file that cannot be opened named so
    record_noun = "epoch"

    def __init__(self, root):
        super().__init__(root)
        # the evaluation sessions' labels are read with their GDF: their bytes join the version (and the cache's)
        digest = hashlib.sha256()
        for key, label_file in sorted(self._true_labels.items()):
            source = label_file.source(self.root)
            digest.update(f"{key}\0{label_file.where}\0".encode())
            digest.update(source if isinstance(source, bytes) else source.read_bytes())  # a classlabel file: small
        # a BNCI copy is read or not by whether its GDF is there: the sessions held both ways join the version too
        both = sorted(set(self._gdf_sessions) & set(self._copies))
        if both:
            digest.update("\0".join(f"{key}={self._gdf_sessions[key]}" for key in both).encode())
        self.version = f"{type(self).version}+labels-{digest.hexdigest()[:12]}"

    @classmethod
    def detect(cls, root: Path) -> bool:
        if _sessions_in(root):
            return True
        return any("data" in _mat_variables(p) for p in _mat_copy_paths(root))  # BNCI's copies, MOABB's cache

    @cached_property
    def _gdf_sessions(self) -> dict[str, str]:
        """The GDF sessions (``"A01T"``) in the folder or one level below, with their first path."""
        found: dict[str, str] = {}
        for path in _sessions_in(self.root):
            found.setdefault(path.stem, path.relative_to(self.root).as_posix())
        return found

    @cached_property
    def _session_folders(self) -> tuple[str, ...]:
        """The folders one level down that hold sessions (``BCICIV_2a_gdf``, an archive's or a user's wrapper): their
        sub-folders are searched for true labels too, as the folder itself is."""
        return tuple(sorted({relpath.split("/")[0] for relpath in self._gdf_sessions.values() if "/" in relpath}))

    def _beside_sessions(self, relpath: str) -> bool:
        """Whether a file lies in a sub-folder of a session folder (``BCICIV_2a_gdf/true_labels/A01E.mat``)."""
        return relpath.count("/") == 2 and relpath.split("/")[0] in self._session_folders

    def _in_tree(self, relpath: str) -> bool:
        """Whether a ``.mat`` lies along MOABB's tree (``001-2014/`` or below), where only BNCI's copies are."""
        return relpath.count("/") > 1 or (self.root / relpath).parent.name == BNCI_TREE[-1]

    @cached_property
    def _copies(self) -> dict[str, str]:
        """The sessions (``"A01T"``) BNCI Horizon's copies hold (along MOABB's tree, or a ``data`` variable), with
        their first path."""
        found: dict[str, str] = {}
        for path in _mat_copy_paths(self.root):
            relpath = path.relative_to(self.root).as_posix()
            if self._in_tree(relpath) or "data" in _mat_variables(path):
                found.setdefault(path.stem, relpath)
        return found

    @cached_property
    def data_files(self) -> tuple[str, ...]:
        """The ``true_labels.zip`` archives in the folder or one level below, or in a session folder's sub-folder:
        read, not ignored as archives."""
        patterns = ["", "*/", *(f"{glob.escape(folder)}/*/" for folder in self._session_folders)]
        paths = [p for pattern in patterns for p in self.root.glob(pattern + TRUE_LABELS_ZIP)]
        return tuple(sorted(p.relative_to(self.root).as_posix() for p in paths if p.is_file()))

    @cached_property
    def _unreadable_archives(self) -> tuple[str, ...]:
        """The ``true_labels.zip`` archives (``data_files``) that do not open as zip archives."""
        bad = []
        for relpath in self.data_files:
            try:
                with zipfile.ZipFile(self.root / relpath):
                    pass
            except _ZIP_ERRORS:
                bad.append(relpath)
        return tuple(bad)

    @cached_property
    def _label_candidates(self) -> dict[str, list[_LabelFile]]:
        """The true-label files of each evaluation session (``"A01E"``) in the order they are tried: ``.mat`` files
        in the folder or one level below, then in the session folders' sub-folders, then the members of each
        ``true_labels.zip``."""
        found: dict[str, list[_LabelFile]] = {}
        beside = [f"{glob.escape(folder)}/*/*" for folder in self._session_folders]
        for pattern in ("*", "*/*", *beside):
            for path in sorted(self.root.glob(pattern)):
                match = _LABELS.match(path.name)
                if match and match.group(2) == "E" and path.is_file():
                    found.setdefault(path.stem, []).append(_LabelFile(path.relative_to(self.root).as_posix()))
        for relpath in self.data_files:
            if relpath in self._unreadable_archives:
                continue  # the archive's own manifest entry says why
            with zipfile.ZipFile(self.root / relpath) as archive:
                members = sorted(info.filename for info in archive.infolist() if not info.is_dir())
            for member in members:
                match = _LABELS.match(PurePosixPath(member).name)
                if match and match.group(2) == "E" and non_data_reason(member) is None:
                    found.setdefault(PurePosixPath(member).stem, []).append(_LabelFile(relpath, member))
        return found

    @cached_property
    def _true_labels(self) -> dict[str, _LabelFile]:
        """Per evaluation session, the first candidate that holds a ``classlabel`` (not a BNCI copy of the data)."""
        chosen = {}
        for key, candidates in self._label_candidates.items():
            for label_file in candidates:
                try:
                    source = label_file.source(self.root)
                except BadSourceFile:
                    continue
                if "classlabel" in _mat_variables(source):
                    chosen[key] = label_file
                    break
        return chosen

    def _why_not_labels(self, label_file: _LabelFile) -> str:
        """Why a true-label file that is there gives its session no classes (``A05E.mat is there but ...``)."""
        try:
            read_true_labels(label_file.source(self.root))
        except BadSourceFile as err:
            if err.reason.startswith("no 'classlabel' variable"):
                return f"{label_file.where} is there but holds {err.reason}"
            return f"{label_file.where} is there but unreadable ({err.reason})"
        return f"{label_file.where} is there but was not read"  # not reached: a readable classlabel is chosen

    def _read_archive(self, relpath: str) -> list[RejectedRecord]:
        """Every member of a ``true_labels.zip`` checked; each bad one a rejected record (``<zip>:row <member>``)."""
        bad, good = [], 0
        try:
            with zipfile.ZipFile(self.root / relpath) as archive:
                for info in archive.infolist():
                    member = info.filename
                    if info.is_dir() or non_data_reason(member) is not None:
                        continue  # folders, and the litter ignored as files are (__MACOSX/, .DS_Store, documents)
                    if not _LABELS.match(PurePosixPath(member).name):
                        bad.append((member, "stray member: expected the true labels A0NE.mat / A0NT.mat"))
                        continue
                    try:
                        read_true_labels(archive.read(info))
                    except _ZIP_ERRORS as err:
                        bad.append((member, f"cannot unpack: {type(err).__name__}: {err}"))
                    except BadSourceFile as err:
                        bad.append((member, err.reason))
                    else:
                        good += 1
        except _ZIP_ERRORS as err:
            raise BadSourceFile(f"not a readable zip archive: {type(err).__name__}: {err}") from None
        if not good:
            shown = "; ".join(f"{member}: {reason}" for member, reason in bad[:5]) or "it holds none"
            more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
            raise BadSourceFile(f"no readable true labels (A0NE.mat with a classlabel): {shown}{more}")
        return [RejectedRecord(record_where(relpath, member), reason) for member, reason in bad]

    def read_file(self, relpath: str) -> list[Sample | RejectedRecord]:
        name = PurePosixPath(relpath).name
        if relpath in self.data_files:
            return self._read_archive(relpath)
        place = _bnci_place(relpath)
        if place == "other":
            raise UnusedSourceFile(
                f"not used: another BNCI Horizon data set ({relpath.rsplit('/', 1)[0]}/); this source reads "
                "001-2014, BCI Competition IV 2a"
            )
        beside = self._beside_sessions(relpath)  # BCICIV_2a_gdf/true_labels/A01E.mat: where labels are looked for
        if _LABELS.match(name) and (place == "session" or beside):
            in_tree = not beside and self._in_tree(relpath)  # elsewhere an A0NE.mat may be true labels
            held = _mat_variables(self.root / relpath)
            if not in_tree and "classlabel" in held:
                read_true_labels(self.root / relpath)
                return []
            if in_tree or "data" in held:
                return self._read_copy(relpath)
            read_true_labels(self.root / relpath)  # neither: its reason (unreadable, no classlabel)
            return []
        if _DOCUMENTS.match(name):
            return []
        match = _SESSION.match(name) if relpath.count("/") <= 1 else None
        if match is None:
            raise BadSourceFile(
                "stray file: expected A0NT.gdf / A0NE.gdf (and A0NE.mat true labels), or BNCI Horizon's A0NT.mat / "
                "A0NE.mat"
            )
        subject, session = f"A0{match.group(1)}", match.group(2)
        same_name = [f for f in self._files_by_name.get(name.lower(), ()) if f != relpath]
        refuse_later_copy(self.root, relpath, same_name, "its epochs would be rejected with the original's as "
                          "duplicate ids")
        import mne

        events = read_gdf_events(self.root / relpath)  # the size check first: MNE reads a cut file's head only
        try:
            raw = mne.io.read_raw_gdf(self.root / relpath, preload=True, verbose="error")
        except (ValueError, RuntimeError, OSError) as err:
            raise BadSourceFile(f"cannot read GDF: {type(err).__name__}: {err}") from None
        picks = [i for i, ch in enumerate(raw.ch_names) if ch.upper().startswith("EEG")]
        if not picks:
            raise BadSourceFile(f"no EEG channels among {raw.ch_names}")
        channels = [CHANNELS_10_10.get(raw.ch_names[i], raw.ch_names[i].removeprefix("EEG-")) for i in picks]
        sfreq = float(raw.info["sfreq"])
        cues, run = [], 0
        # the file's own event table, not raw.annotations: MNE drops a cue past the recording's end, so the later
        # epochs took its number (and an evaluation session's labels no longer matched its cues)
        for position, code in events:
            if code == _NEW_RUN:
                run += 1
            elif code in _CUES or code == _UNKNOWN_CUE:
                cues.append((position / sfreq, code, run))
        if not cues:
            raise BadSourceFile("no cue events (769-772 or 783): not a motor-imagery session")
        if any(code == _UNKNOWN_CUE for _, code, _ in cues):
            key = f"{subject}{session}"
            label_file = self._true_labels.get(key)
            if label_file is None:
                found = "; ".join(self._why_not_labels(f) for f in self._label_candidates.get(key, []))
                if not found and self._unreadable_archives:
                    found = (f"{key}.mat is not unpacked here, and {', '.join(self._unreadable_archives)} is there but "
                             f"not a readable zip archive (download it again)")
                raise BadSourceFile(
                    "evaluation session without its true labels: "
                    + (found or f"{key}.mat (in {TRUE_LABELS_ZIP} or unpacked) is not in the folder")
                    + f", so its {len(cues)} cues (783) have no class"
                    + (f"; BNCI Horizon's copy {self._copies[key]} is read instead" if key in self._copies else "")
                )
            try:
                labels = read_true_labels(label_file.source(self.root))
            except BadSourceFile as err:
                raise BadSourceFile(f"true labels {label_file.where}: {err.reason}") from None
            if len(labels) != len(cues):
                raise BadSourceFile(f"{label_file.where} holds {len(labels)} labels for {len(cues)} cues")
            cues = [(onset, label, r) for (onset, _, r), label in zip(cues, labels)]
        records = [(f"epoch {n}", onset, code) for n, (onset, code, _) in enumerate(cues, start=1)]
        imagery = {r: i for i, r in enumerate(dict.fromkeys(r for _, _, r in cues), start=1)}  # EOG runs: no cue
        runs = {f"epoch {n}": imagery[r] for n, (_, _, r) in enumerate(cues, start=1)}
        good, bad = epochs_from_annotations(raw.get_data(picks=picks), sfreq, records, EPOCH_SECONDS)
        samples = [
            self._sample(relpath, f"{subject}{session}", record, code, onset, runs[record], epoch, sfreq, channels)
            for record, onset, code, epoch in good
        ]
        return self.keep_records(relpath, samples, bad)

    def _sample(self, relpath, key, record, code, onset, run, epoch, sfreq, channels) -> Sample:
        """One epoch as the GDF and the BNCI routes both write it."""
        subject, session = key[:3], key[3]
        return Sample(
            sample_id=f"{key}:{record.split()[-1]}", source_path=relpath,
            fields={
                "eeg": epoch, "sfreq": sfreq, "channel_names": channels,
                "movement": self.canonical("movement", code),
                "subject": subject, "session": session, "run": str(run), "cue_onset": onset,
                "within_subject_split": "train" if session == "T" else "test",
            },
            group_key=f"subject:{subject}",
        )

    @cached_property
    def listing_version(self) -> str:
        """The session files there are: a copy is dropped only while its original is there."""
        return listing_digest(self.root, [f for fs in self._files_by_name.values() if len(fs) > 1 for f in fs])

    @cached_property
    def _files_by_name(self) -> dict[str, list[str]]:
        """The folder's files by lower-case name (a session saved at two folder levels is one name twice)."""
        names: dict[str, list[str]] = {}
        for relpath in self.list_files():
            names.setdefault(PurePosixPath(relpath).name.lower(), []).append(relpath)
        return names

    def _read_copy(self, relpath: str) -> list[Sample | RejectedRecord]:
        """A BNCI Horizon copy of a session (``data``: runs of X, trial, y, fs), unless its GDF is read."""
        key = PurePosixPath(relpath).stem
        gdf = self._gdf_sessions.get(key)
        if gdf is not None and (key[3] == "T" or key in self._true_labels):
            raise UnusedSourceFile(
                f"not used: BNCI Horizon's MATLAB copy of the session (a 'data' struct); the GDF session {gdf} is read"
            )
        sfreq, runs = _bnci_runs(self.root / relpath)
        channels = list(CHANNELS_10_10.values())
        samples, bad, n = [], [], 0
        for imagery, (number, offset, x, trial, y) in enumerate(runs, start=1):  # the cells with trials
            records = []
            for start, label in zip(trial, y):
                n += 1
                records.append((f"epoch {n}", (start - 1) / sfreq + TRIAL_TO_CUE_SECONDS, str(768 + label)))
            eeg = x[:, :len(channels)].T * 1e-6  # microvolts, as MOABB scales them
            good, run_bad = epochs_from_annotations(eeg, sfreq, records, EPOCH_SECONDS)
            bad += [(record, f"run {imagery} (cell {number} of data): {reason}") for record, reason in run_bad]
            samples += [
                self._sample(relpath, key, record, code, float(offset / sfreq + onset), imagery, epoch, sfreq,
                             channels)
                for record, onset, code, epoch in good
            ]
        return self.keep_records(relpath, samples, bad)
