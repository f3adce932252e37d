"""The metric registry: every metric a MultiMed task reports, as a plain ``(predictions, references, ...)`` function."""

from __future__ import annotations

import difflib
import inspect
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from multimed_hf.metrics._validation import as_float_array
from multimed_hf.metrics.classification import (
    accuracy,
    auroc_per_class,
    balanced_accuracy,
    cohen_kappa,
    macro_auroc,
    macro_f1,
    quadratic_kappa,
)
from multimed_hf.metrics.regression import PearsonAccumulator, correlations, mae, pearson, spearman
from multimed_hf.metrics.retrieval import recall_at_1, recall_at_5, recall_at_k, retrieval_recalls
from multimed_hf.metrics.vqa import exact_match, normalize_answer, token_f1, vqa_accuracy, vqa_scores
from multimed_hf.tasks import get_task

__all__ = [
    "METRICS",
    "PearsonAccumulator",
    "UnknownMetricError",
    "accuracy",
    "applicable_metrics",
    "auroc_per_class",
    "balanced_accuracy",
    "cohen_kappa",
    "compute_output_metrics",
    "compute_task_metrics",
    "correlations",
    "exact_match",
    "get_metric",
    "list_metrics",
    "macro_auroc",
    "macro_f1",
    "mae",
    "normalize_answer",
    "pearson",
    "quadratic_kappa",
    "recall_at_1",
    "recall_at_5",
    "recall_at_k",
    "retrieval_recalls",
    "spearman",
    "token_f1",
    "vqa_accuracy",
    "vqa_scores",
]


class UnknownMetricError(KeyError, ValueError):
    """A metric name that the registry does not hold."""

    def __str__(self):  # KeyError quotes its message; show it plainly
        return str(self.args[0])


_STRUCTURE_KEYS = ("tm_score", "rmsd", "gdt_ts")


def _structure_means(predictions, references, masks=None, *, backend="auto", device=None) -> dict[str, float]:
    from multimed_hf.metrics.structure import structure_scores  # numba, numpy or torch search: loaded when first used

    scores = structure_scores(predictions, references, masks, backend=backend, device=device)
    return {key: float(np.mean(scores[key])) for key in _STRUCTURE_KEYS}


def _structure_metric(key: str, what: str) -> Callable[..., float]:
    def metric(predictions, references, masks=None, *, backend="auto", device=None) -> float:
        return _structure_means(predictions, references, masks, backend=backend, device=device)[key]

    metric.__name__ = metric.__qualname__ = key
    metric.__doc__ = (
        f"Mean {what} over residue-matched structure pairs (see ``multimed_hf.metrics.structure.structure_scores``)."
    )
    return metric


#: Every metric name used by the task registry (plus balanced accuracy), mapped to its function.
METRICS: Mapping[str, Callable[..., float]] = MappingProxyType({
    "accuracy": accuracy,
    "balanced_accuracy": balanced_accuracy,
    "macro_f1": macro_f1,
    "macro_auroc": macro_auroc,
    "cohen_kappa": cohen_kappa,
    "quadratic_kappa": quadratic_kappa,
    "mae": mae,
    "pearson": pearson,
    "spearman": spearman,
    "tm_score": _structure_metric("tm_score", "TM-score"),
    "rmsd": _structure_metric("rmsd", "RMSD (Angstrom)"),
    "gdt_ts": _structure_metric("gdt_ts", "GDT-TS"),
    "vqa_accuracy": vqa_accuracy,
    "exact_match": exact_match,
    "token_f1": token_f1,
    "recall_at_1": recall_at_1,
    "recall_at_5": recall_at_5,
})


def list_metrics() -> list[str]:
    """Names of every registered metric."""
    return list(METRICS)


def get_metric(name: str) -> Callable[..., float]:
    """The metric function called ``name``; an unknown name raises, suggesting close matches."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(METRICS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownMetricError(f"unknown metric {name!r}{hint} (known metrics: {', '.join(METRICS)})") from None


def _options_of(fn: Callable) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.name not in ("predictions", "references")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def compute_task_metrics(
    task_name: str, predictions, references, *, label=None, metrics=None, **options
) -> dict[str, float]:
    """Every metric of task ``task_name`` (from the task registry), as ``{name: value}``.

    ``label`` picks the label column (default: the task's first); the label's own metric list (registry
    ``LabelSpec.metrics``) applies where it has one, else the task's, those the label's kind can score (as a run
    scores them: ``applicable_metrics``); a task without labels (contrastive pairs)
    takes similarity scores as ``predictions`` and its true candidates (or None) as ``references``. Class metrics on a regression label with a
    binned twin (bone age: months) score the bins. ``metrics`` limits or replaces that list. Each of ``options``
    (``ignore_index``, ``axis``, ``groups``, ``answer_types``, ``masks``, ...) goes to the metrics that accept it.
    """
    task = get_task(task_name)
    spec = task.label(label) if label is not None else task.labels[0] if task.labels else None
    # the label's registry metrics its kind can score, as a run's (bone_age_bin: accuracy, not the task's MAE)
    names = tuple(metrics if metrics is not None else applicable_metrics(task.name, spec.name) if spec else
                  task.metrics)
    fns = {name: get_metric(name) for name in names}
    accepted = {name: _options_of(fn) for name, fn in fns.items()}
    unused = sorted(set(options) - set().union(*accepted.values()))
    if unused:
        raise TypeError(
            f"options: {unused} are accepted by none of the metrics {list(names)} of task {task.name!r}; "
            f"they accept {sorted(set().union(*accepted.values()))}"
        )
    results: dict[str, float] = {}
    structure = None
    for name, fn in fns.items():
        kwargs = {key: value for key, value in options.items() if key in accepted[name]}
        if name in _STRUCTURE_KEYS:
            structure = structure or _structure_means(predictions, references, **kwargs)
            results[name] = structure[name]
        elif spec is not None:  # the label's kind turns the given values into the metric's input (bone age: bins)
            preds, refs = get_metric_kind(spec.kind).task_inputs(name, task, predictions, references, label=spec,
                                                                 **({"ignore_index": options["ignore_index"]}
                                                                    if "ignore_index" in options else {}))
            results[name] = fn(preds, refs, **kwargs)
        else:
            results[name] = fn(predictions, references, **kwargs)
    return results


# The column-level face (raw model outputs -> every metric that applies); imported last: it reads this registry.
from multimed_hf.metrics.output_metrics import (  # noqa: E402
    applicable_metrics,
    compute_output_metrics,
    get_metric_kind,
)
