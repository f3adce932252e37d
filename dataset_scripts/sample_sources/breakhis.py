"""A synthetic sample in BreakHis v1's layout: ``histology_slides/breast/{benign,malignant}/SOB/<subtype>/``
``SOB_B_A_14-22549AB/{40X,100X,200X,400X}/SOB_B_A-14-22549AB-40-001.png``.

Class-dependent signal on H&E-like RGB tiles (pink stroma, purple nuclei): malignant tiles have denser, larger,
darker and irregular nuclei; each subtype arranges them its own way (gland rings, streaks, single files, mucin
pools, fronds); higher magnification shows fewer, larger nuclei. As in the real set, one patient number has two
slide-letter folders (14-22549AB, 14-22549G) and one patient (14-13412) is filed under two subtypes with a
copied image (a label conflict). Bad inputs: file names whose magnification, class letter or subtype letters
disagree with their folders, a damaged PNG, a ``Thumbs.db`` and a README (ignored, named).

``archive="kaggle"`` writes the tree as the Kaggle mirror holds it: inside ``BreaKHis_v1/BreaKHis_v1/`` with the
community ``Folds.csv`` (fold, mag, grp, filename) at the top.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import bad_jpeg_files, blob, smooth_noise, write_provenance
from dataset_scripts.sample_sources._fundus import encode

__all__ = ["FOLDER", "make", "make_breakhis", "PATIENTS"]

FOLDER = "BreaKHis_v1"
BASE = Path("histology_slides", "breast")
LETTERS = {
    "adenosis": "A", "fibroadenoma": "F", "phyllodes_tumor": "PT", "tubular_adenoma": "TA",
    "ductal_carcinoma": "DC", "lobular_carcinoma": "LC", "mucinous_carcinoma": "MC", "papillary_carcinoma": "PC",
}
BENIGN = ("adenosis", "fibroadenoma", "phyllodes_tumor", "tubular_adenoma")
#: (subtype, patient id as in the folder name), after the real release's folders.
PATIENTS = (
    ("adenosis", "14-22549AB"), ("adenosis", "14-22549G"), ("fibroadenoma", "14-21998CD"),
    ("fibroadenoma", "14-25197"), ("phyllodes_tumor", "14-22704"), ("tubular_adenoma", "14-16184"),
    ("tubular_adenoma", "14-3411F"), ("ductal_carcinoma", "14-2523"), ("ductal_carcinoma", "14-13412"),
    ("lobular_carcinoma", "14-13412"), ("lobular_carcinoma", "14-15570"), ("mucinous_carcinoma", "14-12312"),
    ("mucinous_carcinoma", "14-19979"), ("papillary_carcinoma", "14-9146"), ("papillary_carcinoma", "14-12773"),
)
MAGNIFICATIONS = (40, 100, 200, 400)


def tile(subtype: str, magnification: int, rng: np.random.Generator, shape=(46, 70)) -> np.ndarray:
    """An RGB histology tile (H x W x 3) of ``subtype`` at ``magnification``."""
    h, w = shape
    malignant = subtype not in BENIGN
    stroma = 0.85 + 0.12 * smooth_noise(shape, rng, scale=6)
    rgb = np.stack([0.93 * stroma, 0.62 * stroma, 0.78 * stroma], axis=-1)
    zoom = {40: 0.6, 100: 0.8, 200: 1.1, 400: 1.5}[magnification]
    yy, xx = np.mgrid[:h, :w]
    if subtype == "mucinous_carcinoma":  # pale mucin pools
        rgb += 0.2 * blob(shape, (h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)), (h / 3, w / 4), rng)[..., None]
    if subtype in ("adenosis", "tubular_adenoma"):  # gland rings / tubules
        ring = np.abs(np.sin(xx / (3 + 2 * zoom) + rng.uniform(0, 6)) * np.sin(yy / (3 + 2 * zoom))) > 0.8
        rgb[ring] *= np.array([0.8, 0.6, 0.9])
    if subtype in ("fibroadenoma", "phyllodes_tumor"):  # stromal streaks
        streak = np.sin((xx + yy * rng.uniform(-0.5, 0.5)) / (1.5 + zoom)) > 0.7
        rgb[streak] *= np.array([1.0, 0.8, 0.85])
    n = int((60 if malignant else 25) / zoom ** 1.5)
    size = (1.6 if malignant else 1.0) * zoom
    for k in range(n):
        if subtype == "lobular_carcinoma":  # single files
            y, x = h * (0.2 + 0.6 * (k % 3) / 2) + rng.normal(0, 1), rng.uniform(0, w)
        elif subtype == "papillary_carcinoma":  # fronds
            t = rng.uniform(0, 1)
            y, x = h * (0.5 + 0.35 * np.sin(6 * t)), w * t
        else:
            y, x = rng.uniform(0, h), rng.uniform(0, w)
        radius = size * rng.uniform(0.8, 1.6 if malignant else 1.1)
        stretch = rng.uniform(0.6, 1.6) if malignant else rng.uniform(0.85, 1.15)
        nucleus = blob(shape, (y, x), (radius, radius * stretch))
        dark = np.array([0.35, 0.15, 0.45]) if malignant else np.array([0.5, 0.3, 0.6])
        rgb = rgb * (1 - nucleus[..., None]) + nucleus[..., None] * dark
    return np.clip(rgb + 0.02 * rng.standard_normal((*shape, 3)), 0, 1)


def _folder(root: Path, subtype: str, patient: str, magnification: int) -> Path:
    cls = "benign" if subtype in BENIGN else "malignant"
    folder_name = f"SOB_{cls[0].upper()}_{LETTERS[subtype]}_{patient}"
    return root / BASE / cls / "SOB" / subtype / folder_name / f"{magnification}X"


def _name(subtype: str, patient: str, magnification: int, seq: int, cls_letter=None, letters=None) -> str:
    cls_letter = cls_letter or ("B" if subtype in BENIGN else "M")
    return f"SOB_{cls_letter}_{letters or LETTERS[subtype]}-{patient}-{magnification}-{seq:03d}.png"


def make_breakhis(root, *, seed=11, bad_files=True, archive=None) -> Path:
    """Write the sample under ``root`` (one image per patient folder and magnification) and return it;
    ``archive="kaggle"``: inside the Kaggle mirror's folders, with its ``Folds.csv``."""
    if archive == "kaggle":
        root = Path(root)
        tree = make_breakhis(root / "BreaKHis_v1" / "BreaKHis_v1", seed=seed, bad_files=bad_files)
        (tree / "MULTIMED_SOURCE.json").rename(root / "MULTIMED_SOURCE.json")
        rows = [f"{fold},{mag},train,{p.relative_to(root).as_posix()}" for fold in (1,)
                for mag in MAGNIFICATIONS for p in sorted(tree.rglob(f"*-{mag}-*.png"))]
        (root / "Folds.csv").write_text("fold,mag,grp,filename\n" + "\n".join(rows) + "\n")
        return root
    if archive is not None:
        raise ValueError(f"archive {archive!r}: expected None or 'kaggle'")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for subtype, patient in PATIENTS:
        for magnification in MAGNIFICATIONS:
            folder = _folder(root, subtype, patient, magnification)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / _name(subtype, patient, magnification, 1)).write_bytes(encode(tile(subtype, magnification, rng)))
    if bad_files:
        # patient 14-13412 under DC and LC with the same image: a label conflict (both copies rejected)
        dc = _folder(root, "ductal_carcinoma", "14-13412", 100) / _name("ductal_carcinoma", "14-13412", 100, 1)
        lc = _folder(root, "lobular_carcinoma", "14-13412", 100)
        (lc / _name("lobular_carcinoma", "14-13412", 100, 2)).write_bytes(dc.read_bytes())
        folder = _folder(root, "adenosis", "14-22549AB", 40)
        # a 100X image filed under 40X; a malignant name in a benign folder; another subtype's letters
        (folder / _name("adenosis", "14-22549AB", 100, 2)).write_bytes(encode(tile("adenosis", 100, rng)))
        (folder / _name("adenosis", "14-22549AB", 40, 3, cls_letter="M")).write_bytes(encode(tile("adenosis", 40, rng)))
        (folder / _name("adenosis", "14-22549AB", 40, 4, letters="F")).write_bytes(encode(tile("adenosis", 40, rng)))
        good = (folder / _name("adenosis", "14-22549AB", 40, 1)).read_bytes()
        (folder / _name("adenosis", "14-22549AB", 40, 5)).write_bytes(bad_jpeg_files(good)["half_cut"])
        (folder / "Thumbs.db").write_bytes(b"\x00" * 64)
        (root / BASE / "benign" / "SOB" / "README.txt").write_text("BreakHis benign tumours\n")
    write_provenance(root, "generated by dataset_scripts/sample_sources/breakhis.py (not real histopathology)")
    return root


make = make_breakhis
