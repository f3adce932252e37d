"""A synthetic sample in CC-CCII's unpacked layout (``{NCP,CP,Normal}/<patient_id>/<scan_id>/0000.png``).

Slices are lung-window grey images of a synthetic chest: NCP bilateral peripheral ground glass, CP one-sided
consolidation, Normal clear lungs. ``unzip_filenames.csv`` lists the scans, with a scan whose zip never unpacked
(``NCP-13.zip`` is reported broken), a wrong ``n_slice`` and a scan filed under another class than its row says.
Slices come in every format the real release mixes (``lesions_slices.csv`` lists ``.png``, ``.jpg``, ``.JPG``,
``.bmp`` and ``.BMP``). Also: a patient id under two class folders, a slice copied into a scan of another class (a
label conflict), a slice under a name that is not a number (kept, noted), a ``Thumbs.db``, damaged and stray files.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from dataset_scripts.sample_sources._chest import chest_slice_hu
from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_cc_ccii", "SCANS"]

FOLDER = "CC-CCII"

#: class -> patient id -> scan ids (scan ids are numbered across the release, as the publisher's are)
SCANS = {
    "NCP": {"1": ("1801",), "2": ("1802", "1803"), "3": ("1804",), "4": ("1805",)},
    "CP": {"5": ("3101",), "6": ("3102",), "7": ("3103",), "9": ("3104",), "16": ("3105",)},
    "Normal": {"7": ("4001",), "8": ("4002",), "10": ("4003",), "13": ("4004",), "24": ("4005",)},
}
SLICES = 3
#: Scans written in the release's other formats: scan id -> (Pillow format, file suffix).
FORMATS = {"1805": ("BMP", "BMP"), "3105": ("BMP", "bmp"), "4003": ("JPEG", "JPG")}
#: A slice whose name is not a number: kept with a note, its slice index the name's last number.
NAME_VARIANT = "Normal/10/4003/IMG-0007.jpg"


def _slice(label: str, rng: np.random.Generator, z: int, size=64) -> np.ndarray:
    level = 0.75 + 0.25 * np.sin(np.pi * (z + 1) / (SLICES + 1))
    if label == "NCP":
        hu = chest_slice_hu((size, size), rng, level=level, ggo=0.35, peripheral=True)
    elif label == "CP":
        hu = chest_slice_hu((size, size), rng, level=level, consolidation=0.4, sides=(int(rng.choice([-1, 1])),))
    else:
        hu = chest_slice_hu((size, size), rng, level=level)
    return np.clip(np.rint((hu + 1350) / 1500 * 255), 0, 255).astype(np.uint8)


def _encode(grey: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey, mode="L").save(buffer, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def make_cc_ccii(root, *, seed=11, bad_files=True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    rows = []
    for label, patients in SCANS.items():
        for n, (patient, scans) in enumerate(patients.items(), start=1):
            for scan in scans:
                folder = root / label / patient / scan
                folder.mkdir(parents=True, exist_ok=True)
                fmt, suffix = ("JPEG", "jpg") if scan.endswith("2") else ("PNG", "png")  # the release mixes both
                fmt, suffix = FORMATS.get(scan, (fmt, suffix))
                for z in range(SLICES):
                    (folder / f"{z:04d}.{suffix}").write_bytes(_encode(_slice(label, rng, z), fmt))
                rows.append([f"{label}-{n}.zip", label, patient, scan, SLICES])
    lesions = [f"NCP/{p}/{s}/{z:04d}.png" for p, scans in SCANS["NCP"].items() for s in scans for z in range(SLICES)]
    if bad_files:
        rows.append(["NCP-13.zip", "NCP", "14", "1806", 40])  # its zip is reported broken: no folder
        rows[3][4] = SLICES + 2  # NCP/3/1804: n_slice says 5, the folder holds 3
        rows[-2][1] = "CP"  # Normal/24/4005 is listed as CP
        # damaged slices (in place of good ones), a slice that is not a number, stray files
        good = (root / "CP" / "5" / "3101" / "0002.png").read_bytes()
        (root / "CP" / "5" / "3101" / "0002.png").write_bytes(good[: len(good) // 2])
        (root / "CP" / "6" / "3102" / "0002.jpg").write_bytes(b"")
        (root / NAME_VARIANT).write_bytes(_encode(_slice("Normal", rng, 1), "JPEG"))
        next(row for row in rows if row[3] == NAME_VARIANT.split("/")[2])[4] += 1  # the index counts it
        (root / "Normal" / "8" / "4002" / "Thumbs.db").write_bytes(b"\x00" * 64)
        (root / "NCP" / "2" / "notes.txt").write_text("second scan after 5 days\n")
        # a slice of an NCP scan copied into a CP scan: identical content, two labels
        copied = (root / "NCP" / "3" / "1804" / "0001.png").read_bytes()
        (root / "CP" / "9" / "3104" / "0002.png").write_bytes(copied)
    with (root / "unzip_filenames.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["zip_file", "label", "patient_id", "scan_id", "n_slice"])
        writer.writerows(rows)
    (root / "lesions_slices.csv").write_text("imgpath\n" + "\n".join(lesions) + "\n")
    write_provenance(
        root, "generated by dataset_scripts/sample_sources/cc_ccii.py (synthetic chest slices, not real CT)"
    )
    return root


make = make_cc_ccii
