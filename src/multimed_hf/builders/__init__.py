"""The builder registry: one ``SourceBuilder`` subclass per publisher layout."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

from multimed_hf.data.errors import LayoutNotRecognised
from multimed_hf.data.source_builder import SourceBuilder
from multimed_hf.tasks import get_task

__all__ = ["BUILDERS", "builders_for_task", "detect_builder", "register_builder"]

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


def detect_builder(task: str, root: str | Path) -> SourceBuilder:
    """The builder whose layout ``root`` has, among ``task``'s; else an error listing the layouts expected."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutNotRecognised(f"source folder {root} does not exist or is not a folder")
    candidates = builders_for_task(task)
    for cls in candidates:
        if cls.detect(root):
            return cls(root)
    expected = "\n".join(f"  - {cls.source}: {cls.spec().layout}" for cls in candidates) or "  (none implemented yet)"
    raise LayoutNotRecognised(
        f"{root} matches none of the source layouts of task {task!r}; expected one of:\n{expected}"
        + _packed_hint(root)
    )


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
