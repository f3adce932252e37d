"""A synthetic sample in the Kaggle mirror's layout of the RSNA Pediatric Bone Age Challenge:
``boneage-training-dataset.csv`` (id, boneage, male) + ``boneage-training-dataset/boneage-training-dataset/<id>.png``
and ``boneage-test-dataset.csv`` (Case ID, Sex: no ages) + ``boneage-test-dataset/boneage-test-dataset/<id>.png``.

Class-dependent signal on grey hand radiographs: with age the hand grows, the finger bones lengthen, the growth
plates (dark gaps at the joints) close and more carpal bones appear. Bad inputs: a row whose image is missing, an
image with no row, a bone age that is not a number, a sex that is not True/False, and damaged PNGs; the test
images have no ages (reported as unlabelled).

``layout="rsna"`` writes the challenge's own release instead: ``Bone Age Training Set/train.csv`` +
``boneage-training-dataset/``, ``Bone Age Validation Set/Validation Dataset.csv`` + ``boneage-validation-dataset-1/``
and ``-2/``, and ``Bone Age Test Set/Test Set Images/`` + ``Bone age ground truth.xlsx``; ``layout="box"`` the same
release as a download of its folders from the Stanford AIMI Box share unpacks: ``Bone+Age+Training+Set/`` with the
images, ``Bone+Age+Training+Set+Annotations/train.csv`` apart, ``Bone+Age+Validation+Set/Bone Age Validation Set/``
and ``Bone+Age+Test+Set/Test+Set+Images/`` (the paths public loaders of the release read). ``sheets="xlsx"`` writes
the Kaggle layout's two sheets as Excel workbooks (``boneage-training-dataset.xlsx``, ``boneage-test-dataset.xlsx``).
Excel sheets are written with openpyxl (the ``tables`` extra).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from dataset_scripts.sample_sources._draw import bad_jpeg_files, blob, smooth_noise, write_provenance
from dataset_scripts.sample_sources._fundus import encode

__all__ = ["FOLDER", "make", "make_rsna_bone_age", "hand"]

FOLDER = "rsna-bone-age"
TRAIN = "boneage-training-dataset"
TEST = "boneage-test-dataset"


def hand(months: float, rng: np.random.Generator, shape=(96, 80)) -> np.ndarray:
    """A grey hand radiograph of a child of bone age ``months``."""
    h, w = shape
    maturity = np.clip(months / 228, 0, 1)
    scale = 0.75 + 0.25 * maturity
    yy, xx = np.mgrid[:h, :w]
    gy, gx = rng.uniform(-0.25, 0.25, 2)  # exposure gradient: differs per radiograph
    image = 0.12 + 0.1 * (1 + smooth_noise(shape, rng, scale=max(3, h // 8))) + gy * yy / h + gx * xx / w
    cx = w * rng.uniform(0.36, 0.64)
    wrist = h * rng.uniform(0.74, 0.9)
    palm_h, palm_w = 0.2 * h * scale, 0.24 * w * scale
    palm_y = wrist - palm_h
    image += 0.35 * blob(shape, (palm_y, cx), (palm_h, palm_w))
    image += 0.3 * blob(shape, (wrist + 0.1 * h, cx), (0.12 * h, 0.13 * w))  # forearm
    for k in range(int(round(1 + 6 * maturity))):  # carpal bones appear with age
        image += 0.35 * blob(shape, (palm_y + 0.6 * palm_h, cx + (k - 3) * 0.06 * w), (2.2, 2.2))
    plate = 0.35 * (1 - maturity)  # growth-plate gap, closing with age
    tilt = rng.uniform(-0.12, 0.12)
    for f in range(5):
        angle = tilt + (f - 2) * 0.22 + (0.5 if f == 0 else 0)
        base_x = cx + (f - 2) * 0.09 * w
        length = (0.18 + 0.04 * (f in (1, 2, 3))) * h * scale
        for s, seg in enumerate((0.45, 0.3, 0.25)):
            start = palm_y - palm_h * 0.6 - sum((0.45, 0.3, 0.25)[:s]) * length
            seg_len = seg * length * (1 - plate * 0.4)
            cy = start - seg_len / 2
            x = base_x + np.sin(angle) * (palm_y - cy) * 0.6
            bone = ((np.abs(xx - x) < 1.6 * scale + 0.8) & (np.abs(yy - cy) < seg_len / 2)).astype(np.float32)
            image += 0.45 * bone
    image += 0.03 * rng.standard_normal(shape)
    image = np.clip(image - min(0.0, image.min()), 0, 1)
    turned = Image.fromarray((image * 255).astype(np.uint8)).rotate(
        rng.uniform(-20, 20), resample=Image.BILINEAR, fillcolor=int(np.median(image) * 255)
    )
    return np.asarray(turned, dtype=np.float32) / 255


def _write_csv(path: Path, header, rows) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def write_xlsx(path: Path, rows) -> None:
    """An Excel workbook of one worksheet holding ``rows`` (the first is the header), written with openpyxl (the
    ``tables`` extra); ``"True"``/``"False"`` become Excel booleans, as a spreadsheet saves them."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append([{"True": True, "False": False}.get(v, v) if isinstance(v, str) else v for v in row])
    book.save(path)


def _write_sheet(path: Path, header, rows, sheets: str) -> Path:
    """``path`` (a ``.csv`` name) as CSV, or beside it as ``.xlsx`` where ``sheets`` is ``"xlsx"``."""
    if sheets == "xlsx":
        write_xlsx(path.with_suffix(".xlsx"), [header, *rows])
        return path.with_suffix(".xlsx")
    _write_csv(path, header, rows)
    return path


#: Where each part of the challenge's release sits: ``"rsna"`` as its folders are named; ``"box"`` as a download of
#: those folders from the Stanford AIMI Box share unpacks (``+`` for spaces, the annotations apart from the training
#: images, the validation folder inside a folder of its own), as public loaders read them.
RELEASE_FOLDERS = {
    "rsna": {
        "train_images": "Bone Age Training Set", "train_sheet": "Bone Age Training Set",
        "validation": "Bone Age Validation Set", "test": "Bone Age Test Set", "test_images": "Test Set Images",
    },
    "box": {
        "train_images": "Bone+Age+Training+Set", "train_sheet": "Bone+Age+Training+Set+Annotations",
        "validation": "Bone+Age+Validation+Set/Bone Age Validation Set", "test": "Bone+Age+Test+Set",
        "test_images": "Test+Set+Images",
    },
}


def _make_rsna_release(root: Path, rng, n_train: int, n_test: int, layout: str = "rsna") -> Path:
    """The challenge's own folders and sheets (training, two validation image folders, the Excel test truth)."""
    folders = RELEASE_FOLDERS[layout]
    train = root / folders["train_images"]
    val = root / folders["validation"]
    test = root / folders["test"]
    rows, val_rows, test_rows = [], [], []
    for i, months in enumerate(np.linspace(6, 216, n_train)):
        (train / TRAIN).mkdir(parents=True, exist_ok=True)
        (train / TRAIN / f"{1377 + i}.png").write_bytes(encode(hand(months, rng)))
        rows.append([1377 + i, int(round(months)), str(bool(i % 2))])
    for i, months in enumerate((30, 150)):
        folder = val / f"boneage-validation-dataset-{i + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{1386 + 6 * i}.png").write_bytes(encode(hand(months, rng)))
        val_rows.append([1386 + 6 * i, "TRUE" if i else "FALSE", float(months)])
    (test / folders["test_images"]).mkdir(parents=True)
    for i in range(n_test):
        (test / folders["test_images"] / f"{4360 + i}.png").write_bytes(encode(hand(100 + 20 * i, rng)))
        test_rows.append([4360 + i, "M" if i % 2 else "F", 100.0 + 20 * i])
    (root / folders["train_sheet"]).mkdir(parents=True, exist_ok=True)
    _write_csv(root / folders["train_sheet"] / "train.csv", ["id", "boneage", "male"], rows)
    _write_csv(val / "Validation Dataset.csv", ["Image ID", "male", "Bone Age (months)"], val_rows)
    write_xlsx(test / "Bone age ground truth.xlsx", [["Case ID", "Sex", "Ground truth bone age (months)"], *test_rows])
    write_provenance(root, "generated by dataset_scripts/sample_sources/rsna_bone_age.py, RSNA release (not real)")
    return root


def make_rsna_bone_age(
    root, *, n_train=24, n_test=3, seed=7, bad_files=True, layout="kaggle", sheets="csv"
) -> Path:
    """Write the sample under ``root`` and return it (``layout``: ``"kaggle"``, ``"rsna"``, the challenge's, or
    ``"box"``, the challenge's as its Box share downloads; ``sheets``: ``"csv"``, or ``"xlsx"`` for the Kaggle
    layout's two sheets as Excel workbooks)."""
    if sheets not in ("csv", "xlsx"):
        raise ValueError(f"sheets {sheets!r}: expected 'csv' or 'xlsx'")
    root = Path(root)
    rng = np.random.default_rng(seed)
    if layout in RELEASE_FOLDERS:
        return _make_rsna_release(root, rng, n_train, n_test, layout)
    if layout != "kaggle":
        raise ValueError(f"layout {layout!r}: expected 'kaggle', 'rsna' or 'box'")
    train_dir = root / TRAIN / TRAIN
    test_dir = root / TEST / TEST
    train_dir.mkdir(parents=True, exist_ok=True)
    test_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    ids = iter(range(1377, 100000, 7))
    ages = np.linspace(6, 216, n_train)  # every bin of the registry's binning gets some
    rng.shuffle(ages)
    for months in ages:
        image_id = next(ids)
        months = int(round(months))
        (train_dir / f"{image_id}.png").write_bytes(encode(hand(months, rng)))
        rows.append([image_id, months, str(bool(rng.integers(2)))])
    test_rows = []
    for image_id in range(4360, 4360 + n_test):
        (test_dir / f"{image_id}.png").write_bytes(encode(hand(rng.uniform(6, 216), rng)))
        test_rows.append([image_id, "M" if rng.integers(2) else "F"])
    if bad_files:
        rows.append([15600, 120, "False"])  # a row whose image is missing
        (train_dir / "15601.png").write_bytes(encode(hand(100, rng)))  # an image with no row
        rows.append([15602, "unknown", "True"])  # a bone age that is not a number
        (train_dir / "15602.png").write_bytes(encode(hand(150, rng)))
        rows.append([15603, 84, "maybe"])  # a sex that is not True/False
        (train_dir / "15603.png").write_bytes(encode(hand(84, rng)))
        good = (train_dir / f"{rows[0][0]}.png").read_bytes()
        for image_id, data in zip((15604, 15605, 15606), bad_jpeg_files(good).values()):
            rows.append([image_id, 60, "True"])
            (train_dir / f"{image_id}.png").write_bytes(data)
    _write_sheet(root / f"{TRAIN}.csv", ["id", "boneage", "male"], rows, sheets)
    _write_sheet(root / f"{TEST}.csv", ["Case ID", "Sex"], test_rows, sheets)
    write_provenance(root, "generated by dataset_scripts/sample_sources/rsna_bone_age.py (not real radiographs)")
    return root


make = make_rsna_bone_age
