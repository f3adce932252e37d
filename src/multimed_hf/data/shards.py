"""Self-contained Parquet shards: file bytes embedded, typed by the task's ``Features``, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample, SourceFileRef, sample_to_json

__all__ = ["SHARD_BYTES", "fingerprint", "plan_shards", "write_shard", "encode_row"]

#: Target payload per shard (the Hub's datasets favour ~100-500 MB Parquet files).
SHARD_BYTES = 256 * 2**20
FORMAT_VERSION = "1"


def fingerprint(parts: Iterable, samples: Sequence[tuple[str, str, Sample]]) -> str:
    """12 hex digits over the build format, the given parts and every (split, group, sample) that goes in."""
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    for split, group_id, sample in samples:
        record = sample_to_json(sample)
        record.pop("extra", None)
        digest.update(json.dumps([split, group_id, record], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:12]


def _payload_size(sample: Sample) -> int:
    return sum(v.size for v in sample.fields.values() if isinstance(v, SourceFileRef)) + 512


def plan_shards(samples: Sequence[Sample], shard_bytes: int = SHARD_BYTES) -> list[list[Sample]]:
    """Consecutive runs of samples of about ``shard_bytes`` payload each (at least one shard)."""
    shards: list[list[Sample]] = [[]]
    size = 0
    for sample in samples:
        weight = _payload_size(sample)
        if shards[-1] and size + weight > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(sample)
        size += weight
    return shards


def _embed(value, root: Path, sample: Sample):
    if isinstance(value, SourceFileRef):
        data = (root / value.path).read_bytes()
        if hashlib.sha256(data).hexdigest() != value.sha256:
            raise BadSourceFile(f"{value.path}: file changed since it was validated; rebuild to re-validate it")
        return {"bytes": data, "path": value.path}
    return value


def encode_row(sample: Sample, source: str, group_id: str, root: Path, features: Features) -> dict:
    """The stored row: common columns, then the sample's fields with file references embedded."""
    row = {name: None for name in features}
    row.update(sample_id=sample.sample_id, source=source, source_path=sample.source_path, group_id=group_id)
    for name, value in sample.fields.items():
        if name not in features:
            raise ValueError(f"{source}: {sample.source_path}: field {name!r} is not a column of this config")
        row[name] = _embed(value, root, sample)
    return features.encode_example(row)


def write_shard(rows: list[dict], features: Features, path: Path) -> None:
    """Write rows as one Parquet file whose schema carries the ``datasets`` features."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    tmp = path.with_suffix(".parquet.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
