"""MIND: a multi-head student's modality heads distil their unimodal teachers' soft predictions, cached as columns."""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from multimed_hf.training.balancing.batches import BalancingError, restrict_batch, task_batches, unwrap_model
from multimed_hf.training.loss_weighting import StaticWeighting, register_loss_weighting

__all__ = [
    "MIND_TEMPERATURE",
    "MIND_WEIGHT",
    "teacher_column",
    "load_teacher",
    "rows_holding",
    "teacher_soft_targets",
    "on_student_classes",
    "add_teacher_columns",
    "soft_targets_from_columns",
    "MINDWeighting",
    "size_and_speed",
]

#: Distillation temperature T. MIND (Guerra-Manzanares & Shamout, TMLR 2025, arXiv 2502.01158) distils soft
#: predictions; the stored copies we could search held its abstract only, not T: 2.0 is our choice, with the T^2
#: factor of Hinton, Vinyals & Dean ("Distilling the knowledge in a neural network", 2015) keeping the soft term's
#: gradients on the scale of the hard one's.
MIND_TEMPERATURE = 2.0
#: Weight of the distillation terms beside the task losses: not found in the stored text either; 1.0, our choice.
MIND_WEIGHT = 1.0
#: Soft targets are scored only for these output kinds (coordinates are not distilled).
_KINDS = ("class", "multilabel", "regression")


def teacher_column(modality: str, column: str) -> str:
    """The dataset column holding the teachers' soft predictions of ``modality`` for label ``column``."""
    return f"mind_{modality}_{column}"


def load_teacher(teacher: Any, processor=None) -> tuple:
    """``(model, processor)`` from a model, a ``(model, processor)`` pair, or a checkpoint folder / Hub id (the
    Table 1 ``unimodal`` runs save both); a bare model reads rows with ``processor``."""
    if isinstance(teacher, (tuple, list)) and len(teacher) == 2:
        return teacher[0], teacher[1]
    if isinstance(teacher, torch.nn.Module):
        if processor is None:
            raise BalancingError("a teacher given as a model needs the processor that reads its rows")
        return teacher, processor
    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor

    return MultiMedModel.from_pretrained(str(teacher)), MultiMedProcessor.from_pretrained(str(teacher))


def rows_holding(task: str, dataset, modality: str) -> np.ndarray:
    """Bool [N]: the rows of ``dataset`` that hold ``modality`` (its registry input columns not None; an image
    modality: an image whose ``modality`` column names it), read without decoding images."""
    from datasets import Image

    from multimed_hf.tasks import IMAGE_MODALITIES, get_task

    spec = get_task(task)
    own = [c.name for c in spec.inputs if c.modality == modality]
    image = [c.name for c in spec.inputs if c.modality == "image"]
    if own:
        data = dataset.select_columns(own)
        return np.array([all(data[c][i] is not None for c in own) for i in range(len(data))], dtype=bool) \
            if len(data) else np.zeros(0, dtype=bool)
    if modality in IMAGE_MODALITIES and image and modality in spec.modalities:
        data = dataset.select_columns([image[0], "modality"]).cast_column(image[0], Image(decode=False))
        images, names = data[image[0]], data["modality"]
        return np.array([img is not None and name == modality for img, name in zip(images, names)], dtype=bool)
    raise BalancingError(f"task {task!r} has no input column for modality {modality!r} (it reads {spec.modalities})")


def _soft(kind: str, logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """A teacher's soft prediction: class probabilities / per-name probabilities at ``temperature``; values as is."""
    logits = logits.float()
    if kind == "class":
        return F.softmax(logits / temperature, -1)
    if kind == "multilabel":
        return torch.sigmoid(logits / temperature)
    return logits


def _kinds(config, task: str) -> dict[str, str]:
    return {o["name"]: o["kind"] for o in config.heads[task]["outputs"] if o["kind"] in _KINDS}


def _class_names(config, task: str) -> dict[str, list[str]]:
    """Each class / multilabel output's class names, in its logits' order."""
    return {o["name"]: list(o.get("names") or ()) for o in config.heads[task]["outputs"]
            if o["kind"] in ("class", "multilabel")}


def on_student_classes(kind: str, soft, theirs: Sequence[str], ours: Sequence[str], what: str = "a teacher"):
    """A teacher's soft predictions ``soft`` ``[N, K]`` over its classes ``theirs`` (in its logits' order), put on the
    student's classes ``ours`` in the student's order (a numpy array or a tensor, as given). Two runs' free-text
    labels (a VQA answer, a cell type) are indexed by vocabularies fitted on different rows, so their orders and
    classes differ: a class the teacher lacks gets probability 0 (single-label; the rest renormalised) or no value
    (multilabel: NaN, as a row without the modality); a teacher class the student lacks is dropped."""
    theirs, ours = list(theirs), list(ours)
    if theirs == ours:
        return soft
    position = {name: i for i, name in enumerate(theirs)}
    shared = [j for j, name in enumerate(ours) if name in position]
    if not shared:
        raise BalancingError(f"{what} predicts classes {theirs[:6]} and the student {ours[:6]}: none shared, so "
                             f"nothing can be distilled; give teachers trained on the same task's classes")
    fill = 0.0 if kind == "class" else math.nan
    taken = [position[ours[j]] for j in shared]
    if isinstance(soft, torch.Tensor):
        out = soft.new_full((soft.shape[0], len(ours)), fill)
        out[:, shared] = soft[:, taken]
        return out / out.sum(1, keepdim=True) if kind == "class" else out  # 0 / 0: NaN, no teacher value
    out = np.full((soft.shape[0], len(ours)), fill, dtype=np.float32)
    out[:, shared] = soft[:, taken]
    if kind == "class":
        with np.errstate(invalid="ignore"):
            out = out / out.sum(1, keepdims=True)
    return out


@torch.no_grad()
def teacher_soft_targets(teachers: Mapping[str, Sequence[Any]], task: str, dataset, *,
                         temperature: float = MIND_TEMPERATURE, processor=None, batch_size: int = 32,
                         names: Mapping[str, Sequence[str]] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Modality -> label column -> the ensemble's soft predictions for every row of ``dataset``: ``[N, K]``
    probabilities at ``temperature`` (class, multilabel) or ``[N]`` values (regression); NaN in rows without the
    modality. ``teachers``: modality -> its unimodal teachers (models, ``(model, processor)`` pairs or checkpoint
    folders; of any size); each reads only its modality of the rows that hold it; the ensemble is their mean.
    ``names``: the student's class names per column (its head's order; ``on_student_classes`` puts each teacher's
    classes on them); without it, the first teacher's."""
    if not temperature > 0:
        raise BalancingError(f"temperature={temperature}: expected > 0")
    out: dict[str, dict[str, np.ndarray]] = {}
    for modality, members in teachers.items():
        if _is_pair(members) or not isinstance(members, (list, tuple)):
            members = [members]
        members = [load_teacher(t, processor) for t in members]
        if not members:
            raise BalancingError(f"no teacher given for modality {modality!r}")
        holding = np.flatnonzero(rows_holding(task, dataset, modality))
        sums: dict[str, np.ndarray] = {}
        for teacher, teacher_processor in members:
            core = unwrap_model(teacher)
            if task not in core.config.heads or modality not in core.config.heads[task]["modalities"]:
                raise BalancingError(f"a teacher of modality {modality!r} has no head for task {task!r} reading it "
                                     f"(its heads: { {t: h['modalities'] for t, h in core.config.heads.items()} })")
            kinds = _kinds(core.config, task)
            theirs = _class_names(core.config, task)
            if names is None:
                names = theirs
            device = next(core.parameters()).device
            was_training = core.training
            core.eval()
            try:
                parts: dict[str, list] = {c: [] for c in kinds}
                subset = dataset.select(holding)
                for _, batch in task_batches(teacher_processor, task, subset, batch_size=batch_size,
                                             modalities=[modality], labels=False, device=device):
                    logits = core(**batch).logits
                    for c, kind in kinds.items():
                        parts[c].append(_soft(kind, logits[c], temperature).cpu().numpy())
            finally:
                core.train(was_training)
            for c, chunks in parts.items():
                values = np.concatenate(chunks) if chunks else np.zeros((0,))
                if c in theirs and c in names:
                    if len(values) == 0:
                        values = np.zeros((0, len(names[c])), dtype=np.float32)
                    else:
                        values = on_student_classes(kinds[c], values, theirs[c], names[c],
                                                    f"a teacher of modality {modality!r} (task {task!r}, {c!r})")
                sums[c] = sums[c] + values if c in sums else values
        full = {}
        for c, total in sums.items():
            array = np.full((len(dataset), *total.shape[1:]), np.nan, dtype=np.float32)
            array[holding] = total / len(members)
            full[c] = array
        out[modality] = full
    return out


def _is_pair(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], torch.nn.Module) and \
        not isinstance(value[1], torch.nn.Module)


def add_teacher_columns(dataset, targets: Mapping[str, Mapping[str, np.ndarray]]):
    """``dataset`` with one column per (modality, label column) of ``targets`` (``teacher_column`` names): a list
    of floats per row (one float for regression), None where the row lacks the modality. Computed once, stored with
    the rows (``save_to_disk`` keeps them); the training loss reads them back (`soft_targets_from_columns`)."""
    for modality, columns in targets.items():
        for column, values in columns.items():
            if len(values) != len(dataset):
                raise BalancingError(f"teacher predictions for {modality!r}/{column!r} have {len(values)} rows, the "
                                     f"dataset {len(dataset)}")
            name = teacher_column(modality, column)
            if name in dataset.column_names:
                dataset = dataset.remove_columns(name)
            cells = [None if np.isnan(v).all() else (v.tolist() if np.ndim(v) else float(v)) for v in values]
            dataset = dataset.add_column(name, cells)
    return dataset


def soft_targets_from_columns(dataset, config, task: str) -> dict[str, dict[str, torch.Tensor]]:
    """Modality -> label column -> float tensor [N, ...] (NaN rows = no teacher prediction) from ``dataset``'s
    teacher columns (`add_teacher_columns`); modalities without a column are left out."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    spec = {o["name"]: o for o in config.heads[task]["outputs"]}
    for modality in config.heads[task]["modalities"]:
        for column, kind in _kinds(config, task).items():
            name = teacher_column(modality, column)
            if name not in dataset.column_names:
                continue
            width = len(spec[column]["names"]) if kind in ("class", "multilabel") else None
            cells = dataset[name]
            shape = (len(cells), width) if width else (len(cells),)
            array = np.full(shape, np.nan, dtype=np.float32)
            for i, cell in enumerate(cells):
                if cell is not None:
                    array[i] = cell
            out.setdefault(modality, {})[column] = torch.from_numpy(array)
    return out


def distillation_term(kind: str, spec: dict, student: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                      temperature: float, known: torch.Tensor | None = None) -> torch.Tensor | None:
    """One modality head's distillation loss over ``valid`` rows: class, T^2 * KL(teacher || student at T);
    multilabel, T^2 * soft binary cross-entropy over the names that have a teacher value (and, with ``known``,
    a known label: the NaN masks); regression, squared error in the label's standardised units."""
    if not bool(valid.any()):
        return None
    s, t = student[valid].float(), target[valid].float()
    if kind == "class":
        return F.kl_div(F.log_softmax(s / temperature, -1), t, reduction="batchmean") * temperature ** 2
    if kind == "multilabel":
        mask = ~torch.isnan(t)
        if known is not None:
            mask &= known[valid]
        if not bool(mask.any()):
            return None
        return F.binary_cross_entropy_with_logits(s[mask] / temperature, t[mask]) * temperature ** 2
    std = float(spec.get("target_std", 1.0))
    return F.mse_loss(s / std, t / std)


@register_loss_weighting("mind")
class MINDWeighting(StaticWeighting):
    """Modality-INformed knowledge Distillation (MIND; Guerra-Manzanares & Shamout, TMLR 2025, arXiv 2502.01158).

    The student is a multi-head joint fusion model (``auxiliary_heads=True``, or late fusion): the fused head and
    one head per modality. Loss = the task losses (fused head, plus each modality head weighted by lambda_(t,m)) +
    ``weight`` * the sum over modality heads and label columns of the head's distillation towards its teachers' soft
    predictions (`distillation_term`, temperature ``temperature``).

    Teacher predictions come from ``targets`` (task -> modality -> column -> [N, ...] over the task's training rows,
    e.g. `soft_targets_from_columns`; rows are found through the batch's row ids), computed once before training;
    ``live_teachers`` (modality -> teachers, fed the student's own batch) computes them at every step instead, which
    gives the same loss and serves to check the cache. Logs ``distill_<task>``.
    """

    reads_batch = True

    def __init__(self, config, targets: Mapping[str, Mapping[str, Mapping[str, torch.Tensor]]] | None = None, *,
                 live_teachers: Mapping[str, Sequence[torch.nn.Module]] | None = None,
                 temperature: float = MIND_TEMPERATURE, weight: float = MIND_WEIGHT, mask_unknown_labels: bool = True):
        super().__init__(config)
        if not getattr(config, "modality_heads", False):
            raise BalancingError("MIND distils into each modality's own head: set auxiliary_heads=True in the "
                                 "student's config (intermediate fusion) or use late fusion")
        if (targets is None) == (live_teachers is None):
            raise BalancingError("MINDWeighting: give the cached teacher predictions (targets=) or live_teachers=, "
                                 "one of the two")
        if not temperature > 0 or not weight >= 0:
            raise BalancingError(f"MIND temperature={temperature}, weight={weight}: expected T > 0 and weight >= 0")
        self.specs = {t: {o["name"]: o for o in h["outputs"]} for t, h in config.heads.items()}
        self.modalities = {t: list(h["modalities"]) for t, h in config.heads.items()}
        self.targets = {t: {m: {c: torch.as_tensor(v, dtype=torch.float32) for c, v in cols.items()}
                            for m, cols in mods.items()} for t, mods in (targets or {}).items()}
        self.live = {m: [unwrap_model(t) for t in ts] for m, ts in (live_teachers or {}).items()}
        self.temperature, self.weight = float(temperature), float(weight)
        self.mask_unknown_labels = bool(mask_unknown_labels)

    @torch.no_grad()
    def _live_targets(self, task: str, batch) -> dict[str, dict[str, torch.Tensor]]:
        out: dict[str, dict[str, torch.Tensor]] = {}
        size = next(iter(batch["presence"].values())).shape[0]
        for m, teachers in self.live.items():
            sub, kept = restrict_batch(batch, [m])
            if sub is None:
                continue
            for teacher in teachers:
                reads = teacher.config.heads[task]["modalities"]
                was_training = teacher.training
                teacher.eval()
                logits = teacher(task=task, inputs=sub["inputs"],
                                 presence={k: v for k, v in sub["presence"].items() if k in reads}).logits
                teacher.train(was_training)
                theirs = _class_names(teacher.config, task)
                for c, spec in self.specs[task].items():
                    if spec["kind"] not in _KINDS or c not in logits:
                        continue
                    soft = _soft(spec["kind"], logits[c], self.temperature)
                    if c in theirs:
                        soft = on_student_classes(spec["kind"], soft, theirs[c], spec.get("names") or (),
                                                  f"a live teacher of modality {m!r}")
                    soft = soft / len(teachers)
                    full = out.setdefault(m, {}).get(c)
                    if full is None:
                        full = torch.full((size, *soft.shape[1:]), math.nan, device=soft.device)
                        full[kept] = 0.0
                        out[m][c] = full
                    full[kept] += soft
        return out

    def combine(self, task: str, output, batch=None):
        loss, logs = super().combine(task, output)
        if task not in self.targets and not self.live:
            return loss, logs
        if batch is None:
            raise BalancingError("MINDWeighting reads the batch: train it with MultiMedTrainer (it passes batch=)")
        if self.live:
            targets = self._live_targets(task, batch)
        else:
            rows = batch.get("rows")
            if rows is None:
                raise BalancingError(f"MIND: the batch of task {task!r} carries no training row ids, so its cached "
                                     f"teacher predictions cannot be found")
            targets = {m: {c: v[rows.cpu()].to(output.loss.device) for c, v in cols.items()}
                       for m, cols in self.targets[task].items()}
        labels = batch.get("labels") or {}
        distill = output.loss * 0.0
        for j, m in enumerate(self.modalities[task]):
            if m not in targets or output.modality_logits is None or m not in output.modality_logits:
                continue
            present = output.presence[:, j].bool()
            for c, target in targets[m].items():
                spec = self.specs[task][c]
                rows_ok = present & ~torch.isnan(target.reshape(len(target), -1)).all(1)
                known = None
                if spec["kind"] == "multilabel" and self.mask_unknown_labels and c in labels:
                    known = ~torch.isnan(labels[c])
                term = distillation_term(spec["kind"], spec, output.modality_logits[m][c], target, rows_ok,
                                         self.temperature, known)
                if term is not None:
                    distill = distill + term
        logs[f"distill_{task}"] = distill.detach()
        return loss + self.weight * distill, logs


@torch.no_grad()
def size_and_speed(models: Mapping[str, torch.nn.Module], batches: Mapping[str, dict], *, repeats: int = 5) -> dict:
    """Name -> ``{"parameters": n, "seconds_per_batch": median forward time}`` for each model on its own batch
    (a student on its multimodal batch, each teacher on its modality's), after one warm-up pass."""
    out = {}
    for name, model in models.items():
        core = unwrap_model(model)
        was_training = core.training
        core.eval()
        batch = batches[name]
        core(**batch)
        times = []
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            core(**batch)
            times.append(time.perf_counter() - start)
        core.train(was_training)
        out[name] = {"parameters": sum(p.numel() for p in core.parameters()),
                     "seconds_per_batch": float(np.median(times))}
    return out
