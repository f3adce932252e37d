"""The coordinates head: C-alpha positions from per-residue features, and its rotation-invariant loss."""

import torch
from torch import nn

from .blocks import TransformerBlock

__all__ = ["StructureHead", "structure_loss", "ANGSTROM_PER_UNIT"]

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
        # the coordinates in the layer's own dtype, not autocast's: in bf16 every coordinate past 32 A would be a
        # multiple of 0.25 A
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = self.norm(x.to(self.norm.weight.dtype))
            return self.coords(h).float() * ANGSTROM_PER_UNIT


def structure_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-6):
    """Mean over chains with >= 3 observed residues of (Kabsch-aligned C-alpha RMSD + distance-matrix RMSD), in
    Angstrom. The superposition rotation is found without gradient (the target is rotated onto the prediction), so
    the loss is invariant to the prediction's rotation and translation; dRMSD needs no superposition at all. In
    float32 whatever autocast says (``torch.det`` and the SVD have no bf16 kernels)."""
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return _structure_loss(pred, target, mask, eps)


def _structure_loss(pred, target, mask, eps):
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
