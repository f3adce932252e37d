"""Classical baselines on the same rows and inputs as a run: a scikit-learn logistic regression on expression panels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from multimed_hf.tasks import get_task

__all__ = ["BaselineResult", "expression_matrix", "logistic_regression_baseline"]


@dataclass
class BaselineResult:
    """Test accuracy of a baseline and what it was fitted on."""

    task: str
    accuracy: float
    n_train: int
    n_test: int
    num_features: int
    model: Any


def expression_matrix(dataset, task: str, processor) -> tuple[np.ndarray, list]:
    """(dense expression [N, G] over the processor's recorded gene order, the rows' label values) of the rows that
    have both, through the very ``ExpressionProcessor`` a run uses (same panel, same scaling)."""
    from multimed_hf.training.loading import column_values

    spec = get_task(task)
    cols = [c for c in spec.inputs if c.modality == "scrna"]
    label = spec.labels[0].name
    scrna = processor.processor_for("scrna", task)
    names = [*scrna.columns(cols), label]
    values = column_values(dataset, names)
    rows, labels = [], []
    for i in range(len(values[label])):
        row = {n: values[n][i] for n in names}
        if row[label] is None:
            continue
        out = scrna.from_row(row, cols)
        if out is not None:
            rows.append(out["values"])
            labels.append(row[label])
    return np.stack(rows), labels


def logistic_regression_baseline(data: str | Path, task: str = "cell_type", *, processor=None,
                                 datasets: Mapping[str, Any] | None = None, max_iter: int = 5000,
                                 standardize: bool | None = None, **sklearn_kwargs) -> BaselineResult:
    """A scikit-learn ``LogisticRegression`` (defaults: L2, C=1, lbfgs, multinomial) fitted on the task's training
    rows and scored by accuracy on its test rows, on the same expression panel and scaling as ``processor`` (default:
    the one ``assemble`` builds for the data with small encoders; ``standardize`` asks it for per-gene standardised
    values, ``None`` takes the preset's choice)."""
    from sklearn.linear_model import LogisticRegression

    from multimed_hf.training.loading import load_task_data

    splits = datasets or load_task_data(data, [task], splits=("train", "test"))[task]
    if processor is None:
        from multimed_hf.training.assembly import assemble

        processor = assemble(data, [task], encoders="small", build_model=False, datasets={task: dict(splits)},
                             standardize_expression=standardize).processor
    x_train, y_train = expression_matrix(splits["train"], task, processor)
    x_test, y_test = expression_matrix(splits["test"], task, processor)
    model = LogisticRegression(max_iter=max_iter, **sklearn_kwargs).fit(x_train, y_train)
    accuracy = float(np.mean(model.predict(x_test) == np.asarray(y_test, dtype=object)))
    return BaselineResult(task=task, accuracy=accuracy, n_train=len(y_train), n_test=len(y_test),
                          num_features=x_train.shape[1], model=model)
