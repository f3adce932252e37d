"""Building blocks the MultiMed model shares: a pre-norm transformer block on SDPA, sinusoidal positions, masked means."""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

__all__ = ["TransformerBlock", "sinusoidal_positions", "masked_mean", "residue_mask", "scatter_rows"]


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-norm self-attention + MLP block; `key_mask` [B, T] is True where a token may be attended to."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float = 0.0,
                 attn_implementation: str | None = "sdpa"):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) is not a multiple of num_heads ({num_heads})")
        self.num_heads = num_heads
        self.attn_implementation = attn_implementation or "sdpa"
        self.norm1 = nn.LayerNorm(hidden_size)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout

    def forward(self, hidden_states: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, h = hidden_states.shape
        q, k, v = self.qkv(self.norm1(hidden_states)).view(b, t, 3, self.num_heads, h // self.num_heads).unbind(2)
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        p = self.attention_dropout if self.training else 0.0
        if self.attn_implementation == "eager":
            scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            attn = F.dropout(scores.softmax(-1), p=p, training=self.training) @ v
        else:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        hidden_states = hidden_states + self.dropout(self.out_proj(attn.transpose(1, 2).reshape(b, t, h)))
        return hidden_states + self.dropout(self.fc2(self.dropout(F.gelu(self.fc1(self.norm2(hidden_states))))))


def sinusoidal_positions(length: int, dim: int, device=None, dtype=None) -> torch.Tensor:
    """[length, dim] fixed sinusoidal position encodings (no parameters, no length limit)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device, dtype=torch.float32)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table.to(dtype) if dtype is not None else table


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, dim: int = 1) -> torch.Tensor:
    """Mean of `x` over `dim` where `mask` (same leading shape, bool) is True; all of it when `mask` is None."""
    if mask is None:
        return x.mean(dim)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim) / w.sum(dim).clamp(min=1.0)


def residue_mask(mask: torch.Tensor) -> torch.Tensor:
    """The residues of a right-padded ``<cls> residues <eos> <pad>...`` token mask [B, T]: [B, T - 2], without the
    ``<eos>`` of a row shorter than the batch's longest (``mask[:, 1:-1]`` kept it, so a chain's residues attended to
    it in a batch and not alone)."""
    return mask[:, 1:-1] & mask[:, 2:]


def scatter_rows(values: torch.Tensor, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Place `values` [n, ...] at batch rows `rows` [n] of a zero tensor [batch_size, ...] (differentiable)."""
    if values.shape[0] == batch_size:
        return values  # every row present, in order (rows come sorted from a presence mask)
    out = values.new_zeros((batch_size, *values.shape[1:]))
    return out.index_copy(0, rows, values)
