"""PDB / mmCIF entries read in full with Biopython (first model), one record per protein chain, each checked.

A PDB file must end with its ``END`` record and an mmCIF file with a ``#`` terminator (a cut file otherwise parses
as a smaller structure), and every ``atom_site`` column must have one value per atom. A chain's residues are the
observed amino acids, in file order, merged with the residues the entry records as unobserved (PDB ``REMARK 465``,
mmCIF ``_pdbx_unobs_or_zero_occ_residues``), each at its place along the chain (``_merge_missing``): a missing
residue keeps its place, with mask 0 and coordinates 0. N/C/O backbone atoms are kept beside C-alpha. Modified and
unknown residues are kept (parent letter, else ``X``) and listed as ``NAME:number``; a position keeps one residue
(the alternate of highest C-alpha occupancy), and ligands stay out (``_polymer_residues``). An atom with alternate
locations keeps the coordinates of its highest occupancy (Biopython's choice; the TM-score program reads altloc A
instead: on a tie the two agree, else they may differ by the alternates' distance). A chain with no C-alpha
atom, a peptide shorter than ``MIN_RESIDUES``, unobserved residues whose place the file does not settle, or a chain
break (consecutive C-alpha atoms more than ``MAX_CA_CA`` apart with no missing residue recorded between them) is
returned as a problem, not a record.

Where the unobserved residues go. Author numbers need not increase along a chain: fusion constructs number the insert
apart (2RH1: receptor 29-230, T4 lysozyme 1002-1161, receptor 263-342), chymotrypsin numbering runs insertion codes
backwards (thrombin ``1H 1G ... 1A 1 2``), tags are numbered 1001+ or so; so a sort on (number, insertion code) can
put a missing residue in the wrong place. In order of preference:

1. mmCIF: ``label_seq_id`` (``_atom_site`` for the observed residues, ``_pdbx_unobs_or_zero_occ_residues`` for the
   missing ones) is each residue's position in the entity's sequence: the residues are merged on it (observed ones
   kept in file order), where every residue has one and they are consistent (observed increasing in file order,
   none given twice).
2. Otherwise (a PDB file, or an mmCIF without usable ``label_seq_id``): the observed residues in file order and the
   missing ones in the order the file lists them (wwPDB writes ``REMARK 465`` in chain order). If the author numbers
   increase along both lists (none shared), the sorted merge is the one order keeping both (the merge used for
   ordinary entries). The chain's full sequence (PDB ``SEQRES``; mmCIF ``_pdbx_poly_seq_scheme``; residue names the
   chain never holds, such as ACE/NH2 caps, left out) is the check and, where the numbering does not settle the
   order, the guide: the merge is then the interleaving of the two lists whose residue names read the sequence and
   whose author numbering runs most naturally (fewest steps that are neither a higher number nor the neighbouring
   insertion code of the same number, in either direction: ``1H -> 1G`` is natural; a dynamic programme over
   observed x missing residues, run only for such chains). Where the numbers increase but
   the merge does not read the sequence (a tag or insert that is wholly unobserved), the interleaving that reads it
   is used if there is exactly one best; otherwise the sorted merge stays (e.g. a sequence that differs from the
   residues by a microheterogeneity).
3. A chain whose numbering does not increase and whose missing residues no single best interleaving places (no
   sequence, a sequence the residues do not read, or several equally good orders) is a problem naming a residue:
   never a guessed order.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from multimed_hf.data.errors import BadSourceFile

__all__ = ["ChainRecord", "Entry", "parse_entry", "STRUCTURE_NAME", "BACKBONE", "MIN_RESIDUES", "MAX_CA_CA"]

#: Chains with fewer residues than this are peptides, not structure-prediction targets (reported, left out).
MIN_RESIDUES = 10
#: Consecutive C-alpha atoms further apart than this (Angstrom) are a chain break (trans 3.8, cis 2.9).
MAX_CA_CA = 4.2
BACKBONE = ("N", "CA", "C", "O")
#: An entry's file name: ``<id>.pdb``, ``pdb<id>.ent`` or ``<id>.cif``, gzipped or not (group 1: the id).
STRUCTURE_NAME = re.compile(r"^(?:pdb)?([0-9a-z]{4}|[^/]+?)\.(pdb|ent|cif)(\.gz)?$", re.IGNORECASE)


@dataclass
class ChainRecord:
    """One protein chain as stored: every residue (observed or missing) in order, with its coordinates."""

    chain_id: str
    entity_id: str | None
    sequence: str
    numbers: list[int]
    icodes: str
    coords: np.ndarray  # (L, 4, 3) float: N, CA, C, O; 0 where absent
    atom_mask: np.ndarray  # (L, 4) bool
    nonstandard: list[str] = field(default_factory=list)

    @property
    def residue_mask(self) -> np.ndarray:
        return self.atom_mask[:, 1]


@dataclass
class Entry:
    pdb_id: str
    resolution: float | None
    chains: list[ChainRecord]
    problems: list[tuple[str, str]]  # (chain id, reason)


@lru_cache(maxsize=None)
def _letters():
    from Bio.Data.PDBData import protein_letters_3to1, protein_letters_3to1_extended

    return dict(protein_letters_3to1), dict(protein_letters_3to1_extended)


def _letter(resname: str) -> tuple[str | None, bool]:
    """(one-letter code or None, is standard)."""
    standard, extended = _letters()
    name = resname.strip().upper()
    if name in standard:
        return standard[name], True
    letter = extended.get(name)
    return (letter if letter and letter.isalpha() and len(letter) == 1 else None), False


def _decode(path: Path) -> str:
    data = path.read_bytes()
    if not data:
        raise BadSourceFile("empty file (0 bytes)")
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise BadSourceFile(f"cannot decompress: {type(err).__name__}: {err}") from None
    if b"\x00" in data[:4096]:
        raise BadSourceFile("binary data: not a PDB or mmCIF text file")
    return data.decode("latin-1")


def _last_line(text: str) -> str:
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.rstrip()
    return ""


def _pdb_entities(lines: list[str]) -> dict[str, str]:
    """Chain id -> entity (MOL_ID) from the COMPND records, case kept (Biopython's header lower-cases chains)."""
    text = "".join(line[10:80].rstrip() + " " for line in lines if line.startswith("COMPND"))
    entities, mol = {}, None
    for item in text.split(";"):
        key, _, value = item.partition(":")
        key = key.strip().upper()
        if key == "MOL_ID":
            mol = value.strip()
        elif key == "CHAIN" and mol:
            for chain in value.split(","):
                if chain.strip() and chain.strip() != "NULL":
                    entities[chain.strip()] = mol
    return entities


@dataclass
class _Order:
    """What a file says about the order along each chain beyond the author numbers."""

    sequences: dict[str, list[str]]  # chain id -> residue names of its full sequence (SEQRES / poly_seq_scheme)
    labels: dict[tuple[str, int, str], int | None]  # (chain, number, icode) -> mmCIF label_seq_id (None: conflicting)
    sequence_name: str = "SEQRES"  # where the sequences come from, for the reasons
    #: .pdb: the chains closed by a TER record, and the HETATM residues after it (chain, number, icode): ligands
    terminated: frozenset = frozenset()
    after_ter: frozenset = frozenset()
    #: mmCIF: the residues the file declares non-polymer (chain, number, icode, name): ligands, whatever their number
    nonpolymer: frozenset = frozenset()


def _pdb_seqres(lines: list[str]) -> dict[str, list[str]]:
    """Chain id -> the residue names of its ``SEQRES`` records, in order."""
    sequences: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        if line.startswith("SEQRES"):
            sequences[line[11:12]].extend(line[19:80].split())
    return dict(sequences)


def _pdb_after_ter(lines: list[str]) -> tuple[frozenset, frozenset]:
    """The chains a TER record closes (first model), and the HETATM residues of each after its TER: a chain's
    polymer ends at TER; what follows under its id is bound to it (ligands, ions), not part of it."""
    closed, after, last = set(), set(), None
    for line in lines:
        record = line[:6]
        if record == "ENDMDL":
            break
        if record in ("ATOM  ", "HETATM") and len(line) > 26:
            chain, key = line[21], (line[21], _int_or_none(line[22:26].strip()), line[26] if line[26] != " " else " ")
            if record == "HETATM" and chain in closed:
                after.add(key)
            last = chain
        elif record.rstrip() == "TER":
            closed.add(line[21] if len(line) > 21 and line[21] != " " else last)
    return frozenset(closed - {None}), frozenset(after)


def _parse_pdb(text: str, name: str):
    from Bio.PDB import PDBParser
    from Bio.PDB.parse_pdb_header import parse_pdb_header

    lines = text.splitlines()
    if not any(line.startswith(("ATOM  ", "HETATM")) for line in lines):
        raise BadSourceFile("no ATOM/HETATM records: not a PDB entry")
    last = _last_line(text)
    if last.split()[:1] != ["END"]:
        raise BadSourceFile(f"truncated: the file does not end with an END record (it ends with {last[:30]!r})")
    from Bio.PDB.PDBExceptions import PDBConstructionException

    try:  # a record Biopython cannot build (a coordinate that is no number): the file named, not a traceback
        header = parse_pdb_header(io.StringIO(text))
        structure = PDBParser(QUIET=True).get_structure(name, io.StringIO(text))
    except (PDBConstructionException, IndexError, ValueError, KeyError) as err:
        raise BadSourceFile(f"unreadable PDB: {type(err).__name__}: {err}") from None
    missing = [
        (m["chain"], m["ssseq"], (m.get("insertion") or " ").strip() or " ", m["res_name"], None)
        for m in header.get("missing_residues", [])
        if m.get("model") in (None, 1, "1")
    ]
    id_code = (header.get("idcode") or "").strip()
    terminated, after_ter = _pdb_after_ter(lines)
    order = _Order(sequences=_pdb_seqres(lines), labels={}, terminated=terminated, after_ter=after_ter)
    return structure, header.get("resolution"), missing, _pdb_entities(lines), id_code, order


def _mmcif_column(d: dict, key: str) -> list[str]:
    value = d.get(key, [])
    return value if isinstance(value, list) else [value]


def _parse_mmcif(text: str, name: str):
    from Bio.PDB import MMCIFParser

    if "_atom_site." not in text:
        raise BadSourceFile("no _atom_site category: not an mmCIF entry with coordinates")
    if _last_line(text).strip() != "#":
        raise BadSourceFile("truncated: the file does not end with the '#' that closes its last category")
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    parser = MMCIFParser(QUIET=True)
    try:
        structure = parser.get_structure(name, io.StringIO(text))
        error = None
    except (IndexError, ValueError, KeyError) as err:
        structure, error = None, err
    d = getattr(parser, "_mmcif_dict", None) or MMCIF2Dict(io.StringIO(text))
    sizes = {len(_mmcif_column(d, k)) for k in d if k.startswith("_atom_site.")}
    if len(sizes) > 1:
        raise BadSourceFile(f"truncated: the atom_site loop's columns hold {sorted(sizes)} values (a row is cut)")
    if error is not None:
        raise BadSourceFile(f"unreadable mmCIF: {type(error).__name__}: {error}")
    resolution = None
    for key in ("_refine.ls_d_res_high", "_em_3d_reconstruction.resolution", "_reflns.d_resolution_high"):
        for value in _mmcif_column(d, key):
            try:
                resolution = float(value)
                break
            except ValueError:
                continue
        if resolution is not None:
            break
    prefix = "_pdbx_unobs_or_zero_occ_residues."
    cols = {k: _mmcif_column(d, prefix + k) for k in (
        "PDB_model_num", "polymer_flag", "occupancy_flag", "auth_asym_id", "auth_seq_id", "PDB_ins_code",
        "auth_comp_id", "label_seq_id",
    )}
    labels = cols["label_seq_id"] if len(cols["label_seq_id"]) == len(cols["auth_seq_id"]) else []
    missing = []
    for i in range(len(cols["auth_seq_id"])):
        unobserved = cols["polymer_flag"][i] == "Y" and cols["occupancy_flag"][i] == "1"
        if not unobserved or cols["PDB_model_num"][i] not in ("1", "?"):
            continue
        icode = cols["PDB_ins_code"][i]
        missing.append((
            cols["auth_asym_id"][i], int(cols["auth_seq_id"][i]), " " if icode in ("?", ".") else icode,
            cols["auth_comp_id"][i], _int_or_none(labels[i]) if labels else None,
        ))
    entities = {}
    strand_ids = _mmcif_column(d, "_entity_poly.pdbx_strand_id")
    for entity, strands in zip(_mmcif_column(d, "_entity_poly.entity_id"), strand_ids):
        for chain in strands.split(","):
            entities[chain.strip()] = entity
    id_code = (_mmcif_column(d, "_entry.id") or [""])[0]
    return structure, resolution, missing, entities, "" if id_code in ("?", ".") else id_code, _mmcif_order(d)


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _mmcif_order(d: dict) -> _Order:
    """The observed residues' ``label_seq_id`` (first model) and each chain's sequence from
    ``_pdbx_poly_seq_scheme``, both keyed by author chain id as Biopython's chains are; and the residues the file
    declares non-polymer (``_NonPolymer``), left out of the labels (a ligand may share a residue's number)."""
    site = {k: _mmcif_column(d, "_atom_site." + k) for k in (
        "label_seq_id", "auth_asym_id", "auth_seq_id", "pdbx_PDB_ins_code", "pdbx_PDB_model_num")}
    labels: dict[tuple[str, int, str], int | None] = {}
    nonpolymer = set()
    n = len(site["auth_seq_id"])
    sequences: dict[str, list[str]] = defaultdict(list)
    scheme = {k: _mmcif_column(d, "_pdbx_poly_seq_scheme." + k) for k in (
        "pdb_strand_id", "mon_id", "pdb_seq_num", "pdb_ins_code")}
    if len(scheme["pdb_strand_id"]) == len(scheme["mon_id"]):
        for chain, name in zip(scheme["pdb_strand_id"], scheme["mon_id"]):
            sequences[chain].append(name)
    if n and all(len(column) == n for key, column in site.items() if key != "pdbx_PDB_model_num"):
        declared = _NonPolymer(d, n, scheme)
        models = site["pdbx_PDB_model_num"]
        first = models[0] if len(models) == n else None
        for i in range(n):
            if first is not None and models[i] != first:
                continue
            number = _int_or_none(site["auth_seq_id"][i])
            if number is None:
                continue
            icode = site["pdbx_PDB_ins_code"][i]
            key = (site["auth_asym_id"][i], number, " " if icode in ("?", ".") else icode)
            if site["label_seq_id"][i] == "." and declared(i, key):
                nonpolymer.add((*key, declared.names[i]))
                continue
            label = _int_or_none(site["label_seq_id"][i])
            labels[key] = label if labels.get(key, label) == label else None
    return _Order(sequences=dict(sequences), labels=labels, sequence_name="_pdbx_poly_seq_scheme",
                  nonpolymer=frozenset(nonpolymer))


class _NonPolymer:
    """Whether the ``atom_site`` row ``i`` (its ``label_seq_id`` ``.``: no place in a polymer's sequence) is a
    residue the file declares non-polymer: its entity's ``_entity.type`` is given and is not ``polymer``, or its
    chain's ``_pdbx_poly_seq_scheme`` rows are given and none is this residue. A ``.`` alone is no such statement:
    Biopython's MMCIFIO writes it for every HETATM residue, the modified ones inside the chain included."""

    def __init__(self, d: dict, n: int, scheme: dict[str, list[str]]):
        def column(key):
            value = _mmcif_column(d, "_atom_site." + key)
            return value if len(value) == n else None

        self.names = column("label_comp_id") or column("auth_comp_id") or [""] * n
        self.entities = column("label_entity_id")
        ids, types = _mmcif_column(d, "_entity.id"), _mmcif_column(d, "_entity.type")
        self.types = dict(zip(ids, types)) if len(ids) == len(types) else {}
        self.chains, self.polymer = set(), set()
        if len({len(v) for v in scheme.values()}) == 1:
            for chain, name, number, icode in zip(
                    scheme["pdb_strand_id"], scheme["mon_id"], scheme["pdb_seq_num"], scheme["pdb_ins_code"]):
                self.chains.add(chain)
                self.polymer.add((chain, _int_or_none(number), " " if icode in ("?", ".") else icode, name))

    def __call__(self, i: int, key: tuple[str, int, str]) -> bool:
        kind = self.types.get(self.entities[i]) if self.entities else None
        if kind not in (None, "?", "."):
            return kind.strip().lower() != "polymer"
        return key[0] in self.chains and (*key, self.names[i]) not in self.polymer


def _label(number: int, icode: str) -> str:
    return f"{number}{icode.strip()}"


def _icode_rank(icode: str) -> int:
    """`` `` 0, ``A`` 1, ``B`` 2 ...: neighbouring insertion codes differ by one."""
    icode = icode.strip().upper()
    if not icode:
        return 0
    return ord(icode) - ord("A") + 1 if "A" <= icode <= "Z" else 100 + ord(icode)


def _step_cost(before: tuple[int, str] | None, after: tuple[int, str]) -> int:
    """0 where ``after`` naturally follows ``before`` along a chain (a higher number, or the neighbouring insertion
    code of the same number in either direction: ``52 -> 52A``, ``1H -> 1G``, ``1A -> 1``), else 1."""
    if before is None or after[0] > before[0]:
        return 0
    return 0 if after[0] == before[0] and abs(_icode_rank(after[1]) - _icode_rank(before[1])) == 1 else 1


def _increasing(keys: list[tuple[int, str]]) -> bool:
    return all(a < b for a, b in zip(keys, keys[1:]))


def _merge_on(observed: list, missing: list) -> list[tuple[str, int]]:
    """Observed items in their order, each missing one before the first observed item whose value (sorted) is
    higher; values: ``[(value, ...)]``. The merge used for ordinary entries (and on mmCIF label_seq_id)."""
    pending = sorted(range(len(missing)), key=lambda k: missing[k])
    merged, p = [], 0
    for i, value in enumerate(observed):
        while p < len(pending) and missing[pending[p]] < value:
            merged.append(("m", pending[p]))
            p += 1
        merged.append(("o", i))
    merged.extend(("m", k) for k in pending[p:])
    return merged


def _merge_on_sequence(
    observed: list[tuple[tuple[int, str], str]], missing: list[tuple[tuple[int, str], str]], sequence: list[str],
) -> list[tuple[str, int]] | tuple[str, tuple[int, str] | None]:
    """The interleaving of ``observed`` and ``missing`` (each ``[((number, icode), name)]``, kept in its order) whose
    names read ``sequence`` and whose numbering has the fewest unnatural steps (``_step_cost``).

    Returns the merge, ``("none", None)`` where no interleaving reads the sequence, or ``("ambiguous", key)`` where
    several are equally good (``key``: a missing residue whose place differs between them)."""
    n, m = len(observed), len(missing)
    if n + m != len(sequence):
        return "none", None
    big = 1 << 60
    width = m + 1
    # state (i, j, last): i observed and j missing placed, the last one observed (0) or missing (1)
    size = (n + 1) * width
    cost, count = ([big] * size, [big] * size), ([0] * size, [0] * size)  # [last][i * width + j]
    cost[0][0], count[0][0] = 0, 1

    def last_key(i: int, j: int, last: int):
        if i == j == 0:
            return None
        return observed[i - 1][0] if last == 0 else missing[j - 1][0]

    for i in range(n + 1):
        for j in range(m + 1):
            here = i * width + j
            for last in (0, 1):
                c = cost[last][here]
                if c == big:
                    continue
                before, name = last_key(i, j, last), sequence[i + j] if i + j < n + m else None
                for step_to, item, there in (
                    (0, observed[i] if i < n else None, here + width),
                    (1, missing[j] if j < m else None, here + 1),
                ):
                    if item is None or item[1] != name:
                        continue
                    total = c + _step_cost(before, item[0])
                    if total < cost[step_to][there]:
                        cost[step_to][there], count[step_to][there] = total, count[last][here]
                    elif total == cost[step_to][there]:
                        count[step_to][there] = min(2, count[step_to][there] + count[last][here])
    end = n * width + m
    best = min(cost[0][end], cost[1][end])
    if best == big:
        return "none", None
    ends = [last for last in (0, 1) if cost[last][end] == best]
    if len(ends) > 1:
        return "ambiguous", missing[m - 1][0]
    # back from the end along optimal predecessors; the first state with two of them is where the orders differ
    i, j, last, merged = n, m, ends[0], []
    while i or j:
        merged.append(("o", i - 1) if last == 0 else ("m", j - 1))
        pi, pj = (i - 1, j) if last == 0 else (i, j - 1)
        key = observed[i - 1][0] if last == 0 else missing[j - 1][0]
        options = [
            pl for pl in (0, 1)
            if cost[pl][pi * width + pj] != big
            and cost[pl][pi * width + pj] + _step_cost(last_key(pi, pj, pl), key) == cost[last][i * width + j]
        ]
        if len(options) > 1:
            return "ambiguous", missing[j - 1][0]
        i, j, last = pi, pj, options[0]
    if count[ends[0]][end] > 1:  # not reached: a count above one comes from a state with two optimal predecessors
        return "ambiguous", missing[0][0]
    merged.reverse()
    return merged


def _merge_missing(
    observed: list[tuple[int, str, str, int | None]], missing: list[tuple[int, str, str, int | None]],
    sequence: list[str] | None, sequence_name: str = "SEQRES",
) -> list[tuple[str, int]] | str:
    """The chain's order as ``[("o", index in observed) | ("m", index in missing)]``, or the reason why the missing
    residues cannot be placed. Items: ``(number, icode, name, mmCIF label_seq_id or None)``; the module docstring
    gives the rules."""
    if not missing:
        return [("o", i) for i in range(len(observed))]
    seen = [o[3] for o in observed]
    gone = [m[3] for m in missing]
    if None not in seen and None not in gone and _increasing(seen) and not set(gone) & set(seen) \
            and len(set(gone)) == len(gone):
        return _merge_on(seen, gone)  # mmCIF: each residue's position in the sequence
    seen_keys = [(o[0], o[1]) for o in observed]
    gone_keys = [(m[0], m[1]) for m in missing]
    ordinary = _increasing(seen_keys) and _increasing(gone_keys) and not set(seen_keys) & set(gone_keys)
    merge = _merge_on(seen_keys, gone_keys) if ordinary else None
    result = None
    if sequence:
        names = {o[2] for o in observed} | {m[2] for m in missing}
        sequence = [name for name in sequence if name in names]  # caps (ACE, NH2) and such the chain does not hold
        if merge is not None and [(observed if k == "o" else missing)[i][2] for k, i in merge] == sequence:
            return merge
        result = _merge_on_sequence(
            [(k, o[2]) for k, o in zip(seen_keys, observed)], [(k, m[2]) for k, m in zip(gone_keys, missing)],
            sequence,
        )
        if isinstance(result, list):
            return result
    if merge is not None:
        return merge
    where = _not_increasing(seen_keys) or _not_increasing(gone_keys) or "a missing residue numbered as an observed one"
    first = missing[0]
    if result is None:
        why = f"the file gives no sequence ({sequence_name}) to order them by"
    elif result[0] == "none":
        why = f"the chain's observed and missing residues do not read its sequence ({sequence_name})"
    else:
        first = missing[gone_keys.index(result[1])]
        why = f"several orders read its sequence ({sequence_name}) equally well"
    return (
        f"unobserved residue {first[2]} {_label(first[0], first[1])} cannot be placed along the chain: the author "
        f"numbering does not increase along it ({where}) and {why}"
    )


def _not_increasing(keys: list[tuple[int, str]]) -> str | None:
    for a, b in zip(keys, keys[1:]):
        if not a < b:
            return f"{_label(*a)} then {_label(*b)}"
    return None


def _ca_occupancy(residue) -> float:
    """The residue's C-alpha occupancy, over all its alternate locations (0 without a C-alpha)."""
    if "CA" not in residue:
        return 0.0
    atoms = residue["CA"].disordered_get_list() if residue["CA"].is_disordered() else [residue["CA"]]
    return float(sum(atom.get_occupancy() or 0.0 for atom in atoms))


def _position_rank(residue) -> tuple[float, int]:
    """Which of two residues at one position a chain keeps (the higher): C-alpha occupancy, then the earlier
    alternate location of its C-alpha (``A`` before ``B``)."""
    if "CA" not in residue:
        return 0.0, -128
    atoms = residue["CA"].disordered_get_list() if residue["CA"].is_disordered() else [residue["CA"]]
    return _ca_occupancy(residue), -ord(min(atom.get_altloc() or " " for atom in atoms)[0])


def _main_residue(residue):
    """The residue a position holds: where it holds two residue types (microheterogeneity: SER 0.7 / THR 0.3),
    the one of highest C-alpha occupancy, the first listed (altloc A, the deposited sequence's) on a tie; Biopython
    selects the last one added, whatever its occupancy."""
    if residue.is_disordered() != 2:
        return residue
    names = residue.disordered_get_id_list()
    best = max(names, key=lambda name: (_ca_occupancy(residue.child_dict[name]), -names.index(name)))
    return residue.child_dict[best]


def _one_per_position(observed: list) -> list:
    """``observed`` with one residue per (number, insertion code): a position whose alternates are a standard
    residue (ATOM) and a modified one (HETATM: CYS / CSO, MET / MSE) is two Biopython residues (their hetero flags
    differ), which ``_main_residue`` never sees; the one of highest C-alpha occupancy is kept, altloc A's on a tie,
    at its place in file order."""
    best: dict[tuple[int, str], int] = {}
    for i, entry in enumerate(observed):
        j = best.setdefault((entry[0], entry[1]), i)
        if j != i and _position_rank(entry[5]) > _position_rank(observed[j][5]):
            best[(entry[0], entry[1])] = i
    kept = set(best.values())
    return [entry for i, entry in enumerate(observed) if i in kept]


def _peptide_bond(before, after) -> bool:
    """Whether residue ``before``'s C and ``after``'s N are bonded (a peptide bond is 1.33 A)."""
    return "C" in before and "N" in after and float(np.linalg.norm(before["C"].coord - after["N"].coord)) < 2.0


def _polymer_residues(chain_id: str, observed: list, order: _Order) -> list:
    """``observed`` without the HETATM residues that are ligands bound to the chain, not part of it (SAH / SAM
    cofactors, a free D- or phospho-amino acid: amino-acid-like atoms, deposited under the chain after its TER): a
    residue the mmCIF declares non-polymer (``_NonPolymer``) goes, whatever its number; a HETATM residue stays where
    mmCIF gives it a ``label_seq_id`` (a polymer position); in a .pdb whose chain a TER closes, where it comes before
    the TER; else where it lies between the chain's first and last ATOM residues or is peptide-bonded to a neighbour
    (a modified residue at a chain end)."""
    observed = [o for o in observed if (chain_id, o[0], o[1], o[2]) not in order.nonpolymer]
    atoms = [o[0] for o in observed if o[5].id[0] == " "]
    first, last = (min(atoms), max(atoms)) if atoms else (None, None)
    kept = []
    for i, entry in enumerate(observed):
        residue = entry[5]
        label = order.labels.get((chain_id, entry[0], entry[1]))
        if residue.id[0] == " " or label is not None:
            kept.append(entry)
        elif chain_id in order.terminated:  # the file says where its polymer ends
            if (chain_id, entry[0], entry[1]) not in order.after_ter:
                kept.append(entry)
        elif (first is not None and first < entry[0] < last) or (
                i > 0 and _peptide_bond(observed[i - 1][5], residue)) or (
                i + 1 < len(observed) and _peptide_bond(residue, observed[i + 1][5])):
            kept.append(entry)
    return kept


def _chain_record(chain, missing: list[tuple[int, str, str, int | None]], entity: str | None, order: _Order):
    """The chain's residues (observed merged with missing), None for a chain with no amino acid, or the reason why
    the missing residues cannot be placed (a string)."""
    observed = []
    for residue in chain:
        residue = _main_residue(residue)
        het, number, icode = residue.id
        if het == "W":
            continue
        name = residue.get_resname()
        letter, standard = _letter(name)
        backbone = all(a in residue for a in ("N", "CA", "C"))
        if het != " ":
            # HETATM: a modified amino acid inside the polymer, never a free standard amino acid (a ligand)
            if standard or not (letter or backbone) or "CA" not in residue:
                continue
        elif letter is None and not backbone:
            continue  # a nucleotide or other non-amino-acid polymer residue
        observed.append((number, icode or " ", name, letter, standard, residue))
    observed = _one_per_position(_polymer_residues(chain.id, observed, order))
    if not observed:
        return None
    merged = _merge_missing(
        [(r[0], r[1], r[2], order.labels.get((chain.id, r[0], r[1]))) for r in observed], missing,
        order.sequences.get(chain.id), order.sequence_name,
    )
    if isinstance(merged, str):
        return merged
    rows = []
    for kind, index in merged:
        if kind == "o":
            rows.append(observed[index])
        else:
            m_number, m_icode, m_name, _ = missing[index]
            m_letter, m_standard = _letter(m_name)
            rows.append((m_number, m_icode, m_name, m_letter, m_standard, None))
    coords = np.zeros((len(rows), 4, 3), dtype=np.float64)
    mask = np.zeros((len(rows), 4), dtype=bool)
    nonstandard = []
    for i, (number, icode, name, letter, standard, residue) in enumerate(rows):
        if not standard:
            nonstandard.append(f"{name.strip()}:{number}{icode.strip()}")
        if residue is None:
            continue
        for j, atom in enumerate(BACKBONE):
            if atom in residue:
                coords[i, j] = residue[atom].get_coord()
                mask[i, j] = True
    return ChainRecord(
        chain_id=chain.id, entity_id=entity, sequence="".join(r[3] or "X" for r in rows),
        numbers=[int(r[0]) for r in rows], icodes="".join(r[1] for r in rows),
        coords=np.round(coords, 3), atom_mask=mask, nonstandard=nonstandard,
    )


def _chain_problem(record: ChainRecord) -> str | None:
    observed = int(record.residue_mask.sum())
    if observed == 0:
        return f"no C-alpha atoms: none of its {len(record.sequence)} residues has a CA atom"
    if len(record.sequence) < MIN_RESIDUES:
        return f"peptide of {len(record.sequence)} residues, shorter than {MIN_RESIDUES}: not a structure target"
    if set(record.sequence) == {"X"}:  # poly-UNK (unassigned cryo-EM density): no sequence to predict from
        return f"no known residue: all {len(record.sequence)} are unknown (UNK): no sequence to predict from"
    ca, mask = record.coords[:, 1], record.residue_mask
    both = mask[:-1] & mask[1:]
    gaps = np.linalg.norm(ca[1:] - ca[:-1], axis=1)
    broken = np.nonzero(both & (gaps > MAX_CA_CA))[0]
    if broken.size:
        i = int(broken[0])
        first, second = (f"{record.numbers[k]}{record.icodes[k].strip()}" for k in (i, i + 1))
        return (
            f"chain break: residues {first} and {second} are {gaps[i]:.1f} A apart (C-alpha) with no missing "
            f"residue recorded between them ({broken.size} such break(s))"
        )
    return None


def parse_entry(path: Path) -> Entry:
    """Parse one PDB/mmCIF entry fully; ``BadSourceFile`` if the file is not a whole, readable entry."""
    text = _decode(path)
    match = STRUCTURE_NAME.match(path.name)
    stem = match.group(1) if match else path.stem
    parse = _parse_mmcif if ".cif" in path.name.lower() else _parse_pdb
    structure, resolution, missing, entities, id_code, order = parse(text, stem)
    models = list(structure)
    if not models or not any(True for _ in models[0].get_atoms()):
        raise BadSourceFile("no atoms: the file parses as an empty structure")
    by_chain: dict[str, list] = defaultdict(list)
    for chain, number, icode, resname, label in missing:
        by_chain[chain].append((number, icode, resname, label))
    chains, problems = [], []
    for chain in models[0]:
        record = _chain_record(chain, by_chain.get(chain.id, []), entities.get(chain.id), order)
        if record is None:
            continue
        if isinstance(record, str):
            problems.append((chain.id, record))
            continue
        problem = _chain_problem(record)
        if problem:
            problems.append((chain.id, problem))
        else:
            chains.append(record)
    pdb_id = (id_code or stem).upper()
    return Entry(pdb_id, float(resolution) if resolution is not None else None, chains, problems)


