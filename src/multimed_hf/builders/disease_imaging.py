"""The disease config over the other tasks' imaging sources: each source's own reading, its label harmonised.

A record keeps its image, modality and patient; its own label becomes ``diseases`` (the harmonised names present)
and ``label_mask`` (every harmonised name the source can assert; all others are unknown, never negative), through
the ``diseases`` label map of the source's entry in the disease task (``_task_entries.DISEASE_IMAGING_SOURCES``),
and ``organ`` is the organ that entry states (``SourceSpec.organ``).
The builders are derived from the registry: each source of the disease task that another task also lists is read
through that task's builder (in the module named like the source), so a new one is one registry entry.
"""

from __future__ import annotations

import importlib
import inspect
from typing import ClassVar

from multimed_hf.data.errors import BadSourceFile
from multimed_hf.data.sample import RejectedRecord, Sample
from multimed_hf.data.source_builder import SourceBuilder
from multimed_hf.tasks import SourceSpec, TaskSpec, get_task, list_tasks

DISEASE = "disease"
#: Joins each derived builder's version (its own builder's plus this): bump it when ``AsDisease`` changes the
#: fields it writes, so cached samples are read again (2: the ``organ`` column).
DISEASE_READING = "disease-2"


class AsDisease:
    """Mixin before a source's own builder: it reads as that builder does (``spec`` stays the source's entry in
    its own task), then each sample's own label is mapped to the disease config's columns."""

    task = DISEASE
    #: The task whose builder this reads through (its label maps, modality and layout).
    own_task: ClassVar[str]

    @classmethod
    def task_spec(cls) -> TaskSpec:
        return get_task(cls.own_task)

    @classmethod
    def spec(cls) -> SourceSpec:
        return get_task(cls.own_task).source(cls.source)

    @classmethod
    def disease_source(cls) -> SourceSpec:
        """The source's entry in the disease task (its harmonised label map, its organ)."""
        return get_task(DISEASE).source(cls.source)

    @classmethod
    def disease_map(cls) -> dict[str, str]:
        return dict(cls.disease_source().label_map["diseases"])

    def read_file(self, relpath: str) -> list[Sample | RejectedRecord]:
        mapping = self.disease_map()
        organ = self.disease_source().organ
        mask = sorted(set(mapping.values()))
        own_labels = get_task(self.own_task).label_names
        records = []
        for record in super().read_file(relpath):
            if isinstance(record, Sample):
                labels = [record.fields.get(name) for name in own_labels]
                present = [mapping[value] for value in labels if value in mapping]
                if not present:
                    raise BadSourceFile(
                        f"no harmonised disease for labels {dict(zip(own_labels, labels))}: expected one of "
                        f"{sorted(mapping)}"
                    )
                record.fields = {
                    "image": record.fields["image"], "modality": record.fields["modality"],
                    "diseases": sorted(set(present)), "label_mask": mask,
                    "patient_id": record.fields.get("patient_id"), "organ": organ,
                }
            records.append(record)
        return records


def _own_task(source: str) -> str | None:
    """The one other task that lists ``source`` (None when the disease config alone reads it)."""
    own = [name for name in list_tasks(include_extras=True)
           if name != DISEASE and any(s.name == source for s in get_task(name).sources)]
    if len(own) > 1:
        raise ValueError(f"disease source {source!r} is listed by tasks {own}: the disease config cannot tell "
                         f"whose builder to read it through")
    return own[0] if own else None


def _own_builder(source: str, task: str) -> type[SourceBuilder]:
    """The builder of ``source`` in ``task``, from the builder module named like the source."""
    try:
        module = importlib.import_module(f"{__package__}.{source}")
    except ModuleNotFoundError as err:
        if err.name != f"{__package__}.{source}":
            raise
        raise ValueError(f"disease source {source!r} of task {task!r}: no builder module "
                         f"multimed_hf/builders/{source}.py to read it through") from None
    found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, SourceBuilder) and cls.__module__ == module.__name__
             and getattr(cls, "source", None) == source and getattr(cls, "task", None) == task]
    if len(found) != 1:
        raise ValueError(f"{module.__name__} defines {len(found)} builders of source {source!r} for task {task!r}; "
                         f"the disease config reads the source through exactly one")
    return found[0]


def _version(base: type[SourceBuilder]):
    """The derived builder's version: its own builder's (a string, or a property of the instance) + ours."""
    own = inspect.getattr_static(base, "version")
    if isinstance(own, property):
        return property(lambda self: f"{own.fget(self)}+{DISEASE_READING}")
    return f"{own}+{DISEASE_READING}"


def _derive_builders() -> dict[str, type[SourceBuilder]]:
    """One ``AsDisease`` builder per source of the disease task that another task lists, by class name."""
    derived = {}
    for source in get_task(DISEASE).sources:
        own_task = _own_task(source.name)
        if own_task is None:
            continue  # read by a builder of the disease config itself (its own module)
        base = _own_builder(source.name, own_task)
        name = f"{base.__name__.removesuffix('Builder')}DiseaseBuilder"
        derived[name] = type(name, (AsDisease, base), {
            "own_task": own_task, "__module__": __name__, "__qualname__": name, "version": _version(base),
            "__doc__": f"{source.title}, read as {base.__name__} reads it, for the disease config.",
        })
    return derived


_DERIVED = _derive_builders()
globals().update(_DERIVED)
__all__ = ["AsDisease", *_DERIVED]
