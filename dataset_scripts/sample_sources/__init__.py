"""Generators of small SYNTHETIC samples in each publisher's exact layout, file names and formats.

Each module here defines ``FOLDER`` (the folder name the publisher's download unpacks to) and ``make(root)``;
they are found automatically, so a new source's sample is one new module.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

__all__ = ["sample_generators", "make_sample_sources"]


def sample_generators() -> dict:
    """``{folder name: make}`` for every sample module in this package."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        found[module.FOLDER] = module.make
    return found


def make_sample_sources(root, names=None) -> dict:
    """Write every (or the named) sample source under ``root``; return ``{folder name: path}``."""
    root = Path(root)
    return {name: make(root / name) for name, make in sample_generators().items() if names is None or name in names}
