"""A source folder of downloads as they came: the publisher's archives, unpacked for the build.

Publishers ship archives (``cell_images.zip``, ``BreaKHis_v1.tar.gz``, Kaggle's ``train.zip.001`` ... parts and
``trainLabels.csv.zip``) and the builders read what they unpack to. ``build_dataset`` unpacks a source folder whose
layout no builder recognises and whose top holds archives and files only (no folder: nothing was unpacked there
yet) into ``<out>/.build_cache/unpacked/<name>/``, with the folder's other files copied beside, and builds from
there. Archives inside archives (Kaggle's competition zip holding the split parts) are unpacked in turn. The
unpacked tree is kept for the next build, which reuses it while the archives are unchanged (sizes and times
recorded in ``<name>.json`` beside it); delete it to free the space.

Formats: zip, tar (``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``), and zips split into numbered parts
(``<name>.zip.001``, ``.002``, ...: 7-Zip's volumes, one zip cut in pieces, read as one). Paths are kept inside
the folder (zipfile drops ``..`` and absolute parts; tar members go through tarfile's ``data`` filter). ``.7z``,
``.rar`` and Info-ZIP's spanned ``.z01`` volumes need their own tools: they are named, not unpacked. A damaged
archive (CC-CCII's ``NCP-13.zip`` is reported broken) is named in the build's report and the others are unpacked;
a member that fails its check is named too, and what was written of it stays for the builder to reject, named.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

__all__ = ["UnpackError", "archives_of", "can_unpack", "is_archive", "unpack_downloads"]

_TAR = re.compile(r"\.(tar|tar\.gz|tgz|tar\.bz2|tar\.xz)$", re.IGNORECASE)
_ZIP = re.compile(r"\.zip$", re.IGNORECASE)
_PART = re.compile(r"^(?P<stem>.+\.zip)\.(?P<n>\d{3})$", re.IGNORECASE)
_OTHER = re.compile(r"\.(7z|rar|z\d{2})$", re.IGNORECASE)
#: How many times archives found inside unpacked archives are unpacked in turn.
MAX_DEPTH = 3


class UnpackError(ValueError):
    """A download archive that cannot be unpacked (damaged, a part missing), named with the reason."""


def can_unpack(name: str) -> bool:
    """Whether ``unpack_downloads`` unpacks a file of this name (zip, tar, or a part of a split zip)."""
    return bool(_ZIP.search(name) or _TAR.search(name) or _PART.match(name))


def is_archive(name: str) -> bool:
    """Whether a file name is a download archive: one ``unpack_downloads`` unpacks, or a ``.7z`` / ``.rar`` /
    spanned ``.z01`` volume it names for their own tools."""
    return can_unpack(name) or bool(_OTHER.search(name))


def archives_of(folder: Path) -> tuple[dict[str, list[Path]], list[str], list[str]]:
    """The archives at the top of ``folder``: ``({archive name: its files (the parts of a split zip, in
    order)}, [names of archives this module cannot unpack], [why a split zip cannot be read: a part missing])``."""
    archives: dict[str, list[Path]] = {}
    others = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("._")):
        part = _PART.match(path.name)  # (a macOS ._name.zip beside a zip is its resource fork, no archive)
        if part:
            archives.setdefault(part.group("stem"), []).append(path)
        elif _ZIP.search(path.name) or _TAR.search(path.name):
            archives[path.name] = [path]
        elif _OTHER.search(path.name):
            others.append(path.name)
    problems = []
    for name, parts in list(archives.items()):
        numbers = [int(_PART.match(p.name).group("n")) for p in parts] if _PART.match(parts[0].name) else [1]
        if numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
            problems.append(f"{folder / name}: a zip split in parts lacks part(s) "
                            f"{', '.join(f'{n:03d}' for n in missing)} of {max(numbers):03d}")
            del archives[name]
    return archives, others, problems


def _one_archive(path: Path) -> dict[str, list[Path]]:
    """``archives_of`` for one archive file given itself (a split zip's part: the parts beside it)."""
    if not can_unpack(path.name):
        raise UnpackError(f"{path} is a file, not a folder, and no archive this build can unpack (zip, tar, "
                          "a split zip's part)")
    part = _PART.match(path.name)
    if part is None:
        return {path.name: [path]}
    found, _, problems = archives_of(path.parent)
    if part.group("stem") not in found:
        raise UnpackError(next(p for p in problems if f"/{part.group('stem')}:" in p))
    return {part.group("stem"): found[part.group("stem")]}


class _JoinedParts(io.RawIOBase):
    """The parts of a split zip read as one seekable file (7-Zip's volumes are one zip cut in pieces)."""

    def __init__(self, parts: list[Path]):
        self._handles = [open(p, "rb") for p in parts]
        self._starts, total = [], 0
        for handle in self._handles:
            self._starts.append(total)
            total += os.fstat(handle.fileno()).st_size
        self._size, self._pos = total, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        view, done = memoryview(buffer).cast("B"), 0
        while done < len(view) and self._pos < self._size:
            index = max(i for i, start in enumerate(self._starts) if start <= self._pos)
            handle = self._handles[index]
            handle.seek(self._pos - self._starts[index])
            end = self._starts[index + 1] if index + 1 < len(self._starts) else self._size
            n = handle.readinto(view[done:done + min(len(view) - done, end - self._pos)])
            if not n:
                break
            done += n
            self._pos += n
        return done

    def close(self) -> None:
        for handle in self._handles:
            handle.close()
        super().close()


_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError, zlib.error)


def _unpack_one(name: str, parts: list[Path], dest: Path, progress: bool) -> tuple[int, list[str]]:
    """Unpack one archive into ``dest``: ``(files unpacked, [member: reason for each member that could not be])``.
    ``UnpackError`` where the archive cannot be opened or listed at all."""
    from tqdm.auto import tqdm

    tar = bool(_TAR.search(name))
    with contextlib.ExitStack() as stack:
        try:
            if tar:
                archive = stack.enter_context(tarfile.open(parts[0]))
                members = [m for m in archive.getmembers() if m.isfile() or m.isdir()]  # a cut tarball fails here
            else:
                joined = _PART.match(parts[0].name)
                source = stack.enter_context(_JoinedParts(parts) if joined else open(parts[0], "rb"))
                archive = stack.enter_context(zipfile.ZipFile(source))
                members = archive.infolist()
        except _ERRORS as err:
            raise UnpackError(f"{parts[0]}: cannot unpack: {type(err).__name__}: {err}") from None
        unpacked, failed = 0, []
        for member in tqdm(members, desc=f"unpacking {name}", unit="file", disable=not progress):
            try:
                if tar:
                    archive.extract(member, dest, filter="data")
                else:
                    archive.extract(member, dest)
            except _ERRORS as err:  # one damaged member: named, the others still unpacked
                failed.append(f"{member.name if tar else member.filename}: {type(err).__name__}: {err}")
                continue
            unpacked += member.isfile() if tar else not member.is_dir()
    return unpacked, failed


def _failures(failed: list[str], shown: int = 3) -> str:
    """The report's note on members that could not be unpacked."""
    if not failed:
        return ""
    more = f" and {len(failed) - shown} more" if len(failed) > shown else ""
    return f"; {len(failed)} member(s) could not be unpacked: {'; '.join(failed[:shown])}{more}"


def _stamp(files: list[Path]) -> list:
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def unpack_downloads(root: Path, dest: Path, *, progress: bool = True) -> list[str]:
    """Unpack the archives at the top of ``root`` into ``dest``, copy its other files beside them, and unpack the
    archives that come out in turn; return a line per archive for the build's report. ``root`` may also be one
    archive (a split zip's first part: all its parts). A ``dest`` unpacked before from the same archives
    (``<dest>.json``) is reused as it is."""
    root, dest = Path(root), Path(dest)
    if root.is_file():
        archives, others, problems = _one_archive(root), [], []
        files = next(iter(archives.values()))
    else:
        if any(p.is_dir() for p in root.iterdir()):
            raise UnpackError(f"{root} holds folders: only a folder of downloads as they came (archives and files) "
                              "is unpacked for the build; unpack its archives yourself")
        archives, others, problems = archives_of(root)
        files = sorted(p for p in root.iterdir() if p.is_file())
    if not archives:
        raise UnpackError("; ".join(problems) or f"{root} holds no archive this build can unpack"
                          + (f" ({', '.join(others)} need 7-Zip or unrar)" if others else ""))
    record = dest.with_name(dest.name + ".json")
    stamp = _stamp(files)
    if record.is_file() and dest.is_dir():
        saved = json.loads(record.read_text())
        if saved.get("files") == stamp:
            return saved["lines"]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    lines, opened = [f"could not unpack {problem}" for problem in problems], 0
    for name, parts in archives.items():
        try:
            n, failed = _unpack_one(name, parts, dest, progress)
        except UnpackError as err:  # one damaged download (CC-CCII's NCP-13.zip): named, the others unpacked
            lines.append(f"could not unpack {err}")
            continue
        opened += 1
        lines.append(f"unpacked {name} ({n:,} files) from {root} into {dest}" + _failures(failed))
    if not opened:
        shutil.rmtree(dest)
        raise UnpackError("; ".join(line.removeprefix("could not unpack ") for line in lines))
    # the parts of a split zip lacking one are copied as they are: the build names them as archives, not data
    archived = {p for parts in archives.values() for p in parts}
    for path in files:
        if path not in archived:
            shutil.copy2(path, dest / path.name)
    for _ in range(MAX_DEPTH - 1):  # archives inside the archives (a Kaggle download's inner zips)
        inner = {}
        for folder in [dest, *(p for p in dest.iterdir() if p.is_dir())]:
            found, _others, problems = archives_of(folder)  # a split zip lacking a part: named, left as it is
            lines += [f"could not unpack {problem} (found inside)" for problem in problems]
            inner.update({(folder, name): parts for name, parts in found.items()})
        if not inner:
            break
        for (folder, name), parts in inner.items():
            try:
                n, failed = _unpack_one(name, parts, folder, progress)
            except UnpackError as err:
                lines.append(f"could not unpack {err} (found inside)")
                n, failed = None, []
            for part in parts:
                part.unlink()  # our copy, unpacked (or named as damaged): the tree is what is read
            if n is not None:
                lines.append(f"unpacked {name} ({n:,} files), found inside, into {folder}" + _failures(failed))
    if others:
        lines.append(f"not unpacked: {', '.join(others)} (7-Zip or unrar needed)")
    lines = list(dict.fromkeys(lines))  # a split zip lacking a part inside is met in every round
    record.write_text(json.dumps({"root": str(root), "files": stamp, "lines": lines}))
    return lines
