"""MosMedData COVID19_1110: ``studies/CT-0 ... CT-4/study_NNNN.nii.gz``, one chest CT volume per patient.

Each volume is read fully with nibabel (a cut ``.nii.gz`` loads lazily and fails only when its voxels are read),
checked (3-D, finite, Hounsfield units), turned to the patient's axes and cut into axial slices: one sample per
slice, a PNG in the lung window, with its volume id, slice index (as stored in the file) and window.

The archive unpacks to ``COVID19_1110/`` (beside ``studies/`` and ``masks/`` it holds ``dataset_registry.xlsx`` and
the read-me files): the tree is read in the folder given or in its ``COVID19_1110/``. The ``.nii.gz`` extension is
matched in any case (``study_0001.NII.GZ``), names as on disk. A study's copy in its folder (a browser's
``study_0001 (1).nii.gz``, the study gunzipped beside its ``.nii.gz``) holding the same voxels (to half a HU) is
dropped, named: the publisher's ``study_NNNN.nii.gz`` is the one read. A renamed file of other voxels is kept as a
volume of its own.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path, PurePosixPath
from typing import ClassVar, Mapping

import numpy as np

from multimed_hf.builders._ct import (
    LUNG_WINDOW, RenderedSlices, Window, check_hounsfield, encode_png, rendered_ref, require,
)
from multimed_hf.builders._copies import copy_order, listing_digest, refuse_later_copy
from multimed_hf.builders._download import NonDataFiles, WrappedTree, strip_tree
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.images import MIN_IMAGE_SIDE
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import NOTE, SourceBuilder

__all__ = ["MosMedDataBuilder", "AxialVolume", "load_axial_volume"]

_STUDY = re.compile(r"^(study_\d+)\.(?i:nii(\.gz)?)$")
_STUDY_NUMBER = re.compile(r"study_(\d+)")
_MASK = re.compile(r"^(study_\d+)_mask\.(?i:nii(\.gz)?)$")
#: A NIfTI volume's extension, in any case.
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
#: The publisher's own documents beside the data: read as index files, never as samples.
_DOCUMENTS = re.compile(r"^(dataset_registry\.xlsx|README.*|LICENSE.*)$", re.IGNORECASE)


@dataclass(frozen=True)
class AxialVolume:
    """A volume in the patient's axes: ``hu[x, y, z]`` with x to the right, y anterior, z superior (RAS)."""

    hu: np.ndarray
    #: For each axial index z of ``hu``, the index of that slice along the file's own array axis.
    stored_index: np.ndarray

    def display(self, z: int, window: Window) -> np.ndarray:
        """Slice ``z`` as a radiologist views it (anterior up, the patient's right on the left), windowed."""
        return window.to_uint8(self.hu[:, :, z].T[::-1, ::-1])

    def z_of(self, stored: int) -> int:
        return int(np.nonzero(self.stored_index == stored)[0][0])


def _read_nifti(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """All voxels (scaled, float32) and the affine; ``BadSourceFile`` for anything unreadable or not 3-D."""
    nib = require("nibabel", "MosMedData's NIfTI volumes")
    from nibabel.filebasedimages import ImageFileError

    try:
        image = nib.load(path)
        data = image.get_fdata(dtype=np.float32)  # reads (and decompresses) every voxel: a cut file fails here
    except (ImageFileError, OSError, EOFError, ValueError, zlib.error) as err:
        raise BadSourceFile(f"cannot read NIfTI {what}: {type(err).__name__}: {err}") from None
    shape = data.shape
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise BadSourceFile(f"not a 3-D volume: the {what} has shape {shape}; one CT study per file expected")
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise BadSourceFile(f"degenerate affine: the {what} has no orientation ({affine[:3].tolist()})")
    return data, affine


def load_axial_volume(path: Path) -> AxialVolume:
    """Decode a CT volume fully, check it, and turn it to the patient's axes (``BadSourceFile`` if bad)."""
    from nibabel.orientations import apply_orientation, io_orientation

    data, affine = _read_nifti(path, "volume")
    check_hounsfield(data, "volume")
    ornt = io_orientation(affine)  # per array axis: (RAS axis it runs along, +1 / -1)
    hu = apply_orientation(data, ornt)
    if min(hu.shape[:2]) < MIN_IMAGE_SIDE:  # the axial slices, as stored after turning to the patient's axes
        raise BadSourceFile(f"slices too small: the volume's axial slices are {hu.shape[0]}x{hu.shape[1]} px, under "
                            f"{MIN_IMAGE_SIDE} px a side")
    axis = int(np.nonzero(ornt[:, 0] == 2)[0][0])  # the file's array axis that runs inferior-superior
    n = data.shape[axis]
    stored = np.arange(n) if ornt[axis, 1] > 0 else np.arange(n)[::-1]
    return AxialVolume(np.ascontiguousarray(hu), stored.copy())


@lru_cache(maxsize=2)  # a study and the copy compared with it
def _cached_volume(path: str, size: int, mtime_ns: int) -> AxialVolume:
    return load_axial_volume(Path(path))


def _volume(path: Path) -> AxialVolume:
    stat = path.stat()
    return _cached_volume(str(path), stat.st_size, stat.st_mtime_ns)


#: Two study files whose voxels differ by less than this (HU) everywhere hold the same volume (a re-export rescales).
SAME_VOXELS_HU = 0.5


def _same_volume(path: str, other: str) -> bool:
    """Whether two study files hold the same voxels in the same orientation, to ``SAME_VOXELS_HU`` (an unreadable
    one: not the same)."""
    try:
        mine, theirs = _volume(Path(path)), _volume(Path(other))
    except BadSourceFile:
        return False
    return (np.array_equal(mine.stored_index, theirs.stored_index) and mine.hu.shape == theirs.hu.shape
            and bool(np.all(np.abs(mine.hu - theirs.hu) < SAME_VOXELS_HU)))


def _study_order(relpath: str) -> tuple:
    """Which of a study's copies is read: the publisher's ``study_NNNN.nii.gz``, then a plain ``.nii``, then
    ``copy_order`` (a name without a copy suffix, ...)."""
    name = PurePosixPath(relpath).name
    return _STUDY.match(name) is None, not name.lower().endswith(".gz"), *copy_order(relpath)


class MosMedDataBuilder(NonDataFiles, WrappedTree, RenderedSlices, SourceBuilder):
    task = "radiographic_findings"
    source = "mosmeddata"
    version = "6"  # 2: .nii.gz in any case; 3: a byte-identical "(1)" copy dropped; 4: any copy of the same voxels;
    # 5: a .nii of other voxels beside its .nii.gz its own volume; 6: the minimum slice size checked on the axial
    # slices (it was checked on the file's first two axes, before turning: 64x6 px slices were kept)
    #: The archive's own folder around the tree.
    wrappers = ("COVID19_1110",)
    #: The window every slice is rendered in (recorded per sample in the ``window`` column).
    window: ClassVar[Window] = LUNG_WINDOW

    def __init__(self, root):
        require("nibabel", "MosMedData's NIfTI volumes")
        super().__init__(root)

    def render(self, file: Path, params: Mapping[str, str]) -> bytes:
        """``studies/CT-1/study_0001.nii.gz#slice=7&window=-600,1500.png`` -> that slice's PNG."""
        volume = _volume(file)
        return encode_png(volume.display(volume.z_of(int(params["slice"])), Window.parse(params["window"])))

    @classmethod
    def _is_tree(cls, folder: Path) -> bool:
        studies = folder / "studies"
        return studies.is_dir() and any(p.name in cls.spec().label_map["severity"] for p in studies.iterdir())

    @cached_property
    def listing_version(self) -> str:
        """The study files there are: a "(1)" copy is dropped only while its original is beside it."""
        return listing_digest(self.root, [f for f in self.list_files() if _NIFTI.search(f)])

    @cached_property
    def _study_files(self) -> dict[tuple[str, str], list[str]]:
        """``studies/<folder>/`` NIfTI files by (folder, study ``study_NNNN``): a study's copies beside it."""
        studies: dict[tuple[str, str], list[str]] = {}
        for relpath in self.list_files():
            parts = PurePosixPath(strip_tree(relpath, self.tree) or "").parts
            number = _STUDY_NUMBER.search(parts[-1]) if len(parts) == 3 and parts[0] == "studies" else None
            if number and _NIFTI.search(parts[-1]):
                studies.setdefault((parts[1], f"study_{number.group(1)}"), []).append(relpath)
        return studies

    def no_sample_note(self, relpath: str) -> str:
        """The registry and read-me files are documents, not read (the labels are the CT-k folders'); a mask is
        checked and not used: neither is an index file the build reads."""
        parts = PurePosixPath(strip_tree(relpath, self.tree) or relpath).parts
        if len(parts) == 2 and parts[0] == "masks":
            return "lesion mask: checked (a binary volume), not used by this task"
        if len(parts) == 1 and _DOCUMENTS.match(parts[0]):
            return "the publisher's document: not read (the labels are the studies/CT-k folders')"
        return super().no_sample_note(relpath)

    def read_file(self, relpath: str) -> list[Sample]:
        inner = strip_tree(relpath, self.tree)
        if inner is None:
            raise BadSourceFile(f"stray file: outside the archive's tree ({self.tree}studies/, {self.tree}masks/)")
        parts = PurePosixPath(inner).parts
        if len(parts) == 1 and _DOCUMENTS.match(parts[0]):
            return []  # the publisher's registry and read-me: no sample of their own
        if len(parts) == 2 and parts[0] == "masks":
            return self._read_mask(relpath)
        if len(parts) != 3 or parts[0] != "studies":
            raise BadSourceFile("stray file: expected studies/CT-<k>/study_NNNN.nii.gz or masks/study_NNNN_mask.nii.gz")
        _, folder, name = parts
        severity = self.canonical("severity", folder)
        match = _STUDY.match(name)
        note, stem = "", _NIFTI.sub("", name)
        if match is None:  # a valid volume of a class folder is kept: its id is its name, its patient the number
            if not _NIFTI.search(name):
                raise BadSourceFile(f"stray file: {name!r} is not a NIfTI volume (study_NNNN.nii.gz)")
            number = _STUDY_NUMBER.search(name)
            study = f"study_{number.group(1)}" if number else stem
            note = (f"name variant: {name!r} is not study_NNNN.nii.gz; kept as {folder} (its folder), patient "
                    f"{study!r}, volume {stem!r}")
        else:
            study = stem = match.group(1)
        # a browser's second download, or the study gunzipped beside its .nii.gz: read once
        refuse_later_copy(self.root, relpath, self._study_files.get((folder, study), ()), "its slices would be in "
                          "the data twice", order=_study_order, same=_same_volume, copy="a copy (the same voxels)",
                          beside=True)
        before = [f for f in self._study_files.get((folder, study), ()) if _study_order(f) < _study_order(relpath)]
        if match is not None and before:  # study_0001.nii of other voxels beside study_0001.nii.gz: its own volume
            stem = name
            note = (f"name variant: {name!r} holds other voxels than {PurePosixPath(before[0]).name}; kept as "
                    f"{folder} (its folder), patient {study!r}, volume {stem!r}")
        volume = _volume(self.root / relpath)
        samples, modality = [], self.spec().modality
        for z in np.argsort(volume.stored_index):
            stored = int(volume.stored_index[z])
            grey = volume.display(int(z), self.window)
            png = encode_png(grey)
            ref = rendered_ref(relpath, png, slice=stored, window=self.window.token)
            samples.append(Sample(
                sample_id=f"{stem}/{stored:04d}",
                source_path=relpath,
                fields={
                    "image": ref, "modality": modality, "finding": None, "severity": severity,
                    "patient_id": study, "volume_id": stem, "slice_index": stored, "window": str(self.window),
                },
                group_key=f"patient:{study}",
                extra={NOTE: note} if note else {},
                # identical rendered slices are duplicates, except flat ones (all air or padding) that say nothing
                content_hash=None if grey.min() == grey.max() else ref.sha256,
                # no perceptual hash: neighbouring slices are near duplicates by design (one group anyway), and
                # across patients a 64-bit hash of chest slices would chain unrelated studies together
            ))
        return samples

    def _read_mask(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if _MASK.match(name) is None:
            raise BadSourceFile(f"file name {name!r} does not match masks/study_NNNN_mask.nii.gz")
        data, _ = _read_nifti(self.root / relpath, "mask")
        values = np.unique(data)
        if not np.isin(values, (0.0, 1.0)).all():
            raise BadSourceFile(f"mask values {values[:8].tolist()}; expected a binary mask (0 and 1)")
        return []  # the segmentation masks of 50 studies: checked, not a sample of this task
