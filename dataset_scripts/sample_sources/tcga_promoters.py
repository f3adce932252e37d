"""A synthetic sample for expression_prediction: promoter windows, an expression table and a cells h5ad.

``promoters.fa`` holds 10,500-nt windows (7,000 up, 3,500 down of the TSS) for 40 genes on chr1-chr10, headed as
``bedtools getfasta -name -s`` writes them; ``expression.tsv`` their log2 expression in six contexts of three
organs (B cell, T cell, monocyte, whole blood: blood; GTEx-style tissue columns Liver and Lung); ``contexts.tsv``
each context's organ (as GTEx's sample attributes give the organ, SMTS, of each tissue, SMTSD);
``pbmc_cells.h5ad`` 60 cells of the three cell types (integer counts) over the 40 genes and 20 more. Learnable
signal: expression rises with the CpG content and a TATA box near the TSS, and in each cell type or tissue with
the count of its motif (E-box CACGTG for B cells, ETS GGAAGT for T cells, C/EBP TTGCGCAA for monocytes, FOXA
TGTTTAC for liver, NKX2-1 CACTTGA for lung) near the TSS; the cells are drawn from the same rates. Bad inputs: a
window with illegal letters, one of the wrong length, one whose header names no chromosome, one with no
expression row, and a table row with no window.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_scripts.sample_sources._draw import write_provenance

__all__ = ["FOLDER", "make", "make_tcga_promoters", "MOTIFS", "TISSUE_MOTIFS", "CONTEXTS", "ORGANS", "TSS"]

FOLDER = "tcga_promoters"
TSS = 7000
WINDOW = 10_500
MOTIFS = {"B cell": "CACGTG", "T cell": "GGAAGT", "monocyte": "TTGCGCAA"}
#: Tissue contexts (GTEx's column names) and their motifs: no cells profile them.
TISSUE_MOTIFS = {"Liver": "TGTTTAC", "Lung": "CACTTGA"}
CONTEXTS = (*MOTIFS, "whole blood", *TISSUE_MOTIFS)
#: Each context's organ, as ``contexts.tsv`` states it.
ORGANS = {**{name: "blood" for name in (*MOTIFS, "whole blood")}, "Liver": "liver", "Lung": "lung"}
_ALL_MOTIFS = {**MOTIFS, **TISSUE_MOTIFS}


def _window(rng: np.random.Generator, cpg: float, tata: bool, motifs: dict[str, int]) -> str:
    bases = np.array(list("ACGT"))
    seq = rng.choice(bases, WINDOW, p=[0.29, 0.21, 0.21, 0.29])
    core = slice(TSS - 500, TSS + 500)
    n = int(cpg * 1000 / 2)
    for start in rng.choice(np.arange(core.start, core.stop - 2, 2), n, replace=False):
        seq[start:start + 2] = ["C", "G"]
    if tata:
        seq[TSS - 31:TSS - 25] = list("TATAAA")
    slots = iter(rng.choice(np.arange(TSS - 1000, TSS + 1000 - 8, 40), sum(motifs.values()), replace=False))
    for name, count in motifs.items():  # each motif copy in a slot of its own: none overwrites another
        motif = list(_ALL_MOTIFS[name])
        for _ in range(count):
            start = next(slots)
            seq[start:start + len(motif)] = motif
    return "".join(seq)


def _fasta_record(name: str, locus: str, sequence: str) -> str:
    lines = [sequence[i:i + 60] for i in range(0, len(sequence), 60)]
    return f">{name}::{locus}\n" + "\n".join(lines) + "\n"


def _levels(rng, cpg, tata, motifs) -> dict[str, float]:
    base = 1.0 + 8.0 * cpg + 1.5 * tata
    levels = {name: base + 0.7 * motifs[name] + rng.normal(0, 0.15) for name in MOTIFS}
    levels["whole blood"] = float(np.mean(list(levels.values()))) + rng.normal(0, 0.1)
    for name in TISSUE_MOTIFS:
        levels[name] = base + 0.7 * motifs[name] + rng.normal(0, 0.15)
    return levels


def make_tcga_promoters(root, *, genes: int = 40, seed: int = 17, bad_files: bool = True) -> Path:
    """Write the sample under ``root`` and return it."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    fasta, rows, levels_of = [], [], {}
    for g in range(genes):
        gene = f"ENSG{100000 + 17 * g:011d}"
        chrom = f"chr{g % 10 + 1}"
        start = 100_000 + 250_000 * g
        cpg, tata = rng.uniform(0.02, 0.3), bool(rng.random() < 0.4)
        motifs = {name: int(rng.integers(0, 5)) for name in _ALL_MOTIFS}
        fasta.append(_fasta_record(gene, f"{chrom}:{start}-{start + WINDOW}(+)", _window(rng, cpg, tata, motifs)))
        levels_of[gene] = _levels(rng, cpg, tata, motifs)
        rows.append([gene] + [f"{levels_of[gene][c]:.4f}" for c in CONTEXTS])
    if bad_files:
        good = _window(rng, 0.1, False, {name: 1 for name in _ALL_MOTIFS})
        broken = good[:5000] + "RYKM" + good[5004:-1] + "X"
        fasta.append(_fasta_record("ENSG00000999001", "chr3:5000-15500(+)", broken))  # IUPAC codes and an X
        fasta.append(_fasta_record("ENSG00000999002", "chr4:5000-7000(-)", good[:2000]))  # a 2 kb window
        fasta.append(f">ENSG00000999003 promoter window\n{good}\n")  # no locus in the header
        fasta.append(_fasta_record("ENSG00000999004", "chr5:5000-15500(+)", good))  # no expression row
        for gene in ("ENSG00000999001", "ENSG00000999002", "ENSG00000999003", "ENSG00000999005"):
            rows.append([gene] + ["2.5000"] * len(CONTEXTS))  # ...999005 has no window
    (root / "promoters.fa").write_text("".join(fasta))
    (root / "expression.tsv").write_text(
        "gene_id\t" + "\t".join(CONTEXTS) + "\n" + "".join("\t".join(r) + "\n" for r in rows)
    )
    (root / "contexts.tsv").write_text("context\torgan\n" + "".join(f"{c}\t{ORGANS[c]}\n" for c in CONTEXTS))
    panel = [f"ENSG{100000 + 17 * g:011d}" for g in range(genes)] + [f"ENSG{900000 + g:011d}" for g in range(20)]
    counts, types = [], []
    for cell_type in MOTIFS:
        for _ in range(20):
            rate = [2 ** levels_of[g][cell_type] / 40 if g in levels_of else 0.5 for g in panel]
            counts.append(rng.poisson(np.array(rate) * rng.uniform(0.7, 1.3)))
            types.append(cell_type)
    counts = sp.csr_matrix(np.array(counts, dtype=np.float32))
    obs = pd.DataFrame({"cell_type": types}, index=[f"cell{i:03d}" for i in range(len(types))])
    adata = ad.AnnData(X=counts.copy(), obs=obs, var=pd.DataFrame(index=panel))
    adata.layers["counts"] = counts
    adata.write_h5ad(root / "pbmc_cells.h5ad")
    write_provenance(root, "generated by dataset_scripts/sample_sources/tcga_promoters.py (not real genomes)")
    return root


make = make_tcga_promoters
