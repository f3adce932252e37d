"""Benchmark tables from metric records: a long CSV, Markdown beside the paper's numbers, a grouped bar chart."""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from multimed_hf.metrics import applicable_metrics
from multimed_hf.tasks import get_task
from multimed_hf.training.paper import PAPER, TABLE1, TABLE1_COLUMNS, TABLE1_ROW_LABELS, paper_value

__all__ = [
    "COLUMNS",
    "NATURAL_SCALE_METRICS",
    "ReportError",
    "ReportPaths",
    "SAME_AS_UNIMODAL",
    "failure_records",
    "headline",
    "read_records",
    "render_markdown",
    "summarize",
    "write_table",
    "write_table1",
    "NATURAL_SCALE_METRICS",
    "CORRELATION_METRICS",
]

#: The long CSV's columns, in order (``run``, the run's folder-safe plan name, last).
COLUMNS = ("family", "task", "label", "metric", "seed", "split", "value", "n", "ci_low", "ci_high", "paper_value",
           "error", "run")

#: Metrics with units (RMSD in angstrom, MAE in the label's units), shown as they are; every other metric is a
#: fraction or a correlation and is shown x 100, the paper's scale (it prints even Pearson r and TM-score as %).
NATURAL_SCALE_METRICS = frozenset({"rmsd", "mae"})
#: Correlations: Table 1 shows them x 100 as the paper prints them (issue 15: "on the paper's scale"); Table 2 shows
#: them as r (issue 17: "report ours as Pearson"), the paper's printed percentage beside, said in its Markdown.
CORRELATION_METRICS = frozenset({"pearson", "spearman"})

#: What a table says where a family's runs skip a task by design (one modality: the multimodal run is the unimodal).
SAME_AS_UNIMODAL = "same as unimodal (one modality)"

_NUMERIC = ("seed", "value", "n", "ci_low", "ci_high", "paper_value")
_ERROR_WIDTH = 48


class ReportError(ValueError):
    """Metric records a table cannot be made from."""


@dataclass(frozen=True)
class ReportPaths:
    """Where a table was written: the long CSV, the Markdown table and the bar chart."""

    csv: Path
    markdown: Path
    figure: Path


def headline(task: str) -> tuple[str, str]:
    """The (label column, metric) a task's table cell shows: the registry's first label column and its first metric
    (accuracy; Pearson for expression; TM-score for structure; VQA accuracy for med_vqa)."""
    return _label_metrics(task)[0]


def _label_metrics(task: str) -> list[tuple[str, str]]:
    """Every (label column, metric) the registry scores for ``task``, in order."""
    return [(label.name, metric) for label in get_task(task).labels for metric in applicable_metrics(task, label.name)]


def _single_label(task: str) -> bool:
    return len(get_task(task).labels) == 1


def failure_records(family: str, tasks: Sequence[str], seed: int, error: str, *, run: str | None = None,
                    split: str = "test") -> list[dict]:
    """One record per task of a failed run: the task's headline cell, no value, and the error that stopped it."""
    records = []
    for task in tasks:
        label, metric = headline(task)
        records.append({
            "family": family, "task": task, "label": None if _single_label(task) else label, "metric": metric,
            "seed": seed, "split": split, "value": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan,
            "error": error, "run": run,
        })
    return records


def _frame(records: Iterable[Mapping], paper: Mapping[str, Mapping[str, float]], split: str) -> pd.DataFrame:
    frame = pd.DataFrame.from_records([dict(r) for r in records])
    missing = sorted({"family", "task", "metric", "value"} - set(frame.columns))
    if missing and not frame.empty:
        raise ReportError(f"records: each needs the keys family, task, metric and value; missing {missing} (columns "
                          f"seen: {sorted(frame.columns)})")
    for column in COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame = frame[list(COLUMNS)].copy()
    for column in _NUMERIC:
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["split"] = frame["split"].fillna(split)
    frame["label"] = frame["label"].astype(object).where(frame["label"].notna(), None)
    frame["error"] = frame["error"].astype(object).where(frame["error"].notna() & (frame["error"] != ""), None)
    keys = [_label_key(task, label) for task, label in zip(frame["task"], frame["label"])]
    heads = {task: headline(task) for task in frame["task"].unique()}
    is_head = [heads[task] == (label, metric) and s == split
               for task, label, metric, s in zip(frame["task"], keys, frame["metric"], frame["split"])]
    frame["paper_value"] = [
        paper_value(paper, family, task) if head else math.nan
        for family, task, head in zip(frame["family"], frame["task"], is_head)
    ]
    frame["paper_value"] = pd.to_numeric(frame["paper_value"], errors="coerce")
    return frame


def _label_key(task: str, label) -> str:
    """A record's label column; None stands for the task's only label column."""
    if label is None or (isinstance(label, float) and math.isnan(label)):
        return get_task(task).labels[0].name
    return str(label)


def _pool(group: pd.DataFrame) -> float:
    """One seed's value for a cell scored by several runs (one per modality's rows): their mean weighted by the
    rows each scored, i.e. the score over the union of their rows for a mean over rows (accuracy, TM-score) where
    the rows are disjoint; for other metrics (macro F1, AUROC, Pearson per context) a weighted mean of the runs'
    values, not the metric over the union."""
    values = group["value"].to_numpy(dtype=float)
    weights = group["n"].to_numpy(dtype=float)
    if len(values) == 1:
        return float(values[0])
    if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        return float(values.mean())
    return float(np.average(values, weights=weights))


def summarize(records: Iterable[Mapping], *, split: str = "test") -> pd.DataFrame:
    """Mean and sd (n - 1) over seeds per family x task x label x metric on ``split``, on the natural scale.

    Columns: family, task, label (always the column name), metric, mean, sd, seeds (how many scored), runs (plan
    names pooled, weighted by their rows, where several runs scored one cell)."""
    frame = _frame(records, {}, split)
    frame = frame[(frame["split"] == split) & frame["error"].isna() & np.isfinite(frame["value"])].copy()
    out_columns = ["family", "task", "label", "metric", "mean", "sd", "seeds", "runs"]
    if frame.empty:
        return pd.DataFrame(columns=out_columns)
    frame["label"] = [_label_key(t, label) for t, label in zip(frame["task"], frame["label"])]
    frame["run"] = frame["run"].fillna("")
    cell = ["family", "task", "label", "metric"]
    per_seed = frame.groupby(cell + ["seed"], sort=False, dropna=False).apply(_pool, include_groups=False)
    per_seed = per_seed.rename("value").reset_index()
    runs = frame.groupby(cell, sort=False)["run"].agg(lambda r: tuple(sorted({x for x in r if x})))
    stats = per_seed.groupby(cell, sort=False)["value"].agg(mean="mean", sd=lambda v: v.std(ddof=1), seeds="count")
    stats = stats.join(runs.rename("runs")).reset_index()
    return stats[out_columns]


def _scale(metric: str, natural: Iterable[str] = NATURAL_SCALE_METRICS) -> float:
    return 1.0 if metric in natural else 100.0


def _fmt(mean: float, sd: float, metric: str, natural: Iterable[str] = NATURAL_SCALE_METRICS) -> str:
    scale = _scale(metric, natural)
    digits = 3 if metric in natural and metric not in NATURAL_SCALE_METRICS else 2  # a correlation as r: 0.724
    text = f"{mean * scale:.{digits}f}"
    return f"{text} ± {sd * scale:.{digits}f}" if np.isfinite(sd) else text


def _escape(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _short(error: str) -> str:
    text = _escape(error)
    return text if len(text) <= _ERROR_WIDTH else text[: _ERROR_WIDTH - 1] + "…"


def _order(seen: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """``preferred`` first (each followed by its ``+variant`` families), then the rest as first seen."""
    seen = list(dict.fromkeys(seen))
    ordered = []
    for name in preferred:
        ordered += [name] if name in seen else []
        ordered += [s for s in seen if s.split("+")[0] == name and s != name]
    return ordered + [s for s in seen if s not in ordered]


def _same_as_unimodal(family: str, task: str) -> bool:
    return family.split("+")[0] == "multimodal" and len(get_task(task).modalities) == 1


@dataclass(frozen=True)
class _Table:
    frame: pd.DataFrame
    stats: pd.DataFrame
    families: list[str]
    tasks: list[str]
    split: str
    notes: Mapping[tuple[str, str], str]
    natural: frozenset = NATURAL_SCALE_METRICS  # metrics shown on their own scale (the rest x 100)

    def converted(self, metric: str) -> bool:
        """Shown on its own scale where the paper prints it x 100 (a correlation in Table 2)."""
        return metric in self.natural and metric not in NATURAL_SCALE_METRICS

    def stat(self, family: str, task: str, label: str, metric: str):
        s = self.stats
        hit = s[(s["family"] == family) & (s["task"] == task) & (s["label"] == label) & (s["metric"] == metric)]
        return None if hit.empty else hit.iloc[0]

    def errors(self, family: str, task: str) -> pd.DataFrame:
        f = self.frame
        return f[(f["family"] == family) & (f["task"] == task) & f["error"].notna()]

    def seeds(self) -> list:
        return sorted({int(s) for s in self.frame["seed"].dropna()})


def _build(records, paper, split, families, tasks, columns, notes, natural=NATURAL_SCALE_METRICS) -> _Table:
    frame = _frame(records, paper, split)
    stats = summarize(records, split=split)
    notes = dict(notes or {})
    families = list(families) if families is not None else _order([*frame["family"], *(f for f, _ in notes)], paper)
    tasks = list(tasks) if tasks is not None else _order([*frame["task"], *(t for _, t in notes)], columns)
    return _Table(frame, stats, families, tasks, split, notes, frozenset(natural))


def _headline_cell(table: _Table, family: str, task: str, paper) -> str:
    label, metric = headline(task)
    reference = paper_value(paper, family, task)
    printed = " = r x 100" if table.converted(metric) else ""
    beside = f" [paper {reference:.2f}{printed}]" if reference is not None else ""
    stat = table.stat(family, task, label, metric)
    errors = table.errors(family, task)
    undefined = _undefined_seeds(table, family, task, label, metric)
    if stat is not None:
        text = _fmt(stat["mean"], stat["sd"], metric, table.natural)
        if len(stat["runs"]) > 1:
            text += "*"
        if undefined:  # the header names every seed: a seed left out is said
            text += f"; seed(s) {', '.join(undefined)} undefined (e.g. a constant prediction), left out"
        text += _uncovered_modalities(table, family, task, stat)
        failed = len(errors[["run", "seed"]].drop_duplicates())
        if failed:
            text += f"; {failed} run(s) failed: {_short(errors['error'].iloc[0])}"
        return text + beside
    if not errors.empty:
        return f"failed: {_short(errors['error'].iloc[0])}{beside}"
    if undefined:
        return f"undefined in seed(s) {', '.join(undefined)} (e.g. a constant prediction){beside}"
    if (family, task) in table.notes:
        return f"{_twin_not_run(table, family, task, _escape(table.notes[family, task]))}{beside}"
    if _same_as_unimodal(family, task):
        return f"{_twin_not_run(table, family, task, SAME_AS_UNIMODAL)}{beside}"
    other = _other_label_cell(table, family, task, label)
    if other:
        return f"{other}{beside}"
    return f"not run{beside}"


def _other_label_cell(table: _Table, family: str, task: str, label: str) -> str:
    """A cell whose runs scored none of the headline column's rows (a build without them: diabetic_retinopathy from
    fundus sources alone; an adapted base that predicts another column) but another label column: its first metric,
    named, rather than "not run"."""
    s = table.stats
    rows = s[(s["family"] == family) & (s["task"] == task) & (s["label"] != label)]
    for other, metric in _label_metrics(task):
        hit = rows[(rows["label"] == other) & (rows["metric"] == metric)]
        if not hit.empty and np.isfinite(float(hit["mean"].iloc[0])):
            value = _fmt(hit["mean"].iloc[0], hit["sd"].iloc[0], metric, table.natural)
            return f"no `{label}` row scored; `{other}` {metric} {value}"
    return ""


def _uncovered_modalities(table: _Table, family: str, task: str, stat) -> str:
    """A unimodal multitask cell scores only the modalities another selected task shares (one run each, named by
    its modality); the task's other modalities' rows, which the unimodal row's runs (``<task>-<modality>``) score,
    are in no run of it: said in the cell, as it covers fewer rows than the cell above it."""
    base, _, variant = family.partition("+")
    if base != "unimodal_multitask":
        return ""
    twin = table.stat("unimodal" + (f"+{variant}" if variant else ""), task, *headline(task))
    if twin is None:
        return ""
    covered = set(stat["runs"])
    others = sorted(r.removeprefix(f"{task}-") for r in twin["runs"] if r.removeprefix(f"{task}-") not in covered)
    if not others or not covered:
        return ""
    return (f"; on its {', '.join(sorted(covered))} rows only (no other selected task shares "
            f"{', '.join(others)}: those rows are scored in the unimodal row alone)")


def _undefined_seeds(table: _Table, family: str, task: str, label: str, metric: str) -> list[str]:
    """The seeds whose value of a cell is undefined (NaN: a correlation of a constant prediction, no row scored)
    in every run of theirs, with no error recorded: ``summarize`` leaves them out of the mean."""
    f = table.frame
    rows = f[(f["family"] == family) & (f["task"] == task) & (f["metric"] == metric) & (f["split"] == table.split)
             & f["error"].isna()]
    rows = rows.loc[np.array([_label_key(task, x) == label for x in rows["label"]], dtype=bool)]
    finite = np.isfinite(rows["value"].astype(float))
    seeds = set(rows.loc[~finite, "seed"].dropna()) - set(rows.loc[finite, "seed"].dropna())
    return [str(int(s)) for s in sorted(seeds)]


def _twin_not_run(table: _Table, family: str, task: str, text: str) -> str:
    """A cell that points at the unimodal row ("same as unimodal ..."), saying so where that row has no number."""
    if not text.startswith("same as unimodal"):
        return text
    variant = family.partition("+")[2]
    twin = "unimodal" + (f"+{variant}" if variant else "")
    if table.stat(twin, task, *headline(task)) is not None:
        return text
    return f"{text}; `{twin}` " + ("failed (see Failed runs)" if len(table.errors(twin, task)) else "was not run")


def _row_label(family: str, row_labels: Mapping[str, str]) -> str:
    base, _, variant = family.partition("+")
    printed = row_labels.get(base)
    if printed is None:
        return f"`{family}`"
    return f"{printed} + {variant} (`{family}`)" if variant else f"{printed} (`{family}`)"


def render_markdown(records: Iterable[Mapping], *, title: str = "Table 1", note: str | None = None,
                    paper: Mapping[str, Mapping[str, float]] = TABLE1, columns: Mapping[str, str] = TABLE1_COLUMNS,
                    row_labels: Mapping[str, str] = TABLE1_ROW_LABELS, families: Sequence[str] | None = None,
                    tasks: Sequence[str] | None = None, split: str = "test",
                    notes: Mapping[tuple[str, str], str] | None = None,
                    natural_scale: Iterable[str] | None = None) -> str:
    """The Markdown report: the headline table (ours beside the paper's), each task's other registry metrics, and
    every failed run with its error. ``notes`` maps (family, task) to what a cell with no run says instead
    (``families.unplanned``'s reasons); without one, a multimodal cell of a one-modality task says
    ``SAME_AS_UNIMODAL`` and any other empty cell "not run". ``note``: its first line is the banner on top (e.g.
    the smoke-run label), any further lines describe the data in a section at the end. ``natural_scale``: metrics
    shown on their own scale (default ``NATURAL_SCALE_METRICS``; Table 2 adds ``CORRELATION_METRICS``); every
    other metric is shown x 100, the paper's scale."""
    records = list(records)
    natural = frozenset(NATURAL_SCALE_METRICS if natural_scale is None else natural_scale)
    table = _build(records, paper, split, families, tasks, columns, notes, natural)
    seeds = table.seeds()
    lines = [f"# {title}: ours beside the paper's", ""]
    banner, *details = str(note).splitlines() if note else [""]
    if banner:
        lines += [f"> **{_escape(banner)}**" + (" (data and settings: see the end)" if details else ""), ""]
    lines += [
        f"Split `{split}`. Each cell: our mean ± sd over seeds {', '.join(map(str, seeds)) or '(none)'} (sd with "
        f"n - 1; a single seed shows no sd), then [the paper's number] ({PAPER}). " + _scale_note(table) + " The "
        "headline per task is the registry's first label column and first metric, named under each task.",
        "",
    ]
    header = ["family"] + [
        f"{task}<br>{'/'.join(filter(None, [headline(task)[0] if not _single_label(task) else '', headline(task)[1]]))}"
        + (f"<br>({columns[task]})" if task in columns else "")
        for task in table.tasks
    ]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for family in table.families:
        cells = [_headline_cell(table, family, task, paper) for task in table.tasks]
        lines.append("| " + " | ".join([_row_label(family, row_labels)] + cells) + " |")
    pooled = _pooled(table)
    lines += pooled
    lines += _other_metrics(table, pooled=bool(pooled))
    lines += _failures(table)
    if any(d.strip() for d in details):
        lines += ["", "## Data and settings", "", *(f"- {_escape(d)}" for d in details if d.strip())]
    return "\n".join(lines) + "\n"


def _scale_note(table: _Table) -> str:
    shown = {m for task in table.tasks for _, m in _label_metrics(task)}  # the metrics this table's tasks have
    converted = sorted(m for m in table.natural if m not in NATURAL_SCALE_METRICS and m in shown)
    if not converted:
        return ("Scale: the paper's, x 100 for every column (it prints accuracy, Pearson r and TM-score alike as "
                "percentages).")
    return (f"Scale: {', '.join(converted)} on {'its' if len(converted) == 1 else 'their'} own scale (a correlation "
            "r in [-1, 1]: ours is reported as r); "
            "the paper prints r x 100 as if it were a percentage, so its number beside ours reads \"= r x 100\"; "
            "every other column x 100, the paper's scale (accuracy, TM-score).")


def _pooled(table: _Table) -> list[str]:
    """The footnote of cells scored by several runs: each run's headline (mean over seeds) and rows."""
    lines = []
    for family in table.families:
        for task in table.tasks:
            label, metric = headline(task)
            stat = table.stat(family, task, label, metric)
            if stat is None or len(stat["runs"]) < 2:
                continue
            f = table.frame
            rows = f[(f["family"] == family) & (f["task"] == task) & (f["split"] == table.split) & f["error"].isna()
                     & (f["metric"] == metric) & np.isfinite(f["value"])
                     & np.array([_label_key(task, x) == label for x in f["label"]], dtype=bool)]
            parts = [f"{run} {_fmt(group['value'].mean(), np.nan, metric, table.natural)} "
                     f"(n={group['n'].mean():.0f})"
                     for run, group in rows.groupby("run", sort=True)]
            lines.append(f"- `{family}` x `{task}`: {'; '.join(parts)}")
    if lines:
        lines = ["", "\\* scored by several runs (one per modality): each seed's value is the runs' values weighted "
                 "by the test rows each scored. For a mean over rows (accuracy, TM-score) that is the score over "
                 "their rows where the runs' rows are disjoint, e.g. OCT or fundus, and an average where they "
                 "overlap, e.g. a VQA question's image and text; for any other metric (Pearson per context, macro "
                 "F1, AUROC, kappa; here and in the other metrics' tables) it is a weighted mean of the runs' "
                 "values, not the metric over the union of their rows. A run whose value is undefined (NaN) is left "
                 "out. Per run (mean over seeds):", *lines]
    return lines


def _other_metrics(table: _Table, pooled: bool = True) -> list[str]:
    """Each task's registry metrics other than its headline; ``pooled``: the headline table has a pooled-runs
    footnote (*) to point at, which explains how a cell of several runs pools them."""
    lines = []
    for task in table.tasks:
        others = [lm for lm in _label_metrics(task) if lm != headline(task)]
        if not others:
            continue
        single = _single_label(task)
        header = ["family"] + [
            (metric if single else f"{label} {metric}") + (" (natural scale)" if metric in table.natural else "")
            for label, metric in others
        ]
        rows = []
        for family in table.families:
            cells = []
            for label, metric in others:
                stat = table.stat(family, task, label, metric)
                undefined = _undefined_seeds(table, family, task, label, metric)  # said, as the headline cell does
                cell = _fmt(stat["mean"], stat["sd"], metric, table.natural) if stat is not None else "–"
                if undefined:
                    cell = (f"{cell}; seed(s) {', '.join(undefined)} undefined, left out" if stat is not None else
                            f"undefined in seed(s) {', '.join(undefined)}")
                cells.append(cell)
            if any(c != "–" for c in cells):
                rows.append("| " + " | ".join([f"`{family}`"] + cells) + " |")
        if rows:
            lines += ["", f"### {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), *rows]
    if lines:
        how = ("as the footnote \\* above says" if pooled else
               "weighted by the test rows each run scored, as a mean over rows would")
        lines = ["", "## Other registry metrics (mean ± sd over seeds; x 100 unless marked natural scale; a cell "
                 f"scored by several runs pools their values {how})"] + lines
    return lines


def _failures(table: _Table) -> list[str]:
    failed = table.frame[table.frame["error"].notna()]
    if failed.empty:
        return []
    lines = ["", "## Failed runs", "", "| family | run | seed | tasks | error |", "|---|---|---|---|---|"]
    keys = ["family", "run", "seed", "error"]
    for (family, run, seed, error), group in failed.fillna({"run": ""}).groupby(keys, sort=False, dropna=False):
        seed_text = "" if pd.isna(seed) else str(int(seed))
        lines.append(f"| `{family}` | {run} | {seed_text} | {', '.join(dict.fromkeys(group['task']))} | "
                     f"{_escape(error)} |")
    return lines


def _short_note(text: str) -> str:
    """"same as unimodal (one modality)" -> "= unimodal" for a bar that is not drawn."""
    words = text.split()
    return f"= {words[2]}" if len(words) > 2 and words[:2] == ["same", "as"] else text[:12]


def _figure(table: _Table, paper, path: Path, title: str, note: str | None) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as err:
        raise ImportError(f"writing {path.name} needs matplotlib: pip install 'multimed_hf[report]' (the CSV and "
                          "Markdown tables beside it are written)") from err
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    tasks, families = table.tasks, table.families
    fig = Figure(figsize=(max(6.0, 1.3 * len(tasks) + 2), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(families))
    x = np.arange(len(tasks))
    handles, lowest = [], 0.0
    for i, family in enumerate(families):
        color = f"C{i % 10}"
        handles.append(Patch(color=color, label=family))
        offsets = x - 0.4 + width * (i + 0.5)
        means, sds = [], []
        for task in tasks:
            label, metric = headline(task)
            stat = table.stat(family, task, label, metric)
            scale = _scale(metric)
            means.append(stat["mean"] * scale if stat is not None else np.nan)
            sds.append(stat["sd"] * scale if stat is not None else np.nan)  # NaN (one seed): no error bar
        means, sds = np.asarray(means, dtype=float), np.asarray(sds, dtype=float)
        drawn = np.isfinite(means)
        low = means - np.where(np.isfinite(sds), sds, 0.0)
        lowest = min([lowest, *low[drawn]])  # a correlation can be negative; its error bar reaches lower still
        if drawn.any():
            ax.bar(offsets[drawn], means[drawn], width, color=color)
            ax.errorbar(offsets[drawn], means[drawn], yerr=sds[drawn], fmt="none", ecolor="dimgrey", capsize=2)
        for offset, task, mean in zip(offsets, tasks, means):
            reference = paper_value(paper, family, task)
            if reference is not None:
                ax.plot(offset, reference, marker="_", markersize=max(4.0, 60 * width), color="black",
                        markeredgewidth=2, linestyle="none")
            if np.isfinite(mean):
                continue
            if not table.errors(family, task).empty:
                ax.text(offset, 0, "failed", ha="center", va="bottom", color="red", fontsize=6, rotation=90)
            elif (family, task) in table.notes or _same_as_unimodal(family, task):
                text = _short_note(table.notes.get((family, task), SAME_AS_UNIMODAL))
                ax.text(offset, 0, text, ha="center", va="bottom", color="grey", fontsize=6, rotation=90)
    handles.append(Line2D([], [], marker="_", color="black", markeredgewidth=2, linestyle="none", label="paper"))
    ax.set_ylim(bottom=min(0.0, lowest * 1.1))  # the labels of undrawn bars sit at 0: keep it inside the axes
    ax.set_xticks(x, tasks, rotation=30, ha="right")
    ax.set_ylabel("headline metric x 100 (paper's scale; Pearson r x 100)")
    ax.set_title(figure_title(title, note, fig.get_figwidth()), fontsize=10)
    fig.legend(handles=handles, fontsize=7, loc="outside right upper")
    fig.savefig(path, dpi=120)


def figure_title(title: str, note: str | None, width_inches: float) -> str:
    """The chart's title: ``title``, then the note's first line wrapped to the axes' width (about 11 characters an
    inch at 10 pt, less the label margin), so that no line runs past the figure's edges."""
    if not note or not str(note).strip():
        return title
    return "\n".join([title, *textwrap.wrap(str(note).strip().splitlines()[0], width=int(11 * (width_inches - 1.5)))])


def write_table(records: Iterable[Mapping], output_dir: str | Path, *, name: str = "table1", title: str = "Table 1",
                note: str | None = None, paper: Mapping[str, Mapping[str, float]] = TABLE1,
                columns: Mapping[str, str] = TABLE1_COLUMNS, row_labels: Mapping[str, str] = TABLE1_ROW_LABELS,
                families: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                split: str = "test", notes: Mapping[tuple[str, str], str] | None = None,
                natural_scale: Iterable[str] | None = None, extra_columns: Sequence[str] = (),
                integer_columns: Sequence[str] = ()) -> ReportPaths:
    """Write ``<name>.csv`` (long format, ``COLUMNS``, then ``extra_columns`` of the records where they hold them,
    those of ``integer_columns`` as whole numbers;
    ``value`` on the metric's natural scale, accuracy as a
    fraction; ``paper_value`` in percent as printed, on the headline rows of ``split``), ``<name>.md`` and
    ``<name>.png`` into ``output_dir``. ``records`` are metric records (``metrics_long.json`` entries plus
    ``family``, ``seed`` and ``run``; failed runs as ``failure_records``). ``families`` / ``tasks`` fix the rows and
    columns (default: those in the records, in the paper's order). Table 2 passes its own ``paper`` and labels,
    and ``natural_scale`` (see ``render_markdown``) to show Pearson r as r; the figure stays on the paper's scale
    (x 100 for every bar, beside the paper's marks), as its axis says."""
    records = list(records)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(output_dir / f"{name}.csv", output_dir / f"{name}.md", output_dir / f"{name}.png")
    frame = _frame(records, paper, split)
    for column in extra_columns:  # the frame keeps the records' order
        values = [r.get(column) for r in records]
        if column in integer_columns:  # whole numbers with empty cells: 2, not pandas' 2.0
            values = pd.array([None if v is None else int(v) for v in values], dtype="Int64")
        frame[column] = values
    frame.to_csv(paths.csv, index=False)
    paths.markdown.write_text(render_markdown(records, title=title, note=note, paper=paper, columns=columns,
                                              row_labels=row_labels, families=families, tasks=tasks, split=split,
                                              notes=notes, natural_scale=natural_scale),
                              encoding="utf-8")
    _figure(_build(records, paper, split, families, tasks, columns, notes), paper, paths.figure, title, note)
    return paths


def write_table1(records: Iterable[Mapping], output_dir: str | Path, *, note: str | None = None,
                 families: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
                 split: str = "test", notes: Mapping[tuple[str, str], str] | None = None) -> ReportPaths:
    """``table1.csv``, ``table1.md`` and ``table1.png`` in ``output_dir``, beside the paper's Table 1 (see
    ``write_table``)."""
    return write_table(records, output_dir, name="table1", title="Table 1", note=note, families=families,
                       tasks=tasks, split=split, notes=notes)


def read_records(path: str | Path) -> list[dict]:
    """The records of a long CSV written by ``write_table`` (to append to it, or to read Table 1's rows into
    Table 2), with empty cells as None and numbers as numbers."""
    frame = pd.read_csv(path, dtype={"label": object, "error": object, "run": object, "family": str, "task": str})
    frame = frame.astype(object).where(frame.notna(), None)
    return frame.to_dict(orient="records")
