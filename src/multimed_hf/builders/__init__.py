"""The builder registry: one ``SourceBuilder`` subclass per publisher layout."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from multimed_hf.data.errors import LayoutNotRecognised
from multimed_hf.data.source_builder import SourceBuilder
from multimed_hf.tasks import get_task

__all__ = ["BUILDERS", "WRAPPER_DEPTH", "builders_for_task", "detect_builder", "register_builder", "wrapped_folders"]

BUILDERS: list[type[SourceBuilder]] = []


def register_builder(cls: type[SourceBuilder]) -> type[SourceBuilder]:
    """Add a builder; its task and source must be in the task registry, once per (task, source)."""
    get_task(cls.task).source(cls.source)
    if any((b.task, b.source) == (cls.task, cls.source) for b in BUILDERS):
        raise ValueError(f"a builder for source {cls.source!r} of task {cls.task!r} is already registered")
    BUILDERS.append(cls)
    return cls


def _discover() -> None:
    """Register every concrete ``SourceBuilder`` defined in this package's modules (one module per layout)."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (issubclass(cls, SourceBuilder) and cls.__module__ == module.__name__
                    and getattr(cls, "source", None) and getattr(cls, "task", None)):
                register_builder(cls)


_discover()


def builders_for_task(task: str) -> list[type[SourceBuilder]]:
    get_task(task)
    return [b for b in BUILDERS if b.task == task]


#: How many folders of their own around a layout ``detect_builder`` looks through (Windows' "Extract All" adds one,
#: a re-zipped copy another).
WRAPPER_DEPTH = 3


def wrapped_folders(root: Path, depth: int = WRAPPER_DEPTH) -> list[tuple[Path, list[str]]]:
    """The folders a download may wrap a layout in, outermost first: while a folder holds exactly one sub-folder and
    besides it only files that are no data (system litter, documents, the archive it came from: ``non_data_reason``;
    hidden files), that sub-folder, with the names of what is beside it. A folder holding anything else ends it."""
    from multimed_hf.builders._download import non_data_reason
    from multimed_hf.data.source_builder import PROVENANCE_FILE

    out = []
    folder = root
    for _ in range(depth):
        entries = sorted(folder.iterdir())
        inner = [e for e in entries if e.is_dir() and not e.name.startswith(".")
                 and non_data_reason(f"{e.name}/x") is None]
        beside = [e for e in entries if e not in inner]
        if len(inner) != 1 or any(e.is_file() and not e.name.startswith(".") and e.name != PROVENANCE_FILE
                                  and non_data_reason(e.name) is None for e in beside):
            break
        folder = inner[0]
        out.append((folder, [e.name for e in beside]))
    return out


def detect_builder(task: str, root: str | Path, notes: list[str] | None = None) -> SourceBuilder:
    """The builder whose layout ``root`` has, among ``task``'s; else, where ``root`` only wraps one folder (as an
    archive or "Extract All" leaves it), the builder of the folder inside (``wrapped_folders``; a line on where it
    was found goes to ``notes``); else an error listing the layouts expected."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutNotRecognised(f"source folder {root} does not exist or is not a folder")
    candidates = builders_for_task(task)
    for cls in candidates:
        if cls.detect(root):
            return cls(root)
    beside: list[str] = []
    for folder, others in wrapped_folders(root):
        outer = folder.parent.relative_to(root).as_posix()
        beside += [name if outer == "." else f"{outer}/{name}" for name in others]
        for cls in candidates:
            if cls.detect(folder):
                if notes is not None:
                    notes.append(f"{cls.source}: the layout is in {folder.relative_to(root).as_posix()}/ inside the "
                                 f"folder given ({root}); built from there"
                                 + (f" (beside it, no data: {', '.join(beside)})" if beside else ""))
                return cls(folder)
    expected = "\n".join(f"  - {cls.source}: {cls.spec().layout}" for cls in candidates) or "  (none implemented yet)"
    inside = _matching_subfolders(root, candidates)
    raise LayoutNotRecognised(
        f"{root} matches none of the source layouts of task {task!r}; expected one of:\n{expected}"
        + (inside or _packed_hint(root) + _other_tasks_hint(root, task))
    )


def _matching_subfolders(root: Path, candidates, shown: int = 8) -> str:
    """A line naming the sub-folders of ``root`` that hold one of the layouts (a folder of several downloads)."""
    found = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cls = next((c for c in candidates if c.detect(child)), None)
        if cls is not None:
            found.append(f"{child.name} ({cls.source})")
    if not found:
        return ""
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return (f"\nIts sub-folders {', '.join(found[:shown])}{more} hold layouts of this task: give each as its own "
            f"--source (dataset_scripts/build_all.py builds every download of a folder like this one)")


def _other_tasks_hint(root: Path, task: str, shown: int = 8) -> str:
    """A line naming the other tasks' sources ``root`` holds: in its sub-folders (a folder of other downloads: each is
    built from its own folder, since several layouts look a folder or more down), else at its top (the download of
    another source)."""
    from multimed_hf.tasks import list_tasks

    others = [(other, cls) for other in list_tasks(include_extras=True) if other != task
              for cls in builders_for_task(other)]
    downloads = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        match = next(((other, cls) for other, cls in others if cls.detect(child)), None)
        if match is not None:
            downloads.append(f"{child.name} ({match[1].source} of task {match[0]!r})")
    if downloads:
        more = f" and {len(downloads) - shown} more" if len(downloads) > shown else ""
        return (f"\nIts sub-folders {', '.join(downloads[:shown])}{more} hold other tasks' sources: build each from "
                f"its own folder (multimed build TASK --source {root}/SUB-FOLDER), or all of them with "
                f"dataset_scripts/build_all.py --sources {root}")
    found = [f"{cls.source} of task {other!r}" for other, cls in others if cls.detect(root)]
    return (f"\nIt has the layout of {', '.join(dict.fromkeys(found))}: build that task (multimed build TASK "
            f"--source {root})" if found else "")


def _packed_hint(root: Path, shown: int = 5) -> str:
    """A line naming the download archives at the top of ``root`` or one folder down (``trainLabels.csv.zip``,
    ``train.zip.001``): the builders read what they unpack to, so a folder of archives matches no layout."""
    from multimed_hf.builders._download import is_archive

    found = sorted(
        p.relative_to(root).as_posix() for pattern in ("*", "*/*") for p in root.glob(pattern)
        if p.is_file() and is_archive(p.name)
    )
    if not found:
        return ""
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return (f"\nIt holds download archives: {', '.join(found[:shown])}{more}. The builders read what an archive "
            "unpacks to: unpack any not unpacked yet into this folder (a folder holding only archives and files is "
            "unpacked by the build itself).")
