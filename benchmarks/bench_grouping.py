"""Near-duplicate grouping at MultiMed scale: time and peak memory of the former ``near_duplicate_pairs`` (a set of
tuple pairs, kept below as the baseline) against today's ``near_duplicate_pairs`` (an int64 array) and
``near_duplicate_links`` (the forest the build uses), on clustered synthetic hash pairs, with a check that all give
the same pair count and connected components; and the memory of the sources' own link rules.

    python benchmarks/bench_grouping.py [--sizes 100000 600000] [--baseline-max 100000] [--links-rows 20000]
                                        [--chains 2000]

The hashes imitate CT series (CC-CCII: 617,775 slices): scans of 50-300 slices whose DCT and wavelet hashes drift
0-2 bits a slice; 80% of the scans start from one shared template with 16 random bits changed (CT slices all look
alike, so a band value holds thousands of hashes that are not near), the rest from random hashes. Distances are the
task defaults (10 and 6 bits). The baseline runs up to ``--baseline-max`` hashes (past 100,000 it takes minutes).
Each measurement runs in its own process; peak memory is the process's peak resident memory (VmHWM, reset after
the hashes are made) above its level before the call.

The link-rule lines run malaria's rule over ``--links-rows`` cached cells and RCSB's over ``--chains`` cached
chains of 300 residues (their backbone coordinates as the builder stores them): the former list of every sample
loaded from the validation cache against the lazy ``CachedSamples`` view the build now passes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from multimed_hf.data.sample import Sample, SourceFileRef

DISTANCE, SECOND_DISTANCE = 10, 6


def _former_near_duplicate_pairs(hashes, max_distance, second=None, second_max_distance=None):
    """``near_duplicate_pairs`` before this change (its search verbatim, argument checks left out): a Python set
    of tuple pairs, returned sorted."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    if second is not None:
        second = np.asarray(second, dtype=np.uint64)
    n_bands = max_distance + 1
    edges = np.linspace(0, 64, n_bands + 1).astype(int)
    pairs: set[tuple[int, int]] = set()
    for lo, hi in zip(edges[:-1], edges[1:]):
        width = int(hi - lo)
        if width == 0:
            continue
        band = (hashes >> np.uint64(lo)) & np.uint64((1 << width) - 1)
        order = np.argsort(band, kind="stable")
        starts = np.flatnonzero(np.r_[True, band[order][1:] != band[order][:-1]])
        ends = np.r_[starts[1:], len(order)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            if b - a < 2:
                continue
            members = order[a:b]
            first, sub = hashes[members], None if second is None else second[members]
            block = max(1, min(512, 2**20 // len(members)))
            for start in range(0, len(members), block):
                rows = slice(start, start + block)
                close = np.bitwise_count(first[rows, None] ^ first[None, :]) <= max_distance
                if sub is not None:
                    close &= np.bitwise_count(sub[rows, None] ^ sub[None, :]) <= second_max_distance
                i, j = np.nonzero(np.triu(close, k=start + 1))
                pairs.update(zip(members[i + start].tolist(), members[j].tolist()))
    return sorted(pairs)


def clustered_hashes(n: int, seed: int = 0, spread: int = 16, distinct: float = 0.2):
    """``(dct, wavelet)``: ``n`` hash pairs in scans of 50-300 slices drifting 0-2 bits a slice."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(50, 301, size=n // 50 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), n) + 1]
    lengths[-1] -= lengths.sum() - n
    scan = np.repeat(np.arange(len(lengths)), lengths)
    start = np.cumsum(lengths) - lengths
    out = []
    for _ in range(2):
        template = rng.integers(0, 2**64, dtype=np.uint64)
        bits = np.uint64(1) << rng.integers(0, 64, size=(len(lengths), spread)).astype(np.uint64)
        base = template ^ np.bitwise_xor.reduce(bits, axis=1)
        fresh = rng.random(len(lengths)) < distinct
        base[fresh] = rng.integers(0, 2**64, size=int(fresh.sum()), dtype=np.uint64)
        flips = rng.integers(0, 3, size=n)  # bits changed from the previous slice
        steps = np.uint64(1) << rng.integers(0, 64, size=(n, 2)).astype(np.uint64)
        step = np.where(flips >= 1, steps[:, 0], 0) ^ np.where(flips >= 2, steps[:, 1], 0)
        step[start] = 0
        drift = np.bitwise_xor.accumulate(step.astype(np.uint64))
        out.append(base[scan] ^ drift ^ drift[start][scan])
    return out[0], out[1]


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def _measure(kind: str, n: int, seed: int) -> dict:
    from multimed_hf.data.grouping import component_roots, near_duplicate_links, near_duplicate_pairs

    dct, wavelet = clustered_hashes(n, seed)
    _reset_peak()
    before = _peak_mb()
    start = time.perf_counter()
    if kind == "former":
        pairs = _former_near_duplicate_pairs(dct, DISTANCE, wavelet, SECOND_DISTANCE)
        count = len(pairs)
    elif kind == "pairs":
        pairs = near_duplicate_pairs(dct, DISTANCE, wavelet, SECOND_DISTANCE)
        count = len(pairs)
    else:
        links = near_duplicate_links(dct, DISTANCE, wavelet, SECOND_DISTANCE)
        pairs, count = links.edges, links.pairs
    seconds, peak = time.perf_counter() - start, _peak_mb() - before
    roots = component_roots(n, np.asarray(pairs, dtype=np.int64).reshape(-1, 2))
    return {"seconds": seconds, "peak_mb": peak, "pairs": count, "groups": int(len(np.unique(roots))),
            "components": hashlib.sha256(roots.tobytes()).hexdigest()[:16]}


def _malaria(k: int):
    folder = ("Parasitized", "Uninfected")[k % 2]
    relpath = f"{folder}/C{k // 40}P{k // 90}thinF_IMG_20150604_{k // 10:06d}_cell_{k}.png"
    return Sample(f"{folder}/{k}", relpath, {
        "image": SourceFileRef(relpath, hashlib.sha256(relpath.encode()).hexdigest(), 10_000),
        "diseases": [folder], "label_mask": ["malaria", "normal"], "organ": "blood", "patient_id": f"C{k // 40}",
    }, group_key=f"slide:C{k // 40}")


def _chain(k: int, rng: np.random.Generator, residues: int = 300):
    """An RCSB chain as the builder stores it (backbone coordinates as lists); every tenth a copy's sequence."""
    sequence = "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), residues)) if k % 10 != 9 else None
    coords = rng.normal(size=(4, residues, 3)).round(3).tolist()
    fields = {"sequence": sequence, "ca_coords": coords[1], "n_coords": coords[0], "c_coords": coords[2],
              "o_coords": coords[3], "residue_mask": [1] * residues, "backbone_mask": [15] * residues,
              "residue_numbers": list(range(1, residues + 1)), "insertion_codes": [""] * residues,
              "nonstandard_residues": [], "chain_id": "A", "pdb_id": f"{k:04d}", "resolution": 2.0}
    return Sample(f"{k:04d}_A", f"{k:04d}.cif", fields, extra={"entity_id": "1"})


def _measure_links(kind: str, source: str, rows: int) -> dict:
    """Peak memory of a source's link rule over ``rows`` cached samples: all loaded in a list (``former``), or
    viewed lazily (``lazy``)."""
    from multimed_hf.builders.lhncbc_malaria import MalariaCellsBuilder
    from multimed_hf.builders.rcsb_pdb import RCSBPDBBuilder
    from multimed_hf.data.build_store import BuildStore
    from multimed_hf.data.cache import ValidationCache
    from multimed_hf.data.cached_samples import CachedSamples

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        cache = ValidationCache(Path(tmp) / "cache.sqlite", "1")
        store = BuildStore(Path(tmp) / "store.sqlite", [source])
        previous = None
        for k in range(rows):
            sample = _malaria(k) if source == "malaria" else _chain(k, rng)
            if source == "rcsb":
                sample.fields["sequence"] = sample.fields["sequence"] or previous
                previous = sample.fields["sequence"]
            cache.put(sample.source_path, Path(__file__), [sample])
            store.add_row(0, sample.source_path, 0, sample.sample_id, sample.source_path, sample.group_key, None,
                          None, None, b"", "", 0)
        cache.commit()
        builder = (MalariaCellsBuilder if source == "malaria" else RCSBPDBBuilder)(tmp)
        ids = np.array([i for (i,) in store.query("SELECT id FROM rows ORDER BY id")], dtype=np.int64)
        _reset_peak()
        before = _peak_mb()
        start = time.perf_counter()
        if kind == "former":
            mine = store.query("SELECT relpath, idx FROM rows ORDER BY id").fetchall()
            links = list(builder.link_samples([cache.record(relpath, idx) for relpath, idx in mine]))
        else:
            links = list(builder.link_samples(CachedSamples(store, cache, ids)))
        seconds, peak = time.perf_counter() - start, _peak_mb() - before
        cache.close()
        store.close()
    return {"seconds": seconds, "peak_mb": peak, "pairs": len(links),
            "components": hashlib.sha256(repr(sorted(links)).encode()).hexdigest()[:16]}


def _run(*args) -> dict:
    result = subprocess.run([sys.executable, __file__, "--phase", *map(str, args)], check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 600_000])
    parser.add_argument("--baseline-max", type=int, default=100_000,
                        help="run the former function only up to this many hashes (it is slow past it)")
    parser.add_argument("--links-rows", type=int, default=20_000,
                        help="malaria cells for the link-rule line (0: skip it)")
    parser.add_argument("--chains", type=int, default=2_000,
                        help="RCSB chains of 300 residues for the link-rule line (0: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        kind, n, seed = args.phase
        if kind.startswith(("malaria-", "rcsb-")):
            source, _, kind = kind.partition("-")
            measure = _measure_links(kind, source, int(n))
        else:
            measure = _measure(kind, int(n), int(seed))
        print(json.dumps(measure))
        return 0
    print(f"near duplicates within {DISTANCE} (DCT) and {SECOND_DISTANCE} (wavelet) bits, clustered synthetic "
          "hashes; each side in its own process")
    for n in args.sizes:
        kinds = ["former"] if n <= args.baseline_max else []
        results = {kind: _run(kind, n, args.seed) for kind in kinds + ["pairs", "links"]}
        for kind, r in results.items():
            print(f"  n={n:>8,}  {kind:>6}: {r['seconds']:8.2f} s  peak +{r['peak_mb']:8.1f} MB  "
                  f"{r['pairs']:>11,} pairs  {r['groups']:>8,} groups  components {r['components']}")
        same = len({(r["pairs"], r["components"]) for r in results.values()}) == 1
        print(f"  n={n:>8,}  same pairs and components on every side: {same}")
        if "former" in results:
            f, new = results["former"], results["links"]
            print(f"  n={n:>8,}  links vs former: {f['seconds'] / new['seconds']:.1f}x faster, peak memory "
                  f"{f['peak_mb'] / max(new['peak_mb'], 0.1):.1f}x lower")
        if not same:
            return 1
    for source, rows in (("malaria", args.links_rows), ("rcsb", args.chains)):
        if not rows:
            continue
        former, lazy = (_run(f"{source}-{kind}", rows, 0) for kind in ("former", "lazy"))
        for kind, r in (("former", former), ("lazy", lazy)):
            print(f"  {source} link rule over {rows:,} cached samples, {kind:>6}: {r['seconds']:6.2f} s  "
                  f"peak +{r['peak_mb']:7.1f} MB  {r['pairs']:,} links")
        print(f"  {source}: same links: {former['components'] == lazy['components']}; peak memory "
              f"{former['peak_mb'] / max(lazy['peak_mb'], 0.1):.1f}x lower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
