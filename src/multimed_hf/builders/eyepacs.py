"""Kaggle Diabetic Retinopathy Detection 2015 (EyePACS): ``trainLabels.csv`` (image, level 0-4) with
``train/<patient>_<left|right>.jpeg``.

Both eyes of a patient are one group (the numeric prefix is the patient); ``eye`` records the side. The test
images (``test/``) are labelled by ``retinopathy_solution.csv`` (image, level, Usage), published after the
competition: where it is present, ``test/`` is the published test set and training patients found in it are
dropped; where it is absent, ``test/`` images are reported as unlabelled and a test split is drawn from training
patients (dropped, not errors). ``sampleSubmission.csv`` is a template whose levels are placeholders and labels
nothing; ``sample/`` (the competition's ``sample.zip``: a 10-image preview named like training images) is no
split and is dropped; the archives (``train.zip.001``, ``trainLabels.csv.zip``, ...) and non-data files are
ignored. A valid image with a row whose name is not ``<patient>_<left|right>`` is kept, its stem read as the
patient and its eye unknown, noted in the manifest. A partial download (``train/`` or ``test/`` missing) builds
with a warning.
"""

from __future__ import annotations

import re
from pathlib import Path

from multimed_hf.builders._csv_images import CsvImageBuilder, Sheet
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders.aptos2019 import PublishedUnlabelled, dr_grade
from multimed_hf.data.errors import UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import NOTE

__all__ = ["EyePACSBuilder"]

_NAME = re.compile(r"^(\d+)_(left|right)$")


class EyePACSBuilder(NonDataFiles, PublishedUnlabelled, CsvImageBuilder):
    task = "diabetic_retinopathy"
    source = "eyepacs"
    version = "2"
    image_suffixes = (".jpeg", ".jpg")
    sheets = {
        "trainLabels.csv": Sheet("train", {"id": "image", "grade": "level"}, images="train", published_split="train"),
        "retinopathy_solution.csv": Sheet(
            "test", {"id": "image", "grade": "level"}, images="test", published_split="test"
        ),
        "sampleSubmission.csv": Sheet("submission", {"id": "image", "grade": "level"}),
    }

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / "trainLabels.csv").is_file()

    def layout_warnings(self) -> list[str]:
        warnings = []
        if not (self.root / "train").is_dir():
            warnings.append("partial download: no train/ folder (train.zip.001-005 unpacked); built from what is there")
        if (self.root / "retinopathy_solution.csv").is_file() and not (self.root / "test").is_dir():
            warnings.append("partial download: retinopathy_solution.csv is here but no test/ folder (test.zip.001-007 "
                            "unpacked); test is drawn from training patients")
        return warnings

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath.startswith("sample/"):
            raise UnusedSourceFile(
                "not used: sample/ is the competition's 10-image preview (sample.zip), named like training images; "
                "train/ and test/ are read"
            )
        samples = super().read_file(relpath)
        for sample in samples:
            stem = sample.source_path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if _NAME.match(stem) is None:
                sample.extra[NOTE] = (
                    f"name variant: {stem!r} is not <patient>_<left|right>; kept with its row's grade, patient id "
                    f"{stem!r}, eye unknown"
                )
        return samples

    def unindexed_reason(self, relpath: str) -> str:
        if relpath.startswith("test/") and "retinopathy_solution.csv" not in self._load():
            return (
                "unlabelled: test/ images are labelled by retinopathy_solution.csv (published after the "
                "competition), which is not in this folder"
            )
        return super().unindexed_reason(relpath)

    def parse_row(self, row: dict[str, str], sheet: Sheet) -> dict:
        column = sheet.columns["grade"]
        return {"dr_grade": dr_grade(self, row[column], column)}

    def parse_image_name(self, stem: str) -> tuple[dict, str | None]:
        match = _NAME.match(stem)
        if match is None:  # kept, noted by read_file: a valid image with a row is never rejected for its name
            return {"patient_id": stem, "eye": None}, f"patient:{stem}"
        patient, eye = match.groups()
        return {"patient_id": patient, "eye": eye}, f"patient:{patient}"
