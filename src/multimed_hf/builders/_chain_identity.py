"""Sequence-identity grouping of protein chains: identical and near-identical pairs (k-mer prefilter + Biopython's
``PairwiseAligner``, identities over the shorter chain), and RCSB's published sequence-cluster files."""

from __future__ import annotations

from collections import defaultdict
from functools import lru_cache
from pathlib import Path

from multimed_hf.data.errors import BadSourceFile

__all__ = ["near_identical_pairs", "sequence_identity", "read_clusters", "MIN_IDENTITY"]

#: Chains at least this identical (over the shorter chain) share a group.
MIN_IDENTITY = 0.9


def _kmers(sequence: str, k: int) -> set[str]:
    return {sequence[i:i + k] for i in range(len(sequence) - k + 1)}


@lru_cache(maxsize=1)
def _aligner():
    from Bio.Align import PairwiseAligner

    aligner = PairwiseAligner(scoring="blastp")
    aligner.end_gap_score = 0  # a fragment inside a longer chain is not penalised for the ends it lacks
    return aligner


def sequence_identity(a: str, b: str) -> float:
    """Identical aligned residues over the shorter sequence's length (BLOSUM62 alignment, free end gaps)."""
    if not a or not b:
        return 0.0
    alignment = _aligner().align(a, b)[0]
    return alignment.counts().identities / min(len(a), len(b))


def near_identical_pairs(
    sequences: list[str], min_identity: float = MIN_IDENTITY, k: int = 5, max_postings: int = 2000,
    queries: set[int] | None = None,
) -> list[tuple[int, int]]:
    """Index pairs of sequences that are identical or at least ``min_identity`` identical (only pairs touching
    ``queries`` where given: the chains a cluster file leaves out).

    Identical sequences pair directly; distinct ones become candidates when they share at least a quarter of the
    shorter one's k-mers (at 90% identity at least half survive), skipping k-mers so common they carry no signal
    (tags), and candidates are aligned. A plain-Python index: for the whole PDB, supply RCSB's cluster file."""
    first: dict[str, int] = {}
    members_of: dict[str, list[int]] = defaultdict(list)
    for i, sequence in enumerate(sequences):
        first.setdefault(sequence, i)
        members_of[sequence].append(i)
    unique = list(first)
    asked = None if queries is None else {u for u, s in enumerate(unique) if set(members_of[s]) & queries}
    pairs = []
    for u, sequence in enumerate(unique):
        members = members_of[sequence]
        pairs.extend(
            (members[0], j) for j in members[1:] if queries is None or members[0] in queries or j in queries
        )
    kmers = [_kmers(s, k) for s in unique]
    postings: dict[str, list[int]] = defaultdict(list)
    for u, grams in enumerate(kmers):
        for gram in grams:
            postings[gram].append(u)
    shared: dict[tuple[int, int], int] = defaultdict(int)
    for members in postings.values():
        if not 1 < len(members) <= max_postings:
            continue
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                if asked is None or members[x] in asked or members[y] in asked:
                    shared[members[x], members[y]] += 1
    for (u, v), count in sorted(shared.items()):
        if count < 0.25 * min(len(kmers[u]), len(kmers[v])):
            continue
        if sequence_identity(unique[u], unique[v]) >= min_identity:
            pairs.append((first[unique[u]], first[unique[v]]))
    return sorted(pairs)


def read_clusters(path: Path) -> dict[str, int]:
    """``PDBID_ENTITY`` or ``PDBID_CHAIN`` (upper-case id) -> cluster number, one cluster per line; ``BadSourceFile``
    for a file that is not such text."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadSourceFile(f"{path.name} is not UTF-8 text: {err}") from None
    clusters = {}
    for n, line in enumerate(text.splitlines()):
        for member in line.split():
            if "_" not in member:
                raise BadSourceFile(f"line {n + 1}: member {member!r} is not PDBID_ENTITY or PDBID_CHAIN")
            pdb_id, _, part = member.partition("_")
            clusters[f"{pdb_id.upper()}_{part}"] = n
    return clusters
