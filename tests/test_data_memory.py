"""What keeps a build's memory flat: every array in side files, shard plans that count array bytes, shards built
from column arrays and written a row group at a time (the same bytes however they are batched)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Features, List, Value

from multimed_hf.data.cache import ValidationCache
from multimed_hf.data.sample import Sample
from multimed_hf.data.shards import ShardWriter, encode_columns, payload_size, plan_shards, shard_batch_rows


class _Builder:  # what encode_columns reads of a builder
    source = "toy"


FEATURES = Features({
    "sample_id": Value("string"), "source": Value("string"), "source_path": Value("string"),
    "group_id": Value("string"), "indices": List(Value("int32")), "values": List(Value("float32")),
    "epoch": List(List(Value("float32"))), "coords": List(List(Value("float32"), length=3)),
    "tissue": Value("string"),
})


def _sample(i: int, rng) -> Sample:
    n = int(rng.integers(0, 6))
    fields = {
        "indices": np.sort(rng.choice(50, n, replace=False)).astype(np.int32),
        "values": rng.random(n).astype(np.float32) if i % 4 else None,
        "epoch": rng.random((2, 3 + i % 2)).astype(np.float32),
        "coords": rng.random((1 + i % 3, 3)).astype(np.float32),
        "tissue": f"t{i % 3}",
    }
    return Sample(sample_id=f"s{i:03d}", source_path=f"f{i // 10}.h5ad", fields=fields)


def test_small_arrays_go_to_side_files_and_come_back_as_arrays(tmp_path):
    source = tmp_path / "cells.h5ad"
    source.write_bytes(b"x")
    cache = ValidationCache(tmp_path / "cache.sqlite", "v1")
    samples = [_sample(i, np.random.default_rng(i)) for i in range(3)]
    cache.put("cells.h5ad", source, samples, None)
    assert cache.lookup("cells.h5ad", source) == (3, None)  # (writes the outcomes put holds)
    body = cache._db.execute("SELECT body FROM records WHERE idx = 1").fetchone()[0]
    assert set(json.loads(body)["fields"]["indices"]) == {"__array__"}  # a reference, not the values as JSON
    back = list(cache.records("cells.h5ad"))
    for before, after in zip(samples, back):
        assert isinstance(after.fields["indices"], np.ndarray)  # a 0..5-value array: not a list of floats
        for name in ("indices", "epoch", "coords"):
            np.testing.assert_array_equal(after.fields[name], before.fields[name])
    cache.close()
    reopened = ValidationCache(tmp_path / "cache.sqlite", "v1")
    assert reopened.lookup("cells.h5ad", source) == (3, None)
    np.testing.assert_array_equal(reopened.record("cells.h5ad", 2).fields["epoch"], samples[2].fields["epoch"])
    reopened.close()
    assert ValidationCache(tmp_path / "cache.sqlite", "v2").lookup("cells.h5ad", source) is None


def test_columns_from_arrays_equal_the_row_by_row_table():
    rng = np.random.default_rng(0)
    samples = [_sample(i, rng) for i in range(23)]
    groups = [f"g{i % 5}" for i in range(23)]
    table = encode_columns(samples, groups, _Builder(), FEATURES)
    rows = [{"sample_id": s.sample_id, "source": "toy", "source_path": s.source_path, "group_id": g,
             **{k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in s.fields.items()}}
            for s, g in zip(samples, groups)]
    assert table.equals(pa.Table.from_pylist(rows, schema=FEATURES.arrow_schema))
    assert table.column("values").null_count == 6


def test_shard_plans_count_array_bytes():
    big = Sample("a", "a", {"values": np.zeros(1000, dtype=np.float32)})
    small = Sample("b", "b", {"values": np.zeros(10, dtype=np.float32)})
    assert payload_size(big) - payload_size(small) == 990 * 4
    sizes = [payload_size(big)] * 10
    shards = plan_shards(sizes, shard_bytes=3 * sizes[0])
    assert [len(s) for s in shards] == [3, 3, 3, 1] and shards[-1] == range(9, 10)
    assert plan_shards([], 100) == [range(0, 0)]


@pytest.mark.parametrize("batch", [1, 2])
def test_a_shard_written_in_row_group_batches_has_the_bytes_of_one_write(tmp_path, batch):
    rng = np.random.default_rng(1)
    samples = [_sample(i, rng) for i in range(2500)]
    table = encode_columns(samples, ["g"] * len(samples), _Builder(), FEATURES)
    whole = ShardWriter(tmp_path / "whole.parquet", FEATURES)
    whole.write(table)
    whole.close()
    parts = ShardWriter(tmp_path / "parts.parquet", FEATURES)
    step = shard_batch_rows(FEATURES) * batch
    for start in range(0, table.num_rows, step):
        parts.write(table.slice(start, step))
    parts.close()
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "parts.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "parts.parquet").metadata.num_row_groups > 1
