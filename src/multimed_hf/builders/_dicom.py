"""Reading one DICOM image fully with pydicom: what the DICOM builders (CT series, mammography) share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from multimed_hf.builders._ct import require
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.images import MIN_IMAGE_SIDE

__all__ = ["dcmread", "read_dicom_pixels"]


def dcmread(path: Path, what: str = "DICOM files", **kwargs):
    """``pydicom.dcmread``, or ``BadSourceFile`` naming why the file is not readable DICOM."""
    pydicom = require("pydicom", what)
    try:
        return pydicom.dcmread(path, **kwargs)
    except (pydicom.errors.InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise BadSourceFile(f"not a readable DICOM file: {type(err).__name__}: {err}") from None


def read_dicom_pixels(path: Path, what: str = "DICOM files"):
    """The dataset and its 2-D pixel array, decoded fully (a cut file fails here, not at ``dcmread``)."""
    ds = dcmread(path, what)
    from pydicom.pixels import get_decoder

    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown SOP class"))
        raise BadSourceFile(f"no pixel data: a {sop} object (modality {ds.get('Modality', '?')}), not an image")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None:
        raise BadSourceFile("no transfer syntax: the file meta information lacks (0002,0010) Transfer Syntax UID")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise BadSourceFile(f"unsupported transfer syntax: {syntax.name} ({syntax}) has no pixel decoder") from None
    if not decoder.is_available:
        missing = "; ".join(f"{k}: {', '.join(v)}" for k, v in decoder.missing_dependencies.items())
        raise BadSourceFile(f"unsupported transfer syntax: {syntax.name} ({syntax}) needs a decoder plugin ({missing})")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # the decoders raise many types on damaged data; each names the damage
        raise BadSourceFile(f"cannot decode pixel data: {type(err).__name__}: {err}") from None
    if pixels.ndim != 2:
        raise BadSourceFile(f"pixel array of shape {pixels.shape}: one grey image per file expected (no multi-frame)")
    if min(pixels.shape) < MIN_IMAGE_SIDE:
        raise BadSourceFile(f"image is {pixels.shape[1]}x{pixels.shape[0]} px, smaller than {MIN_IMAGE_SIDE} px a side")
    return ds, np.asarray(pixels)
