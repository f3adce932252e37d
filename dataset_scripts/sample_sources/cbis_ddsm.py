"""A synthetic sample in CBIS-DDSM's layout: the NBIA tree of DICOMs beside the case-description CSVs.

The DICOMs are pydicom's REAL ``CT_small.dcm`` header relabelled as mammograms (MG, MONOCHROME2, 12-bit) with small
synthetic breast images: malignant cases show a spiculated dense mass, benign ones a round smooth mass. Includes a
patient in the calc training set and the mass test set (a leak), ROI-mask folders, one mammogram JPEG 2000
lossless-compressed and one stored MONOCHROME1, a CSV row whose image folder is missing, a DICOM without pixel data
(pydicom's real ``rtplan.dcm``), a cut DICOM and a stray file.
"""

from __future__ import annotations

import copy
import csv
import zlib
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_cbis_ddsm"]

FOLDER = "cbis_ddsm"
#: (lesion, split, patient, side, view, pathology)
CASES = [
    ("Mass", "Training", "P_00001", "LEFT", "CC", "MALIGNANT"),
    ("Mass", "Training", "P_00001", "LEFT", "MLO", "MALIGNANT"),
    ("Mass", "Training", "P_00002", "RIGHT", "CC", "BENIGN"),
    ("Mass", "Training", "P_00003", "LEFT", "CC", "BENIGN_WITHOUT_CALLBACK"),
    ("Calc", "Training", "P_00004", "RIGHT", "MLO", "MALIGNANT"),
    ("Calc", "Training", "P_00005", "LEFT", "CC", "BENIGN"),  # P_00005 is also in the mass test set: a leak
    ("Calc", "Training", "P_00006", "LEFT", "MLO", "MALIGNANT"),
    ("Mass", "Training", "P_00007", "RIGHT", "CC", "BENIGN"),
    ("Mass", "Training", "P_00008", "LEFT", "MLO", "MALIGNANT"),
    ("Mass", "Test", "P_00005", "RIGHT", "CC", "MALIGNANT"),
    ("Mass", "Test", "P_00009", "LEFT", "CC", "BENIGN"),
    ("Calc", "Test", "P_00010", "RIGHT", "MLO", "MALIGNANT"),
]
#: Full mammograms stored otherwise than uncompressed MONOCHROME2 (readers must handle both; the PNGs agree)
ENCODED = {"P_00007": "jpeg2000_lossless", "P_00008": "monochrome1"}


def _mammogram(malignant: bool, rng: np.random.Generator, shape=(64, 48)) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    breast = ((yy - h / 2) / (h * 0.48)) ** 2 + (xx / (w * 0.9)) ** 2 < 1
    image = breast * (900 + 250 * rng.random(shape))
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.2, 0.5) * w
    r = np.hypot(yy - cy, xx - cx)
    if malignant:
        angle = np.arctan2(yy - cy, xx - cx)
        spikes = 4 + 2.5 * np.cos(7 * angle + rng.uniform(0, 6))
        image += 1800 * (r < spikes)
    else:
        image += 1200 * (r < 4.5)
    return np.clip(image, 0, 4095).astype(np.uint16)


def _dicom(template, pixels: np.ndarray, uid_seed: str, encoding: str = ""):
    from pydicom.uid import JPEG2000Lossless, generate_uid

    ds = copy.deepcopy(template)  # file_meta too: compress() sets its transfer syntax
    ds.Modality = "MG"
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    for tag in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if tag in ds:
            delattr(ds, tag)
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[uid_seed])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if encoding == "monochrome1":  # stored inverted within the 12 stored bits
        ds.PhotometricInterpretation = "MONOCHROME1"
        pixels = (4095 - pixels).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    if encoding == "jpeg2000_lossless":  # a compressed transfer syntax, decoded by pylibjpeg-openjpeg
        ds.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    return ds


def make_cbis_ddsm(root, seed=5) -> Path:
    """Write the sample under ``root`` and return it."""
    import pydicom
    from pydicom.data import get_testdata_file

    root = Path(root)
    tree = root / "CBIS-DDSM"
    rng = np.random.default_rng(seed)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rows = {}
    for lesion, split, patient, side, view, pathology in CASES:
        folder = f"{lesion}-{split}_{patient}_{side}_{view}"
        series = tree / folder / "07-20-2016-DDSM-00001" / "1.000000-full mammogram images-00001"
        series.mkdir(parents=True, exist_ok=True)
        pixels = _mammogram(pathology == "MALIGNANT", rng)
        _dicom(template, pixels, folder, ENCODED.get(patient, "")).save_as(series / "1-1.dcm")
        roi = tree / f"{folder}_1" / "07-20-2016-DDSM-00002" / "1.000000-ROI mask images-00002"
        roi.mkdir(parents=True, exist_ok=True)
        mask = (_mammogram(False, rng) > 2000).astype(np.uint16) * 255
        _dicom(template, mask, folder + "_1").save_as(roi / "1-1.dcm")
        csv_name = f"{lesion.lower()}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
        rows.setdefault(csv_name, []).append({
            "patient_id": patient, "left or right breast": side, "image view": view, "abnormality id": 1,
            "abnormality type": lesion.lower(), "pathology": pathology,
            "image file path": f"{folder}/1.3.6.1.4.1.9590.100.1.2.{zlib.crc32(folder.encode())}/000000.dcm",
        })
    # a row whose image folder was never downloaded
    rows["mass_case_description_test_set.csv"].append({
        "patient_id": "P_00011", "left or right breast": "LEFT", "image view": "CC", "abnormality id": 1,
        "abnormality type": "mass", "pathology": "BENIGN", "image file path": "Mass-Test_P_00011_LEFT_CC/1.2/000000.dcm",
    })
    # a full-mammogram folder holding a DICOM without pixel data, and one whose file is cut
    for folder, data in (
        ("Mass-Training_P_00012_LEFT_CC", Path(get_testdata_file("rtplan.dcm")).read_bytes()),
        ("Mass-Training_P_00013_RIGHT_MLO", (tree / "Mass-Training_P_00002_RIGHT_CC" / "07-20-2016-DDSM-00001" /
                                            "1.000000-full mammogram images-00001" / "1-1.dcm").read_bytes()[:-2000]),
    ):
        series = tree / folder / "07-20-2016-DDSM-00003" / "1.000000-full mammogram images-00003"
        series.mkdir(parents=True, exist_ok=True)
        (series / "1-1.dcm").write_bytes(data)
        rows["mass_case_description_train_set.csv"].append({
            "patient_id": folder.split("_P_")[1][:7], "left or right breast": "LEFT", "image view": "CC",
            "abnormality id": 1, "abnormality type": "mass", "pathology": "BENIGN",
            "image file path": f"{folder}/1.2/000000.dcm",
        })
    (tree / "LICENSE.txt").write_text("see the TCIA page\n")
    # the NBIA Data Retriever's list of the series it downloaded, beside the tree
    (root / "metadata.csv").write_text(
        "Series UID,Collection,Subject ID,Study UID,Study Description,Series Description,Number of Images,"
        "File Location\n1.3.6.1.4.1.9590.100.1.2.1,CBIS-DDSM,Mass-Training_P_00001_LEFT_CC,1.3.6.1.4.1.9590.100.1.2.2,"
        "DDSM,full mammogram images,1,./CBIS-DDSM/Mass-Training_P_00001_LEFT_CC\n")
    for name, items in rows.items():
        with (root / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(items[0]))
            writer.writeheader()
            writer.writerows(items)
    write_provenance(root, "generated by dataset_scripts/sample_sources/cbis_ddsm.py from pydicom's real CT_small.dcm "
                     "header relabelled as MG, with synthetic images (not real mammograms)")
    return root


make = make_cbis_ddsm
