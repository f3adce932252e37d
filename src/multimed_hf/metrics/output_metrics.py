"""Metrics of one label column from a model's raw outputs: one entry per kind of label column (which metrics apply
and how the outputs become each metric's input)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from multimed_hf.kind_table import KindTable
from multimed_hf.metrics._validation import as_float_array, to_numpy
from multimed_hf.tasks import LabelSpec, TaskSpec, get_task

__all__ = [
    "MetricKind",
    "METRIC_KINDS",
    "register_metric_kind",
    "unregister_metric_kind",
    "get_metric_kind",
    "compute_output_metrics",
    "scored_reference_rows",
    "applicable_metrics",
    "IGNORE_INDEX",
]

#: An absent class reference, as the processor encodes it.
IGNORE_INDEX = -100
#: Options that hold one value per row: they are cut to the rows that have a reference, like the arrays.
PER_ROW_OPTIONS = ("groups", "answer_types", "residues", "reference_texts")
#: Metrics scored on class labels (the argmax of the outputs).
LABEL_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "cohen_kappa", "quadratic_kappa")
#: Metrics that weigh disagreements by grade distance: they take every class index as ``labels``.
KAPPA_METRICS = ("cohen_kappa", "quadratic_kappa")
#: Metrics scored on class scores (softmax / sigmoid of the outputs).
SCORE_METRICS = ("macro_auroc",)
#: Metrics scored on strings (a free-text label's vocabulary entries).
STRING_METRICS = ("vqa_accuracy", "exact_match", "token_f1")
#: Metrics scored on numbers in the label's units.
VALUE_METRICS = ("mae", "pearson", "spearman")
#: Metrics scored on C-alpha coordinates.
STRUCTURE_METRICS = ("tm_score", "rmsd", "gdt_ts")
#: Metrics scored on a similarity matrix (contrastive pairs: no label column, so no kind scores them here).
RETRIEVAL_METRICS = ("recall_at_1", "recall_at_5")


@dataclass
class Column:
    """One label column's rows that have a reference: what a ``MetricKind`` turns into metric inputs."""

    task: TaskSpec
    label: LabelSpec
    outputs: np.ndarray
    references: np.ndarray
    mask: np.ndarray | None
    options: dict = field(default_factory=dict)  # per-row options already cut to these rows


class MetricKind:
    """How a kind of label column is scored. Subclasses set ``name`` (the registry's ``LabelSpec.kind``) and
    ``inputs``: metric name -> the name of a method ``(column, metric) -> (predictions, references, extra keyword
    arguments)``, or ``None`` where the metric is undefined on the column's rows (it is then NaN).

    ``check`` validates the arrays (raising ``ValueError`` that names the column); ``present`` gives the rows that
    have a reference; a metric whose input is undefined on those rows (one class only, no row) gives NaN.
    """

    name: str = ""
    inputs: Mapping[str, str] = {}
    #: kind-level options (read by the kind, not passed to the metric functions)
    options: tuple[str, ...] = ()

    def applies(self, metric: str, task: TaskSpec, label: LabelSpec) -> bool:
        return metric in self.inputs

    def check(self, where: str, outputs: np.ndarray, references: np.ndarray, mask: np.ndarray | None) -> None:
        if len(outputs) != len(references):
            raise ValueError(f"{where}: outputs have {len(outputs)} rows, references {len(references)}; expected one "
                             f"reference per row")

    def present(self, references: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def metric_input(self, metric: str, column: Column):
        return getattr(self, self.inputs[metric])(column, metric)

    def task_inputs(self, metric: str, task: TaskSpec, predictions, references, label=None,
                    ignore_index: int = IGNORE_INDEX):
        """``compute_task_metrics``' inputs (already in metric form) as ``metric`` takes them for this kind
        (``label``: the registry's ``LabelSpec`` scored; ``ignore_index``: the value of a row without label)."""
        return predictions, references


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a +inf logit (a half-precision overflow) takes the row's probability (shared
    among a row's +inf logits), as its limit does, rather than NaN (inf - inf)."""
    top = np.finfo(np.float64).max
    finite = np.where(np.isposinf(logits), top, logits)
    z = np.where(finite == top, 0.0, finite - finite.max(axis=-1, keepdims=True))
    z = np.where((finite == top).any(axis=-1, keepdims=True) & (finite != top), -np.inf, z)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _ranking_scores(logits: np.ndarray) -> np.ndarray:
    """Multilabel logits as the order-only metrics (top-1, AUROC) take them: as they are (a sigmoid is monotone,
    but it rounds logits past ~37 to 1.0 and ties them), infinities as the largest finite values."""
    return np.nan_to_num(logits, nan=np.nan, posinf=np.finfo(np.float64).max, neginf=-np.finfo(np.float64).max)


def _float(name: str, value) -> np.ndarray:
    array = to_numpy(value, name)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(f"{name}: expected numbers, got an array of dtype {array.dtype}")
    return array.astype(np.float64)


class ClassMetrics(MetricKind):
    """Single-label classes: outputs are logits ``[N, K]``, references class indices ``[N]`` (-100 absent)."""

    name = "class"
    inputs = {**{m: "labels" for m in LABEL_METRICS}, **{m: "scores" for m in SCORE_METRICS}}

    def check(self, where, outputs, references, mask):
        super().check(where, outputs, references, mask)
        if outputs.ndim != 2 or references.ndim != 1:
            raise ValueError(f"{where}: expected logits [N, K] and class indices [N]; got outputs of shape "
                             f"{list(outputs.shape)} and references of shape {list(references.shape)}")
        refs = references[np.isfinite(references) & (references != IGNORE_INDEX)]
        bad = refs[(refs < 0) | (refs >= outputs.shape[1]) | (refs != np.round(refs))]
        if bad.size:
            raise ValueError(f"{where}: references hold {bad[:5].tolist()}; expected class indices in "
                             f"[0, {outputs.shape[1]}) or {IGNORE_INDEX} (absent)")
        scored = outputs[self.present(references, mask)]
        unreadable = np.isnan(scored).any(-1) | ~np.isfinite(scored).any(-1)  # argmax would read class 0
        if unreadable.any():
            raise ValueError(f"{where}: {int(unreadable.sum())} of {len(scored)} scored row(s) have NaN logits (or "
                             f"none finite): no class can be read from them (a diverged or damaged model?)")

    def present(self, references, mask):
        return np.isfinite(references) & (references != IGNORE_INDEX)

    def labels(self, column, metric):
        # weighted kappa reads grade distances over every class, also those no row predicts or has
        extra = {"labels": np.arange(column.outputs.shape[1])} if metric in KAPPA_METRICS else {}
        return column.outputs.argmax(-1), column.references.astype(np.int64), extra

    def scores(self, column, metric):
        if len(np.unique(column.references)) < 2:
            return None  # AUROC needs both a positive and a negative for some class
        return _softmax(column.outputs), column.references.astype(np.int64), {}

    def task_inputs(self, metric, task, predictions, references, label=None, ignore_index=IGNORE_INDEX):
        """Class indices as a built split stores them: datasets' "no label" -1 is absent (``ignore_index``), as the
        processor reads it; an index outside the label's classes is refused, naming it (both were scored as a
        class, the processor refusing the one and leaving out the other)."""
        if metric not in LABEL_METRICS or not label or not label.names or self.name != "class":
            return predictions, references

        def checked(values, what):
            if isinstance(values, str) or not hasattr(values, "__len__"):
                return values
            out = []
            for v in values:
                number = isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                if number and v == -1 and what == "references":
                    v = ignore_index
                elif number and v != ignore_index and not 0 <= v < len(label.names):
                    raise ValueError(f"{what}: class index {int(v)} of label {label.name!r} is outside [0, "
                                     f"{len(label.names)}) (its classes: {list(label.names)}); -1 or {ignore_index} "
                                     f"is a row without label")
                out.append(v)
            return out

        return checked(predictions, "predictions"), checked(references, "references")


class TextMetrics(ClassMetrics):
    """A free-text label classified over a vocabulary (cell types, VQA answers): class metrics on the indices, and
    string metrics (VQA) on the vocabulary entries, for which ``names`` (the vocabulary, index order) is needed.

    ``reference_texts`` (each row's own label text) also scores the rows whose label the vocabulary lacks (a cell
    type or answer the training split never had; the processor encodes them as absent): the model cannot name
    them, so they count as wrong (each such text its own class past the vocabulary's for the class metrics; AUROC
    leaves them out, having no score for them) and the string metrics compare with the row's own text."""

    name = "text"
    inputs = {**ClassMetrics.inputs, **{m: "strings" for m in STRING_METRICS}}
    options = ("names", "reference_texts")
    #: the answer type each string metric scores where ``answer_types`` is given
    answer_type = {"vqa_accuracy": "closed", "exact_match": "open", "token_f1": "open"}

    @staticmethod
    def unseen(references: np.ndarray, texts) -> np.ndarray:
        """Rows with a label text that the vocabulary lacks (encoded absent, yet not blank)."""
        texts = list(texts)
        if len(texts) != len(references):
            raise ValueError(f"reference_texts has {len(texts)} entries for {len(references)} rows")
        return (references == IGNORE_INDEX) & np.array([t is not None and bool(str(t).strip()) for t in texts],
                                                        dtype=bool)

    @staticmethod
    def past_vocabulary(references: np.ndarray, texts, unseen: np.ndarray, classes: int) -> np.ndarray:
        """``references`` with each unseen row's text as a class index of its own past the vocabulary's ``classes``
        (one index per distinct text)."""
        out = references.copy()
        own: dict[str, int] = {}
        for i in np.flatnonzero(unseen):
            out[i] = classes + own.setdefault(str(texts[i]).strip(), len(own))
        return out

    def scores(self, column, metric):
        known = column.references < column.outputs.shape[1]
        if known.all():
            return super().scores(column, metric)
        return super().scores(Column(column.task, column.label, column.outputs[known], column.references[known],
                                     None, column.options), metric)

    def strings(self, column, metric):
        names = column.options.get("names")
        if names is None:
            raise TypeError(f"task {column.task.name!r}, column {column.label.name!r}: string metrics "
                            f"{list(STRING_METRICS)} need names= (the vocabulary, in index order, e.g. the head "
                            f"spec's output 'names')")
        names = [str(n) for n in names]
        if len(names) != column.outputs.shape[1]:
            raise ValueError(f"task {column.task.name!r}, column {column.label.name!r}: names has {len(names)} "
                             f"entries, the outputs score {column.outputs.shape[1]} classes")
        types = column.options.get("answer_types")
        if types is not None and not any(str(t).strip().lower() == self.answer_type[metric] for t in types):
            return None  # no question of the type this metric scores
        preds = [names[i] for i in column.outputs.argmax(-1)]
        texts = column.options.get("reference_texts")
        refs = [str(texts[j]).strip() if int(i) >= len(names) else names[int(i)]
                for j, i in enumerate(column.references)]
        return preds, refs, {}


class MultilabelMetrics(MetricKind):
    """Several names per row: outputs are logits ``[N, K]``, references 1 / 0 / NaN (unknown) ``[N, K]``; ``mask``
    (optional, ``[N, K]``) marks the known names too. Accuracy is top-1 among the row's known names (TASKS.md)."""

    name = "multilabel"
    inputs = {"accuracy": "top1", "macro_auroc": "scores"}

    def check(self, where, outputs, references, mask):
        super().check(where, outputs, references, mask)
        if outputs.ndim != 2 or outputs.shape != references.shape:
            raise ValueError(f"{where}: expected logits and references of one shape [N, K]; got "
                             f"{list(outputs.shape)} and {list(references.shape)}")
        if mask is not None and mask.shape != references.shape:
            raise ValueError(f"{where}: mask has shape {list(mask.shape)}; expected the references' "
                             f"{list(references.shape)}")
        known = references[np.isfinite(references)]
        if not np.isin(known, (0.0, 1.0)).all():
            raise ValueError(f"{where}: references hold {np.unique(known[~np.isin(known, (0.0, 1.0))])[:5]}; "
                             f"expected 1 (present), 0 (absent) or NaN (unknown)")

    @staticmethod
    def known(references, mask):
        known = np.isfinite(references)
        return known if mask is None else known & mask.astype(bool)

    def present(self, references, mask):
        return self.known(references, mask).any(axis=1)

    def _refs(self, column):
        return np.where(self.known(column.references, column.mask), column.references, np.nan)

    def top1(self, column, metric):
        refs = self._refs(column)
        if not (np.nansum(refs, axis=1) > 0).any():
            return None  # no row has a known positive name
        return _ranking_scores(column.outputs), refs, {}

    def scores(self, column, metric):
        refs = self._refs(column)
        if not any(np.unique(c[np.isfinite(c)]).size == 2 for c in refs.T):
            return None  # no name has both a known positive and a known negative
        return _ranking_scores(column.outputs), refs, {}


class RegressionMetrics(MetricKind):
    """Numbers in the label's units: outputs and references ``[N]`` (NaN absent). Class metrics apply where the
    task has a binned label (bone age): both sides are binned at the registry's edges."""

    name = "regression"
    inputs = {**{m: "values" for m in VALUE_METRICS}, **{m: "bins" for m in LABEL_METRICS}}

    def applies(self, metric, task, label):
        if metric in LABEL_METRICS:
            return _binned_label(task) is not None
        return metric in self.inputs

    def check(self, where, outputs, references, mask):
        super().check(where, outputs, references, mask)
        if outputs.ndim != 1 or references.ndim != 1:
            raise ValueError(f"{where}: expected values [N] and references [N]; got shapes {list(outputs.shape)} "
                             f"and {list(references.shape)}")

    def present(self, references, mask):
        return np.isfinite(references)

    def values(self, column, metric):
        return column.outputs, column.references, {}

    def bins(self, column, metric):
        binned = _binned_label(column.task)
        preds, refs = _bin(binned, column.outputs), _bin(binned, column.references)
        return preds, refs, {"labels": np.arange(len(binned.names))} if metric in KAPPA_METRICS else {}

    def task_inputs(self, metric, task, predictions, references, label=None, ignore_index=IGNORE_INDEX):
        """Class metrics on a regression label with a binned twin (bone age: months) score the bins."""
        if metric not in LABEL_METRICS:
            return predictions, references
        binned = _binned_label(task)
        if binned is None:
            raise ValueError(
                f"label: task {task.name!r} has no binned label, so a class metric cannot score its regression "
                "values; pass label= a class label or metrics= regression metrics"
            )
        return (_bin(binned, as_float_array("predictions", predictions)),
                _bin(binned, as_float_array("references", references)))


class CoordsMetrics(MetricKind):
    """C-alpha coordinates: outputs and references ``[N, L, 3]`` in Angstrom, ``mask`` ``[N, L]`` the residues
    scored. A row's residues are ``residues[i]`` (``[L]`` bool: the reference structure's residues, which the
    TM-score's L counts; those of them masked score 0) where given, else every position up to its last scored one
    (padding beyond a chain's end must not count in L); rows with fewer than 3 scored residues are left out."""

    name = "coords"
    inputs = {m: "structures" for m in STRUCTURE_METRICS}
    options = ("residues",)

    def check(self, where, outputs, references, mask):
        super().check(where, outputs, references, mask)
        if outputs.ndim != 3 or outputs.shape[-1] != 3 or outputs.shape != references.shape:
            raise ValueError(f"{where}: expected coordinates [N, L, 3] on both sides; got {list(outputs.shape)} and "
                             f"{list(references.shape)}")
        if mask is not None and mask.shape != references.shape[:2]:
            raise ValueError(f"{where}: mask has shape {list(mask.shape)}; expected {list(references.shape[:2])}")

    @staticmethod
    def observed(references, mask):
        finite = np.isfinite(references).all(-1)
        return finite if mask is None else finite & mask.astype(bool)

    def present(self, references, mask):
        return self.observed(references, mask).sum(axis=1) >= 3

    def structures(self, column, metric):
        observed = self.observed(column.references, column.mask)
        residues = column.options.get("residues")
        preds, refs, masks = [], [], []
        for i in range(len(observed)):
            if residues is not None:
                keep = np.asarray(residues[i], dtype=bool)
            else:
                keep = np.arange(observed.shape[1]) <= np.flatnonzero(observed[i])[-1]
            preds.append(column.outputs[i][keep])
            refs.append(np.where(observed[i][keep][:, None], column.references[i][keep], 0.0))
            masks.append(observed[i][keep])
        return preds, refs, {"masks": masks}


def _bin(binned: LabelSpec, values: np.ndarray) -> np.ndarray:
    """Bin indices of ``values`` at the registry's edges (``[e0, e1)`` -> 0, ...; the last bin open-ended). A predicted
    value below the first edge (bone age under 0 months) counts in the first bin, as one above the last edge counts in
    the last: the prediction clipped to the label's range."""
    return np.searchsorted(np.asarray(binned.bins[1:], dtype=float), values, side="right")


def _binned_label(task: TaskSpec) -> LabelSpec | None:
    return next((label for label in task.labels if label.bins), None)


_KINDS: KindTable[MetricKind] = KindTable(MetricKind, "metric kind", "register_metric_kind",
                                          "label kind {name!r} has no metric kind; known: {known}")
#: Registry label kind -> how its columns are scored (read-only view; ``register_metric_kind`` adds one).
METRIC_KINDS: Mapping[str, MetricKind] = _KINDS.view


def register_metric_kind(kind: MetricKind, *, replace: bool = False) -> MetricKind:
    """Add ``kind`` (a ``MetricKind`` instance) to the table; a name already taken raises unless ``replace``."""
    return _KINDS.register(kind, replace=replace)


def unregister_metric_kind(name: str) -> MetricKind:
    """Remove and return the kind ``name`` (for tests and plug-ins that add a kind for a while)."""
    return _KINDS.unregister(name)


def get_metric_kind(name: str) -> MetricKind:
    """The metric kind of registry label kind ``name``; an unknown one raises ``ValueError``."""
    return _KINDS.get(name)


for _kind in (ClassMetrics(), TextMetrics(), MultilabelMetrics(), RegressionMetrics(), CoordsMetrics()):
    register_metric_kind(_kind)


def applicable_metrics(task: str, column: str) -> tuple[str, ...]:
    """The registry metrics of ``task`` that apply to label ``column`` (``LabelSpec.metrics``, else the task's,
    kept where the column's kind can score them)."""
    spec = get_task(task)
    label = spec.label(column)
    kind = get_metric_kind(label.kind)
    return tuple(m for m in (label.metrics or spec.metrics) if kind.applies(m, spec, label))


def scored_reference_rows(task: str, column: str, references, *, mask=None, reference_texts=None) -> np.ndarray:
    """Bool per row: the rows ``compute_output_metrics`` scores for one label column (its references and mask as
    there): those with a reference (coordinates: at least 3 observed residues), and for a free-text label with
    ``reference_texts`` also those whose text the vocabulary lacks (they count as wrong)."""
    kind = get_metric_kind(get_task(task).label(column).kind)
    references = _float("references", references)
    mask = None if mask is None else to_numpy(mask, "mask")
    rows = kind.present(references, mask)
    if reference_texts is not None and isinstance(kind, TextMetrics):
        rows = rows | kind.unseen(references, reference_texts)
    return rows


def compute_output_metrics(task: str, column: str, outputs, references, *, mask=None,
                           **options) -> dict[str, float]:
    """Every registry metric that applies to one label column, from the model's raw outputs for that column.

    Args:
        task, column: a registered task and one of its label columns.
        outputs: the model's outputs for the column in label units (``MultiMedOutput.logits``): class / free-text
            vocabulary / multilabel logits ``[N, K]``, regression values ``[N]``, coordinates ``[N, L, 3]``.
        references: encoded as the processor encodes labels: class indices ``[N]`` (-100 absent), multilabel
            ``[N, K]`` of 1 / 0 / NaN (unknown), regression ``[N]`` (NaN absent), coordinates ``[N, L, 3]``.
        mask: coordinates: ``[N, L]`` observed residues; multilabel: ``[N, K]`` known names (optional).
        options: ``names`` (a free-text label's vocabulary in index order: needed for the VQA string metrics),
            ``reference_texts`` (a free-text label: each row's own text, so that rows whose text the vocabulary
            lacks count as wrong rather than absent: ``TextMetrics``), ``residues`` (coords: ``[N, L]`` bool, each row's
            reference residues, counted in the TM-score's L), and
            any option a metric function accepts (``groups``, ``answer_types``, ``axis``, ``backend``, ...).
            ``groups``, ``answer_types``, ``reference_texts`` and ``residues`` hold one value per row.

    Rows without a reference are left out. A metric that is undefined on the rows left (no row, one class only
    for AUROC) is NaN. Returns plain floats on the natural scale (accuracy as a fraction).
    """
    from multimed_hf.metrics import _options_of, get_metric

    spec = get_task(task)
    label = spec.label(column)
    kind = get_metric_kind(label.kind)
    where = f"task {task!r}, column {column!r}"
    outputs = _float("outputs", outputs)
    references = _float("references", references)
    mask = None if mask is None else to_numpy(mask, "mask")
    kind.check(where, outputs, references, mask)
    names = applicable_metrics(task, column)
    fns = {name: get_metric(name) for name in names}
    accepted = {name: _options_of(fn) for name, fn in fns.items()}
    known_options = set(kind.options).union(*accepted.values())
    unused = sorted(set(options) - known_options)
    if unused:
        raise TypeError(f"{where}: options {unused} are read by none of the metrics {list(names)}; they read "
                        f"{sorted(known_options)}")
    texts = options.get("reference_texts")
    rows = scored_reference_rows(task, column, references, mask=mask, reference_texts=texts)
    if texts is not None and isinstance(kind, TextMetrics):  # rows whose text the vocabulary lacks count too
        references = kind.past_vocabulary(references, texts, kind.unseen(references, texts), outputs.shape[1])
    per_row = {}
    for key in PER_ROW_OPTIONS:
        if key in options and options[key] is not None:
            value = np.asarray(options[key])
            if len(value) != len(references):
                raise ValueError(f"{where}: {key} has {len(value)} entries for {len(references)} rows")
            per_row[key] = value[rows]
    if not rows.any():
        return {name: float("nan") for name in names}
    col = Column(spec, label, outputs[rows], references[rows], None if mask is None else mask[rows],
                 {**{k: v for k, v in options.items() if k in kind.options}, **per_row})
    results: dict[str, float] = {}
    shared: dict[tuple, dict] = {}
    for name, fn in fns.items():
        prepared = kind.metric_input(name, col)
        if prepared is None:
            results[name] = float("nan")
            continue
        predictions, refs, extra = prepared
        kwargs = {k: v for k, v in {**options, **per_row}.items() if k in accepted[name] and k not in kind.options}
        kwargs.update({k: v for k, v in extra.items() if k in accepted[name]})
        if name in STRUCTURE_METRICS:  # one structure search gives all three
            results[name] = _structure(shared, predictions, refs, extra, kwargs)[name]
            continue
        results[name] = _call(fn, predictions, refs, kwargs)
    return results


def _call(fn: Callable, predictions, references, kwargs) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an undefined correlation is NaN, said by the value
        return float(fn(predictions, references, **kwargs))


def _structure(shared: dict, predictions, references, extra, kwargs) -> dict[str, float]:
    if "scores" not in shared:
        from multimed_hf.metrics.structure import structure_scores

        options = {k: v for k, v in kwargs.items() if k in ("backend", "device")}
        scores = structure_scores(predictions, references, extra["masks"], **options)
        shared["scores"] = {k: float(np.mean(v)) for k, v in scores.items()}
    return shared["scores"]
