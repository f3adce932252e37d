"""Brain Tumor MRI Dataset (Kaggle, Nickparvar): ``Training/`` and ``Testing/`` x four class folders of JPEGs."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["BrainTumorMRIBuilder"]

_SPLITS = {"Training": "train", "Testing": "test"}


class BrainTumorMRIBuilder(ImageFolderBuilder):
    task = "brain_tumor"
    source = "brain_tumor_mri"

    split_folders = _SPLITS

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return tuple(cls.spec().label_map["tumor"])

    @classmethod
    def detect(cls, root: Path) -> bool:
        classes = set(cls.spec().label_map["tumor"])
        return any((root / split).is_dir() and classes & {p.name for p in (root / split).iterdir()} for split in _SPLITS)

    def parse_path(self, relpath: str) -> PathInfo:
        parts = PurePosixPath(relpath).parts
        if len(parts) != 3 or parts[0] not in _SPLITS:
            raise BadSourceFile("stray file: expected Training|Testing/<class>/<image>")
        split, folder, name = parts
        if folder not in self.spec().label_map["tumor"]:
            raise BadSourceFile(
                f"class folder {folder!r} is not one of {sorted(self.spec().label_map['tumor'])}"
            )
        # No patient ids exist: each image stands alone until duplicates join it to others.
        return PathInfo(sample_id=PurePosixPath(name).stem, labels={"tumor": folder}, published_split=_SPLITS[split])
