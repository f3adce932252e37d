"""The Python API behind the ``multimed`` command: build configs from source folders, find sources."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

from multimed_hf.builders import BUILDERS, detect_builder, wrapped_folders
from multimed_hf.data.build import CACHE_DIR, BuildReport, build_config
from multimed_hf.data.errors import LayoutNotRecognised
from multimed_hf.tasks import get_task

__all__ = ["build_dataset", "detect_sources"]


def build_dataset(
    task: str,
    sources: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    on_bad_files: str = "report",
    progress: bool = True,
    num_proc: int = 1,
    engine: str = "local",
    ray_address: str | None = None,
    unpack: bool = True,
) -> BuildReport:
    """Build ``task``'s config into ``out_dir`` from source folders in their publishers' layouts.

    ``on_bad_files="report"`` (default) names every bad file in the manifest and goes on; ``"error"`` stops at
    the first. ``num_proc`` decodes files in that many processes. ``engine="ray"`` reads and validates the files
    with Ray Data instead (``pip install multimed_hf[ray]``), on the cluster at ``ray_address`` or, without one, on
    a local Ray instance with ``num_proc`` CPUs; the shards, manifest and card are the same as a local build's.
    A source folder of downloads as they came (the publisher's archives, no folder unpacked yet) is unpacked into
    ``out_dir/.build_cache/unpacked/`` first and built from there (``multimed_hf.data.unpack``); ``unpack=False``
    leaves it to the user. The folder then loads with ``datasets.load_dataset(out_dir, task)``.
    """
    spec = get_task(task)
    if not sources:
        raise ValueError(f"build_dataset({task!r}): give at least one source folder")
    out = Path(out_dir).resolve()
    for root in sources:
        if out == Path(root).resolve() or Path(root).resolve() in out.parents:
            raise ValueError(f"the output folder {out_dir} lies inside the source folder {root}: the build would read "
                             f"its own output as source files (and a later build the archives it unpacked there); "
                             f"choose an output folder outside it")
    notes: list[str] = []
    builders = [_detect(task, Path(root), Path(out_dir), unpack, progress, notes) for root in sources]
    report = build_config(spec, builders, out_dir, on_bad_files=on_bad_files, progress=progress,
                          num_proc=num_proc, engine=engine, ray_address=ray_address)
    report.warnings[:0] = notes
    return report


def _detect(task: str, root: Path, out_dir: Path, unpack: bool, progress: bool, notes: list[str]):
    """``detect_builder``, and for a folder of downloads that matches no layout, the same on its archives
    unpacked into the build's cache (what was unpacked added to ``notes``)."""
    from multimed_hf.data.unpack import UnpackError, unpack_downloads

    try:
        return detect_builder(task, root, notes)
    except LayoutNotRecognised:
        if not unpack or not _downloads(root):
            raise
    dest = _unpacked_folder(out_dir, task, root)
    try:
        lines = unpack_downloads(root, dest, progress=progress)
    except UnpackError as err:
        raise LayoutNotRecognised(f"{root} matches no source layout of task {task!r} and its archives could not "
                                  f"be unpacked: {err}") from None
    try:
        builder = detect_builder(task, dest, notes)
    except LayoutNotRecognised as err:
        raise LayoutNotRecognised(f"{err}\n(that is {root}'s archives unpacked into {dest})") from None
    notes.extend(lines + [f"built from {dest}: the archives of {root} unpacked (kept for the next build while they "
                          "are unchanged; delete it to free the space)"])
    return builder


def detect_sources(root: str | os.PathLike, unpack_into: str | os.PathLike | None = None, *,
                   skipped: list | None = None) -> dict[str, list[Path]]:
    """Sub-folders of ``root`` (one level) whose layout a builder recognises, grouped by task (a folder can
    serve several tasks, e.g. brain_tumor and disease). With ``unpack_into`` (a build's ``out_dir``), a sub-folder
    of downloads as they came (archives and files, no folder) that matches no layout is unpacked into its cache
    (``multimed_hf.data.unpack``) and the unpacked folder is what is found. ``skipped``, a list, receives
    ``(path, reason)`` for each entry of ``root`` that is not used: a sub-folder matching no layout, a file (hidden
    ones aside)."""
    from multimed_hf.data.unpack import can_unpack

    found: dict[str, list[Path]] = {}
    entries = sorted(Path(root).iterdir())
    if skipped is not None:
        skipped.extend(
            (p, "an archive at the top of the folder: put each source's downloads in a sub-folder of their own "
                "(the archives there are unpacked)" if can_unpack(p.name) else "a file, not a source folder")
            for p in entries if not p.is_dir() and not p.name.startswith("."))
    for entry in (p for p in entries if p.is_dir()):
        folder = entry
        tasks = [cls.task for cls in BUILDERS if cls.detect(folder)]
        for inner, _ in [] if tasks else wrapped_folders(folder):  # a source wrapped in folders of its own
            tasks = [cls.task for cls in BUILDERS if cls.detect(inner)]
            if tasks:
                folder = inner
                break
        if not tasks and unpack_into is not None and _downloads(folder):
            from multimed_hf.data.unpack import unpack_downloads

            unpacked = _unpacked_folder(Path(unpack_into), "source", folder)
            unpack_downloads(folder, unpacked)
            folder, tasks = unpacked, [cls.task for cls in BUILDERS if cls.detect(unpacked)]
        if not tasks and skipped is not None and not entry.name.startswith((".", "__MACOSX")):
            skipped.append((entry, "matches no source layout (`multimed info TASK` lists each source's layout; "
                                    "`multimed build TASK --source FOLDER` says what it lacks)"))
        for task in tasks:
            if folder not in found.get(task, []):
                found.setdefault(task, []).append(folder)
    return found


def _downloads(folder: Path) -> bool:
    """A folder of downloads as they came (archives this package unpacks, files, and no folder), or one such
    archive given itself."""
    from multimed_hf.data.unpack import archives_of, can_unpack

    if folder.is_file():
        return can_unpack(folder.name)
    if not folder.is_dir() or any(p.is_dir() for p in folder.iterdir()):
        return False
    archives, _, problems = archives_of(folder)
    return bool(archives or problems)


def _unpacked_folder(out_dir: Path, prefix: str, root: Path) -> Path:
    """Where ``root``'s archives are unpacked in ``out_dir``'s cache (two folders of one name get their own)."""
    where = root.resolve()
    tag = hashlib.sha256(str(where).encode()).hexdigest()[:8]
    return out_dir / CACHE_DIR / "unpacked" / f"{prefix}-{where.name}-{tag}"
