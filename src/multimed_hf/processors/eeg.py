"""EEG epochs: a fixed channel set by name, resampling, band-pass filtering and per-channel z-scores."""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Mapping, Sequence

import numpy as np

from multimed_hf.processors.base import ModalityProcessor, ProcessorError

__all__ = ["EEGProcessor", "normalize_channel_name", "MISSING_CHANNEL_POLICIES"]

#: What happens when an epoch lacks channels of the recorded set.
MISSING_CHANNEL_POLICIES = ("error", "zero")


def normalize_channel_name(name: str) -> str:
    """The form channel names are matched in: no surrounding blanks or dots (EEGMMIDB writes ``Fc5.``), no ``EEG``
    prefix (``EEG-Fz``, ``EEG Fz``), case-folded."""
    name = re.sub(r"^EEG[-_ ]+", "", str(name).strip(), flags=re.IGNORECASE)
    return name.strip(". ").casefold()


class EEGProcessor(ModalityProcessor):
    """One epoch (channels x time, with its sampling rate and channel names) -> ``values`` float32 [C, T].

    Steps: align rows to ``channels`` by name (``normalize_channel_name``); resample to ``sfreq`` (polyphase, with
    scipy's anti-aliasing filter); band-pass ``l_freq``..``h_freq`` Hz (zero-phase Butterworth of ``filter_order``;
    either edge ``None`` makes it a high- or low-pass, both ``None`` no filter); z-score each channel over time
    (``normalize=True``); crop or zero-pad the end to ``n_times`` samples (``None``: keep the length, and a batch must
    then share it). Channels of ``channels`` that an epoch lacks are reported by ``align``; ``missing_channels``
    decides: ``"error"`` raises naming them, ``"zero"`` fills them with zeros (the mean, after z-scoring). Channels
    outside ``channels`` are dropped.
    """

    def __init__(self, channels: Sequence[str], sfreq: float = 128.0, l_freq: float | None = 4.0,
                 h_freq: float | None = 40.0, filter_order: int = 4, normalize: bool = True,
                 n_times: int | None = None, missing_channels: str = "error", sfreq_column: str = "sfreq",
                 channels_column: str = "channel_names"):
        self.channels = [str(c) for c in channels]
        keys = [normalize_channel_name(c) for c in self.channels]
        repeated = sorted({c for c, k in zip(self.channels, keys) if keys.count(k) > 1})
        if not self.channels or repeated:
            raise ProcessorError(f"channels must be a non-empty list of distinct names, got repeats {repeated}"
                                 if repeated else "channels is empty: give the recorded channel set")
        if sfreq <= 0:
            raise ProcessorError(f"sfreq={sfreq}: expected a positive sampling rate in Hz")
        nyquist = sfreq / 2
        for name, edge in (("l_freq", l_freq), ("h_freq", h_freq)):
            if edge is not None and not 0 < edge < nyquist:
                raise ProcessorError(f"{name}={edge} Hz: expected 0 < {name} < {nyquist} Hz (the Nyquist frequency of "
                                     f"sfreq={sfreq} Hz)")
        if l_freq is not None and h_freq is not None and l_freq >= h_freq:
            raise ProcessorError(f"l_freq={l_freq} Hz must be below h_freq={h_freq} Hz")
        if missing_channels not in MISSING_CHANNEL_POLICIES:
            raise ProcessorError(f"missing_channels={missing_channels!r}: expected one of {MISSING_CHANNEL_POLICIES}")
        if n_times is not None and n_times < 1:
            raise ProcessorError(f"n_times={n_times}: expected a positive number of samples or None")
        self.sfreq, self.l_freq, self.h_freq = float(sfreq), l_freq, h_freq
        self.filter_order, self.normalize, self.n_times = int(filter_order), bool(normalize), n_times
        self.missing_channels = missing_channels
        self.sfreq_column, self.channels_column = sfreq_column, channels_column
        self._keys = keys
        self._sos = None

    def align(self, channel_names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """(row of each recorded channel in an epoch with ``channel_names``, -1 where absent; the absent names)."""
        where: dict[str, int] = {}
        for i, name in enumerate(channel_names):
            key = normalize_channel_name(name)
            if key in where:
                raise ProcessorError(f"channel names repeat: {name!r} and {channel_names[where[key]]!r}")
            where[key] = i
        rows = np.array([where.get(k, -1) for k in self._keys], dtype=np.int64)
        return rows, [c for c, r in zip(self.channels, rows) if r < 0]

    def resample(self, signal: np.ndarray, sfreq: float) -> np.ndarray:
        """``signal`` (channels x time) at ``self.sfreq``: ``ceil(T * up / down)`` samples."""
        from scipy.signal import resample_poly

        ratio = Fraction(self.sfreq / float(sfreq)).limit_denominator(1000)
        if ratio == 1:
            return signal
        return resample_poly(signal, ratio.numerator, ratio.denominator, axis=-1)

    def band_pass(self, signal: np.ndarray) -> np.ndarray:
        """Zero-phase Butterworth filtering at ``self.sfreq``."""
        if self.l_freq is None and self.h_freq is None:
            return signal
        from scipy.signal import butter, sosfiltfilt

        if self._sos is None:
            if self.l_freq is not None and self.h_freq is not None:
                band, kind = [self.l_freq, self.h_freq], "bandpass"
            else:
                band, kind = (self.l_freq, "highpass") if self.h_freq is None else (self.h_freq, "lowpass")
            self._sos = butter(self.filter_order, band, btype=kind, fs=self.sfreq, output="sos")
        padlen = 3 * (2 * len(self._sos) + 1)
        if signal.shape[-1] <= padlen:
            raise ProcessorError(f"an epoch of {signal.shape[-1]} samples at {self.sfreq:g} Hz is too short to filter "
                                 f"(needs more than {padlen}); lower filter_order or give l_freq=h_freq=None")
        return sosfiltfilt(self._sos, signal, axis=-1)

    def __call__(self, signal: Any, sfreq: float, channel_names: Sequence[str]) -> dict:
        """``{"values": float32 [len(channels), T]}`` for one epoch."""
        signal = np.asarray(signal, dtype=np.float64)
        if signal.ndim != 2 or signal.shape[0] != len(channel_names):
            raise ProcessorError(f"expected an epoch of shape [{len(channel_names)} channels, time] (one row per "
                                 f"channel name), got shape {list(signal.shape)}")
        if sfreq is None or not float(sfreq) > 0:
            raise ProcessorError(f"sampling rate {sfreq!r}: expected a positive number of Hz")
        if not np.isfinite(signal).all():
            raise ProcessorError("the epoch holds NaN or infinite samples")
        rows, missing = self.align(channel_names)
        if missing and self.missing_channels == "error":
            raise ProcessorError(f"the epoch lacks channels {missing} of the recorded set; give "
                                 f"missing_channels='zero' to fill them with zeros")
        present = rows >= 0
        if not present.any():
            raise ProcessorError(f"none of the epoch's channels {list(channel_names)[:10]} is in the recorded set "
                                 f"{self.channels[:10]}")
        picked = self.band_pass(self.resample(signal[rows[present]], sfreq))
        if self.normalize:
            mean = picked.mean(axis=-1, keepdims=True)
            std = picked.std(axis=-1, keepdims=True)
            picked = (picked - mean) / np.where(std > 1e-12, std, 1.0)
        out = np.zeros((len(self.channels), picked.shape[-1]), dtype=np.float32)
        out[present] = picked
        if self.n_times is not None:
            fixed = np.zeros((len(self.channels), self.n_times), dtype=np.float32)
            keep = min(self.n_times, out.shape[-1])
            fixed[:, :keep] = out[:, :keep]
            out = fixed
        return {"values": out}

    def columns(self, specs: Sequence) -> tuple[str, ...]:
        return (specs[0].name, self.sfreq_column, self.channels_column)

    def from_row(self, values: Mapping[str, Any], specs: Sequence) -> dict | None:
        signal = values[specs[0].name]
        if signal is None:
            return None
        names = values[self.channels_column]
        if names is None:
            raise ProcessorError(f"column {self.channels_column!r} is empty: channels cannot be matched by name")
        return self(signal, values[self.sfreq_column], list(names))

    def collate(self, items: Sequence[dict]) -> dict:
        import torch

        lengths = sorted({item["values"].shape[-1] for item in items})
        if len(lengths) > 1:
            raise ProcessorError(f"EEG epochs in one batch differ in length after resampling ({lengths} samples); "
                                 f"give the EEG processor n_times to crop or pad them to")
        return {"values": torch.from_numpy(np.stack([item["values"] for item in items]))}

    def to_dict(self) -> dict:
        return {"channels": list(self.channels), "sfreq": self.sfreq, "l_freq": self.l_freq, "h_freq": self.h_freq,
                "filter_order": self.filter_order, "normalize": self.normalize, "n_times": self.n_times,
                "missing_channels": self.missing_channels, "sfreq_column": self.sfreq_column,
                "channels_column": self.channels_column}
