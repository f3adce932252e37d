"""Row planning for MultiMedProcessor: which registry columns feed which modality of a task, which columns a row
must have, and reading rows out of a list or a dict of columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from multimed_hf.data.label_kinds import get_label_kind
from multimed_hf.processors.base import (
    MissingColumnError,
    ModalityProcessor,
    ProcessorError,
    UnsupportedImageError,
)
from multimed_hf.tasks import IMAGE_MODALITIES, ColumnSpec, TaskSpec, get_task

__all__ = ["Plan", "plan_task", "needed_columns", "run_processor", "with_context", "rows_of", "iter_rows",
           "MODALITY_COLUMN"]

#: The column that names an image's modality (the registry's ``"image"`` columns take theirs from it).
MODALITY_COLUMN = "modality"


@dataclass(frozen=True)
class Plan:
    """What one task needs from a row: the modalities read and the registry columns feeding each."""

    spec: TaskSpec
    modalities: tuple[str, ...]
    feeds: Mapping[str, tuple[ColumnSpec, ...]]  # modality -> its own columns
    image_column: ColumnSpec | None  # the "image" column: its modality is the row's `modality` value
    image_modalities: tuple[str, ...]  # the modalities read that come through the image column


def plan_task(task: str, modalities: Sequence[str] | None,
              processor_for: Callable[[str, str], ModalityProcessor]) -> Plan:
    """The plan of ``task`` reading ``modalities`` (default: all of its own); ``processor_for(modality, task)``
    raises where a modality has no processor."""
    spec = get_task(task)
    chosen = spec.modalities if modalities is None else tuple(dict.fromkeys(modalities))
    extra = sorted(set(chosen) - set(spec.modalities))
    if extra or not chosen:
        raise ProcessorError(f"modalities={list(chosen)}: task {task!r} reads {list(spec.modalities)}")
    images = [c for c in spec.inputs if c.modality == "image"]
    if len(images) > 1:
        raise ProcessorError(f"task {task!r} has {len(images)} image columns; one is supported")
    feeds, image_modalities = {}, []
    for m in chosen:
        own = tuple(c for c in spec.inputs if c.modality == m)
        if own:
            feeds[m] = own
        elif images and m in IMAGE_MODALITIES:
            image_modalities.append(m)
        else:
            raise ProcessorError(f"task {task!r} reads modality {m!r}, but no input column of the registry "
                                 f"feeds it (a registry entry to fix)")
        processor_for(m, task)
    return Plan(spec, tuple(chosen), feeds, images[0] if images and image_modalities else None,
                tuple(image_modalities))


def needed_columns(plan: Plan, labels: bool, processor_for: Callable[[str], ModalityProcessor]) -> dict[str, str]:
    """Row columns the task needs -> why (for the error message)."""
    needed = {}
    for m, cols in plan.feeds.items():
        for name in processor_for(m).columns(cols):
            needed.setdefault(name, f"modality {m!r}")
    if plan.image_column is not None:
        needed.setdefault(plan.image_column.name, f"modalities {list(plan.image_modalities)}")
        needed.setdefault(MODALITY_COLUMN, "the image column (it names the image's modality)")
    if labels:
        metadata = frozenset(c.name for c in plan.spec.metadata)
        for label in plan.spec.labels:
            needed.setdefault(label.name, f"label {label.name!r}")
            for name, why in get_label_kind(label.kind).columns(label, metadata).items():
                needed.setdefault(name, why)
    return needed


def run_processor(proc: ModalityProcessor, values: dict, specs: Sequence[ColumnSpec], where: str, modality: str):
    """``proc.from_row`` with the row and modality named in any error."""
    try:
        return proc.from_row(values, specs)
    except (ProcessorError, UnsupportedImageError) as err:
        raise with_context(err, f"{where}, modality {modality!r}") from err


def with_context(err: Exception, context: str) -> Exception:
    """The same kind of error, its message prefixed with the row and column it came from (a label the data side
    could not encode becomes a ``ProcessorError``)."""
    if isinstance(err, (ProcessorError, UnsupportedImageError)) or type(err) in (TypeError, ValueError):
        kind = type(err)
    elif isinstance(err, TypeError):
        kind = TypeError
    else:  # a label the data side could not encode (LabelEncodingError), other ValueErrors
        kind = ProcessorError
    return kind(f"{context}: {err}")


def rows_of(rows: Any) -> list:
    """A list of row dicts, from a list of rows or a dict of columns (``dataset[:8]``)."""
    if isinstance(rows, Mapping):  # a dict of columns
        columns = list(rows)
        if any(isinstance(v, str) for v in rows.values()):
            raise ProcessorError("got one row (a dict of values); pass a list of rows or a dict of columns")
        n = len(rows[columns[0]]) if columns else 0
        return [{c: rows[c][i] for c in columns} for i in range(n)]
    return list(rows)


def iter_rows(data: Any, columns: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    """Rows of ``data`` (a ``datasets.Dataset``, read column-wise without decoding images, or an iterable of
    row dicts) holding at least ``columns``."""
    if hasattr(data, "select_columns") and hasattr(data, "column_names"):  # a datasets.Dataset: no image decoding
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise MissingColumnError(f"the dataset has no column {missing[0]!r}; its columns are {data.column_names}")
        for batch in data.select_columns(list(dict.fromkeys(columns))).iter(batch_size=1000):
            yield from rows_of(batch)
    else:
        yield from data
