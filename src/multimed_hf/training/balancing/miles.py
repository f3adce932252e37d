"""MILES: the dominant modality's encoder learns at mu times its rate while the utilisation rates are unbalanced."""

from __future__ import annotations

import math
from typing import Mapping

from multimed_hf.training.balancing.batches import BalancingError, unwrap_model
from multimed_hf.training.balancing.utilisation import Utilisation, UtilisationCallback

__all__ = ["MILESCallback", "MILES_THRESHOLD", "MILES_FACTOR", "scheduler_with_base_lrs"]

#: tau: the spread max_m u_m - min_m u_m above which a task counts as unbalanced. MILES (Guerra-Manzanares & Shamout,
#: IJCNN 2025, arXiv 2510.17394) thresholds the difference of conditional utilisation rates, but the stored copies of
#: the paper that we could search held only its abstract and introduction, not the value: 0.1 is our choice (a
#: tenth of the score lost to one modality and not to the other).
MILES_THRESHOLD = 0.1
#: mu: the factor applied to the dominant modality's encoder learning rate. Not found in the paper's stored text
#: either (see above): 0.5 is our choice (the dominant encoder learns at half speed until the rates come together).
MILES_FACTOR = 0.5


def scheduler_with_base_lrs(lr_scheduler):
    """The torch scheduler holding ``base_lrs`` (accelerate wraps it as ``.scheduler``)."""
    for candidate in (lr_scheduler, getattr(lr_scheduler, "scheduler", None)):
        if candidate is not None and isinstance(getattr(candidate, "base_lrs", None), list):
            return candidate
    raise BalancingError(
        f"MILES scales the scheduler's base learning rates, but the scheduler {type(lr_scheduler).__name__} has no "
        f"base_lrs (ReduceLROnPlateau and GreedyLR recompute nothing from them); use a LambdaLR-based "
        f"lr_scheduler_type (linear, cosine, constant, ...)")


class MILESCallback(UtilisationCallback):
    """Modality-Informed Learning ratE Scheduler (MILES; Guerra-Manzanares & Shamout, IJCNN 2025, arXiv 2510.17394).

    After each utilisation measurement (`UtilisationCallback`: each epoch, or every N steps, on the validation
    rows), for every task with two or more modalities: when the spread of the rates u_m exceeds ``threshold`` (tau),
    the encoder of the modality with the highest rate (the dominant one) learns at ``factor`` (mu) times its
    scheduled rate; the others keep theirs; when the spread falls back to tau or below, every encoder returns to its
    own rate. An encoder dominant in any task is slowed (one factor, never compounded); an encoder shared by
    several modalities is slowed when one of them dominates. Undefined rates (no eligible row, score <= 0) change
    nothing.

    Trainer's schedulers recompute each group's rate from ``base_lrs`` at every step, so a direct edit of
    ``param_group["lr"]`` would be undone: MILES scales ``lr_scheduler.base_lrs`` of the optimizer groups named
    ``encoder:<key>`` (and ``encoder:<key>:no_decay``) and the groups' current rates by the same ratio, so the
    change holds from this step on and survives the scheduler's next steps.

    Logs ``utilisation_<task>_<modality>`` and ``miles_scale_<encoder>`` (1 or mu).
    """

    def __init__(self, processor, eval_datasets, *, threshold: float = MILES_THRESHOLD, factor: float = MILES_FACTOR,
                 **kwargs):
        if not 0 < factor < 1:
            raise BalancingError(f"MILES factor mu={factor}: expected 0 < mu < 1 (mu multiplies the dominant "
                                 f"modality's learning rate)")
        if not threshold >= 0:
            raise BalancingError(f"MILES threshold tau={threshold}: expected tau >= 0")
        super().__init__(processor, eval_datasets, **kwargs)
        self.threshold = float(threshold)
        self.factor = float(factor)
        self.scales: dict[str, float] = {}  # encoder key -> current factor
        self._base: dict[int, float] = {}  # optimizer group index -> its unscaled base rate (no "initial_lr")

    def decide(self, results: Mapping[str, Utilisation], model) -> dict[str, float]:
        """Encoder key -> the factor its rate takes now (1 or mu) from the tasks' utilisation rates."""
        core = unwrap_model(model)
        scales = {key: 1.0 for key in core.encoders}
        for utilisation in results.values():
            spread = utilisation.spread()
            dominant = utilisation.dominant()
            if dominant is None or not math.isfinite(spread) or spread <= self.threshold:
                continue
            scales[core.encoder_of[dominant]] = self.factor
        return scales

    def apply(self, scales: Mapping[str, float], optimizer, lr_scheduler) -> None:
        """Set every encoder group's base rate to its original times ``scales[encoder]`` (and its current rate by
        the same ratio); groups of other parameters are left alone."""
        scheduler = scheduler_with_base_lrs(lr_scheduler)
        groups = optimizer.param_groups
        if len(scheduler.base_lrs) != len(groups):
            raise BalancingError(f"the scheduler has {len(scheduler.base_lrs)} base rates for {len(groups)} optimizer "
                                 f"groups: was it built for this optimizer?")
        for i, group in enumerate(groups):
            name = str(group.get("name", ""))
            if not name.startswith("encoder:"):
                continue
            key = name.split(":")[1]
            new = float(scales.get(key, 1.0))
            # the unscaled rate: torch schedulers keep it as the group's "initial_lr", which the optimizer's state
            # carries through a checkpoint (so a resumed run knows the scaled base rate it restores is scaled)
            base = float(group.get("initial_lr", self._base.setdefault(i, scheduler.base_lrs[i])))
            old = scheduler.base_lrs[i] / base if base else 1.0
            scheduler.base_lrs[i] = base * new
            if not math.isclose(old, new):
                group["lr"] = group["lr"] * new / old
        self.scales = {k: float(v) for k, v in scales.items()}

    def on_utilisation(self, results, *, state=None, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if optimizer is None or lr_scheduler is None:
            raise BalancingError("MILES needs the trainer's optimizer and lr_scheduler (callback arguments)")
        scales = self.decide(results, model)
        self.apply(scales, optimizer, lr_scheduler)
        if state is not None and state.log_history:
            state.log_history[-1].update({f"miles_scale_{k}": v for k, v in sorted(scales.items())})
