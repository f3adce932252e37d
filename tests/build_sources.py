"""Sample sources as the builder tests read them."""

from __future__ import annotations

import os
from pathlib import Path


def aged_mri_source(parent: Path, train_per_class: int = 30, test_per_class: int = 8) -> Path:
    """The brain_tumor MRI sample (32-px JPEGs and its damaged files) under ``parent``, its files an hour old: the
    validation cache trusts their stamps (its racy-write window has passed)."""
    from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri

    root = make_brain_tumor_mri(Path(parent) / "src", train_per_class=train_per_class, test_per_class=test_per_class,
                                size=32, bad_files=True)
    old = 1_000_000_000 * 3600
    for file in root.rglob("*"):
        if file.is_file():
            stat = file.stat()
            os.utime(file, ns=(stat.st_atime_ns - old, stat.st_mtime_ns - old))
    return root
