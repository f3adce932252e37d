"""The paper's five model families (Table 1 rows) and the runs each one means for a set of tasks."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from multimed_hf.tasks import get_task

__all__ = [
    "FAMILIES",
    "FAMILY_VARIANTS",
    "FamilyError",
    "RunPlan",
    "parse_family",
    "register_family_variant",
    "plan_runs",
    "unplanned",
    "present_modalities",
]

#: Table 1's rows, named as in the issue. ``domain_specific``: a small model per task trained from scratch;
#: ``unimodal``: one encoder, one modality, one task; ``unimodal_multitask``: one model per modality over every
#: selected task that has it; ``multimodal``: all of a task's modalities, one task; ``multimodal_multitask``: one
#: model over every selected task, each reading all of its modalities.
FAMILIES = ("domain_specific", "unimodal", "unimodal_multitask", "multimodal", "multimodal_multitask")

#: Variants a family can carry after ``+`` (``multimodal_multitask+miles``): name -> what it is. The balancing and
#: distillation options (MILES, OGM-GE, G-Blend, MIND: ``training.balancing``) register themselves the first time a
#: family names a variant (``parse_family``); others add theirs with ``register_family_variant``.
FAMILY_VARIANTS: dict[str, str] = {}


class FamilyError(ValueError):
    """A family name, variant or family/task combination that has no run."""


def register_family_variant(name: str, description: str) -> None:
    """Make ``<family>+<name>`` a valid family (balancing and distillation options add themselves here)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise FamilyError(f"variant name {name!r}: expected lower-case letters, digits and underscores")
    if name in FAMILY_VARIANTS:
        raise FamilyError(f"family variant {name!r} is already registered ({FAMILY_VARIANTS[name]})")
    FAMILY_VARIANTS[name] = description


def _register_builtin_variants() -> None:
    """The package's own variants (``training.balancing``: miles, ogm_ge, gblend, mind), imported on first need so
    that planning plain families loads no torch."""
    from multimed_hf.training.balancing.variants import register_balancing_variants

    register_balancing_variants()


def parse_family(family: str) -> tuple[str, tuple[str, ...]]:
    """``"multimodal_multitask+miles"`` -> ``("multimodal_multitask", ("miles",))``; unknown names raise."""
    base, *variants = str(family).split("+")
    if base not in FAMILIES:
        import difflib

        close = difflib.get_close_matches(base, FAMILIES, n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise FamilyError(f"family {base!r} is not one of {FAMILIES}{hint}")
    if any(v not in FAMILY_VARIANTS for v in variants):
        _register_builtin_variants()
    unknown = [v for v in variants if v not in FAMILY_VARIANTS]
    if unknown:
        known = ", ".join(sorted(FAMILY_VARIANTS)) or "none registered"
        raise FamilyError(f"family {family!r}: unknown variant(s) {unknown} after '+'; known variants: {known}")
    if len(set(variants)) != len(variants):
        raise FamilyError(f"family {family!r} repeats a variant")
    return base, tuple(variants)


@dataclass(frozen=True)
class RunPlan:
    """One model to train: its tasks, the modalities each task reads, and the rows it keeps.

    ``row_modality[task]`` restricts that task's rows to those holding this modality (``unimodal`` families on tasks
    whose rows hold one of several modalities, e.g. OCT or fundus); absent = every row. ``encoders`` is
    ``"domain_specific"`` where the family fixes its own from-scratch models (``--encoders`` ignored), else ``None``
    (``--encoders`` decides).
    """

    name: str
    family: str
    tasks: tuple[str, ...]
    modalities: Mapping[str, tuple[str, ...]]
    row_modality: Mapping[str, str] = field(default_factory=dict)
    encoders: str | None = None
    variants: tuple[str, ...] = ()

    def encoders_for(self, requested: str) -> str:
        """The encoder preset this run uses when the user asked for ``requested``."""
        return self.encoders or requested

    @property
    def read_modalities(self) -> tuple[str, ...]:
        """Every modality the model reads, over its tasks, first seen first."""
        return tuple(dict.fromkeys(m for mods in self.modalities.values() for m in mods))

    def to_dict(self) -> dict:
        return {"name": self.name, "family": self.family, "tasks": list(self.tasks),
                "modalities": {t: list(m) for t, m in self.modalities.items()},
                "row_modality": dict(self.row_modality), "encoders": self.encoders, "variants": list(self.variants)}


def present_modalities(task: str, data_dir: str | Path | None = None) -> tuple[str, ...]:
    """The task's modalities that its training rows hold (registry order); without ``data_dir`` (or for data that
    cannot be counted, e.g. a Hub id), all of the registry's."""
    modalities = get_task(task).modalities
    if data_dir is None or not Path(data_dir).exists():
        return tuple(modalities)
    info = Path(data_dir) / task / "build_info.json"  # a rebuild rewrites it: the count is not reused then
    stamp = info.stat().st_mtime_ns if info.is_file() else None
    return _present_in(task, str(Path(data_dir).resolve()), stamp)


@functools.lru_cache(maxsize=256)
def _present_in(task: str, data_dir: str, stamp: int | None) -> tuple[str, ...]:
    """``present_modalities`` of a local folder, counted once per build (a benchmark plans 5 families x N tasks)."""
    from multimed_hf.training.loading import load_task_data, modality_counts

    modalities = get_task(task).modalities
    train = load_task_data(data_dir, [task], splits=("train",))[task].get("train")
    if train is None:
        return tuple(modalities)
    counts = modality_counts(train, task)
    return tuple(m for m in modalities if counts.get(m, 0) > 0)


def _safe(*parts: str) -> str:
    return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts if p)


def plan_runs(family: str, tasks: Sequence[str], data_dir: str | Path | None = None) -> list[RunPlan]:
    """The runs ``family`` means for ``tasks`` (modalities present in ``data_dir``'s training rows, when given).

    - ``domain_specific``: one from-scratch model per task over all of its modalities.
    - ``unimodal``: one run per (task, modality), on the task's rows that hold that modality, reading only it.
    - ``unimodal_multitask``: one model per modality over every selected task that has it (each on its rows with
      that modality); a modality only one selected task has gives no run (the same as ``unimodal``).
    - ``multimodal``: one model per task with at least two modalities, reading all of them on all rows; a task
      with one modality gives no run (the same as ``unimodal``).
    - ``multimodal_multitask``: one model over every selected task (at least two), each reading all its modalities.

    ``unplanned`` says, per task, why a family has no run for it.
    """
    base, variants = parse_family(family)
    tasks = list(dict.fromkeys(tasks))
    if not tasks:
        raise FamilyError("plan_runs: no tasks given")
    present = {t: present_modalities(t, data_dir) for t in tasks}
    empty = [t for t, ms in present.items() if not ms]
    if empty:
        raise FamilyError(f"tasks {empty} have no training rows with any of their modalities in {data_dir}")
    suffix = "+".join(variants)
    plans: list[RunPlan] = []
    if base == "domain_specific":
        plans = [RunPlan(_safe(t, suffix), family, (t,), {t: present[t]}, encoders="domain_specific",
                         variants=variants) for t in tasks]
    elif base == "unimodal":
        plans = [RunPlan(_safe(t, m, suffix), family, (t,), {t: (m,)},
                         row_modality={t: m} if len(present[t]) > 1 else {}, variants=variants)
                 for t in tasks for m in present[t]]
    elif base == "unimodal_multitask":
        modalities = list(dict.fromkeys(m for t in tasks for m in present[t]))
        for m in modalities:
            holders = tuple(t for t in tasks if m in present[t])
            if len(holders) < 2:
                continue
            plans.append(RunPlan(_safe(m, suffix), family, holders, {t: (m,) for t in holders},
                                 row_modality={t: m for t in holders if len(present[t]) > 1}, variants=variants))
    elif base == "multimodal":
        plans = [RunPlan(_safe(t, suffix), family, (t,), {t: present[t]}, variants=variants)
                 for t in tasks if len(present[t]) > 1]
    else:  # multimodal_multitask
        if len(tasks) > 1:
            plans = [RunPlan(_safe("all", suffix), family, tuple(tasks), {t: present[t] for t in tasks},
                             variants=variants)]
    return plans


def unplanned(family: str, tasks: Sequence[str], data_dir: str | Path | None = None) -> dict[str, str]:
    """Task -> why ``family`` has no run of its own for it (what the report prints instead of a number)."""
    base, _ = parse_family(family)
    covered = {t for plan in plan_runs(family, tasks, data_dir) for t in plan.tasks}
    reasons = {}
    for t in dict.fromkeys(tasks):
        if t in covered:
            continue
        if base == "multimodal":
            reasons[t] = "same as unimodal (one modality)"
        elif base == "unimodal_multitask":
            reasons[t] = "same as unimodal (no other selected task shares its modality)"
        elif base == "multimodal_multitask":
            reasons[t] = "same as multimodal (one task selected)"
        else:
            reasons[t] = "no run"
    return reasons
