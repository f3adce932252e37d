"""A synthetic sample of user CT data as DICOM series (``<patient>/<study>/<series>/IMnnnn.dcm`` + ``labels.csv``).

Every slice is pydicom's REAL ``CT_small.dcm`` (GE HiSpeed CT/i, rescale intercept -1024) with new UIDs, patient,
position and pixel data: a synthetic chest in Hounsfield units (normal clear lungs, NCP peripheral ground glass,
CP one-sided consolidation, viral diffuse ground glass, severities a growing share of ground glass). One series
is RLE Lossless, one JPEG 2000 Lossless (encoded with pylibjpeg-openjpeg). Bad inputs: pydicom's real
``rtplan.dcm`` (no pixel data), ``MR_truncated.dcm`` (cut pixel data) and ``MR_small.dcm`` (not CT), a slice in
an MPEG-2 transfer syntax, a CT slice cut in half, a text file named ``.dcm``, a patient without a label, a label
outside the task's names and a labelled patient without files.
"""

from __future__ import annotations

import copy
import csv
import shutil
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._chest import chest_slice_hu
from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_dicom_series", "SERIES"]

FOLDER = "dicom_ct"

#: (patient, study, series, findings drawn, transfer syntax name or None)
SERIES = (
    ("PAT001", "ST01", "SE01", {}, None),
    ("PAT002", "ST01", "SE01", {"ggo": 0.35, "peripheral": True}, "RLELossless"),
    ("PAT003", "ST01", "SE01", {"consolidation": 0.4, "sides": (1,)}, "JPEG2000Lossless"),
    ("PAT004", "ST01", "SE01", {"ggo": 0.35}, None),  # labelled by its series uid: ct2
    ("PAT004", "ST02", "SE01", {"ggo": 0.15}, None),  # labelled by its patient: ct1
    ("PAT008", "ST01", "SE01", {"ggo": 0.2, "peripheral": True}, None),
    ("PAT009", "ST01", "SE02", {"ggo": 0.5}, None),
    ("PAT005", "ST01", "SE01", {}, None),  # no row in labels.csv
    ("PAT007", "ST01", "SE01", {}, None),  # labelled "pneumonia", not a task name
)
LABELS = {
    "PAT001": "normal", "PAT002": "novel_coronavirus_pneumonia", "PAT003": "common_pneumonia", "PAT004": "ct1",
    "PAT008": "novel_coronavirus_pneumonia", "PAT009": "viral_pneumonia", "PAT007": "pneumonia",
    "PAT006": "normal",  # no files
}
SLICES = 4
SIZE = 64


def _uid(*parts) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["multimed_hf sample", *map(str, parts)])


def _slice(template, patient, study, series, z, hu):
    ds = copy.deepcopy(template)
    ds.PatientID = patient
    ds.PatientName = f"Anonymous^{patient}"
    del ds.OtherPatientIDsSequence
    ds.StudyInstanceUID = _uid(patient, study)
    ds.SeriesInstanceUID = _uid(patient, study, series)
    ds.SOPInstanceUID = _uid(patient, study, series, z)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = SLICES - z  # numbered top down, as scanners often do; position says bottom up
    ds.ImagePositionPatient = [-160.0, -160.0, -200.0 + 5.0 * z]
    ds.SliceLocation = -200.0 + 5.0 * z
    ds.PixelSpacing = [5.0, 5.0]
    ds.Rows, ds.Columns = hu.shape
    stored = np.rint((hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope)).astype(np.int16)
    ds.PixelData = stored.tobytes()
    return ds


def make_dicom_series(root, *, seed=21, bad_files=True) -> Path:
    """Write the sample under ``root`` and return it."""
    import pydicom
    from pydicom import uid as uids
    from pydicom.data import get_testdata_file
    from pydicom.encaps import encapsulate

    root = Path(root)
    rng = np.random.default_rng(seed)
    template = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for patient, study, series, findings, syntax in SERIES:
        folder = root / patient / study / series
        folder.mkdir(parents=True, exist_ok=True)
        for z in range(SLICES):
            level = 0.8 + 0.2 * np.sin(np.pi * (z + 1) / (SLICES + 1))
            ds = _slice(template, patient, study, series, z, chest_slice_hu((SIZE, SIZE), rng, level=level, **findings))
            if syntax:
                ds.compress(getattr(uids, syntax), generate_instance_uid=False)
            # file names ordered by instance number (top down): the slice index follows the position instead
            ds.save_as(folder / f"IM{ds.InstanceNumber:04d}.dcm", enforce_file_format=True)
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", "series_uid", "label"])
        writer.writerow(["", _uid("PAT004", "ST01", "SE01"), "ct2"])
        writer.writerows([patient, "", label] for patient, label in LABELS.items())
    if bad_files:
        series = root / "PAT001" / "ST01" / "SE01"
        shutil.copy(get_testdata_file("rtplan.dcm"), series / "IM0005.dcm")  # no pixel data
        shutil.copy(get_testdata_file("MR_truncated.dcm"), root / "PAT003" / "ST01" / "SE01" / "IM0005.dcm")
        shutil.copy(get_testdata_file("MR_small.dcm"), root / "PAT008" / "ST01" / "SE01" / "IM0005.dcm")
        mpeg = pydicom.dcmread(series / "IM0001.dcm")
        mpeg.file_meta.TransferSyntaxUID = uids.MPEG2MPML
        mpeg.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
        mpeg.save_as(root / "PAT002" / "ST01" / "SE01" / "IM0005.dcm")
        whole = (root / "PAT009" / "ST01" / "SE02" / "IM0001.dcm").read_bytes()
        (root / "PAT009" / "ST01" / "SE02" / "IM0005.dcm").write_bytes(whole[: len(whole) // 2])
        (root / "PAT009" / "ST01" / "SE02" / "IM0006.dcm").write_text("exported report, not an image\n")
        (series / "notes.txt").write_text("scanned after contrast\n")
    write_provenance(
        root,
        "generated by dataset_scripts/sample_sources/dicom_series.py: headers from pydicom's real CT_small.dcm "
        "(and its real rtplan.dcm, MR_truncated.dcm, MR_small.dcm as bad inputs), synthetic chest pixels (not real CT)",
    )
    return root


make = make_dicom_series
