"""Output kinds on the model side: one table entry per kind of label column (its config spec, head layer, forward,
output units, loss over present labels, late-fusion vote, card line and decoding). Flat: importable as remote code."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .kind_table import KindTable
from .structure_head import StructureHead, structure_loss

__all__ = [
    "OutputKind",
    "ClassKind",
    "MultilabelKind",
    "RegressionKind",
    "CoordsKind",
    "OUTPUT_KIND_TABLE",
    "OUTPUT_KINDS",
    "IGNORE_INDEX",
    "get_output_kind",
    "kind_of",
    "kind_for_label",
    "register_output_kind",
    "unregister_output_kind",
    "decode_outputs",
    "output_scores",
]

#: An absent class label (the loss and the metrics skip it).
IGNORE_INDEX = -100


class OutputKind:
    """What the model does for one kind of label column. A new kind is one subclass, registered in this table with
    ``register_output_kind``; nothing else in the model, config or card changes.

    ``out`` below is one output of a head spec (``config.heads[task]["outputs"][i]``): ``name`` (the label column),
    ``kind`` and the kind's own fields.
    """

    #: The kind's name, as head specs write it.
    name: str = ""
    #: Registry label kinds (``LabelSpec.kind``) that become this output kind in ``MultiMedConfig.from_tasks``.
    label_kinds: tuple[str, ...] = ()
    #: Under late fusion, every modality has its own layer for the column and the predictions are combined (eq. 4).
    late: bool = True
    #: The name of an extra label tensor the loss reads beside the column (e.g. ``coords_mask``), if any.
    mask_key: str | None = None
    #: ``problem_type`` of a single-task, single-column config of this kind (sets ``id2label`` from its names).
    problem_type: str | None = None

    # ---------------------------------------------------------------- config
    def normalize(self, task: str, out: dict) -> dict:
        """``out`` checked and completed with its defaults (raises ``ValueError`` naming the task and column)."""
        return out

    def validate(self, task: str, out: dict, head: dict) -> None:
        """Checks of ``out`` against the rest of its head (its modalities)."""

    def from_label(self, label, *, task: str, modalities: list, vocabularies: Mapping,
                   regression_stats: Mapping) -> dict:
        """The output spec of a registry label column (``multimed_hf.tasks.LabelSpec``)."""
        return {"name": label.name, "kind": self.name}

    def describe(self, out: dict) -> str:
        """One line for the model card."""
        return f"`{out['name']}`: {self.name}"

    # ---------------------------------------------------------------- model
    def layer(self, out: dict, hidden_size: int, structure: dict) -> nn.Module:
        """The output layer over the fused features ``[n, hidden_size]``."""
        raise NotImplementedError(f"output kind {self.name!r} has no layer")

    def residue_modality(self, out: dict) -> str | None:
        """The modality whose per-residue (token) features the column is predicted from, if any."""
        return None

    def forward(self, layer: nn.Module, out: dict, features: torch.Tensor, residues) -> torch.Tensor:
        """The raw prediction from features ``[n, H]`` (``residues``: (features [n, L, H], mask [n, L]) or None)."""
        return layer(features)

    def to_output(self, out: dict, pred: torch.Tensor) -> torch.Tensor:
        """A raw prediction in the label's units."""
        return pred

    def check_labels(self, out: dict, value: torch.Tensor, batch: int) -> None:
        """Raise ``ValueError`` when ``labels[out['name']]`` is not what the loss reads."""

    def loss(self, out: dict, pred: torch.Tensor, target: torch.Tensor,
             mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """The column's loss over the rows that have a label; ``None`` when no row has one. A kind whose
        ``smooths(out)`` is true also takes ``label_smoothing`` (``MultiMedConfig.label_smoothing``)."""
        raise NotImplementedError(f"output kind {self.name!r} has no loss")

    def smooths(self, out: dict) -> bool:
        """Whether the output's loss is a single-label cross-entropy that label smoothing applies to."""
        return False

    def vote(self, predictions: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """omega of eq. 4 by vote over per-modality predictions ``[B, M, ...]`` (presence ``[B, M]``)."""
        raise NotImplementedError(f"output kind {self.name!r} cannot be combined by vote")

    # ---------------------------------------------------------------- predictions
    def decode(self, out: dict, values: torch.Tensor, known: torch.Tensor | None = None) -> dict[str, list]:
        """``{column: [value per row], ...}`` in the label's dataset representation, from outputs in label units;
        ``known`` is the optional per-row mask the kind reads (multilabel: the row's known names)."""
        raise NotImplementedError(f"output kind {self.name!r} has no decode")

    def scores(self, out: dict, values: torch.Tensor) -> torch.Tensor | None:
        """Each row's probability of each of ``out["names"]`` (``[N, K]``, in that order), from outputs in label
        units; None for a kind whose outputs are not scores of names."""
        return None


def _names(task: str, out: dict, kind: str, least: int) -> list[str]:
    names = [str(n) for n in out.get("names") or ()]
    if len(names) < least:
        raise ValueError(f"heads[{task!r}] output {out['name']!r}: a {kind} output needs at least {least} class "
                         f"names, got {names}")
    if len(set(names)) != len(names):
        raise ValueError(f"heads[{task!r}] output {out['name']!r}: class names repeat: {names}")
    return names


class ClassKind(OutputKind):
    """Single-label classification: logits ``[B, K]``. A registry free-text label (cell type names, VQA answers) is a
    class output over the vocabulary given when the config was built (``from_text``)."""

    name = "class"
    label_kinds = ("class", "text")
    problem_type = "single_label_classification"

    def normalize(self, task, out):
        out["names"] = _names(task, out, self.name, 2)
        out.setdefault("from_text", False)
        return out

    def from_label(self, label, *, task, modalities, vocabularies, regression_stats):
        if label.kind != "text":
            return {"name": label.name, "kind": self.name, "names": list(label.names)}
        vocab = vocabularies.get(label.name, vocabularies.get(task))
        if not vocab:
            raise ValueError(
                f"task {task!r}: label {label.name!r} is free text; give its vocabulary, e.g. "
                f"vocabularies={{{task!r}: [...]}} (closed answers / class names seen in training)"
            )
        return {"name": label.name, "kind": self.name, "names": list(vocab), "from_text": True}

    def describe(self, out):
        what = "answer vocabulary" if out.get("from_text") else "classes"
        return f"`{out['name']}`: {self.name}, {len(out['names'])} {what}"

    def layer(self, out, hidden_size, structure):
        return nn.Linear(hidden_size, len(out["names"]))

    def check_labels(self, out, value, batch):
        bad = (value != IGNORE_INDEX) & ((value < 0) | (value >= len(out["names"])))
        if value.ndim != 1 or bool(bad.any()):
            raise ValueError(f"labels[{out['name']!r}]: expected LongTensor[{batch}] of class indices in "
                             f"[0, {len(out['names'])}) or {IGNORE_INDEX}, got shape {list(value.shape)} "
                             f"with values {value[bad][:5].tolist()}")

    def loss(self, out, pred, target, mask=None, label_smoothing=0.0):
        valid = target != IGNORE_INDEX
        if not bool(valid.any()):
            return None
        return F.cross_entropy(pred[valid].float(), target[valid], label_smoothing=label_smoothing)

    def smooths(self, out):
        return True

    def vote(self, predictions, presence):
        """Each present modality votes its argmax; log(vote share), ties broken by the mean probability. In float32,
        and returned so: in bf16 the tie-break (1e-3 x a probability) rounded away and a 1-1 split took the lowest
        class index."""
        p = presence.float()
        count = p.sum(1).clamp(min=1)
        votes = F.one_hot(predictions.argmax(-1), predictions.shape[-1]).float()
        probs = predictions.float().softmax(-1)
        share = ((votes + 1e-3 * probs) * p[..., None]).sum(1) / count[:, None]
        return share.clamp(min=1e-6).log()

    def decode(self, out, values, known=None):
        names = out["names"]
        return {out["name"]: [names[i] for i in values.argmax(-1).tolist()]}

    def scores(self, out, values):
        return values.float().softmax(-1)


class MultilabelKind(OutputKind):
    """Several names per row, each present (1), absent (0) or unknown (NaN, ignored by the loss): logits ``[B, K]``.
    Decoded as the names with sigmoid > 0.5 and, under ``<column>_top1``, the top-scoring name among the row's known
    names (TorchXRayVision's convention)."""

    name = "multilabel"
    label_kinds = ("multilabel",)
    threshold = 0.5

    def normalize(self, task, out):
        out["names"] = _names(task, out, self.name, 1)
        out.setdefault("from_text", False)
        return out

    def from_label(self, label, *, task, modalities, vocabularies, regression_stats):
        return {"name": label.name, "kind": self.name, "names": list(label.names)}

    def describe(self, out):
        return f"`{out['name']}`: {self.name}, {len(out['names'])} classes"

    def layer(self, out, hidden_size, structure):
        return nn.Linear(hidden_size, len(out["names"]))

    def check_labels(self, out, value, batch):
        if tuple(value.shape) != (batch, len(out["names"])):
            raise ValueError(f"labels[{out['name']!r}]: expected FloatTensor[{batch}, {len(out['names'])}] (NaN = "
                             f"unknown), got shape {list(value.shape)}")

    def loss(self, out, pred, target, mask=None):
        valid = ~torch.isnan(target)
        if not bool(valid.any()):
            return None
        return F.binary_cross_entropy_with_logits(pred.float()[valid], target[valid].float())

    def vote(self, predictions, presence):
        """Per-label majority of the present modalities, as logit(vote share), computed in float32 (in bf16 / fp16
        ``1 - 1e-4`` rounds to 1 and a unanimous vote's logit was +inf)."""
        p = presence.float()
        count = p.sum(1).clamp(min=1)
        share = ((predictions > 0).float() * p[..., None]).sum(1) / count[:, None]
        return torch.logit(share.clamp(1e-4, 1 - 1e-4)).to(predictions.dtype)

    def decode(self, out, values, known=None):
        names = out["names"]
        scores = values.float()
        present = [[names[j] for j in row.nonzero().flatten().tolist()]
                   for row in torch.sigmoid(scores) > self.threshold]
        if known is not None:
            known = known.bool()
            if known.shape != scores.shape:
                raise ValueError(f"label_masks[{out['name']!r}]: expected known-name masks of shape "
                                 f"{list(scores.shape)}, got {list(known.shape)}")
            known = known | ~known.any(-1, keepdim=True)  # a row with no known name: every name may be its top-1
            scores = scores.masked_fill(~known, float("-inf"))
        top1 = [names[i] for i in scores.argmax(-1).tolist()]
        return {out["name"]: present, f"{out['name']}_top1": top1}

    def scores(self, out, values):
        return torch.sigmoid(values.float())


class RegressionKind(OutputKind):
    """One number per row: the head predicts the standardised value ``(y - target_mean) / target_std``; outputs
    are in the label's units."""

    name = "regression"
    label_kinds = ("regression",)

    def normalize(self, task, out):
        out["target_mean"] = float(out.get("target_mean", 0.0))
        out["target_std"] = float(out.get("target_std", 1.0))
        if not out["target_std"] > 0 or not math.isfinite(out["target_mean"]):
            raise ValueError(f"heads[{task!r}] output {out['name']!r}: target_std must be > 0 and target_mean "
                             f"finite, got {out['target_mean']}, {out['target_std']}")
        return out

    def from_label(self, label, *, task, modalities, vocabularies, regression_stats):
        mean, std = regression_stats.get(label.name, (0.0, 1.0))
        return {"name": label.name, "kind": self.name, "target_mean": mean, "target_std": std}

    def layer(self, out, hidden_size, structure):
        return nn.Linear(hidden_size, 1)

    def forward(self, layer, out, features, residues):
        return layer(features).squeeze(-1)

    def to_output(self, out, pred):
        # in float32: in bf16 a bone age of 256-512 months would round to 2-month steps the model did not make
        return pred.float() * out["target_std"] + out["target_mean"]

    def check_labels(self, out, value, batch):
        if value.ndim != 1:
            raise ValueError(f"labels[{out['name']!r}]: expected FloatTensor[{batch}] (NaN = absent), got shape "
                             f"{list(value.shape)}")

    def loss(self, out, pred, target, mask=None):
        valid = ~torch.isnan(target)
        if not bool(valid.any()):
            return None
        z = (target[valid].float() - out["target_mean"]) / out["target_std"]
        return F.mse_loss(pred[valid].float(), z)

    def vote(self, predictions, presence):
        """The median over the present modalities (of an even count, the mean of the two middle values:
        ``nanmedian`` gives the lower, so two modalities' median was their minimum)."""
        masked = predictions.float().masked_fill(~presence, float("nan"))
        return torch.nanquantile(masked, 0.5, dim=1).nan_to_num(0.0).to(predictions.dtype)

    def decode(self, out, values, known=None):
        return {out["name"]: [float(v) for v in values.reshape(len(values)).tolist()]}


class CoordsKind(OutputKind):
    """C-alpha coordinates ``[B, L, 3]`` in Angstrom, predicted from one modality's residue tokens (1..T-2) by a
    ``StructureHead``; the loss reads ``coords_mask`` (observed residues). Not combined under late fusion: it keeps
    one layer on the fused features."""

    name = "coords"
    label_kinds = ("coords",)
    late = False
    mask_key = "coords_mask"

    def normalize(self, task, out):
        if not isinstance(out.get("residue_modality"), str):
            raise ValueError(f"heads[{task!r}] output {out['name']!r}: a coords output names its 'residue_modality'")
        return out

    def validate(self, task, out, head):
        if out["residue_modality"] not in head["modalities"]:
            raise ValueError(f"heads[{task!r}] output {out['name']!r}: residue_modality "
                             f"{out['residue_modality']!r} is not among the task's modalities {head['modalities']}")

    def from_label(self, label, *, task, modalities, vocabularies, regression_stats):
        # the registry's label names the modality its residues follow (a one-modality task need not)
        residue = getattr(label, "residue_modality", "") or (modalities[0] if len(modalities) == 1 else "")
        return {"name": label.name, "kind": self.name, "residue_modality": residue}

    def describe(self, out):
        return f"`{out['name']}`: C-alpha coordinates (from `{out['residue_modality']}` residues)"

    def layer(self, out, hidden_size, structure):
        return StructureHead(hidden_size, **structure)

    def residue_modality(self, out):
        return out["residue_modality"]

    def forward(self, layer, out, features, residues):
        res, mask = residues
        return layer(res, mask, features)

    def check_labels(self, out, value, batch):
        if value.ndim != 3 or value.shape[-1] != 3:
            raise ValueError(f"labels[{out['name']!r}]: expected FloatTensor[{batch}, L, 3], got {list(value.shape)}")

    def loss(self, out, pred, target, mask=None):
        length = pred.shape[1]
        if target.shape[1] != length:
            raise ValueError(f"labels[{out['name']!r}] has {target.shape[1]} residues per row, the "
                             f"{out['residue_modality']!r} tokens give {length} (tokens 1..T-2)")
        if mask is not None and tuple(mask.shape) != tuple(target.shape[:2]):
            raise ValueError(f"labels[{self.mask_key!r}] has shape {list(mask.shape)}, expected "
                             f"{list(target.shape[:2])}")
        return structure_loss(pred, target, mask)

    def decode(self, out, values, known=None):
        return {out["name"]: values.float().tolist()}


_KINDS: KindTable[OutputKind] = KindTable(OutputKind, "output kind", "register_output_kind",
                                          "output kind {name!r} is not one of {known}")
#: Output kind name -> its model-side behaviour (read-only view; ``register_output_kind`` adds one).
OUTPUT_KIND_TABLE: Mapping[str, OutputKind] = _KINDS.view
#: The same table, under the name the config module has always exported (``kind in OUTPUT_KINDS`` works).
OUTPUT_KINDS = OUTPUT_KIND_TABLE


def register_output_kind(kind: OutputKind, *, replace: bool = False) -> OutputKind:
    """Add ``kind`` (an ``OutputKind`` instance) to the table; a name already taken raises unless ``replace``."""
    return _KINDS.register(kind, replace=replace)


def unregister_output_kind(name: str) -> OutputKind:
    """Remove and return the kind ``name`` (for tests and plug-ins that add a kind for a while)."""
    return _KINDS.unregister(name)


def get_output_kind(name: str) -> OutputKind:
    """The registered output kind ``name``; an unknown name raises ``ValueError`` naming the known kinds."""
    return _KINDS.get(name)


def kind_of(out: dict) -> OutputKind:
    """The kind of one head-spec output."""
    return get_output_kind(out["kind"])


def kind_for_label(label_kind: str) -> OutputKind:
    """The output kind a registry label kind becomes (``"text"`` -> ``"class"`` over a vocabulary)."""
    for kind in _KINDS.view.values():
        if label_kind in kind.label_kinds:
            return kind
    served = sorted({k for kind in _KINDS.view.values() for k in kind.label_kinds})
    raise ValueError(f"registry label kind {label_kind!r} has no output kind; the output kinds serve {served}")


for _kind in (ClassKind(), MultilabelKind(), RegressionKind(), CoordsKind()):
    register_output_kind(_kind)


def _as_tensor(value, where: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{where}: expected a tensor or an array, got {type(value).__name__} ({err})") from None


def decode_outputs(head_spec: dict, logits: Mapping[str, object],
                   label_masks: Mapping[str, object] | None = None) -> dict[str, list]:
    """Each label column's predictions, one per row, in the label's dataset representation.

    Args:
        head_spec: one task's head spec (``config.heads[task]``).
        logits: column -> that column's outputs in label units, as ``MultiMedOutput.logits`` gives them (tensors or
            NumPy arrays): class / multilabel logits ``[N, K]``, regression values ``[N]``, coordinates ``[N, L, 3]``.
        label_masks: optional column -> per-row mask the column's kind reads; a multilabel column takes the row's
            known names (``[N, K]`` booleans, e.g. ``~isnan(references)``) for its top-1.

    Returns:
        column -> list over rows: class -> the class name (a free-text label: the vocabulary string); multilabel ->
        the names with sigmoid > 0.5, plus ``"<column>_top1"`` -> the top-1 name (among the row's known names where
        given); regression -> a float in the label's units; coords -> ``L x 3`` nested lists of floats.
    """
    outputs = {o["name"]: o for o in head_spec["outputs"]}
    label_masks = dict(label_masks or {})
    decoded: dict[str, list] = {}
    for column, value in logits.items():
        if column not in outputs:
            raise ValueError(f"decode_outputs: logits has column {column!r}, which the head spec does not have; "
                             f"its columns are {sorted(outputs)}")
        out = outputs[column]
        values = _as_tensor(value, f"logits[{column!r}]")
        known = label_masks.get(column)
        known = None if known is None else _as_tensor(known, f"label_masks[{column!r}]")
        if known is not None and known.shape[0] != values.shape[0]:
            raise ValueError(f"decode_outputs: label_masks[{column!r}] has {known.shape[0]} rows, logits[{column!r}] "
                             f"has {values.shape[0]}")
        decoded.update(get_output_kind(out["kind"]).decode(out, values, known))
    return decoded


def output_scores(head_spec: dict, logits: Mapping[str, object]) -> dict[str, np.ndarray]:
    """Column -> each row's probability of each name (``[N, K]`` float32, in the head spec's ``names`` order:
    softmax for a class output, sigmoid for a multilabel one), for the columns whose kind scores names."""
    outputs = {o["name"]: o for o in head_spec["outputs"]}
    scores = {}
    for column, value in logits.items():
        out = outputs.get(column)
        probs = None if out is None else get_output_kind(out["kind"]).scores(out, _as_tensor(value, column))
        if probs is not None:
            scores[column] = probs.numpy().astype(np.float32)
    return scores
