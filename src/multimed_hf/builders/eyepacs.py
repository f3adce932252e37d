"""Kaggle Diabetic Retinopathy Detection 2015 (EyePACS): ``trainLabels.csv`` (image, level 0-4) with
``train/<patient>_<left|right>.jpeg``.

Both eyes of a patient are one group (the numeric prefix is the patient); ``eye`` records the side. The test
images (``test/``) are labelled by ``retinopathy_solution.csv`` (image, level, Usage), published after the
competition: where it is present, ``test/`` is the published test set and training patients found in it are
dropped; where it is absent, ``test/`` images are reported as unlabelled and a test split is drawn from training
patients. ``sampleSubmission.csv`` is a template whose levels are placeholders and labels nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

from multimed_hf.builders._csv_images import CsvImageBuilder, Sheet
from multimed_hf.builders.aptos2019 import dr_grade
from multimed_hf.data.errors import BadSourceFile

__all__ = ["EyePACSBuilder"]

_NAME = re.compile(r"^(\d+)_(left|right)$")


class EyePACSBuilder(CsvImageBuilder):
    task = "diabetic_retinopathy"
    source = "eyepacs"
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
        if match is None:
            raise BadSourceFile(f"file name {stem!r} is not <patient>_<left|right>")
        patient, eye = match.groups()
        return {"patient_id": patient, "eye": eye}, f"patient:{patient}"
