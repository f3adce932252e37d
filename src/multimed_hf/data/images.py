"""Full decoding and checking of one image file, keeping its original bytes."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import imagehash
from PIL import Image, UnidentifiedImageError

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import SourceFileRef

__all__ = ["read_image_file", "is_blank", "MIN_IMAGE_SIDE"]

MIN_IMAGE_SIDE = 8
HASH_SIDE = 32  # imagehash.phash: hash_size 8 x highfreq_factor 4


def read_image_file(path: Path, relpath: str) -> tuple[SourceFileRef, int, Image.Image]:
    """Decode ``path`` fully; return its byte reference, a 64-bit perceptual hash and the decoded image.

    Opening is not enough: Pillow opens and even ``verify()``-passes a JPEG cut in half; only ``load()`` fails.
    """
    data = path.read_bytes()
    if not data:
        raise BadSourceFile("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError:
        raise BadSourceFile("cannot decode image: not a format Pillow recognises") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as err:
        raise BadSourceFile(f"cannot decode image: {type(err).__name__}: {err}") from None
    if min(image.size) < MIN_IMAGE_SIDE:
        raise BadSourceFile(f"image is {image.size[0]}x{image.size[1]} px, smaller than {MIN_IMAGE_SIDE} px a side")
    phash = int(str(imagehash.phash(_hash_thumbnail(image))), 16)
    ref = SourceFileRef(path=relpath, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return ref, phash, image


def _hash_thumbnail(image: Image.Image) -> Image.Image:
    """The grey 32x32 image ``imagehash.phash`` hashes, shrunk with Pillow's fast reducing path first."""
    grey = image if image.mode == "L" else image.convert("L")
    return grey.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)


def is_blank(image: Image.Image) -> bool:
    """True for an image of one flat value (often a failed export)."""
    extrema = image.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    return all(lo == hi for lo, hi in bands)

