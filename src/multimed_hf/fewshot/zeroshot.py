"""Zero-shot transfer by label text: contrastive alignment training (CLIP-style over image-caption pairs and the
training tasks' class texts) with held-out classes, and zero-shot prediction of held-out classes.

What zero-shot means here (the paper does not define it): a model trained with a task, or some of its classes, held
out (their rows never reach training, their class texts are never encoded) predicts the held-out classes without
training on them, by the cosine similarity of a row's fused embedding to the text-encoder embeddings of the classes'
names or descriptions, in the shared space the model projects every modality into. That space is shaped by a
contrastive objective: the ``label_text`` heads' cross-entropy over the active class texts of every training task (an
image against its class text and the other classes' texts, CLIP's zero-shot classifier trained directly) and a
symmetric InfoNCE over ``pmc_pairs`` image-caption pairs (the other captions of the batch are the negatives). Chance on
held-out classes is 1 / (number of held-out classes scored).

What it cannot mean: a regression target has no class names to match, so zero-shot *expression prediction* (a
Pearson task that the paper's Table 2 prints as a percentage, 58.65) cannot be label-text transfer. The most it can
mean is transfer across contexts or genes: a model trained on other contexts (cell types, tissues) or other genes
(held-out chromosomes) predicting expression in unseen ones with a head that was trained on expression -- a held-out
generalisation score of an expression model, not zero-shot in the sense above, and never an accuracy. We report it,
where asked, as Pearson r (across genes within a context, then the mean), as r in table2.csv and table2.md, the
paper's printed percentage (r x 100) beside it, and ``zero_shot_predict`` refuses a regression column.

``multimed train --align_label_text [--holdout_classes TASK:A,B] [--align_pairs pmc_pairs]`` trains this way inside a
full run (``training.run.train_model``, through ``prepare_alignment`` and ``AlignmentTrainer`` below).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from multimed_hf.fewshot.adapters import multimed_core
from multimed_hf.fewshot.support import class_keys, read_columns
from multimed_hf.label_text import LABEL_TEXT
from multimed_hf.tasks import IMAGE_MODALITIES, get_task
from multimed_hf.training.trainer import MultiMedTrainer, prediction_arguments

logger = logging.getLogger(__name__)

__all__ = [
    "ZeroShotError",
    "AlignmentSettings",
    "AlignmentResult",
    "AlignmentTrainer",
    "ALIGNMENT_INFO",
    "PAIR_TASK",
    "class_text",
    "label_text_output",
    "label_text_head",
    "check_zero_shot_checkpoint",
    "zero_shot_majority",
    "label_text_modalities",
    "use_label_text",
    "hold_out",
    "pair_loss",
    "PreparedAlignment",
    "prepare_alignment",
    "alignment_trainer",
    "alignment_info",
    "write_alignment_info",
    "train_alignment",
    "read_alignment",
    "zero_shot_classes",
    "zero_shot_chance",
    "zero_shot_predict",
]

#: What ``train_alignment`` writes beside the model: held-out classes, class texts, tasks with label-text heads.
ALIGNMENT_INFO = "alignment.json"
#: The image-caption config of the data.
PAIR_TASK = "pmc_pairs"
_CLASS_KINDS = ("class", "text", "multilabel")


class ZeroShotError(ValueError):
    """Zero-shot asked of what cannot do it: a regression column, a model without a text encoder, no held-out class."""


def class_text(name: str) -> str:
    """The default text of a class: its name with ``_`` as spaces (``no_tumor`` -> ``no tumor``)."""
    return str(name).replace("_", " ")


def label_text_output(column: str, names: Sequence[str], processor, *, texts: Mapping[str, str] | None = None,
                      active: Sequence[str] | None = None, multilabel: bool = False, modality: str = "text") -> dict:
    """A ``label_text`` output spec: ``names`` in the label's encoding order, each with its text (``texts`` or
    ``class_text``), tokenized by ``processor``'s text processor, ``active`` the names scored (default all)."""
    texts = dict(texts or {})
    strings = [texts.get(n, class_text(n)) for n in names]
    text_processor = processor.processor_for(modality)
    batch = text_processor.collate([text_processor(t) for t in strings])
    return {"name": column, "kind": LABEL_TEXT, "names": list(names), "texts": strings,
            "active": list(active) if active is not None else list(names), "multilabel": bool(multilabel),
            "text_inputs": {k: v.tolist() for k, v in batch.items()}, "modality": modality}


def _class_columns(task: str) -> list:
    labels = get_task(task).labels
    bad = [f"{label.name} ({label.kind})" for label in labels if label.kind not in _CLASS_KINDS]
    if bad:
        raise ZeroShotError(f"task {task!r}: label columns {bad} have no class names to match with texts; zero-shot "
                            f"by label text applies to class / multilabel / free-text labels only (see "
                            f"multimed_hf.fewshot.zeroshot for what zero-shot regression can and cannot mean)")
    return list(labels)


def label_text_modalities(model, task: str) -> list[str]:
    """The modalities a label-text head of ``task`` reads: the task's that the model encodes, text left out where
    there are others (the text encoder reads the class texts)."""
    encoded = [m for m in get_task(task).modalities if m in multimed_core(model).config.encoders]
    return [m for m in encoded if m != "text"] or encoded


def label_text_head(model, task: str, processor, *, texts: Mapping[str, str] | None = None,
                    active: Sequence[str] | None = None, names: Mapping[str, Sequence[str]] | None = None) -> dict:
    """A head spec for ``task`` whose every label column is a ``label_text`` output over the task's classes (the
    registry's names; a free-text label: the processor's vocabulary, the order its labels are encoded in, else
    ``names[column]``), reading the task's modalities that the model encodes. ``active``: the class names scored
    (default all); one that is none of the classes is refused (its rows' labels could not be scored)."""
    labels = _class_columns(task)
    core = multimed_core(model)
    _refuse_unreadable(core.config, task)
    modalities = label_text_modalities(model, task)
    outputs = []
    for label in labels:
        if label.kind == "text":
            vocab = processor.vocabularies.get(label.name) or processor.vocabularies.get(task) or \
                (names or {}).get(label.name)
            if not vocab:
                raise ZeroShotError(f"task {task!r}: free-text label {label.name!r} has no class list; give names=")
            column_names = list(vocab)
        else:
            column_names = list(label.names)
        chosen = [n for n in column_names if active is None or n in set(active)]
        outputs.append(label_text_output(label.name, column_names, processor, texts=texts, active=chosen or None,
                                         multilabel=label.kind == "multilabel"))
    unknown = [n for n in active or () if not any(n in o["names"] for o in outputs)]
    if unknown:
        raise ZeroShotError(f"task {task!r}: classes {unknown} are none of its classes "
                            f"{ {o['name']: o['names'] for o in outputs} } (a free-text label's: the processor's "
                            f"vocabulary, fitted on the training split), so their rows' labels cannot be scored")
    return {"modalities": modalities, "outputs": outputs, "problem_type": get_task(task).problem_type}


def use_label_text(model, task: str, processor, *, texts: Mapping[str, str] | None = None,
                   active: Sequence[str] | None = None, names: Mapping[str, Sequence[str]] | None = None) -> dict:
    """Make ``model``'s head for ``task`` score ``active`` classes by label text. A head that already is label text
    keeps its learned temperature and bias and only changes its class texts and active set; any other head is
    replaced by a new label-text head. Returns the head spec."""
    core = multimed_core(model)
    spec = label_text_head(model, task, processor, texts=texts, active=active, names=names)
    current = core.config.heads.get(task)
    if current is not None and all(o["kind"] == LABEL_TEXT for o in current["outputs"]) and [
            o["name"] for o in current["outputs"]] == [o["name"] for o in spec["outputs"]]:
        head = core.heads[task]
        for old, new in zip(current["outputs"], spec["outputs"]):
            for key in ("names", "texts", "active", "text_inputs", "multilabel"):
                old[key] = new[key]
            head.specs[old["name"]] = old
        return current
    core.add_head(task, spec, replace=True)
    return core.config.heads[task]


def hold_out(dataset, task: str, classes: Sequence[str], *, check: bool = True):
    """``(kept rows, removed sample ids)``: the rows of ``dataset`` that hold an example of none of ``classes`` (a
    class label equal to one, or a multilabel row naming one as present), and the ids of those left out. ``check``:
    refuse a class that is none of the task's (a free-text label: of the values ``dataset`` holds); off for a split
    that may lack a class checked on the training split (a rare class with no validation row)."""
    classes = set(classes)
    if not classes:
        return dataset, []
    columns = class_keys(task, dataset)
    unknown = classes - {n for names in columns.values() for n in names}
    if unknown and check:
        raise ZeroShotError(f"task {task!r}: held-out classes {sorted(unknown)} are not among its classes "
                            f"{ {c: n for c, n in columns.items()} }")
    values = read_columns(dataset, list(columns) + ["sample_id"])
    keep, removed = [], []
    for i in range(len(dataset)):
        hit = False
        for column in columns:
            feature = dataset.features[column]
            inner = getattr(feature, "feature", feature)
            value = values[column][i]
            items = value if isinstance(value, list) else [value]
            names = {inner.int2str(v) if hasattr(inner, "int2str") and isinstance(v, int) and v >= 0 else str(v)
                     for v in items if v is not None}
            hit = hit or bool(names & classes)
        (removed if hit else keep).append(i)
    ids = [str(values["sample_id"][i]) for i in removed]
    return dataset.select(keep).flatten_indices(), ids


# ---------------------------------------------------------------------- training
def pair_loss(model, batch: Mapping[str, Any], *, projections: Sequence[str] | None = None,
              temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of image-caption pairs (``pmc_pairs`` rows with both): each image against
    every caption of the batch and back. The image features go through the projection of each of ``projections``
    (the imaging modalities whose space the label-text heads score in; default the pairs' own image modality), the
    captions through the text projection; the loss is the mean over those projections."""
    core = multimed_core(model)
    inputs, presence = batch["inputs"], batch["presence"]
    image = next((m for m in inputs if m in IMAGE_MODALITIES), None)
    if image is None or "text" not in inputs:
        raise ZeroShotError(f"pair batch: expected an image and a caption per row, got modalities {sorted(inputs)}")
    both = presence[image] & presence["text"]
    if int(both.sum()) < 2:
        return sum(p.sum() for p in core.projections.parameters()) * 0.0
    pick_image, pick_text = both[presence[image]], both[presence["text"]]
    pooled_image = core._encode(image, {k: v[pick_image] for k, v in inputs[image].items()})[0]
    pooled_text = core._encode("text", {k: v[pick_text] for k, v in inputs["text"].items()})[0]
    text = F.normalize(core.projections["text"](pooled_text).float(), dim=-1)
    target = torch.arange(len(text), device=text.device)
    losses = []
    for m in projections or (image,):
        vision = F.normalize(core.projections[m](pooled_image).float(), dim=-1)
        logits = vision @ text.T / temperature
        losses.append((F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2)
    return torch.stack(losses).mean()


class AlignmentTrainer(MultiMedTrainer):
    """``MultiMedTrainer`` whose task batches also include image-caption pairs (``pairs``, trained by ``pair_loss``,
    logged as ``loss_<pair_task>``); the tasks' own batches train their heads as usual (``label_text`` heads: the
    contrast of each row with its active class texts)."""

    def __init__(self, *args, pairs=None, pair_task: str = PAIR_TASK, pair_projections: Sequence[str] | None = None,
                 temperature: float = 0.07, pair_weight: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.pair_task, self.pair_projections = pair_task, list(pair_projections or [])
        self.temperature, self.pair_weight = float(temperature), float(pair_weight)
        if pairs is not None:
            from multimed_hf.training.data import MultiTaskDataset

            if self.train_dataset is None:
                raise ZeroShotError("AlignmentTrainer: pairs train beside task datasets; give train_datasets too")
            datasets = {**self.train_dataset.datasets, pair_task: pairs}
            self.train_dataset = MultiTaskDataset(datasets, self.processor, modalities=self.train_dataset.modalities)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if inputs.get("task") != self.pair_task:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        loss = self.pair_weight * pair_loss(model, inputs, projections=self.pair_projections or None,
                                            temperature=self.temperature)
        if model.training:
            key = f"loss_{self.pair_task}"
            value = loss.detach().float()
            self._log_sums[key] = self._log_sums[key] + value if key in self._log_sums else value
            self._log_counts[key] = self._log_counts.get(key, 0) + 1
        return (loss, None) if return_outputs else loss


@dataclass
class AlignmentSettings:
    """The contrastive alignment option: ``held_out`` task -> classes whose rows never reach training and whose
    texts are never encoded; ``class_texts`` task -> class -> describing text (default the name); ``label_text_tasks``
    (default: every training task whose labels are all classes); the pair loss' ``temperature``, ``pair_weight`` and
    ``pair_projections`` (default: the imaging modalities the label-text heads read)."""

    held_out: dict[str, list[str]] = field(default_factory=dict)
    class_texts: dict[str, dict[str, str]] = field(default_factory=dict)
    label_text_tasks: list[str] | None = None
    temperature: float = 0.07
    pair_weight: float = 1.0
    pair_projections: list[str] | None = None
    pair_task: str = PAIR_TASK


@dataclass
class AlignmentResult:
    """What ``train_alignment`` did: the trainer, the ids left out per task (held-out classes' rows), the info file."""

    trainer: Any
    removed_ids: dict[str, list[str]]
    info: dict


def _label_text_tasks(datasets: Mapping[str, Any], settings: AlignmentSettings) -> list[str]:
    if settings.label_text_tasks is not None:
        return list(settings.label_text_tasks)
    return [t for t in datasets if all(label.kind in _CLASS_KINDS for label in get_task(t).labels)]


@dataclass
class PreparedAlignment:
    """``prepare_alignment``'s result: the training rows left (held-out classes' rows removed), the ids removed per
    task, the tasks given label-text heads and the imaging modalities the pair loss projects into."""

    train_datasets: dict[str, Any]
    removed_ids: dict[str, list[str]]
    tasks: list[str]
    projections: list[str] | None


def _refuse_held_out_trained_elsewhere(before: Mapping[str, Any], after: Mapping[str, Any],
                                       removed: Mapping[str, Sequence[str]], tasks: Sequence[str],
                                       settings: AlignmentSettings) -> None:
    """A held-out class must be unseen by the whole run, not only by its task: another label-text task of the run
    with a class of the same text (disease's ``meningioma`` beside brain_tumor's), or training rows of the same
    group as a held-out row (disease re-uses the brain-tumour images), would train it, and its zero-shot score
    would not be zero-shot. ``ZeroShotError`` naming what trains it."""
    def said(task, name):
        return _said(settings.class_texts.get(task, {}).get(name, class_text(name)))

    problems = []
    for task, held in settings.held_out.items():
        texts = {said(task, h): h for h in held}
        held_rows = set(removed.get(task, ()))
        groups = set()
        if held_rows and "group_id" in before[task].column_names:
            groups = {g for sid, g in zip(before[task]["sample_id"], before[task]["group_id"]) if sid in held_rows}
        for other in tasks:
            if other == task:
                continue
            seen = [n for ns in class_keys(other, after[other]).values() for n in ns
                    if n not in set(settings.held_out.get(other, ()))]
            same = sorted(f"{n!r} (as {texts[said(other, n)]!r})" for n in seen if said(other, n) in texts)
            if same:
                problems.append(f"task {other!r} trains {', '.join(same)} by the same text")
            if groups and "group_id" in after[other].column_names:
                shared = groups & set(after[other]["group_id"])
                if shared:
                    problems.append(f"task {other!r} trains on {len(shared)} group(s) of {task!r}'s held-out rows "
                                    f"(e.g. {sorted(shared)[0]!r}: the same images)")
    if problems:
        raise ZeroShotError("held-out classes would be trained by another task of the run, so their zero-shot score "
                            "would not be zero-shot: " + "; ".join(problems) + ". Hold those classes out there too "
                            "(--holdout_classes TASK:A,B for each task) or leave that task out of the run")


def prepare_alignment(model, processor, train_datasets: Mapping[str, Any], settings: AlignmentSettings
                      ) -> PreparedAlignment:
    """Give every label-text task a ``label_text`` head over its seen classes and remove the rows of its held-out
    classes from its training rows (before any trainer sees them)."""
    core = multimed_core(model)
    tasks = _label_text_tasks(train_datasets, settings)
    unknown = sorted(set(settings.held_out) - set(tasks))
    if unknown:
        raise ZeroShotError(f"held_out names tasks {unknown} that get no label-text head (label-text tasks: {tasks})")
    if not tasks:
        raise ZeroShotError(f"contrastive alignment by label text needs a task whose labels are classes; the tasks "
                            f"{sorted(train_datasets)} have none (regression / coordinates have no class texts)")
    data, removed = dict(train_datasets), {}
    for task in tasks:
        held = list(settings.held_out.get(task, ()))
        names = class_keys(task, data[task])
        every = [n for ns in names.values() for n in ns]
        seen = [n for n in every if n not in set(held)]
        if held and not seen:
            raise ZeroShotError(f"task {task!r}: every class is held out ({held}); alignment needs seen classes")
        data[task], removed[task] = hold_out(data[task], task, held)
        use_label_text(core, task, processor, texts=settings.class_texts.get(task), active=seen,
                       names=names)
    _refuse_held_out_trained_elsewhere(train_datasets, data, removed, tasks, settings)
    image_modalities = sorted({m for t in tasks for m in core.config.heads[t]["modalities"] if m in IMAGE_MODALITIES})
    projections = settings.pair_projections or [m for m in image_modalities if m in core.projections] or None
    return PreparedAlignment(data, removed, tasks, projections)


def alignment_trainer(model, processor, training_args, prepared: PreparedAlignment, settings: AlignmentSettings, *,
                      pairs=None, **trainer_kwargs) -> AlignmentTrainer:
    """The ``AlignmentTrainer`` of a prepared alignment run (``trainer_kwargs``: ``eval_datasets``, ``modalities``,
    ``sampling``, ``callbacks``, ... as ``MultiMedTrainer`` takes them)."""
    return AlignmentTrainer(model=model, args=training_args, train_datasets=prepared.train_datasets,
                            processor=processor, pairs=pairs, pair_task=settings.pair_task,
                            pair_projections=prepared.projections, temperature=settings.temperature,
                            pair_weight=settings.pair_weight, **trainer_kwargs)


def alignment_info(prepared: PreparedAlignment, settings: AlignmentSettings, pairs=None) -> dict:
    """What ``alignment.json`` records: held-out classes, label-text tasks, class texts, rows removed, pairs."""
    return {"held_out": {t: list(c) for t, c in settings.held_out.items()}, "label_text_tasks": prepared.tasks,
            "class_texts": settings.class_texts, "removed_rows": {t: len(i) for t, i in prepared.removed_ids.items()},
            "pairs": len(pairs) if pairs is not None else 0, "pair_projections": prepared.projections,
            "settings": asdict(settings)}


def write_alignment_info(output_dir: str | Path, info: Mapping) -> Path:
    """Write ``alignment.json`` into ``output_dir`` (what ``read_alignment`` and ``multimed fewshot --shots 0``
    read)."""
    path = Path(output_dir) / ALIGNMENT_INFO
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return path


def train_alignment(model, processor, training_args, train_datasets: Mapping[str, Any], *,
                    settings: AlignmentSettings | None = None, pairs=None, eval_datasets=None,
                    modalities: Mapping[str, Sequence[str]] | None = None, sampling=None) -> AlignmentResult:
    """Multitask training with contrastive alignment; writes the model, the processor and ``alignment.json`` into
    ``training_args.output_dir``. Every label-text task gets a ``label_text`` head over its seen classes; the rows of
    held-out classes are removed before the trainer sees the data (their ids are returned and recorded).
    ``multimed train --align_label_text`` runs the same steps inside a full run (``training.run.train_model``)."""
    settings = settings or AlignmentSettings()
    prepared = prepare_alignment(model, processor, train_datasets, settings)
    trainer = alignment_trainer(model, processor, training_args, prepared, settings, pairs=pairs,
                                eval_datasets=eval_datasets, modalities=modalities, sampling=sampling)
    trainer.train()
    trainer.save_model()
    info = alignment_info(prepared, settings, pairs)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        write_alignment_info(training_args.output_dir, info)
    return AlignmentResult(trainer=trainer, removed_ids=prepared.removed_ids, info=info)


# ---------------------------------------------------------------------- zero-shot prediction
def read_alignment(checkpoint: str | Path) -> dict | None:
    """A checkpoint's ``alignment.json``, from its folder or its Hub repository (None when it was not trained with
    contrastive alignment)."""
    path = Path(checkpoint) / ALIGNMENT_INFO
    if path.exists():
        return json.loads(path.read_text())
    if Path(checkpoint).exists() or str(checkpoint).count("/") != 1:
        return None  # a local folder without one, or no Hub id
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(str(checkpoint), ALIGNMENT_INFO)).read_text())
    except LocalEntryNotFoundError:  # offline, or unreachable, and not cached: unknown unless the cache knows
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.file_download import _CACHED_NO_EXIST

        if try_to_load_from_cache(str(checkpoint), ALIGNMENT_INFO) is _CACHED_NO_EXIST:
            return None  # an earlier online look found none
        raise ZeroShotError(f"{checkpoint!r}: whether it has an {ALIGNMENT_INFO} is unknown (offline, or the Hub "
                            f"unreachable, and none in the local cache): where it was trained with label-text "
                            f"alignment, fetch it (`hf download {checkpoint} {ALIGNMENT_INFO}`) or go online") from None
    except EntryNotFoundError:  # the repository has none
        return None


def _refuse_trained_task(config, task: str, alignment: Mapping | None) -> None:
    """Raise where ``config``'s model trained on every class of ``task`` (none held out in ``alignment``)."""
    if (alignment or {}).get("held_out", {}).get(task):
        return
    if task in config.heads or task in (alignment or {}).get("label_text_tasks", ()):
        raise ZeroShotError(f"task {task!r}: the model was trained on all of its classes (no class held out in "
                            f"alignment.json): a score on it is not zero-shot")


def check_zero_shot_checkpoint(config, task: str, alignment: Mapping | None) -> None:
    """What fails every zero-shot evaluation of ``task`` on a checkpoint of ``config`` alike, raised before any:
    none of the task's modalities encoded, no text encoder to read the class texts, or the task trained on all its
    classes (``alignment``: the checkpoint's ``alignment.json``, see ``read_alignment``)."""
    _refuse_unreadable(config, task)
    _refuse_trained_task(config, task, alignment)


def _refuse_unreadable(config, task: str) -> None:
    """Raise where a label-text head of ``task`` has nothing to read: none of its modalities encoded in ``config``,
    or no text encoder for the class texts."""
    if not any(m in config.encoders for m in get_task(task).modalities):
        raise ZeroShotError(f"task {task!r} reads {list(get_task(task).modalities)}; the model encodes "
                            f"{sorted(config.encoders)}")
    if "text" not in config.encoders:
        raise ZeroShotError(f"zero-shot by label text reads class texts with a text encoder; the model encodes "
                            f"{sorted(config.encoders)}: train it with contrastive alignment (train_alignment) "
                            f"and a text encoder")


def zero_shot_classes(model, task: str, alignment: Mapping | None, dataset=None, *,
                      texts: Mapping[str, str] | None = None) -> list[str]:
    """The classes a zero-shot evaluation of ``task`` scores: those held out in alignment training, or every class
    when the model never trained on ``task`` except those whose text (``texts``: the class texts the evaluation
    scores with; default ``alignment``'s) a label-text head of the model trained; a task trained on all its classes
    raises (not zero-shot)."""
    held = list((alignment or {}).get("held_out", {}).get(task, ()))
    if held:
        return held
    config = multimed_core(model).config
    _refuse_trained_task(config, task, alignment)
    if dataset is None:
        raise ZeroShotError(f"task {task!r}: give the dataset to read its classes from")
    names = [n for names in class_keys(task, dataset).values() for n in names]
    texts = dict(texts if texts is not None else (alignment or {}).get("class_texts", {}).get(task, {}))
    seen = _trained_texts(config)
    trained = [n for n in names if _said(texts.get(n, class_text(n))) in seen]
    if trained:  # another task of the base trained them by the same text (disease's glioma, brain_tumor's)
        logger.warning("zero-shot %r: classes %s are left out: the base trained another task's class of the same "
                       "text (a score on them would not be zero-shot)", task, trained)
        names = [n for n in names if n not in set(trained)]
    if not names:
        raise ZeroShotError(f"task {task!r}: every class has the text of a class the base trained (a score on them "
                            f"would not be zero-shot)")
    return names


def _said(text: str) -> str:
    """A class text as compared: lower case, whitespace collapsed."""
    return " ".join(str(text).lower().split())


def _trained_texts(config) -> set[str]:
    """The texts of every class a label-text head of ``config`` trained (its active classes)."""
    seen = set()
    for head in config.heads.values():
        for out in head["outputs"]:
            if out["kind"] == LABEL_TEXT:
                active = set(out.get("active") or out["names"])
                seen |= {_said(t) for n, t in zip(out["names"], out.get("texts") or out["names"]) if n in active}
    return seen


def zero_shot_majority(predictions, classes: Sequence[str]) -> float:
    """What naming one class of ``classes`` for every row scores on ``predictions``' headline column, at its best:
    the share of the most frequent class among the scored rows (a multilabel column: the rows where the most often
    present name is present, among rows with a known present name of ``classes``). Beside ``zero_shot_chance``: on
    held-out classes of unequal size a constant guess beats the uniform one (16 of 18 rows of one class: 89%)."""
    import numpy as np

    out = predictions.head_spec["outputs"][0]
    reference = predictions.references.get(out["name"])
    if reference is None:
        return float("nan")
    names = list(out["names"])
    columns = [names.index(c) for c in classes if c in names]
    if out.get("multilabel"):
        values = np.asarray(reference, dtype=float)[:, columns]
        present = ~np.isnan(values) & (np.nan_to_num(values) > 0.5)
        scored = present.any(1)
        return float(present[scored].mean(0).max()) if scored.any() else float("nan")
    labels = np.asarray(reference)
    labels = labels[np.isin(labels, columns)]
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else float("nan")


def zero_shot_chance(predictions, classes: Sequence[str]) -> float:
    """What a uniform guess scores on ``predictions``' headline column among ``classes``: 1 / len(classes) for a
    single-label column; for a multilabel one, top-1 among each row's known names of ``classes`` (the accuracy's
    rule), the mean over scored rows of (its present names) / (its known names), e.g. 1/4 on rows knowing 4 names,
    not 1/38 (the task's every name)."""
    import numpy as np

    out = predictions.head_spec["outputs"][0]
    reference = predictions.references.get(out["name"])
    if not out.get("multilabel") or reference is None:
        return 1.0 / len(classes)
    names = list(out["names"])
    columns = [names.index(c) for c in classes if c in names]
    values = np.asarray(reference, dtype=float)[:, columns]
    known = ~np.isnan(values)
    present = known & (np.nan_to_num(values) > 0.5)
    scored = present.any(1)
    if not scored.any():
        return float("nan")
    return float((present.sum(1)[scored] / known.sum(1)[scored]).mean())


def zero_shot_predict(model, processor, task: str, dataset, *, classes: Sequence[str], training_args,
                      texts: Mapping[str, str] | None = None, split: str = "test"):
    """``TaskPredictions`` of ``task`` on the rows of ``dataset`` whose classes are all among ``classes``, scored by
    label text among ``classes`` only (chance: ``zero_shot_chance``). Returns (predictions, the rows scored)."""
    found = class_keys(task, dataset)
    for label in _class_columns(task):  # a free-text label's classes: the evaluation rows' and those asked for
        if label.kind == "text":
            found[label.name] = sorted(set(found.get(label.name, ())) | set(classes))
    every = [n for ns in found.values() for n in ns]
    others = [n for n in every if n not in set(classes)]
    rows, _ = hold_out(dataset, task, others)
    if len(rows) == 0:
        raise ZeroShotError(f"task {task!r}: no {split} row belongs to the classes {list(classes)}")
    spec = use_label_text(model, task, processor, texts=texts, active=list(classes), names=found)
    trainer = MultiMedTrainer(model=model, args=prediction_arguments(training_args), processor=processor)
    # the head's modalities only: a processor that also reads text (class texts, captions) would hand the rows'
    # text slot to a head that does not read it
    return trainer.predict_task(task, rows, split=split, modalities=list(spec["modalities"])), rows
