"""Brain Tumor MRI Dataset (Kaggle, Nickparvar): ``Training/`` and ``Testing/`` x four class folders of JPEGs.

Class folders are the registry's publisher names: this release's ``glioma``, ``meningioma``, ``notumor``,
``pituitary`` and the SARTAJ release's ``glioma_tumor`` ... ``no_tumor`` (merged into this set). Any file name is
accepted (the release's ``Tr-gl_0010.jpg`` and ``Tr-glTr_0000.jpg``, SARTAJ's ``image(1).jpg`` and ``gg (1).jpg``);
ids are ``<split>/<class folder>/<stem>``, since SARTAJ reuses names across folders. A partial download (e.g. only
``Training/``) builds with a warning.
"""

from __future__ import annotations

import os
from pathlib import Path

from multimed_hf.builders._download import NonDataFiles
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["BrainTumorMRIBuilder"]

_SPLITS = {"Training": "train", "Testing": "test"}


class BrainTumorMRIBuilder(NonDataFiles, ImageFolderBuilder):
    task = "brain_tumor"
    source = "brain_tumor_mri"
    version = "2"

    split_folders = _SPLITS

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return tuple(cls.spec().label_map["tumor"])

    @classmethod
    def detect(cls, root: Path) -> bool:
        classes = set(cls.class_folders())
        return any(
            (root / split).is_dir() and classes & {p.name for p in (root / split).iterdir()} for split in _SPLITS
        )

    def layout_warnings(self) -> list[str]:
        """A missing split folder, and a split folder lacking a class under either release's folder name."""
        per_folder = tuple(f"partial download: {split}/" for split in _SPLITS)  # the base's, by folder name
        warnings = [w for w in super().layout_warnings() if not w.startswith(per_folder)]
        names = self.spec().label_map["tumor"]
        for split in _SPLITS:
            if (self.root / split).is_dir():
                present = {names[p.name] for p in (self.root / split).iterdir() if p.name in names}
                missing = sorted(set(names.values()) - present)
                if missing:  # named by the folders a release has (notumor or no_tumor), not the class alone
                    folders = [" or ".join(sorted(f for f, c in names.items() if c == m)) for m in missing]
                    warnings.append(f"partial download: {split}/ has no folder of class "
                                    f"{', '.join(f'{m} (folder {f})' for m, f in zip(missing, folders))}")
        return warnings

    def parse_path(self, relpath: str) -> PathInfo:
        parts = relpath.split("/")  # the build's relative paths: POSIX separators, no empty or dot parts
        if len(parts) != 3 or parts[0] not in _SPLITS:
            raise BadSourceFile("stray file: expected Training|Testing/<class>/<image>")
        split, folder, name = parts
        names = self.spec().label_map["tumor"]
        if folder not in names:
            raise BadSourceFile(f"class folder {folder!r} is not one of {sorted(names)}")
        # No patient ids exist: each image stands alone until duplicates join it to others. The stem: read_file
        # has checked that the name ends in an image suffix.
        return PathInfo(
            sample_id=f"{split}/{folder}/{os.path.splitext(name)[0]}", labels={"tumor": folder},
            published_split=_SPLITS[split],
        )
