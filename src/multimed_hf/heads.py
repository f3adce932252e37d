"""Task heads (eq. 7: one output per label column) and their losses, absent labels (-100 / NaN) ignored."""

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import TransformerBlock

__all__ = ["TaskHead", "StructureHead", "column_loss", "structure_loss", "IGNORE_INDEX"]

IGNORE_INDEX = -100
#: Coordinates are predicted in nanometres and reported in Angstrom (a better-scaled output at init).
ANGSTROM_PER_UNIT = 10.0


class StructureHead(nn.Module):
    """C-alpha coordinates from per-residue features: the fused task vector added to each residue, transformer
    blocks over the residues, a linear map to (x, y, z) in Angstrom."""

    def __init__(self, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                 dropout: float = 0.0, attn_implementation: str | None = "sdpa"):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, intermediate_size, dropout, attn_implementation)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.coords = nn.Linear(hidden_size, 3)

    def forward(self, residues: torch.Tensor, residue_mask: torch.Tensor | None, context: torch.Tensor):
        x = residues + context.unsqueeze(1)
        if residue_mask is not None:  # a row with no residue would attend to nothing: let it see every position
            residue_mask = residue_mask | ~residue_mask.any(1, keepdim=True)
        for layer in self.layers:
            x = layer(x, residue_mask)
        return self.coords(self.norm(x)) * ANGSTROM_PER_UNIT


def _output_layer(out: dict, hidden_size: int, structure: dict):
    if out["kind"] == "coords":
        return StructureHead(hidden_size, **structure)
    return nn.Linear(hidden_size, 1 if out["kind"] == "regression" else len(out["names"]))


class TaskHead(nn.Module):
    """h_t of eq. 7 for one task: one output layer per label column (class / multilabel logits, a standardised
    regression value, C-alpha coordinates). Under late fusion it also holds each modality's own output layers
    (f^(m) of eq. 4) and the learned weights of their weighted average.

    A registry "text" label (cell type names, VQA answers) is a class output over the vocabulary given when the
    config was built. For VQA, closed answers are classified; open answers are retrieval over the same vocabulary
    (every answer seen at build time is scored, an unseen one cannot be produced); there is no generation."""

    extra_parameters = {"late_weights": "zeros"}

    def __init__(self, spec: dict, hidden_size: int, dropout: float, structure: dict, late: bool = False):
        super().__init__()
        self.specs = {o["name"]: o for o in spec["outputs"]}
        self.modalities = list(spec["modalities"])
        self.dropout = nn.Dropout(dropout)
        # Under late fusion the combined prediction of a column comes from the modalities' own layers (eq. 4); only
        # coordinates, predicted from one modality's residues, keep a layer on the fused features.
        self.outputs = nn.ModuleDict({n: _output_layer(o, hidden_size, structure) for n, o in self.specs.items()
                                      if not late or o["kind"] == "coords"})
        if late:
            self.modality_outputs = nn.ModuleDict({
                m: nn.ModuleDict({n: _output_layer(o, hidden_size, structure)
                                  for n, o in self.specs.items() if o["kind"] != "coords"})
                for m in self.modalities
            })
            self.late_weights = nn.Parameter(torch.zeros(len(self.modalities)))

    def forward(self, features: torch.Tensor, residues: dict | None = None, modality: str | None = None) -> dict:
        """Raw predictions per label column from features [n, H] (`modality` set: that modality's own layers).

        residues: column -> (residue features [n, L, H], mask [n, L]) for coords outputs.
        """
        layers = self.outputs if modality is None else self.modality_outputs[modality]
        h = self.dropout(features)
        preds = {}
        for name, layer in layers.items():
            kind = self.specs[name]["kind"]
            if kind == "coords":
                res, mask = residues[name]
                preds[name] = layer(res, mask, h)
            elif kind == "regression":
                preds[name] = layer(h).squeeze(-1)
            else:
                preds[name] = layer(h)
        return preds

    def to_output(self, name: str, pred: torch.Tensor) -> torch.Tensor:
        """A raw prediction in the label's units (regression: undo the standardisation)."""
        spec = self.specs[name]
        if spec["kind"] == "regression":
            return pred * spec["target_std"] + spec["target_mean"]
        return pred


def column_loss(spec: dict, pred: torch.Tensor, target: torch.Tensor, coords_mask: torch.Tensor | None = None):
    """The loss of one label column over the rows that have a label; ``None`` when no row has one."""
    kind = spec["kind"]
    if kind == "class":
        valid = target != IGNORE_INDEX
        if not bool(valid.any()):
            return None
        return F.cross_entropy(pred[valid].float(), target[valid])
    if kind == "multilabel":
        valid = ~torch.isnan(target)
        if not bool(valid.any()):
            return None
        return F.binary_cross_entropy_with_logits(pred.float()[valid], target[valid].float())
    if kind == "regression":
        valid = ~torch.isnan(target)
        if not bool(valid.any()):
            return None
        z = (target[valid].float() - spec["target_mean"]) / spec["target_std"]
        return F.mse_loss(pred[valid].float(), z)
    return structure_loss(pred, target, coords_mask)


def structure_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-6):
    """Mean over chains with >= 3 observed residues of (Kabsch-aligned C-alpha RMSD + distance-matrix RMSD), in
    Angstrom. The superposition rotation is found without gradient (the target is rotated onto the prediction), so
    the loss is invariant to the prediction's rotation and translation; dRMSD needs no superposition at all."""
    finite = torch.isfinite(target).all(-1)
    mask = finite if mask is None else mask.bool() & finite
    valid_rows = mask.sum(1) >= 3
    if not bool(valid_rows.any()):
        return None
    pred, target, mask = pred[valid_rows].float(), target[valid_rows].float(), mask[valid_rows]
    w = mask.float().unsqueeze(-1)  # [n, L, 1]
    target = torch.where(mask.unsqueeze(-1), target, torch.zeros_like(target))
    count = w.sum(1)  # [n, 1]
    p = (pred - (pred * w).sum(1, keepdim=True) / count.unsqueeze(1)) * w
    q = (target - (target * w).sum(1, keepdim=True) / count.unsqueeze(1)) * w
    with torch.no_grad():
        u, _, vh = torch.linalg.svd(q.transpose(1, 2) @ p)  # H = sum q_i p_i^T = U S V^T
        v = vh.transpose(1, 2)
        d = torch.sign(torch.det(v @ u.transpose(1, 2)))
        flip = torch.ones_like(u[:, 0])  # [n, 3]
        flip[:, 2] = torch.where(d == 0, torch.ones_like(d), d)
        rotation = v @ torch.diag_embed(flip) @ u.transpose(1, 2)  # R q ~ p
    q_aligned = q @ rotation.transpose(1, 2)
    rmsd = (((p - q_aligned) ** 2).sum(-1).sum(-1) / count.squeeze(-1) + eps).sqrt()
    pair = (mask.unsqueeze(2) & mask.unsqueeze(1)).float()
    pair = pair * (1 - torch.eye(mask.shape[1], device=pair.device))
    drmsd = (((_distances(pred) - _distances(target)) ** 2 * pair).sum((1, 2)) / pair.sum((1, 2)) + eps).sqrt()
    return (rmsd + drmsd).mean()


def _distances(x: torch.Tensor) -> torch.Tensor:
    sq = (x * x).sum(-1)
    return (sq.unsqueeze(2) + sq.unsqueeze(1) - 2 * x @ x.transpose(1, 2)).clamp(min=0).add(1e-8).sqrt()
