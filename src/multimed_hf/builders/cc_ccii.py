"""CC-CCII (CNCB 2019nCoVR): ``{NCP,CP,Normal}/<patient_id>/<scan_id>/<slice>.png|jpg`` plus index CSVs.

Each slice image is a sample, with its scan as the volume and its number as the slice index; the publisher's
images are already windowed, so the window is unknown (None). ``unzip_filenames.csv`` (zip_file, label,
patient_id, scan_id, n_slice), where present, is checked against the folders: a scan it lists that is missing,
filed under another class, or holding another number of slices than ``n_slice`` is reported in the manifest.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path, PurePosixPath

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["CCCCIIBuilder", "INDEX_FILE"]

INDEX_FILE = "unzip_filenames.csv"
#: The publisher's CSVs beside the class folders, and the columns each must have.
_INDEXES = {
    INDEX_FILE: ("zip_file", "label", "patient_id", "scan_id", "n_slice"),
    "lesions_slices.csv": (),
    "metadata.csv": (),
}
_SLICE = re.compile(r"^(\d+)\.(png|jpe?g)$", re.IGNORECASE)


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
        return list(reader)
    except csv.Error as err:
        raise BadSourceFile(f"{name}: {err}") from None


class CCCCIIBuilder(ImageFolderBuilder):
    task = "radiographic_findings"
    source = "cc_ccii"
    image_suffixes = (".png", ".jpg", ".jpeg")

    @classmethod
    def detect(cls, root: Path) -> bool:
        """A class folder holding <patient_id>/<scan_id>/ folders."""
        for name in cls.spec().label_map["finding"]:
            if (root / name).is_dir():
                patients = (p for p in (root / name).iterdir() if p.is_dir())
                if any(any(s.is_dir() for s in p.iterdir()) for p in patients):
                    return True
        return False

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath in _INDEXES:
            rows = _read_csv((self.root / relpath).read_bytes(), relpath, _INDEXES[relpath])
            if relpath == INDEX_FILE:
                for n, row in enumerate(rows, start=1):
                    if not (row["n_slice"] or "").strip().isdigit():
                        raise BadSourceFile(f"{relpath}: row {n}: n_slice {row['n_slice']!r} is not a count")
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
        match = _SLICE.match(name)
        if match is None:
            raise BadSourceFile(f"slice file name {name!r} is not <slice number>.png|jpg")
        return PathInfo(
            sample_id=f"{folder}/{patient}/{scan}/{match.group(1)}",
            labels={"finding": folder},
            # ids are grouped across class folders: nothing shows they are per-class, and grouping two people
            # together costs only split balance, while splitting one person costs a leak
            group_key=f"patient:{patient}",
            fields={
                "patient_id": patient, "volume_id": f"{folder}/{patient}/{scan}", "slice_index": int(match.group(1)),
            },
        )

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """Rows of ``unzip_filenames.csv`` whose scan is missing, misfiled, or not ``n_slice`` slices."""
        if INDEX_FILE not in files:
            return []
        try:
            rows = _read_csv((self.root / INDEX_FILE).read_bytes(), INDEX_FILE, _INDEXES[INDEX_FILE])
        except BadSourceFile:
            return []  # the index file itself is rejected, with this reason
        slices: Counter[str] = Counter()
        for path in files:
            parts = PurePosixPath(path).parts
            if len(parts) == 4 and _SLICE.match(parts[3]):
                slices["/".join(parts[:3])] += 1
        by_scan = {}
        for scan_dir in slices:
            folder, patient, scan = scan_dir.split("/")
            by_scan.setdefault((patient, scan), []).append(folder)
        records = []
        for n, row in enumerate(rows, start=1):
            where = f"{INDEX_FILE}:row {n}"
            label, patient, scan = (row[c].strip() for c in ("label", "patient_id", "scan_id"))
            scan_dir = f"{label}/{patient}/{scan}"
            expected = row["n_slice"].strip()
            if scan_dir not in slices:
                elsewhere = [f for f in by_scan.get((patient, scan), []) if f != label]
                if elsewhere:
                    reason = (
                        f"label mismatch: scan {patient}/{scan} is filed under {elsewhere[0]}/, the index says {label}"
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
