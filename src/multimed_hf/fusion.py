"""The paper's fusion families over per-row presence masks: early (eq. 2), intermediate (eq. 3/6), late (eq. 4)."""

import torch
from torch import nn

from .blocks import TransformerBlock, scatter_rows
from .output_kinds import OutputKind, get_output_kind

__all__ = ["IntermediateFusion", "EarlyFusion", "combine_late"]


class IntermediateFusion(nn.Module):
    """psi of eq. 3 over the projected features h^(m) of the modalities present in each row.

    - ``concat``: ``W [h^(1); ...; h^(M)] + b``, computed as ``sum_m W_m h^(m) + b`` over present modalities: an
      absent modality's block of the concatenation is empty, so it contributes nothing (no zero inputs are encoded).
    - ``mean``: the mean of the present modalities' features.
    - ``gated``: ``sum_m a_m tanh(W h^(m))``, ``a`` a softmax over the present modalities of a learned score.
    - ``attention``: transformer blocks over a [CLS] token and the present modalities' tokens (one pooled vector
      each, or their whole token sequences), modality embeddings added; absent ones are masked out as keys.
    """

    extra_parameters = {"bias": "zeros", "cls_token": "normal", "modality_embeddings": "normal"}

    def __init__(self, method: str, modalities: list[str], hidden_size: int, num_layers: int = 1,
                 num_heads: int = 4, intermediate_size: int = 1024, dropout: float = 0.0,
                 attn_implementation: str | None = "sdpa"):
        super().__init__()
        self.method = method
        self.slot = {m: i for i, m in enumerate(modalities)}
        if method == "concat":
            self.linear = nn.ModuleDict({m: nn.Linear(hidden_size, hidden_size, bias=False) for m in modalities})
            self.bias = nn.Parameter(torch.zeros(hidden_size))
        elif method == "gated":
            self.transform = nn.Linear(hidden_size, hidden_size)
            self.gate = nn.Linear(hidden_size, 1)
        elif method == "attention":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
            self.modality_embeddings = nn.Parameter(torch.zeros(len(modalities), hidden_size))
            self.layers = nn.ModuleList(
                TransformerBlock(hidden_size, num_heads, intermediate_size, dropout, attn_implementation)
                for _ in range(num_layers)
            )
            self.norm = nn.LayerNorm(hidden_size)

    def forward(self, features: dict, presence: torch.Tensor, modalities: list[str], batch_size: int,
                sequences: dict | None = None) -> torch.Tensor:
        """features: m -> (rows [n_m], h [n_m, H]); presence [B, len(modalities)] bool; returns fused [B, H].

        sequences (attention over token sequences): m -> (rows, tokens [n_m, T_m, H], mask [n_m, T_m] or None).
        """
        if self.method == "concat":
            out = self.bias.expand(batch_size, -1)
            for m, (rows, h) in features.items():
                out = out + scatter_rows(self.linear[m](h), rows, batch_size)
            return out
        if self.method == "mean":
            out = sum(scatter_rows(h, rows, batch_size) for rows, h in features.values())
            return out / presence.sum(1, keepdim=True).clamp(min=1).to(out.dtype)
        if self.method == "gated":
            scores, values = [], []
            for j, m in enumerate(modalities):
                if m not in features:
                    continue
                rows, h = features[m]
                scores.append(scatter_rows(self.gate(h).squeeze(-1), rows, batch_size).masked_fill(~presence[:, j],
                                                                                                    float("-inf")))
                values.append(scatter_rows(torch.tanh(self.transform(h)), rows, batch_size))
            weights = torch.stack(scores, 1).softmax(1).nan_to_num(0.0)  # [B, M'] over present modalities
            return (weights.unsqueeze(-1) * torch.stack(values, 1)).sum(1)
        # attention
        tokens, masks = [], []
        for j, m in enumerate(modalities):
            if m not in features:
                continue
            emb = self.modality_embeddings[self.slot[m]]
            if sequences is None:
                rows, h = features[m]
                tokens.append(scatter_rows(h, rows, batch_size).unsqueeze(1) + emb)
                masks.append(presence[:, j : j + 1])
            else:
                rows, seq, mask = sequences[m]
                tokens.append(scatter_rows(seq, rows, batch_size) + emb)
                if mask is None:
                    mask = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device)
                masks.append(scatter_rows(mask, rows, batch_size) & presence[:, j : j + 1])
        cls = self.cls_token.expand(batch_size, -1, -1)
        x = torch.cat([cls, *tokens], 1)
        key_mask = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool, device=x.device), *masks], 1)
        for layer in self.layers:
            x = layer(x, key_mask)
        return self.norm(x[:, 0])


class EarlyFusion(nn.Module):
    """phi of eq. 2 as concatenation: every present modality's input tokens (from its embedder), a modality embedding
    added, joined with a [CLS] token into one sequence for a shared transformer encoder; absent rows are masked."""

    extra_parameters = {"cls_token": "normal", "modality_embeddings": "normal"}

    def __init__(self, modalities: list[str], hidden_size: int, num_layers: int, num_heads: int,
                 intermediate_size: int, dropout: float = 0.0, attn_implementation: str | None = "sdpa"):
        super().__init__()
        self.slot = {m: i for i, m in enumerate(modalities)}
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.modality_embeddings = nn.Parameter(torch.zeros(len(modalities), hidden_size))
        self.layers = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, intermediate_size, dropout, attn_implementation)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, sequences: dict, presence: torch.Tensor, modalities: list[str], batch_size: int):
        """sequences: m -> (rows, tokens [n_m, T_m, H], mask or None). Returns fused [B, H] and m -> ([B, T_m, H],
        [B, T_m] mask), the shared encoder's output tokens of each modality's segment."""
        tokens, masks, spans = [], [], {}
        start = 1
        for j, m in enumerate(modalities):
            if m not in sequences:
                continue
            rows, seq, mask = sequences[m]
            if mask is None:
                mask = torch.ones(seq.shape[:2], dtype=torch.bool, device=seq.device)
            tokens.append(scatter_rows(seq, rows, batch_size) + self.modality_embeddings[self.slot[m]])
            masks.append(scatter_rows(mask, rows, batch_size) & presence[:, j : j + 1])
            spans[m] = (start, start + seq.shape[1])
            start += seq.shape[1]
        x = torch.cat([self.cls_token.expand(batch_size, -1, -1), *tokens], 1)
        key_mask = torch.cat([torch.ones(batch_size, 1, dtype=torch.bool, device=x.device), *masks], 1)
        for layer in self.layers:
            x = layer(x, key_mask)
        x = self.norm(x)
        segments = {m: (x[:, a:b], key_mask[:, a:b]) for m, (a, b) in spans.items()}
        return x[:, 0], segments


def combine_late(predictions: torch.Tensor, presence: torch.Tensor, kind, method: str,
                 weight_logits: torch.Tensor | None = None) -> torch.Tensor:
    """omega of eq. 4 over per-modality predictions [B, M, ...] (logits; standardised values for regression).

    ``weighted_mean``: a softmax of learned per-modality weights over the modalities present in each row.
    ``vote``: the output kind's own vote (``kind``: an ``OutputKind`` or its name; class: log(vote share) of the
    argmaxes, multilabel: per-label majority, regression: the median). Not differentiable.
    """
    if method == "weighted_mean":
        p = presence.to(predictions.dtype)
        logits = weight_logits.to(predictions.dtype).expand_as(p).masked_fill(~presence, float("-inf"))
        w = logits.softmax(1).nan_to_num(0.0)
        w = w.view(*w.shape, *([1] * (predictions.ndim - 2)))
        return (w * predictions).sum(1)
    return (kind if isinstance(kind, OutputKind) else get_output_kind(kind)).vote(predictions, presence)
