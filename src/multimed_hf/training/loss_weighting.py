"""Loss weightings: how one task's column losses become the loss a batch trains on (static lambdas, uncertainty)."""

from __future__ import annotations

import difflib
from typing import Callable, ClassVar

import torch
from torch import nn

from multimed_hf.configuration_multimed import FUSED

__all__ = [
    "LOSS_WEIGHTINGS",
    "LossWeighting",
    "StaticWeighting",
    "UncertaintyWeighting",
    "UnknownLossWeightingError",
    "get_loss_weighting",
    "list_loss_weightings",
    "register_loss_weighting",
]

#: Name -> weighting class; `register_loss_weighting` adds to it (the balancing methods of issue 19 do).
LOSS_WEIGHTINGS: dict[str, type["LossWeighting"]] = {}


class UnknownLossWeightingError(KeyError, ValueError):
    """A loss-weighting name that the registry does not hold."""

    def __str__(self):
        return str(self.args[0])


def register_loss_weighting(name: str) -> Callable[[type], type]:
    """Class decorator: make a `LossWeighting` subclass available as ``name`` (a repeated name raises)."""

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, LossWeighting)):
            raise TypeError(f"register_loss_weighting({name!r}): expected a LossWeighting subclass, got {cls!r}")
        if name in LOSS_WEIGHTINGS:
            raise ValueError(f"a loss weighting named {name!r} is already registered ({LOSS_WEIGHTINGS[name]!r})")
        cls.name = name
        LOSS_WEIGHTINGS[name] = cls
        return cls

    return decorate


def list_loss_weightings() -> list[str]:
    return list(LOSS_WEIGHTINGS)


def get_loss_weighting(name: str, config, **kwargs) -> "LossWeighting":
    """The weighting called ``name`` built for a model config (``kwargs`` go to its class)."""
    cls = LOSS_WEIGHTINGS.get(name)
    if cls is None:
        close = difflib.get_close_matches(str(name), list(LOSS_WEIGHTINGS), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownLossWeightingError(f"unknown loss weighting {name!r}{hint} (known: {list(LOSS_WEIGHTINGS)})")
    return cls(config, **kwargs)


def _split(name: str) -> tuple[str, str]:
    """A `MultiMedOutput.losses` key -> (loss-weight key of the config, label column): ``"col"`` is the fused
    prediction's, ``"modality/col"`` a late-fusion modality's own."""
    if "/" in name:
        modality, column = name.split("/", 1)
        return modality, column
    return FUSED, name


class LossWeighting(nn.Module):
    """Turns a batch's `MultiMedOutput` (one task) into the training loss and the values to log.

    Subclasses implement `combine`; parameters they hold (learned weights) are trained with the model: the Trainer
    gives them their own optimizer group (``name="loss_weighting"``), averages their gradients across processes
    and saves them beside the model (``loss_weighting.safetensors``).
    """

    name: ClassVar[str] = ""
    #: True when `combine` reads the batch as well: the Trainer then calls ``combine(task, output, batch=...)`` with
    #: the batch's ``labels``, ``presence``, ``inputs`` and ``rows`` (each row's index in its task's training
    #: dataset, a LongTensor [B]; None outside training). Balancing and distillation weightings use it.
    reads_batch: ClassVar[bool] = False

    def __init__(self, config):
        super().__init__()
        self.heads = {t: [o["name"] for o in h["outputs"]] for t, h in config.heads.items()}

    def task_logs(self, task: str, output) -> dict[str, torch.Tensor]:
        """``loss_<task>`` (the model's lambda-weighted loss) and, for a task with several label columns,
        ``loss_<task>_<column>`` (each column's unweighted loss on the fused prediction) where the batch has one."""
        logs = {f"loss_{task}": output.loss.detach()}
        if len(self.heads.get(task, ())) > 1:
            for name, value in (output.losses or {}).items():
                if "/" not in name:
                    logs[f"loss_{task}_{name}"] = value.detach()
        return logs

    def combine(self, task: str, output) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss to train on, {log name: detached scalar tensor})."""
        raise NotImplementedError


@register_loss_weighting("static")
class StaticWeighting(LossWeighting):
    """The config's own weights: lambda_t (``"fused"``) and, under late fusion, lambda_(t,m) (paper eq. 5), i.e.
    the loss the model returns."""

    def combine(self, task: str, output):
        if output.loss is None:
            raise ValueError(f"task {task!r}: the model returned no loss; the batch needs `labels`")
        return output.loss, self.task_logs(task, output)


@register_loss_weighting("uncertainty")
class UncertaintyWeighting(LossWeighting):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018, eq. 7), one learned log variance
    s = log sigma^2 per loss term (task, column and, under late fusion or auxiliary heads, modality):

        L = sum_k lambda_k * (exp(-s_k) * L_k / 2 + s_k / 2)

    the form 1/(2 sigma^2) L + log sigma that LibMTL's ``UW`` uses for every kind of term; lambda_k is the config's
    static weight, s_k starts at ``init`` (0: every term starts at half its static weight). Logs
    ``log_variance_<task>[_<column>]`` beside the task losses.
    """

    def __init__(self, config, init: float = 0.0):
        super().__init__(config)
        keys = []
        for task, head in config.heads.items():
            for out in head["outputs"]:
                keys.append(f"{task}/{FUSED}/{out['name']}")
                if getattr(config, "modality_heads", config.fusion == "late") and out["kind"] != "coords":
                    keys.extend(f"{task}/{m}/{out['name']}" for m in head["modalities"])
        self.keys = keys
        self.index = {k: i for i, k in enumerate(keys)}
        self.loss_weights = {t: {k: config.loss_weight(t, k) for k in [FUSED, *h["modalities"]]}
                             for t, h in config.heads.items()}
        self.log_variances = nn.Parameter(torch.full((len(keys),), float(init)))

    def combine(self, task: str, output):
        losses = output.losses or {}
        # zero-valued anchor: keeps the graph (and every parameter's gradient) when no row of the batch has a label
        total = output.loss * 0.0 + self.log_variances.sum() * 0.0
        logs = self.task_logs(task, output)
        several = len(self.heads.get(task, ())) > 1
        for name, value in losses.items():
            modality, column = _split(name)
            s = self.log_variances[self.index[f"{task}/{modality}/{column}"]]
            weight = self.loss_weights[task][modality]
            total = total + weight * (0.5 * torch.exp(-s) * value.float() + 0.5 * s)
            if modality == FUSED:
                logs[f"log_variance_{task}_{column}" if several else f"log_variance_{task}"] = s.detach()
        return total, logs

    def extra_repr(self) -> str:
        return f"terms={len(self.keys)}"
