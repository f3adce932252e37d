"""A synthetic sample in the Brain Tumor MRI Dataset's layout (``Training|Testing/<class>/Tr-gl_0001.jpg``).

Class-dependent signal: glioma a ragged bright mass in a hemisphere, meningioma a round mass at the skull edge,
pituitary a small mass at the skull base, notumor none. Includes the release's second naming (``Tr-glTr_0000.jpg``,
``Te-noTr_0000.jpg``), a near-duplicate across Training/Testing, an exact duplicate inside Training, an exact
duplicate with a conflicting label, damaged and stray files and a ``Thumbs.db``. ``release="sartaj"`` writes the
SARTAJ release instead: folders ``glioma_tumor``, ``meningioma_tumor``, ``no_tumor``, ``pituitary_tumor`` with
names like ``gg (1).jpg`` and ``image(1).jpg``, reused across Training and Testing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dataset_scripts.sample_sources._draw import bad_jpeg_files, blob, smooth_noise, to_jpeg, write_provenance

__all__ = ["FOLDER", "make", "make_brain_tumor_mri", "CLASSES"]

FOLDER = "Brain-Tumor-MRI-Dataset"

CLASSES = {"glioma": "gl", "meningioma": "me", "notumor": "no", "pituitary": "pi"}
#: The SARTAJ release: its folder per class and its file-name stem before `` (n)`` / ``(n)``.
SARTAJ = {"glioma": ("glioma_tumor", "gg "), "meningioma": ("meningioma_tumor", "m "),
          "notumor": ("no_tumor", "image"), "pituitary": ("pituitary_tumor", "p ")}


def _slice(label: str, rng: np.random.Generator, size: int) -> np.ndarray:
    shape = (size, size)
    cy, cx = size * rng.uniform(0.45, 0.55), size * rng.uniform(0.45, 0.55)
    ry, rx = size * rng.uniform(0.33, 0.42), size * rng.uniform(0.28, 0.38)
    # an irregular outline and tissue texture of its own: slices differ in shape, not only in size and position
    head = blob(shape, (cy, cx), (ry, rx), rng) * (0.45 + 0.3 * smooth_noise(shape, rng, scale=max(4, size // 10)))
    if label == "glioma":
        side = rng.choice([-1, 1])
        head += 0.5 * blob(shape, (cy + rng.uniform(-0.2, 0.1) * ry, cx + side * 0.45 * rx), (0.3 * ry, 0.3 * rx), rng)
    elif label == "meningioma":
        angle = rng.uniform(0, 2 * np.pi)
        head += 0.55 * blob(shape, (cy + 0.8 * ry * np.sin(angle), cx + 0.8 * rx * np.cos(angle)), (0.18 * ry, 0.18 * ry))
    elif label == "pituitary":
        head += 0.6 * blob(shape, (cy + 0.55 * ry, cx), (0.1 * ry, 0.12 * rx))
    return np.clip(head + 0.03 * rng.standard_normal(shape), 0, 1)


def make_brain_tumor_mri(
    root, *, train_per_class=8, test_per_class=3, size=128, seed=0, bad_files=True, release="kaggle"
) -> Path:
    """Write the sample under ``root`` and return it (``release``: ``"kaggle"`` or ``"sartaj"``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    if release == "sartaj":
        return _make_sartaj(root, rng, train_per_class, test_per_class, size)
    if release != "kaggle":
        raise ValueError(f"release {release!r}: expected 'kaggle' or 'sartaj'")
    written = {}
    for split, prefix, n in (("Training", "Tr", train_per_class), ("Testing", "Te", test_per_class)):
        for label, short in CLASSES.items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                data = to_jpeg(_slice(label, rng, size))
                path = folder / f"{prefix}-{short}_{i:04d}.jpg"
                path.write_bytes(data)
                written[path.relative_to(root).as_posix()] = data
    if bad_files:
        # a near duplicate across splits: a test slice, slightly brighter, filed again under Training
        with Image.open(root / "Testing" / "glioma" / "Te-gl_0001.jpg") as image:
            brighter = np.asarray(image, dtype=np.float32) / 255 * 1.04 + 0.01
        (root / "Training" / "glioma" / f"Tr-gl_{train_per_class + 1:04d}.jpg").write_bytes(to_jpeg(brighter, 88))
        # an exact duplicate inside Training, same label (kept, grouped)
        dup = written["Training/pituitary/Tr-pi_0002.jpg"]
        (root / "Training" / "pituitary" / f"Tr-pi_{train_per_class + 1:04d}.jpg").write_bytes(dup)
        # an exact duplicate under another class: a label conflict, both copies rejected
        conflict = written["Training/meningioma/Tr-me_0003.jpg"]
        (root / "Training" / "notumor" / f"Tr-no_{train_per_class + 1:04d}.jpg").write_bytes(conflict)
        # damaged files, a class folder the registry does not know, stray files, a duplicate id
        good = written["Training/notumor/Tr-no_0001.jpg"]
        for i, data in enumerate(bad_jpeg_files(good).values(), start=train_per_class + 2):
            (root / "Training" / "notumor" / f"Tr-no_{i:04d}.jpg").write_bytes(data)
        (root / "Training" / "astrocytoma").mkdir(exist_ok=True)
        (root / "Training" / "astrocytoma" / "Tr-as_0001.jpg").write_bytes(to_jpeg(_slice("glioma", rng, size)))
        (root / "Training" / "glioma" / "Thumbs.db").write_bytes(b"\x00" * 64)
        (root / "notes.txt").write_text("downloaded from Kaggle\n")
        (root / "Testing" / "meningioma" / "Tr-gl_0002.jpg").write_bytes(to_jpeg(_slice("meningioma", rng, size)))
    # the release's second naming: images numbered 0000-0009 with "Tr" after the class code, in both splits
    for split, prefix, label in (("Training", "Tr", "glioma"), ("Testing", "Te", "notumor")):
        name = f"{prefix}-{CLASSES[label]}Tr_0000.jpg"
        (root / split / label / name).write_bytes(to_jpeg(_slice(label, rng, size)))
    write_provenance(root, "generated by dataset_scripts/sample_sources/brain_tumor_mri.py (not real MRI)")
    return root


def _make_sartaj(root: Path, rng, train_per_class: int, test_per_class: int, size: int) -> Path:
    """The SARTAJ release's folders and names (``Training/no_tumor/image(1).jpg``), one name in both splits."""
    for split, n in (("Training", train_per_class), ("Testing", test_per_class)):
        for label, (folder, stem) in SARTAJ.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(1, n + 1):
                (root / split / folder / f"{stem}({i}).jpg").write_bytes(to_jpeg(_slice(label, rng, size)))
    write_provenance(root, "generated by dataset_scripts/sample_sources/brain_tumor_mri.py, SARTAJ (not real MRI)")
    return root


make = make_brain_tumor_mri
