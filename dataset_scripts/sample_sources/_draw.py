"""Small drawing helpers for the synthetic sample sources (deterministic, numpy only)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["blob", "smooth_noise", "to_jpeg", "write_provenance", "bad_jpeg_files"]


def blob(shape, center, radius, rng=None):
    """A soft disc in [0, 1], optionally with a ragged edge."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    dist = np.hypot((yy - center[0]) / radius[0], (xx - center[1]) / radius[1])
    if rng is not None:
        dist = dist * (1 + 0.25 * smooth_noise(shape, rng, scale=6))
    return np.clip(1.5 - dist, 0, 1)


def smooth_noise(shape, rng, scale=8):
    """Low-frequency noise in about [-1, 1]: distinct per image, so perceptual hashes differ."""
    small = rng.standard_normal((max(2, shape[0] // scale), max(2, shape[1] // scale)))
    image = Image.fromarray(((small - small.min()) / np.ptp(small) * 255).astype(np.uint8))
    return np.asarray(image.resize(shape[::-1], Image.BICUBIC), dtype=np.float32) / 127.5 - 1


def to_jpeg(array, quality=92) -> bytes:
    """Grey uint8 JPEG bytes of a float array in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8), mode="L").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_provenance(root: Path, description: str) -> None:
    (root / "MULTIMED_SOURCE.json").write_text(json.dumps({"synthetic": True, "description": description}, indent=2))


def bad_jpeg_files(good: bytes) -> dict[str, bytes]:
    """The damaged files every real image source shows sooner or later."""
    return {
        "half_cut": good[: len(good) // 2],
        "empty": b"",
        "not_an_image": b"this is a text file with an image name\n",
    }
