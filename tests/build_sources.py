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


def build_with_capital_h5ad(task: str, root: Path, out: Path):
    """Renames every ``*.h5ad`` under ``root`` to ``*.H5AD`` (a copy made on Windows or from a CD), builds ``task``
    from it into ``out`` and returns the build's report with the set of its manifest entries, paths in lower case
    again, to compare with a lower-case build's."""
    from multimed_hf.api import build_dataset

    for path in sorted(Path(root).glob("*.h5ad")):
        path.rename(path.with_suffix(".H5AD"))
    report = build_dataset(task, [root], out, progress=False)
    entries = {(e.source_path.replace(".H5AD", ".h5ad"), e.status, e.reason, e.sample_id, e.split)
               for e in report.entries}
    assert any(e.source_path.endswith(".H5AD") and e.status == "kept" for e in report.entries)
    return report, entries


def manifest_entries(config_dir: Path) -> set:
    """A built config's manifest as the set :func:`build_with_capital_h5ad` returns."""
    from multimed_hf.data.manifest import read_manifest

    return {(e.source_path, e.status, e.reason, e.sample_id, e.split) for e in read_manifest(config_dir)}
