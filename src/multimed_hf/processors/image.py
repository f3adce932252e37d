"""2D images and slices: any PIL mode to RGB, then a transformers image processor (resize, rescale, normalise)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from multimed_hf.processors.base import ModalityProcessor, ProcessorError, UnsupportedImageError

__all__ = ["ImageProcessor", "default_image_processor", "EIGHT_BIT_MODES", "HIGH_BIT_MODES"]

#: Modes Pillow converts to 8-bit RGB itself (alpha is dropped, palettes expanded).
EIGHT_BIT_MODES = ("1", "L", "P", "LA", "PA", "La", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr")
#: Single-channel modes deeper than 8 bits (16-bit PNG/DICOM exports, 32-bit int, float).
HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
HIGH_BIT_SCALINGS = ("min_max", "full_range")


def default_image_processor(size: int = 224):
    """The image processor of the default imaging encoder (google/vit-base-patch16-224-in21k): resize to
    ``size`` x ``size``, rescale to [0, 1], normalise with mean 0.5 / std 0.5."""
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


class ImageProcessor(ModalityProcessor):
    """One 2D image (or one slice) -> ``pixel_values`` float32 [3, H, W].

    Every supported mode becomes three channels on the 8-bit scale before the wrapped transformers image processor
    (``ViTImageProcessor``, ``AutoImageProcessor.from_pretrained(...)``, ...) resizes, rescales and normalises it.
    Images deeper than 8 bits (``I;16``, ``I``, ``F``) stay float, mapped to [0, 255] by ``high_bit_depth``:
    ``"min_max"`` stretches each image's own min..max (a flat image becomes 0), ``"full_range"`` maps the unsigned
    16-bit range 0..65535 (values outside are clipped).

    ``draft_size`` (the fast path; None: off) decodes a JPEG not yet decoded (a datasets ``Image(decode=False)``
    dict, or a PIL image just opened) at the smallest JPEG scale (1/2, 1/4, 1/8) that keeps both sides
    >= ``draft_size`` (Pillow's ``Image.draft``): set it to the model's input size and a large JPEG costs a
    fraction of a full decode before the same resize. Other formats decode fully.
    """

    def __init__(self, image_processor=None, high_bit_depth: str = "min_max", draft_size: int | None = None):
        if high_bit_depth not in HIGH_BIT_SCALINGS:
            raise ProcessorError(f"high_bit_depth={high_bit_depth!r}: expected one of {HIGH_BIT_SCALINGS}")
        if draft_size is not None and (not isinstance(draft_size, int) or draft_size < 1):
            raise ProcessorError(f"draft_size={draft_size!r}: expected None or a positive number of pixels")
        self.image_processor = image_processor if image_processor is not None else default_image_processor()
        self.high_bit_depth = high_bit_depth
        self.draft_size = draft_size

    def to_array(self, image: Any) -> np.ndarray:
        """The image as an [H, W, 3] array on the 8-bit scale (uint8, or float32 for deeper modes)."""
        from PIL import Image

        if isinstance(image, Mapping) and ("bytes" in image or "path" in image):  # an undecoded datasets Image
            source = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
            image = Image.open(source)
        if not isinstance(image, Image.Image):
            raise UnsupportedImageError(f"expected a PIL image (or a datasets Image dict with bytes/path), got "
                                        f"{type(image).__name__}")
        if self.draft_size is not None and image.format == "JPEG" and getattr(image, "tile", None):
            image.draft(image.mode, (self.draft_size, self.draft_size))  # before the decode: a reduced-size one
        mode = image.mode
        if mode in EIGHT_BIT_MODES:
            return np.array(image if mode == "RGB" else image.convert("RGB"))  # writable, as torch wants
        if mode not in HIGH_BIT_MODES:
            raise UnsupportedImageError(f"image mode {mode!r} is not supported: expected one of "
                                        f"{EIGHT_BIT_MODES + HIGH_BIT_MODES}; convert it first (image.convert('RGB'))")
        values = np.asarray(image).astype(np.float32)
        if self.high_bit_depth == "full_range":
            values = np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0)
        else:
            low, high = float(values.min()), float(values.max())
            values = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return np.repeat(values[..., None], 3, axis=-1)

    def __call__(self, image: Any) -> dict:
        """``{"pixel_values": float32 [3, H, W]}`` for one image."""
        out = self.image_processor(images=self.to_array(image), return_tensors="np",
                                   input_data_format="channels_last")
        return {"pixel_values": np.asarray(out["pixel_values"][0], dtype=np.float32)}

    def from_row(self, values: Mapping[str, Any], specs: Sequence) -> dict | None:
        image = values[specs[0].name]
        return None if image is None else self(image)

    def collate(self, items: Sequence[dict]) -> dict:
        import torch

        shapes = sorted({item["pixel_values"].shape for item in items})
        if len(shapes) > 1:
            raise ProcessorError(f"images in one batch differ in size after processing ({shapes}); give the image "
                                 f"processor a fixed size to resize to")
        return {"pixel_values": torch.from_numpy(np.stack([item["pixel_values"] for item in items]))}

    def to_dict(self) -> dict:
        return {"high_bit_depth": self.high_bit_depth, "draft_size": self.draft_size}

    def _save_artifacts(self, directory: Path) -> None:
        self.image_processor.save_pretrained(directory)

    @classmethod
    def _from_settings(cls, settings: dict, directory: Path) -> "ImageProcessor":
        from transformers import AutoImageProcessor

        return cls(image_processor=AutoImageProcessor.from_pretrained(directory), **settings)
