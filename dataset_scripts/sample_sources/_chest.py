"""A synthetic chest in Hounsfield units, for the CT sample sources (deterministic, numpy only)."""

from __future__ import annotations

import numpy as np

from dataset_scripts.sample_sources._draw import blob, smooth_noise

__all__ = ["chest_hu", "chest_slice_hu"]


def chest_slice_hu(
    shape, rng: np.random.Generator, *, level=1.0, ggo=0.0, consolidation=0.0, sides=(-1, 1), peripheral=False,
) -> np.ndarray:
    """One axial slice (rows x columns): air, a body of soft tissue, two lungs; ``ggo`` and ``consolidation``
    are the fractions of the lungs on ``sides`` (-1 image left, +1 image right) covered by ground glass
    (about -450 HU) and consolidation (about 10 HU); ``peripheral`` keeps them near the lung edges."""
    h, w = shape
    body = blob(shape, (h / 2, w / 2), (0.34 * h, 0.42 * w)) > 0.5
    hu = np.where(body, 40 + 25 * smooth_noise(shape, rng, scale=8), -1000.0)
    lungs = {}
    for side in (-1, 1):
        radius = (0.22 * h * level + 2, 0.14 * w * level + 2)
        lung = blob(shape, (h / 2, w / 2 + side * 0.2 * w), radius, rng)
        lungs[side] = (lung > 0.5) & body, lung
        hu = np.where(lungs[side][0], -850 + 30 * smooth_noise(shape, rng, scale=6), hu)
    for side in sides:
        mask, depth = lungs[side]
        if not mask.any():
            continue
        field = smooth_noise(shape, rng, scale=4) - (2.0 * depth if peripheral else 0.0)
        for fraction, value in ((ggo, -450.0), (consolidation, 10.0)):
            if fraction > 0:
                cut = np.quantile(field[mask], 1 - fraction)
                hu = np.where(mask & (field >= cut), value + 50 * smooth_noise(shape, rng, scale=5), hu)
    return (hu + 8 * rng.standard_normal(shape)).astype(np.float32)


def chest_hu(shape, rng: np.random.Generator, **findings) -> np.ndarray:
    """A volume ``(x, y, z)`` of ``chest_slice_hu`` slices, lungs largest mid-volume (x across, y front-back)."""
    nx, ny, nz = shape
    volume = np.empty(shape, dtype=np.float32)
    for z in range(nz):
        level = 1 - abs(z - (nz - 1) / 2) / nz
        volume[:, :, z] = chest_slice_hu((ny, nx), rng, level=level, **findings).T
    return volume
