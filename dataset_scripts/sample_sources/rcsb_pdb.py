"""A sample of RCSB PDB entries: two REAL entries from tmtools, trimmed, plus small synthetic variants of them.

Real (copied from the entries tmtools ships into data/, trimmed; CC0 like the whole PDB): ``2gtl.pdb`` (Lumbricus erythrocruorin, 3.5 A) keeps its
header records verbatim and the coordinates of chains A, B, E and M (A and E are identical globins: one group);
``7ok9.cif`` (S. aureus PBP1 with pentaglycine, 3.36 A) keeps every category verbatim and the ``atom_site`` rows
of chain A (650 residues, 128 unobserved, recorded in ``_pdbx_unobs_or_zero_occ_residues``) and of the
pentaglycine chain P (a 5-residue peptide: reported and left out). Other chains' rows are removed to keep the
sample small.

Synthetic (written with Biopython's PDBIO / MMCIFIO from the real chains, names starting with 0, which no real
PDB id does): a mutated copy of 2GTL chain B (about 94% identical: grouped with it), a copy of chain M with five
residues removed and recorded in ``REMARK 465`` and a phosphoserine (``SEP``), a two-chain entry whose chain B
has a chain break (residues gone, none recorded: that chain is reported, chain A kept), an entry with no C-alpha
atoms, an mmCIF entry, a PDB and an mmCIF file cut short, a text file named ``.pdb`` and a stray file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_rcsb_pdb"]

FOLDER = "pdb"


def _real_data() -> Path:
    """The folder of the real entries, trimmed to the chains the sample uses (``data/README.md``)."""
    return Path(__file__).resolve().parent / "data"


_COORD_RECORDS = ("ATOM  ", "HETATM", "ANISOU", "TER   ")


def _trim_pdb(text: str, chains: set[str]) -> str:
    """The entry's header records verbatim, coordinates of ``chains`` only (CONECT/MASTER dropped with the rest)."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.startswith(_COORD_RECORDS):
            if line[21:22] in chains:
                out.append(line)
        elif not line.startswith(("CONECT", "MASTER")):
            out.append(line)
    return "".join(out)


def _trim_cif(text: str, chains: set[str]) -> str:
    """Every category verbatim; ``atom_site`` rows of ``chains`` only (matched on auth_asym_id)."""
    lines = text.splitlines(keepends=True)
    out, keys, in_atoms = [], [], False
    for line in lines:
        if line.startswith("_atom_site."):
            keys.append(line.split()[0])
            in_atoms = True
            out.append(line)
            continue
        if in_atoms and line.startswith(("ATOM", "HETATM")):
            if line.split()[keys.index("_atom_site.auth_asym_id")] in chains:
                out.append(line)
            continue
        in_atoms = False
        out.append(line)
    return "".join(out)


def _structure(name: str):
    from Bio.PDB import PDBParser

    return PDBParser(QUIET=True).get_structure(name, str(_real_data() / f"{name}.pdb"))


def _pdb_text(entity, header: str = "") -> str:
    from Bio.PDB import PDBIO

    writer = PDBIO()
    writer.set_structure(entity)
    buffer = io.StringIO()
    writer.save(buffer)
    return header + buffer.getvalue()


def _move(chain, rng: np.random.Generator, noise: float) -> None:
    """A rigid rotation and shift plus small per-atom noise (a different crystal form of the same fold)."""
    angle = rng.uniform(0.3, 1.2)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    shift = rng.uniform(-20, 20, 3)
    for atom in chain.get_atoms():
        atom.set_coord((rot @ atom.get_coord() + shift + rng.normal(0, noise, 3)).astype(np.float32))


def _mutate(residue, name: str) -> None:
    residue.resname = name
    for atom in [a.get_id() for a in residue if a.get_id() not in ("N", "CA", "C", "O", "CB")]:
        residue.detach_child(atom)


def _copy_chain(model, chain_id: str, new_id: str):
    from Bio.PDB.Model import Model

    chain = model[chain_id].copy()
    for residue in [r for r in chain if r.id[0] != " "]:
        chain.detach_child(residue.id)  # ligands and waters stay with the real entry
    chain.id = new_id
    fresh = Model(0)
    fresh.add(chain)
    return fresh, chain


def _header(pdb_id: str, missing: list[tuple[str, str, int]] = ()) -> str:
    lines = [f"HEADER    SYNTHETIC SAMPLE (MULTIMED_HF)              01-JAN-26   {pdb_id:<4}"]
    if missing:
        lines += [
            "REMARK 465", "REMARK 465 MISSING RESIDUES",
            "REMARK 465 THE FOLLOWING RESIDUES WERE NOT LOCATED IN THE",
            "REMARK 465 EXPERIMENT. (M=MODEL NUMBER; RES=RESIDUE NAME; C=CHAIN",
            "REMARK 465 IDENTIFIER; SSSEQ=SEQUENCE NUMBER; I=INSERTION CODE.)", "REMARK 465",
            "REMARK 465   M RES C SSSEQI",
        ]
        lines += [f"REMARK 465     {name} {chain} {number:>5}" for name, chain, number in missing]
    return "".join(line.ljust(80) + "\n" for line in lines)


def make_rcsb_pdb(root, *, seed: int = 5, bad_files: bool = True) -> Path:
    """Write the sample under ``root`` and return it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    data = _real_data()
    (root / "2gtl.pdb").write_text(_trim_pdb((data / "2gtl.pdb").read_text(), {"A", "B", "E", "M"}))
    (root / "7ok9.cif").write_text(_trim_cif((data / "7ok9.cif").read_text(), {"A", "P"}))

    model = _structure("2gtl")[0]
    # a homologue of 2GTL chain B: 8 of 145 residues mutated, another crystal form
    fresh, chain = _copy_chain(model, "B", "A")
    residues = list(chain)
    for index in rng.choice(len(residues), size=8, replace=False):
        _mutate(residues[index], "ALA" if residues[index].resname != "ALA" else "SER")
    _move(chain, rng, 0.05)
    (root / "0mt1.pdb").write_text(_pdb_text(fresh, _header("0MT1")))

    # chain M with residues 100-104 unobserved (recorded) and a phosphoserine
    fresh, chain = _copy_chain(model, "M", "A")
    gone = [r for r in chain if 100 <= r.id[1] <= 104]
    for residue in gone:
        chain.detach_child(residue.id)
    serine = next(r for r in chain if r.resname == "SER")
    serine.id = ("H_SEP", serine.id[1], " ")
    serine.resname = "SEP"
    _move(chain, rng, 0.05)
    (root / "0gp1.pdb").write_text(_pdb_text(fresh, _header("0GP1", [(r.resname, "A", r.id[1]) for r in gone])))

    # mmCIF: chain C of 2GTL (not otherwise in the sample)
    from Bio.PDB import MMCIFIO

    fresh, chain = _copy_chain(model, "C", "A")
    _move(chain, rng, 0.05)
    writer = MMCIFIO()
    writer.set_structure(fresh)
    buffer = io.StringIO()
    writer.save(buffer)
    cif = buffer.getvalue()
    (root / "0mc1.cif").write_text(cif)

    if bad_files:
        # two chains: A whole (2GTL chain D), B with residues 50-54 gone and not recorded: a chain break
        fresh, chain_a = _copy_chain(model, "D", "A")
        _, chain_b = _copy_chain(model, "C", "B")
        for residue in [r for r in chain_b if 50 <= r.id[1] <= 54]:
            chain_b.detach_child(residue.id)
        fresh.add(chain_b)
        (root / "0br1.pdb").write_text(_pdb_text(fresh, _header("0BR1")))
        # no C-alpha atoms at all (a backbone-trace export gone wrong)
        fresh, chain = _copy_chain(model, "B", "A")
        for residue in chain:
            residue.detach_child("CA")
        (root / "0nc1.pdb").write_text(_pdb_text(fresh, _header("0NC1")))
        # cut short: a PDB without its END record, an mmCIF cut inside an atom_site row
        text = (root / "0mt1.pdb").read_text()
        (root / "0tr1.pdb").write_text(text[: len(text) // 2])
        (root / "0tr2.cif").write_text(cif[: len(cif) // 2])
        (root / "notes.pdb").write_text("structure files for the review, see the shared drive\n")
        (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    write_provenance(root, (
        "generated by dataset_scripts/sample_sources/rcsb_pdb.py: 2gtl.pdb and 7ok9.cif are REAL PDB entries "
        "(wwPDB data, shipped here in data/), trimmed to a few chains; files starting with 0 are synthetic variants of them"
    ))
    return root


make = make_rcsb_pdb
