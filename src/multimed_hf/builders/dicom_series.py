"""User CT data as DICOM series: ``<patient>/<study>/<series>/*.dcm`` under a root holding ``labels.csv``.

``labels.csv`` has a ``label`` column and a ``patient_id`` or ``series_uid`` column (or both, a series row
winning over its patient's); a label is one of the task's canonical ``finding`` or ``severity`` names. A row
without patient_id and series_uid, or with an empty label, is rejected on its own (``labels.csv:row N``; the slices
an empty label leaves unlabelled name it) and the other rows are used; a key labelled two ways makes the file
unusable. Each file
is one slice, decoded fully with pydicom (compressed transfer syntaxes through pylibjpeg or Pillow), turned into
Hounsfield units through its modality LUT (rescale slope and intercept), and stored as a PNG in the lung window,
with its series as the volume and its rank along the slice normal (inferior to superior for axial series) as the
slice index. A file without pixel data, cut short, in a transfer syntax no installed decoder reads, or not CT is
rejected. The ``.dcm`` suffix is matched in any case: PACS exports name files in capitals (dcm4chee's
``FILE08.DCM``). A slice without extension, as scanners and DICOM CDs name them (``IM000001``, ``I0000123``, a SOP
instance UID), is read where its bytes 128-131 are ``DICM`` (the PS3.10 prefix after the preamble); ``DICOMDIR``,
a CD's index of its files, is ignored (the slices are found by walking the folders).

A slice's index is its rank among its folder's slices, so the builder's version carries every series folder's
listing (names and sizes): a slice added, removed or cut re-validates the others, and an incremental build equals a
fresh one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping

import numpy as np

from multimed_hf.builders._copies import copy_order
from multimed_hf.builders._dicom import dcmread, read_dicom_pixels
from multimed_hf.builders._ct import (
    LUNG_WINDOW, RenderedSlices, Window, check_hounsfield, encode_png, rendered_ref, require,
)
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.data.errors import BadSourceFile, IgnoredSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["DicomSeriesBuilder", "LABELS_FILE", "read_ct_slice"]

LABELS_FILE = "labels.csv"
_KEYS = ("patient_id", "series_uid")
#: A DICOM CD's index of its files (PS3.10 Media Storage Directory): not a slice.
DICOMDIR = "DICOMDIR"
#: A file named by its SOP instance UID (``1.2.840.113619.2.55.3.604688.11.3``): its dots are no extension.
_UID_NAME = re.compile(r"^\d+(\.\d+)+$")
_STRAY = ("stray file: expected <patient>/<study>/<series>/<slice>.dcm (or a DICOM slice without extension) or "
          "labels.csv")


def _is_slice_name(name: str) -> bool:
    """A slice file's name: ``.dcm`` in any case (``IM0001.dcm``, ``FILE08.DCM``)."""
    return name.lower().endswith(".dcm")


def _no_extension(name: str) -> bool:
    """A name without extension (``IM000001``, a SOP instance UID), and not ``DICOMDIR``."""
    return ("." not in name or _UID_NAME.match(name) is not None) and name.upper() != DICOMDIR


def _has_dicm_prefix(path: Path) -> bool:
    """Whether the file's bytes 128-131 are ``DICM``: a DICOM file (PS3.10 7.1: a 128-byte preamble, then DICM)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:  # a folder, or unreadable: not a slice (an unreadable file is rejected when read)
        return False


def _is_slice(path: Path) -> bool:
    """A slice file: ``.dcm`` in any case, or a DICOM file without extension (its ``DICM`` prefix read)."""
    return _is_slice_name(path.name) or (_no_extension(path.name) and _has_dicm_prefix(path))


def _slice_stem(name: str) -> str:
    """The name a slice's sample id ends with: without ``.dcm``; a name without extension as it is."""
    return PurePosixPath(name).stem if _is_slice_name(name) else name


def _pydicom():
    return require("pydicom", "DICOM series")


def read_ct_slice(path: Path):
    """The dataset and its pixels in Hounsfield units, decoded fully; ``BadSourceFile`` names what is wrong."""
    from pydicom.pixels import apply_modality_lut

    ds, pixels = read_dicom_pixels(path, "DICOM series")
    if ds.get("Modality") != "CT":
        raise BadSourceFile(f"modality {ds.get('Modality')!r}: this layout reads CT series (Hounsfield units)")
    hu = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    check_hounsfield(hu, "slice")
    return ds, hu


def _is_localizer(ds) -> bool:
    """Whether a CT image is a localizer (scout, topogram, surview: the planning radiograph a CT study exports
    beside its axial series), by its Image Type (0008,0008) value 3: ``LOCALIZER``."""
    image_type = ds.get("ImageType")
    if image_type is None:
        return False
    values = [image_type] if isinstance(image_type, str) else list(image_type)  # one value, or a MultiValue
    return any(str(v).strip().upper() == "LOCALIZER" for v in values)


def _slice_png(path: Path, window: Window) -> bytes:
    _, hu = read_ct_slice(path)
    return encode_png(window.to_uint8(hu))


def _position(ds) -> tuple:
    """Sort key of a slice in its series: along the slice normal, else by instance number."""
    ipp, iop = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if ipp is not None and iop is not None and len(ipp) == 3 and len(iop) == 6:
        normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
        return (0, float(np.dot(normal, np.asarray(ipp, float))))
    number = ds.get("InstanceNumber")
    return (1, float(number)) if number is not None else (2, 0.0)


def _plane(ds) -> tuple | None:
    """The slice's plane: its normal (ImageOrientationPatient's row x column direction), rounded; None without one."""
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    normal = np.cross(np.asarray(iop[:3], float), np.asarray(iop[3:], float))
    return tuple(float(v) + 0.0 for v in np.round(normal, 2))  # + 0.0: no -0.0 beside 0.0


def _placed(keys: dict[str, tuple]) -> dict[str, tuple]:
    """Sort keys of a series' slices (``{name: (_position key, InstanceNumber)}``): a slice without a position,
    among slices with one, placed along the normal by its InstanceNumber, interpolated from theirs, or extrapolated
    past either end (it sorted after every positioned slice: the volume's far end)."""
    known = [(number, key[1]) for key, number in keys.values() if key[0] == 0 and number is not None]
    numbers = sorted({n for n, _ in known})
    if len(numbers) < 2:
        return {name: key for name, (key, _) in keys.items()}
    positions = [np.mean([p for n2, p in known if n2 == n]) for n in numbers]

    def along(number) -> float:  # np.interp clamps: past either end, extend the end's own spacing
        if numbers[0] <= number <= numbers[-1]:
            return float(np.interp(number, numbers, positions))
        (n0, p0), (n1, p1) = ((numbers[0], positions[0]), (numbers[1], positions[1])) if number < numbers[0] else (
            (numbers[-2], positions[-2]), (numbers[-1], positions[-1]))
        return float(p1 + (number - n1) * (p1 - p0) / (n1 - n0))

    return {name: key if key[0] == 0 or number is None else (0, along(number)) for name, (key, number) in keys.items()}


class DicomSeriesBuilder(NonDataFiles, RenderedSlices, SourceBuilder):
    task = "radiographic_findings"
    source = "dicom_series"
    #: 2: the .dcm suffix in any case; 3: slices without extension, DICOMDIR ignored, cut files named as truncated;
    #: 4: a labels.csv row without key or label rejected on its own (the other rows used); 5: slices ranked within
    #: their series UID, a slice without a position placed by its InstanceNumber; 6: ... past either end too (it
    #: took its neighbour's position, the tie broken by file name); 7: a localizer (scout) image rejected, not a slice;
    #: 8: slices ranked within their series over the study's folders (a series split over two folders had its ranks
    #: twice), a second file of a SOP instance not used, a slice of another plane than its series' rejected
    reading_version: ClassVar[str] = "8"
    #: The window every slice is rendered in (recorded per sample in the ``window`` column).
    window: ClassVar[Window] = LUNG_WINDOW

    def __init__(self, root):
        _pydicom()
        super().__init__(root)
        self._labels: dict | None = None
        self._order: dict[str, tuple[dict[str, int], dict[str, tuple[str, str]], dict[str, str]]] = {}

    @cached_property
    def version(self) -> str:
        """The reading version, ``labels.csv``'s content (read into every sample: editing it re-validates) and
        every series folder's listing, names and sizes (a slice's index is its rank among its folder's slices)."""
        labels = self.root / LABELS_FILE
        digest = hashlib.sha256(labels.read_bytes()).hexdigest()[:12] if labels.is_file() else "none"
        listing = hashlib.sha256()
        for path in sorted(p for p in self.root.glob("*/*/*/*") if p.is_file()):
            listing.update(f"{path.relative_to(self.root).as_posix()}\0{path.stat().st_size}\0".encode())
        return f"{self.reading_version}+labels-{digest}+series-{listing.hexdigest()[:12]}"

    def render(self, file: Path, params: Mapping[str, str]) -> bytes:
        """``P1/ST1/SE1/1.dcm#window=-600,1500.png`` -> that slice's PNG."""
        return _slice_png(file, Window.parse(params["window"]))

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / LABELS_FILE).is_file() and any(_is_slice(p) for p in root.glob("*/*/*/*"))

    # --- labels.csv ---------------------------------------------------------------------------------------
    def _parse_labels(self) -> dict[tuple[str, str], tuple[int, str | None]]:
        """``{(key column, key): (row, label)}``; ``BadSourceFile`` if the file cannot serve as labels (its header,
        or a key labelled two ways). A row with an empty label gives its keys the label None unless another row
        states theirs (their slices are rejected naming the row); a row without key labels nothing (see
        ``_read_labels``); empty rows are skipped."""
        return self._read_labels()[0]

    def _read_labels(self) -> tuple[dict[tuple[str, str], tuple[int, str | None]], list[tuple[int, str]]]:
        """``(labels, bad rows)``: ``_parse_labels``'s labels and ``(row, reason)`` of each row that is rejected on
        its own (no key, or an empty label), the rest of the file used."""
        text = (self.root / LABELS_FILE).read_bytes().decode("utf-8-sig", errors="strict")
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        if "label" not in header or not any(key in header for key in _KEYS):
            raise BadSourceFile(f"{LABELS_FILE} header {header}: expected label and patient_id and/or series_uid")
        labels: dict[tuple[str, str], tuple[int, str | None]] = {}
        bad: list[tuple[int, str]] = []
        unlabelled: list[tuple[int, list[tuple[str, str]]]] = []  # rows with keys and an empty label
        for n, row in enumerate(reader, start=1):
            label = (row.get("label") or "").strip()
            keys = [(k, (row.get(k) or "").strip()) for k in _KEYS if (row.get(k) or "").strip()]
            if not keys and not label:
                if any(isinstance(v, str) and v.strip() for v in row.values()):
                    bad.append((n, f"no {' or '.join(_KEYS)} and no label: the row labels nothing"))
                continue  # an empty row (a spreadsheet's trailing ",,"): nothing to label
            if not keys:
                bad.append((n, f"no {' or '.join(_KEYS)}: the row's label {label!r} applies to no series"))
                continue
            if not label:
                unlabelled.append((n, keys))
                for key in keys:
                    labels.setdefault(key, (n, None))  # a row of the same key that states a label wins
                continue
            for key in keys:
                if key in labels and labels[key][1] is None:
                    del labels[key]  # an empty label gives way to a row that states one
                if key in labels and labels[key][1] != label:
                    raise BadSourceFile(
                        f"{LABELS_FILE}: {key[0]} {key[1]!r} is labelled {labels[key][1]!r} (row {labels[key][0]}) "
                        f"and {label!r} (row {n})"
                    )
                labels[key] = (n, label)
        for n, keys in unlabelled:
            named = " and ".join(f"{column} {key!r}" for column, key in keys)
            if all(labels[key][1] is not None for key in keys):
                stated = ", ".join(str(r) for r in sorted({labels[key][0] for key in keys}))
                outcome = f"row {stated} labels {'them' if len(keys) > 1 else 'it'}"
            else:
                outcome = "the slices it names have no label"
            bad.append((n, f"no label: the row gives {named} an empty label; {outcome}"))
        return labels, sorted(bad)

    def _label_fields(self, patient: str, series_uid: str) -> dict[str, str | None]:
        if self._labels is None:
            try:
                self._labels = self._parse_labels()
            except (BadSourceFile, UnicodeDecodeError, csv.Error) as err:
                self._labels = {("error", ""): (0, str(err))}
        if ("error", "") in self._labels:
            raise BadSourceFile(f"no label: {LABELS_FILE} is unusable ({self._labels[('error', '')][1]})")
        found = self._labels.get(("series_uid", series_uid)) or self._labels.get(("patient_id", patient))
        if found is None:
            raise BadSourceFile(f"no label: neither series {series_uid} nor patient {patient!r} is in {LABELS_FILE}")
        row, label = found
        if label is None:
            which = f"series {series_uid}" if ("series_uid", series_uid) in self._labels else f"patient {patient!r}"
            raise BadSourceFile(f"no label: {LABELS_FILE} row {row} gives {which} an empty label")
        spec = self.spec().label_map
        for column in ("finding", "severity"):
            if label in spec[column]:
                return {"finding": None, "severity": None, column: self.canonical(column, label)}
        names = sorted({*spec["finding"], *spec["severity"]})
        raise BadSourceFile(f"no label: {LABELS_FILE} row {row} says {label!r}, which is not one of {names}")

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Rows of ``labels.csv`` whose patient has no DICOM files here (series rows cannot be checked unread), and
        the rows rejected on their own (no patient_id or series_uid, an empty label)."""
        try:
            labels, bad = self._read_labels() if LABELS_FILE in files else ({}, [])
        except (BadSourceFile, UnicodeDecodeError, csv.Error):
            return []  # labels.csv itself is rejected, with the reason
        patients: set[str] = set()
        for f in sorted(files):
            patient = f.split("/", 1)[0]
            if f.count("/") == 3 and patient not in patients and _is_slice(self.root / f):  # one slice is enough
                patients.add(patient)
        missing = {
            row: f"missing patient: {key!r} has no <patient>/<study>/<series>/*.dcm files"
            for (column, key), (row, label) in labels.items()
            if column == "patient_id" and key not in patients and label is not None
        }
        return [(f"{LABELS_FILE}:row {row}", reason) for row, reason in sorted([*missing.items(), *bad])]

    # --- slices -------------------------------------------------------------------------------------------
    def _study_slices(self, relpath: str) -> tuple[dict[str, int], dict[str, tuple[str, str]], dict[str, str]]:
        """``(rank, copies, off_plane)`` of the slices of ``relpath``'s study (every series folder of it, headers
        read once a study): each slice's rank in its series (its SeriesInstanceUID, wherever the study's folders hold
        it: an export may split a series over two folders) by position along the slice normal; the files repeating
        a SOPInstanceUID of their series already read (the same slice twice), each with that UID and the file read
        (``copy_order``: the name without a copy suffix first); and the slices whose plane is not their series'
        (the plane most of its slices lie in), each with why: they do not stack with the others."""
        study = relpath.rsplit("/", 2)[0]
        if study not in self._order:
            series: dict[str, dict[str, tuple]] = {}
            planes: dict[str, dict[str, tuple | None]] = {}
            instances: dict[tuple[str, str], str] = {}
            copies: dict[str, tuple[str, str]] = {}
            files = [p for folder in sorted((self.root / study).iterdir()) if folder.is_dir()
                     for p in folder.iterdir() if _is_slice(p)]
            for path in sorted(files, key=lambda p: copy_order(p.relative_to(self.root).as_posix())):
                rel = path.relative_to(self.root).as_posix()
                try:  # a slice cut inside its pixels still has its place (its header says where)
                    ds = dcmread(path, stop_before_pixels=True, allow_truncated=True)
                except BadSourceFile:
                    continue  # rejected on its own
                if ds.get("Modality") != "CT" or _is_localizer(ds):  # rejected on its own
                    continue  # (a slice damaged inside its pixels keeps its place)
                # without a SeriesInstanceUID, its folder is its series, as read_file names its volume
                uid, sop = str(ds.get("SeriesInstanceUID", rel.rsplit("/", 1)[0])), ds.get("SOPInstanceUID")
                if sop is not None and (uid, str(sop)) in instances:
                    copies[rel] = (str(sop), instances[uid, str(sop)])
                    continue
                if sop is not None:
                    instances[uid, str(sop)] = rel
                number = ds.get("InstanceNumber")
                series.setdefault(uid, {})[rel] = (_position(ds), float(number) if number is not None else None)
                planes.setdefault(uid, {})[rel] = _plane(ds)
            ranks: dict[str, int] = {}
            off_plane: dict[str, str] = {}
            for uid, keys in series.items():  # ranks within a series: another series' slices leave no gap
                known = [p for p in planes[uid].values() if p is not None]
                main = max(dict.fromkeys(known), key=known.count) if known else None
                for rel, plane in planes[uid].items():
                    if plane is not None and plane != main:
                        off_plane[rel] = (f"a slice of another plane (normal {list(plane)}) than its series' "
                                          f"{known.count(main)} of {len(keys)} slices (normal {list(main)}): it does "
                                          f"not stack with them")
                        del keys[rel]
                placed = _placed(keys)
                ranked = sorted(placed, key=lambda n: (placed[n], n))
                ranks.update({n: i for i, n in enumerate(ranked)})
            self._order[study] = (ranks, copies, off_plane)
        return self._order[study]

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath == LABELS_FILE:
            try:
                self._parse_labels()
            except (UnicodeDecodeError, csv.Error) as err:
                raise BadSourceFile(f"{LABELS_FILE} is not readable CSV text: {err}") from None
            return []
        parts = PurePosixPath(relpath).parts
        if parts[-1].upper() == DICOMDIR:
            raise IgnoredSourceFile(
                f"{parts[-1]} is a DICOM CD's index of its files: the slices are found by walking the folders"
            )
        if len(parts) != 4 or not _is_slice(self.root / relpath):
            if len(parts) == 4 and _no_extension(parts[-1]):
                raise BadSourceFile(f"{_STRAY}; a file without extension is read where bytes 128-131 are 'DICM'")
            raise BadSourceFile(_STRAY)
        patient, study, series, name = parts
        ds, hu = read_ct_slice(self.root / relpath)
        ranks, copies, off_plane = self._study_slices(relpath)
        if relpath in copies:
            uid, first = copies[relpath]
            raise UnusedSourceFile(f"not used: a second file of SOP instance {uid} of its series ({first} read "
                                   f"instead); the slice would be in the volume twice")
        if relpath in off_plane:
            raise BadSourceFile(off_plane[relpath])
        if _is_localizer(ds):  # kept before: a planning radiograph as a slice of the patient's volume, labelled
            raise BadSourceFile(f"a localizer (scout / topogram) image, Image Type {list(ds.ImageType)}: the "
                                f"planning radiograph of the study, not a slice of a CT series")
        series_uid = str(ds.get("SeriesInstanceUID", f"{patient}/{study}/{series}"))
        labels = self._label_fields(patient, series_uid)
        png = encode_png(self.window.to_uint8(hu))
        return [Sample(
            sample_id=f"{patient}/{study}/{series}/{_slice_stem(name)}",
            source_path=relpath,
            fields={
                "image": rendered_ref(relpath, png, window=self.window.token), "modality": self.spec().modality,
                **labels,
                "patient_id": patient, "volume_id": series_uid, "slice_index": ranks[relpath],
                "window": str(self.window),
            },
            group_key=f"patient:{patient}",
            content_hash=hashlib.sha256((self.root / relpath).read_bytes()).hexdigest(),
        )]
