"""Zip archives with fixed member times: ``ZipFile.writestr(name, ...)`` stamps the current time and ``write`` the
file's, which made every generated sample holding an archive a new file (and its config a new fingerprint)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Mapping

__all__ = ["write_zip", "zip_bytes"]

#: The members' modification time: the zip format's earliest (1 January 1980).
MEMBER_TIME = (1980, 1, 1, 0, 0, 0)


def zip_bytes(members: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of ``members`` (name -> bytes, in order), the same bytes whenever written."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=MEMBER_TIME)
            info.compress_type = compression
            archive.writestr(info, data)
    return buffer.getvalue()


def write_zip(path: Path, members: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> None:
    Path(path).write_bytes(zip_bytes(members, compression))
