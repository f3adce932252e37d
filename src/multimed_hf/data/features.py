"""Typed ``datasets.Features`` of a task's config, derived from the task registry alone."""

from __future__ import annotations

from datasets import Features, Image, Json, List, Value

from multimed_hf.data.label_kinds import get_label_kind
from multimed_hf.tasks import ColumnSpec, LabelSpec, TaskSpec

__all__ = ["COMMON_COLUMNS", "task_features", "column_feature", "label_feature"]

#: Columns every config has, before the task's own inputs, labels and metadata.
COMMON_COLUMNS = {
    "sample_id": Value("string"),
    "source": Value("string"),
    "source_path": Value("string"),
    "group_id": Value("string"),
}

_DTYPES = {
    "image": lambda: Image(),
    "string": lambda: Value("string"),
    "bool": lambda: Value("bool"),
    "int32": lambda: Value("int32"),
    "int64": lambda: Value("int64"),
    "float32": lambda: Value("float32"),
    "float64": lambda: Value("float64"),
    "list_int32": lambda: List(Value("int32")),
    "list_float32": lambda: List(Value("float32")),
    "list_string": lambda: List(Value("string")),
    "array2d_float32": lambda: List(List(Value("float32"))),
    "coords_float32": lambda: List(List(Value("float32"), length=3)),
    "json": lambda: Json(),
}


def column_feature(column: ColumnSpec):
    """The ``datasets`` feature of one input or metadata column."""
    return _DTYPES[column.dtype]()


def label_feature(label: LabelSpec):
    """The ``datasets`` feature of one label column (absent labels are stored as None), from its kind's entry."""
    return get_label_kind(label.kind).feature(label)


def task_features(task: TaskSpec) -> Features:
    """Common columns, then the task's inputs, labels and metadata, in registry order."""
    features = dict(COMMON_COLUMNS)
    for column in task.inputs:
        features[column.name] = column_feature(column)
    for label in task.labels:
        features[label.name] = label_feature(label)
    for column in task.metadata:
        features[column.name] = column_feature(column)
    return Features(features)
