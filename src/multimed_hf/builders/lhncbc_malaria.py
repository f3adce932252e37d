"""NIH/NLM LHNCBC malaria cell images: ``cell_images/{Parasitized,Uninfected}/<smear image>_cell_<n>.png``.

A sample of the multi-label ``disease`` task: ``diseases`` is ``["malaria"]`` (Parasitized) or ``["normal"]``
(Uninfected), and ``label_mask`` lists the names this source can assert; every other disease is unknown, never
negative. The ``Thumbs.db`` in each class folder (the archive's 27,560 files are 27,558 PNGs and two of them) is
ignored and the Kaggle mirror's nested second copy ``cell_images/cell_images/`` dropped, each named in the
manifest and neither counted as an error. The folder given may be ``cell_images/`` or the folder holding it.

Grouping: a name is ``<slide>thinF_IMG_<date>_<time>_cell_<n>.png`` with the slide code ``C<n>[P<m>]``
(e.g. ``C100P61ThinF_IMG_20150918_144104_cell_162.png``). One patient's smear holds several photographed fields
(the part before ``_cell_``), so the group is the slide code, not the field; slide codes sharing their C or P
number are joined too (a patient's slides, and its cells filed as Uninfected), since splitting one patient leaks.
A valid PNG of a class folder whose name lacks ``_cell_<n>`` is kept, its whole stem read as the smear field
(the slide code still taken from its start), with a note in the manifest. NLM publishes two patient-to-cell
mappings beside the archive (``patientid_cellmapping_{parasitized,uninfected}.csv``, headerless: a patient id such
as ``C100P61ThinF``, then a list of cell file names): their ids are the slide codes the names begin with, so where a
user keeps them in the folder they are dropped, named, not read and never counted as errors.
The cell crops all look alike (a round cell on black), so a 64-bit perceptual hash would chain unrelated cells:
near-duplicate hashing is off; exact duplicates still group.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

from multimed_hf.builders._download import NonDataFiles, WrappedTree, strip_tree
from multimed_hf.data.errors import SECOND_COPY, BadSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import ImageFolderBuilder, PathInfo

__all__ = ["MalariaCellsBuilder", "MAPPING_FILES", "slide_code"]

_FOLDERS = ("Parasitized", "Uninfected")
#: NLM's patient-to-cell mappings, downloaded beside cell_images.zip.
MAPPING_FILES = ("patientid_cellmapping_parasitized.csv", "patientid_cellmapping_uninfected.csv")
_NAME = re.compile(r"^(?P<field>.+)_cell_(?P<n>\d+)\.png$", re.IGNORECASE)
_SLIDE = re.compile(r"^(?P<slide>C(?P<c>\d+)(?:P(?P<p>\d+))?[A-Za-z]*?)_?thinF", re.IGNORECASE)


def _field(name: str) -> str:
    """The smear field a cell file comes from: the part before ``_cell_<n>``, else the file name's stem."""
    match = _NAME.match(name)
    return match["field"] if match else PurePosixPath(name).stem


def slide_code(field: str) -> tuple[str, tuple[str, ...]]:
    """The slide code of a smear field name and the tokens (C and P numbers) that tie slides to a patient."""
    match = _SLIDE.match(field)
    if match is None:
        return field, ()
    tokens = [f"C{int(match['c'])}"] + ([f"P{int(match['p'])}"] if match["p"] else [])
    return match["slide"], tuple(tokens)


class MalariaCellsBuilder(NonDataFiles, WrappedTree, ImageFolderBuilder):
    task = "disease"
    source = "lhncbc_malaria"
    wrappers = ("cell_images",)
    version = "3"  # 2: the organ column; 3: NLM's mapping CSVs dropped by name
    image_suffixes = (".png",)

    @staticmethod
    def _is_tree(folder: Path) -> bool:
        return any((folder / name).is_dir() for name in _FOLDERS)

    @classmethod
    def class_folders(cls) -> tuple[str, ...]:
        return _FOLDERS

    def layout_warnings(self) -> list[str]:
        """A class folder missing (a partial download)."""
        base = self.root / self.tree if self.tree else self.root
        missing = [f for f in _FOLDERS if not (base / f).is_dir()]
        return [f"partial download: no {', '.join(missing)} folder; built from what is there"] if missing else []

    def read_file(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if name in MAPPING_FILES:
            raise UnusedSourceFile(
                f"not used: {name} is NLM's patient-to-cell mapping; its patient ids are the slide codes that "
                "start the cell names (e.g. C100P61ThinF), which group the cells here"
            )
        samples = super().read_file(relpath)
        mask = sorted(set(self.spec().label_map["diseases"].values()))
        for sample in samples:
            sample.fields["diseases"] = [sample.fields["diseases"]]
            sample.fields["label_mask"] = mask
            sample.fields["organ"] = self.spec().organ
            sample.perceptual_hash = None
        return samples

    def parse_path(self, relpath: str) -> PathInfo:
        inner = strip_tree(relpath, self.tree)
        parts = PurePosixPath(inner if inner is not None else relpath).parts
        if inner is None or (len(parts) > 2 and parts[-2] in _FOLDERS):
            if len(parts) > 2 and parts[-2] in _FOLDERS:
                raise UnusedSourceFile(
                    f"{SECOND_COPY} ({'/'.join(parts[:-2])}/, as in the Kaggle mirror's "
                    f"cell_images/cell_images/); the copy at {self.tree or './'} is read"
                )
            raise BadSourceFile("stray file: expected {Parasitized,Uninfected}/<smear image>_cell_<n>.png")
        if len(parts) != 2:
            raise BadSourceFile("stray file: expected {Parasitized,Uninfected}/<smear image>_cell_<n>.png")
        folder, name = parts
        if folder not in _FOLDERS:
            raise BadSourceFile(f"class folder {folder!r} is not one of {list(_FOLDERS)}")
        slide, _ = slide_code(_field(name))
        note = "" if _NAME.match(name) else (
            f"name variant: {name!r} is not <smear image>_cell_<n>.png; kept as {folder} (its folder), slide "
            f"{slide!r}"
        )
        return PathInfo(
            sample_id=f"{folder}/{PurePosixPath(name).stem}",
            labels={"diseases": folder},
            group_key=f"slide:{slide}",
            fields={"patient_id": slide},
            note=note,
        )

    def link_samples(self, samples: Sequence[Sample]) -> Iterable[tuple[int, int]]:
        """Slides sharing a C or P number: one patient (one link per slide joined, not per cell)."""
        first: dict[str, tuple[int, str]] = {}
        joined: set[tuple[str, str]] = set()
        for i, sample in enumerate(samples):
            slide, tokens = slide_code(_field(PurePosixPath(sample.source_path).name))
            for token in tokens:
                if token not in first:
                    first[token] = (i, slide)
                elif first[token][1] != slide and (token, slide) not in joined:
                    joined.add((token, slide))
                    yield first[token][0], i
