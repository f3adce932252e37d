"""Self-contained Parquet shards: file bytes embedded, typed by the task's ``Features``, deterministic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Sequence

import pyarrow as pa
from datasets import Features
from datasets.arrow_writer import ParquetWriter

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import Sample, SourceFileRef, array_digest, sample_to_json
from multimed_hf.data.source_builder import SourceBuilder

__all__ = ["SHARD_BYTES", "fingerprint", "plan_shards", "write_shard", "encode_row"]

#: Target payload per shard (the Hub's datasets favour ~100-500 MB Parquet files).
SHARD_BYTES = 256 * 2**20
#: Part of every build fingerprint: "2" since shards are written by datasets' ParquetWriter (other bytes).
FORMAT_VERSION = "2"


def fingerprint(parts: Iterable, samples: Sequence[tuple[str, str, Sample]]) -> str:
    """12 hex digits over the build format, the given parts and every (split, group, sample) that goes in."""
    digest = hashlib.sha256(FORMAT_VERSION.encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    for split, group_id, sample in samples:
        record = sample_to_json(sample, arrays=array_digest)
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


def _embed(ref: SourceFileRef, builder: SourceBuilder) -> dict:
    data = builder.read_ref(ref)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise BadSourceFile(f"{ref.path}: file changed since it was validated; rebuild to re-validate it")
    return {"bytes": data, "path": ref.path}


def encode_row(sample: Sample, builder: SourceBuilder, group_id: str, features: Features) -> dict:
    """The stored row: common columns, then the sample's fields with file references embedded."""
    row = {name: None for name in features}
    row.update(sample_id=sample.sample_id, source=builder.source, source_path=sample.source_path, group_id=group_id)
    refs = {}
    for name, value in sample.fields.items():
        if name not in features:
            raise ValueError(f"{builder.source}: {sample.source_path}: field {name!r} is not a column of this config")
        if isinstance(value, SourceFileRef):
            refs[name] = value
        else:
            row[name] = value
    encoded = features.encode_example(row)
    # set after encoding: datasets' Image drops the bytes of a {bytes, path} whose path exists from the cwd
    for name, ref in refs.items():
        encoded[name] = _embed(ref, builder)
    return encoded


def write_shard(rows: list[dict], features: Features, path: Path) -> None:
    """Write rows (already encoded, file bytes embedded) as one Parquet file with ``datasets``' own Parquet writer,
    the one ``push_to_hub`` uses: its schema carries the features, pages are content-defined chunks (the Hub
    de-duplicates unchanged chunks across rebuilds) with a page index. The same rows give the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    tmp = path.with_suffix(".parquet.tmp")
    with ParquetWriter(path=str(tmp), features=features) as writer:
        writer.write_table(table)
        writer.finalize()
    tmp.replace(path)
