"""MultiMedProcessor: dataset rows of any task -> the batch of MODEL_INPUTS.md, saved and loaded beside the model."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from multimed_hf.data.label_kinds import (
    COORDS_MASK,
    IGNORE_INDEX,
    LABEL_MASK_COLUMN,
    RESIDUE_MASK_COLUMN,
    BatchContext,
    RowContext,
    get_label_kind,
)
from multimed_hf.processing_rows import (
    MODALITY_COLUMN,
    Plan,
    needed_columns,
    plan_task,
    rows_of,
    run_processor,
    with_context,
)
from multimed_hf.processing_saving import (
    FORMAT_VERSION,
    PROCESSOR_CONFIG_NAME,
    PROCESSORS_FOLDER,
    ProcessorSavingMixin,
)
from multimed_hf.processing_vocabularies import VocabularyMixin
from multimed_hf.processors.base import (
    MissingColumnError,
    MissingProcessorError,
    ModalityProcessor,
    ProcessorError,
)
from multimed_hf.tasks import IMAGE_MODALITIES, MODALITIES, get_task

__all__ = [
    "MultiMedProcessor",
    "RowTransform",
    "PROCESSOR_CONFIG_NAME",
    "PROCESSORS_FOLDER",
    "FORMAT_VERSION",
    "IGNORE_INDEX",
    "COORDS_MASK",
    "LABEL_MASK_COLUMN",
    "RESIDUE_MASK_COLUMN",
    "MODALITY_COLUMN",
    "MISSING_MODALITY_POLICIES",
    "UNKNOWN_TEXT_LABEL_POLICIES",
]

#: ``"absent"``: a row lacking an input (None) has that modality marked absent; ``"error"``: such a row raises.
MISSING_MODALITY_POLICIES = ("absent", "error")
#: A free-text label outside the fitted vocabulary: ``"ignore"`` makes it absent (-100), ``"error"`` raises.
UNKNOWN_TEXT_LABEL_POLICIES = ("ignore", "error")
#: ``processors["image"]`` serves every image modality that has no processor of its own.
IMAGE_KEY = "image"


class MultiMedProcessor(VocabularyMixin, ProcessorSavingMixin):
    """Rows of one task -> ``{"task", "inputs", "presence", "labels"}`` as MODEL_INPUTS.md defines them.

    ``processors`` maps a modality (``multimed_hf.tasks.MODALITIES``) to its processor; the key ``"image"`` serves
    every image modality without its own. ``vocabularies`` maps each free-text label column (``cell_type``,
    ``answer``) to its class names (``fit_vocabularies``). Missing modalities (an input column holding None) follow
    ``missing_modality``; a row with none of its task's modalities always raises, as the model cannot read it.
    How each label column is encoded and batched is its kind's (``multimed_hf.data.label_kinds``).

    Two ways in: ``processor(rows, task)`` for a list of rows, or per row with ``datasets``:
    ``dataset.with_transform(processor.transform(task))`` decodes and processes rows as they are read, and
    ``processor.collate`` is the ``DataLoader``'s ``collate_fn``.
    """

    def __init__(self, processors: Mapping[str, ModalityProcessor] | None = None,
                 vocabularies: Mapping[str, Sequence[str]] | None = None, missing_modality: str = "absent",
                 unknown_text_label: str = "ignore"):
        processors = dict(processors or {})
        for key, proc in processors.items():
            if key not in (*MODALITIES, IMAGE_KEY):
                raise ProcessorError(f"processors[{key!r}]: not a modality; expected one of {MODALITIES} or "
                                     f"{IMAGE_KEY!r} (all image modalities)")
            if not isinstance(proc, ModalityProcessor):
                raise TypeError(f"processors[{key!r}]: expected a ModalityProcessor (ImageProcessor, TextProcessor, "
                                f"...), got {type(proc).__name__}")
        if missing_modality not in MISSING_MODALITY_POLICIES:
            raise ProcessorError(f"missing_modality={missing_modality!r}: expected one of {MISSING_MODALITY_POLICIES}")
        if unknown_text_label not in UNKNOWN_TEXT_LABEL_POLICIES:
            raise ProcessorError(f"unknown_text_label={unknown_text_label!r}: expected one of "
                                 f"{UNKNOWN_TEXT_LABEL_POLICIES}")
        self.processors = processors
        self.vocabularies = {name: [str(v) for v in vocab] for name, vocab in (vocabularies or {}).items()}
        self.missing_modality = missing_modality
        self.unknown_text_label = unknown_text_label
        self._plans: dict = {}
        self._needed: dict = {}
        self._vocab_index: dict = {}

    def __getstate__(self) -> dict:  # for DataLoader workers: caches hold registry specs, which do not pickle
        return {**self.__dict__, "_plans": {}, "_needed": {}, "_vocab_index": {}}

    def __repr__(self) -> str:
        shown = {k: type(v).__name__ for k, v in self.processors.items()}
        sizes = {k: len(v) for k, v in self.vocabularies.items()}
        return (f"MultiMedProcessor(processors={shown}, vocabulary_sizes={sizes}, "
                f"missing_modality={self.missing_modality!r}, unknown_text_label={self.unknown_text_label!r})")

    # ------------------------------------------------------------------ lookups
    def processor_for(self, modality: str, task: str | None = None) -> ModalityProcessor:
        """The processor of ``modality`` (for image modalities, falling back on ``processors["image"]``)."""
        proc = self.processors.get(modality)
        if proc is None and modality in IMAGE_MODALITIES:
            proc = self.processors.get(IMAGE_KEY)
        if proc is None:
            needs = f"task {task!r} reads modality {modality!r}" if task else f"modality {modality!r} is needed"
            fewer = " or read fewer modalities (modalities=[...])" if task else ""
            raise MissingProcessorError(f"{needs}, but no processor is configured for it (configured: "
                                        f"{sorted(self.processors)}); give processors={{{modality!r}: ...}}{fewer}")
        return proc

    def _plan(self, task: str, modalities: Sequence[str] | None) -> Plan:
        key = (task, None if modalities is None else tuple(modalities))
        if key not in self._plans:
            self._plans[key] = plan_task(task, modalities, self.processor_for)
        return self._plans[key]

    # ------------------------------------------------------------------ per row
    def preprocess(self, row: Mapping[str, Any], task: str, labels: bool = True,
                   modalities: Sequence[str] | None = None) -> dict:
        """One row -> ``{"task", "sample_id", "inputs": {modality: arrays or None}, "labels": {...} or None}``.

        Pure and per row, so it runs inside ``Dataset.with_transform`` (``transform``) or a DataLoader worker;
        ``collate`` turns a list of these into one batch. ``labels=False`` skips the label columns (inference);
        ``modalities`` reads a subset of the task's modalities. ``sample_id`` is the row's own, carried so that a
        training loop can tie predictions back to rows.
        """
        plan = self._plan(task, modalities)
        sample = row.get("sample_id")
        where = f"sample {sample!r} of task {task!r}"
        key = (task, None if modalities is None else tuple(modalities), labels)
        needed = self._needed.get(key)
        if needed is None:
            needed = self._needed[key] = needed_columns(plan, labels, self.processor_for)
        for name, reason in needed.items():
            if name not in row:
                raise MissingColumnError(f"{where} has no column {name!r}, which {reason} needs; the row has "
                                         f"columns {sorted(row)}")
        inputs: dict[str, dict | None] = {m: None for m in plan.modalities}
        for m, cols in plan.feeds.items():
            if self.missing_modality == "error" and any(row[c.name] is None for c in cols):
                raise ProcessorError(f"{where} lacks modality {m!r} (column {cols[0].name!r} is None) and "
                                     f"missing_modality='error'")
            proc = self.processor_for(m)
            inputs[m] = run_processor(proc, {n: row[n] for n in proc.columns(cols)}, cols, where, m)
        image_modality = None
        if plan.image_column is not None:
            image_modality = self._image_modality(row, plan, where)
            if image_modality in plan.image_modalities:
                proc = self.processor_for(image_modality)
                column = plan.image_column.name
                inputs[image_modality] = run_processor(proc, {column: row[column]}, (plan.image_column,), where,
                                                       image_modality)
        if all(v is None for v in inputs.values()):
            seen = f" (its image is {image_modality!r})" if image_modality else ""
            raise ProcessorError(f"{where} has none of the modalities {list(plan.modalities)}{seen}: the model cannot "
                                 f"read it; leave such rows out (dataset.filter) or read more modalities")
        encoded = self._encode_labels(row, plan, inputs, where) if labels else None
        return {"task": task, "sample_id": sample, "inputs": inputs, "labels": encoded}

    def _image_modality(self, row: Mapping[str, Any], plan: Plan, where: str) -> str | None:
        if row[plan.image_column.name] is None:
            if self.missing_modality == "error":
                raise ProcessorError(f"{where} has no image (column {plan.image_column.name!r} is None) and "
                                     f"missing_modality='error'")
            return None
        modality = row[MODALITY_COLUMN]
        if modality not in plan.spec.modalities or modality not in IMAGE_MODALITIES:
            images = [m for m in plan.spec.modalities if m in IMAGE_MODALITIES]
            raise ProcessorError(f"{where}: column {MODALITY_COLUMN!r} says {modality!r}, not one of the task's "
                                 f"image modalities {images}")
        return modality

    def _encode_labels(self, row: Mapping[str, Any], plan: Plan, inputs: dict, where: str) -> dict:
        context = RowContext(
            task=plan.spec.name, modalities=plan.modalities, inputs=inputs,
            input_columns={m: tuple(c.name for c in cols) for m, cols in plan.feeds.items()},
            vocabulary=lambda column: self.vocabulary_index(column, plan.spec.name),
            unknown_text_label=self.unknown_text_label,
        )
        out = {}
        for label in plan.spec.labels:
            try:
                out.update(get_label_kind(label.kind).encode(label, row[label.name], row, context))
            except (TypeError, ValueError) as err:
                raise with_context(err, f"{where}, label {label.name!r}") from err
        return out

    # ------------------------------------------------------------------ batches
    def collate(self, items: Sequence[dict]) -> dict:
        """Preprocessed rows (``preprocess``, or a dataset read through ``transform``) of one task -> one batch:
        ``{"task", "inputs", "presence", "labels"}`` (MODEL_INPUTS.md); the items' ``sample_id`` stay with them."""
        import torch

        if not items:
            raise ProcessorError("collate got no rows")
        tasks = sorted({item["task"] for item in items})
        if len(tasks) != 1:
            raise ProcessorError(f"a batch holds rows of one task; got rows of {tasks} (use a task sampler)")
        spec = get_task(tasks[0])
        modalities = list(items[0]["inputs"])
        inputs, presence = {}, {}
        for m in modalities:
            present = [item["inputs"].get(m) is not None for item in items]
            presence[m] = torch.tensor(present, dtype=torch.bool)
            if any(present):
                inputs[m] = self.processor_for(m).collate([it["inputs"][m] for it in items if it["inputs"].get(m)
                                                           is not None])
        batch = {"task": tasks[0], "inputs": inputs, "presence": presence}
        if items[0]["labels"] is not None:
            context = BatchContext(modalities=tuple(modalities), inputs=inputs)
            labels = {}
            for label in spec.labels:
                labels.update(get_label_kind(label.kind).collate(label, [item["labels"] for item in items], context))
            batch["labels"] = labels
        return batch

    def __call__(self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence], task: str, labels: bool = True,
                 modalities: Sequence[str] | None = None) -> dict:
        """Rows of ``task`` (a list of row dicts, or a dict of columns such as ``dataset[:8]``) -> one batch."""
        return self.collate([self.preprocess(row, task, labels, modalities) for row in rows_of(rows)])

    def transform(self, task: str, labels: bool = True, modalities: Sequence[str] | None = None) -> "RowTransform":
        """A ``Dataset.with_transform`` function that preprocesses each row as it is read (decoding on the fly)."""
        self._plan(task, modalities)
        return RowTransform(self, task, labels, None if modalities is None else tuple(modalities))

    # ------------------------------------------------------------------ saving (processing_saving)
    def to_dict(self) -> dict:
        return {"processor_class": type(self).__name__, "format_version": FORMAT_VERSION,
                "vocabularies": self.vocabularies, "missing_modality": self.missing_modality,
                "unknown_text_label": self.unknown_text_label}

    @classmethod
    def from_pretrained(cls, pretrained, **hub_kwargs) -> "MultiMedProcessor":
        """The processor saved in a folder (or a Hub repo holding one) by ``save_pretrained``.

        ``hub_kwargs`` (``token``, ``revision``, ...) go to ``huggingface_hub.snapshot_download``, which fetches only
        the processor's files of the repo.
        """
        config, processors = cls._settings_from_pretrained(pretrained, **hub_kwargs)
        return cls(processors=processors, vocabularies=config.get("vocabularies"),
                   missing_modality=config.get("missing_modality", "absent"),
                   unknown_text_label=config.get("unknown_text_label", "ignore"))


class RowTransform:
    """``MultiMedProcessor.preprocess`` over a ``datasets`` batch (a dict of columns); picklable for workers."""

    def __init__(self, processor: MultiMedProcessor, task: str, labels: bool, modalities: tuple | None):
        self.processor, self.task, self.labels, self.modalities = processor, task, labels, modalities

    def __call__(self, batch: Mapping[str, Sequence]) -> dict:
        items = [self.processor.preprocess(row, self.task, self.labels, self.modalities) for row in rows_of(batch)]
        return {key: [item[key] for item in items] for key in ("task", "sample_id", "inputs", "labels")}
