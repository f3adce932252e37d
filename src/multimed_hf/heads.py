"""Task heads (eq. 7: one output per label column) and their losses, absent labels (-100 / NaN) ignored; what each
column does comes from its kind (``output_kinds``)."""

import torch
from torch import nn

from .output_kinds import IGNORE_INDEX, kind_of
from .structure_head import ANGSTROM_PER_UNIT, StructureHead, structure_loss

__all__ = ["TaskHead", "StructureHead", "column_loss", "structure_loss", "IGNORE_INDEX", "ANGSTROM_PER_UNIT"]


class TaskHead(nn.Module):
    """h_t of eq. 7 for one task: one output layer per label column (its kind's layer: class / multilabel logits, a
    standardised regression value, C-alpha coordinates, ...). Under late fusion it also holds each modality's own
    output layers (f^(m) of eq. 4) for the kinds that combine late, and the learned weights of their weighted average.
    With ``auxiliary=True`` (intermediate fusion, ``config.auxiliary_heads``) it keeps the fused layers and adds the
    same per-modality layers as auxiliary heads (MIND's multi-head joint fusion); nothing combines them.

    A registry "text" label (cell type names, VQA answers) is a class output over the vocabulary given when the
    config was built. For VQA, closed answers are classified; open answers are retrieval over the same vocabulary
    (every answer seen at build time is scored, an unseen one cannot be produced); there is no generation."""

    extra_parameters = {"late_weights": "zeros"}

    def __init__(self, spec: dict, hidden_size: int, dropout: float, structure: dict, late: bool = False,
                 auxiliary: bool = False):
        super().__init__()
        self.specs = {o["name"]: o for o in spec["outputs"]}
        self.kinds = {n: kind_of(o) for n, o in self.specs.items()}
        self.modalities = list(spec["modalities"])
        self.dropout = nn.Dropout(dropout)
        # Under late fusion the combined prediction of a column comes from the modalities' own layers (eq. 4); only
        # kinds that do not combine late (coordinates, predicted from one modality's residues) keep a fused layer.
        self.outputs = nn.ModuleDict({n: self.kinds[n].layer(o, hidden_size, structure)
                                      for n, o in self.specs.items() if not late or not self.kinds[n].late})
        if late or auxiliary:
            self.modality_outputs = nn.ModuleDict({
                m: nn.ModuleDict({n: self.kinds[n].layer(o, hidden_size, structure)
                                  for n, o in self.specs.items() if self.kinds[n].late})
                for m in self.modalities
            })
        if late:
            self.late_weights = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, features: torch.Tensor, residues: dict | None = None, modality: str | None = None) -> dict:
        """Raw predictions per label column from features [n, H] (`modality` set: that modality's own layers).

        residues: column -> (residue features [n, L, H], mask [n, L]) for the columns predicted from residues.
        """
        layers = self.outputs if modality is None else self.modality_outputs[modality]
        h = self.dropout(features)
        residues = residues or {}
        return {name: self.kinds[name].forward(layer, self.specs[name], h, residues.get(name))
                for name, layer in layers.items()}

    def to_output(self, name: str, pred: torch.Tensor) -> torch.Tensor:
        """A raw prediction in the label's units (regression: undo the standardisation)."""
        return self.kinds[name].to_output(self.specs[name], pred)


def column_loss(spec: dict, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None):
    """The loss of one label column over the rows that have a label; ``None`` when no row has one. ``mask`` is the
    kind's extra label tensor (``coords_mask`` for coordinates)."""
    return kind_of(spec).loss(spec, pred, target, mask)
