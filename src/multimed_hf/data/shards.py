"""Self-contained Parquet shards: file bytes embedded, typed by the task's ``Features``, deterministic, written in
row groups from column arrays (a shard's rows are never all in memory)."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Features, Value
from datasets.arrow_writer import ParquetWriter
from datasets.features.features import cast_to_python_objects, encode_nested_example

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample, SourceFileRef, array_digest, sample_to_json
from multimed_hf.data.source_builder import SourceBuilder

__all__ = [
    "SHARD_BYTES", "FORMAT_VERSION", "Fingerprint", "fingerprint", "fingerprint_bytes", "payload_size", "plan_shards",
    "shard_batch_rows", "ShardWriter", "encode_columns",
]

#: Target payload per shard (the Hub's datasets favour ~100-500 MB Parquet files).
SHARD_BYTES = 256 * 2**20
#: Part of every build fingerprint: "3" since every array is stored as a side-file array (digested, not listed).
FORMAT_VERSION = "3"
#: What a row costs beyond its files and arrays (ids, labels, metadata), for shard planning.
ROW_OVERHEAD = 512


class Fingerprint:
    """12 hex digits over the build format, the given parts and every (split, group, sample) added, in order."""

    def __init__(self, parts: Iterable):
        self._digest = hashlib.sha256(FORMAT_VERSION.encode())
        for part in parts:
            self._digest.update(json.dumps(part, sort_keys=True, default=str).encode())

    def add(self, split: str, group_id: str, sample: Sample) -> None:
        self._digest.update(fingerprint_bytes(split, group_id, sample))

    def update(self, data: bytes) -> None:
        """What ``add`` would have fed for some samples, in order (``fingerprint_bytes`` of each, joined): a worker
        process encodes the samples, this process only digests."""
        self._digest.update(data)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()[:12]


def fingerprint_bytes(split: str, group_id: str, sample: Sample) -> bytes:
    """What a sample adds to its source's ``Fingerprint`` (its content, file stamps and ``extra`` left out)."""
    record = sample_to_json(sample, arrays=array_digest, stamps=False)
    record.pop("extra", None)
    return json.dumps([split, group_id, record], sort_keys=True, default=str).encode()


def fingerprint(parts: Iterable, samples: Iterable[tuple[str, str, Sample]]) -> str:
    """The ``Fingerprint`` of ``parts`` and every ``(split, group id, sample)``."""
    digest = Fingerprint(parts)
    for split, group_id, sample in samples:
        digest.add(split, group_id, sample)
    return digest.hexdigest()


def payload_size(sample: Sample) -> int:
    """About what a sample adds to a shard: its embedded files, its arrays (every value counted) and a row."""
    size = ROW_OVERHEAD
    for value in sample.fields.values():
        if isinstance(value, SourceFileRef):
            size += value.size
        elif isinstance(value, np.ndarray):
            size += value.nbytes
        elif isinstance(value, (list, tuple, str, bytes)):
            size += 8 * len(value)
    return size


def plan_shards(sizes: Iterable[int], shard_bytes: int = SHARD_BYTES) -> list[range]:
    """Consecutive runs (index ranges into ``sizes``) of about ``shard_bytes`` payload each (at least one);
    ``sizes`` may be any iterable (a build streams them from disk)."""
    bounds = [0]
    size = 0
    count = 0
    for i, weight in enumerate(sizes):
        if i > bounds[-1] and size + weight > shard_bytes:
            bounds.append(i)
            size = 0
        size += weight
        count = i + 1
    bounds.append(count)
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


def _embed(ref: SourceFileRef, builder: SourceBuilder) -> dict:
    """The file's bytes, checked to be the ones validated: against its stamp (size and ``mtime_ns``, taken when it
    was read; the validation cache trusts the same stamp) where the reference has one and the builder reads
    references as the files themselves, else against its sha256."""
    if ref.mtime_ns is not None and type(builder).read_ref is SourceBuilder.read_ref:
        with open(os.path.join(builder.root, ref.path), "rb") as handle:
            data = handle.read()
            stat = os.fstat(handle.fileno())  # after reading: any change since validation has moved it
        if (stat.st_size, stat.st_mtime_ns) == (ref.size, ref.mtime_ns) and len(data) == ref.size:
            return {"bytes": data, "path": ref.path}
    else:
        data = builder.read_ref(ref)
        if hashlib.sha256(data).hexdigest() == ref.sha256:
            return {"bytes": data, "path": ref.path}
    raise BadSourceFile(f"{ref.path}: file changed since it was validated; rebuild to re-validate it")


def _offsets(lengths: list[int]) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.array(offsets)


def _list_array(values: list, arrow_type: pa.DataType) -> pa.Array | None:
    """A list (or list of lists) column straight from 1-D (2-D) ndarrays: one concatenation, no Python number per
    value. None where the values are not all such ndarrays (then ``pa.array`` takes them as they are)."""
    if not pa.types.is_list(arrow_type):
        return None
    inner = arrow_type.value_type
    ndim = 1 if pa.types.is_primitive(inner) else 2
    if ndim == 2 and not (
        (pa.types.is_list(inner) or pa.types.is_fixed_size_list(inner)) and pa.types.is_primitive(inner.value_type)
    ):
        return None
    if not all(v is None or (isinstance(v, np.ndarray) and v.ndim == ndim and v.dtype.kind in "biuf")
               for v in values):
        return None
    if ndim == 2 and pa.types.is_fixed_size_list(inner) and any(
        v is not None and v.shape[1] != inner.list_size for v in values
    ):
        return None
    present = [v for v in values if v is not None]
    leaf = (inner if ndim == 1 else inner.value_type).to_pandas_dtype()
    flat = np.concatenate([v.reshape(-1) for v in present]).astype(leaf, copy=False) if present else \
        np.empty(0, dtype=leaf)
    child: pa.Array = pa.array(flat)
    if ndim == 2:
        if pa.types.is_fixed_size_list(inner):
            child = pa.FixedSizeListArray.from_arrays(child, inner.list_size)
        else:
            child = pa.ListArray.from_arrays(_offsets([v.shape[1] for v in present for _ in range(v.shape[0])]),
                                             child, type=inner)
    mask = pa.array([v is None for v in values]) if len(present) < len(values) else None
    return pa.ListArray.from_arrays(_offsets([0 if v is None else len(v) for v in values]), child,
                                    type=arrow_type, mask=mask)


def _encoder(feature):
    """How a column's values are encoded: ``datasets``' ``encode_nested_example`` (after
    ``cast_to_python_objects``), short-cut where it returns the value as given (a ``str`` for a string ``Value``) or
    looks it up (a ``ClassLabel``'s name): the same values, without four calls a cell."""
    def generic(value):
        return encode_nested_example(feature, cast_to_python_objects(value), level=1)

    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return lambda value: value if type(value) is str else generic(value)
    if isinstance(feature, ClassLabel) and feature.names:
        index = {name: i for i, name in enumerate(feature.names)}
        return lambda value: index[value] if type(value) is str and value in index else generic(value)
    return generic


def encode_columns(
    samples: Sequence[Sample], group_ids: Sequence[str], builder: SourceBuilder, features: Features
) -> pa.Table:
    """The stored rows of ``samples`` as one table built column by column: common columns, then the samples'
    fields (labels encoded by their ``Features``, file references embedded, ndarrays concatenated)."""
    columns: dict[str, list] = {name: [None] * len(samples) for name in features}
    columns["sample_id"] = [s.sample_id for s in samples]
    columns["source"] = [builder.source] * len(samples)
    columns["source_path"] = [s.source_path for s in samples]
    columns["group_id"] = list(group_ids)
    for i, sample in enumerate(samples):
        for name, value in sample.fields.items():
            if name not in features:
                raise ValueError(
                    f"{builder.source}: {sample.source_path}: field {name!r} is not a column of this config"
                )
            columns[name][i] = value
    schema = features.arrow_schema
    arrays = []
    for name in features:
        values = columns[name]
        arrow_type = schema.field(name).type
        array = _list_array(values, arrow_type)
        if array is None:
            # set after encoding: datasets' Image drops the bytes of a {bytes, path} whose path exists from the cwd
            encode = _encoder(features[name])
            values = [
                _embed(v, builder) if isinstance(v, SourceFileRef) else None if v is None else encode(v)
                for v in values
            ]
            array = pa.array(values, type=arrow_type)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=schema)


def shard_batch_rows(features: Features) -> int:
    """Rows of a ``ShardWriter``'s row group for ``features``: what each ``write`` should hold (or a multiple of
    it), so that batches never split a row group."""
    return ParquetWriter(stream=io.BytesIO(), features=features).writer_batch_size


class ShardWriter:
    """One Parquet file written with ``datasets``' own Parquet writer (the one ``push_to_hub`` uses: its schema
    carries the features, pages are content-defined chunks the Hub de-duplicates across rebuilds, with a page
    index), fed in batches of whole row groups, so the same rows give the same bytes however they are batched.

    Kept over ``pq.write_table`` (the writer before it, ``git show 30dc449:src/multimed_hf/data/shards.py``),
    though slower alone: ``benchmarks/bench_builder.py --writers`` on 658 rows of 256-px JPEGs (7 MB), median of 9,
    2 shared cores: 439 vs 628 MB/s (1.4x the time, ~5 ms more per 7 MB), under 1% of the same build's 1.8 s of CPU
    (decoding and hashing are the rest). For that it buys shards the Hub de-duplicates by chunk on every rebuild
    and the very bytes ``push_to_hub`` would write."""

    def __init__(self, path: Path, features: Features):
        self.path = path
        self.tmp = path.with_suffix(".parquet.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = ParquetWriter(path=str(self.tmp), features=features)

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def close(self) -> None:
        self._writer.finalize()
        self._writer.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)
