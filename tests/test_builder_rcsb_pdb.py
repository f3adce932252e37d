"""RCSB PDB entries: chains with missing residues kept in place, backbone, grouping of (near-)identical chains."""

import gzip
import shutil
from collections import defaultdict

import numpy as np
import pytest

from multimed_hf.api import build_dataset
from multimed_hf.builders.rcsb_pdb import near_identical_pairs, parse_entry, sequence_identity
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest

TASK = "protein_structure"


@pytest.fixture(scope="module")
def built(build_sample):
    root, out, report, ds = build_sample(TASK, "rcsb_pdb")
    rows = {row["sample_id"]: (split, row) for split in ds for row in ds[split]}
    return root, out, report, ds, rows


def test_features_and_per_residue_columns_agree(built):
    _, _, report, ds, rows = built
    assert set(rows) == {"2GTL_A", "2GTL_B", "2GTL_E", "2GTL_M", "7OK9_A", "0MT1_A", "0GP1_A", "0MC1_A", "0BR1_A"}
    for _, row in rows.values():
        n = len(row["sequence"])
        for column in ("ca_coords", "n_coords", "c_coords", "o_coords", "residue_mask", "backbone_mask"):
            assert len(row[column]) == n, (row["sample_id"], column)
        assert len(row["insertion_codes"]) == len(row["residue_numbers"]) == n
        mask = np.array(row["residue_mask"], bool)
        ca = np.array(row["ca_coords"])
        assert np.all(ca[~mask] == 0) and np.all(np.abs(ca[mask]).sum(axis=1) > 0)
        assert list(mask) == [bool(b & 2) for b in row["backbone_mask"]]
        gaps = np.linalg.norm(np.diff(ca, axis=0), axis=1)[mask[1:] & mask[:-1]]
        assert gaps.max() < 4.2, row["sample_id"]


def test_real_entries_missing_residues_stay_in_place(built):
    *_, rows = built
    _, a = rows["2GTL_A"]  # REMARK 465: ALA/ASP/ASP/GLU 1-4 of chain A unobserved
    assert a["sequence"].startswith("ADDE") and a["residue_mask"][:5] == [0, 0, 0, 0, 1]
    assert a["residue_numbers"][:5] == [1, 2, 3, 4, 5] and a["resolution"] == pytest.approx(3.5)
    _, pbp = rows["7OK9_A"]  # mmCIF: 650 residues, 128 in _pdbx_unobs_or_zero_occ_residues
    assert len(pbp["sequence"]) == 650 and sum(pbp["residue_mask"]) == 522
    assert pbp["residue_numbers"] == sorted(pbp["residue_numbers"]) and pbp["resolution"] == pytest.approx(3.36)


def test_synthetic_gap_and_modified_residue(built):
    *_, rows = built
    _, gap = rows["0GP1_A"]
    _, real = rows["2GTL_M"]
    gone = [i for i, n in enumerate(gap["residue_numbers"]) if 100 <= n <= 104]
    assert len(gone) == 5 and all(gap["residue_mask"][i] == 0 for i in gone)
    assert all(gap["backbone_mask"][i] == 0 and gap["ca_coords"][i] == [0, 0, 0] for i in gone)
    assert gap["residue_numbers"] == real["residue_numbers"]  # nothing shifted
    assert gap["sequence"] == real["sequence"]  # SEP reads as its parent S; the gap from REMARK 465's names
    (entry,) = gap["nonstandard_residues"]
    name, number = entry.split(":")
    assert name == "SEP" and gap["sequence"][gap["residue_numbers"].index(int(number))] == "S"
    assert gap["resolution"] is None


def test_identical_and_near_identical_chains_share_a_group(built):
    _, _, _, ds, rows = built
    group = {sid: row["group_id"] for sid, (_, row) in rows.items()}
    assert group["2GTL_A"] == group["2GTL_E"]
    assert group["2GTL_B"] == group["0MT1_A"]  # 8 point mutations: about 94% identical
    assert group["2GTL_M"] == group["0GP1_A"]
    assert len({group["2GTL_A"], group["2GTL_B"], group["2GTL_M"], group["7OK9_A"], group["0MC1_A"]}) == 5
    splits_of = defaultdict(set)
    for split in ds:
        for g in ds[split]["group_id"]:
            splits_of[g].add(split)
    assert all(len(s) == 1 for s in splits_of.values())


def test_homologue_superposes_on_its_source_chain(built):
    tmtools = pytest.importorskip("tmtools")
    *_, rows = built
    (_, a), (_, b) = rows["2GTL_B"], rows["0MT1_A"]
    result = tmtools.tm_align(np.array(a["ca_coords"]), np.array(b["ca_coords"]), a["sequence"], b["sequence"])
    assert result.tm_norm_chain1 > 0.95  # rotated, shifted and jittered by 0.05 A: the same fold, in Angstrom


def test_bad_files_and_chains_are_named(built):
    _, out, *_ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    expected = {
        "0br1.pdb:row chain B": "chain break: residues 49 and 55 are",
        "7ok9.cif:row chain P": "peptide of 5 residues, shorter than 10",
        "0nc1.pdb": "no usable protein chain: chain A: no C-alpha atoms",
        "0tr1.pdb": "truncated: the file does not end with an END record",
        "0tr2.cif": "truncated: the file does not end with the '#'",
        "notes.pdb": "no ATOM/HETATM records",
    }
    assert by_path[".DS_Store"].status == "ignored" and by_path[".DS_Store"].reason.startswith("not used: ignored")
    for path, reason in expected.items():
        assert by_path[path].status == "rejected" and by_path[path].reason.startswith(reason), by_path[path]
    assert {p for p, e in by_path.items() if e.status == "rejected"} == set(expected)
    assert by_path["0br1.pdb"].status == "kept" and by_path["0br1.pdb"].sample_id == "0BR1_A"


def test_counts_of_each_outcome(built):
    _, _, report, *_ = built
    counts = report.sources[0].counts
    assert counts == {"kept": 9, "moved": 0, "dropped": 0, "rejected": 6, "ignored": 1}


def test_rcsb_cluster_file_gives_the_groups(built, tmp_path):
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "pdb")
    # entity 1 of 2GTL (chains A, E) with entity 5 (chain M); 7OK9's entity 1 with a chain-style id
    (copy / "clusters-by-entity-30.txt").write_text("2GTL_1 2GTL_5\n7OK9_1 0MC1_A\n2GTL_2\n")
    out = tmp_path / "out"
    build_dataset(TASK, [copy], out, progress=False)
    entries = {e.sample_id: e for e in read_manifest(out / TASK) if e.sample_id}
    assert entries["2GTL_A"].group == entries["2GTL_E"].group == entries["2GTL_M"].group
    assert entries["7OK9_A"].group == entries["0MC1_A"].group
    # chains the cluster file does not list still join identical / near-identical chains
    assert entries["0MT1_A"].group == entries["2GTL_B"].group and entries["0GP1_A"].group == entries["2GTL_M"].group
    index = [e for e in read_manifest(out / TASK) if e.source_path == "clusters-by-entity-30.txt"]
    assert index[0].status == "kept" and index[0].reason == "index file: no sample of its own"


def test_gzipped_entries_read_like_plain_ones(built, tmp_path):
    root, *_ = built
    plain = parse_entry(root / "0gp1.pdb")
    packed = tmp_path / "pdb0gp1.ent.gz"
    packed.write_bytes(gzip.compress((root / "0gp1.pdb").read_bytes()))
    zipped = parse_entry(packed)
    assert zipped.pdb_id == plain.pdb_id and [c.sequence for c in zipped.chains] == [c.sequence for c in plain.chains]
    cut = tmp_path / "1abc.cif.gz"
    cut.write_bytes(packed.read_bytes()[:300])
    with pytest.raises(BadSourceFile, match="cannot decompress"):
        parse_entry(cut)


def test_a_coordinate_that_is_no_number_rejects_its_file(built, tmp_path):
    # before: Biopython's PDBConstructionException stopped the whole build with a traceback naming no file
    root, *_ = built
    lines = (root / "0gp1.pdb").read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith("ATOM"))
    lines[i] = lines[i][:46] + " 1.2.3.4" + lines[i][54:]
    bad = tmp_path / "0gp1.pdb"
    bad.write_text("\n".join(lines))
    with pytest.raises(BadSourceFile, match="unreadable PDB: PDBConstructionException: Invalid or missing coordinate"):
        parse_entry(bad)


def _atom(serial, name, resname, number, xyz, het=False, altloc=" ", occupancy=1.0):
    element = name[0]
    return (f"{'HETATM' if het else 'ATOM  '}{serial:5d} {name:<4}{altloc}{resname:>3} A{number:4d}    "
            f"{xyz[0]:8.3f}{xyz[1]:8.3f}{xyz[2]:8.3f}{occupancy:6.2f} 20.00          {element:>2}")


def _chain_lines(names, swap=None):
    """ATOM lines of a straight chain; ``swap``: (index, (name, occupancy, x shift) per altloc) at one position."""
    lines, serial = [], 0
    for i, name in enumerate(names):
        x = 3.61 * i
        kinds = [(" ", name, 1.0, 0.0)] if swap is None or swap[0] != i else [
            (altloc, other, occ, shift) for altloc, (other, occ, shift) in zip("AB", swap[1])]
        for altloc, resname, occupancy, shift in kinds:
            for atom, offset in (("N", -1.2), ("CA", 0.0), ("C", 1.2), ("O", 1.5)):
                serial += 1
                lines.append(_atom(serial, atom, resname, i + 1, (x + offset + shift, 0.5 if atom == "O" else 0.0,
                                                                  0.0), altloc=altloc, occupancy=occupancy))
    return lines, serial


@pytest.mark.parametrize("ligand", ["SAH", "DGL", "SEP"])
def test_a_ligand_with_amino_acid_atoms_bound_to_a_chain_stays_out_of_it(tmp_path, ligand):
    # before: a cofactor deposited under the chain after its TER (SAH / SAM of every methyltransferase, a free D- or
    # phospho-amino acid) joined the polymer: the chain was rejected as a "chain break" between residues 30 and 301
    names = ["ALA", "GLY", "SER", "LEU", "VAL", "LYS"] * 5
    lines, serial = _chain_lines(names)
    lines.append("TER")
    for atom, xyz in (("N", (40.0, 8.0, 3.0)), ("CA", (40.9, 8.5, 3.3)), ("C", (44.5, 9.0, 3.3)),
                      ("O", (45.4, 8.0, 3.0))):
        serial += 1
        lines.append(_atom(serial, atom, ligand, 301, xyz, het=True))
    seqres = [f"SEQRES {k + 1:3d} A {len(names):4d}  " + " ".join(names[13 * k: 13 * k + 13]) for k in range(3)]
    path = tmp_path / "9sah.pdb"
    path.write_text("\n".join(["HEADER    TEST                                    01-JAN-00   9SAH", *seqres, *lines,
                               "END", ""]))
    entry = parse_entry(path)
    assert entry.problems == [] and len(entry.chains) == 1
    assert entry.chains[0].sequence == "AGSLVK" * 5


@pytest.mark.parametrize("end", ["C", "N"])
def test_a_modified_residue_at_a_chain_end_beside_a_gap_stays_in_the_chain(tmp_path, end):
    # before (the first ligand rule): a HETATM MSE at a chain end whose neighbour is unobserved (REMARK 465) is
    # neither between ATOM residues nor bonded to one, and was dropped as a ligand: the chain one residue short
    names = ["ALA", "GLY", "SER", "LEU", "VAL", "LYS"] * 4
    last = len(names)
    mse, gap = (last, last - 1) if end == "C" else (1, 2)
    names[mse - 1] = "MSE"
    lines, serial = [], 0
    for i, name in enumerate(names, start=1):
        if i == gap:
            continue
        for atom, offset in (("N", -1.2), ("CA", 0.0), ("C", 1.2), ("O", 1.5)):
            serial += 1
            lines.append(_atom(serial, atom, name, i, (3.61 * (i - 1) + offset, 0.5 if atom == "O" else 0.0, 0.0),
                               het=name == "MSE"))
    lines.append("TER")
    remark = ["REMARK 465   M RES C SSSEQI", f"REMARK 465     {names[gap - 1]} A {gap:5d}"]
    seqres = [f"SEQRES {k + 1:3d} A {len(names):4d}  " + " ".join(names[13 * k: 13 * k + 13]) for k in range(2)]
    path = tmp_path / "9mse.pdb"
    path.write_text("\n".join(["HEADER    TEST                                    01-JAN-00   9MSE", *remark, *seqres,
                               *lines, "END", ""]))
    chain = parse_entry(path).chains[0]
    assert len(chain.sequence) == last and chain.nonstandard == [f"MSE:{mse}"]


def test_a_chain_of_unknown_residues_is_no_target(tmp_path):
    # before: a poly-UNK chain (unassigned density) was kept with sequence XXXX...: nothing to predict from, and
    # every such chain of one length "identical" to the others
    lines, _ = _chain_lines(["UNK"] * 20)
    path = tmp_path / "9unk.pdb"
    path.write_text("\n".join([f"HEADER    TEST{' ' * 36}01-JAN-00   9UNK", *lines, "END", ""]))
    entry = parse_entry(path)
    assert not entry.chains
    assert entry.problems == [("A", "no known residue: all 20 are unknown (UNK): no sequence to predict from")]


@pytest.mark.parametrize("minor_first", [False, True])
def test_a_position_holding_two_residue_types_keeps_the_major_one(tmp_path, minor_first):
    # before: Biopython's last-added residue name (THR at 30%) and its coordinates, against SEQRES's SER
    names = ["ALA", "GLY", "SER", "LEU", "VAL", "LYS"] * 4
    swap = [("SER", 0.7, 0.0), ("THR", 0.3, 0.3)]
    lines, _ = _chain_lines(names, swap=(2, swap[::-1] if minor_first else swap))
    path = tmp_path / "9mhc.pdb"
    path.write_text("\n".join([f"HEADER    TEST{' ' * 36}01-JAN-00   9MHC", *lines, "END", ""]))
    chain = parse_entry(path).chains[0]
    assert chain.sequence == "AGSLVK" * 4
    assert chain.coords[2, 1, 0] == pytest.approx(3.61 * 2)  # SER's C-alpha, not THR's (0.3 A along x)


def _residue_rows(names, alternates=None, first=1):
    """Atom rows ``(het, atom, altloc, resname, number, xyz, occupancy)`` of a straight chain numbered from
    ``first``; ``alternates``: (index, [(altloc, resname, occupancy, x shift, het)]) at one position."""
    rows = []
    for i, name in enumerate(names):
        kinds = [(" ", name, 1.0, 0.0, False)] if alternates is None or alternates[0] != i else alternates[1]
        for altloc, resname, occupancy, shift, het in kinds:
            for atom, offset in (("N", -1.2), ("CA", 0.0), ("C", 1.2), ("O", 1.5)):
                xyz = (3.61 * i + offset + shift, 0.5 if atom == "O" else 0.0, 0.0)
                rows.append((het, atom, altloc, resname, first + i, xyz, occupancy))
    return rows


#: a ligand with amino-acid atoms (SAH's N, CA, C, O and SD), away from the chain
_LIGAND = [(True, atom, " ", "SAH", None, xyz, 1.0) for atom, xyz in (
    ("N", (40.0, 8.0, 3.0)), ("CA", (40.9, 8.5, 3.3)), ("C", (44.5, 9.0, 3.3)), ("O", (45.4, 8.0, 3.0)),
    ("SD", (41.0, 10.0, 4.0)))]


def _pdb_entry(path, rows, ligand=(), number=None):
    """A .pdb file of chain A's rows, TER, then the ligand's rows numbered ``number``."""
    lines = [_atom(k + 1, atom, name, n, xyz, het=het, altloc=alt, occupancy=occ)
             for k, (het, atom, alt, name, n, xyz, occ) in enumerate(rows)]
    lines += ["TER"] + [_atom(len(rows) + k + 1, atom, name, number, xyz, het=het)
                        for k, (het, atom, _, name, _, xyz, _) in enumerate(ligand)]
    path.write_text("\n".join([f"HEADER    TEST{' ' * 36}01-JAN-00   {path.stem[:4].upper()}", *lines, "END", ""]))
    return path


def _cif_entry(path, rows, ligand=(), number=None, entity=True, scheme=True):
    """An mmCIF file as the wwPDB writes one: chain A's rows (entity 1, ``label_seq_id`` its position, both
    alternates of a microheterogeneity listed in ``_pdbx_poly_seq_scheme``), then the ligand's rows (entity 2,
    ``label_asym_id`` B, ``label_seq_id`` ``.``, author chain A, author number ``number``). ``entity=False``: no
    ``_entity`` category; ``scheme=False``: no ``_pdbx_poly_seq_scheme``."""
    out = ["data_9LIG", "#", "_entry.id 9LIG", "#"]
    if entity:
        out += ["loop_", "_entity.id", "_entity.type", "1 polymer", "2 non-polymer", "#"]
    seq_id = {n: k + 1 for k, n in enumerate(dict.fromkeys(row[4] for row in rows))}  # position in the sequence
    if scheme:
        out += ["loop_"] + [f"_pdbx_poly_seq_scheme.{c}" for c in (
            "asym_id", "entity_id", "seq_id", "mon_id", "pdb_seq_num", "auth_seq_num", "pdb_strand_id", "pdb_ins_code")]
        out += [f"A 1 {seq_id[n]} {name} {n} {n} A ." for n, name in dict.fromkeys((r[4], r[3]) for r in rows)] + ["#"]
    out += ["loop_"] + [f"_atom_site.{c}" for c in (
        "group_PDB", "id", "type_symbol", "label_atom_id", "label_alt_id", "label_comp_id", "label_asym_id",
        "label_entity_id", "label_seq_id", "pdbx_PDB_ins_code", "Cartn_x", "Cartn_y", "Cartn_z", "occupancy",
        "B_iso_or_equiv", "auth_seq_id", "auth_comp_id", "auth_asym_id", "auth_atom_id", "pdbx_PDB_model_num")]
    for k, (het, atom, alt, name, n, xyz, occ) in enumerate([*rows, *((*r[:4], number, *r[5:]) for r in ligand)]):
        polymer = k < len(rows)
        out.append(f"{'HETATM' if het else 'ATOM'} {k + 1} {atom[0]} {atom} {alt.strip() or '.'} {name} "
                   f"{'A 1' if polymer else 'B 2'} {seq_id[n] if polymer else '.'} ? "
                   f"{xyz[0]:.3f} {xyz[1]:.3f} {xyz[2]:.3f} {occ:.2f} 20.00 {n} {name} A {atom} 1")
    path.write_text("\n".join([*out, "#", ""]))
    return path


@pytest.mark.parametrize("fmt", ["pdb", "cif"])
@pytest.mark.parametrize("alternates, kept, shift", [
    ([("A", "CYS", 0.6, 0.0, False), ("B", "CSO", 0.4, 0.3, True)], "CYS", 0.0),
    ([("A", "MSE", 0.6, 0.0, True), ("B", "MET", 0.4, 0.3, False)], "MSE", 0.0),
    ([("A", "MET", 0.3, 0.0, False), ("B", "MSE", 0.7, 0.3, True)], "MSE", 0.3),
    ([("B", "MET", 0.5, 0.3, False), ("A", "MSE", 0.5, 0.0, True)], "MSE", 0.0),  # a tie: altloc A, listed second
], ids=["CYS-A/CSO-B", "MSE-A/MET-B", "MET-A.3/MSE-B.7", "tie"])
def test_a_position_whose_alternates_are_a_standard_and_a_modified_residue_keeps_one(
        tmp_path, fmt, alternates, kept, shift):
    # before: the ATOM and the HETATM alternate differ in Biopython's hetero flag, so they were two residues with
    # one number, both kept: 25 residues for 24 ('AGCCLVK...'), the position's coordinates twice
    names = ["ALA", "GLY", "CYS" if kept == "CYS" else "MET", "LEU", "VAL", "LYS"] * 4
    rows = _residue_rows(names, alternates=(2, alternates))
    write = _pdb_entry if fmt == "pdb" else _cif_entry
    entry = parse_entry(write(tmp_path / f"9mhe.{fmt}", rows))
    assert entry.problems == []
    (chain,) = entry.chains
    assert chain.sequence == ("AGCLVK" if kept == "CYS" else "AGMLVK") * 4 and chain.numbers == list(range(1, 25))
    assert chain.coords[2, 1, 0] == pytest.approx(3.61 * 2 + shift)  # the kept alternate's C-alpha
    assert chain.nonstandard == ([] if kept == "CYS" else ["MSE:3"])


@pytest.mark.parametrize("number", [12, 20])
@pytest.mark.parametrize("fmt, declared", [("cif", "entity"), ("cif", "scheme"), ("cif", "both"), ("pdb", None)])
def test_a_ligand_numbered_inside_the_chain_stays_out_of_it(tmp_path, fmt, declared, number):
    # before (mmCIF): a ligand with amino-acid atoms (SAH) numbered inside the chain's numbers (1-15 and 101-115, as
    # a construct numbers an insert apart: a residue's number, 12, or one no residue has, 20) was pulled into the
    # chain, which was then rejected as a "chain break: residues 115 and 12 are ... apart". mmCIF declares it
    # non-polymer (label_seq_id '.', its entity's type, its absence from _pdbx_poly_seq_scheme); the .pdb route
    # leaves it out by the TER before it (unchanged)
    names = ["ALA", "GLY", "SER", "LEU", "VAL", "LYS"] * 5
    numbers = [*range(1, 16), *range(101, 116)]
    rows = [(*row[:4], numbers[row[4] - 1], *row[5:]) for row in _residue_rows(names)]
    if fmt == "pdb":
        path = _pdb_entry(tmp_path / "9lig.pdb", rows, _LIGAND, number=number)
    else:
        path = _cif_entry(tmp_path / "9lig.cif", rows, _LIGAND, number=number, entity=declared != "scheme",
                          scheme=declared != "entity")
    entry = parse_entry(path)
    assert entry.problems == [] and len(entry.chains) == 1
    chain = entry.chains[0]
    assert chain.sequence == "AGSLVK" * 5 and chain.numbers == numbers and chain.nonstandard == []
    assert np.allclose(chain.coords[:, 1, 0], 3.61 * np.arange(30))  # residue 12 is SER, not the ligand


@pytest.mark.parametrize("number", [300, 230])
def test_a_ligand_in_a_real_mmcif_entry_numbered_as_a_residue_stays_out_of_the_chain(built, tmp_path, number):
    # before: 7OK9 chain A (64-713, observed 64-592 but for 227-233) with a SAH under the entry's non-polymer entity
    # 3, numbered as an observed (300) or an unobserved (230) residue, written where the wwPDB writes ligands: chain
    # A rejected (e.g. "unobserved residue ASN 227 cannot be placed ...: 592 then 300"), the ligand read into it
    root, *_ = built
    lines = (root / "7ok9.cif").read_text().split("\n")
    at = next(k for k, line in enumerate(lines) if line.startswith("HETATM"))
    lines[at:at] = [f"HETATM {60000 + k} {atom[0]} {atom} . SAH ZA 3 . ? {x:.3f} {y:.3f} {z:.3f} 1.00 30.00 ? {number} "
                    f"SAH A {atom} 1" for k, (_, atom, _, _, _, (x, y, z), _) in enumerate(_LIGAND)]
    path = tmp_path / "7ok9.cif"
    path.write_text("\n".join(lines))
    plain, with_ligand = parse_entry(root / "7ok9.cif"), parse_entry(path)
    assert with_ligand.problems == plain.problems and [c.chain_id for c in with_ligand.chains] == ["A"]
    (a,), (b,) = plain.chains, with_ligand.chains
    assert (b.sequence, b.numbers, b.nonstandard) == (a.sequence, a.numbers, a.nonstandard) and len(b.sequence) == 650
    assert np.array_equal(b.coords, a.coords) and np.array_equal(b.atom_mask, a.atom_mask)


def test_a_modified_residue_that_only_a_dot_label_marks_stays_in_an_mmcif_chain(tmp_path):
    # guard: Biopython's MMCIFIO writes label_seq_id '.' for every HETATM residue, a modified one inside the chain
    # included, with no _entity or _pdbx_poly_seq_scheme: a '.' alone does not make MSE a ligand
    import io

    from Bio.PDB import MMCIFIO, PDBParser

    rows = [(row[3] == "MSE", *row[1:]) for row in _residue_rows(["ALA", "GLY", "MSE", "LEU", "VAL", "LYS"] * 4)]
    pdb = _pdb_entry(tmp_path / "9dot.pdb", rows)
    writer, text = MMCIFIO(), io.StringIO()
    writer.set_structure(PDBParser(QUIET=True).get_structure("9dot", str(pdb)))
    writer.save(text)
    hetatm = [line.split() for line in text.getvalue().splitlines() if line.startswith("HETATM")]
    assert len(hetatm) == 16 and {(row[5], row[8]) for row in hetatm} == {("MSE", ".")}  # label_seq_id '.'
    cif = tmp_path / "9dot.cif"
    cif.write_text(text.getvalue())
    (chain,) = parse_entry(cif).chains
    assert chain.sequence == "AGMLVK" * 4 and chain.nonstandard == [f"MSE:{n}" for n in (3, 9, 15, 21)]


def test_identity_prefilter_and_threshold():
    rng = np.random.default_rng(0)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    base = "".join(rng.choice(letters, 120))

    def mutate(seq, n):
        seq = list(seq)
        for i in rng.choice(len(seq), n, replace=False):
            seq[i] = "W" if seq[i] != "W" else "A"
        return "".join(seq)

    close, far, fragment = mutate(base, 6), mutate(base, 30), base[20:90]
    assert sequence_identity(base, close) == pytest.approx(114 / 120)
    pairs = near_identical_pairs([base, close, far, fragment, base, "".join(rng.choice(letters, 120))])
    assert pairs == [(0, 1), (0, 3), (0, 4), (1, 3)]


def test_an_entry_in_both_formats_is_read_from_its_mmcif(built, tmp_path):
    """7OK9 as mmCIF and as a PDB-format file (as a mirror holds both, the legacy one gzipped): the mmCIF is read,
    the other copy dropped with the reason, and no chain is rejected as a duplicate id."""
    import io

    from Bio.PDB import PDBIO, MMCIFParser

    root, out, *_ = built
    copy = shutil.copytree(root, tmp_path / "pdb")
    (copy / "ok").mkdir()
    writer, text = PDBIO(), io.StringIO()
    writer.set_structure(MMCIFParser(QUIET=True).get_structure("7ok9", str(root / "7ok9.cif")))
    writer.save(text)
    (copy / "ok" / "pdb7ok9.ent.gz").write_bytes(gzip.compress(text.getvalue().encode()))
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries if ":row" not in e.source_path}
    dropped = by_path["ok/pdb7ok9.ent.gz"]
    assert dropped.status == "dropped" and dropped.reason == "not used: the same entry's mmCIF is read (7ok9.cif)"
    assert by_path["7ok9.cif"].status == "kept"
    assert not [e for e in report.entries if e.reason.startswith("duplicate id")]
    before = {e.sample_id: e.source_path for e in read_manifest(out / TASK) if e.sample_id and e.status == "kept"}
    after = {e.sample_id: e.source_path for e in report.entries if e.sample_id and e.status == "kept"}
    assert after == before and after["7OK9_A"] == "7ok9.cif"


def test_files_the_rcsb_serves_beside_entries_are_dropped_not_read(built, tmp_path):
    """The RCSB's batch download writes biological assemblies (``7ok9-assembly1.cif.gz``, ``2gtl.pdb1.gz``) and
    structure factors (``7ok9-sf.cif.gz``) beside the entries: an assembly repeats the entry's chains under the same
    ids, so reading it rejected the entry's own chains as duplicate ids. They are dropped, each with its reason."""
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "pdb")
    (copy / "7ok9-assembly1.cif.gz").write_bytes(gzip.compress((root / "7ok9.cif").read_bytes()))
    (copy / "2gtl.pdb1.gz").write_bytes(gzip.compress((root / "2gtl.pdb").read_bytes()))
    (copy / "7ok9-sf.cif.gz").write_bytes(gzip.compress(b"data_r7ok9sf\n_cell.length_a 100.0\n#\n"))
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries if ":row" not in e.source_path}
    for name in ("7ok9-assembly1.cif.gz", "2gtl.pdb1.gz"):
        assert by_path[name].status == "dropped" and by_path[name].reason.startswith("not used: a biological assembly")
    assert by_path["7ok9-sf.cif.gz"].status == "dropped" and "structure factors" in by_path["7ok9-sf.cif.gz"].reason
    assert not [e for e in report.entries if e.reason.startswith("duplicate id")]
    kept = {e.sample_id: e.source_path for e in report.entries if e.status == "kept" and e.sample_id}
    assert kept["7OK9_A"] == "7ok9.cif" and kept["2GTL_A"] == "2gtl.pdb"


def test_a_cluster_file_that_is_not_utf8_is_rejected_and_chains_group_by_identity(built, tmp_path):
    """A cluster file with a byte that is not UTF-8: rejected, named, and the chains grouped as without one
    (identical and near-identical chains); ``--strict`` names it."""
    from multimed_hf.data.errors import StrictBuildError

    root, out, *_ = built
    copy = shutil.copytree(root, tmp_path / "pdb")
    (copy / "clusters-by-entity-30.txt").write_bytes(b"2GTL_1 2GTL_5\n7OK9_1 0MC1_A \xe9\n")
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    clusters = by_path.pop("clusters-by-entity-30.txt")
    assert clusters.status == "rejected"
    assert clusters.reason.startswith("clusters-by-entity-30.txt is not UTF-8 text: 'utf-8' codec can't decode")
    before = {e.source_path: e for e in read_manifest(out / TASK)}
    assert {p: (e.status, e.group, e.split) for p, e in by_path.items()} == {
        p: (e.status, e.group, e.split) for p, e in before.items()}
    good = tmp_path / "good"  # entries of no bad chain: a strict build stops at the cluster file
    good.mkdir()
    for name in ("2gtl.pdb", "0mt1.pdb", "0gp1.pdb", "0mc1.cif", "clusters-by-entity-30.txt"):
        shutil.copy(copy / name, good / name)
    with pytest.raises(StrictBuildError, match=r"/clusters-by-entity-30\.txt: clusters-by-entity-30\.txt is not UTF-8"):
        build_dataset(TASK, [good], tmp_path / "strict", progress=False, on_bad_files="error")


def test_entries_named_as_the_rcsb_and_the_wwpdb_archive_name_them_read_alike(built, tmp_path):
    """The RCSB's download service names files by upper-case id (``2GTL.pdb``, ``7OK9.cif.gz``), the wwPDB archive
    by lower-case id (``pdb0mt1.ent.gz``, ``0mc1.cif.gz``); a Windows copy may upper-case the extension too
    (``0GP1.PDB``). The same chains, ids, groups and splits come out as from the plain lower-case names."""
    from multimed_hf.builders.rcsb_pdb import RCSBPDBBuilder

    root, out, *_ = built
    named = {"2gtl.pdb": "2GTL.pdb", "7ok9.cif": "7OK9.cif.gz", "0mt1.pdb": "pdb0mt1.ent.gz",
             "0mc1.cif": "0mc1.cif.gz", "0gp1.pdb": "0GP1.PDB", "0br1.pdb": "0BR1.pdb.gz"}
    copy = tmp_path / "pdb"
    copy.mkdir()
    for name, new in named.items():
        data = (root / name).read_bytes()
        (copy / new).write_bytes(gzip.compress(data, mtime=0) if new.lower().endswith(".gz") else data)
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    kept = {e.sample_id: (e.group, e.split, e.source_path) for e in report.entries if e.sample_id}
    plain = {e.sample_id: (e.group, e.split, e.source_path) for e in read_manifest(out / TASK)
             if e.sample_id and e.source_path in named}
    assert {k: v[:2] for k, v in kept.items()} == {k: v[:2] for k, v in plain.items()}
    assert {k: v[2] for k, v in kept.items()} == {k: named[v[2]] for k, v in plain.items()}
    upper = tmp_path / "upper"
    upper.mkdir()
    shutil.copy(root / "7ok9.cif", upper / "7OK9.CIF")
    assert RCSBPDBBuilder.detect(upper)
