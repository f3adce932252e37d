"""Label kinds on the data side: one table entry per registry label kind (its ``datasets`` feature, the row columns
it reads, how a row's value is encoded and how a batch of them is collated)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from datasets import ClassLabel, List, Value

from multimed_hf.kind_table import KindTable
from multimed_hf.tasks import LabelSpec

__all__ = [
    "LabelKind",
    "LabelEncodingError",
    "RowContext",
    "BatchContext",
    "LABEL_KINDS",
    "get_label_kind",
    "register_label_kind",
    "unregister_label_kind",
    "IGNORE_INDEX",
    "LABEL_MASK_COLUMN",
    "RESIDUE_MASK_COLUMN",
    "COORDS_MASK",
]

#: An absent class label (the loss and the metrics skip it).
IGNORE_INDEX = -100
# Column names the registry gives these roles (see multimed_hf.tasks and _task_entries).
LABEL_MASK_COLUMN = "label_mask"
RESIDUE_MASK_COLUMN = "residue_mask"
#: The batch key of the observed-residue mask beside coordinates.
COORDS_MASK = "coords_mask"


class LabelEncodingError(ValueError):
    """A row's label value that its kind cannot encode (the processor adds the row and column to the message)."""


@dataclass(frozen=True)
class RowContext:
    """What a label kind may read of the row being encoded, beyond its own value."""

    task: str
    modalities: tuple[str, ...]
    #: modality -> the row's processed inputs (None where the row lacks the modality)
    inputs: Mapping[str, Any]
    #: modality -> the names of the row columns that feed it
    input_columns: Mapping[str, tuple[str, ...]]
    #: label column -> {vocabulary entry: index}; raises when the column has no vocabulary
    vocabulary: Callable[[str], Mapping[str, int]]
    unknown_text_label: str = "ignore"


@dataclass(frozen=True)
class BatchContext:
    """What a label kind may read of the batch being collated."""

    modalities: tuple[str, ...]
    #: modality -> the batch's collated input tensors (only modalities some row has)
    inputs: Mapping[str, Any]


class LabelKind:
    """How one registry label kind is stored and batched. A new kind is one subclass registered in this table."""

    #: The registry's ``LabelSpec.kind``.
    name: str = ""
    #: Its class names are fitted from the data (``MultiMedProcessor.fit_vocabularies``), not given by the registry.
    fitted_vocabulary: bool = False

    def feature(self, label: LabelSpec):
        """The ``datasets`` feature of the label column (absent labels are stored as None)."""
        raise NotImplementedError(f"label kind {self.name!r} has no feature")

    def columns(self, label: LabelSpec, metadata: frozenset[str]) -> dict[str, str]:
        """Row columns read beside the label's own (-> why), among the task's ``metadata`` column names."""
        return {}

    def encode(self, label: LabelSpec, value: Any, row: Mapping[str, Any], context: RowContext) -> dict[str, Any]:
        """``{batch key: encoded value}`` of one row (the label's own key, plus any mask key)."""
        raise NotImplementedError(f"label kind {self.name!r} has no encode")

    def collate(self, label: LabelSpec, encoded: Sequence[Mapping[str, Any]], context: BatchContext) -> dict:
        """``{batch key: tensor}`` from the rows' ``encode`` results."""
        raise NotImplementedError(f"label kind {self.name!r} has no collate")


def _class_index(label: LabelSpec, value: Any) -> int:
    """A class label (ClassLabel int, or a canonical name) as an index; None and ClassLabel's -1 are absent."""
    if value is None:
        return IGNORE_INDEX
    if isinstance(value, str):
        if value not in label.names:
            raise LabelEncodingError(f"{value!r} is not one of the class names {label.names}")
        return label.names.index(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"expected a class index or name, got {type(value).__name__} {value!r}")
    if value == -1:
        return IGNORE_INDEX
    if not 0 <= value < label.num_classes:
        raise LabelEncodingError(f"class index {value} is outside [0, {label.num_classes})")
    return int(value)


def _long(values: Sequence[int]):
    import torch

    return torch.tensor(values, dtype=torch.long)


class ClassLabelKind(LabelKind):
    """One class per row: a ``ClassLabel``; encoded as the class index, -100 absent."""

    name = "class"

    def feature(self, label):
        return ClassLabel(names=list(label.names))

    def encode(self, label, value, row, context):
        return {label.name: _class_index(label, value)}

    def collate(self, label, encoded, context):
        return {label.name: _long([e[label.name] for e in encoded])}


class MultilabelLabelKind(LabelKind):
    """Several names per row: a list of ``ClassLabel``; encoded as 1 = present, 0 = asserted absent (a name in the
    row's ``label_mask``), NaN = unknown."""

    name = "multilabel"

    def feature(self, label):
        return List(ClassLabel(names=list(label.names)))

    def columns(self, label, metadata):
        if LABEL_MASK_COLUMN in metadata:
            return {LABEL_MASK_COLUMN: f"label {label.name!r} (which names are known)"}
        return {}

    def encode(self, label, value, row, context):
        vector = np.full(label.num_classes, np.nan, dtype=np.float32)
        if value is not None:
            for name in row.get(LABEL_MASK_COLUMN) or ():
                if name not in label.names:
                    raise LabelEncodingError(f"{LABEL_MASK_COLUMN} names {name!r}, not one of {label.names}")
                vector[label.names.index(name)] = 0.0
            for item in value:
                index = _class_index(label, item)
                if index != IGNORE_INDEX:
                    vector[index] = 1.0
        return {label.name: vector}

    def collate(self, label, encoded, context):
        import torch

        return {label.name: torch.from_numpy(np.stack([e[label.name] for e in encoded]).astype(np.float32))}


class RegressionLabelKind(LabelKind):
    """One number per row: a float32 value; encoded as a float, NaN absent."""

    name = "regression"

    def feature(self, label):
        return Value("float32")

    def encode(self, label, value, row, context):
        return {label.name: float("nan") if value is None else float(value)}

    def collate(self, label, encoded, context):
        import torch

        return {label.name: torch.tensor([e[label.name] for e in encoded], dtype=torch.float32)}


class TextLabelKind(LabelKind):
    """Free text (cell type names, answers): a string; encoded as its index in the fitted vocabulary, -100 where
    blank or (``unknown_text_label="ignore"``) outside the vocabulary."""

    name = "text"
    fitted_vocabulary = True

    def feature(self, label):
        return Value("string")

    def encode(self, label, value, row, context):
        index = context.vocabulary(label.name)
        if value is None or not str(value).strip():
            return {label.name: IGNORE_INDEX}
        found = index.get(str(value).strip())
        if found is None:
            if context.unknown_text_label == "error":
                raise LabelEncodingError(f"{value!r} is not in the vocabulary of {len(index)} names "
                                         f"(unknown_text_label='error')")
            found = IGNORE_INDEX
        return {label.name: found}

    def collate(self, label, encoded, context):
        return {label.name: _long([e[label.name] for e in encoded])}


def _residue_modality(label: LabelSpec, modalities: Sequence[str]) -> str:
    """The modality whose residues the label follows: the registry's ``residue_modality``, else the only one."""
    return label.residue_modality or modalities[0]


class CoordsLabelKind(LabelKind):
    """C-alpha coordinates, L x 3 per row (Angstrom): encoded cut like the residue tokens, with the observed mask
    (finite and, where the row has one, ``residue_mask``) under ``coords_mask``; batches are zero-padded."""

    name = "coords"

    def feature(self, label):
        return List(List(Value("float32"), length=3))

    def columns(self, label, metadata):
        if RESIDUE_MASK_COLUMN in metadata:
            return {RESIDUE_MASK_COLUMN: f"label {label.name!r} (which residues were observed)"}
        return {}

    def encode(self, label, value, row, context):
        residue = _residue_modality(label, context.modalities)
        tokens = context.inputs.get(residue)
        if value is None or tokens is None:
            return {label.name: None, COORDS_MASK: None}
        coords = np.asarray(value, dtype=np.float32)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise LabelEncodingError(f"expected coordinates of shape [L, 3], got {list(coords.shape)}")
        if "num_residues" not in tokens:
            raise LabelEncodingError(f"modality {residue!r}'s processor does not report num_residues, so "
                                     f"coordinates cannot be aligned to its tokens")
        sequence = "".join(str(row[context.input_columns[residue][0]]).split())  # as the processor reads it
        if len(coords) != len(sequence):
            raise LabelEncodingError(f"{len(coords)} coordinates for a sequence of {len(sequence)} residues")
        mask = np.isfinite(coords).all(axis=1)
        observed = row.get(RESIDUE_MASK_COLUMN)
        if observed is not None:
            observed = np.asarray(observed).astype(bool)
            if observed.shape != mask.shape:
                raise LabelEncodingError(f"{RESIDUE_MASK_COLUMN} has {observed.size} entries for {len(coords)} "
                                         f"residues")
            mask &= observed
        kept = tokens["num_residues"]
        coords = np.where(mask[:, None], coords, 0.0).astype(np.float32)
        return {label.name: coords[:kept], COORDS_MASK: mask[:kept]}

    def collate(self, label, encoded, context):
        import torch

        values = [e[label.name] for e in encoded]
        residue = _residue_modality(label, context.modalities)
        longest = max((len(v) for v in values if v is not None), default=0)
        width = context.inputs[residue]["input_ids"].shape[1] - 2 if residue in context.inputs else longest
        coords = torch.zeros(len(values), width, 3)
        mask = torch.zeros(len(values), width, dtype=torch.bool)
        for b, e in enumerate(encoded):
            if values[b] is not None:
                n = len(values[b])
                coords[b, :n] = torch.from_numpy(values[b])
                mask[b, :n] = torch.from_numpy(e[COORDS_MASK])
        return {label.name: coords, COORDS_MASK: mask}


_KINDS: KindTable[LabelKind] = KindTable(LabelKind, "label kind", "register_label_kind",
                                         "label kind {name!r} is not one of {known}")
#: Registry label kind -> its data-side behaviour (read-only view; ``register_label_kind`` adds one).
LABEL_KINDS: Mapping[str, LabelKind] = _KINDS.view


def register_label_kind(kind: LabelKind, *, replace: bool = False) -> LabelKind:
    """Add ``kind`` (a ``LabelKind`` instance) to the table; a name already taken raises unless ``replace``."""
    return _KINDS.register(kind, replace=replace)


def unregister_label_kind(name: str) -> LabelKind:
    """Remove and return the kind ``name`` (for tests and plug-ins that add a kind for a while)."""
    return _KINDS.unregister(name)


def get_label_kind(name: str) -> LabelKind:
    """The data-side behaviour of registry label kind ``name``; an unknown one raises ``ValueError``."""
    return _KINDS.get(name)


for _kind in (ClassLabelKind(), MultilabelLabelKind(), RegressionLabelKind(), TextLabelKind(), CoordsLabelKind()):
    register_label_kind(_kind)
