"""What a builder makes of one source file: samples, with their grouping and publisher split."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["SourceFileRef", "Sample", "RejectedRecord", "sample_to_json", "sample_from_json", "array_digest"]


@dataclass(frozen=True)
class SourceFileRef:
    """A file's bytes, embedded at shard-writing time (never held in memory for a whole source)."""

    path: str  # relative to the source root, POSIX separators
    sha256: str
    size: int
    #: The file's ``st_mtime_ns`` when its bytes were read (with ``size``, its stamp): the shard writer checks the
    #: file against it instead of hashing it again. None where the bytes are not the file's own (rendered) or the
    #: stamp is unknown; then the bytes are hashed. Not part of what the reference names (fingerprints leave it out).
    mtime_ns: int | None = field(default=None, compare=False)


@dataclass
class Sample:
    """One sample: its registry columns (labels as canonical names, None where absent) and split facts."""

    sample_id: str
    source_path: str
    fields: dict[str, Any]
    #: Grouping key inside the source (patient, subject, donor...); None means the sample stands alone.
    group_key: str | None = None
    #: The publisher's split ("train" / "test"), or None where the publisher has none.
    published_split: str | None = None
    #: Exact-duplicate key (sha256 of the file or record content).
    content_hash: str | None = None
    #: 64-bit perceptual hash for images (near-duplicate search), or None.
    perceptual_hash: int | None = None
    #: Facts for the card and summary only (e.g. which release a file belongs to).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RejectedRecord:
    """One bad record inside a file whose other records are good (a chain, an epoch, a QA item): ``read_file``
    returns it beside the samples, and the manifest lists it as rejected under ``where``
    (``<file>:row <record>``)."""

    where: str
    reason: str


def _to_json(value, arrays=None, stamps=True):
    """JSON-able form; ``arrays`` (an ndarray -> JSON object function) keeps every array out of the text (a list
    of Python floats costs ~30 bytes a value in memory; a view of a side file, its bytes); ``stamps``: whether a
    file reference keeps its ``mtime_ns``."""
    if isinstance(value, SourceFileRef):  # asdict's output, without its recursive deep copy (one per file)
        ref = {"path": value.path, "sha256": value.sha256, "size": value.size}
        if stamps and value.mtime_ns is not None:
            ref["mtime_ns"] = value.mtime_ns
        return {"__file__": ref}
    if isinstance(value, np.ndarray):
        return arrays(value) if arrays is not None else value.tolist()  # every array, however small
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _to_json(v, arrays, stamps) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, arrays, stamps) for v in value]
    return value


def _from_json(value, arrays=None):
    if isinstance(value, dict):
        if set(value) == {"__file__"}:
            return SourceFileRef(**value["__file__"])
        if set(value) == {"__array__"} and arrays is not None:
            return arrays(value["__array__"])
        return {k: _from_json(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, arrays) for v in value]
    return value


def array_digest(array: np.ndarray) -> dict:
    """What identifies an array's content, for fingerprints: dtype, shape and a sha256 of its bytes."""
    data = np.ascontiguousarray(array)
    return {"__array__": {"dtype": str(data.dtype), "shape": list(data.shape),
                          "sha256": hashlib.sha256(data.tobytes()).hexdigest()}}


def sample_to_json(sample: Sample | RejectedRecord, arrays=None, stamps: bool = True) -> dict:
    """``arrays``: how a large ndarray is written (e.g. saved to a side file, or digested); default: as lists.
    ``stamps=False`` leaves out file references' ``mtime_ns`` (what names the content, for fingerprints)."""
    if isinstance(sample, RejectedRecord):
        return {"rejected_record": asdict(sample)}
    return {
        "sample_id": sample.sample_id, "source_path": sample.source_path,
        "fields": _to_json(sample.fields, arrays, stamps),
        "group_key": sample.group_key, "published_split": sample.published_split,
        "content_hash": sample.content_hash, "perceptual_hash": sample.perceptual_hash,
        "extra": _to_json(sample.extra, arrays, stamps),
    }


def sample_from_json(data: dict, arrays=None) -> Sample | RejectedRecord:
    """``arrays``: how an ``{"__array__": ...}`` object written by ``sample_to_json`` becomes an ndarray again."""
    if "rejected_record" in data:
        return RejectedRecord(**data["rejected_record"])
    return Sample(
        sample_id=data["sample_id"], source_path=data["source_path"], fields=_from_json(data["fields"], arrays),
        group_key=data["group_key"], published_split=data["published_split"], content_hash=data["content_hash"],
        perceptual_hash=data["perceptual_hash"], extra=_from_json(data["extra"], arrays),
    )
