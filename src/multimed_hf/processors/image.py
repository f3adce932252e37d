"""2D images and slices: any PIL mode to RGB, then a transformers image processor (resize, rescale, normalise)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from multimed_hf.processors.base import ModalityProcessor, ProcessorError, UnsupportedImageError

__all__ = ["ImageProcessor", "default_image_processor", "output_side", "EIGHT_BIT_MODES", "HIGH_BIT_MODES"]

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


def output_side(image_processor) -> int | None:
    """The longest side of what ``image_processor`` resizes to (its ``size``: height and width, shortest or longest
    edge), or None where it names none: the ``draft_size`` that decodes no coarser than the resize needs."""
    size = getattr(image_processor, "size", None)
    if isinstance(size, int):
        return size
    keys = ("height", "width", "shortest_edge", "longest_edge")
    if isinstance(size, Mapping):
        sides = [size.get(k) for k in keys]
    else:  # transformers' SizeDict
        sides = [getattr(size, k, None) for k in keys]
    sides = [int(v) for v in sides if isinstance(v, (int, float)) and v > 0]
    return max(sides) if sides else None


def _per_channel(value) -> list[float]:
    """An image processor's mean or std as three floats (a single number serves every channel)."""
    values = np.atleast_1d(np.asarray(value, dtype=np.float64)).tolist()
    return values * 3 if len(values) == 1 else values


class ImageProcessor(ModalityProcessor):
    """One 2D image (or one slice) -> ``pixel_values`` float32 [3, H, W] (uint8 with ``output_uint8``).

    Every supported mode becomes three channels on the 8-bit scale before the wrapped transformers image processor
    (``ViTImageProcessor``, ``AutoImageProcessor.from_pretrained(...)``, ...) resizes, rescales and normalises it.
    Images deeper than 8 bits (``I;16``, ``I``, ``F``) stay float, mapped to [0, 255] by ``high_bit_depth``:
    ``"min_max"`` stretches each image's own min..max (a flat image becomes 0), ``"full_range"`` maps the unsigned
    16-bit range 0..65535 (values outside are clipped).

    ``draft_size`` (the fast path; None: off) decodes a JPEG not yet decoded (a datasets ``Image(decode=False)``
    dict, or a PIL image just opened) at the smallest JPEG scale (1/2, 1/4, 1/8) that keeps both sides
    >= ``draft_size`` (Pillow's ``Image.draft``): set it to the model's input size and a large JPEG costs a
    fraction of a full decode before the same resize. Other formats decode fully.

    ``output_uint8`` (the transport path for training; off by default): an 8-bit image comes out resized (and
    cropped) but neither rescaled nor normalised, ``pixel_values`` uint8 [3, H, W]: a quarter of the float32 bytes
    to stack, send between processes and copy to the device. `normalize` then finishes the batch where it is
    (`MultiMedTrainer` does it on the device). Transformers' torchvision backend resizes 8-bit images in 8 bits and
    normalises with the same fused formula, so the result equals the float32 path bit for bit; an image processor
    that resizes in float (and images deeper than 8 bits) gives float32 pixel values normalised here, as before.
    A greyscale (``L``) image is resized as its one channel, then repeated: each channel is resized alike, so its
    values are those of its RGB copy, for a third of the resize.
    """

    def __init__(self, image_processor=None, high_bit_depth: str = "min_max", draft_size: int | None = None,
                 output_uint8: bool = False):
        if high_bit_depth not in HIGH_BIT_SCALINGS:
            raise ProcessorError(f"high_bit_depth={high_bit_depth!r}: expected one of {HIGH_BIT_SCALINGS}")
        if draft_size is not None and (not isinstance(draft_size, int) or draft_size < 1):
            raise ProcessorError(f"draft_size={draft_size!r}: expected None or a positive number of pixels")
        if not isinstance(output_uint8, bool):
            raise ProcessorError(f"output_uint8={output_uint8!r}: expected True or False")
        self.image_processor = image_processor if image_processor is not None else default_image_processor()
        self.high_bit_depth = high_bit_depth
        self.draft_size = draft_size
        self.output_uint8 = output_uint8
        self._constants: dict = {}  # device -> (mean, std) tensors of `normalize`; rebuilt, never saved or pickled

    def __getstate__(self) -> dict:  # DataLoader workers: device tensors stay behind
        return {**self.__dict__, "_constants": {}}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update({"_constants": {}, "output_uint8": False, **state})

    def _open(self, image: Any):
        """The PIL image, a JPEG not yet decoded set to decode at the draft scale; a datasets Image dict is decoded
        as ``datasets.Image`` decodes it (turned upright by its EXIF orientation), at the draft scale."""
        from PIL import Image, ImageOps

        undecoded = isinstance(image, Mapping) and ("bytes" in image or "path" in image)
        if undecoded:
            image = Image.open(io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path"))
        if not isinstance(image, Image.Image):
            raise UnsupportedImageError(f"expected a PIL image (or a datasets Image dict with bytes/path), got "
                                        f"{type(image).__name__}")
        if self.draft_size is not None and image.format == "JPEG" and getattr(image, "tile", None):
            image.draft(image.mode, (self.draft_size, self.draft_size))  # before the decode: a reduced-size one
        if undecoded:
            image.load()
            if image.getexif().get(0x0112) is not None:  # ExifTags.Base.Orientation, as datasets.Image decodes
                image = ImageOps.exif_transpose(image)
        return image

    def to_array(self, image: Any) -> np.ndarray:
        """The image as an [H, W, 3] array on the 8-bit scale (uint8, or float32 for deeper modes)."""
        image = self._open(image)
        mode = image.mode
        if mode in EIGHT_BIT_MODES:
            return np.array(image if mode == "RGB" else image.convert("RGB"))  # writable, as torch wants
        if mode not in HIGH_BIT_MODES:
            raise UnsupportedImageError(f"image mode {mode!r} is not supported: expected one of "
                                        f"{EIGHT_BIT_MODES + HIGH_BIT_MODES}; convert it first (image.convert('RGB'))")
        values = np.asarray(image).astype(np.float32)
        finite = np.isfinite(values)
        if not finite.all():  # one NaN made min_max scaling blank the whole image, an inf every other pixel 0
            raise ProcessorError(f"the {mode} image holds NaN or infinite pixel values ({int((~finite).sum())} of "
                                 f"{values.size} pixels); replace them first (e.g. np.nan_to_num with the value "
                                 f"outside the field of view)")
        if self.high_bit_depth == "full_range":
            values = np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0)
        else:
            low, high = float(values.min()), float(values.max())
            values = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return np.repeat(values[..., None], 3, axis=-1)

    def __call__(self, image: Any) -> dict:
        """``{"pixel_values": float32 [3, H, W]}`` for one image (uint8, not yet normalised, with
        ``output_uint8`` where the image processor resizes it in 8 bits)."""
        if not self.output_uint8:
            out = self.image_processor(images=self.to_array(image), return_tensors="np",
                                       input_data_format="channels_last")
            return {"pixel_values": np.asarray(out["pixel_values"][0], dtype=np.float32)}
        image = self._open(image)
        if image.mode == "L":  # greyscale resized as one channel, then repeated: its RGB copy's values, 1/3 the work
            array, layout = np.array(image)[None], "channels_first"
        else:
            array, layout = self.to_array(image), "channels_last"
        out = self.image_processor(images=array, return_tensors="np", input_data_format=layout, do_rescale=False,
                                   do_normalize=False)
        values = out["pixel_values"][0]
        if values.shape[0] == 1:
            values = np.repeat(values, 3, axis=0)
        if values.dtype == np.uint8:
            return {"pixel_values": values}
        return {"pixel_values": self.normalize(values).numpy()}  # resized in float: finished here

    def normalize(self, pixel_values):
        """Rescale and normalise resized pixel values on the 8-bit scale (uint8 or float, [..., 3, H, W], numpy or
        torch, any device) as the wrapped image processor does: float32 ``(x - mean / r) / (std / r)`` with its
        ``rescale_factor`` r, ``image_mean`` and ``image_std`` (transformers' fused rescale-and-normalise); only
        ``x * r`` or only ``(x - mean) / std`` where it turns one of them off. A torch tensor stays on its device."""
        import torch

        values = torch.as_tensor(pixel_values).to(torch.float32, copy=True)
        ip = self.image_processor
        rescale, normal = bool(getattr(ip, "do_rescale", False)), bool(getattr(ip, "do_normalize", False))
        if not normal:
            return values.mul_(float(ip.rescale_factor)) if rescale else values
        mean, std = self._normalize_constants(values.device)
        return values.sub_(mean).div_(std)

    def _normalize_constants(self, device) -> tuple:
        """(mean, std) float32 [3, 1, 1] on ``device``, the rescale factor folded in; made once per device (a
        tensor built on a GPU at every batch would wait for the GPU)."""
        import torch

        key = str(device)
        if key not in self._constants:
            ip = self.image_processor
            mean = torch.tensor(_per_channel(ip.image_mean), dtype=torch.float32)
            std = torch.tensor(_per_channel(ip.image_std), dtype=torch.float32)
            if getattr(ip, "do_rescale", False):
                mean, std = mean * (1.0 / ip.rescale_factor), std * (1.0 / ip.rescale_factor)
            if bool((std == 0).any()):
                raise ProcessorError(f"image_std={ip.image_std!r}: a zero standard deviation cannot normalise")
            self._constants[key] = (mean.view(-1, 1, 1).to(device), std.view(-1, 1, 1).to(device))
        return self._constants[key]

    def from_row(self, values: Mapping[str, Any], specs: Sequence) -> dict | None:
        image = values[specs[0].name]
        return None if image is None else self(image)

    def collate(self, items: Sequence[dict]) -> dict:
        import torch

        shapes = sorted({item["pixel_values"].shape for item in items})
        if len(shapes) > 1:
            raise ProcessorError(f"images in one batch differ in size after processing ({shapes}); give the image "
                                 f"processor a fixed size to resize to")
        values = [item["pixel_values"] for item in items]
        if any(v.dtype == np.uint8 for v in values) and any(v.dtype != np.uint8 for v in values):
            # output_uint8 with a deeper image among 8-bit ones: the batch is normalised here, as one dtype
            values = [self.normalize(v).numpy() if v.dtype == np.uint8 else v for v in values]
        return {"pixel_values": torch.from_numpy(np.stack(values))}

    def to_dict(self) -> dict:
        return {"high_bit_depth": self.high_bit_depth, "draft_size": self.draft_size,
                "output_uint8": self.output_uint8}

    def _rebuild(self, settings: dict) -> "ImageProcessor":
        return type(self)(image_processor=self.image_processor, **settings)

    def _save_artifacts(self, directory: Path) -> None:
        self.image_processor.save_pretrained(directory)

    @classmethod
    def _from_settings(cls, settings: dict, directory: Path) -> "ImageProcessor":
        from transformers import AutoImageProcessor

        return cls(image_processor=AutoImageProcessor.from_pretrained(directory), **settings)
