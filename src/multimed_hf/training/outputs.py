"""What a run writes beside its model: predictions per task and split, long-format metrics with CIs, run info."""

from __future__ import annotations

import json
import math
import platform
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from multimed_hf.tasks import get_task

__all__ = [
    "PREDICTIONS_FOLDER",
    "METRICS_LONG",
    "RUN_INFO",
    "metric_records",
    "flat_metrics",
    "write_predictions",
    "predictions_score_names",
    "write_json",
    "run_info",
    "scored_count",
]

PREDICTIONS_FOLDER = "predictions"
METRICS_LONG = "metrics_long.json"
RUN_INFO = "run_info.json"
#: The predictions file's schema metadata key for what its ``<column>_scores`` lists score.
SCORES_METADATA_KEY = "multimed_hf"


def _label_column(task: str, column: str) -> str | None:
    """The ``label`` of a record: the column name, or ``None`` when the task has one label column."""
    return column if len(get_task(task).labels) > 1 else None


def scored_count(predictions, column: str, metric: str) -> int:
    """The rows one metric of a column was computed over: ``TaskPredictions.scored_rows`` (those with a label, and a
    free-text label's rows whose text the vocabulary lacks, which count as wrong), and of those, for the VQA
    metrics, the questions of the answer type each scores (closed accuracy; open exact match and token F1), and for
    a multilabel column's accuracy (top-1 among the known names) the rows with a known positive."""
    from multimed_hf.metrics.vqa import SCORED_ANSWER_TYPE
    from multimed_hf.training.predictions import PER_ROW_METRIC_COLUMNS

    rows = predictions.scored_rows(column)
    if metric == "accuracy" and predictions.is_multilabel(column):
        references = np.asarray(predictions.references[column])
        rows = rows & (references.reshape(len(references), -1) == 1).any(axis=1)
    wanted = SCORED_ANSWER_TYPE.get(metric)
    types = predictions.metadata.get(PER_ROW_METRIC_COLUMNS["answer_types"])
    if wanted is not None and types is not None:
        rows = rows & np.array([str(t).strip().lower() == wanted for t in types], dtype=bool)
    return int(rows.sum())


def _float(value) -> float | None:
    value = float(value)
    return None if math.isnan(value) else value


def metric_records(predictions, split: str, *, bootstrap_samples: int = 1000, seed: int = 0,
                   alpha: float = 0.05) -> list[dict]:
    """Long-format records ``{task, split, label, metric, value, n, ci_low, ci_high}`` of one task's predictions
    (``TaskPredictions``); the CI is a percentile bootstrap over the split's rows (``bootstrap_samples`` = 0: none)."""
    metrics = predictions.metrics()
    intervals = predictions.bootstrap(n=bootstrap_samples, seed=seed, alpha=alpha) if bootstrap_samples else {}
    records = []
    for column, values in metrics.items():
        for name, value in values.items():
            low, high = intervals.get(column, {}).get(name, (float("nan"), float("nan")))
            records.append({"task": predictions.task, "split": split, "label": _label_column(predictions.task, column),
                            "metric": name, "value": _float(value), "n": scored_count(predictions, column, name),
                            "ci_low": _float(low), "ci_high": _float(high)})
    return records


def flat_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """``all_results.json``-style keys: ``<split>_<task>_<metric>`` (``<split>_<task>_<label>_<metric>`` where the
    task has several label columns)."""
    out = {}
    for r in records:
        parts = [r["split"], r["task"], *([r["label"]] if r.get("label") else []), r["metric"]]
        out["_".join(parts)] = r["value"]
    return out


def _names_of(feature) -> Any:
    """A ClassLabel's int2str for a feature (or a list of ClassLabel), else ``None``."""
    inner = getattr(feature, "feature", None)
    target = inner if inner is not None and hasattr(inner, "int2str") else feature
    return target.int2str if hasattr(target, "int2str") else None


def _reference_column(dataset, column: str, order: Sequence[int]) -> list:
    """A label column of the raw rows, in ``order``, with class indices as names; ``None`` where absent."""
    from multimed_hf.training.loading import column_values

    values = column_values(dataset, [column])[column]
    names = _names_of(dataset.features[column]) if getattr(dataset, "features", None) else None
    out = []
    for i in order:
        value = values[i]
        if value is None or (isinstance(value, int) and value < 0):
            out.append(None)
        elif names is not None:
            out.append([names(v) for v in value] if isinstance(value, list) else names(value))
        else:
            out.append(value)
    return out


def _cut_coords(predicted: list, reference: Any) -> Any:
    if reference is None or predicted is None:
        return predicted
    return predicted[: len(reference)]


def write_predictions(predictions, dataset, path: str | Path) -> Path:
    """``predictions/<task>-<split>.parquet``: ``sample_id``, each label column (the row's own value, class names
    for classes) and ``<column>_prediction`` beside it in the same representation (multilabel: the names above 0.5
    and ``<column>_top1_prediction``, both among the row's known names; regression: label units; coordinates: L x 3
    lists cut to the chain, NaN for residues past the residue encoder's input: ``whole_chains``). A prediction is
    None where the row's label is absent (no grade for an OCT scan; no known name). A class or multilabel column
    also gets ``<column>_scores``: the row's probability of each name (softmax / sigmoid; NaN for a multilabel name
    the row's source does not define, which the metrics leave out too), in the order the file's metadata lists
    under ``multimed_hf`` -> ``score_names`` (``predictions_score_names``). The columns the metrics read per row
    (``PER_ROW_METRIC_COLUMNS``: med_vqa's ``answer_type``, expression prediction's ``context``) come after
    ``sample_id``, so the file alone gives the run's numbers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from multimed_hf.training.loading import column_values
    from multimed_hf.training.predictions import PER_ROW_METRIC_COLUMNS

    ids = column_values(dataset, ["sample_id"])["sample_id"]
    where = {sid: i for i, sid in enumerate(ids)}
    missing = [s for s in predictions.sample_ids if s not in where]
    if missing:
        raise ValueError(f"predictions of task {predictions.task!r} name sample ids {missing[:5]} that the dataset "
                         f"does not hold")
    order = [where[s] for s in predictions.sample_ids]
    decoded = predictions.decoded()
    scores = predictions.scores()
    score_names = {}
    table: dict[str, list] = {"sample_id": list(predictions.sample_ids)}
    for source in PER_ROW_METRIC_COLUMNS.values():  # what the metrics read per row (med_vqa's answer types, ...)
        if source in predictions.metadata and source not in table:
            table[source] = list(predictions.metadata[source])
    for label in get_task(predictions.task).labels:
        if label.name not in decoded:
            continue
        refs = _reference_column(dataset, label.name, order)
        preds = list(decoded[label.name])
        top1 = decoded.get(f"{label.name}_top1")
        if label.kind == "coords":
            preds = [_cut_coords(p, r) for p, r in zip(preds, refs)]
        elif label.kind == "multilabel":  # the names the row's source defines (its known names), none where none
            known = _known_names(predictions, label.name)
            preds = [None if not k else [n for n in p if n in k] for p, k in zip(preds, known)]
            top1 = None if top1 is None else [t if k else None for t, k in zip(top1, known)]
        else:  # no grade for a row whose label is absent by design (a fundus grade for an OCT scan)
            preds = [None if r is None else p for p, r in zip(preds, refs)]
        table[label.name] = refs
        table[f"{label.name}_prediction"] = preds
        if top1 is not None:
            table[f"{label.name}_top1_prediction"] = list(top1)
        if label.name in scores:
            row_scores = scores[label.name]
            if label.kind == "multilabel":  # NaN for the names a row's source does not define, as the metrics read
                row_scores = np.where(_known_mask(predictions, label.name), row_scores, np.nan)
            table[f"{label.name}_scores"] = [None if p is None else s.tolist() for p, s in zip(preds, row_scores)]
            score_names[f"{label.name}_scores"] = _head_names(predictions, label.name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = pa.Table.from_pydict({k: _arrow_column(k, v) for k, v in table.items()})
    metadata = {SCORES_METADATA_KEY: json.dumps({"score_names": score_names})}
    pq.write_table(columns.replace_schema_metadata({**(columns.schema.metadata or {}), **metadata}), path)
    return path


def predictions_score_names(path: str | Path) -> dict[str, list[str]]:
    """``<column>_scores`` -> the names its entries score, in order, as a predictions file records them."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(SCORES_METADATA_KEY.encode())
    return json.loads(raw)["score_names"] if raw else {}


def _arrow_column(name: str, values: list):
    """A predictions column as Arrow infers it; a scores column as float32 lists."""
    import pyarrow as pa

    return pa.array(values, type=pa.list_(pa.float32())) if name.endswith("_scores") else pa.array(values)


def _head_names(predictions, column: str) -> list[str]:
    return [str(n) for n in next(o["names"] for o in predictions.head_spec["outputs"] if o["name"] == column)]


def _known_mask(predictions, column: str) -> np.ndarray:
    """``[N, K]``: which names of a multilabel column each row's reference holds (0 or 1, not unknown)."""
    references = np.asarray(predictions.references[column], dtype=float)
    return ~np.isnan(references) & (references != -100)  # -100: the absent label (IGNORE_INDEX)


def _known_names(predictions, column: str) -> list[set]:
    """Per row, the names of a multilabel column whose value its reference holds (0 or 1, not unknown)."""
    names = _head_names(predictions, column)
    return [{names[k] for k in np.flatnonzero(row)} for row in _known_mask(predictions, column)]


def write_json(path: str | Path, content: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, sort_keys=True, default=str) + "\n")
    return path


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parents[3]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_info(**fields) -> dict:
    """``run_info.json``'s content: the given fields plus package, library and platform versions and the git
    commit of the package's checkout where there is one."""
    import datasets
    import torch
    import transformers

    from multimed_hf import __version__

    return {**fields, "multimed_hf_version": __version__, "git_commit": _git_commit(),
            "versions": {"transformers": transformers.__version__, "datasets": datasets.__version__,
                         "torch": torch.__version__, "python": platform.python_version()}}
