"""Early-fusion input embedders (eq. 2): each modality's raw input as tokens of the shared size, before one encoder."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import masked_mean, sinusoidal_positions

__all__ = ["PatchEmbedder", "TokenEmbedder", "ExpressionEmbedder", "EEGEmbedder", "EMBEDDERS"]


class _Embedder(nn.Module):
    input_keys: tuple = ()

    def _check_keys(self, modality, inputs, required):
        if not set(required) <= set(inputs) <= set(self.input_keys):
            raise ValueError(f"inputs[{modality!r}]: {type(self).__name__} takes {list(self.input_keys)} "
                             f"(required {list(required)}), got keys {sorted(inputs)}")

    def _finish(self, tokens, mask):
        tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2], tokens.device, tokens.dtype)
        return masked_mean(tokens, mask), tokens, mask


class PatchEmbedder(_Embedder):
    """Images [n, C, H, W] -> non-overlapping patches -> linear map (a strided conv)."""

    input_keys = ("pixel_values",)

    def __init__(self, hidden_size: int, num_channels: int = 3, patch_size: int = 16):
        super().__init__()
        self.num_channels, self.patch_size = num_channels, patch_size
        self.projection = nn.Conv2d(num_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.output_dim = hidden_size

    def check_inputs(self, modality, inputs, n):
        self._check_keys(modality, inputs, ("pixel_values",))
        pv = inputs["pixel_values"]
        if pv.ndim != 4 or pv.shape[1] != self.num_channels or min(pv.shape[2:]) < self.patch_size:
            raise ValueError(f"inputs[{modality!r}]['pixel_values']: expected [n, {self.num_channels}, H, W] with H, W "
                             f">= patch_size {self.patch_size}, got shape {list(pv.shape)}")

    def forward(self, pixel_values):
        return self._finish(self.projection(pixel_values).flatten(2).transpose(1, 2), None)


class TokenEmbedder(_Embedder):
    """Token ids [n, T] (+ attention_mask) -> embeddings; the vocabulary is the processor tokenizer's."""

    input_keys = ("input_ids", "attention_mask")

    def __init__(self, hidden_size: int, vocab_size: int, pad_token_id: int | None = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.embeddings = nn.Embedding(vocab_size, hidden_size, padding_idx=pad_token_id)
        self.output_dim = hidden_size

    def check_inputs(self, modality, inputs, n):
        self._check_keys(modality, inputs, ("input_ids",))
        ids, mask = inputs["input_ids"], inputs.get("attention_mask")
        if ids.ndim != 2 or (mask is not None and mask.shape != ids.shape):
            raise ValueError(f"inputs[{modality!r}]: expected input_ids [n, T] and attention_mask of the same shape, "
                             f"got {list(ids.shape)} and {None if mask is None else list(mask.shape)}")
        if ids.numel() and (int(ids.max()) >= self.vocab_size or int(ids.min()) < 0):
            raise ValueError(f"inputs[{modality!r}]['input_ids']: ids span [{int(ids.min())}, {int(ids.max())}] but the "
                             f"embedder's vocabulary has {self.vocab_size} entries; set its 'vocab_size' to the "
                             f"tokenizer's")

    def forward(self, input_ids, attention_mask=None):
        mask = None if attention_mask is None else attention_mask.bool()
        return self._finish(self.embeddings(input_ids), mask)


class ExpressionEmbedder(_Embedder):
    """Expression over the gene panel [n, G] -> chunks of `patch_size` genes -> linear map + gene-chunk identity."""

    input_keys = ("values",)
    extra_parameters = {"gene_embeddings": "normal"}

    def __init__(self, hidden_size: int, num_genes: int = 2000, patch_size: int = 16):
        super().__init__()
        self.num_genes, self.patch_size = num_genes, patch_size
        self.num_tokens = math.ceil(num_genes / patch_size)
        self.value_embed = nn.Linear(patch_size, hidden_size)
        self.gene_embeddings = nn.Parameter(torch.zeros(1, self.num_tokens, hidden_size))
        self.output_dim = hidden_size

    def check_inputs(self, modality, inputs, n):
        self._check_keys(modality, inputs, ("values",))
        v = inputs["values"]
        if v.ndim != 2 or v.shape[1] != self.num_genes:
            raise ValueError(f"inputs[{modality!r}]['values']: expected [n, {self.num_genes}], got {list(v.shape)}")

    def forward(self, values):
        pad = self.num_tokens * self.patch_size - self.num_genes
        x = F.pad(values, (0, pad)).view(values.shape[0], self.num_tokens, self.patch_size)
        return self._finish(self.value_embed(x) + self.gene_embeddings, None)


class EEGEmbedder(_Embedder):
    """EEG [n, C, T] -> windows of `patch_size` samples -> linear map over channels x window (a strided conv)."""

    input_keys = ("values",)

    def __init__(self, hidden_size: int, num_channels: int = 64, patch_size: int = 16):
        super().__init__()
        self.num_channels, self.patch_size = num_channels, patch_size
        self.projection = nn.Conv1d(num_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.output_dim = hidden_size

    def check_inputs(self, modality, inputs, n):
        self._check_keys(modality, inputs, ("values",))
        v = inputs["values"]
        if v.ndim != 3 or v.shape[1] != self.num_channels or v.shape[2] < self.patch_size:
            raise ValueError(f"inputs[{modality!r}]['values']: expected [n, {self.num_channels}, T >= "
                             f"{self.patch_size}], got {list(v.shape)}")

    def forward(self, values):
        return self._finish(self.projection(values).transpose(1, 2), None)


EMBEDDERS = {
    "patch_embed": PatchEmbedder,
    "token_embed": TokenEmbedder,
    "expression_embed": ExpressionEmbedder,
    "eeg_embed": EEGEmbedder,
}
