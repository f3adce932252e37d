"""Decoding and checking of one image file, keeping its original bytes; its perceptual hashes."""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import time
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import SourceFileRef
from multimed_hf.processors.image import HIGH_BIT_MODES

__all__ = [
    "read_image_file", "is_blank", "MIN_IMAGE_SIDE", "perceptual_hashes", "split_hashes", "near_duplicate_copy_files",
    "NEAR_DUPLICATE_RECALL", "PERCEPTUAL_HASH_VERSION",
]

MIN_IMAGE_SIDE = 8
#: A file modified less than this long before it was read gets no stamp (``SourceFileRef.mtime_ns``), so its bytes
#: are hashed again when shards are written: file systems keep mtimes in coarse ticks (Linux: a few ms; FAT: 2 s),
#: and a rewrite within the same tick would keep the stamp (git's "racy clean" files, the same rule).
RACY_NS = 2_000_000_000
NORMAL_SIDE = 64  # every image is hashed at this size, after trimming its flat border
HASH_SIDE = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4
#: Bumped when ``perceptual_hashes`` can give other bits (part of the validation cache's version):
#: "2" = the wavelet half in exact integers (``imagehash.whash``'s bits except where blocks tie at the median);
#: "3" = an integer box reduction before the Lanczos resize to NORMAL_SIDE (3x cheaper);
#: "4" = both Lanczos resizes in numpy with Pillow's fixed-point weights, horizontal pass first, whatever Pillow is
#: installed (Pillow 13 orders the passes by shape), weights kept per geometry (4x cheaper);
#: "5" = a JPEG file hashed from its reduced decode (libjpeg's scaled inverse DCT, grey: ``read_image_file``);
#: "6" = an image deeper than 8 bits stretched from its min..max to grey levels (``_grey``), not clipped at 255.
PERCEPTUAL_HASH_VERSION = "6"
#: Measured by tests/test_data_grouping.py on ``near_duplicate_copy_files`` of real images that PyPI packages ship
#: (pydicom's CT/MR/ultrasound/RGB test files, nibabel's anatomical.nii slices, scikit-learn's and matplotlib's
#: photographs): the share of copies found at the registry's default distances (10 and 6), against the former
#: single 64-bit phash at 6 bits; the test fails when the hashing changes and this statement does not.
NEAR_DUPLICATE_RECALL = (
    "recall 79 of 90 (88%) on resized (224/236, 0.8x, 1.25x), re-encoded (JPEG q60) and cropped (4%, 8% + "
    "resize) copies of 15 real images shipped by PyPI packages, read as files (the former single phash at 6 bits: "
    "69 of 90); 0 of 105 pairs of distinct images joined; every resized and re-encoded copy found, crops are "
    "what it misses"
)


def read_image_file(path: str | os.PathLike, relpath: str) -> tuple[SourceFileRef, int]:
    """Decode ``path`` and check it; return its byte reference and its perceptual hashes (see
    ``perceptual_hashes``). ``BadSourceFile`` for an empty file, one Pillow cannot decode, an image smaller than
    ``MIN_IMAGE_SIDE`` a side and an image of one flat value (``is_blank``).

    Opening is not enough: Pillow opens and even ``verify()``-passes a JPEG cut in half; only ``load()`` fails.
    A JPEG is decoded at the reduced scale its hashes need (``Image.draft``: libjpeg's scaled inverse DCT, grey):
    every entropy-coded block is still decoded, so a file that fails a full decode fails this one (tested on
    damaged files), at about half the cost of a full decode. Its hashes come from that reduced decode."""
    with open(path, "rb") as handle:
        mtime_ns = os.fstat(handle.fileno()).st_mtime_ns  # before reading: a later change moves it
        data = handle.read()
    if not data:
        raise BadSourceFile("empty file (0 bytes)")
    image, mode, (width, height) = _decoded(data, reduced=True)
    grey = _grey(image)
    # a reduced grey copy of a flat image is flat: only a flat copy needs the full image's check
    if grey.min() == grey.max() and is_blank(_decoded(data, reduced=False)[0]):
        raise BadSourceFile(f"image is one flat value ({mode} {width}x{height})")
    if time.time_ns() - mtime_ns < RACY_NS:  # written moments ago: a rewrite may yet keep its mtime
        mtime_ns = None
    ref = SourceFileRef(path=relpath, sha256=hashlib.sha256(data).hexdigest(), size=len(data), mtime_ns=mtime_ns)
    return ref, _hashes(_normal(grey))


def _decoded(data: bytes, reduced: bool) -> tuple[Image.Image, str, tuple[int, int]]:
    """The image in ``data`` decoded (``reduced``: a JPEG at the smallest DCT scale that keeps NORMAL_SIDE a side,
    in grey), with the mode and size the file holds; ``BadSourceFile`` where Pillow cannot decode it or it is
    smaller than ``MIN_IMAGE_SIDE`` a side."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            mode, size = image.mode, image.size
            if min(size) >= MIN_IMAGE_SIDE:
                if reduced:
                    image.draft("L", (NORMAL_SIDE, NORMAL_SIDE))  # a no-op for other formats
                image.load()
    except UnidentifiedImageError:
        raise BadSourceFile("cannot decode image: not a format Pillow recognises") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise BadSourceFile(f"cannot decode image: {type(err).__name__}: {err}") from None
    if min(size) < MIN_IMAGE_SIDE:
        raise BadSourceFile(f"image is {size[0]}x{size[1]} px, smaller than {MIN_IMAGE_SIDE} px a side")
    return image, mode, size


#: Pillow's fixed-point precision for 8-bit resampling (``PRECISION_BITS`` in libImaging/Resample.c).
_PRECISION = 1 << 22
#: Distinct resampling geometries (input size, box edges, output size) whose weights are kept.
_WEIGHTS_CACHED = 512


def _sinc(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        t = x * np.pi
        return np.where(x == 0.0, 1.0, np.sin(t) / t)


@functools.lru_cache(maxsize=_WEIGHTS_CACHED)
def _lanczos_weights(in_size: int, start: int, stop: int, out_size: int) -> np.ndarray:
    """Pillow's Lanczos weights for one axis (``precompute_coeffs`` then ``normalize_coeffs_8bpc``: the same double
    arithmetic, integers scaled by 2**22), as a dense ``(out_size, in_size)`` float64 matrix (read-only)."""
    scale = (stop - start) / out_size
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = start + (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - first
    taps = np.arange(ksize)
    x = ((first[:, None] + taps) - center[:, None] + 0.5) * (1.0 / filterscale)
    valid = (taps < count[:, None]) & (x >= -3.0) & (x < 3.0)
    w = np.where(valid, _sinc(x) * _sinc(x / 3), 0.0)
    total = np.add.accumulate(w, axis=1)[:, -1:]  # summed in order, as the C loop does
    w = np.where(total != 0.0, w / np.where(total != 0.0, total, 1.0), w)
    fixed = np.trunc(np.where(w < 0, -0.5 + w * _PRECISION, 0.5 + w * _PRECISION))
    matrix = np.zeros((out_size, in_size + ksize))
    rows = np.repeat(np.arange(out_size), ksize)
    matrix[rows, (first[:, None] + taps).ravel()] = np.where(taps < count[:, None], fixed, 0.0).ravel()
    matrix = np.ascontiguousarray(matrix[:, :in_size])
    matrix.flags.writeable = False
    return matrix


def _fixed_to_uint8(values: np.ndarray) -> np.ndarray:
    """Pillow's ``clip8`` in place: the fixed-point sums (exact integers in float64) shifted down and clipped to
    0..255 (``np.clip`` costs more than the arithmetic on arrays this small)."""
    values += _PRECISION // 2
    values *= 1.0 / _PRECISION  # a power of two: exact
    np.floor(values, out=values)
    np.maximum(values, 0.0, out=values)
    return np.minimum(values, 255.0, out=values)


def _lanczos(pixels: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """``Image.resize(size, LANCZOS, box)`` of grey levels (2-D, 0..255) as Pillow's resampler computes it in its
    fixed-point integers (libImaging/Resample.c, up to Pillow 12 and on its main branch of 2026-08): the horizontal
    pass, rounded to 8 bits, then the vertical one. Every product and sum is an integer below 2**53, so the float64
    matrix products are exact. Pillow 13 runs the vertical pass first for some shapes (a level apart here and
    there): the hash's own arithmetic keeps its bits from following the installed Pillow. Grey levels as float64."""
    h, w = pixels.shape
    out_w, out_h = size
    x0, y0, x1, y1 = box if box is not None else (0, 0, w, h)
    data = pixels.astype(np.float64, copy=False)
    if (w, h) == size and (x0, y0, x1, y1) == (0, 0, w, h):
        return data
    if out_w != w or x0 or x1 != out_w:
        data = _fixed_to_uint8(data @ _lanczos_weights(w, x0, x1, out_w).T)
    if out_h != h or y0 or y1 != out_h:
        data = _fixed_to_uint8(_lanczos_weights(h, y0, y1, out_h) @ data)
    return data


#: The 8 lowest rows of the unnormalised DCT-II matrix on HASH_SIDE points (scipy.fftpack.dct's type 2): the
#: 8 x 8 low frequencies of the 32 x 32 DCT as two small products.
_DCT_LOW = 2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(HASH_SIDE)[None, :] + 1) / (2 * HASH_SIDE))
#: Sums over the 8 x 8 blocks of a NORMAL_SIDE image: ``_BLOCKS @ image @ _BLOCKS.T``.
_BLOCKS = np.kron(np.eye(8), np.ones(NORMAL_SIDE // 8))


def _grey(image: Image.Image) -> np.ndarray:
    """The decoded image box-reduced by an integer factor (``Image.reduce``) to between 1 and 2 x NORMAL_SIDE a
    side, in grey levels (uint8). An image deeper than 8 bits (a 12- or 16-bit X-ray PNG, ``I;16``) is first
    stretched from its own min..max to 0..255, as the model's image processor reads it (``convert("L")`` clips at
    255: a 12-bit radiograph would hash as its white outline, alike for every patient)."""
    if image.mode in HIGH_BIT_MODES:
        values = np.asarray(image).astype(np.float64)
        low, high = float(values.min()), float(values.max())
        values = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(np.rint(values).astype(np.uint8))
    factor = min(image.size) // NORMAL_SIDE
    if factor > 1 and image.mode in ("L", "RGB", "RGBA"):
        image = image.reduce(factor)
    return np.asarray(image if image.mode == "L" else image.convert("L"))


def _normal(grey: np.ndarray) -> np.ndarray:
    """``grey`` trimmed to its content (pixels above 10% of the range: a scan's black border goes, so a crop of the
    border changes nothing), at NORMAL_SIDE x NORMAL_SIDE (so a resized copy hashes alike), as float64 grey levels.
    The Lanczos resize is Pillow's (``_lanczos``), reading the trim box in place."""
    lo, hi = int(grey.min()), int(grey.max())
    # the first grey level above the threshold, as a float32 comparison over the 256 levels finds it (none: 0)
    level = math.floor(float(np.float32(lo + 0.1 * (hi - lo)))) + 1
    level = level if level < 256 else 0
    box = None
    mask = grey >= level
    if np.count_nonzero(mask) >= 16:
        rows, cols = mask.any(axis=1), mask.any(axis=0)
        top, left = int(rows.argmax()), int(cols.argmax())
        bottom, right = len(rows) - int(rows[::-1].argmax()), len(cols) - int(cols[::-1].argmax())
        box = (left, top, right, bottom)
    return _lanczos(grey, (NORMAL_SIDE, NORMAL_SIDE), box)


def _normalised(image: Image.Image) -> Image.Image:
    """The image every hash is taken of: grey, trimmed to its content, at NORMAL_SIDE x NORMAL_SIDE.

    Cheap by construction: the decoded image is first box-reduced by an integer factor to between 1 and 2 x
    NORMAL_SIDE a side, so the Lanczos resize that follows reads at most 2 x 2 pixels per output pixel; its weights
    are computed once per geometry."""
    return Image.fromarray(_normal(_grey(image)).astype(np.uint8))


def _as_int(bits: np.ndarray) -> int:
    """A boolean array as one integer, its first element the most significant bit (``imagehash``'s order)."""
    return int.from_bytes(np.packbits(bits.ravel()).tobytes(), "big")


def _median(values: np.ndarray) -> float:
    """``np.median`` of a small even-sized array, without its overhead."""
    ordered = np.sort(values, axis=None)
    return 0.5 * (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2])


def perceptual_hashes(image: Image.Image) -> int:
    """Two independent 64-bit hashes of the normalised image in one 128-bit number: the DCT hash
    (``imagehash.phash``'s bits, computed the same way, its two DCTs restricted to the 8 x 8 it keeps) in the high
    half, the Haar wavelet hash in the low half. A pair is a near duplicate only where both agree (see
    ``multimed_hf.data.grouping.near_duplicate_pairs``).

    The wavelet half is ``imagehash.whash`` in closed form: on a 64 x 64 image with the top-level Haar LL removed,
    the level-3 LL band is each 8 x 8 block's sum / 8 less one constant, so a bit says whether a block's integer
    sum exceeds the median block sum. Exact integers replace pywt's two transforms; where blocks tie at the
    median, rounding noise no longer decides the bit. Both come from the image already decoded: nothing is
    decoded twice."""
    return _hashes(_normal(_grey(image)))


def _hashes(normal: np.ndarray) -> int:
    """``perceptual_hashes`` of the normalised image (float64 grey levels, NORMAL_SIDE a side)."""
    small = _lanczos(normal, (HASH_SIDE, HASH_SIDE))
    dct = _DCT_LOW @ small @ _DCT_LOW.T
    blocks = _BLOCKS @ normal @ _BLOCKS.T  # each 8 x 8 block's sum (exact integers)
    return (_as_int(dct > _median(dct)) << 64) | _as_int(blocks > _median(blocks))


def split_hashes(values) -> tuple[np.ndarray, np.ndarray]:
    """``(dct, wavelet)`` uint64 arrays from ``perceptual_hashes`` values."""
    values = [int(v) for v in values]
    mask = (1 << 64) - 1
    return (np.array([v >> 64 for v in values], dtype=np.uint64),
            np.array([v & mask for v in values], dtype=np.uint64))


def _file(image: Image.Image, quality: int | None = None) -> bytes:
    """``image`` as a file's bytes: JPEG at ``quality``, else PNG (lossless)."""
    buffer = io.BytesIO()
    if quality is None:
        image.save(buffer, "PNG")
    else:
        image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def near_duplicate_copy_files(image: Image.Image) -> dict[str, bytes]:
    """The copies merged sets hold of one image, as files: resized (a 236 px slice re-saved at 224), shrunk,
    enlarged, re-encoded, cropped, cropped and resized back; JPEG where the copy was re-encoded, else PNG. What
    the near-duplicate recall is measured on, read as the builder reads files."""
    w, h = image.size
    rgb = image.convert("RGB")
    c4, c8 = max(1, round(min(w, h) * 0.04)), max(1, round(min(w, h) * 0.08))
    return {
        "resized 224/236 + JPEG q90": _file(rgb.resize((round(w * 224 / 236), round(h * 224 / 236)),
                                                       Image.Resampling.BICUBIC), 90),
        "shrunk 0.8x": _file(rgb.resize((round(w * 0.8), round(h * 0.8)), Image.Resampling.BILINEAR)),
        "enlarged 1.25x": _file(rgb.resize((round(w * 1.25), round(h * 1.25)), Image.Resampling.BICUBIC)),
        "re-encoded JPEG q60": _file(rgb, 60),
        "cropped 4%": _file(rgb.crop((c4, c4, w - c4, h - c4))),
        "cropped 8% + resized back": _file(rgb.crop((c8, 0, w - c8, h)).resize((w, h)), 85),
    }


def is_blank(image: Image.Image) -> bool:
    """True for an image of one flat value (often a failed export)."""
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(lo == hi for lo, hi in bands)

