"""PDB / mmCIF entries read in full with Biopython (first model), one record per protein chain, each checked.

A PDB file must end with its ``END`` record and an mmCIF file with a ``#`` terminator (a cut file otherwise parses
as a smaller structure), and every ``atom_site`` column must have one value per atom. A chain's residues are the
observed amino acids, in file order, merged with the residues the entry records as unobserved (PDB ``REMARK 465``,
mmCIF ``_pdbx_unobs_or_zero_occ_residues``) at their author numbers: a missing residue keeps its place, with mask 0
and coordinates 0. N/C/O backbone atoms are kept beside C-alpha. Modified and unknown residues are kept (parent
letter, else ``X``) and listed as ``NAME:number``. A chain with no C-alpha atom, a peptide shorter than
``MIN_RESIDUES`` or a chain break (consecutive C-alpha atoms more than ``MAX_CA_CA`` apart with no missing residue
recorded between them) is returned as a problem, not a record.
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


def _parse_pdb(text: str, name: str):
    from Bio.PDB import PDBParser
    from Bio.PDB.parse_pdb_header import parse_pdb_header

    lines = text.splitlines()
    if not any(line.startswith(("ATOM  ", "HETATM")) for line in lines):
        raise BadSourceFile("no ATOM/HETATM records: not a PDB entry")
    last = _last_line(text)
    if last.split()[:1] != ["END"]:
        raise BadSourceFile(f"truncated: the file does not end with an END record (it ends with {last[:30]!r})")
    header = parse_pdb_header(io.StringIO(text))
    structure = PDBParser(QUIET=True).get_structure(name, io.StringIO(text))
    missing = [
        (m["chain"], m["ssseq"], (m.get("insertion") or " ").strip() or " ", m["res_name"])
        for m in header.get("missing_residues", [])
        if m.get("model") in (None, 1, "1")
    ]
    id_code = (header.get("idcode") or "").strip()
    return structure, header.get("resolution"), missing, _pdb_entities(lines), id_code


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
        "auth_comp_id",
    )}
    missing = []
    for i in range(len(cols["auth_seq_id"])):
        unobserved = cols["polymer_flag"][i] == "Y" and cols["occupancy_flag"][i] == "1"
        if not unobserved or cols["PDB_model_num"][i] not in ("1", "?"):
            continue
        icode = cols["PDB_ins_code"][i]
        missing.append((
            cols["auth_asym_id"][i], int(cols["auth_seq_id"][i]), " " if icode in ("?", ".") else icode,
            cols["auth_comp_id"][i],
        ))
    entities = {}
    strand_ids = _mmcif_column(d, "_entity_poly.pdbx_strand_id")
    for entity, strands in zip(_mmcif_column(d, "_entity_poly.entity_id"), strand_ids):
        for chain in strands.split(","):
            entities[chain.strip()] = entity
    id_code = (_mmcif_column(d, "_entry.id") or [""])[0]
    return structure, resolution, missing, entities, "" if id_code in ("?", ".") else id_code


def _chain_record(chain, missing: list[tuple[int, str, str]], entity: str | None):
    """The chain's residues (observed merged with missing) or None for a chain with no amino acid."""
    observed = []
    for residue in chain:
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
    if not observed:
        return None
    rows = []
    pending = sorted(missing, key=lambda m: (m[0], m[1]))
    for number, icode, name, letter, standard, residue in observed:
        while pending and (pending[0][0], pending[0][1]) < (number, icode):
            m_number, m_icode, m_name = pending.pop(0)
            m_letter, m_standard = _letter(m_name)
            rows.append((m_number, m_icode, m_name, m_letter, m_standard, None))
        rows.append((number, icode, name, letter, standard, residue))
    for m_number, m_icode, m_name in pending:
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
    structure, resolution, missing, entities, id_code = parse(text, stem)
    models = list(structure)
    if not models or not any(True for _ in models[0].get_atoms()):
        raise BadSourceFile("no atoms: the file parses as an empty structure")
    by_chain: dict[str, list] = defaultdict(list)
    for chain, number, icode, resname in missing:
        by_chain[chain].append((number, icode, resname))
    chains, problems = [], []
    for chain in models[0]:
        record = _chain_record(chain, by_chain.get(chain.id, []), entities.get(chain.id))
        if record is None:
            continue
        problem = _chain_problem(record)
        if problem:
            problems.append((chain.id, problem))
        else:
            chains.append(record)
    pdb_id = (id_code or stem).upper()
    return Entry(pdb_id, float(resolution) if resolution is not None else None, chains, problems)


