"""The ``label_text`` output kind: classes scored by the cosine similarity of the fused features to the embeddings of
class-describing texts (zero-shot transfer). Flat, with relative imports only: copied as remote code."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .output_kinds import IGNORE_INDEX, OUTPUT_KIND_TABLE, OutputKind, get_output_kind, register_output_kind

__all__ = ["LabelTextKind", "LabelTextLayer", "label_text_embeddings", "INACTIVE_LOGIT", "LABEL_TEXT"]

#: The kind's name in head specs.
LABEL_TEXT = "label_text"
#: The logit of a class that is not active (finite, so a softmax over a row stays defined).
INACTIVE_LOGIT = -1.0e4
#: CLIP's initial temperature, 1 / 0.07, as a log; the layer learns an offset from it (stored zero-initialised).
_LOG_SCALE_INIT = math.log(1 / 0.07)
_LOG_SCALE_MAX = math.log(100.0)


class LabelTextLayer(nn.Module):
    """``exp(s) * cos(features, e_c) + b`` for each class text embedding ``e_c``: a learned temperature and bias and no
    class-sized weight, so a trained layer scores any set of class texts (held-out classes included)."""

    extra_parameters = {"logit_scale": "zeros", "bias": "zeros"}

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor, class_embeddings: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        scale = (self.logit_scale + _LOG_SCALE_INIT).clamp(max=_LOG_SCALE_MAX).exp()
        z = F.normalize(features.float(), dim=-1)
        logits = scale * z @ class_embeddings.float().T + self.bias
        return logits.masked_fill(~active, INACTIVE_LOGIT).to(features.dtype)


def _check_names(task: str, out: dict, field: str, values, least: int) -> list[str]:
    values = [str(v) for v in values or ()]
    if len(values) < least or len(set(values)) != len(values):
        raise ValueError(f"heads[{task!r}] output {out['name']!r}: {field!r} must list at least {least} distinct "
                         f"names, got {values}")
    return values


class LabelTextKind(OutputKind):
    """A class (or multilabel) column scored against its classes' texts, read by the model's text encoder and text
    projection into the shared space where the fused features live (so the model needs a ``text`` encoder and
    intermediate or late fusion).

    Spec fields: ``names`` (every class, in the label's encoding order: the registry's names or the vocabulary),
    ``texts`` (one describing text per name; default the names), ``active`` (the names scored; others get
    ``INACTIVE_LOGIT`` and their texts are never encoded: the held-out classes during alignment training, the seen
    ones in a zero-shot evaluation), ``text_inputs`` (the texts tokenized by the text processor: key -> one list per
    name), ``modality`` (the encoder that reads the texts, default ``"text"``), ``multilabel`` (a multilabel column:
    sigmoid scores and BCE instead of softmax and cross-entropy).

    Never chosen from the registry (``label_kinds`` is empty): ``multimed_hf.fewshot.zeroshot`` puts it on a head.
    """

    name = LABEL_TEXT
    label_kinds = ()
    late = False  # one layer on the fused features under every fusion
    problem_type = "single_label_classification"

    def normalize(self, task, out):
        out["names"] = _check_names(task, out, "names", out.get("names"), 2)
        texts = [str(t) for t in out.get("texts") or out["names"]]
        if len(texts) != len(out["names"]):
            raise ValueError(f"heads[{task!r}] output {out['name']!r}: {len(texts)} texts for {len(out['names'])} "
                             f"names; give one describing text per class")
        out["texts"] = texts
        out["active"] = _check_names(task, out, "active", out.get("active") or out["names"], 1)
        unknown = sorted(set(out["active"]) - set(out["names"]))
        if unknown:
            raise ValueError(f"heads[{task!r}] output {out['name']!r}: active classes {unknown} are not among its "
                             f"names {out['names']}")
        inputs = out.get("text_inputs")
        if not isinstance(inputs, dict) or "input_ids" not in inputs or any(
                len(v) != len(out["names"]) for v in inputs.values()):
            raise ValueError(f"heads[{task!r}] output {out['name']!r}: 'text_inputs' must map 'input_ids' (and the "
                             f"text processor's other keys) to one token list per class ({len(out['names'])}); build "
                             f"the spec with multimed_hf.fewshot.zeroshot.label_text_output")
        out.setdefault("modality", "text")
        out["multilabel"] = bool(out.get("multilabel", False))
        out.setdefault("from_text", False)
        return out

    def validate(self, task, out, head):
        pass  # the text encoder is the model's, checked when the embeddings are made (label_text_embeddings)

    def describe(self, out):
        return (f"`{out['name']}`: label text, cosine similarity to the text embeddings of {len(out['names'])} "
                f"classes ({len(out['active'])} active)")

    def layer(self, out, hidden_size, structure):
        return LabelTextLayer()

    def forward(self, layer, out, features, residues):
        if residues is None:
            raise ValueError(f"output {out['name']!r} ({LABEL_TEXT}): no class text embeddings were given (the model "
                             f"makes them with label_text_embeddings)")
        active = torch.tensor([n in set(out["active"]) for n in out["names"]], device=features.device)
        return layer(features, residues, active)

    def _base(self, out) -> OutputKind:
        return get_output_kind("multilabel" if out.get("multilabel") else "class")

    def check_labels(self, out, value, batch):
        self._base(out).check_labels(out, value, batch)

    def smooths(self, out):
        return not out.get("multilabel")

    def loss(self, out, pred, target, mask=None, label_smoothing=0.0):
        active = torch.tensor([n in set(out["active"]) for n in out["names"]], device=pred.device)
        if out.get("multilabel"):
            valid = ~torch.isnan(target) & active
            if not bool(valid.any()):
                return None
            return F.binary_cross_entropy_with_logits(pred.float()[valid], target[valid].float())
        valid = target != IGNORE_INDEX
        valid = valid & active[target.clamp(min=0)]  # a row of an inactive class teaches nothing (held out)
        if not bool(valid.any()):
            return None
        # over the active classes only: the inactive ones' logits are constants, and label smoothing spread over
        # them added about smoothing x inactive / classes x 1e4 to the loss (and pulled every active logit down)
        position = torch.cumsum(active.long(), 0) - 1
        return F.cross_entropy(pred[valid][:, active].float(), position[target[valid]],
                               label_smoothing=label_smoothing)

    def decode(self, out, values, known=None):
        return self._base(out).decode(out, values, known)

    def scores(self, out, values):
        """The base kind's probabilities over the active classes (softmax among them; sigmoid where multilabel);
        NaN for the inactive ones, which are not scored."""
        active = torch.tensor([n in set(out["active"]) for n in out["names"]], device=values.device)
        logits = values.float()
        if out.get("multilabel"):
            probs = torch.sigmoid(logits)
        else:
            probs = torch.zeros_like(logits)
            probs[:, active] = logits[:, active].softmax(-1)
        return probs.masked_fill(~active, float("nan"))


def label_text_embeddings(model: nn.Module, spec: dict) -> dict[str, torch.Tensor]:
    """Column -> ``[K, H]`` unit embeddings of the active class texts (zeros for the others) for each ``label_text``
    output of ``spec`` (one task's head spec): the texts through the model's text encoder and text projection, with
    gradients while training (CLIP's contrast of images with the label names' texts)."""
    found = {}
    for out in spec["outputs"]:
        if out["kind"] != LABEL_TEXT:
            continue
        modality = out.get("modality", "text")
        projections = getattr(model, "projections", None)
        if projections is None or modality not in projections:
            raise ValueError(f"output {out['name']!r} ({LABEL_TEXT}) reads its class texts with the {modality!r} "
                             f"encoder and projection; the model has "
                             f"{sorted(projections) if projections is not None else 'no projections (early fusion)'}")
        projection = projections[modality]
        rows = [i for i, name in enumerate(out["names"]) if name in set(out["active"])]
        device = projection.weight.device
        tensors = {k: torch.tensor([v[i] for i in rows], dtype=torch.long, device=device)
                   for k, v in out["text_inputs"].items()}
        pooled = model._encode(modality, tensors)[0]
        embedded = F.normalize(projection(pooled).float(), dim=-1)
        full = embedded.new_zeros(len(out["names"]), embedded.shape[-1])
        full[rows] = embedded
        found[out["name"]] = full
    return found


if LABEL_TEXT not in OUTPUT_KIND_TABLE:
    register_output_kind(LabelTextKind())
