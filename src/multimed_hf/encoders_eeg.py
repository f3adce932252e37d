"""Our own EEG encoders (the Hub has no EEG checkpoint in transformers form): an LSTM and a temporal-conv network."""

import torch
from torch import nn

from .blocks import masked_mean

__all__ = ["EEGLSTMEncoder", "EEGTCNEncoder"]


class _EEGBase(nn.Module):
    def check_inputs(self, modality: str, inputs: dict, n: int) -> None:
        values = inputs.get("values")
        if set(inputs) != {"values"} or values is None:
            raise ValueError(f"inputs[{modality!r}]: the EEG encoder takes only 'values' [n, channels, time], "
                             f"got keys {sorted(inputs)}")
        if values.ndim != 3 or values.shape[1] != self.num_channels:
            raise ValueError(f"inputs[{modality!r}]['values']: expected [n, {self.num_channels}, time], "
                             f"got shape {list(values.shape)}")


class EEGLSTMEncoder(_EEGBase):
    """Strided temporal conv stem (channels -> hidden, time / `downsample`) then a (bi)LSTM; the paper's EEG model."""

    def __init__(self, num_channels: int = 64, hidden_size: int = 128, num_layers: int = 2,
                 bidirectional: bool = True, downsample: int = 4, dropout: float = 0.1):
        super().__init__()
        self.num_channels = num_channels
        self.stem = nn.Conv1d(num_channels, hidden_size, kernel_size=downsample, stride=downsample)
        self.lstm = nn.LSTM(hidden_size, hidden_size, num_layers=num_layers, batch_first=True,
                            bidirectional=bidirectional, dropout=dropout if num_layers > 1 else 0.0)
        self.output_dim = hidden_size * (2 if bidirectional else 1)

    def forward(self, values: torch.Tensor):
        x = self.stem(values).transpose(1, 2)  # [n, T', H]
        seq, _ = self.lstm(x)
        return masked_mean(seq, None), seq, None


class EEGTCNEncoder(_EEGBase):
    """Temporal convolution network: a 1x1 stem, then residual dilated conv blocks (dilation 1, 2, 4, ...)."""

    def __init__(self, num_channels: int = 64, hidden_size: int = 128, num_layers: int = 4, kernel_size: int = 7,
                 downsample: int = 4, dropout: float = 0.1):
        super().__init__()
        self.num_channels = num_channels
        self.stem = nn.Conv1d(num_channels, hidden_size, kernel_size=downsample, stride=downsample)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv1d(hidden_size, hidden_size, kernel_size, dilation=2**i, padding=(kernel_size // 2) * 2**i),
                nn.GroupNorm(1, hidden_size),
                nn.GELU(),
                nn.Dropout(dropout),
            )
            for i in range(num_layers)
        )
        self.output_dim = hidden_size

    def forward(self, values: torch.Tensor):
        x = self.stem(values)
        for block in self.blocks:
            x = x + block(x)
        seq = x.transpose(1, 2)
        return masked_mean(seq, None), seq, None
