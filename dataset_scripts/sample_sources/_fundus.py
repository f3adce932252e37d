"""Drawing of synthetic fundus photographs (APTOS, EyePACS samples) and PNG/JPEG encoders of grey or RGB arrays."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from dataset_scripts.sample_sources._draw import blob, smooth_noise

__all__ = ["fundus", "encode"]


def encode(array, fmt="PNG", quality=90) -> bytes:
    """PNG or JPEG bytes of a float array in [0, 1], grey (H x W) or RGB (H x W x 3)."""
    data = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(data, mode="L" if data.ndim == 2 else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": quality} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def fundus(grade: int, rng: np.random.Generator, size: int = 80) -> np.ndarray:
    """An RGB fundus photograph: orange retina on black, optic disc, vessels, and lesions growing with the
    DR grade (0-4): microaneurysms, then hard exudates, then blot haemorrhages, then new vessels."""
    shape = (size, size)
    cy, cx = size * rng.uniform(0.45, 0.55, 2)
    r = size * rng.uniform(0.40, 0.47)
    disc = blob(shape, (cy, cx), (r, r)) > 0.5
    light = 0.75 + 0.35 * smooth_noise(shape, rng, scale=max(4, size // 6))
    yy, xx = np.mgrid[:size, :size]
    gx, gy = rng.uniform(-1, 1, 2) / size
    light = light + 0.6 * (gx * (xx - cx) + gy * (yy - cy))
    rgb = np.stack([0.80 * light, 0.38 * light, 0.16 * light], axis=-1)
    angle = rng.uniform(0, 2 * np.pi)
    oy, ox = cy + 0.45 * r * np.sin(angle), cx + 0.45 * r * np.cos(angle)
    rgb += 0.45 * blob(shape, (oy, ox), (0.12 * r, 0.12 * r))[..., None] * np.array([1.0, 0.9, 0.5])
    for k in range(4):  # vessels: dark arcs leaving the optic disc
        theta = angle + np.pi + rng.uniform(-0.9, 0.9)
        t = np.linspace(0, 1.6 * r, 60)
        bend = rng.uniform(-0.6, 0.6)
        py = (oy + t * np.sin(theta + bend * t / r)).astype(int).clip(0, size - 1)
        px = (ox + t * np.cos(theta + bend * t / r)).astype(int).clip(0, size - 1)
        rgb[py, px] *= np.array([0.55, 0.35, 0.35])
    def spots(n, radius, colour, strength):
        for _ in range(n):
            a, d = rng.uniform(0, 2 * np.pi), r * np.sqrt(rng.uniform(0.02, 0.7))
            spot = blob(shape, (cy + d * np.sin(a), cx + d * np.cos(a)), (radius, radius))
            rgb[:] = rgb * (1 - strength * spot[..., None]) + strength * spot[..., None] * np.array(colour)
    spots(3 * grade, 0.9, (0.45, 0.05, 0.05), 0.9)                              # microaneurysms
    if grade >= 2:
        spots(3 * grade, 1.4, (1.0, 0.95, 0.45), 0.9)                           # hard exudates
    if grade >= 3:
        spots(2 * grade, 2.6, (0.35, 0.02, 0.02), 0.8)                          # blot haemorrhages
    if grade >= 4:
        wiggle = np.sin(xx / 1.5 + rng.uniform(0, 6)) * np.sin(yy / 1.7) > 0.75
        near = blob(shape, (oy, ox), (0.35 * r, 0.35 * r)) > 0.2
        rgb[wiggle & near] *= np.array([0.6, 0.3, 0.3])                          # new vessels at the disc
    rgb = rgb * disc[..., None] + 0.02 * rng.standard_normal((*shape, 3))
    return np.clip(rgb, 0, 1)
