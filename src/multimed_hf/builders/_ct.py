"""What the CT builders share: Hounsfield windows, PNG slices, and a source root that renders slices on demand.

A volume (NIfTI) or a DICOM file is not an image file: its slices become PNG bytes that we encode. A sample's
image is then a ``SourceFileRef`` whose path names the file and the rendering, ``<file>#slice=7&window=-600,1500.png``;
the bytes are embedded when the shard is written, through the builder's ``read_ref`` (``RenderedSlices``), which
re-renders them (the sha256 recorded at validation time guards that the bytes are the same). So no slice is held in
memory or written beside the publisher's files.
"""

from __future__ import annotations

import hashlib
import importlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import SourceFileRef

__all__ = [
    "Window", "LUNG_WINDOW", "encode_png", "check_hounsfield", "rendered_ref", "split_rendered_path",
    "RenderedSlices", "require",
]


def require(module: str, what: str):
    """Import an optional reader (nibabel, pydicom), or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{what} need {module}, which is not installed: pip install 'multimed_hf[imaging]'"
        ) from None


@dataclass(frozen=True)
class Window:
    """A display window in Hounsfield units: ``center`` and ``width`` (e.g. the lung window -600/1500)."""

    center: float
    width: float

    def __post_init__(self):
        if not self.width > 0:
            raise ValueError(f"window width {self.width} HU; expected a positive width")

    def __str__(self) -> str:
        """The ``window`` column's form, ``'center/width'`` in HU."""
        return f"{self.center:g}/{self.width:g}"

    @property
    def token(self) -> str:
        """The form used inside a rendered path (no slash): ``'center,width'``."""
        return f"{self.center:g},{self.width:g}"

    @classmethod
    def parse(cls, text: str) -> "Window":
        """``'-600/1500'`` or ``'-600,1500'`` -> ``Window(-600, 1500)``."""
        parts = text.replace(",", "/").split("/")
        if len(parts) != 2:
            raise ValueError(f"window {text!r}; expected 'center/width' in HU, e.g. '-600/1500'")
        return cls(float(parts[0]), float(parts[1]))

    def to_uint8(self, hu: np.ndarray) -> np.ndarray:
        """Hounsfield units -> 0..255 grey levels (below the window black, above it white)."""
        low = self.center - self.width / 2
        scaled = (np.asarray(hu, dtype=np.float64) - low) * (255.0 / self.width)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


#: The lung window (center -600 HU, width 1500 HU): parenchyma, ground glass and consolidation stay visible.
LUNG_WINDOW = Window(-600.0, 1500.0)


def encode_png(grey: np.ndarray) -> bytes:
    """8-bit grey PNG bytes of a 2-D uint8 array (deterministic: same array, same bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(grey, dtype=np.uint8), mode="L").save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def rendered_ref(relpath: str, png: bytes, **params) -> SourceFileRef:
    """The reference of PNG bytes rendered from ``relpath`` with ``params`` (their order is kept)."""
    fragment = "&".join(f"{key}={value}" for key, value in params.items())
    return SourceFileRef(
        path=f"{relpath}#{fragment}.png", sha256=hashlib.sha256(png).hexdigest(), size=len(png)
    )


def split_rendered_path(path: str) -> tuple[str, dict[str, str]] | None:
    """``'a/b.nii.gz#slice=3&window=-600,1500.png'`` -> ``('a/b.nii.gz', {'slice': '3', ...})``; else None."""
    file, sep, fragment = path.rpartition("#")
    if not sep or not fragment.endswith(".png"):
        return None
    params = {}
    for item in fragment[: -len(".png")].split("&"):
        key, eq, value = item.partition("=")
        if not eq:
            return None  # a publisher's file whose name holds a '#'
        params[key] = value
    return file, params


class RenderedSlices:
    """Mixin for a ``SourceBuilder`` whose images are slices rendered from a volume or DICOM file: a reference
    ``'<file>#<params>.png'`` is rendered again by ``render`` when the shard is written."""

    def render(self, file: Path, params: Mapping[str, str]) -> bytes:
        raise NotImplementedError

    def read_ref(self, ref: SourceFileRef) -> bytes:
        parsed = split_rendered_path(ref.path)
        if parsed is None:
            return super().read_ref(ref)
        file, params = parsed
        return self.render(self.root / file, params)


def check_hounsfield(values: np.ndarray, what: str) -> None:
    """Raise ``BadSourceFile`` unless ``values`` look like a chest CT in HU (finite; air near -1000 HU)."""
    finite = np.isfinite(values)
    if not finite.all():
        raise BadSourceFile(
            f"non-finite values: {int((~finite).sum())} of the {values.size} values of the {what} are NaN or infinite"
        )
    low, high = float(values.min()), float(values.max())
    if low > -500:
        raise BadSourceFile(
            f"not Hounsfield units: the {what} spans {low:g}..{high:g}, where a chest CT holds air near -1000 HU "
            "(is a rescale slope/intercept missing?)"
        )
