"""CC-CCII (CNCB 2019nCoVR): ``{NCP,CP,Normal}/<patient_id>/<scan_id>/<slice>.png|jpg`` plus index CSVs.

Each slice image is a sample, with its scan as the volume and its number as the slice index; the publisher's
images are already windowed, so the window is unknown (None). Slices are named by a zero-padded number in every
format the release mixes (``lesions_slices.csv`` lists ``0008.png``, ``0031.jpg``, ``.JPG``, ``.bmp`` and
``.BMP``); a valid image of a scan folder under another name is kept, its slice index the last number in its
name (None without one), noted in the manifest. ``unzip_filenames.csv`` (zip_file, label, patient_id, scan_id,
n_slice), where present, is checked against the folders: a scan it lists that is missing, filed under another
class, or holding another number of slices than ``n_slice`` is reported in the manifest. A zip part none of whose
scans is in the folder (a partial download; ``NCP-13.zip`` is reported broken) is one warning, not an error per
scan; so is a class folder missing. ``lesions_slices.csv`` (also seen as ``lesion_slices.csv``) and
``metadata.csv`` are read as index files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections import Counter, defaultdict
from functools import cached_property
from pathlib import Path, PurePosixPath

from multimed_hf.builders._download import NonDataFiles, non_data_reason
from multimed_hf.builders._records import update_with_content
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["CCCCIIBuilder", "INDEX_FILE"]

INDEX_FILE = "unzip_filenames.csv"
#: The publisher's CSVs beside the class folders, and the columns each must have.
_INDEXES = {
    INDEX_FILE: ("zip_file", "label", "patient_id", "scan_id", "n_slice"),
    "lesions_slices.csv": (),
    "lesion_slices.csv": (),
    "metadata.csv": (),
}
_SLICE = re.compile(r"^(\d+)\.(png|jpe?g|bmp)$", re.IGNORECASE)
_DIGITS = re.compile(r"\d+")


def _read_csv(data: bytes, name: str, columns: tuple[str, ...]) -> list[dict[str, str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadSourceFile(f"{name} is not UTF-8 text: {err}") from None
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise BadSourceFile(f"{name} is empty: no header row")
    missing = [c for c in columns if c not in reader.fieldnames]
    if missing:
        raise BadSourceFile(f"{name} lacks the column(s) {missing}; its header is {reader.fieldnames}")
    try:
        rows = list(reader)
    except csv.Error as err:
        raise BadSourceFile(f"{name}: {err}") from None
    for n, row in enumerate(rows, start=1):  # a row cut short (a download stopped mid-line) or with extra fields
        extra = row.get(None) or []
        filled = sum(value is not None for key, value in row.items() if key is not None)
        if extra or filled < len(reader.fieldnames):
            raise BadSourceFile(f"{name}: row {n} has {filled + len(extra)} field(s), the header "
                                f"{len(reader.fieldnames)}")
    return rows


def _read_index(data: bytes) -> list[dict[str, str]]:
    """``unzip_filenames.csv``'s rows, each whole and with a slice count; else ``BadSourceFile`` naming the row."""
    rows = _read_csv(data, INDEX_FILE, _INDEXES[INDEX_FILE])
    for n, row in enumerate(rows, start=1):
        if not row["n_slice"].strip().isdigit():
            raise BadSourceFile(f"{INDEX_FILE}: row {n}: n_slice {row['n_slice']!r} is not a count")
    return rows


class CCCCIIBuilder(NonDataFiles, ImageFolderBuilder):
    task = "radiographic_findings"
    source = "cc_ccii"
    version = "4"  # 3: slices of a scan the index lists under another class rejected; 4: the index in any case,
    # a row cut short rejects it, macOS resource forks are no slices
    image_suffixes = (".png", ".jpg", ".jpeg", ".bmp")

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return tuple(cls.spec().label_map["finding"])

    @classmethod
    def detect(cls, root: Path) -> bool:
        """A class folder holding <patient_id>/<scan_id>/ folders."""
        for name in cls.spec().label_map["finding"]:
            if (root / name).is_dir():
                patients = (p for p in (root / name).iterdir() if p.is_dir())
                if any(any(s.is_dir() for s in p.iterdir()) for p in patients):
                    return True
        return False

    @cached_property
    def _index_file(self) -> str:
        """The index's name as on disk: ``unzip_filenames.csv`` in any case (``UNZIP_FILENAMES.CSV`` from a CD or
        Windows copy), else its published name."""
        found = [p.name for p in self.root.iterdir() if p.is_file() and p.name.lower() == INDEX_FILE]
        return sorted(found)[0] if found else INDEX_FILE

    def _index_kind(self, relpath: str) -> str | None:
        """The published name of the index file ``relpath`` is (extension and name in any case), or None."""
        return next((name for name in _INDEXES if relpath.lower() == name.lower()), None)

    def read_file(self, relpath: str) -> list[Sample]:
        kind = self._index_kind(relpath)
        if kind is not None and kind != INDEX_FILE:
            _read_csv((self.root / relpath).read_bytes(), relpath, _INDEXES[kind])
            return []
        if kind == INDEX_FILE:
            _read_index((self.root / relpath).read_bytes())
            return []
        samples = super().read_file(relpath)
        for sample in samples:
            # neighbouring slices are near duplicates by design (one group anyway); across patients a 64-bit hash of
            # chest slices would chain unrelated scans together. Exact duplicates still group through content_hash.
            sample.perceptual_hash = None
        return samples

    def parse_path(self, relpath: str) -> PathInfo:
        parts = PurePosixPath(relpath).parts
        classes = self.spec().label_map["finding"]
        if len(parts) != 4:
            raise BadSourceFile("stray file: expected {NCP,CP,Normal}/<patient_id>/<scan_id>/<slice>.png|jpg")
        folder, patient, scan, name = parts
        if folder not in classes:
            raise BadSourceFile(f"class folder {folder!r} is not one of {sorted(classes)}")
        listed = self._index_labels.get((patient, scan))
        if listed and folder not in listed:  # the folder and the index disagree: no label to trust (others reject)
            raise BadSourceFile(f"label conflict: scan {patient}/{scan} is filed under {folder}/, {INDEX_FILE} lists "
                                f"it under {', '.join(sorted(listed))}")
        match = _SLICE.match(name)
        note = ""
        if match is None:
            numbers = _DIGITS.findall(PurePosixPath(name).stem)
            index = int(numbers[-1]) if numbers else None
            note = (
                f"name variant: {name!r} is not <slice number>.png|jpg|bmp; kept as a slice of scan "
                f"{folder}/{patient}/{scan}, slice index {index}"
            )
        else:
            index = int(match.group(1))
        return PathInfo(
            sample_id=f"{folder}/{patient}/{scan}/{PurePosixPath(name).stem}",
            labels={"finding": folder},
            # ids are grouped across class folders: nothing shows they are per-class, and grouping two people
            # together costs only split balance, while splitting one person costs a leak
            group_key=f"patient:{patient}",
            fields={
                "patient_id": patient, "volume_id": f"{folder}/{patient}/{scan}", "slice_index": index,
            },
            note=note,
        )

    def layout_warnings(self) -> list[str]:
        """Class folders missing, and zip parts of the index none of whose scans is here (partial downloads)."""
        missing = [c for c in self.class_folders() if not (self.root / c).is_dir()]
        warnings = [f"partial download: no {', '.join(m + '/' for m in missing)} folder; built from what is there"
                    ] if missing else []
        for zip_file, (scans, slices) in sorted(self._absent_zips.items()):
            warnings.append(
                f"partial download: none of the {scans} scans ({slices} slices) that {INDEX_FILE} lists in "
                f"{zip_file} is in the folder (not unpacked, or a broken archive)"
            )
        return warnings

    def _scan_slices(self, files) -> Counter:
        """Slice files per scan folder ``class/patient/scan``."""
        slices: Counter[str] = Counter()
        for path in files:
            parts = PurePosixPath(path).parts
            if len(parts) == 4 and parts[0] in self.class_folders() and PurePosixPath(path).suffix.lower() in (
                self.image_suffixes
            ) and non_data_reason(path) is None:  # not a macOS ._0000.png resource fork
                slices["/".join(parts[:3])] += 1
        return slices

    @cached_property
    def _index_rows(self) -> list[dict[str, str]]:
        """``unzip_filenames.csv``'s rows, or [] where it is absent or unreadable (then rejected, named)."""
        if not (self.root / self._index_file).is_file():
            return []
        try:  # the rows read_file accepts: a rejected index labels nothing
            return _read_index((self.root / self._index_file).read_bytes())
        except (BadSourceFile, OSError):
            return []

    @cached_property
    def listing_version(self) -> str:
        """The index's bytes: a slice's acceptance depends on the class its row gives (``_index_labels``)."""
        path = self.root / self._index_file
        if not path.is_file():
            return "no-index"
        digest = hashlib.sha256()
        update_with_content(digest, path)  # an unreadable index is rejected when read, named
        return digest.hexdigest()[:12]

    @cached_property
    def _index_labels(self) -> dict[tuple[str, str], set[str]]:
        """The classes ``unzip_filenames.csv`` lists each (patient, scan) under."""
        labels: dict[tuple[str, str], set[str]] = defaultdict(set)
        for row in self._index_rows:
            labels[row["patient_id"].strip(), row["scan_id"].strip()].add(row["label"].strip())
        return dict(labels)

    @cached_property
    def _absent_zips(self) -> dict[str, tuple[int, int]]:
        """Zip parts of the index none of whose scans has a folder here: ``{zip: (scans, slices)}``."""
        # a scan counts as present under any class folder (one filed under another class is a row error)
        present = {tuple(Path(d).relative_to(self.root).parts[1:]) for c in self.class_folders()
                   for d in self.root.glob(f"{c}/*/*") if d.is_dir()}
        scans_of: dict[str, list[tuple[tuple[str, str], str]]] = defaultdict(list)
        for row in self._index_rows:
            scan = (row["patient_id"].strip(), row["scan_id"].strip())
            scans_of[row["zip_file"].strip()].append((scan, row["n_slice"].strip()))
        return {
            zip_file: (len(scans), sum(int(n) for _, n in scans if n.isdigit()))
            for zip_file, scans in scans_of.items()
            if not any(scan in present for scan, _ in scans)
        }

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Rows of ``unzip_filenames.csv`` whose scan is missing, misfiled, or not ``n_slice`` slices."""
        if self._index_file not in files:
            return []
        rows = self._index_rows  # [] for an unreadable index: the file itself is rejected, with the reason
        slices = self._scan_slices(files)
        by_scan = {}
        for scan_dir in slices:
            folder, patient, scan = scan_dir.split("/")
            by_scan.setdefault((patient, scan), []).append(folder)
        records = []
        for n, row in enumerate(rows, start=1):
            if row["zip_file"].strip() in self._absent_zips:
                continue  # a zip part not unpacked here: one warning (layout_warnings), not an error per scan
            where = f"{self._index_file}:row {n}"
            label, patient, scan = (row[c].strip() for c in ("label", "patient_id", "scan_id"))
            scan_dir = f"{label}/{patient}/{scan}"
            expected = row["n_slice"].strip()
            if scan_dir not in slices:
                elsewhere = [f for f in by_scan.get((patient, scan), []) if f != label]
                if elsewhere:
                    reason = (
                        f"label mismatch: scan {patient}/{scan} is filed under {elsewhere[0]}/, the index says {label}"
                        f" (its slices are rejected)"
                    )
                else:
                    reason = f"missing scan: {scan_dir} ({row['zip_file']}, {expected} slices) has no slice files"
                records.append((where, reason))
            elif expected.isdigit() and slices[scan_dir] != int(expected):
                records.append((where, (
                    f"slice count mismatch: {scan_dir} holds {slices[scan_dir]} slice files, n_slice says {expected} "
                    "(the slices present are kept)"
                )))
        return records
