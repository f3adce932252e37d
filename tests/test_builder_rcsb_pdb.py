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
