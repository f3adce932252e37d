"""An expression encoder for gene panels (scRNA-seq cells, pseudo-bulk profiles): attention over gene-chunk tokens."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import TransformerBlock

__all__ = ["ExpressionEncoder"]


class ExpressionEncoder(nn.Module):
    """scBERT-style attention model: the panel's genes cut into chunks of `patch_size`, one token per chunk (a linear
    map of its values plus a learned per-chunk gene-identity embedding), a [CLS] token, transformer blocks."""

    # Parameters outside standard layers, for MultiMedPreTrainedModel._init_weights.
    extra_parameters = {"cls_token": "normal", "gene_embeddings": "normal"}

    def __init__(self, num_genes: int = 2000, patch_size: int = 16, hidden_size: int = 128, num_layers: int = 2,
                 num_heads: int = 4, intermediate_size: int | None = None, dropout: float = 0.1,
                 attn_implementation: str | None = "sdpa"):
        super().__init__()
        self.num_genes, self.patch_size = num_genes, patch_size
        self.num_tokens = math.ceil(num_genes / patch_size)
        self.value_embed = nn.Linear(patch_size, hidden_size)
        self.gene_embeddings = nn.Parameter(torch.zeros(1, self.num_tokens, hidden_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.layers = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, intermediate_size or 4 * hidden_size, dropout, attn_implementation)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.output_dim = hidden_size

    def check_inputs(self, modality: str, inputs: dict, n: int) -> None:
        values = inputs.get("values")
        if set(inputs) != {"values"} or values is None:
            raise ValueError(f"inputs[{modality!r}]: the expression encoder takes only 'values' [n, genes], "
                             f"got keys {sorted(inputs)}")
        if values.ndim != 2 or values.shape[1] != self.num_genes:
            raise ValueError(f"inputs[{modality!r}]['values']: expected [n, {self.num_genes}] over the model's gene "
                             f"panel, got shape {list(values.shape)}")

    def forward(self, values: torch.Tensor):
        n = values.shape[0]
        pad = self.num_tokens * self.patch_size - self.num_genes
        x = F.pad(values, (0, pad)).view(n, self.num_tokens, self.patch_size)
        x = self.value_embed(x) + self.gene_embeddings
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:], None
