"""A synthetic sample in the Kaggle layout of Kermany's pediatric chest X-rays (``chest_xray/{train,val,test}/...``).

Class-dependent signal on small grey radiographs: bacterial pneumonia a dense lobar opacity in one lung, viral
pneumonia a diffuse streaky pattern in both, normal clear lungs. File names follow the release
(``personN_bacteria_M.jpeg``, ``personN_virus_M.jpeg``, ``IM-XXXX-YYYY.jpeg``, ``NORMAL2-IM-XXXX-YYYY.jpeg``, and the
real train set's ``IM-XXXX-0001-000N.jpeg``), plus one normal image under a name no release uses (kept, noted).
Includes Kaggle's small ``val/``, a test patient with training images (the leak the split repair drops), a file
whose name and folder disagree, damaged files, the archive's nested copy and macOS metadata, and stray files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import bad_jpeg_files, blob, smooth_noise, to_jpeg, write_provenance

__all__ = ["FOLDER", "make", "make_kermany_cxr", "FILES", "UNKNOWN_NORMAL"]

FOLDER = "chest_xray"
#: A valid normal image under a name no release uses: kept (its folder says normal), noted in the manifest.
UNKNOWN_NORMAL = "scan_0042.jpeg"

#: split -> folder -> (file name, drawn class); person numbers and image counters as the release spreads them
FILES = {
    "train": {
        "NORMAL": [
            ("IM-0115-0001.jpeg", "normal"), ("IM-0117-0001.jpeg", "normal"), ("IM-0119-0001.jpeg", "normal"),
            ("IM-0122-0001.jpeg", "normal"), ("IM-0125-0001.jpeg", "normal"), ("IM-0125-0002.jpeg", "normal"),
            ("NORMAL2-IM-0427-0001.jpeg", "normal"), ("NORMAL2-IM-0429-0001.jpeg", "normal"),
            # the real train/NORMAL's third naming (133 files): IM-XXXX-0001-000N
            ("IM-0505-0001-0001.jpeg", "normal"), ("IM-0505-0001-0002.jpeg", "normal"),
        ],
        "PNEUMONIA": [
            ("person1_bacteria_1.jpeg", "bacteria"), ("person1_bacteria_2.jpeg", "bacteria"),
            ("person3_bacteria_10.jpeg", "bacteria"), ("person7_bacteria_24.jpeg", "bacteria"),
            ("person10_bacteria_43.jpeg", "bacteria"), ("person10_bacteria_44.jpeg", "bacteria"),
            ("person12_bacteria_46.jpeg", "bacteria"),
            ("person20_virus_51.jpeg", "virus"), ("person21_virus_52.jpeg", "virus"),
            ("person21_virus_53.jpeg", "virus"), ("person24_virus_57.jpeg", "virus"),
            ("person26_virus_60.jpeg", "virus"), ("person28_virus_62.jpeg", "virus"),
        ],
    },
    "val": {
        "NORMAL": [("NORMAL2-IM-1427-0001.jpeg", "normal"), ("NORMAL2-IM-1430-0001.jpeg", "normal")],
        "PNEUMONIA": [("person1946_bacteria_4874.jpeg", "bacteria"), ("person1950_bacteria_4881.jpeg", "bacteria")],
    },
    "test": {
        "NORMAL": [
            ("IM-0001-0001.jpeg", "normal"), ("IM-0003-0001.jpeg", "normal"), ("NORMAL2-IM-0007-0001.jpeg", "normal"),
        ],
        "PNEUMONIA": [
            ("person100_bacteria_475.jpeg", "bacteria"), ("person100_bacteria_477.jpeg", "bacteria"),
            ("person101_bacteria_484.jpeg", "bacteria"),
            ("person1610_virus_2793.jpeg", "virus"), ("person1613_virus_2799.jpeg", "virus"),
        ],
    },
}


def _radiograph(label: str, rng: np.random.Generator, shape=(96, 112)) -> np.ndarray:
    h, w = shape
    cy, cx = h * rng.uniform(0.48, 0.6), w * rng.uniform(0.42, 0.58)  # children are not centred alike
    body = blob(shape, (cy, cx), (h * rng.uniform(0.45, 0.6), w * rng.uniform(0.38, 0.5))) * 0.55
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    tilt = rng.uniform(-0.25, 0.25) * (yy - 0.5) + rng.uniform(-0.25, 0.25) * (xx - 0.5)  # exposure gradient
    image = 0.12 + tilt + body * (1 + 0.3 * smooth_noise(shape, rng, scale=6))
    lungs = []
    for side in (-1, 1):
        radius = (h * rng.uniform(0.26, 0.36), w * rng.uniform(0.12, 0.18))
        lung = blob(shape, (cy - h * 0.05, cx + side * w * rng.uniform(0.16, 0.24)), radius, rng)
        lungs.append(lung)
        image -= rng.uniform(0.3, 0.45) * lung
    ribs = 0.06 * (np.sin(np.arange(h)[:, None] / h * rng.uniform(18, 26) * np.pi) > 0.6)
    image += ribs * (lungs[0] + lungs[1])
    image += 0.5 * blob(shape, (cy - h * 0.05, cx), (h * 0.38, w * rng.uniform(0.05, 0.09)))  # mediastinum
    if label == "bacteria":  # a dense lobar consolidation in one lung
        side = rng.choice([-1, 1])
        centre = (h * rng.uniform(0.35, 0.65), cx + side * w * 0.2)
        image += 0.45 * blob(shape, centre, (h * rng.uniform(0.08, 0.14), w * rng.uniform(0.06, 0.1)), rng)
    elif label == "virus":  # diffuse streaky opacities in both lungs
        streaks = np.clip(smooth_noise(shape, rng, scale=3), 0, 1)
        image += 0.3 * streaks * (lungs[0] + lungs[1])
    return np.clip(image + 0.03 * rng.standard_normal(shape), 0, 1)


def make_kermany_cxr(root, *, seed=3, bad_files=True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, folders in FILES.items():
        for folder, files in folders.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for name, label in files:
                (root / split / folder / name).write_bytes(to_jpeg(_radiograph(label, rng)))
    if bad_files:
        train_p = root / "train" / "PNEUMONIA"
        # a test patient (person101) with training images: the published test set stays, these are dropped
        for name in ("person101_bacteria_480.jpeg", "person101_bacteria_481.jpeg"):
            (train_p / name).write_bytes(to_jpeg(_radiograph("bacteria", rng)))
        # a pneumonia file name in the NORMAL folder, an unknown naming, damaged files
        (root / "train" / "NORMAL" / "person30_virus_69.jpeg").write_bytes(to_jpeg(_radiograph("virus", rng)))
        (train_p / "pneumonia_case_12.jpeg").write_bytes(to_jpeg(_radiograph("bacteria", rng)))
        (root / "train" / "NORMAL" / UNKNOWN_NORMAL).write_bytes(to_jpeg(_radiograph("normal", rng)))
        good = (train_p / "person3_bacteria_10.jpeg").read_bytes()
        for (kind, data), name in zip(bad_jpeg_files(good).items(), ("person31_bacteria_70.jpeg",
                                                                      "person32_bacteria_71.jpeg",
                                                                      "person33_bacteria_72.jpeg")):
            (train_p / name).write_bytes(data)
        # the Kaggle archive's nested copy of the release and its macOS metadata, an OS file
        nested = root / "chest_xray" / "train" / "NORMAL"
        nested.mkdir(parents=True, exist_ok=True)
        (nested / "IM-0115-0001.jpeg").write_bytes((root / "train" / "NORMAL" / "IM-0115-0001.jpeg").read_bytes())
        (root / "__MACOSX" / "train" / "NORMAL").mkdir(parents=True, exist_ok=True)
        (root / "__MACOSX" / "train" / "NORMAL" / "._IM-0115-0001.jpeg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
        (root / "train" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_provenance(root, "generated by dataset_scripts/sample_sources/kermany_cxr.py (not real X-rays)")
    return root


make = make_kermany_cxr
