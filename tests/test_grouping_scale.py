"""Near-duplicate search at scale (buckets of thousands, millions of pairs) against a brute-force reference, the
forest the build groups by, the lazy view of cached samples that link rules read, and a build's statistics."""

import itertools
import shutil
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from multimed_hf.api import build_dataset
from multimed_hf.builders.lhncbc_malaria import MalariaCellsBuilder
from multimed_hf.builders.rcsb_pdb import RCSBPDBBuilder
from multimed_hf.data import grouping
from multimed_hf.data.build_store import BuildStore
from multimed_hf.data.cache import ValidationCache
from multimed_hf.data.cached_samples import CachedSamples
from multimed_hf.data.grouping import component_roots, near_duplicate_links, near_duplicate_pairs
from multimed_hf.data.images import read_image_file
from multimed_hf.data.manifest import read_manifest
from multimed_hf.data.sample import Sample
from multimed_hf.tasks import get_task


def _scans(n: int, seed: int, spread: int = 6, length=(20, 200)) -> tuple[np.ndarray, np.ndarray]:
    """``n`` (first, second) hash pairs in series: half of them drift 0-2 bits a step, half scatter 0-2 bits
    around their start (all near duplicates of one another); series start near one template (hashes alike, so one
    band value holds hundreds), a fifth of them at random hashes."""
    rng = np.random.default_rng(seed)
    lengths = []
    while sum(lengths) < n:
        lengths.append(int(rng.integers(*length)))
    lengths[-1] -= sum(lengths) - n
    walks = rng.random(len(lengths)) < 0.5
    out = []
    for _ in range(2):
        template = int(rng.integers(0, 2**63))
        values = []
        for size, walk in zip(lengths, walks):
            start = template ^ sum(1 << int(b) for b in rng.choice(64, spread, replace=False))
            if rng.random() < 0.2:
                start = int(rng.integers(0, 2**63)) << 1 | int(rng.integers(0, 2))
            h = start
            for _ in range(size):
                values.append(h)
                h = h if walk else start
                for b in rng.choice(64, int(rng.integers(0, 3)), replace=False):
                    h ^= 1 << int(b)
        out.append(np.array(values, dtype=np.uint64))
    return out[0], out[1]


def _brute_force(first, d1, second=None, d2=None) -> list[tuple[int, int]]:
    """Every pair within the distances, from the full n x n distance matrix."""
    close = np.bitwise_count(first[:, None] ^ first[None, :]) <= d1
    if second is not None:
        close &= np.bitwise_count(second[:, None] ^ second[None, :]) <= d2
    i, j = np.nonzero(np.triu(close, k=1))
    return list(zip(i.tolist(), j.tolist()))


def _largest_bucket(hashes: np.ndarray, max_distance: int) -> int:
    width = 64 // (max_distance + 1)
    return int(np.unique(hashes & np.uint64((1 << width) - 1), return_counts=True)[1].max())


@pytest.fixture(params=["defaults", "tiny blocks"])
def constants(request, monkeypatch):
    """The search with its own constants, and with ones so small that every path (blocks of a few rows, all small
    buckets in batches, splitting by the second hash, folding the pairs into a forest) runs on small data."""
    if request.param == "tiny blocks":
        monkeypatch.setattr(grouping, "BLOCK", 7)
        monkeypatch.setattr(grouping, "BLOCK_PAIRS", 50)
        monkeypatch.setattr(grouping, "SMALL_BUCKET", 5)
        monkeypatch.setattr(grouping, "SPLIT_FROM", 6)
    return request.param


@pytest.mark.parametrize("d1, d2", [(10, 6), (3, 2), (0, 0), (20, 12)])
def test_pairs_are_every_pair_within_both_distances(constants, d1, d2):
    first, second = _scans(1800, seed=d1)
    if d1 >= 10:
        assert _largest_bucket(first, d1) > grouping.BLOCK, "the data must hold a bucket larger than BLOCK"
    pairs = near_duplicate_pairs(first, d1, second, d2)
    assert pairs.dtype == np.int64 and pairs.shape[1] == 2
    assert [tuple(p) for p in pairs.tolist()] == _brute_force(first, d1, second, d2)
    alone = near_duplicate_pairs(first, d1)
    assert [tuple(p) for p in alone.tolist()] == _brute_force(first, d1)


def test_buckets_of_alike_hashes_split_by_the_second_hash_lose_no_pair(constants, monkeypatch):
    """Hashes near one template but seldom near each other (CT slices look alike): large buckets, few pairs."""
    first, second = _scans(1800, seed=1, spread=10, length=(1, 6))
    assert _largest_bucket(first, 10) > grouping.BLOCK
    split = []
    decide = grouping._Search._split
    monkeypatch.setattr(grouping._Search, "_split", lambda *args: split.append(decide(*args)) or split[-1])
    pairs = near_duplicate_pairs(first, 10, second, 6)
    assert any(chosen.any() for chosen in split), "the search must have split a bucket"
    assert [tuple(p) for p in pairs.tolist()] == _brute_force(first, 10, second, 6)
    links = near_duplicate_links(first, 10, second, 6)
    assert links.pairs == len(pairs)
    assert np.array_equal(component_roots(len(first), links.edges), component_roots(len(first), pairs))


@pytest.mark.parametrize("second_hash", [True, False])
def test_links_have_the_components_and_counts_of_the_pairs(constants, second_hash):
    first, second = _scans(1500, seed=7, spread=8)
    second, d2 = (second, 6) if second_hash else (None, None)
    content = (first >> np.uint64(60)).astype(np.int64)  # equal for some near pairs, not for others
    expected = _brute_force(first, 10, second, d2)
    assert len(expected) > 5 * len(first), "the pairs must outnumber the hashes for the forest to matter"
    links = near_duplicate_links(first, 10, second, d2, content)
    assert len(links.edges) < len(first) and links.pairs == len(expected)
    assert links.distinct_pairs == sum(content[i] != content[j] for i, j in expected) > 0
    reference = component_roots(len(first), np.array(expected, dtype=np.int64))
    assert np.array_equal(component_roots(len(first), links.edges), reference)
    assert near_duplicate_links(first, 10, second, d2).distinct_pairs == len(expected)


def test_bad_companion_arrays_name_what_was_given():
    first = np.arange(4, dtype=np.uint64)
    with pytest.raises(ValueError, match=r"content of 3 items for 4 hashes"):
        near_duplicate_links(first, 2, content=np.zeros(3))
    with pytest.raises(ValueError, match="one second hash per hash"):
        near_duplicate_links(first, 2, first[:3], 1)
    empty = near_duplicate_links(np.empty(0, dtype=np.uint64), 2)
    assert empty.edges.shape == (0, 2) and empty.pairs == 0
    assert near_duplicate_pairs(np.empty(0, dtype=np.uint64), 2).shape == (0, 2)


def _cached(tmp_path, records: dict[str, list[Sample]]):
    cache = ValidationCache(tmp_path / "cache.sqlite", "1")
    store = BuildStore(tmp_path / "store.sqlite", ["src"])
    for relpath, samples in records.items():
        (tmp_path / relpath).write_bytes(b"x")
        cache.put(relpath, tmp_path / relpath, samples)
        for idx, sample in enumerate(samples):
            store.add_row(0, relpath, idx, sample.sample_id, relpath, None, None, None, None, b"", "", 0)
    cache.commit()
    return cache, store


def test_cached_samples_read_each_sample_from_the_cache(tmp_path):
    records = {f"f{k}.txt": [Sample(f"s{k}_{i}", f"f{k}.txt", {"value": 10 * k + i, "profile": np.arange(k + i)})
                             for i in range(k + 1)] for k in range(4)}
    cache, store = _cached(tmp_path, records)
    everything = [s for samples in records.values() for s in samples]
    ids = np.array([1, 3, 4, 7, 10], dtype=np.int64)  # row ids count from 1 in the order added
    view = CachedSamples(store, cache, ids)
    expected = [everything[i - 1] for i in ids]
    assert len(view) == 5 and isinstance(view, Sequence)
    assert [s.sample_id for s in view] == [s.sample_id for s in expected]
    assert [s.fields["value"] for s in view] == [s.fields["value"] for s in expected]
    assert all(np.array_equal(a.fields["profile"], b.fields["profile"]) for a, b in zip(view, expected))
    assert view[-1].sample_id == "s3_3" and view[1].sample_id == expected[1].sample_id
    assert [s.sample_id for s in view[1:4:2]] == [expected[1].sample_id, expected[3].sample_id]
    with pytest.raises(IndexError):
        view[5]
    cache.close()
    store.close()


class _OnePass(Sequence):
    """Samples that may be iterated over once and never indexed: what a rule reading each sample once needs."""

    def __init__(self, samples):
        self._samples, self.passes = samples, 0

    def __len__(self):
        return len(self._samples)

    def __getitem__(self, index):
        raise AssertionError(f"sample {index} read again: a rule must read each sample once")

    def __iter__(self):
        self.passes += 1
        if self.passes > 1:
            raise AssertionError("samples iterated over twice: a rule must read each sample once")
        return iter(self._samples)


def test_source_link_rules_read_each_sample_once(tmp_path):
    rng = np.random.default_rng(0)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    sequences = ["".join(rng.choice(letters, 60)) for _ in range(5)]
    chains = [("1ABC", "A", sequences[0]), ("1ABC", "B", sequences[0]), ("2XYZ", "A", sequences[1]),
              ("3DEF", "C", sequences[2]), ("4GHI", "A", sequences[2][:57] + "WWW"), ("5JKL", "A", sequences[3])]
    proteins = [Sample(f"{p}_{c}", f"{p}.cif", {"pdb_id": p, "chain_id": c, "sequence": s, "ca_coords": [[0.0] * 3]},
                       extra={"entity_id": "1"}) for p, c, s in chains]
    builder = RCSBPDBBuilder(tmp_path)
    links = sorted(builder.link_samples(_OnePass(proteins)))
    assert links == sorted(builder.link_samples(list(proteins))) == [(0, 1), (3, 4)]
    cells = [Sample(f"{i}", f"Parasitized/C{c}P{p}thinF_IMG_2015_cell_{i}.png", {})
             for i, (c, p) in enumerate([(1, 9), (1, 9), (1, 8), (2, 8), (3, 7)])]
    malaria = MalariaCellsBuilder(tmp_path)
    assert list(malaria.link_samples(_OnePass(cells))) == list(malaria.link_samples(cells)) == [(0, 2), (2, 3)]


def _drifting_series(root, count: int = 6, length: int = 9) -> int:
    """Brain-tumor layout: series of slowly changing images (near duplicates of their neighbours) and exact
    copies; returns how many copies."""
    rng = np.random.default_rng(3)
    xx = np.mgrid[0:96, 0:96][1] / 96.0
    classes = [("glioma", "gl"), ("meningioma", "me"), ("notumor", "no"), ("pituitary", "pi")]
    k = 0
    for series in range(count):
        folder, code = classes[series % 4]
        base = np.kron(rng.normal(size=(6, 6)), np.ones((16, 16)))
        for step in range(length):
            image = base + 0.15 * step * np.sin(6 * xx + step) + rng.normal(scale=0.05, size=base.shape)
            image = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
            path = root / "Training" / folder / f"Tr-{code}_{k:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).convert("RGB").save(path, quality=90)
            k += 1
    copies = sorted(root.rglob("*.jpg"))[::7]
    for i, path in enumerate(copies):
        shutil.copy(path, path.with_name(f"{path.stem[:6]}{9000 + i:04d}.jpg"))
    return len(copies)


def test_build_counts_near_duplicate_pairs_as_the_hashes_say(tmp_path):
    """The build's statistics and groups against a brute-force search over every image's hashes."""
    copies = _drifting_series(tmp_path / "src")
    report = build_dataset("brain_tumor", [tmp_path / "src"], tmp_path / "out", progress=False)
    entries = {e.source_path: e for e in read_manifest(tmp_path / "out" / "brain_tumor") if e.sample_id}
    assert all(e.status in ("kept", "moved", "dropped") for e in entries.values())
    paths = sorted(entries)
    refs, hashes = zip(*((ref.sha256, phash) for ref, phash in
                         (read_image_file(tmp_path / "src" / p, p) for p in paths)))
    first = np.array([h >> 64 for h in hashes], dtype=np.uint64)
    second = np.array([h & (2**64 - 1) for h in hashes], dtype=np.uint64)
    task = get_task("brain_tumor")
    pairs = _brute_force(first, task.near_duplicate_distance, second, task.near_duplicate_second_distance)
    near = [(i, j) for i, j in pairs if refs[i] != refs[j]]
    assert len(near) > len(paths) // 2, "the series must hold near duplicates"
    assert report.duplicates["near-duplicate pairs"] == len(near)
    assert report.duplicates["exact duplicate pairs"] == copies
    for i, j in itertools.chain(pairs, ((i, j) for i, j in itertools.combinations(range(len(paths)), 2)
                                        if refs[i] == refs[j])):
        assert entries[paths[i]].group == entries[paths[j]].group, (paths[i], paths[j])
