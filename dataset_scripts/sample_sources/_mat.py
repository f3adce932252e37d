"""MATLAB files with a fixed header: ``scipy.io.savemat`` stamps the time into the first 116 bytes, which made every
generated sample holding one a new file (and its config a new fingerprint)."""

from __future__ import annotations

import io
from pathlib import Path

__all__ = ["mat_bytes", "write_mat"]

#: What MATLAB reads as the header text (116 bytes, space padded); the subsystem offset, version and endianness after
#: it are savemat's own.
HEADER = b"MATLAB 5.0 MAT-file, written by the multimed_hf sample generator".ljust(116, b" ")


def mat_bytes(variables: dict, **options) -> bytes:
    """``savemat(variables, **options)`` as bytes, the same for the same variables whenever written."""
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, variables, **options)
    return HEADER + buffer.getvalue()[len(HEADER):]


def write_mat(path: Path, variables: dict, **options) -> None:
    Path(path).write_bytes(mat_bytes(variables, **options))
