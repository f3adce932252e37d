"""Reading one DICOM image fully with pydicom: what the DICOM builders (CT series, mammography) share.

An empty file is named as such, and a file without the ``DICM`` prefix after its 128-byte preamble (an HTML page
saved as ``.dcm``, a report) as not a DICOM file, without pydicom's advice to ``force=True``, which no option offers.
pydicom reads a file cut short without an error: a value the file ends inside comes back short, a file that ends
inside an element's header just ends the data set there, and an undefined-length value (encapsulated pixel data)
without its delimiter drops the whole data set with a warning. ``dcmread`` names each as a truncated file, so the
reason is not "no pixel data" or "unknown SOP class".
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import numpy as np

from multimed_hf.builders._ct import require
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.images import MIN_IMAGE_SIDE

__all__ = ["dcmread", "read_dicom_pixels"]


#: An element header is at least this long (tag, then VR and length): a file ending fewer bytes after its last
#: element ends inside a header.
_HEADER_BYTES = 8
#: The length pydicom reads for an undefined-length value (found by its delimiter, not by a length).
_UNDEFINED_LENGTH = 0xFFFFFFFF


def dcmread(path: Path, what: str = "DICOM files", *, allow_truncated: bool = False, **kwargs):
    """``pydicom.dcmread``, or ``BadSourceFile`` naming why the file is not readable DICOM: "truncated: ..." for a
    file cut short (see the module's docstring), unless ``allow_truncated`` (what the file holds is returned)."""
    pydicom = require("pydicom", what)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise BadSourceFile(f"not a readable DICOM file: {type(err).__name__}: {err}") from None
    if size == 0:
        raise BadSourceFile("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            if not allow_truncated:  # pydicom's only word on a cut undefined-length value: raised here
                warnings.filterwarnings("error", message="End of file reached", category=UserWarning)
            ds = pydicom.dcmread(path, **kwargs)
    except UserWarning as err:
        found = str(err).split(" in file ")[0]
        raise BadSourceFile(f"truncated: the file ({os.path.getsize(path):,} bytes) was cut short: {found}") from None
    except struct.error as err:  # a fixed-size header field read short: the file ends inside it
        raise BadSourceFile(
            f"truncated: the file ({os.path.getsize(path):,} bytes) ends inside an element's header ({err})"
        ) from None
    except (pydicom.errors.InvalidDicomError, pydicom.errors.BytesLengthException, EOFError, OSError, ValueError,
            KeyError, TypeError) as err:
        if isinstance(err, pydicom.errors.InvalidDicomError) and not _has_dicm_prefix(path):
            raise BadSourceFile(f"not a DICOM file (no DICM preamble/File Meta header): {_first_bytes(path)}") from None
        raise BadSourceFile(f"not a readable DICOM file: {type(err).__name__}: {err}") from None
    if not allow_truncated:
        cut = _truncation(ds, os.path.getsize(path))
        if cut is not None:
            raise BadSourceFile(cut)
    return ds


def _has_dicm_prefix(path: Path) -> bool:
    """Whether bytes 128-131 are ``DICM`` (PS3.10 7.1: a 128-byte preamble, then the prefix of the File Meta
    header): pydicom refuses a file without them (``force=True`` would read it, and no option offers that)."""
    with open(path, "rb") as handle:
        handle.seek(128)
        return handle.read(4) == b"DICM"


def _first_bytes(path: Path, n: int = 24) -> str:
    """What the file begins with, for the reason (an HTML error page saved in its place shows as ``<html>``)."""
    with open(path, "rb") as handle:
        head = handle.read(n + 1)
    return f"it begins {head[:n]!r}{'...' if len(head) > n else ''}"


def _element_name(tag) -> str:
    """``(7FE0,0010) Pixel Data``; a private or unknown element by its tag alone."""
    from pydicom.datadict import dictionary_description

    try:
        return f"{tag} {dictionary_description(tag)}"
    except KeyError:
        return str(tag)


def _truncation(ds, size: int) -> str | None:
    """Why a data set read from a file of ``size`` bytes shows the file was cut short, or None: a value the file
    ends inside, or a file ending inside the header of an element after the last one read."""
    from pydicom.dataelem import RawDataElement

    meta = getattr(ds, "file_meta", None)
    if meta is not None and not len(meta) and not len(ds):
        return f"truncated: the file ({size:,} bytes) ends after its 'DICM' prefix, before any element"
    group = meta.get_item(0x00020000) if meta is not None and 0x00020000 in meta else None
    if group is not None and isinstance(group.value, int):  # (0002,0000) File Meta Information Group Length
        meta_end = getattr(group, "file_tell", 140) + 4 + group.value  # its 4-byte value, then the group
        if size < meta_end:
            return (f"truncated: the file ({size:,} bytes) ends inside its file meta information, which declares "
                    f"{group.value:,} bytes (to byte {meta_end:,})")
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    # a deflated data set is read from its inflated bytes: its offsets are not the file's
    deflated = syntax is not None and syntax.is_transfer_syntax and syntax.is_deflated
    datasets = [meta] if deflated else [meta, ds]
    end, last = 0, None
    for dataset in datasets:
        for tag in dataset.keys() if dataset is not None else ():
            element = dataset.get_item(tag)
            if not isinstance(element, RawDataElement) or element.length == _UNDEFINED_LENGTH:
                continue  # read whole (a sequence, a value found by its delimiter), or its extent is not known
            name = _element_name(element.tag)
            stop = element.value_tell + element.length
            if stop > size:
                held = max(size - element.value_tell, 0)
                return (f"truncated: the file ({size:,} bytes) ends inside {name}, whose header declares "
                        f"{element.length:,} bytes; {held:,} are there")
            if stop >= end:
                end, last = stop, name
    if last is not None and 0 < size - end < _HEADER_BYTES:
        into = size - end
        return (f"truncated: the file ({size:,} bytes) ends {into} byte{'s' if into > 1 else ''} into the header of "
                f"the element after {last}")
    return None


def read_dicom_pixels(path: Path, what: str = "DICOM files"):
    """The dataset and its 2-D pixel array, decoded fully (a cut file fails here, not at ``dcmread``)."""
    ds = dcmread(path, what)
    from pydicom.pixels import get_decoder

    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "unknown SOP class"))
        if str(sop).endswith("Image Storage"):  # a file cut between two elements reads as a whole one
            raise BadSourceFile(
                f"no pixel data: a {sop} object (modality {ds.get('Modality', '?')}) whose file "
                f"({os.path.getsize(path):,} bytes) ends before the (7FE0,0010) Pixel Data its class requires: cut "
                "short, or saved without its pixels"
            )
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
