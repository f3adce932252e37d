"""Promoter windows paired with measured expression, and, for the bimodal setting, scRNA-seq pseudo-bulk profiles.

Layout: ``promoters.fa`` (ready-cut windows of ``WINDOW`` nt, 7,000 upstream to 3,500 downstream of the TSS as
in Xpresso; headers as ``bedtools getfasta -name -s`` writes them, ``GENE::chr1:4869-15369(+)``, or
``GENE chr1:4869-15369(+)``), ``expression.tsv`` (genes x contexts, log-scale values such as Xena's log2(x+1);
first column the gene id; a per-sample table, whose columns are TCGA / GTEx sample ids, is refused: average it per
cancer type or tissue first), optionally ``contexts.tsv`` (columns ``context`` and ``organ``: the organ of each context
column, as GTEx's sample attributes give the organ, SMTS, of each tissue, SMTSD) and optionally one ``.h5ad`` of
cells whose cell-type names match context columns.

One sample per (gene, context): the promoter (upper-case A/C/G/T/N), the context, the gene's log expression
there and, for a context that is a cell type of the h5ad, that cell type's pseudo-bulk profile (log1p of the mean
CP10k-normalised expression; for log-normalised matrices, of the mean of ``expm1``) with the target gene masked
(left out of the indices), and the context's ``organ`` where ``contexts.tsv`` states it (else the registry's
organ of the source, None for this one). Samples come from reading the FASTA; the table, ``contexts.tsv`` and the
h5ad are read with it, so the builder's version carries their size and time stamps (a changed table re-validates
every window). An h5ad none of whose cell types names a context gives no row a profile: it is dropped, said so.

Checked and reported per record (``promoters.fa:row GENE``): letters other than A/C/G/T/N, a window of another
length, a header without chromosome, a gene id repeated, a gene with no expression row or with several; table rows
whose gene has no window, and each row of a gene id the table repeats (TCGA's SLC35E2), are reported as
``expression.tsv:row N (GENE)``, the rest of the table is used. A table with a value that no log expression takes
(outside ``LOG_EXPRESSION_RANGE``, -20 to 50: a linear-scale table of raw TPM, FPKM or counts, whose values run into
the thousands) or a non-finite one is unusable as a whole: its first such row and value are named, and no window has a
target until it is log-transformed (e.g. log2(x+1)).

The files' extensions are matched in any case (``promoters.FA``, ``expression.TSV``, ``cells.H5AD``), their names as
on disk.

Splits: grouped by gene; whole chromosomes are held out for test (``TEST_CHROMOSOMES``, DeepSEA's chr8 and chr9),
expressed through the publisher-split channel: genes there are marked test, the rest train (validation is drawn
from training genes).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from functools import cached_property
from pathlib import Path, PurePosixPath

import numpy as np

from multimed_hf.builders._download import NonDataFiles
from multimed_hf.builders._records import RecordRejections, record_where, dependency_version
from multimed_hf.builders.pbmc68k_reduced import LABEL_COLUMNS, h5ad_files, is_h5ad, panel_id, read_expression
from multimed_hf.data.errors import BadSourceFile, UnusedSourceFile
from multimed_hf.data.sample import Sample
from multimed_hf.data.source_builder import SourceBuilder

__all__ = [
    "TCGAPromotersBuilder", "WINDOW", "TEST_CHROMOSOMES", "LOG_EXPRESSION_RANGE", "gene_key", "parse_header",
    "pseudobulk_profiles", "read_context_organs",
]

WINDOW = 10_500
TEST_CHROMOSOMES = ("chr8", "chr9")
FASTA_NAMES = ("promoters.fa", "promoters.fasta", "promoters.fa.gz", "promoters.fasta.gz")
TABLE_NAMES = ("expression.tsv", "expression.tsv.gz")
CONTEXT_NAMES = ("contexts.tsv", "contexts.tsv.gz")
_DNA = re.compile(r"[^ACGTN]")
#: A column named by one sample (TCGA barcode TCGA-02-0047-01, GTEx sample GTEX-1117F-0226), not a context.
_SAMPLE_ID = re.compile(r"^(TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}|GTEX-[A-Z0-9]{4,5}-)", re.IGNORECASE)
#: The values a log expression table can hold (``read_table_rows`` refuses a table with one outside). log2(x+1) of
#: TPM, FPKM or CPM stays within 0..19.93 (a million per million) and of read counts under about 30 (10^9 reads);
#: Xena / GTEx / toil's log2(x+0.001) reaches down to log2(0.001) = -9.97, and batch-corrected tables go a little
#: below 0. -20 is log2(10^-6), a pseudocount a thousand times smaller than any published table's; 50 is log2(10^15),
#: beyond any count. A linear-scale table (raw TPM, FPKM, counts: values in the thousands) fails the upper bound.
LOG_EXPRESSION_RANGE = (-20.0, 50.0)


def _named(name: str, names) -> bool:
    """Whether a file name is one of ``names`` with its extension in any case (``expression.TSV``)."""
    stem, dot, extension = name.partition(".")
    return any(dot and stem == n.partition(".")[0] and extension.lower() == n.partition(".")[2] for n in names)


def _find(root: Path, names) -> str | None:
    """The first of ``names`` in ``root`` (``promoters.fa`` before ``promoters.fasta``) as it is named on disk, its
    extension in any case; the exact name before a variant."""
    files = sorted(p.name for p in root.iterdir() if p.is_file()) if root.is_dir() else []
    for name in names:
        if name in files:
            return name
        found = next((f for f in files if _named(f, (name,))), None)
        if found is not None:
            return found
    return None
#: An Ensembl gene id with its version (GENCODE, GTEx, Xena TOIL: ``ENSG00000100000.7``; a PAR copy ``.5_PAR_Y``).
_VERSIONED = re.compile(r"^(ENS[A-Z]*G\d{11})\.\d+(_PAR_Y)?$")


def gene_key(gene: str) -> str:
    """A gene id as the files are matched by it: an Ensembl id without its version (``ENSG00000100000.7`` ->
    ``ENSG00000100000``; ``_PAR_Y`` kept), so a table of versioned ids meets a FASTA of bare ones; others as given."""
    match = _VERSIONED.match(gene)
    return gene if match is None else match.group(1) + (match.group(2) or "")


_LOCUS = re.compile(r"^(?:chr)?([0-9]{1,2}|X|Y|M|MT)(?::(\d+)-(\d+))?(?:\(([+-])\))?$", re.IGNORECASE)


def parse_header(record_id: str, description: str) -> tuple[str, str, str]:
    """``(gene id, chromosome as chrN, window locus text)`` from a FASTA header; ``BadSourceFile`` if no chromosome."""
    gene, _, locus = record_id.partition("::")
    if not locus:
        rest = description[len(record_id):].split()
        locus = rest[0] if rest else ""
    match = _LOCUS.match(locus.strip())
    if not gene or match is None:
        raise BadSourceFile(
            f"header {description!r} names no chromosome: expected GENE::chr1:4869-15369(+) (bedtools getfasta "
            "-name -s) or 'GENE chr1:4869-15369(+)'"
        )
    chrom = match.group(1).upper()
    chrom = "chrM" if chrom in ("M", "MT") else f"chr{chrom}"
    return gene_key(gene), chrom, locus.strip()


def _text(path: Path) -> str:
    data = path.read_bytes()
    if path.name.lower().endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise BadSourceFile(f"cannot decompress: {type(err).__name__}: {err}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BadSourceFile(f"not UTF-8 text: {err}") from None


def read_table(path: Path) -> tuple[list[str], dict[str, tuple[int, list[float | None]]]]:
    """``(contexts, {gene: (row number, values)})`` of a genes x contexts table (empty / NA cells are None); a gene
    id on several rows is left out (see ``read_table_rows``)."""
    contexts, table, _ = read_table_rows(path)
    return contexts, table


def read_table_rows(path: Path):
    """``(contexts, table, repeats)``: ``read_table``'s two, and ``{gene: [row numbers]}`` of the gene ids found on
    more than one row. Their target is ambiguous, so they are left out of the table, each row reported; the rest of
    the table is used (TCGA's RNASeqV2 tables clipped to HUGO symbols hold SLC35E2 twice, Entrez 9906 and 728661).
    ``BadSourceFile`` for the whole table at its first non-finite value or value outside ``LOG_EXPRESSION_RANGE``
    (not log expression: a linear-scale table)."""
    rows = list(csv.reader(io.StringIO(_text(path)), delimiter="\t"))
    if not rows or len(rows[0]) < 2:
        raise BadSourceFile("expected a header row: gene id, then one column per context")
    contexts = [c.strip() for c in rows[0][1:]]
    if len(set(contexts)) != len(contexts) or not all(contexts):
        raise BadSourceFile(f"context columns are empty or repeat: {contexts}")
    samples = [c for c in contexts if _SAMPLE_ID.match(c)]
    if len(samples) > len(contexts) // 2:
        raise BadSourceFile(
            f"{len(samples)} of its {len(contexts)} columns are sample ids ({', '.join(samples[:2])}, ...), not "
            "contexts: each column becomes one sample per gene (a per-sample table such as Xena's PanCan one, "
            "~20,000 genes x ~11,000 samples, would make ~220 million); average the samples per cancer type or "
            "tissue first, one column each (GDC / Xena phenotype tables give each sample's)"
        )
    table: dict[str, tuple[int, list]] = {}
    repeats: dict[str, list[int]] = {}
    for n, row in enumerate(rows[1:], start=1):
        if not row or not row[0].strip():
            continue
        if len(row) != len(contexts) + 1:
            raise BadSourceFile(f"row {n}: {len(row)} fields, the header has {len(contexts) + 1}")
        values = []
        for cell in row[1:]:
            cell = cell.strip()
            if cell in ("", "NA", "NaN", "nan"):
                values.append(None)
                continue
            try:
                value = float(cell)
            except ValueError:
                raise BadSourceFile(f"row {n} ({row[0]}): {cell!r} is not a number") from None
            if not np.isfinite(value):
                raise BadSourceFile(f"row {n} ({row[0]}): {cell!r} is not finite")
            low, high = LOG_EXPRESSION_RANGE
            if not low <= value <= high:
                where = f"row {n} ({row[0]}): {cell!r} in column {contexts[len(values)]!r}"
                if value > high:
                    raise BadSourceFile(
                        f"{where} is above {high:g}, too high for log expression: the table looks linear-scale (raw "
                        "TPM, FPKM or counts); log-transform it first, e.g. log2(x+1)"
                    )
                raise BadSourceFile(
                    f"{where} is below {low:g}, too low for log expression (log2(x+0.001) reaches -9.97): check the "
                    "table's scale; expected log-scale values such as log2(x+1)"
                )
            values.append(value)
        gene = gene_key(row[0].strip())
        if gene in repeats:
            repeats[gene].append(n)
        elif gene in table:
            repeats[gene] = [table.pop(gene)[0], n]
        else:
            table[gene] = (n, values)
    return contexts, table, repeats


def read_context_organs(path: Path) -> dict[str, str | None]:
    """``{context: organ}`` from a table with ``context`` and ``organ`` columns (organs lower-cased; empty: None)."""
    rows = list(csv.reader(io.StringIO(_text(path)), delimiter="\t"))
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if "context" not in header or "organ" not in header:
        raise BadSourceFile(f"expected a header with 'context' and 'organ' columns; found {header}")
    at, organ_at = header.index("context"), header.index("organ")
    organs: dict[str, str | None] = {}
    for n, row in enumerate(rows[1:], start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) != len(header):
            raise BadSourceFile(f"row {n}: {len(row)} fields, the header has {len(header)}")
        context, organ = row[at].strip(), row[organ_at].strip().lower()
        if context in organs:
            raise BadSourceFile(f"row {n}: context {context!r} repeats")
        organs[context] = organ or None
    return organs


def pseudobulk_profiles(path: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """``(genes, {cell type: profile})`` of an h5ad: log1p of each cell type's mean CP10k expression."""
    adata, expression = read_expression(path)
    label = next((c for c in LABEL_COLUMNS if c in adata.obs.columns), None)
    if label is None:
        raise BadSourceFile(
            f"no cell-type column in obs {list(adata.obs.columns)[:12]}; expected one of {list(LABEL_COLUMNS)}"
        )
    matrix = expression.matrix
    if expression.where == "layers/counts":
        totals = np.asarray(matrix.sum(axis=1)).ravel()
        scale = np.where(totals > 0, 1e4 / np.maximum(totals, 1e-12), 0.0)
        linear = matrix.multiply(scale[:, None]).tocsr()
    else:
        linear = matrix.copy()
        linear.data = np.expm1(linear.data)
    profiles = {}
    types = adata.obs[label].astype(str).to_numpy()
    for cell_type in sorted(set(types) - {"nan", "None", ""}):
        rows = np.nonzero(types == cell_type)[0]
        profiles[cell_type] = np.log1p(np.asarray(linear[rows].mean(axis=0)).ravel()).astype(np.float32)
    return expression.genes, profiles


class TCGAPromotersBuilder(NonDataFiles, RecordRejections, SourceBuilder):
    task = "expression_prediction"
    source = "tcga_promoters"
    record_noun = "promoter window"
    #: 2: the context's organ; 3: a repeated gene's rows reported, the rest of the table used; 4: extensions in any
    #: case
    #: 5: Ensembl ids matched without their version (ENSG...7 in the table, bare in the FASTA)
    #: 6: a table with values outside LOG_EXPRESSION_RANGE (linear-scale) is unusable; 7: a macOS ``._x.h5ad`` fork is
    #: no second .h5ad (it made the real one ambiguous: no profiles), an .h5ad whose cell types name no context is
    #: not used, a table whose columns are sample ids is refused
    reading_version = "7"

    @classmethod
    def detect(cls, root: Path) -> bool:
        return _find(root, FASTA_NAMES) is not None and _find(root, TABLE_NAMES) is not None

    @cached_property
    def version(self) -> str:  # the reading code, and the content of the files every window's samples come from
        return dependency_version(self.reading_version, (
            p for p in self.root.iterdir()
            if p.is_file() and (_named(p.name, TABLE_NAMES + CONTEXT_NAMES) or is_h5ad(p.name))
        ))

    def _one(self, names) -> str | None:
        return _find(self.root, names)

    def _h5ads(self) -> list[str]:
        return [p.name for p in h5ad_files(self.root)]

    @cached_property
    def _table_rows(self):
        """``read_table_rows`` of the expression table: contexts, table (genes on several rows left out), repeats."""
        return read_table_rows(self.root / self._one(TABLE_NAMES))

    @cached_property
    def _context_organs(self) -> dict[str, str | None]:
        name = self._one(CONTEXT_NAMES)
        return {} if name is None else read_context_organs(self.root / name)

    @cached_property
    def _profile_index(self) -> dict[str, int]:
        """Each profile gene's position, by ``gene_key`` (the h5ad's ids may carry versions the FASTA's lack)."""
        return {gene_key(g): i for i, g in enumerate(self._profiles[0])} if self._profiles is not None else {}

    @cached_property
    def _profiles(self):
        h5ads = self._h5ads()
        if not h5ads:
            return None
        genes, profiles = pseudobulk_profiles(self.root / h5ads[0])
        return genes, profiles, panel_id(genes)

    def _pairs_a_context(self) -> bool:
        """Whether a cell type of the .h5ad names a context of the table (True where the table cannot be read: it
        is rejected with its own reason); raises the .h5ad's ``BadSourceFile``."""
        profiles = self._profiles
        if profiles is None:
            return False
        try:
            contexts = self._table_rows[0] if self._one(TABLE_NAMES) else []
        except BadSourceFile:
            return True
        return not contexts or bool(set(contexts) & set(profiles[1]))

    def layout_warnings(self) -> list[str]:
        """Contexts of the table without a profile whose name a cell type of the .h5ad nearly matches (a case or a
        plural apart: "B cells" / "B cell"): profiles pair by exact name, so their rows have none, said here."""
        if len(self._h5ads()) != 1 or self._one(TABLE_NAMES) is None:
            return []
        try:
            contexts = self._table_rows[0]
            profiles = self._profiles
        except (BadSourceFile, *self.reader_errors):  # rejected when read, with the reason
            return []

        def loose(name: str) -> str:
            return " ".join(name.lower().split()).removesuffix("s")

        cell_types = {loose(t): t for t in profiles[1] if t not in contexts}
        near = [f"{c!r} (its cell type {cell_types[loose(c)]!r})" for c in contexts
                if c not in profiles[1] and loose(c) in cell_types]
        return [f"contexts {', '.join(near)} match no cell type of {self._h5ads()[0]} exactly: their rows have no "
                f"scRNA profile; name them alike in both files"] if near else []

    def read_file(self, relpath: str) -> list[Sample]:
        name = PurePosixPath(relpath).name
        if relpath == self._one(TABLE_NAMES):
            self._table_rows  # noqa: B018  (checked: a bad table is rejected here, with its reason)
            return []
        if relpath == self._one(CONTEXT_NAMES):
            self._context_organs  # noqa: B018
            return []
        if is_h5ad(relpath):
            if len(self._h5ads()) > 1:
                raise BadSourceFile(f"ambiguous: several .h5ad files {self._h5ads()}; keep the one to profile")
            if not self._pairs_a_context():
                cell_types = sorted(self._profiles[1])
                raise UnusedSourceFile(
                    f"not used: none of its {len(cell_types)} cell types ({', '.join(cell_types[:3])}, ...) names a "
                    f"context of {self._one(TABLE_NAMES)}, so no row has a profile; name them alike to pair them"
                )
            return []
        if name.upper().startswith(("README", "LICENSE")):
            return []
        if relpath != self._one(FASTA_NAMES):
            raise BadSourceFile(
                f"stray file: expected {FASTA_NAMES[0]}, {TABLE_NAMES[0]} and optionally {CONTEXT_NAMES[0]} and one "
                ".h5ad"
            )
        return self._read_fasta(relpath)

    def _read_fasta(self, relpath: str) -> list[Sample]:
        from Bio import SeqIO

        text = _text(self.root / relpath)
        if not text.lstrip().startswith(">"):
            raise BadSourceFile("not FASTA: the file does not start with a '>' header")
        try:
            contexts, table, repeats = self._table_rows
        except BadSourceFile as err:
            raise BadSourceFile(f"{TABLE_NAMES[0]} is unusable ({err.reason}), so no window has a target") from None
        try:
            profiles = self._profiles
        except BadSourceFile:
            profiles = None  # the h5ad is rejected with its reason; windows keep their targets, without profiles
        try:
            organs = self._context_organs
        except BadSourceFile:
            organs = {}  # contexts.tsv is rejected with its reason; windows keep their targets, without organs
        organs = {c: organs.get(c, self.spec().organ) for c in contexts}
        records = list(SeqIO.parse(io.StringIO(text), "fasta"))
        seen: dict[str, int] = {}
        for record in records:
            gene = gene_key(record.id.partition("::")[0])
            seen[gene] = seen.get(gene, 0) + 1
        samples, bad = [], []
        for n, record in enumerate(records, start=1):
            where = f"{record.id.partition('::')[0] or n}"
            try:
                gene, chrom, locus = parse_header(record.id, record.description)
                sequence = str(record.seq).upper()
                if seen[gene] > 1:
                    raise BadSourceFile(f"gene {gene!r} has {seen[gene]} windows in the file")
                illegal = sorted(set(_DNA.findall(sequence)))
                if illegal:
                    raise BadSourceFile(f"illegal letters {''.join(illegal)!r} (expected A, C, G, T, N)")
                if len(sequence) != WINDOW:
                    raise BadSourceFile(
                        f"window of {len(sequence)} nt; expected {WINDOW} "
                        "(7,000 upstream to 3,500 downstream of the TSS)"
                    )
                if gene in repeats:
                    rows = ", ".join(str(r) for r in repeats[gene])
                    raise BadSourceFile(
                        f"gene {gene!r} has {len(repeats[gene])} rows in {TABLE_NAMES[0]} (rows {rows}): its target "
                        "is ambiguous"
                    )
                if gene not in table:
                    raise BadSourceFile(f"gene {gene!r} has no row in {TABLE_NAMES[0]}")
            except BadSourceFile as err:
                bad.append((where, err.reason))
                continue
            samples.extend(self._samples(relpath, gene, chrom, locus, sequence, contexts, table[gene][1], profiles,
                                         organs))
        return self.keep_records(relpath, samples, bad)

    def _samples(self, relpath, gene, chrom, locus, sequence, contexts, values, profiles, organs) -> list[Sample]:
        samples = []
        for context, value in zip(contexts, values):
            fields = {
                "promoter": sequence, "context": context, "log_expression": value, "gene_id": gene,
                "chromosome": chrom, "window": locus, "organ": organs[context],
                "profile_indices": None, "profile_values": None, "gene_panel": None,
            }
            if profiles is not None and context in profiles[1]:
                genes, by_type, panel = profiles
                profile = by_type[context].copy()
                target = self._profile_index.get(gene)
                if target is not None:
                    profile[target] = 0.0  # the target gene is masked (matched without an Ensembl version)
                keep = np.nonzero(profile)[0]
                fields.update(profile_indices=keep.astype(np.int32), profile_values=profile[keep], gene_panel=panel)
            samples.append(Sample(
                sample_id=f"{gene}|{context}", source_path=relpath, fields=fields, group_key=f"gene:{gene}",
                published_split="test" if chrom in TEST_CHROMOSOMES else "train",
            ))
        return samples

    def orphan_records(self, files: set[str]) -> list[tuple[str, str]]:
        found = super().orphan_records(files)
        fasta, table_name = self._one(FASTA_NAMES), self._one(TABLE_NAMES)
        if fasta not in files or table_name not in files:
            return found
        try:
            _, table, repeats = self._table_rows
            from Bio import SeqIO

            windows = {gene_key(r.id.partition("::")[0])
                       for r in SeqIO.parse(io.StringIO(_text(self.root / fasta)), "fasta")}
        except BadSourceFile:
            return found
        for gene, (n, _) in sorted(table.items(), key=lambda item: item[1][0]):
            if gene not in windows:
                found.append((record_where(table_name, f"{n} ({gene})"), f"gene {gene!r} has no window in {fasta}"))
        for gene, rows in sorted(repeats.items(), key=lambda item: item[1][0]):
            for n in rows:
                found.append((record_where(table_name, f"{n} ({gene})"), (
                    f"gene {gene!r} is on {len(rows)} rows (rows {', '.join(str(r) for r in rows)}): its target is "
                    "ambiguous, no row of it is used"
                )))
        return found

    def assets(self) -> dict[str, object]:
        """``gene_panels.json`` beside the shards: the gene panel the profile indices refer to."""
        try:
            profiles = self._profiles if self._pairs_a_context() else None
        except BadSourceFile:
            profiles = None
        panels = {} if profiles is None else {profiles[2]: {"genes": profiles[0], "files": self._h5ads()[:1]}}
        return {"gene_panels.json": panels}
