"""The ``<family>+<variant>`` options (miles, ogm_ge, gblend, mind): what each needs in the config and the Trainer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from multimed_hf.training.balancing.batches import BalancingError, unwrap_model
from multimed_hf.training.balancing.utilisation import multimodal_tasks

__all__ = [
    "BALANCING_VARIANTS",
    "BalancingVariant",
    "balancing_from_variant",
    "register_balancing_variants",
    "balanced_tasks",
    "rows_with_several_modalities",
]

#: Variant name -> what it is (the text ``multimed benchmark --families`` shows for ``<family>+<name>``).
BALANCING_VARIANTS = {
    "miles": "MILES (IJCNN 2025): the dominant modality's encoder learns at mu x its rate while the validation "
             "utilisation rates differ by more than tau",
    "ogm_ge": "OGM-GE (CVPR 2022): on-the-fly gradient modulation of the dominant modality's encoder, with Gaussian "
              "noise",
    "gblend": "Gradient-Blending (CVPR 2020): fused and per-modality head losses weighted by overfitting-to-"
              "generalisation ratios of probe runs",
    "mind": "MIND (TMLR 2025): per-modality heads distil unimodal teacher ensembles (cached soft predictions)",
}
#: Variants that need one prediction per modality (auxiliary heads under intermediate fusion).
_NEEDS_MODALITY_HEADS = ("ogm_ge", "gblend", "mind")


def balanced_tasks(modalities: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Task -> modalities, for the tasks of a run (task -> modalities read) that read two or more."""
    return {t: list(m) for t, m in modalities.items() if len(m) >= 2}


def rows_with_several_modalities(task: str, dataset, modalities: Sequence[str]) -> int | None:
    """How many rows of ``dataset`` (a task's split) hold two or more of ``modalities`` (an image modality where the
    row's image is present and its ``modality`` column names it; another where its input columns are filled);
    counted from Arrow, nothing decoded. None where rows cannot be counted (a streamed dataset)."""
    import numpy as np
    import pyarrow.compute as pc

    from multimed_hf.tasks import IMAGE_MODALITIES, get_task

    if not hasattr(dataset, "with_format") or not hasattr(dataset, "__len__"):
        return None
    spec = get_task(task)
    image = [c.name for c in spec.inputs if c.modality == "image"]
    needs: dict[str, tuple[list[str], str | None]] = {}  # modality -> (columns that must be filled, modality name)
    for m in modalities:
        own = [c.name for c in spec.inputs if c.modality == m]
        if own:
            needs[m] = (own, None)
        elif m in IMAGE_MODALITIES and image:
            needs[m] = ([image[0]], m)
        else:
            raise BalancingError(f"task {task!r} has no input column for modality {m!r} (it reads {spec.modalities})")
    columns = sorted({c for cs, _ in needs.values() for c in cs} | ({"modality"} if image else set()))
    table = dataset.select_columns([c for c in columns if c in dataset.column_names]).with_format("arrow")[:]
    count = np.zeros(len(table), dtype=np.int64)
    for m, (cs, name) in needs.items():
        if not all(c in table.column_names for c in cs) or (name and "modality" not in table.column_names):
            continue
        held = pc.is_valid(table.column(cs[0]))
        for c in cs[1:]:
            held = pc.and_(held, pc.is_valid(table.column(c)))
        if name is not None:
            held = pc.and_(held, pc.equal(table.column("modality"), name))
        count += pc.fill_null(held, False).to_numpy(zero_copy_only=False).astype(np.int64)
    return int((count >= 2).sum())


def register_balancing_variants() -> None:
    """Make ``<family>+miles``, ``+ogm_ge``, ``+gblend``, ``+mind`` valid families (``training.families``); a name
    already registered is left as it is, so calling this twice is harmless."""
    from multimed_hf.training.families import FAMILY_VARIANTS, register_family_variant

    for name, description in BALANCING_VARIANTS.items():
        if name not in FAMILY_VARIANTS:
            register_family_variant(name, description)


@dataclass
class BalancingVariant:
    """One balancing or distillation option, before and after the model exists.

    Use: ``variant.config_kwargs(fusion)`` goes into the model config (``auxiliary_heads``) before the model is
    built; ``variant.check(config, modalities)`` refuses models with no task reading two or more modalities;
    ``variant.trainer_kwargs(...)`` gives ``MultiMedTrainer``'s ``callbacks``, ``loss_weighting`` and the
    ``train_datasets`` to train on (MIND adds its teacher columns to them).

    ``options`` (all optional unless said):
        miles: ``threshold`` (tau), ``factor`` (mu), ``every_n_steps`` (None = each epoch), ``metric``,
            ``batch_size``.
        ogm_ge: ``alpha``, ``window`` ((start, end) fractions of training), ``noise`` (GE on/off).
        gblend: ``probe_steps``, ``max_rows`` (rows measured per probe), ``weights`` (skip the probes).
        mind: ``teachers`` (required: modality -> teachers, or task -> modality -> teachers; a teacher is a
            checkpoint folder, a model, or a (model, processor) pair), ``temperature``, ``weight``.
    """

    name: str
    options: dict = field(default_factory=dict)

    @property
    def description(self) -> str:
        return BALANCING_VARIANTS[self.name]

    def config_kwargs(self, fusion: str = "intermediate") -> dict[str, Any]:
        """Model config fields the variant needs (``{"auxiliary_heads": True}`` for the per-modality-head ones)."""
        if self.name not in _NEEDS_MODALITY_HEADS or fusion == "late":
            return {}
        if fusion == "early":
            raise BalancingError(f"{self.name} needs one prediction per modality, which early fusion (all modalities "
                                 f"in one encoder) does not make; use --fusion intermediate or late")
        return {"auxiliary_heads": True}

    def check(self, config, modalities: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
        """The tasks the variant balances (those reading two or more modalities); raises when there is none, or
        when the model lacks the per-modality heads the variant reads."""
        tasks = multimodal_tasks(config, modalities)
        if not tasks:
            read = {t: list((modalities or {}).get(t, h["modalities"])) for t, h in config.heads.items()}
            raise BalancingError(
                f"+{self.name} balances modalities, but no task of this run reads two or more (tasks and their "
                f"modalities: {read}); choose tasks whose rows hold several modalities (expression_prediction, "
                f"med_vqa, disease records with text and image) and a multimodal family")
        if self.name in _NEEDS_MODALITY_HEADS and not config.modality_heads:
            raise BalancingError(f"+{self.name} reads each modality's own prediction: build the model with "
                                 f"{self.config_kwargs(config.fusion)} (variant.config_kwargs)")
        return tasks

    def check_plan(self, modalities: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Before anything is built: the run's tasks (task -> modalities read) that the variant balances; raises
        when no task reads two or more modalities."""
        tasks = balanced_tasks(modalities)
        if not tasks:
            raise BalancingError(
                f"+{self.name} balances modalities, but no task of this run reads two or more (tasks and their "
                f"modalities: { {t: list(m) for t, m in modalities.items()} }); choose tasks whose rows hold several "
                f"modalities (expression_prediction, med_vqa, disease records with text and image) and a multimodal "
                f"family")
        return tasks

    def check_rows(self, train_datasets: Mapping[str, Any], modalities: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """Task -> its training rows holding two or more of the modalities it reads, for the balanced tasks; raises
        when no such row exists (e.g. diabetic_retinopathy: each row is an OCT scan or a fundus photograph, so
        masking one modality never changes a row and there is nothing to balance). Streamed data is not counted."""
        counts = {}
        for task, read in self.check_plan(modalities).items():
            if task in train_datasets:
                counts[task] = rows_with_several_modalities(task, train_datasets[task], read)
        if counts and all(n == 0 for n in counts.values()):
            raise BalancingError(
                f"+{self.name} balances modalities within rows, but no training row of {sorted(counts)} holds two or "
                f"more of the modalities it reads ({ {t: list(modalities[t]) for t in counts} }: each row has one); "
                f"choose tasks whose rows hold several modalities (expression_prediction, med_vqa, disease records "
                f"with text and image)")
        return {t: n for t, n in counts.items() if n is not None}

    def trainer_kwargs(self, *, model, processor, train_datasets: Mapping[str, Any],
                       eval_datasets: Mapping[str, Any] | None = None, training_args=None,
                       modalities: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
        """``{"callbacks": [...], "loss_weighting": LossWeighting | None, "train_datasets": {task: dataset}}`` for
        ``MultiMedTrainer`` (G-Blend runs its probes here; MIND computes and caches its teachers' predictions)."""
        config = unwrap_model(model).config
        tasks = self.check(config, modalities)
        options = dict(self.options)
        train = dict(train_datasets)
        evaluation = {t: d for t, d in (eval_datasets or {}).items() if t in tasks}
        if self.name == "miles":
            from multimed_hf.training.balancing.miles import MILESCallback

            if not evaluation:
                raise BalancingError(f"+miles measures utilisation on validation rows, but none were given for the "
                                     f"multimodal tasks {sorted(tasks)}; give eval_datasets (a validation split)")
            callback = MILESCallback(processor, evaluation, modalities=modalities, **options)
            return {"callbacks": [callback], "loss_weighting": None, "train_datasets": train}
        if self.name == "ogm_ge":
            from multimed_hf.training.balancing.ogm_ge import OGMGECallback, OGMGEWeighting

            weighting = OGMGEWeighting(config)
            seed = getattr(training_args, "seed", 0)
            return {"callbacks": [OGMGECallback(weighting, seed=seed, **options)], "loss_weighting": weighting,
                    "train_datasets": train}
        if self.name == "gblend":
            from multimed_hf.training.balancing.gblend import GBlendWeighting, estimate_gblend_weights

            weights = options.pop("weights", None)
            if weights is None:
                if training_args is None or not evaluation:
                    raise BalancingError("+gblend's probe runs need training_args and validation rows of the "
                                         "multimodal tasks (or give weights= to skip them)")
                weights = estimate_gblend_weights(model, processor, train, evaluation, training_args,
                                                  modalities=modalities, **options)
            return {"callbacks": [], "loss_weighting": GBlendWeighting(config, weights), "train_datasets": train}
        if self.name == "mind":
            from multimed_hf.training.balancing.mind import (MINDWeighting, add_teacher_columns,
                                                             soft_targets_from_columns, teacher_soft_targets)

            teachers = options.pop("teachers", None)
            if not teachers:
                raise BalancingError("+mind needs its teachers: teachers={modality: [unimodal checkpoint folders]} "
                                     "(the Table 1 'unimodal' runs serve)")
            nested = all(k in config.heads for k in teachers)
            temperature = options.get("temperature")
            targets = {}
            for task, read in tasks.items():
                if task not in train:
                    continue
                chosen = teachers.get(task, {}) if nested else teachers
                chosen = {m: t for m, t in chosen.items() if m in read}
                if not chosen:
                    continue
                extra = {"temperature": temperature} if temperature is not None else {}
                names = {o["name"]: o.get("names") for o in config.heads[task]["outputs"] if o.get("names")}
                soft = teacher_soft_targets(chosen, task, train[task], processor=processor, names=names, **extra)
                train[task] = add_teacher_columns(train[task], soft)
                targets[task] = soft_targets_from_columns(train[task], config, task)
            if not targets:
                raise BalancingError(f"+mind: no teacher reads a modality of the multimodal tasks {tasks}; teachers "
                                     f"were given for {sorted(teachers)}")
            return {"callbacks": [], "loss_weighting": MINDWeighting(config, targets, **options),
                    "train_datasets": train}
        raise BalancingError(f"unknown balancing variant {self.name!r}")  # unreachable: checked at construction


def balancing_from_variant(name: str, **options) -> BalancingVariant:
    """The option named by a family variant (``"miles"``, or ``"multimodal_multitask+miles"``: the part after the
    last ``+``), with its ``options`` (see `BalancingVariant`)."""
    variant = str(name).rsplit("+", 1)[-1]
    if variant not in BALANCING_VARIANTS:
        import difflib

        close = difflib.get_close_matches(variant, list(BALANCING_VARIANTS), n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise BalancingError(f"unknown balancing variant {variant!r}{hint} (known: {list(BALANCING_VARIANTS)})")
    return BalancingVariant(variant, dict(options))
