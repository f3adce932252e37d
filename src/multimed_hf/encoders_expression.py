"""Expression encoders for gene panels (scRNA-seq cells, pseudo-bulk profiles): attention over gene-chunk tokens, an MLP."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import TransformerBlock

__all__ = ["ExpressionEncoder", "ExpressionMLPEncoder"]


def _check_values(modality: str, inputs: dict, num_genes: int) -> None:
    values = inputs.get("values")
    if set(inputs) != {"values"} or values is None:
        raise ValueError(f"inputs[{modality!r}]: the expression encoder takes only 'values' [n, genes], "
                         f"got keys {sorted(inputs)}")
    if values.ndim != 2 or values.shape[1] != num_genes:
        raise ValueError(f"inputs[{modality!r}]['values']: expected [n, {num_genes}] over the model's gene "
                         f"panel, got shape {list(values.shape)}")


class ExpressionEncoder(nn.Module):
    """scBERT-style attention model: the panel's genes cut into chunks of `patch_size`, one token per chunk (a linear
    map of its values plus a learned per-chunk gene-identity embedding), a [CLS] token, transformer blocks. In
    training only, ``input_dropout`` zeroes gene values (dropout events) and ``input_noise`` adds Gaussian noise of
    that standard deviation to them."""

    # Parameters outside standard layers, for MultiMedPreTrainedModel._init_weights.
    extra_parameters = {"cls_token": "normal", "gene_embeddings": "normal"}

    def __init__(self, num_genes: int = 2000, patch_size: int = 16, hidden_size: int = 128, num_layers: int = 2,
                 num_heads: int = 4, intermediate_size: int | None = None, dropout: float = 0.1,
                 attn_implementation: str | None = "sdpa", input_dropout: float = 0.0, input_noise: float = 0.0):
        super().__init__()
        if input_noise < 0:
            raise ValueError(f"input_noise={input_noise}: expected the standard deviation of the Gaussian noise "
                             f"added to the expression values in training (>= 0)")
        self.num_genes, self.patch_size = num_genes, patch_size
        self.input_dropout = nn.Dropout(input_dropout)  # drops gene values in training (dropout-event augmentation)
        self.input_noise = float(input_noise)  # std of Gaussian noise added to the values in training
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
        _check_values(modality, inputs, self.num_genes)

    def forward(self, values: torch.Tensor):
        n = values.shape[0]
        pad = self.num_tokens * self.patch_size - self.num_genes
        values = self.input_dropout(values)
        if self.training and self.input_noise > 0:
            values = values + self.input_noise * torch.randn_like(values)
        x = F.pad(values, (0, pad)).view(n, self.num_tokens, self.patch_size)
        x = self.value_embed(x) + self.gene_embeddings
        x = torch.cat([self.cls_token.expand(n, -1, -1), x], dim=1)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return x[:, 0], x[:, 1:], None


class ExpressionMLPEncoder(nn.Module):
    """A plain MLP over the whole panel (the domain-specific expression model, spec kind ``"mlp"``): dropout on the
    input genes, then ``num_layers`` x (linear -> LayerNorm -> GELU -> dropout). One feature vector per row, given
    also as a one-token sequence for fusions that attend over tokens."""

    def __init__(self, num_genes: int = 2000, hidden_size: int = 256, num_layers: int = 2, dropout: float = 0.1,
                 input_dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers={num_layers}: the MLP needs at least one layer")
        self.num_genes = num_genes
        self.input_dropout = nn.Dropout(input_dropout)
        sizes = [num_genes] + [hidden_size] * num_layers
        self.layers = nn.Sequential(*(
            nn.Sequential(nn.Linear(a, b), nn.LayerNorm(b), nn.GELU(), nn.Dropout(dropout))
            for a, b in zip(sizes[:-1], sizes[1:])
        ))
        self.output_dim = hidden_size

    def check_inputs(self, modality: str, inputs: dict, n: int) -> None:
        _check_values(modality, inputs, self.num_genes)

    def forward(self, values: torch.Tensor):
        pooled = self.layers(self.input_dropout(values))
        return pooled, pooled[:, None], None
