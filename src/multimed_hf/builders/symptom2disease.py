"""Symptom2Disease (Kaggle): ``Symptom2Disease.csv`` with an unnamed index column, ``label`` and ``text``.

A clinical-text source of the multi-label ``disease`` task: each row is a sample whose ``text`` is the note,
``diseases`` its one diagnosis mapped into the harmonised names, and ``label_mask`` the names this source can
assert (every other disease is unknown, never negative). A row with an unknown label or no text is reported as
``Symptom2Disease.csv:row <n>`` and the other rows are kept. ``organ`` is what the registry states for the
source (None: its notes span many conditions). There are no patient ids: identical texts (after
case and whitespace folding) share a content hash, so they are grouped, and rejected where their labels differ.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from multimed_hf.builders._csv_images import read_sheet
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["Symptom2DiseaseBuilder", "SHEET"]

SHEET = "Symptom2Disease.csv"
_COLUMNS = ("label", "text")


class Symptom2DiseaseBuilder(NonDataFiles, SourceBuilder):
    task = "disease"
    source = "symptom2disease"
    version = "3"  # 2: the organ column; 3: folder litter (.DS_Store, Thumbs.db) ignored, not a stray file

    @classmethod
    def detect(cls, root: Path) -> bool:
        return (root / SHEET).is_file()

    def _rows(self) -> list[tuple[int, str, dict | str]]:
        """``(row number, id, fields or the reason the row is bad)``; ``BadSourceFile`` for an unusable sheet."""
        header, rows = read_sheet((self.root / SHEET).read_bytes(), SHEET)
        missing = [c for c in _COLUMNS if c not in header]
        if missing:
            raise BadSourceFile(f"{SHEET} lacks the column(s) {missing}; its header is {header}")
        index_column = header[0] if header[0] not in _COLUMNS else None
        mapping = self.spec().label_map["diseases"]
        mask, modality, organ = sorted(set(mapping.values())), self.spec().modality, self.spec().organ
        out = []
        for n, row in enumerate(rows, start=1):
            if row is None:
                continue
            key = (row[index_column] if index_column else "") or f"row{n}"
            label, text = row["label"], row["text"]
            if label not in mapping:
                out.append((n, key, f"unknown label: {label!r} is not one of this source's {len(mapping)} diagnoses"))
            elif not text:
                out.append((n, key, "no text: the row's text is empty"))
            else:
                out.append((n, key, {
                    "text": text, "modality": modality, "diseases": [mapping[label]], "label_mask": mask,
                    "organ": organ,
                }))
        return out

    def read_file(self, relpath: str) -> list[Sample]:
        if relpath != SHEET:
            raise BadSourceFile(f"stray file: this layout is one sheet, {SHEET}")
        samples = []
        for n, key, fields in self._rows():
            if isinstance(fields, str):
                continue  # reported by orphan_records, as <sheet>:row <n>
            folded = " ".join(fields["text"].lower().split())
            samples.append(Sample(
                sample_id=f"row-{n}", source_path=relpath, fields=fields,
                content_hash=hashlib.sha256(folded.encode()).hexdigest(), extra={"index": key},
            ))
        return samples

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        """The sheet's rows that give no sample, with the reason."""
        if SHEET not in files:
            return []
        try:
            rows = self._rows()
        except BadSourceFile:
            return []  # the sheet itself is rejected, with this reason
        return [(f"{SHEET}:row {n}", fields) for n, _, fields in rows if isinstance(fields, str)]
