"""Promoter windows + expression (+ pseudo-bulk profiles): per-record checks, chromosome hold-out, masked target."""

import json
import re
import shutil
from collections import defaultdict

import numpy as np
import pytest
from Bio import SeqIO
from datasets import load_dataset

from dataset_scripts.sample_sources import tcga_promoters as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders.pbmc68k_reduced import panel_id
from multimed_hf.builders.tcga_promoters import TEST_CHROMOSOMES, parse_header, pseudobulk_profiles, read_table
from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.manifest import read_manifest

TASK = "expression_prediction"


@pytest.fixture(scope="module")
def built(build_sample):
    root, out, report, ds = build_sample(TASK, "tcga_promoters")
    rows = {row["sample_id"]: (split, row) for split in ds for row in ds[split]}
    return root, out, report, ds, rows


def test_rows_pair_window_context_and_target(built):
    root, _, report, ds, rows = built
    assert len(rows) == 40 * len(sample.CONTEXTS)
    windows = {r.id.split("::")[0]: str(r.seq) for r in SeqIO.parse(root / "promoters.fa", "fasta")}
    _, table = read_table(root / "expression.tsv")
    for _, row in rows.values():
        assert row["promoter"] == windows[row["gene_id"]] and len(row["promoter"]) == 10_500
        value = table[row["gene_id"]][1][sample.CONTEXTS.index(row["context"])]
        assert row["log_expression"] == pytest.approx(value, abs=1e-4)
        assert row["sample_id"] == f"{row['gene_id']}|{row['context']}"


def test_whole_chromosomes_are_held_out_for_test(built):
    *_, ds, rows = built
    for split, row in rows.values():
        assert (split == "test") == (row["chromosome"] in TEST_CHROMOSOMES)
    genes_of = defaultdict(set)
    for split, row in rows.values():
        genes_of[row["gene_id"]].add(split)
    assert all(len(s) == 1 for s in genes_of.values())
    assert {split for split, _ in rows.values()} == {"train", "validation", "test"}


def test_profiles_mask_the_target_and_name_their_panel(built):
    root, out, _, _, rows = built
    genes, profiles = pseudobulk_profiles(root / "pbmc_cells.h5ad")
    info = json.loads((out / TASK / "build_info.json").read_text())
    (asset,) = info["sources"][0]["assets"]
    assert json.loads((out / asset).read_text())[panel_id(genes)]["genes"] == genes
    for _, row in rows.values():
        if row["context"] not in sample.MOTIFS:  # whole blood and the tissues: no cells profile them
            assert row["profile_indices"] is None and row["gene_panel"] is None
            continue
        target = genes.index(row["gene_id"])
        assert target not in row["profile_indices"] and row["gene_panel"] == panel_id(genes)
        expected = profiles[row["context"]].copy()
        expected[target] = 0
        dense = np.zeros(len(genes), np.float32)
        dense[row["profile_indices"]] = row["profile_values"]
        np.testing.assert_allclose(dense, expected, rtol=1e-6)


def test_targets_follow_the_promoter_signal(built):
    *_, rows = built
    features, level = [], []
    motifs = {**sample.MOTIFS, **sample.TISSUE_MOTIFS}
    for _, row in rows.values():
        if row["context"] in motifs:
            near = row["promoter"][sample.TSS - 1000:sample.TSS + 1000]
            features.append([
                1.0, row["promoter"][sample.TSS - 500:sample.TSS + 500].count("CG"),
                float(row["promoter"][sample.TSS - 31:sample.TSS - 25] == "TATAAA"),
                near.count(motifs[row["context"]]),
            ])
            level.append(row["log_expression"])
    features, level = np.array(features), np.array(level)
    fit = features @ np.linalg.lstsq(features, level, rcond=None)[0]
    assert np.corrcoef(fit, level)[0, 1] > 0.9  # CpG, TATA and the context's motif explain the target


def test_bad_records_are_named(built):
    _, out, _, _, _ = built
    rejected = {e.source_path: e.reason for e in read_manifest(out / TASK) if e.status == "rejected"}
    expected = {
        "promoters.fa:row ENSG00000999001": "illegal letters 'KMRXY'",
        "promoters.fa:row ENSG00000999002": "window of 2000 nt; expected 10500",
        "promoters.fa:row ENSG00000999003": "header 'ENSG00000999003 promoter window' names no chromosome",
        "promoters.fa:row ENSG00000999004": "gene 'ENSG00000999004' has no row in expression.tsv",
        "expression.tsv:row 44 (ENSG00000999005)": "gene 'ENSG00000999005' has no window in promoters.fa",
    }
    assert set(rejected) == set(expected)
    for path, reason in expected.items():
        assert rejected[path].startswith(reason), (path, rejected[path])


def test_counts_of_each_outcome(built):
    _, _, report, ds, _ = built
    counts = report.sources[0].counts
    assert counts["rejected"] == 5
    assert counts["kept"] == sum(ds[s].num_rows for s in ds) + 3  # + the table, contexts.tsv and the h5ad


def test_each_context_carries_its_organ_and_ood_can_hold_one_out(built):
    """contexts.tsv states each context's organ: three organs, so ``multimed ood --group organ`` holds one out."""
    from multimed_hf.analysis.ood import group_column_values, resolve_group_column

    root, _, _, ds, rows = built
    stated = dict(line.split("\t") for line in (root / "contexts.tsv").read_text().splitlines()[1:])
    assert stated == sample.ORGANS
    for _, row in rows.values():
        assert row["organ"] == stated[row["context"]]
    assert {row["organ"] for _, row in rows.values()} == {"blood", "liver", "lung"}
    splits = {s: ds[s] for s in ds}
    assert resolve_group_column(splits, "organ") == "organ"
    assert set(group_column_values(ds["train"], TASK, "organ")) == {"blood", "liver", "lung"}


def test_without_contexts_tsv_the_organ_is_the_registrys_and_a_bad_one_is_named(built, tmp_path):
    from multimed_hf.builders.tcga_promoters import TCGAPromotersBuilder
    from multimed_hf.tasks import get_task

    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    (copy / "contexts.tsv").unlink()
    registry_organ = get_task(TASK).source("tcga_promoters").organ
    samples = [s for s in TCGAPromotersBuilder(copy).read_file("promoters.fa") if hasattr(s, "fields")]
    assert samples and {s.fields["organ"] for s in samples} == {registry_organ}
    (copy / "contexts.tsv").write_text("tissue\tSMTS\nLiver\tLiver\n")
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    entry = next(e for e in report.entries if e.source_path == "contexts.tsv")
    assert entry.status == "rejected" and "expected a header with 'context' and 'organ' columns" in entry.reason
    assert report.counts["kept"] > 0  # the windows keep their targets, without organs


def test_a_context_a_cell_type_nearly_names_is_warned_of(built, tmp_path):
    # before: "B cells" in the table beside "B cell" in the .h5ad silently left every B-cell row without a profile
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    for name in ("expression.tsv", "contexts.tsv"):
        text = (copy / name).read_text()
        (copy / name).write_text(text.replace("B cell\t", "B cells\t", 1))
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    warned = [w for w in report.warnings if "match no cell type" in w]
    assert warned == ["tcga_promoters: contexts 'B cells' (its cell type 'B cell') match no cell type of "
                      "pbmc_cells.h5ad exactly: "
                      "their rows have no scRNA profile; name them alike in both files"]
    assert not [w for w in build_dataset(TASK, [root], tmp_path / "clean", progress=False).warnings
                if "match no cell type" in w]


def test_a_changed_table_revalidates_the_windows(built, tmp_path):
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    out = tmp_path / "out"
    build_dataset(TASK, [copy], out, progress=False)
    table = (copy / "expression.tsv").read_text().splitlines()
    gene = table[1].split("\t")[0]
    table[1] = "\t".join([gene] + ["9.9"] * len(sample.CONTEXTS))
    (copy / "expression.tsv").write_text("\n".join(table) + "\n")
    build_dataset(TASK, [copy], out, progress=False)
    ds = load_dataset(str(out), TASK, cache_dir=str(tmp_path / "hf"))
    values = [r["log_expression"] for s in ds for r in ds[s] if r["gene_id"] == gene]
    assert values == pytest.approx([9.9] * len(sample.CONTEXTS))


@pytest.mark.parametrize("record_id, description, expected", [
    ("ENSG1::chr1:4869-15369(+)", "ENSG1::chr1:4869-15369(+)", ("ENSG1", "chr1", "chr1:4869-15369(+)")),
    ("ENSG2", "ENSG2 X:100-10600(-)", ("ENSG2", "chrX", "X:100-10600(-)")),
    ("ENSG3::MT", "ENSG3::MT", ("ENSG3", "chrM", "MT")),
])
def test_headers(record_id, description, expected):
    assert parse_header(record_id, description) == expected
    with pytest.raises(BadSourceFile, match="names no chromosome"):
        parse_header("ENSG4", "ENSG4 some promoter")


def test_a_gene_on_two_table_rows_is_named_and_the_rest_of_the_table_is_used(built, tmp_path):
    """TCGA's RNASeqV2 tables clipped to HUGO symbols hold SLC35E2 twice (Entrez 9906 and 728661; TCGAbiolinks'
    TCGAanalyze_Normalization drops it): the repeated gene's window and rows are named, every other gene kept."""
    root, _, report, ds, _ = built
    copy = shutil.copytree(root, tmp_path / "src")
    table = (copy / "expression.tsv").read_text().splitlines()
    gene = table[1].split("\t")[0]
    table.append("\t".join([gene] + ["1.5"] * len(sample.CONTEXTS)))  # the same id again, another gene's values
    (copy / "expression.tsv").write_text("\n".join(table) + "\n")
    again = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    rejected = {e.source_path: e.reason for e in again.entries if e.status == "rejected"}
    last = len(table) - 1
    assert rejected[f"promoters.fa:row {gene}"].startswith(
        f"gene {gene!r} has 2 rows in expression.tsv (rows 1, {last}): its target is ambiguous")
    for n in (1, last):
        assert rejected[f"expression.tsv:row {n} ({gene})"].startswith(f"gene {gene!r} is on 2 rows (rows 1, {last})")
    assert again.counts["rejected"] == report.counts["rejected"] + 3
    kept = {e.sample_id for e in again.entries if e.status == "kept" and e.sample_id}
    before = {e.sample_id for e in report.entries if e.status == "kept" and e.sample_id}
    assert kept == {s for s in before if not s.startswith(f"{gene}|")}


def test_extensions_in_capitals_read_like_lower_case_ones(built, tmp_path):
    """``promoters.FA``, ``expression.TSV``, ``contexts.TSV`` and ``pbmc_cells.H5AD`` (a copy made on Windows or
    from a CD): detected and read as the lower-case files are, each path as it is on disk, profiles and organs too."""
    from multimed_hf.builders.tcga_promoters import TCGAPromotersBuilder

    _, out, _, ds, _ = built
    root = sample.make(tmp_path / sample.FOLDER)
    renamed = {}
    for path in sorted(root.iterdir()):
        if path.suffix in (".fa", ".tsv", ".h5ad"):
            renamed[path.name] = path.rename(path.with_suffix(path.suffix.upper())).name
    assert set(renamed) == {"promoters.fa", "expression.tsv", "contexts.tsv", "pbmc_cells.h5ad"}
    assert TCGAPromotersBuilder.detect(root)
    upper = build_dataset(TASK, [root], tmp_path / "out", progress=False)

    def lower(text):
        for name, upper_name in renamed.items():
            text = text.replace(upper_name, name)
        return text

    entries = {(lower(e.source_path), e.status, lower(e.reason), e.sample_id, e.split) for e in upper.entries}
    assert entries == {(e.source_path, e.status, e.reason, e.sample_id, e.split) for e in read_manifest(out / TASK)}
    assert {e.source_path for e in upper.entries if e.sample_id} == {"promoters.FA"}
    again = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf_cache"))
    assert [again[s].to_dict()[c] for s in again for c in ("profile_values", "organ")] == \
        [ds[s].to_dict()[c] for s in ds for c in ("profile_values", "organ")]


def test_versioned_ensembl_ids_meet_bare_ones(tmp_path):
    """GENCODE / GTEx / Xena TOIL tables give ``ENSG00000100000.7``; the windows and the cells' panel bare ids (or the
    other way round): matched without the version, the same rows are built (every gene was rejected, none built),
    and each row's target gene is still masked out of its profile."""
    import anndata as ad

    versioned = sample.make(tmp_path / "src", bad_files=False)
    table = (versioned / "expression.tsv").read_text().splitlines()
    (versioned / "expression.tsv").write_text("\n".join(
        [table[0]] + [f"{line.split(chr(9), 1)[0]}.7\t{line.split(chr(9), 1)[1]}" for line in table[1:] if line]) + "\n")
    cells = ad.read_h5ad(versioned / "pbmc_cells.h5ad")
    cells.var_names = [f"{g}.12" for g in cells.var_names]
    cells.write_h5ad(versioned / "pbmc_cells.h5ad")
    plain = build_dataset(TASK, [sample.make(tmp_path / "plain", bad_files=False)], tmp_path / "out_plain",
                          progress=False)
    report = build_dataset(TASK, [versioned], tmp_path / "out", progress=False)
    kept = lambda r: sorted(e.sample_id for e in r.entries if e.status == "kept" and e.sample_id)  # noqa: E731
    assert kept(report) == kept(plain) and kept(plain)
    rows = load_dataset(str(tmp_path / "out"), TASK, split="train")
    genes, _ = pseudobulk_profiles(versioned / "pbmc_cells.h5ad")
    for row in rows:
        if row["profile_indices"] is not None:
            assert genes.index(row["gene_id"] + ".12") not in row["profile_indices"]


@pytest.mark.parametrize("change, row, cell, says", [
    # a TPM download: every value undone from its log2(x+1) (2**x * 1000 - 1), as Xena's "tpm" tables are published
    ("linear", 1, None, "is above 50, too high for log expression: the table looks linear-scale (raw TPM, FPKM or "
                        "counts); log-transform it first, e.g. log2(x+1)"),
    ("cell", 3, "1e9", "is above 50, too high for log expression"),
    ("cell", 5, "-35.5", "is below -20, too low for log expression (log2(x+0.001) reaches -9.97)"),
])
def test_a_table_that_is_not_log_expression_is_unusable_and_its_first_bad_value_named(
        built, tmp_path, change, row, cell, says):
    """A linear-scale table (raw TPM / FPKM, values in the thousands) was kept silently as ``log_expression``: the
    whole table is refused (no window gets a target) at its first value no log expression takes, row and value
    named, as a non-finite value is."""
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    table = (copy / "expression.tsv").read_text().splitlines()
    for n in range(1, len(table)):
        gene, *values = table[n].split("\t")
        if change == "linear":
            values = [f"{2 ** float(v) * 1000 - 1:.1f}" if v not in ("", "NA") else v for v in values]
        elif n == row:
            values[2] = cell
        table[n] = "\t".join([gene] + values)
    (copy / "expression.tsv").write_text("\n".join(table) + "\n")
    gene, *values = table[row].split("\t")
    with pytest.raises(BadSourceFile, match="^" + re.escape(
            f"row {row} ({gene}): {values[0 if change == 'linear' else 2]!r} in column "
            f"{sample.CONTEXTS[0 if change == 'linear' else 2]!r} {says}")):
        read_table(copy / "expression.tsv")
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in report.entries}
    assert by_path["expression.tsv"].status == "rejected" and by_path["expression.tsv"].reason.startswith(f"row {row}")
    assert report.counts["kept"] == 2  # contexts.tsv and the h5ad: no window keeps a target
    windows = [e for p, e in by_path.items() if p.startswith("promoters.fa")]
    assert windows and all(e.status == "rejected" for e in windows)
    assert by_path["promoters.fa"].reason.startswith(f"expression.tsv is unusable (row {row} ({gene}): ")


@pytest.mark.parametrize("low, high", [(-9.9658, 19.93), (-19.9, 49.5), (0.0, 25.0)])
def test_real_log_tables_are_kept(built, tmp_path, low, high):
    """Xena / toil's log2(x+0.001) (down to -9.97), log2(x+1) of TPM (to 19.93) or of counts (to about 30): kept, the
    values as given."""
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    table = (copy / "expression.tsv").read_text().splitlines()
    gene = table[1].split("\t")[0]
    table[1] = "\t".join([gene, str(low), str(high)] + ["1.5"] * (len(sample.CONTEXTS) - 2))
    (copy / "expression.tsv").write_text("\n".join(table) + "\n")
    _, values = read_table(copy / "expression.tsv")
    assert values[gene][1][:2] == [low, high]
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    assert next(e for e in report.entries if e.source_path == "expression.tsv").status == "kept"
    assert any(e.sample_id == f"{gene}|{sample.CONTEXTS[0]}" and e.status == "kept" for e in report.entries)


def test_a_macos_resource_fork_beside_the_h5ad_leaves_the_profiles_alone(built, tmp_path):
    # before: ._pbmc_cells.h5ad (a folder copied from a Mac) counted as a second .h5ad: the real one was rejected as
    # ambiguous and every row lost its profile, unsaid but in the manifest
    root, out, report, ds, rows = built
    copy = shutil.copytree(root, tmp_path / "src")
    (copy / "._pbmc_cells.h5ad").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    again = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    h5ad = next(e for e in again.entries if e.source_path == "pbmc_cells.h5ad")
    assert h5ad.status == "kept"
    clean = next(e for e in report.entries if e.source_path == "pbmc_cells.h5ad")
    assert h5ad.reason == clean.reason


def test_an_h5ad_whose_cell_types_name_no_context_is_not_used_and_the_build_may_be_pushed(built, tmp_path):
    # before (sweep K10): the .h5ad was "kept" though no row had a profile, and push left the whole source out,
    # saying its rows carried the file's data
    from multimed_hf.data.push import left_out_sources

    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    for name in ("expression.tsv", "contexts.tsv"):
        text = (copy / name).read_text()
        for context in ("B cell", "T cell", "monocyte"):
            text = text.replace(f"{context}\t", f"{context}x\t").replace(f"\t{context}\n", f"\t{context}x\n")
        (copy / name).write_text(text)
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    h5ad = next(e for e in report.entries if e.source_path == "pbmc_cells.h5ad")
    assert h5ad.status == "dropped" and "names a context of expression.tsv, so no row has a profile" in h5ad.reason
    ds = load_dataset(str(tmp_path / "out"), TASK, cache_dir=str(tmp_path / "hf"))
    assert all(r["profile_indices"] is None for s in ds for r in ds[s])
    assert "tcga_promoters" not in left_out_sources(tmp_path / "out")
    panels = tmp_path / "out" / TASK / "gene_panels.json"
    assert not panels.exists() or json.loads(panels.read_text()) == {}  # no panel a row refers to
    assert "tcga_promoters" in left_out_sources(built[1])  # the sample's cells pair: its rows carry their data


def test_a_table_whose_columns_are_sample_ids_is_refused(built, tmp_path):
    # before (sweep D3): Xena's per-sample PanCan table (~11,000 TCGA barcodes) made one sample per gene and barcode
    root, *_ = built
    copy = shutil.copytree(root, tmp_path / "src")
    table = (copy / "expression.tsv").read_text().splitlines()
    n = len(table[0].split("\t")) - 1
    table[0] = "\t".join(["gene"] + [f"TCGA-02-{4700 + i:04d}-01" for i in range(n)])
    (copy / "expression.tsv").write_text("\n".join(table) + "\n")
    report = build_dataset(TASK, [copy], tmp_path / "out", progress=False)
    entry = next(e for e in report.entries if e.source_path == "expression.tsv")
    assert entry.status == "rejected" and entry.reason.startswith(
        f"{n} of its {n} columns are sample ids (TCGA-02-4700-01, TCGA-02-4701-01, ...), not contexts")
    assert "average the samples per cancer type or tissue first" in entry.reason
