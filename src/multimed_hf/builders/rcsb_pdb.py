"""RCSB PDB entries: a folder of ``.pdb`` / ``.cif`` (or ``pdbXXXX.ent``, gzipped or not), one sample per protein chain.

File names are read in either case: the RCSB's download service writes upper-case ids (``2GTL.cif``,
``2GTL.pdb.gz``), the wwPDB archive lower-case ones (``2gtl.cif.gz``, ``pdb2gtl.ent.gz``); the id is upper-cased
(``2GTL_A``), chain ids are kept as written (they are case-sensitive).

Each entry is read in full and checked by ``_pdb_reader`` (first model; missing residues kept in place with
``residue_mask`` 0; backbone atoms beside C-alpha, ``backbone_mask`` bits 1 N, 2 CA, 4 C, 8 O; modified residues in
``nonstandard_residues``). A chain the reader finds unusable (no C-alpha atom, a peptide shorter than
``MIN_RESIDUES``, unobserved residues whose place along the chain the file does not settle, an unrecorded chain
break) is reported as ``<file>:row chain <id>`` in the manifest (see ``_records``) and left out; a file with no good
chain is rejected with its chains' reasons. Chains with no amino acid (nucleic acids, waters, ligands) are not
protein chains and give no sample.

An entry present in both formats (``1abc.pdb`` / ``pdb1abc.ent`` and ``1abc.cif``, gzipped or not, anywhere in the
folder) is read from its mmCIF, the PDB's archive format (the legacy format cannot hold every entry); the other copy
is dropped, named, rather than both being rejected as duplicate ids. What the RCSB serves beside an entry
(biological assemblies ``1abc-assembly1.cif.gz`` / ``1abc.pdb1.gz``, structure factors ``1abc-sf.cif.gz``, NMR
restraints, PDBML) is dropped, named: an assembly repeats the entry's chains under the same ids.

Grouping: where one RCSB cluster file (``clusters-by-entity-NN.txt`` or ``bc-NN.out``) lies in the folder, its
clusters are the groups; chains it does not list (and every chain, without one) are grouped with identical and
>= 90%-identical chains (``_chain_identity``).
"""

from __future__ import annotations

import re
from collections import defaultdict
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Iterable, Sequence

import numpy as np

from multimed_hf.builders._chain_identity import MIN_IDENTITY, near_identical_pairs, read_clusters, sequence_identity
from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._pdb_reader import (
    MAX_CA_CA,
    MIN_RESIDUES,
    STRUCTURE_NAME,
    ChainRecord,
    Entry,
    parse_entry,
)
from multimed_hf.builders._records import RecordRejections
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = [
    "RCSBPDBBuilder", "ChainRecord", "parse_entry", "near_identical_pairs", "sequence_identity",
    "MIN_RESIDUES", "MAX_CA_CA", "MIN_IDENTITY",
]

_CLUSTERS = re.compile(r"^(clusters-by-entity-\d+\.txt|bc-\d+\.out)$")
#: What the RCSB serves beside an entry's own file (File Download Services, the batch download script's options):
#: no asymmetric unit to read, each dropped with the reason.
_BESIDE_ENTRIES = (
    (re.compile(r"^[0-9a-z]{4}-assembly\d+\.cif(\.gz)?$", re.IGNORECASE),
     "a biological assembly (copies of the entry's chains)"),
    (re.compile(r"^(pdb)?[0-9a-z]{4}\.(pdb|ent)\d+(\.gz)?$", re.IGNORECASE),
     "a biological assembly (copies of the entry's chains)"),
    (re.compile(r"^[0-9a-z]{4}-sf\.cif(\.gz)?$", re.IGNORECASE),
     "structure factors (reflection data), not coordinates"),
    (re.compile(r"^[0-9a-z]{4}(\.mr|_mr\.str)(\.gz)?$", re.IGNORECASE), "NMR restraints, not coordinates"),
    (re.compile(r"^[0-9a-z]{4}\.xml(\.gz)?$", re.IGNORECASE), "the entry as PDBML (XML), a copy of its mmCIF"),
)
_DOCUMENTS = re.compile(r"^(README.*|LICENSE.*|pdb_seqres\.txt)$", re.IGNORECASE)


class RCSBPDBBuilder(NonDataFiles, RecordRejections, SourceBuilder):
    task = "protein_structure"
    source = "rcsb_pdb"
    record_noun = "protein chain"
    # 2: files the RCSB serves beside entries (assemblies, structure factors) dropped, not read; 3: unobserved residues
    # placed by mmCIF label_seq_id / the SEQRES order, not by sorting author numbers (fusions, descending insertion
    # codes); a chain whose missing residues cannot be placed is reported, not guessed; 4: ligands with amino-acid
    # atoms bound to a chain (SAH, SAM) left out of it; a .pdb record Biopython cannot build rejects the file; a
    # position holding two residue types keeps the one of highest occupancy; a chain of unknown residues rejected;
    # 5: one residue per position also where its alternates are an ATOM and a HETATM residue (CYS / CSO, MET / MSE);
    # an mmCIF residue declared non-polymer (label_seq_id '.', its entity's type) left out of the chain, whatever
    # its number
    version = "5"

    @classmethod
    def detect(cls, root: Path) -> bool:
        """Entries in the folder or one level down (an rsync mirror's ``ab/pdb1abc.ent.gz``); never deeper, so
        that asking a large image folder costs little. Names as the RCSB and the wwPDB archive write them, in
        either case (``2GTL.cif``, ``2gtl.cif.gz``, ``pdb2gtl.ent.gz``, a Windows copy's ``2GTL.CIF``)."""
        return any(STRUCTURE_NAME.match(p.name) and p.is_file() for pattern in ("*", "*/*") for p in root.glob(pattern))

    def _cluster_files(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and _CLUSTERS.match(p.name))

    @cached_property
    def _mmcif_of(self) -> dict[str, str]:
        """``{entry id (lower case): its mmCIF file}`` over the folder (the first, where an id has several)."""
        found: dict[str, str] = {}
        for relpath in self.list_files():
            match = STRUCTURE_NAME.match(PurePosixPath(relpath).name)
            if match and match.group(2).lower() == "cif":
                found.setdefault(match.group(1).lower(), relpath)
        return found

    def read_file(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if _CLUSTERS.match(name) and "/" not in relpath:
            found = self._cluster_files()
            if len(found) > 1:
                raise BadSourceFile(f"ambiguous: several RCSB cluster files {found}; keep the one to group by")
            if not read_clusters(self.root / relpath):
                raise BadSourceFile("empty cluster file: no cluster members")
            return []
        if _DOCUMENTS.match(name):
            return []
        for pattern, what in _BESIDE_ENTRIES:
            if pattern.match(name):
                raise UnusedSourceFile(f"not used: {what}; the entry is read from its own <id>.cif / <id>.pdb file")
        if not STRUCTURE_NAME.match(name):
            raise BadSourceFile("stray file: not a .pdb / .ent / .cif entry (gzipped or not) or an RCSB cluster file")
        match = STRUCTURE_NAME.match(name)
        mmcif = self._mmcif_of.get(match.group(1).lower())
        if match.group(2).lower() != "cif" and mmcif is not None:
            raise UnusedSourceFile(f"the same entry's mmCIF is read ({mmcif})")
        entry = parse_entry(self.root / relpath)
        if not entry.chains and not entry.problems:
            raise BadSourceFile("no protein chain: the entry holds no amino-acid residue")
        samples = [self._sample(relpath, entry, record) for record in entry.chains]
        return self.keep_records(relpath, samples, [(f"chain {c}", reason) for c, reason in entry.problems])

    def _sample(self, relpath: str, entry: Entry, record: ChainRecord) -> Sample:
        coords, mask = record.coords, record.atom_mask
        bits = (mask * np.array([1, 2, 4, 8])).sum(axis=1)
        fields = {
            "sequence": record.sequence,
            "ca_coords": coords[:, 1].tolist(),
            "residue_mask": record.residue_mask.astype(int).tolist(),
            "residue_numbers": record.numbers,
            "insertion_codes": record.icodes,
            "n_coords": coords[:, 0].tolist(),
            "c_coords": coords[:, 2].tolist(),
            "o_coords": coords[:, 3].tolist(),
            "backbone_mask": bits.astype(int).tolist(),
            "nonstandard_residues": record.nonstandard,
            "chain_id": record.chain_id,
            "pdb_id": entry.pdb_id,
            "resolution": entry.resolution,
        }
        # No content_hash: identical chains are linked through link_samples, never label-checked as duplicates.
        return Sample(
            sample_id=f"{entry.pdb_id}_{record.chain_id}", source_path=relpath, fields=fields,
            extra={"entity_id": record.entity_id},
        )

    def link_samples(self, samples: Sequence[Sample]) -> Iterable[tuple[int, int]]:
        """Chains of one cluster (the cluster file's), and identical or near-identical chains (every chain without
        a cluster file; with one, those it does not list). Each sample is read once; only its sequence is kept."""
        found = self._cluster_files()
        clusters: dict[str, int] = {}
        if len(found) == 1:
            try:
                clusters = read_clusters(self.root / found[0])
            except BadSourceFile:
                clusters = {}
        members: dict[int, list[int]] = defaultdict(list)
        unclustered, sequences = [], []
        for i, sample in enumerate(samples):
            pdb_id, chain = sample.fields["pdb_id"], sample.fields["chain_id"]
            entity = sample.extra.get("entity_id")
            key = f"{pdb_id}_{entity}" if entity and f"{pdb_id}_{entity}" in clusters else f"{pdb_id}_{chain}"
            if key in clusters:
                members[clusters[key]].append(i)
            else:
                unclustered.append(i)
            sequences.append(sample.fields["sequence"])
        for group in members.values():
            yield from ((group[0], j) for j in group[1:])
        # without a cluster file, every chain; with one, the chains it lacks, matched against every chain
        if not clusters:
            yield from near_identical_pairs(sequences)
        elif unclustered:
            yield from near_identical_pairs(sequences, queries=set(unclustered))
