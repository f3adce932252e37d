"""A synthetic sample in PMC-OA's layout (HF ``axiong/pmc_oa``, ``images.zip`` unpacked in place).

``caption_T060_filtered_top4_sep_v0_subfigures/PMC<id>_Fig<k>_<n>.jpg`` subfigures (RGB JPEGs) of four kinds, each
with a caption that says what it shows, so image-text alignment has something to learn: chest radiographs (with or
without a mass, left or right), stained micrographs (sparse or dense nuclei), bar charts (rising or falling bars)
and line plots (increasing or decreasing). ``pmc_oa.jsonl`` holds one row a subfigure (image, caption,
alignment_type, alignment_score: the alignment values are placeholders, the real release's values are not known
here); ``pmc_oa_beta.jsonl`` the figures' compound captions; ``images.zip`` the packed folder; ``README.md`` the
Hub repository's card. ``release="early"`` writes the early release instead: ``train.jsonl`` / ``valid.jsonl`` /
``test.jsonl`` with pmcid and url_name, one article's subfigures split between train and test (a leak the build
repairs).

Bad inputs: a row whose image is missing, a cut line (not JSON), a row with an empty caption (its image's only row),
a cut JPEG, an all-white subfigure (a failed panel crop), an image no row refers to, and a stray file; an exact copy
of one subfigure reused in another article (grouped with it).
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from dataset_scripts.sample_sources._draw import blob, smooth_noise, write_provenance
from dataset_scripts.sample_sources._zip import write_zip
from dataset_scripts.sample_sources.vqa_rad import draw_organ

__all__ = ["FOLDER", "IMAGES", "KINDS", "make", "make_pmc_oa", "draw_subfigure"]

FOLDER = "pmc_oa"
IMAGES = "caption_T060_filtered_top4_sep_v0_subfigures"
KINDS = ("xray", "micrograph", "bar", "line")
SIDE = 64
#: PMC ids chosen so that the split by article hash (90/5/5) gives the current release's sample an article in
#: validation (PMC3103207) and two in test (PMC3101073, PMC3103789).
ARTICLES = (3100200, 3100297, 3100394, 3100491, 3100588, 3103207, 3101073, 3103789)


def _rgb_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), mode="RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def draw_subfigure(kind: str, variant: str, rng: np.random.Generator) -> np.ndarray:
    """An RGB image in [0, 1] of ``kind`` (``KINDS``) and ``variant`` (what its caption states)."""
    shape = (SIDE, SIDE)
    if kind == "xray":
        grey = draw_organ("CHEST", None if variant == "none" else variant, rng, size=SIDE)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if kind == "micrograph":
        image = np.stack([0.93 - 0.05 * smooth_noise(shape, rng, 8), 0.75 + 0.05 * smooth_noise(shape, rng, 8),
                          np.full(shape, 0.85)], axis=2)
        for _ in range(28 if variant == "dense" else 7):
            nucleus = blob(shape, rng.uniform(4, SIDE - 4, 2), (2.5, 2.5), rng)
            image -= nucleus[:, :, None] * np.array([0.55, 0.6, 0.25])
        return image
    image = np.ones((SIDE, SIDE, 3))
    image[SIDE - 8, 6:] = image[6:SIDE - 7, 6] = 0.0  # axes
    if kind == "bar":
        heights = np.sort(rng.uniform(0.2, 0.85, 4))
        heights = heights if variant == "rising" else heights[::-1]
        colour = rng.uniform(0.1, 0.7, 3)
        for n, h in enumerate(heights):
            left = 10 + 12 * n
            image[int(SIDE - 8 - h * (SIDE - 16)):SIDE - 8, left:left + 8] = colour
        return image
    x = np.arange(8, SIDE - 2)
    slope = 1 if variant == "increasing" else -1
    y = SIDE / 2 - slope * (x - SIDE / 2) * 0.6 + rng.normal(0, 1.5, x.size)
    for xi, yi in zip(x, np.clip(y, 4, SIDE - 10).astype(int)):
        image[yi - 1:yi + 2, xi] = (0.1, 0.2, 0.8)
    return image


_CAPTIONS = {
    ("xray", "left"): "Chest radiograph showing a mass in the left lung",
    ("xray", "right"): "Chest X-ray with a right-sided lung mass",
    ("xray", "none"): "Normal chest radiograph without focal lesion",
    ("micrograph", "dense"): "H&E stained micrograph with dense nuclei",
    ("micrograph", "sparse"): "Histology section with sparse cells",
    ("bar", "rising"): "Bar chart: expression rises across the four groups",
    ("bar", "falling"): "Bar graph of cell counts falling across groups",
    ("line", "increasing"): "Line plot of tumour volume increasing over time",
    ("line", "decreasing"): "Survival curve decreasing over follow-up",
}
_VARIANTS = {kind: [v for k, v in _CAPTIONS if k == kind] for kind in KINDS}


def _plan(rng: np.random.Generator) -> list[tuple[str, int, list[tuple[str, str]]]]:
    """``(pmcid, figure number, [(kind, variant) per subfigure])`` for every figure."""
    figures = []
    for a, number in enumerate(ARTICLES):
        pmcid = f"PMC{number}"
        for fig in range(1, 2 + a % 2):
            count = 2 + (a + fig) % 3
            kinds = [KINDS[(a + fig + n) % len(KINDS)] for n in range(count)]
            figures.append((pmcid, fig, [(k, _VARIANTS[k][int(rng.integers(len(_VARIANTS[k])))]) for k in kinds]))
    return figures


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def make_pmc_oa(root, *, seed: int = 17, release: str = "current", bad_files: bool = True) -> Path:
    """Write the sample under ``root`` and return it; ``release`` is ``"current"`` or ``"early"``."""
    if release not in ("current", "early"):
        raise ValueError(f"release={release!r}; expected 'current' or 'early'")
    root = Path(root)
    images = root / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, compound, early = [], [], {"train.jsonl": [], "valid.jsonl": [], "test.jsonl": []}
    for number, (pmcid, fig, subfigures) in enumerate(_plan(rng)):
        # early release: whole articles to valid / test, except one article split between train and test
        target = "test.jsonl" if pmcid.endswith(("297", "588")) else "valid.jsonl" if pmcid.endswith("491") else "train.jsonl"
        letters = []
        for n, (kind, variant) in enumerate(subfigures):
            name = f"{pmcid}_Fig{fig}_{n}.jpg"
            (images / name).write_bytes(_rgb_jpeg(draw_subfigure(kind, variant, rng)))
            caption = _CAPTIONS[(kind, variant)]
            letters.append(f"({chr(65 + n)}) {caption}.")
            score = round(float(rng.uniform(0.5, 1.0)), 3)
            rows.append({"image": name, "caption": caption, "alignment_type": "subfigure-subcaption",
                         "alignment_score": score})
            split = target
            if pmcid.endswith("394") and n == 0:
                split = "test.jsonl"  # the early split is by figure row: this article's other rows are training
            early[split].append({"image": name, "caption": caption, "pmcid": pmcid,
                                 "url_name": f"{pmcid[3:]}-{number}-{fig}.jpg"})
        whole = f"Figure {fig}. " + " ".join(letters)
        compound += [{"image": f"{pmcid}_Fig{fig}_{n}.jpg", "caption": whole} for n in range(len(subfigures))]
    if bad_files:
        # a subfigure reused in another article: exact copy, grouped with the first
        reused = f"PMC{3100200}_Fig1_0.jpg"
        (images / "PMC3999001_Fig2_0.jpg").write_bytes((images / reused).read_bytes())
        copy_row = next(dict(r) for r in rows if r["image"] == reused)
        rows.append({**copy_row, "image": "PMC3999001_Fig2_0.jpg"})
        early["train.jsonl"].append({"image": "PMC3999001_Fig2_0.jpg", "caption": copy_row["caption"],
                                     "pmcid": "PMC3999001", "url_name": "3999001-0-2.jpg"})
        rows.append({"image": "PMC3999002_Fig1_0.jpg", "caption": "Axial CT of the abdomen",
                     "alignment_type": "subfigure-subcaption", "alignment_score": 0.8})  # image missing
        data = _rgb_jpeg(draw_subfigure("micrograph", "dense", rng))
        (images / "PMC3999003_Fig1_0.jpg").write_bytes(data[: len(data) // 2])  # cut JPEG
        rows.append({"image": "PMC3999003_Fig1_0.jpg", "caption": "Micrograph of a lymph node",
                     "alignment_type": "subfigure-subcaption", "alignment_score": 0.7})
        (images / "PMC3999004_Fig1_1.jpg").write_bytes(_rgb_jpeg(np.ones((SIDE, SIDE, 3))))  # a blank panel
        rows.append({"image": "PMC3999004_Fig1_1.jpg", "caption": "Panel B",
                     "alignment_type": "subfigure-subcaption", "alignment_score": 0.5})
        (images / "PMC3999005_Fig3_0.jpg").write_bytes(_rgb_jpeg(draw_subfigure("bar", "rising", rng)))
        rows.append({"image": "PMC3999005_Fig3_0.jpg", "caption": "  ",
                     "alignment_type": "subfigure-subcaption", "alignment_score": 0.4})  # empty caption
        (images / "PMC3999006_Fig1_0.jpg").write_bytes(_rgb_jpeg(draw_subfigure("line", "increasing", rng)))
        (images / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    text = _lines(rows)
    if bad_files:
        text += '{"image": "PMC3999007_Fig1_0.jpg", "caption": "Western blot of\n'  # a line cut short
    if release == "current":
        (root / "pmc_oa.jsonl").write_text(text)
        (root / "pmc_oa_beta.jsonl").write_text(_lines(compound))
        write_zip(root / "images.zip", {f"{IMAGES}/{path.name}": path.read_bytes()
                                         for path in sorted(images.iterdir())}, zipfile.ZIP_STORED)
    else:
        for name, split_rows in early.items():
            (root / name).write_text(_lines(split_rows))
    (root / "README.md").write_text("# PMC-OA Dataset\n\nSynthetic stand-in for the Hub repository's card.\n")
    write_provenance(root, f"generated by dataset_scripts/sample_sources/pmc_oa.py ({release} release layout; "
                           "drawn figures, not real PMC figures)")
    return root


make = make_pmc_oa
