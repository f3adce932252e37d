"""User CT data as DICOM series: ``<patient>/<study>/<series>/*.dcm`` under a root holding ``labels.csv``.

``labels.csv`` has a ``label`` column and a ``patient_id`` or ``series_uid`` column (or both, a series row
winning over its patient's); a label is one of the task's canonical ``finding`` or ``severity`` names. Each file
is one slice, decoded fully with pydicom (compressed transfer syntaxes through pylibjpeg or Pillow), turned into
Hounsfield units through its modality LUT (rescale slope and intercept), and stored as a PNG in the lung window,
with its series as the volume and its rank along the slice normal (inferior to superior for axial series) as the
slice index. A file without pixel data, in a transfer syntax no installed decoder reads, or not CT is rejected.
The ``.dcm`` suffix is matched in any case: PACS exports name files in capitals (dcm4chee's ``FILE08.DCM``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping

import numpy as np

from multimed_hf.builders._dicom import dcmread, read_dicom_pixels
from multimed_hf.builders._ct import (
    LUNG_WINDOW, RenderedSlices, Window, check_hounsfield, encode_png, rendered_ref, require,
)
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["DicomSeriesBuilder", "LABELS_FILE", "read_ct_slice"]

LABELS_FILE = "labels.csv"
_KEYS = ("patient_id", "series_uid")


def _is_slice_name(name: str) -> bool:
    """A slice file's name: ``.dcm`` in any case (``IM0001.dcm``, ``FILE08.DCM``)."""
    return name.lower().endswith(".dcm")


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


class DicomSeriesBuilder(NonDataFiles, RenderedSlices, SourceBuilder):
    task = "radiographic_findings"
    source = "dicom_series"
    version = "2"  # 2: the .dcm suffix in any case
    #: The window every slice is rendered in (recorded per sample in the ``window`` column).
    window: ClassVar[Window] = LUNG_WINDOW

    def __init__(self, root):
        _pydicom()
        super().__init__(root)
        labels = self.root / LABELS_FILE
        # labels.csv is read into every sample: its content joins the version, so editing it re-validates
        digest = hashlib.sha256(labels.read_bytes()).hexdigest()[:12] if labels.is_file() else "none"
        self.version = f"{type(self).version}+labels-{digest}"
        self._labels: dict | None = None
        self._order: dict[str, dict[str, int]] = {}

    def render(self, file: Path, params: Mapping[str, str]) -> bytes:
        """``P1/ST1/SE1/1.dcm#window=-600,1500.png`` -> that slice's PNG."""
        return _slice_png(file, Window.parse(params["window"]))

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / LABELS_FILE).is_file() and any(
            _is_slice_name(p.name) for p in root.glob("*/*/*/*")
        )

    # --- labels.csv ---------------------------------------------------------------------------------------
    def _parse_labels(self) -> dict[tuple[str, str], tuple[int, str]]:
        """``{(key column, key): (row, label)}``; ``BadSourceFile`` if the file cannot serve as labels."""
        text = (self.root / LABELS_FILE).read_bytes().decode("utf-8-sig", errors="strict")
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        if "label" not in header or not any(key in header for key in _KEYS):
            raise BadSourceFile(f"{LABELS_FILE} header {header}: expected label and patient_id and/or series_uid")
        labels: dict[tuple[str, str], tuple[int, str]] = {}
        for n, row in enumerate(reader, start=1):
            label = (row.get("label") or "").strip()
            keys = [(k, (row.get(k) or "").strip()) for k in _KEYS if (row.get(k) or "").strip()]
            if not keys or not label:
                raise BadSourceFile(f"{LABELS_FILE}: row {n} has no {' or '.join(_KEYS)} or no label")
            for key in keys:
                if key in labels and labels[key][1] != label:
                    raise BadSourceFile(
                        f"{LABELS_FILE}: {key[0]} {key[1]!r} is labelled {labels[key][1]!r} (row {labels[key][0]}) "
                        f"and {label!r} (row {n})"
                    )
                labels[key] = (n, label)
        return labels

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
        spec = self.spec().label_map
        for column in ("finding", "severity"):
            if label in spec[column]:
                return {"finding": None, "severity": None, column: self.canonical(column, label)}
        names = sorted({*spec["finding"], *spec["severity"]})
        raise BadSourceFile(f"no label: {LABELS_FILE} row {row} says {label!r}, which is not one of {names}")

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Rows of ``labels.csv`` whose patient has no DICOM files here (series rows cannot be checked unread)."""
        try:
            labels = self._parse_labels() if LABELS_FILE in files else {}
        except (BadSourceFile, UnicodeDecodeError, csv.Error):
            return []  # labels.csv itself is rejected, with the reason
        patients = {PurePosixPath(f).parts[0] for f in files if _is_slice_name(f) and f.count("/") == 3}
        return [
            (f"{LABELS_FILE}:row {row}", f"missing patient: {key!r} has no <patient>/<study>/<series>/*.dcm files")
            for (column, key), (row, _) in sorted(labels.items(), key=lambda item: item[1][0])
            if column == "patient_id" and key not in patients
        ]

    # --- slices -------------------------------------------------------------------------------------------
    def _slice_index(self, relpath: str) -> int:
        """The file's rank in its series folder by position along the slice normal (headers read once a folder)."""
        folder, name = relpath.rsplit("/", 1)
        if folder not in self._order:
            keys = {}
            for sibling in sorted(p for p in (self.root / folder).iterdir() if _is_slice_name(p.name)):
                try:
                    ds = dcmread(sibling, stop_before_pixels=True)
                except BadSourceFile:
                    continue  # rejected on its own
                if ds.get("Modality") == "CT":  # a damaged CT slice keeps its place: the index is its position
                    keys[sibling.name] = (_position(ds), sibling.name)
            ranked = sorted(keys, key=keys.get)
            self._order[folder] = {n: i for i, n in enumerate(ranked)}
        return self._order[folder][name]

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath == LABELS_FILE:
            try:
                self._parse_labels()
            except (UnicodeDecodeError, csv.Error) as err:
                raise BadSourceFile(f"{LABELS_FILE} is not readable CSV text: {err}") from None
            return []
        parts = PurePosixPath(relpath).parts
        if len(parts) != 4 or not _is_slice_name(relpath):
            raise BadSourceFile("stray file: expected <patient>/<study>/<series>/<slice>.dcm or labels.csv")
        patient, study, series, name = parts
        ds, hu = read_ct_slice(self.root / relpath)
        series_uid = str(ds.get("SeriesInstanceUID", f"{patient}/{study}/{series}"))
        labels = self._label_fields(patient, series_uid)
        png = encode_png(self.window.to_uint8(hu))
        return [Sample(
            sample_id=f"{patient}/{study}/{series}/{PurePosixPath(name).stem}",
            source_path=relpath,
            fields={
                "image": rendered_ref(relpath, png, window=self.window.token), "modality": self.spec().modality,
                **labels,
                "patient_id": patient, "volume_id": series_uid, "slice_index": self._slice_index(relpath),
                "window": str(self.window),
            },
            group_key=f"patient:{patient}",
            content_hash=hashlib.sha256((self.root / relpath).read_bytes()).hexdigest(),
        )]
