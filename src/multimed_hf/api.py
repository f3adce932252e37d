"""The Python API behind the ``multimed`` command: build configs from source folders, find sources."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from multimed_hf.builders import BUILDERS, detect_builder
from multimed_hf.data.build import BuildReport, build_config
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
) -> BuildReport:
    """Build ``task``'s config into ``out_dir`` from source folders in their publishers' layouts.

    ``on_bad_files="report"`` (default) names every bad file in the manifest and goes on; ``"error"`` stops at
    the first. ``num_proc`` decodes files in that many processes. ``engine="ray"`` reads and validates the files
    with Ray Data instead (``pip install multimed_hf[ray]``), on the cluster at ``ray_address`` or, without one, on
    a local Ray instance with ``num_proc`` CPUs; the shards, manifest and card are the same as a local build's.
    The folder then loads with ``datasets.load_dataset(out_dir, task)``.
    """
    spec = get_task(task)
    if not sources:
        raise ValueError(f"build_dataset({task!r}): give at least one source folder")
    builders = [detect_builder(task, root) for root in sources]
    return build_config(spec, builders, out_dir, on_bad_files=on_bad_files, progress=progress, num_proc=num_proc,
                        engine=engine, ray_address=ray_address)


def detect_sources(root: str | os.PathLike) -> dict[str, list[Path]]:
    """Sub-folders of ``root`` (one level) whose layout a builder recognises, grouped by task (a folder can
    serve several tasks, e.g. brain_tumor and disease)."""
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        for cls in BUILDERS:
            if cls.detect(folder) and folder not in found.get(cls.task, []):
                found.setdefault(cls.task, []).append(folder)
    return found
