"""Generators of small SYNTHETIC samples in each publisher's exact layout, file names and formats."""

from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
from dataset_scripts.sample_sources.oct2017 import make_oct2017

__all__ = ["SAMPLE_SOURCES", "make_sample_sources"]

#: Folder name under the sample root -> generator.
SAMPLE_SOURCES = {
    "Brain-Tumor-MRI-Dataset": make_brain_tumor_mri,
    "OCT2017": make_oct2017,
}


def make_sample_sources(root, names=None):
    """Write every (or the named) sample source under ``root``; return ``{name: path}``."""
    from pathlib import Path

    root = Path(root)
    return {name: make(root / name) for name, make in SAMPLE_SOURCES.items() if names is None or name in names}
