"""OGM-GE: on-the-fly gradient modulation of the dominant modality's encoder, with Gaussian noise (Peng et al. 2022)."""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from transformers import TrainerCallback

from multimed_hf.output_kinds import IGNORE_INDEX
from multimed_hf.training.balancing.batches import BalancingError
from multimed_hf.training.loss_weighting import StaticWeighting, register_loss_weighting

__all__ = ["OGM_ALPHA", "OGM_WINDOW", "ogm_coefficients", "modality_scores", "OGMGEWeighting", "OGMGECallback"]

#: alpha of eq. 10, k_u = 1 - tanh(alpha * rho_u) for the modality with rho_u > 1. OGM-GE's code leaves it to the
#: user (``--alpha``, required); its README gives "--alpha 0.1" as the default modulation setting and recommends 0.1
#: for VGGSound, 0.8 for CREMA-D (GeWu-Lab/OGM-GE_CVPR2022, README.md). We take the default, 0.1.
OGM_ALPHA = 0.1
#: When modulation runs, as fractions of training: the code's defaults modulate from epoch 0 to epoch 50 of 100
#: (main.py: --modulation_starts 0, --modulation_ends 50, --epochs 100), i.e. the first half.
OGM_WINDOW = (0.0, 0.5)


def ogm_coefficients(scores: Mapping[str, float], alpha: float = OGM_ALPHA) -> dict[str, float]:
    """k_m of OGM-GE's eq. 10 from each modality's confidence score s_m (the summed probability of the true class).

    rho_m = s_m / (mean of the other modalities' scores) (two modalities: rho_a = s_a / s_v, as in the paper);
    k_m = 1 - tanh(alpha * rho_m) where rho_m > 1 (the dominant modality is slowed), else 1. A modality with no
    score (None / NaN), or whose others have none, keeps 1. A published re-implementation divided a score by itself
    and so never modulated; here each ratio is a modality's score over the others'."""
    if not alpha > 0:
        raise BalancingError(f"OGM-GE alpha={alpha}: expected alpha > 0")
    valid = {m: float(s) for m, s in scores.items() if s is not None and math.isfinite(float(s))}
    out = {m: 1.0 for m in scores}
    for m, s in valid.items():
        others = [v for k, v in valid.items() if k != m]
        if not others or not sum(others) > 0:
            continue
        rho = s / (sum(others) / len(others))
        if rho > 1:
            out[m] = 1.0 - math.tanh(alpha * rho)
    return out


def modality_scores(output, labels: Mapping[str, torch.Tensor], head_spec: dict) -> dict[str, tuple[float, int]]:
    """Modality -> (sum over its rows of the score, rows) from ``MultiMedOutput.modality_logits``.

    Class columns: the softmax probability of the true class (OGM-GE's s_i, eq. 8). The paper scores only
    single-label classification; for the other kinds we choose: multilabel, the mean over known names of the
    probability given to the true value; regression, 1 / (1 + squared standardised error). Columns' scores of a
    row are summed over the columns it has a label in (one row, one count per column)."""
    if output.modality_logits is None:
        raise BalancingError("OGM-GE reads each modality's own prediction: build the model with "
                             "auxiliary_heads=True (intermediate fusion) or late fusion")
    outputs = {o["name"]: o for o in head_spec["outputs"]}
    presence = output.presence
    out: dict[str, tuple[float, int]] = {}
    for j, m in enumerate(head_spec["modalities"]):
        if m not in output.modality_logits:
            continue
        total, count = 0.0, 0
        for column, logits in output.modality_logits[m].items():
            if column not in labels:
                continue
            target, spec = labels[column], outputs[column]
            rows = presence[:, j].bool()
            logits = logits.detach().float()
            if spec["kind"] == "class":
                rows = rows & (target != IGNORE_INDEX)
                if bool(rows.any()):
                    p = F.softmax(logits[rows], -1).gather(1, target[rows].long().unsqueeze(1)).squeeze(1)
                    total, count = total + float(p.sum()), count + int(rows.sum())
            elif spec["kind"] == "multilabel":
                known = ~torch.isnan(target)
                rows = rows & known.any(1)
                if bool(rows.any()):
                    p = torch.sigmoid(logits[rows])
                    t = target[rows].float()
                    right = torch.where(t > 0.5, p, 1 - p).masked_fill(~known[rows], 0.0)
                    per_row = right.sum(1) / known[rows].sum(1)
                    total, count = total + float(per_row.sum()), count + int(rows.sum())
            elif spec["kind"] == "regression":
                rows = rows & ~torch.isnan(target)
                if bool(rows.any()):
                    z = (logits[rows] - target[rows].float()) / spec.get("target_std", 1.0)
                    total, count = total + float((1.0 / (1.0 + z ** 2)).sum()), count + int(rows.sum())
        out[m] = (total, count)
    return out


@register_loss_weighting("ogm_ge")
class OGMGEWeighting(StaticWeighting):
    """The static loss (fused head, plus each modality's own head weighted by lambda_(t,m)), which also records each
    modality's confidence score in the batch for `OGMGECallback` (``pending``: modality -> [score sum, rows]).

    OGM-GE reads each modality's score off its share of the fused classifier (concatenation fusion only); our
    fusions are not all linear, so the scores come from the modalities' own heads (``auxiliary_heads=True`` or
    late fusion), trained beside the fused head with lambda_(t,m) (default 1)."""

    reads_batch = True

    def __init__(self, config):
        super().__init__(config)
        if not getattr(config, "modality_heads", False):
            raise BalancingError("OGM-GE needs each modality's own prediction: set auxiliary_heads=True in the model "
                                 "config (intermediate fusion) or use late fusion")
        self.specs = dict(config.heads)
        self.pending: dict[str, list] = {}

    def combine(self, task: str, output, batch=None):
        loss, logs = super().combine(task, output)
        # only tasks reading two or more modalities have a balance to measure: a one-modality task of the same run
        # (its own head's score) would otherwise enter the ratio of another task's modalities
        several = len(self.specs[task]["modalities"]) >= 2
        if several and batch is not None and batch.get("labels") is not None and torch.is_grad_enabled():
            for m, (total, count) in modality_scores(output, batch["labels"], self.specs[task]).items():
                entry = self.pending.setdefault(m, [0.0, 0])
                entry[0] += total
                entry[1] += count
        return loss, logs

    def take_scores(self) -> dict[str, list]:
        """The scores recorded since the last call (modality -> [sum, rows]), cleared."""
        pending, self.pending = self.pending, {}
        return pending


class OGMGECallback(TrainerCallback):
    """On-the-fly Gradient Modulation with Generalisation Enhancement (OGM-GE; Peng, Wei, Deng, Wang & Hu, CVPR 2022).

    Before each optimizer step (after backward and clipping), from the modalities' scores of the step's batches
    (`OGMGEWeighting`): each encoder's gradient is multiplied by k_m (`ogm_coefficients`, eq. 10), and, with
    ``noise`` (GE), Gaussian noise N(0, std(g)^2) of the unmodulated gradient's own standard deviation is added to
    every encoder parameter, as the official code adds it to both modalities' encoders (main.py:
    ``grad * coeff + zeros_like(grad).normal_(0, grad.std() + 1e-8)``). The code modulates only 4-D (convolution)
    weights of its ResNets; our encoders are mostly transformers, so every encoder parameter is modulated.

    Scores are summed over the step's micro-batches and over processes, and the noise is drawn from a generator
    seeded by (``seed``, step), so every process applies the same update. An encoder read by several modalities
    takes the smallest of their coefficients. ``window``: (start, end) fractions of ``max_steps`` during which it
    modulates. Logs ``ogm_coefficient_<modality>``; ``history`` keeps (step, scores, coefficients).
    """

    def __init__(self, weighting: OGMGEWeighting, *, alpha: float = OGM_ALPHA, window: tuple = OGM_WINDOW,
                 noise: bool = True, seed: int = 0):
        if not isinstance(weighting, OGMGEWeighting):
            raise BalancingError(f"OGMGECallback needs the trainer's OGMGEWeighting, got {type(weighting).__name__}")
        start, end = window
        if not 0 <= start <= end <= 1:
            raise BalancingError(f"OGM-GE window={window}: expected 0 <= start <= end <= 1 (fractions of training)")
        ogm_coefficients({}, alpha)  # checks alpha
        self.weighting = weighting
        self.alpha, self.window, self.noise, self.seed = float(alpha), (float(start), float(end)), bool(noise), seed
        self.history: list[dict] = []
        self._unlogged = False  # a coefficient applied since the last log

    def _scores(self, device) -> dict[str, float]:
        pending = self.weighting.take_scores()
        names = sorted(pending)
        if torch.distributed.is_available() and torch.distributed.is_initialized() and \
                torch.distributed.get_world_size() > 1:
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, names)
            names = sorted(set().union(*gathered))
            values = torch.tensor([pending.get(m, [0.0, 0])[i] for m in names for i in (0, 1)], dtype=torch.float64,
                                  device=device)
            torch.distributed.all_reduce(values)
            pending = {m: [values[2 * k].item(), values[2 * k + 1].item()] for k, m in enumerate(names)}
        # the paper sums s_i over the batch; with rows missing a modality, sums over different row counts would not
        # compare, so each modality's score is its mean over the rows that have it (the same ratio when all do)
        return {m: pending[m][0] / pending[m][1] if pending[m][1] else math.nan for m in names}

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        device = next(model.parameters()).device if model is not None else None
        scores = self._scores(device)
        progress = state.global_step / state.max_steps if state.max_steps else 0.0
        if not scores or not (self.window[0] <= progress <= self.window[1]):
            return
        coefficients = ogm_coefficients(scores, self.alpha)
        self.history.append({"step": state.global_step, "scores": scores, "coefficients": coefficients})
        self._unlogged = True
        seed = int(self.seed) * 1_000_003 + state.global_step
        generators: dict = {}  # one per device, seeded alike: the noise is drawn where the gradient lives
        for group in optimizer.param_groups:
            name = str(group.get("name", ""))
            if not name.startswith("encoder:"):
                continue
            readers = [m for m in group.get("modalities", []) if m in coefficients]
            k = min((coefficients[m] for m in readers), default=1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                std = float(p.grad.std()) if p.grad.numel() > 1 else 0.0
                p.grad.mul_(k)
                if self.noise and std > 0:
                    device = p.grad.device
                    if device not in generators:
                        generators[device] = torch.Generator(device=device).manual_seed(seed)
                    draw = torch.randn(p.grad.shape, generator=generators[device], device=device,
                                       dtype=torch.float32)
                    p.grad.add_(draw.to(p.grad.dtype), alpha=std + 1e-8)

    def on_log(self, args, state, control, logs=None, **kwargs):
        # only a coefficient applied since the last log: outside the window nothing modulates, and nothing is logged
        if logs is not None and "loss" in logs and self._unlogged and state.log_history:
            self._unlogged = False
            state.log_history[-1].update({f"ogm_coefficient_{m}": round(k, 6)
                                          for m, k in self.history[-1]["coefficients"].items()})
