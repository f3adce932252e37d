"""MultiMedProcessor: dataset rows of any task -> the batch of MODEL_INPUTS.md, saved and loaded beside the model."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from multimed_hf.processors.base import (
    MissingColumnError,
    MissingProcessorError,
    ModalityProcessor,
    ProcessorError,
    UnsupportedImageError,
    load_modality_processor,
)
from multimed_hf.tasks import IMAGE_MODALITIES, MODALITIES, ColumnSpec, LabelSpec, TaskSpec, get_task

__all__ = [
    "MultiMedProcessor",
    "RowTransform",
    "PROCESSOR_CONFIG_NAME",
    "IGNORE_INDEX",
    "MISSING_MODALITY_POLICIES",
    "UNKNOWN_TEXT_LABEL_POLICIES",
]

#: The processor's settings file, beside the model's config.json; per-modality folders go under ``processors/``.
PROCESSOR_CONFIG_NAME = "processor_config.json"
PROCESSORS_FOLDER = "processors"
FORMAT_VERSION = 1
#: An absent class label (the loss and the metrics skip it).
IGNORE_INDEX = -100
#: ``"absent"``: a row lacking an input (None) has that modality marked absent; ``"error"``: such a row raises.
MISSING_MODALITY_POLICIES = ("absent", "error")
#: A free-text label outside the fitted vocabulary: ``"ignore"`` makes it absent (-100), ``"error"`` raises.
UNKNOWN_TEXT_LABEL_POLICIES = ("ignore", "error")
#: ``processors["image"]`` serves every image modality that has no processor of its own.
IMAGE_KEY = "image"
# Column names the registry gives these roles (see multimed_hf.tasks and _task_entries).
MODALITY_COLUMN = "modality"
LABEL_MASK_COLUMN = "label_mask"
RESIDUE_MASK_COLUMN = "residue_mask"
COORDS_MASK = "coords_mask"


@dataclass(frozen=True)
class _Plan:
    """What one task needs from a row: the modalities read and the registry columns feeding each."""

    spec: TaskSpec
    modalities: tuple[str, ...]
    feeds: Mapping[str, tuple[ColumnSpec, ...]]  # modality -> its own columns
    image_column: ColumnSpec | None  # the "image" column: its modality is the row's `modality` value
    image_modalities: tuple[str, ...]  # the modalities read that come through the image column


class MultiMedProcessor:
    """Rows of one task -> ``{"task", "inputs", "presence", "labels"}`` as MODEL_INPUTS.md defines them.

    ``processors`` maps a modality (``multimed_hf.tasks.MODALITIES``) to its processor; the key ``"image"`` serves
    every image modality without its own. ``vocabularies`` maps each free-text label column (``cell_type``,
    ``answer``) to its class names (``fit_vocabularies``). Missing modalities (an input column holding None) follow
    ``missing_modality``; a row with none of its task's modalities always raises, as the model cannot read it.

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

    def _plan(self, task: str, modalities: Sequence[str] | None) -> _Plan:
        key = (task, None if modalities is None else tuple(modalities))
        if key in self._plans:
            return self._plans[key]
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
            self.processor_for(m, task)
        plan = _Plan(spec, tuple(chosen), feeds, images[0] if images and image_modalities else None,
                     tuple(image_modalities))
        self._plans[key] = plan
        return plan

    def _needed_columns(self, plan: _Plan, labels: bool) -> dict[str, str]:
        """Row columns the task needs -> why (for the error message)."""
        needed = {}
        for m, cols in plan.feeds.items():
            for name in self.processor_for(m).columns(cols):
                needed.setdefault(name, f"modality {m!r}")
        if plan.image_column is not None:
            needed.setdefault(plan.image_column.name, f"modalities {list(plan.image_modalities)}")
            needed.setdefault(MODALITY_COLUMN, "the image column (it names the image's modality)")
        if labels:
            metadata = {c.name for c in plan.spec.metadata}
            for label in plan.spec.labels:
                needed.setdefault(label.name, f"label {label.name!r}")
                if label.kind == "multilabel" and LABEL_MASK_COLUMN in metadata:
                    needed.setdefault(LABEL_MASK_COLUMN, f"label {label.name!r} (which names are known)")
                if label.kind == "coords" and RESIDUE_MASK_COLUMN in metadata:
                    needed.setdefault(RESIDUE_MASK_COLUMN, f"label {label.name!r} (which residues were observed)")
        return needed

    # ------------------------------------------------------------------ per row
    def preprocess(self, row: Mapping[str, Any], task: str, labels: bool = True,
                   modalities: Sequence[str] | None = None) -> dict:
        """One row -> ``{"task", "sample_id", "inputs": {modality: arrays or None}, "labels": {...} or None}``.

        Pure and per row, so it runs inside ``Dataset.with_transform`` (``transform``) or a DataLoader worker;
        ``collate`` turns a list of these into one batch. ``labels=False`` skips the label columns (inference);
        ``modalities`` reads a subset of the task's modalities.
        """
        plan = self._plan(task, modalities)
        sample = row.get("sample_id")
        where = f"sample {sample!r} of task {task!r}"
        key = (task, None if modalities is None else tuple(modalities), labels)
        needed = self._needed.get(key)
        if needed is None:
            needed = self._needed[key] = self._needed_columns(plan, labels)
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
            inputs[m] = _run(proc, {n: row[n] for n in proc.columns(cols)}, cols, where, m)
        image_modality = None
        if plan.image_column is not None:
            image_modality = self._image_modality(row, plan, where)
            if image_modality in plan.image_modalities:
                proc = self.processor_for(image_modality)
                column = plan.image_column.name
                inputs[image_modality] = _run(proc, {column: row[column]}, (plan.image_column,), where, image_modality)
        if all(v is None for v in inputs.values()):
            seen = f" (its image is {image_modality!r})" if image_modality else ""
            raise ProcessorError(f"{where} has none of the modalities {list(plan.modalities)}{seen}: the model cannot "
                                 f"read it; leave such rows out (dataset.filter) or read more modalities")
        encoded = self._encode_labels(row, plan, inputs, where) if labels else None
        return {"task": task, "sample_id": sample, "inputs": inputs, "labels": encoded}

    def _image_modality(self, row: Mapping[str, Any], plan: _Plan, where: str) -> str | None:
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

    # ------------------------------------------------------------------ labels
    def _encode_labels(self, row: Mapping[str, Any], plan: _Plan, inputs: dict, where: str) -> dict:
        out = {}
        for label in plan.spec.labels:
            value = row[label.name]
            try:
                if label.kind == "class":
                    out[label.name] = _class_index(label, value)
                elif label.kind == "multilabel":
                    out[label.name] = _multilabel(label, value, row.get(LABEL_MASK_COLUMN))
                elif label.kind == "regression":
                    out[label.name] = float("nan") if value is None else float(value)
                elif label.kind == "text":
                    out[label.name] = self._text_index(label, value, plan.spec.name)
                else:
                    out[label.name], out[COORDS_MASK] = self._coords(label, value, row, plan, inputs)
            except (TypeError, ValueError) as err:
                raise _with_context(err, f"{where}, label {label.name!r}") from err
        return out

    def _text_index(self, label: LabelSpec, value: Any, task: str) -> int:
        if label.name not in self.vocabularies:
            raise ProcessorError(f"free-text label {label.name!r} has no vocabulary; fit one on the training split: "
                                 f"processor.fit_vocabularies(train, {task!r})")
        index = self._vocab_index.get(label.name)
        if index is None or len(index) != len(self.vocabularies[label.name]):
            index = self._vocab_index[label.name] = {v: i for i, v in enumerate(self.vocabularies[label.name])}
        if value is None or not str(value).strip():
            return IGNORE_INDEX
        found = index.get(str(value).strip())
        if found is None:
            if self.unknown_text_label == "error":
                raise ProcessorError(f"{value!r} is not in the vocabulary of {len(index)} names (unknown_text_label="
                                     f"'error')")
            return IGNORE_INDEX
        return found

    def _coords(self, label: LabelSpec, value: Any, row: Mapping[str, Any], plan: _Plan, inputs: dict):
        """(C-alpha coordinates [L', 3], observed mask [L']) cut like the residue tokens, or (None, None)."""
        residue = "protein" if "protein" in plan.modalities else plan.modalities[0]
        tokens = inputs.get(residue)
        if value is None or tokens is None:
            return None, None
        coords = np.asarray(value, dtype=np.float32)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ProcessorError(f"expected coordinates of shape [L, 3], got {list(coords.shape)}")
        if "num_residues" not in tokens:
            raise ProcessorError(f"modality {residue!r}'s processor does not report num_residues, so coordinates "
                                 f"cannot be aligned to its tokens")
        sequence = str(row[plan.feeds[residue][0].name]).strip()
        if len(coords) != len(sequence):
            raise ProcessorError(f"{len(coords)} coordinates for a sequence of {len(sequence)} residues")
        mask = np.isfinite(coords).all(axis=1)
        observed = row.get(RESIDUE_MASK_COLUMN)
        if observed is not None:
            observed = np.asarray(observed).astype(bool)
            if observed.shape != mask.shape:
                raise ProcessorError(f"{RESIDUE_MASK_COLUMN} has {observed.size} entries for {len(coords)} residues")
            mask &= observed
        kept = tokens["num_residues"]
        coords = np.where(mask[:, None], coords, 0.0).astype(np.float32)
        return coords[:kept], mask[:kept]

    def fit_vocabularies(self, data: Any, task: str, columns: Sequence[str] | None = None,
                         where: Mapping[str, Any] | None = None, min_count: int = 1,
                         max_size: int | None = None) -> dict[str, list[str]]:
        """Fit (and keep) the class names of a task's free-text labels from ``data`` (a ``datasets.Dataset``, read
        column-wise without decoding images, or an iterable of row dicts): most frequent first, ties by name.

        ``where`` keeps only rows whose columns equal the given values (a list/tuple/set: any of them), e.g. med_vqa's
        closed-answer vocabulary: ``fit_vocabularies(train, "med_vqa", where={"answer_type": "closed"})``. Values are
        stripped of surrounding blanks here and when labels are encoded. Pass the result to
        ``MultiMedConfig.from_tasks(vocabularies=...)`` so the heads have the same classes.
        """
        spec = get_task(task)
        text = [label.name for label in spec.labels if label.kind == "text"]
        columns = text if columns is None else list(columns)
        wrong = [c for c in columns if c not in text]
        if wrong or not columns:
            raise ProcessorError(f"task {task!r}: {wrong or columns} are not free-text labels; its free-text labels "
                                 f"are {text}")
        where = dict(where or {})
        counts = {c: Counter() for c in columns}
        for row in _iter_rows(data, [*columns, *where]):
            if not all(_matches(row.get(k), v) for k, v in where.items()):
                continue
            for c in columns:
                value = row.get(c)
                if value is not None and str(value).strip():
                    counts[c][str(value).strip()] += 1
        fitted = {}
        for c in columns:
            names = sorted((n for n, k in counts[c].items() if k >= min_count), key=lambda n: (-counts[c][n], n))
            if not names:
                raise ProcessorError(f"task {task!r}: no value of {c!r} (with count >= {min_count}) to fit a "
                                     f"vocabulary from" + (f" among rows matching {where}" if where else ""))
            fitted[c] = names[:max_size] if max_size else names
            self._vocab_index.pop(c, None)
        self.vocabularies.update(fitted)
        return fitted

    # ------------------------------------------------------------------ batches
    def collate(self, items: Sequence[dict]) -> dict:
        """Preprocessed rows (``preprocess``, or a dataset read through ``transform``) of one task -> one batch."""
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
            batch["labels"] = self._collate_labels(spec, items, inputs, modalities)
        return batch

    def _collate_labels(self, spec: TaskSpec, items: Sequence[dict], inputs: dict, modalities: list) -> dict:
        import torch

        labels = {}
        for label in spec.labels:
            values = [item["labels"][label.name] for item in items]
            if label.kind in ("class", "text"):
                labels[label.name] = torch.tensor(values, dtype=torch.long)
            elif label.kind == "multilabel":
                labels[label.name] = torch.from_numpy(np.stack(values).astype(np.float32))
            elif label.kind == "regression":
                labels[label.name] = torch.tensor(values, dtype=torch.float32)
            else:
                residue = "protein" if "protein" in modalities else modalities[0]
                longest = max((len(v) for v in values if v is not None), default=0)
                width = inputs[residue]["input_ids"].shape[1] - 2 if residue in inputs else longest
                coords = torch.zeros(len(items), width, 3)
                mask = torch.zeros(len(items), width, dtype=torch.bool)
                for b, item in enumerate(items):
                    if values[b] is not None:
                        n = len(values[b])
                        coords[b, :n] = torch.from_numpy(values[b])
                        mask[b, :n] = torch.from_numpy(item["labels"][COORDS_MASK])
                labels[label.name], labels[COORDS_MASK] = coords, mask
        return labels

    def __call__(self, rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence], task: str, labels: bool = True,
                 modalities: Sequence[str] | None = None) -> dict:
        """Rows of ``task`` (a list of row dicts, or a dict of columns such as ``dataset[:8]``) -> one batch."""
        return self.collate([self.preprocess(row, task, labels, modalities) for row in _rows(rows)])

    def transform(self, task: str, labels: bool = True, modalities: Sequence[str] | None = None) -> "RowTransform":
        """A ``Dataset.with_transform`` function that preprocesses each row as it is read (decoding on the fly)."""
        self._plan(task, modalities)
        return RowTransform(self, task, labels, None if modalities is None else tuple(modalities))

    # ------------------------------------------------------------------ saving
    def to_dict(self) -> dict:
        return {"processor_class": type(self).__name__, "format_version": FORMAT_VERSION,
                "vocabularies": self.vocabularies, "missing_modality": self.missing_modality,
                "unknown_text_label": self.unknown_text_label}

    def save_pretrained(self, save_directory: str | Path) -> Path:
        """Write ``processor_config.json`` and ``processors/<modality>/`` into ``save_directory`` (the model's
        folder): a processor shared by several modalities is written once."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        written: dict[int, str] = {}
        folders = {}
        for key, proc in self.processors.items():
            if id(proc) not in written:
                written[id(proc)] = f"{PROCESSORS_FOLDER}/{key}"
                proc.save_pretrained(directory / written[id(proc)])
            folders[key] = written[id(proc)]
        config = {**self.to_dict(), "processors": folders}
        (directory / PROCESSOR_CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory

    def push_to_hub(self, repo_id: str, token: str | None = None, private: bool | None = None,
                    commit_message: str = "Upload MultiMedProcessor", revision: str | None = None):
        """Upload ``save_pretrained``'s files to the Hub repo ``repo_id`` (a model repo, beside the model)."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder)
            return api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message,
                                     revision=revision)

    @classmethod
    def from_pretrained(cls, pretrained: str | Path, **hub_kwargs) -> "MultiMedProcessor":
        """The processor saved in a folder (or a Hub repo holding one) by ``save_pretrained``.

        ``hub_kwargs`` (``token``, ``revision``, ...) go to ``huggingface_hub.snapshot_download``, which fetches only
        the processor's files of the repo.
        """
        directory = Path(pretrained)
        if not directory.is_dir():
            from huggingface_hub import snapshot_download

            directory = Path(snapshot_download(str(pretrained), allow_patterns=[PROCESSOR_CONFIG_NAME,
                                                                               f"{PROCESSORS_FOLDER}/**"],
                                               **hub_kwargs))
        path = directory / PROCESSOR_CONFIG_NAME
        if not path.is_file():
            raise ProcessorError(f"{path} does not exist: save the processor with save_pretrained() first")
        config = json.loads(path.read_text())
        if config.get("processor_class") != cls.__name__ or config.get("format_version") != FORMAT_VERSION:
            raise ProcessorError(f"{path}: processor_class {config.get('processor_class')!r}, format_version "
                                 f"{config.get('format_version')!r}; expected {cls.__name__!r}, {FORMAT_VERSION}")
        loaded: dict[str, ModalityProcessor] = {}
        processors = {}
        for key, folder in config.get("processors", {}).items():
            if folder not in loaded:
                loaded[folder] = load_modality_processor(directory / folder)
            processors[key] = loaded[folder]
        return cls(processors=processors, vocabularies=config.get("vocabularies"),
                   missing_modality=config.get("missing_modality", "absent"),
                   unknown_text_label=config.get("unknown_text_label", "ignore"))


class RowTransform:
    """``MultiMedProcessor.preprocess`` over a ``datasets`` batch (a dict of columns); picklable for workers."""

    def __init__(self, processor: MultiMedProcessor, task: str, labels: bool, modalities: tuple | None):
        self.processor, self.task, self.labels, self.modalities = processor, task, labels, modalities

    def __call__(self, batch: Mapping[str, Sequence]) -> dict:
        items = [self.processor.preprocess(row, self.task, self.labels, self.modalities) for row in _rows(batch)]
        return {key: [item[key] for item in items] for key in ("task", "sample_id", "inputs", "labels")}


# ---------------------------------------------------------------------- helpers
def _run(proc: ModalityProcessor, values: dict, specs: Sequence[ColumnSpec], where: str, modality: str):
    try:
        return proc.from_row(values, specs)
    except (ProcessorError, UnsupportedImageError) as err:
        raise _with_context(err, f"{where}, modality {modality!r}") from err


def _with_context(err: Exception, context: str) -> Exception:
    """The same kind of error, its message prefixed with the row and column it came from."""
    kind = type(err) if isinstance(err, (ProcessorError, UnsupportedImageError)) or type(err) in (
        TypeError, ValueError) else (TypeError if isinstance(err, TypeError) else ProcessorError)
    return kind(f"{context}: {err}")


def _rows(rows: Any) -> list:
    if isinstance(rows, Mapping):  # a dict of columns
        columns = list(rows)
        if any(isinstance(v, str) for v in rows.values()):
            raise ProcessorError("got one row (a dict of values); pass a list of rows or a dict of columns")
        n = len(rows[columns[0]]) if columns else 0
        return [{c: rows[c][i] for c in columns} for i in range(n)]
    return list(rows)


def _iter_rows(data: Any, columns: Sequence[str]) -> Iterator[Mapping[str, Any]]:
    if hasattr(data, "select_columns") and hasattr(data, "column_names"):  # a datasets.Dataset: no image decoding
        missing = [c for c in columns if c not in data.column_names]
        if missing:
            raise MissingColumnError(f"the dataset has no column {missing[0]!r}; its columns are {data.column_names}")
        for batch in data.select_columns(list(dict.fromkeys(columns))).iter(batch_size=1000):
            yield from _rows(batch)
    else:
        yield from data


def _matches(value: Any, wanted: Any) -> bool:
    return value in wanted if isinstance(wanted, (list, tuple, set, frozenset)) else value == wanted


def _class_index(label: LabelSpec, value: Any) -> int:
    """A class label (ClassLabel int, or a canonical name) as an index; None and ClassLabel's -1 are absent."""
    if value is None:
        return IGNORE_INDEX
    if isinstance(value, str):
        if value not in label.names:
            raise ProcessorError(f"{value!r} is not one of the class names {label.names}")
        return label.names.index(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"expected a class index or name, got {type(value).__name__} {value!r}")
    if value == -1:
        return IGNORE_INDEX
    if not 0 <= value < label.num_classes:
        raise ProcessorError(f"class index {value} is outside [0, {label.num_classes})")
    return int(value)


def _multilabel(label: LabelSpec, value: Any, known: Iterable[str] | None) -> np.ndarray:
    """1 = present, 0 = asserted absent (a name in the row's label_mask), NaN = unknown."""
    vector = np.full(label.num_classes, np.nan, dtype=np.float32)
    if value is None:
        return vector
    for name in known or ():
        if name not in label.names:
            raise ProcessorError(f"{LABEL_MASK_COLUMN} names {name!r}, not one of {label.names}")
        vector[label.names.index(name)] = 0.0
    for item in value:
        index = _class_index(label, item)
        if index != IGNORE_INDEX:
            vector[index] = 1.0
    return vector
