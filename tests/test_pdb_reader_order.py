"""Unobserved residues are placed at their true position along the chain, also where author numbering does not
increase along it (fusion constructs, chymotrypsin-style descending insertion codes, a tag numbered apart).

The entries are 2GTL chain A (the real entry shipped in dataset_scripts/sample_sources/data) renumbered as such
entries are, with some residues taken out and recorded as unobserved the way wwPDB writes them: ``REMARK 465`` in
chain order beside ``SEQRES`` in PDB format; in mmCIF ``label_seq_id`` on every residue, ``_entity_poly_seq``,
``_pdbx_poly_seq_scheme`` and ``_pdbx_unobs_or_zero_occ_residues``. The truth is chain A's own residue order."""

import io

import numpy as np
import pytest

from multimed_hf.api import build_dataset
from multimed_hf.builders._pdb_reader import _merge_missing, parse_entry

AMINO = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G", "HIS": "H",
    "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S", "THR": "T", "TRP": "W",
    "TYR": "Y", "VAL": "V",
}


@pytest.fixture(scope="module")
def residues():
    """2GTL chain A's observed amino acids (147), in chain order."""
    from dataset_scripts.sample_sources.rcsb_pdb import _structure

    chain = _structure("2gtl")[0]["A"]
    found = [r for r in chain if r.id[0] == " "]
    assert len(found) == 147 and all(r.get_resname() in AMINO for r in found)
    return found


def _fusion(n):  # receptor 1-60, insert 1001-1040, receptor 61-...; the last 5 unobserved (C-terminal)
    ids = [(i + 1, " ") for i in range(60)] + [(1001 + i, " ") for i in range(40)]
    ids += [(61 + i, " ") for i in range(n - 100)]
    return ids, set(range(n - 5, n))


def _thrombin(n):  # 1H 1G ... 1A 1 2 ...: 1H, 1G (N-terminal) and 1D (inside the run) unobserved
    ids = [(1, c) for c in "HGFEDCBA"] + [(i + 1, " ") for i in range(n - 8)]
    return ids, {0, 1, 4}


def _tag(n):  # an N-terminal tag numbered 1001-1010, wholly unobserved, then 1, 2, ...: the numbers of each list rise
    return [(1001 + i, " ") for i in range(10)] + [(i + 1, " ") for i in range(n - 10)], set(range(10))


def _kabat(n):  # control: ascending insertion codes 52 52A 52B 52C, 52A unobserved
    ids = [(i + 1, " ") for i in range(52)] + [(52, "A"), (52, "B"), (52, "C")] + [(53 + i, " ") for i in range(n - 55)]
    return ids, {52}


CASES = {"fusion": _fusion, "thrombin": _thrombin, "tag": _tag, "kabat": _kabat}


def _pdb(pdb_id, residues, ids, gone, seqres=True):
    from Bio.PDB import PDBIO
    from Bio.PDB.Chain import Chain
    from Bio.PDB.Model import Model

    chain = Chain("A")
    for k, (residue, (number, icode)) in enumerate(zip(residues, ids)):
        if k not in gone:
            copy = residue.copy()
            copy.id = (" ", number, icode)
            chain.add(copy)
    model = Model(0)
    model.add(chain)
    names = [r.get_resname() for r in residues]
    lines = [f"HEADER    SYNTHETIC SAMPLE (MULTIMED_HF)              01-JAN-26   {pdb_id:<4}"]
    lines += [
        "REMARK 465", "REMARK 465 MISSING RESIDUES", "REMARK 465 THE FOLLOWING RESIDUES WERE NOT LOCATED IN THE",
        "REMARK 465 EXPERIMENT. (M=MODEL NUMBER; RES=RESIDUE NAME; C=CHAIN",
        "REMARK 465 IDENTIFIER; SSSEQ=SEQUENCE NUMBER; I=INSERTION CODE.)", "REMARK 465",
        "REMARK 465   M RES C SSSEQI",
    ]
    lines += [f"REMARK 465     {names[k]} A {ids[k][0]:>5}{ids[k][1].strip()}" for k in sorted(gone)]
    if seqres:
        for row, start in enumerate(range(0, len(names), 13)):
            lines.append(f"SEQRES {row + 1:>3} A {len(names):>4}  " + " ".join(names[start:start + 13]))
    writer, text = PDBIO(), io.StringIO()
    writer.set_structure(model)
    writer.save(text)
    return "".join(line.ljust(80) + "\n" for line in lines) + text.getvalue()


def _cif(pdb_id, residues, ids, gone, labels=True, scheme=True):
    """As the RCSB writes an entry (the categories the reader uses); ``labels=False``: ``label_seq_id`` left ``?``;
    ``scheme=False``: no ``_pdbx_poly_seq_scheme``."""
    def icode(k):
        return ids[k][1].strip() or "?"

    names = [r.get_resname() for r in residues]
    out = [f"data_{pdb_id}", "#", f"_entry.id {pdb_id}", "#",
           "loop_", "_entity_poly.entity_id", "_entity_poly.type", "_entity_poly.pdbx_strand_id",
           "1 'polypeptide(L)' A", "#",
           "loop_", "_entity_poly_seq.entity_id", "_entity_poly_seq.num", "_entity_poly_seq.mon_id",
           "_entity_poly_seq.hetero"]
    out += [f"1 {k + 1} {name} n" for k, name in enumerate(names)]
    out += ["#", "loop_"] + [f"_pdbx_poly_seq_scheme.{c}" for c in (
        "asym_id", "entity_id", "seq_id", "mon_id", "ndb_seq_num", "pdb_seq_num", "auth_seq_num", "pdb_mon_id",
        "auth_mon_id", "pdb_strand_id", "pdb_ins_code", "hetero")] if scheme else []
    for k, name in enumerate(names if scheme else []):
        seen = k not in gone
        out.append(f"A 1 {k + 1} {name} {k + 1} {ids[k][0]} {ids[k][0] if seen else '?'} {name if seen else '?'} "
                   f"{name if seen else '?'} A {ids[k][1].strip() or '.'} n")
    out += ["#", "loop_"] + [f"_atom_site.{c}" for c in (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
        "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
        "B_iso_or_equiv", "pdbx_formal_charge", "auth_seq_id", "auth_comp_id", "auth_asym_id", "auth_atom_id",
        "pdbx_PDB_model_num")]
    serial = 0
    for k, residue in enumerate(residues):
        if k in gone:
            continue
        for atom in residue:
            serial += 1
            x, y, z = atom.get_coord()
            out.append(
                f"ATOM {serial} {atom.element} {atom.get_id()} . {names[k]} A 1 {k + 1 if labels else '?'} {icode(k)} "
                f"{x:.3f} {y:.3f} {z:.3f} {atom.get_occupancy():.2f} {atom.get_bfactor():.2f} ? {ids[k][0]} "
                f"{names[k]} A {atom.get_id()} 1")
    out += ["#", "loop_"] + [f"_pdbx_unobs_or_zero_occ_residues.{c}" for c in (
        "id", "PDB_model_num", "polymer_flag", "occupancy_flag", "auth_asym_id", "auth_comp_id", "auth_seq_id",
        "PDB_ins_code", "label_asym_id", "label_comp_id", "label_seq_id")]
    out += [f"{row + 1} 1 Y 1 A {names[k]} {ids[k][0]} {icode(k)} A {names[k]} {k + 1}"
            for row, k in enumerate(sorted(gone))]
    out.append("#")
    return "\n".join(out) + "\n"


def _write(tmp_path, case, fmt, residues):
    ids, gone = CASES[case](len(residues))
    pdb_id = {"fusion": "1FUS", "thrombin": "1THR", "tag": "1TAG", "kabat": "1KAB"}[case]
    if fmt.startswith("pdb"):
        path = tmp_path / f"{pdb_id.lower()}.pdb"
        path.write_text(_pdb(pdb_id, residues, ids, gone, seqres=fmt == "pdb"))
    else:
        path = tmp_path / f"{pdb_id.lower()}.cif"
        path.write_text(_cif(pdb_id, residues, ids, gone, labels=fmt == "cif", scheme=fmt != "cif-bare"))
    return path, ids, gone


@pytest.mark.parametrize("fmt", ["pdb", "cif", "cif-no-label-seq-id"])
@pytest.mark.parametrize("case", ["fusion", "thrombin", "tag", "kabat"])
def test_unobserved_residues_are_placed_at_their_true_position(tmp_path, residues, case, fmt):
    """Each residue, observed or not, at its place in the chain: the stored sequence, numbers, insertion codes and
    masks read as the chain runs (fusion: the missing C-terminus at the end, not between 60 and 1001; thrombin: 1H
    1G before 1F and 1D between 1E and 1C, no chain break; a wholly unobserved tag numbered 1001+ before residue 1;
    control: Kabat 52A between 52 and 52B)."""
    path, ids, gone = _write(tmp_path, case, fmt, residues)
    entry = parse_entry(path)
    assert entry.problems == []
    (chain,) = entry.chains
    assert chain.sequence == "".join(AMINO[r.get_resname()] for r in residues)
    assert list(zip(chain.numbers, chain.icodes)) == ids
    assert [k for k, seen in enumerate(chain.residue_mask) if not seen] == sorted(gone)
    kept = [k for k in range(len(residues)) if k not in gone]
    ca = np.array([residues[k]["CA"].get_coord() for k in kept])
    assert np.allclose(chain.coords[kept, 1], ca, atol=1e-3) and not chain.coords[sorted(gone)].any()


@pytest.mark.parametrize("fmt", ["pdb-no-seqres", "cif-bare"])
@pytest.mark.parametrize("case", ["fusion", "thrombin"])
def test_without_a_sequence_a_non_increasing_chain_is_reported_not_guessed(tmp_path, residues, case, fmt):
    """A PDB file without SEQRES (as tools write them), an mmCIF with neither label_seq_id nor
    _pdbx_poly_seq_scheme, whose author numbering does not increase: where its unobserved residues go is not settled
    by the file, so the chain is reported, naming a residue, rather than stored in a guessed order."""
    path, ids, gone = _write(tmp_path, case, fmt, residues)
    entry = parse_entry(path)
    assert entry.chains == []
    ((chain, reason),) = entry.problems
    first = min(gone)
    name, number = residues[first].get_resname(), f"{ids[first][0]}{ids[first][1].strip()}"
    assert chain == "A" and reason.startswith(f"unobserved residue {name} {number} cannot be placed along the chain")
    assert f"the file gives no sequence ({'SEQRES' if fmt.startswith('pdb') else '_pdbx_poly_seq_scheme'})" in reason


def test_an_ordinary_chain_without_a_sequence_keeps_the_numbered_merge(tmp_path, residues):
    """Increasing numbering, no SEQRES (the bundled sample's synthetic files): the merge on author numbers stands."""
    path, ids, gone = _write(tmp_path, "kabat", "pdb-no-seqres", residues)
    (chain,) = parse_entry(path).chains
    assert list(zip(chain.numbers, chain.icodes)) == ids


def test_several_equally_good_orders_are_reported():
    """Two orders read the sequence and number equally well: the chain is a problem naming the residue."""
    observed = [(5, " ", "GLY", None), (4, " ", "ALA", None)]
    missing = [(5, " ", "GLY", None)]
    reason = _merge_missing(observed, missing, ["GLY", "GLY", "ALA"])
    assert isinstance(reason, str)
    assert reason.startswith("unobserved residue GLY 5 cannot be placed along the chain")
    assert "several orders read its sequence (SEQRES) equally well" in reason
    unread = _merge_missing(observed, missing, ["ALA", "ALA", "GLY"])  # no order reads this sequence
    assert unread.startswith("unobserved residue GLY 5") and "do not read its sequence (SEQRES)" in unread
    assert _merge_missing(observed[:1], [(6, " ", "ALA", None)], ["GLY", "ALA"]) == [("o", 0), ("m", 0)]


def test_the_build_keeps_placed_chains_and_names_the_unplaceable_one(tmp_path, residues):
    """Through the builder: the fusion and thrombin entries (with SEQRES) kept with their true sequences; a copy
    without SEQRES reported in the manifest with the reason."""
    from multimed_hf.data.manifest import read_manifest

    source = tmp_path / "pdb"
    source.mkdir()
    for case in ("fusion", "thrombin"):
        _write(source, case, "pdb", residues)
    ids, gone = _thrombin(len(residues))
    (source / "2thr.pdb").write_text(_pdb("2THR", residues, ids, gone, seqres=False))
    out = tmp_path / "out"
    build_dataset("protein_structure", [source], out, progress=False)
    entries = {e.source_path: e for e in read_manifest(out / "protein_structure")}
    assert entries["1fus.pdb"].status == entries["1thr.pdb"].status == "kept"
    bad = entries["2thr.pdb"]
    assert bad.status == "rejected"
    assert "chain A: unobserved residue ASP 1H cannot be placed along the chain" in bad.reason
