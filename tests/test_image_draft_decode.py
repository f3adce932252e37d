"""The image processor's fast path: ``draft_size`` decodes a JPEG at a reduced scale before the same resize."""

import io

import numpy as np
import pytest
from PIL import Image

from multimed_hf.processors.base import ProcessorError
from multimed_hf.processors.image import ImageProcessor, default_image_processor


def _jpeg(side: int) -> bytes:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (side // 16, side // 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.kron(base, np.ones((16, 16, 1), dtype=np.uint8))).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_draft_decodes_a_large_jpeg_at_a_reduced_scale_and_gives_the_same_shape():
    data = _jpeg(512)
    full = ImageProcessor(default_image_processor(64))
    fast = ImageProcessor(default_image_processor(64), draft_size=100)
    assert full.to_array({"bytes": data, "path": None}).shape == (512, 512, 3)
    assert fast.to_array({"bytes": data, "path": None}).shape == (128, 128, 3)  # 1/4: the smallest scale >= 100
    a, b = full({"bytes": data, "path": None}), fast({"bytes": data, "path": None})
    assert a["pixel_values"].shape == b["pixel_values"].shape == (3, 64, 64)
    assert np.abs(a["pixel_values"] - b["pixel_values"]).mean() < 0.05  # the same picture, on [-1, 1]
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert fast.to_array(decoded).shape == (512, 512, 3)  # an image already decoded stays as it is
    png = io.BytesIO()
    Image.open(io.BytesIO(data)).save(png, "PNG")
    assert fast.to_array({"bytes": png.getvalue(), "path": None}).shape == (512, 512, 3)  # not a JPEG: full


def test_draft_size_is_saved_and_checked():
    assert ImageProcessor(default_image_processor(32), draft_size=224).to_dict()["draft_size"] == 224
    with pytest.raises(ProcessorError, match="draft_size=0: expected None or a positive number of pixels"):
        ImageProcessor(default_image_processor(32), draft_size=0)


def test_draft_decode_and_uint8_output_combine_into_the_draft_float_path():
    data = {"bytes": _jpeg(512), "path": None}
    fast = ImageProcessor(default_image_processor(64), draft_size=100)
    both = ImageProcessor(default_image_processor(64), draft_size=100, output_uint8=True)
    got = both(data)["pixel_values"]
    assert got.dtype == np.uint8 and got.shape == (3, 64, 64)
    assert np.array_equal(both.normalize(got).numpy(), fast(data)["pixel_values"])
