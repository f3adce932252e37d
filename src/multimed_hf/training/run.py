"""Train and evaluate one run (``multimed train`` / ``multimed evaluate``): model, processor, card, metrics, predictions."""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from multimed_hf.training.arguments import (
    MultiMedArguments,
    has_accelerator,
    make_training_arguments,
    overrides_read,
    parse_evaluate_args,
    parse_train_args,
    task_modalities,
    training_defaults,
)
from multimed_hf.training.data import draft_decode
from multimed_hf.training.families import FamilyError, RunPlan, plan_runs, unplanned
from multimed_hf.training.loading import sample_rows
from multimed_hf.training.outputs import (
    METRICS_LONG,
    PREDICTIONS_FOLDER,
    RUN_INFO,
    flat_metrics,
    metric_records,
    run_info,
    write_json,
    write_predictions,
)

__all__ = [
    "RunResult",
    "RunError",
    "train_model",
    "evaluate_checkpoint",
    "train_main",
    "evaluate_main",
    "choose_plan",
    "build_trainer",
    "plan_flag_notes",
    "flag_changing_no_plan",
]

logger = logging.getLogger(__name__)
ALL_RESULTS = "all_results.json"


class RunError(ValueError):
    """A run that cannot start: no plan for the family and tasks, several plans and none chosen, missing splits."""


@dataclass
class RunResult:
    """What a run wrote: ``metrics`` is ``all_results.json``, ``records`` is ``metrics_long.json``."""

    output_dir: Path
    metrics: dict = field(default_factory=dict)
    records: list[dict] = field(default_factory=list)
    plan: RunPlan | None = None


# ---------------------------------------------------------------------- arguments
def _split_overrides(overrides: Mapping[str, Any]) -> tuple[dict, dict]:
    ours = {f.name for f in dataclasses.fields(MultiMedArguments)}
    return ({k: v for k, v in overrides.items() if k in ours},
            {k: v for k, v in overrides.items() if k not in ours})


def _resolve(args: MultiMedArguments | None, training_args, overrides: Mapping[str, Any],
             plan: RunPlan | None = None):
    ours, theirs = _split_overrides(overrides)
    if args is None:
        args = MultiMedArguments(**ours)
    elif ours:
        args = dataclasses.replace(args, **ours)
    if training_args is None:
        output_dir = theirs.pop("output_dir", None)
        if output_dir is None:
            raise RunError("train_model: give output_dir= (or training_args=TrainingArguments(output_dir=...))")
        modalities = plan.read_modalities if plan is not None else task_modalities(args.tasks)
        training_args = make_training_arguments(output_dir, family=args.family, encoders=args.encoders,
                                                modalities=modalities, **theirs)
    elif theirs:
        training_args = dataclasses.replace(training_args, **theirs)
    return args, training_args


def choose_plan(args: MultiMedArguments) -> RunPlan:
    """The one plan ``args`` asks for (``args.plan``, or the family's only plan for the tasks)."""
    local = args.data if Path(args.data).exists() else None
    plans = plan_runs(args.family, args.tasks, local)
    if not plans:
        reasons = unplanned(args.family, args.tasks, local)
        raise RunError(f"family {args.family!r} has no run of its own for tasks {args.tasks}: "
                       + "; ".join(f"{t}: {r}" for t, r in reasons.items()))
    if args.plan is not None:
        chosen = [p for p in plans if p.name == args.plan]
        if not chosen:
            raise RunError(f"--plan {args.plan!r} is not one of the plans of family {args.family!r} for "
                           f"{args.tasks}: {[p.name for p in plans]}")
        return chosen[0]
    if len(plans) > 1:
        raise RunError(f"family {args.family!r} means {len(plans)} runs for {args.tasks}: "
                       f"{[p.name for p in plans]}; pick one with plan= (train_main runs them all)")
    return plans[0]


def _label_smoothing_here(training_args, config, plan_name: str, chosen_here: bool, preset_default: float = 0.0):
    """``training_args`` for one plan whose model ``config`` may have no single-label class output: there
    ``--label_smoothing_factor`` is left at 0, quietly where it is the encoder preset's default
    (``preset_default``), with one warning line in a family's or benchmark grid's plan (the others apply it), and
    the one run asked for is refused (it would change nothing)."""
    factor = getattr(training_args, "label_smoothing_factor", 0)
    if not factor or config.smoothed_outputs():
        return training_args
    if factor == preset_default:
        logger.info("plan %r has no single-label class output: trained without the preset's label smoothing",
                    plan_name)
    elif chosen_here:
        raise RunError(f"--label_smoothing_factor {factor} smooths single-label class outputs, and plan "
                       f"{plan_name!r} has none (multilabel, regression and coordinate outputs are not smoothed): it "
                       f"would change nothing; leave it out")
    else:
        logger.warning("--label_smoothing_factor %s smooths single-label class outputs, and plan %r has none: not "
                       "applied to this run", factor, plan_name)
    return dataclasses.replace(training_args, label_smoothing_factor=0.0)


def _check_rows_for_modality_dropout(rate: float, train: Mapping[str, Any], modalities: Mapping[str, Sequence[str]],
                                     plan_name: str, chosen_here: bool) -> None:
    """``--modality_dropout`` drops a modality only from rows holding two or more: where the tasks read several but
    no training row holds two (diabetic_retinopathy: an OCT scan or a fundus photograph a row), the one run asked for
    is refused (it would change nothing) and a family's or grid's plan logs one warning line. Streamed rows are not
    counted."""
    from multimed_hf.training.balancing.variants import rows_with_several_modalities

    counts = [rows_with_several_modalities(t, train[t], read) for t, read in modalities.items()
              if len(read) > 1 and t in train]
    if not counts or any(n is None or n > 0 for n in counts):
        return
    why = (f"--modality_dropout {rate} drops modalities of rows holding several, never a row's last one, and no "
           f"training row of plan {plan_name!r} holds two of the modalities it reads "
           f"({ {t: list(m) for t, m in modalities.items()} }: each row has one)")
    if chosen_here:
        raise RunError(f"{why}: it would change nothing; leave it out")
    logger.warning("%s: it changes nothing in this run", why)


def plan_flag_notes(args: MultiMedArguments, plan: RunPlan) -> dict[str, str]:
    """Flag -> why it changes nothing in ``plan``: ``--modality_dropout`` where no task reads two modalities (a row's
    last modality is never dropped), ``--sampling`` / ``--sampling_size_cap`` with one task (every batch is that
    task's), ``--uint8_images true`` / ``--draft_images`` where no image modality is read, ``--processor_overrides``
    of modalities the plan does not read (left out of it), the task-keyed flags (``--task_batch_sizes``,
    ``--holdout_classes``, ``--class_texts``) naming none of its tasks. ``train_model`` refuses them for the plan it
    chose itself and warns where a caller handed it one plan of several (a family's, a benchmark grid's);
    ``multimed train`` refuses a flag that no plan of the family uses."""
    from multimed_hf.tasks import IMAGE_MODALITIES

    read = plan.read_modalities
    where = f"plan {plan.name!r} ({', '.join(f'{t}: {list(m)}' for t, m in plan.modalities.items())})"
    notes = {}
    if args.modality_dropout > 0 and all(len(m) < 2 for m in plan.modalities.values()):
        notes["modality_dropout"] = (f"--modality_dropout {args.modality_dropout} drops modalities of rows holding "
                                     f"several, never a row's last one, and {where} reads one modality per task")
    if len(plan.tasks) < 2:
        for flag, given in (("sampling", args.sampling != "proportional"),
                            ("sampling_size_cap", args.sampling_size_cap is not None)):
            if given:
                notes[flag] = (f"--{flag} {getattr(args, flag)} shares batches out between tasks, and {where} trains "
                               f"one task")
    images = any(m in IMAGE_MODALITIES for m in read)
    for flag, on in (("uint8_images", args.uint8_images), ("draft_images", args.draft_images)):
        if on and not images:
            notes[flag] = f"--{flag} true changes how images are read, and {where} reads no image modality"
    kept = overrides_read(args.processor_overrides, read)
    unread = [m for m in args.processor_overrides or {} if m not in kept]
    if unread:
        notes["processor_overrides"] = f"--processor_overrides of {unread}: {where} does not read them"
    from multimed_hf.training.arguments import held_out_classes

    task_keyed = {"task_batch_sizes": args.task_batch_sizes, "class_texts": args.class_texts,
                  "holdout_classes": held_out_classes(args.holdout_classes or {})}
    for flag, mapping in task_keyed.items():  # each plan takes the entries of its own tasks
        if mapping and not _for_plan(mapping, plan):
            notes[flag] = f"--{flag} names {list(mapping)}, and {where} trains none of them"
    return notes


def flag_changing_no_plan(notes: Sequence[Mapping[str, str]]) -> tuple[str, str] | None:
    """``(flag, why)`` of the first flag that changes none of the plans (``plan_flag_notes`` of each), else None: a
    flag that changes some of them is applied there, and ``train_model`` warns for the others."""
    unused = [flag for flag in (notes[0] if notes else {}) if all(flag in n for n in notes)]
    return (unused[0], notes[0][unused[0]]) if unused else None


#: Family variants that read whole training splits (G-Blend's probe runs and loss measurements, MIND's teacher
#: predictions stored as columns): a streamed split has no length and no random access.
RANDOM_ACCESS_VARIANTS = ("gblend", "mind")


# ---------------------------------------------------------------------- pieces
def _capped_stream_sizes(train: Mapping[str, Any], max_train_samples: int, world_size: int) -> dict[str, int]:
    """Sizes of streamed training splits cut by ``--max_train_samples``: each process keeps the first N rows of its
    own shard (``take`` after ``split_dataset_by_node``), so a split counts at most N x processes rows; the task
    sampler's weights and lockstep quotas follow these, not the whole splits' recorded sizes."""
    from multimed_hf.training.data import streamed_size

    cap = int(max_train_samples) * max(1, int(world_size))
    return {t: min(streamed_size(ds) or cap, cap) for t, ds in train.items()}


def _for_plan(mapping, plan: RunPlan) -> dict:
    """The entries of a task-keyed flag (``--task_batch_sizes``, ``--holdout_classes``, ``--class_texts``) for the
    tasks ``plan`` trains: a family's or a benchmark grid's other plans hold the rest."""
    return {task: value for task, value in (mapping or {}).items() if task in plan.tasks}


def _sampling(args: MultiMedArguments, plan: RunPlan):
    """Task sampling of the run; its seed is the Trainer's (``data_seed``, else ``seed``)."""
    from multimed_hf.training.sampling import TaskSampling

    return TaskSampling(strategy=args.sampling, temperature=args.sampling_temperature,
                        size_cap=args.sampling_size_cap, batch_sizes=_for_plan(args.task_batch_sizes, plan) or None,
                        lockstep=args.task_lockstep)


def build_trainer(model, training_args, processor, *, train_datasets=None, eval_datasets=None, modalities=None,
                  sampling=None, loss_weighting: Any = "static", callbacks=None, verbose: bool = True,
                  trainer_class=None, **trainer_kwargs):
    """The ``MultiMedTrainer`` of a run (the training layer's Trainer; see training/trainer.py), or
    ``trainer_class`` (a subclass, e.g. the alignment trainer) with ``trainer_kwargs``. ``verbose=False`` removes
    the callback that prints each log line (with ``disable_tqdm``); the lines stay in ``state.log_history``."""
    from transformers.trainer_callback import PrinterCallback

    from multimed_hf.training.trainer import MultiMedTrainer

    trainer = (trainer_class or MultiMedTrainer)(
        model=model, args=training_args, train_datasets=train_datasets, eval_datasets=eval_datasets,
        processor=processor, sampling=sampling, loss_weighting=loss_weighting, modalities=modalities,
        callbacks=callbacks, **trainer_kwargs)
    if not verbose:
        trainer.remove_callback(PrinterCallback)
    return trainer


def _evaluate_splits(trainer, datasets: Mapping[str, Mapping[str, Any]], splits: Sequence[str], output_dir: Path,
                     bootstrap_samples: int, seed: int, write: bool) -> list[dict]:
    """Predict every task's ``splits``; write predictions parquet files; return the long metric records."""
    records = []
    for split in splits:
        for task, by_split in datasets.items():
            if split not in by_split:
                continue
            predictions = trainer.predict_task(task, by_split[split], split=split)
            records += metric_records(predictions, split, bootstrap_samples=bootstrap_samples, seed=seed)
            if write:
                write_predictions(predictions, by_split[split],
                                  output_dir / PREDICTIONS_FOLDER / f"{task}-{split}.parquet")
    return records


def _card_metrics(records: Sequence[dict], split: str = "test") -> dict:
    out: dict[str, dict] = {}
    for r in records:
        if r["split"] == split and r["value"] is not None:
            name = f"{r['label']}/{r['metric']}" if r["label"] else r["metric"]
            out.setdefault(r["task"], {})[name] = round(r["value"], 4)
    return out


def _write_results(trainer, output_dir: Path, records: list[dict], extra: Mapping[str, Any]) -> dict:
    metrics = {**extra, **flat_metrics(records)}
    if trainer.is_world_process_zero():
        for split in sorted({r["split"] for r in records}):  # train_results.json keeps Trainer's train_loss beside
            trainer.save_metrics(split, {k: v for k, v in metrics.items() if k.startswith(f"{split}_")})
        write_json(output_dir / ALL_RESULTS, metrics)
        write_json(output_dir / METRICS_LONG, records)
    return metrics


# ---------------------------------------------------------------------- train
def _balancing(args: MultiMedArguments, plan: RunPlan):
    """The balancing / distillation option the plan's family carries (``+miles`` ...), with its flags, or None."""
    from multimed_hf.training.arguments import variant_options
    from multimed_hf.training.families import parse_family

    _, variants = parse_family(plan.family)
    if not variants:
        return None
    from multimed_hf.training.balancing import BALANCING_VARIANTS, balancing_from_variant

    chosen = [v for v in variants if v in BALANCING_VARIANTS]
    if len(chosen) > 1:
        raise RunError(f"family {plan.family!r} carries several balancing variants {chosen}: each one changes the "
                       f"loss or the learning rates its own way; train one variant per run")
    if not chosen:
        return None
    if args.align_label_text:
        raise RunError(f"--align_label_text trains label-text heads, which +{chosen[0]} does not balance; train the "
                       f"two in separate runs")
    if args.loss_weighting != "static" and chosen[0] != "miles":
        raise RunError(f"--loss_weighting {args.loss_weighting!r}: +{chosen[0]} brings its own loss weighting; "
                       f"leave --loss_weighting static")
    return balancing_from_variant(chosen[0], **variant_options(args, chosen[0]))


def _alignment_settings(args: MultiMedArguments, plan: RunPlan):
    from multimed_hf.fewshot.zeroshot import AlignmentSettings
    from multimed_hf.training.arguments import held_out_classes

    return AlignmentSettings(held_out=_for_plan(held_out_classes(args.holdout_classes or {}), plan),
                             class_texts=_for_plan(args.class_texts, plan), temperature=args.align_temperature,
                             pair_weight=args.align_pair_weight)


def _pairs(args: MultiMedArguments):
    """The image-caption training pairs of ``--align_pairs`` (its train split), or None."""
    if not args.align_pairs:
        return None
    from multimed_hf.training.loading import load_task_data

    found = load_task_data(args.data, [args.align_pairs], splits=("train",))[args.align_pairs]
    if "train" not in found:
        raise RunError(f"--align_pairs {args.align_pairs!r}: {args.data!r} has no train split of it (build it: "
                       f"multimed build {args.align_pairs} ...)")
    pairs = found["train"]
    if args.max_align_pairs is not None:
        pairs = pairs.select(range(min(args.max_align_pairs, len(pairs))))
    return pairs


def _inactive_classes(config, tasks: Sequence[str]) -> dict[str, list[str]]:
    """Per task, the classes its label-text heads name but do not score (``active``: held out of the training by
    ``--holdout_classes``)."""
    found = {}
    for task in tasks:
        names = [n for out in config.heads[task]["outputs"] if out.get("active")
                 for n in out["names"] if n not in set(out["active"])]
        if names:
            found[task] = names
    return found


def _without_held_out(data: Mapping[str, Mapping[str, Any]], held: Mapping[str, Sequence[str]],
                      train: Mapping[str, Any]):
    """``data`` with ``train`` (the training rows alignment kept) and every other split without the rows of the
    held-out classes: the run scores what it was trained for, the seen classes; the held-out ones are scored
    zero-shot by ``multimed fewshot CHECKPOINT --shots 0``."""
    from multimed_hf.fewshot.zeroshot import hold_out

    return {t: {s: train.get(t, ds) if s == "train" else hold_out(ds, t, held[t], check=False)[0] if held.get(t)
                else ds for s, ds in splits.items()} for t, splits in data.items()}  # checked on the training split


def _paired_cut(args, plan: RunPlan, datasets, data: Mapping[str, Mapping[str, Any]]):
    """``(data, training rows, rows note)``: a plan reading a task's rows of one modality (``unimodal`` on diabetic
    retinopathy's OCT or fundus rows) keeps, under ``--max_train_samples`` / ``--max_eval_samples``, the rows of that
    modality among the N that ``sample_rows`` draws from the whole split, so that its cells score the rows every
    other family scores (drawn among the modality's rows alone, they were other and more rows). The training rows
    so cut are returned apart (``{task: Dataset}``): ``data``'s train split is what ``--eval_splits train`` scores,
    cut by ``--max_eval_samples`` as other families' is. The note (None where no split scored was cut) is the model
    card's."""
    import numpy as np

    from multimed_hf.training.loading import load_task_data

    rows = {t: m for t, m in (plan.row_modality or {}).items() if m and t in data}
    if args.streaming or not rows or (args.max_train_samples is None and args.max_eval_samples is None):
        return data, {}, None
    whole = datasets if datasets is not None else load_task_data(args.data, list(rows), splits=None)
    def among_drawn(t, split, n):
        ds = data[t][split]
        if n is None or split not in whole.get(t, {}) or len(whole[t][split]) <= n:
            return None
        drawn = sample_rows({t: whole[t][split]}, n)[t]["sample_id"]
        return ds.select(np.flatnonzero(np.isin(np.asarray(ds["sample_id"], dtype=object),
                                                np.asarray(drawn, dtype=object))))

    out, train, cut = dict(data), {}, False
    for t in rows:
        out[t] = dict(data[t])
        for split in data[t]:
            scored = among_drawn(t, split, args.max_eval_samples) if (
                split != "train" or split in args.eval_splits) else None  # the training split scored: as the rest
            if scored is not None:
                out[t][split], cut = scored, True
            if split == "train":  # trained on the rows --max_train_samples drew, else the whole split (not the
                kept = among_drawn(t, split, args.max_train_samples)  # rows drawn to score it: sweep E5)
                if kept is not None or scored is not None:
                    train[t] = kept if kept is not None else data[t][split]
    note = (f"the {' / '.join(sorted(set(rows.values())))} rows among {args.max_eval_samples} drawn at random a "
            f"task, --max_eval_samples" if cut else None)
    return out, train, note


def _eval_rows_note(args, eval_sets: Mapping[str, Mapping[str, Any]], paired: str | None = None) -> str | None:
    """The model card's word on the rows ``--max_eval_samples`` scores: drawn at random where it cut a split
    (``paired``: ``_paired_cut``'s note, where it cut them); the first N of each stream with ``--streaming`` (a
    stream cannot be drawn from); None where it cut nothing."""
    n = args.max_eval_samples
    if n is None:
        return None
    if args.streaming:
        return f"at most {n} rows a task, the first of each streamed split holding what it reads, --max_eval_samples"
    if paired is not None:
        return paired
    if any(len(ds) > n for splits in eval_sets.values() for ds in splits.values()):
        return f"{n} rows a task drawn at random, --max_eval_samples"
    return None


def _rows_label_text_heads_read(assembly, data: Mapping[str, Mapping[str, Any]]):
    """A label-text head reads its task's modalities other than text where it has others (the text encoder reads
    the class texts): the run feeds it those (``assembly.modalities``) and each split's rows holding one of them;
    the text-only rows left out (disease's Symptom2Disease rows; a VQA question) are counted in a warning. Before,
    the text rows reached the head and the run died at its first batch."""
    from multimed_hf.training.loading import rows_with_modality

    out = {}
    for task, splits in data.items():
        read = list(assembly.model.config.heads[task]["modalities"])
        if sorted(read) == sorted(assembly.modalities[task]):
            out[task] = splits
            continue
        unread = [m for m in assembly.modalities[task] if m not in read]
        assembly.modalities[task] = read
        out[task] = {s: rows_with_modality(ds, task, read) for s, ds in splits.items()}
        dropped = {s: len(ds) - len(out[task][s]) for s, ds in splits.items() if len(ds) != len(out[task][s])}
        logger.warning("--align_label_text: task %r's label-text head reads %s, not %s (the text encoder reads the "
                       "class texts: the rows' own text, a note or a question, is not read); rows holding none of "
                       "them are left out: %s", task, read, unread, dropped or "none")
    return out


def _report(metrics: Mapping[str, Any], split: str, verbose: bool, trainer) -> None:
    """Print a split's metrics table (``verbose``: the command's output) or log it."""
    if verbose:
        defined = {k: v for k, v in metrics.items() if v is not None}
        if defined:
            trainer.log_metrics(split, defined)
        else:  # every metric undefined (too few rows, constant predictions): said, and the run goes on
            print(f"***** {split} metrics *****\n  no metric is defined on these rows (undefined: "
                  f"{', '.join(sorted(metrics)) or 'none computed'})")
    else:
        logger.info("%s metrics: %s", split, {k: metrics[k] for k in sorted(metrics)})


def train_model(args: MultiMedArguments | None = None, training_args=None, *, plan: RunPlan | None = None,
                datasets: Mapping[str, Mapping[str, Any]] | None = None, rows: str | None = None,
                callbacks: Sequence[Any] | None = None, on_assembly: Callable[[Any], None] | None = None,
                verbose: bool = False, **overrides) -> RunResult:
    """Train one run and evaluate it; write everything into ``training_args.output_dir``.

    Call with the parsed dataclasses, or with keywords: fields of ``MultiMedArguments`` (``data``, ``tasks``,
    ``family``, ``encoders``, ...) and of ``TrainingArguments`` (``output_dir``, ``max_steps``, ``seed``, ...), e.g.
    ``train_model(data="multimed", tasks=["cell_type"], family="unimodal", encoders="small", output_dir="out")``;
    unset training arguments take ``training_defaults(family, encoders, modalities)`` (the plan's, else the tasks').

    ``plan`` trains that plan (default: ``choose_plan(args)``); ``datasets`` gives ``{task: {split: Dataset}}``
    instead of loading ``args.data`` (a federated client's partition, an analysis' subset), and ``rows`` says in words
    which of ``args.data``'s rows they are (the card and ``run_info.json`` record it); ``callbacks`` go to the
    Trainer; ``on_assembly(assembly)`` may change the assembled model (adapters, auxiliary heads) before training.
    ``verbose``: print the Trainer's log lines and the metrics tables (the ``multimed train`` command does); else
    they go to the ``multimed_hf.training.run`` logger only.

    Options: a family variant ``+miles`` / ``+ogm_ge`` / ``+gblend`` / ``+mind`` (``training.balancing``) adds the
    per-modality heads it needs to the config, refuses runs with no training row holding two or more modalities,
    and brings its callbacks, loss weighting and (MIND) teacher columns; its utilisation is measured on the
    validation split even when ``eval_strategy`` is ``"no"``. ``align_label_text`` trains label-text heads with
    contrastive alignment (``fewshot.zeroshot``; a text encoder is added where no task reads text, and the
    ``align_pairs`` image-caption pairs are trained beside the tasks); rows of ``holdout_classes`` never reach
    training, and every split the run scores leaves them out (they are scored zero-shot by ``multimed fewshot
    CHECKPOINT --shots 0``).

    Writes: the model (safetensors), the processor and a model card (README.md); ``all_results.json``,
    ``train_results.json``, ``<split>_results.json``, ``trainer_state.json``, ``run_info.json``,
    ``metrics_long.json`` and ``predictions/<task>-<split>.parquet`` for ``args.eval_splits`` (and
    ``alignment.json`` for an alignment run). Under FSDP (``--fsdp``) ``run_info.json`` records how the model was
    sharded (``sharding``: ``training.sharding.sharding_info``).
    """
    from transformers import set_seed

    from multimed_hf.training.assembly import assemble
    from multimed_hf.training.encoder_presets import describe
    from multimed_hf.training.loading import dataset_fingerprints, materialize

    args, training_args = _resolve(args, training_args, overrides, plan)
    if args.streaming and training_args.max_steps <= 0:
        raise RunError("--streaming: a streamed training set has no length, so epochs cannot be counted; give "
                       "--max_steps N")
    chosen_here = plan is None
    plan = plan or choose_plan(args)
    if args.streaming:
        whole = [v for v in plan.variants if v in RANDOM_ACCESS_VARIANTS]
        if whole:
            raise RunError(f"--streaming with family {plan.family!r}: +{whole[0]} reads the whole training split "
                           f"(G-Blend's probe runs, MIND's teacher predictions stored per row), which a stream cannot "
                           f"give; train it without --streaming, or use +miles / +ogm_ge")
    notes = plan_flag_notes(args, plan)
    if notes and chosen_here:  # the one run asked for: the flag would do nothing at all
        raise RunError("; ".join(f"{why}: it would change nothing; leave it out" for why in notes.values()))
    for why in notes.values():  # one plan of several (a family's, a benchmark grid's): it applies to the others
        logger.warning("%s: not applied to this run", why)
    balancing = _balancing(args, plan)
    if balancing is not None:
        balancing.check_plan(plan.modalities)  # before anything is loaded or built
    align = bool(args.align_label_text)
    if align and args.streaming:
        raise RunError("--align_label_text removes held-out classes' rows and fits class texts from whole splits; "
                       "it does not stream")
    output_dir = Path(training_args.output_dir)
    set_seed(training_args.seed)
    config_kwargs = {"fusion_method": args.fusion_method, "modality_dropout": args.modality_dropout}
    if align and args.fusion_method is None and args.fusion == "intermediate":
        # the label-text heads score the fused features against text embeddings in the projections' space, and the
        # image-caption pairs align those projections: a mean of the projected modalities stays in that space (a
        # learned concat mixing does not; on the tiny zero-shot world: held-out accuracy 1.0 with mean, 0.5 =
        # chance with concat, same 60 steps)
        config_kwargs["fusion_method"] = "mean"
    if balancing is not None:
        config_kwargs.update(balancing.config_kwargs(args.fusion))
    encoders = plan.encoders_for(args.encoders)
    assembly = assemble(
        args.data, plan.tasks, encoders=encoders, modalities=plan.modalities,
        row_modality=plan.row_modality, datasets=datasets, streaming=args.streaming,
        rank=training_args.process_index, world_size=training_args.world_size, fusion=args.fusion,
        hidden_size=args.hidden_size,
        processor_overrides=overrides_read(args.processor_overrides, plan.read_modalities) or None,
        config_kwargs=config_kwargs, build_model=not align,
    )
    if args.draft_images:
        draft_decode(assembly.processor)
    settings = pairs = prepared = None
    data = assembly.datasets
    if align:
        from multimed_hf.fewshot.alignment_encoders import add_alignment_encoders, alignment_texts
        from multimed_hf.fewshot.zeroshot import prepare_alignment

        settings = _alignment_settings(args, plan)
        pairs = _pairs(args)
        captions = pairs["caption"] if pairs is not None and "caption" in pairs.column_names else ()
        add_alignment_encoders(assembly, encoders, texts=alignment_texts(plan.tasks, settings.class_texts, captions),
                               pairs=pairs is not None)
        prepared = prepare_alignment(assembly.model, assembly.processor, {t: s["train"] for t, s in data.items()},
                                     settings)
        data = _without_held_out(data, settings.held_out, prepared.train_datasets)
        data = _rows_label_text_heads_read(assembly, data)
    if on_assembly is not None:
        on_assembly(assembly)
    _check_eval_splits_exist(args.eval_splits, data)
    if args.streaming and "train" in args.eval_splits:
        raise RunError("--eval_splits train with --streaming: the training split is a stream the run trains from, "
                       "with no length to score it by; leave train out of --eval_splits (or train without "
                       "--streaming)")
    if args.streaming:  # evaluation needs random access: each process reads the (capped) evaluation splits whole
        data = {t: {s: ds if s == "train" else materialize(ds, args.max_eval_samples) for s, ds in splits.items()
                    if s == "train" or s == "validation" or s in args.eval_splits}
                for t, splits in data.items()}
    data, paired_train, paired_note = _paired_cut(args, plan, datasets, data)
    train = {t: paired_train[t] if t in paired_train else sample_rows({t: s["train"]}, args.max_train_samples)[t]
             for t, s in data.items()}
    if args.modality_dropout > 0 and "modality_dropout" not in notes:
        _check_rows_for_modality_dropout(args.modality_dropout, train, assembly.modalities, plan.name, chosen_here)
    validation = sample_rows({t: s["validation"] for t, s in data.items() if "validation" in s},
                             args.max_eval_samples)
    evaluation = validation if training_args.eval_strategy != "no" else None
    if training_args.eval_strategy != "no" and not validation:
        strategy = getattr(training_args.eval_strategy, "value", training_args.eval_strategy)
        raise RunError(f"--eval_strategy {strategy} evaluates on each task's validation split during training, "
                       f"and none of tasks {list(data)} has one (their splits: "
                       f"{ {t: list(by_split) for t, by_split in data.items()} }); pass --eval_strategy no, or build "
                       f"the data with a validation split")
    callbacks = list(callbacks or [])
    loss_weighting: Any = args.loss_weighting
    balancing_info = None
    if balancing is not None:
        rows = balancing.check_rows(train, assembly.modalities)
        balancing.check(assembly.model.config, assembly.modalities)
        extra = balancing.trainer_kwargs(model=assembly.model, processor=assembly.processor, train_datasets=train,
                                         eval_datasets=validation, training_args=training_args,
                                         modalities=assembly.modalities)
        train, callbacks = extra["train_datasets"], callbacks + list(extra["callbacks"])
        loss_weighting = extra["loss_weighting"] or loss_weighting
        balancing_info = {"variant": balancing.name, "description": balancing.description,
                          "options": _jsonable(balancing.options), "rows_with_several_modalities": rows,
                          "auxiliary_heads": bool(assembly.model.config.auxiliary_heads)}
        if isinstance(getattr(extra["loss_weighting"], "weights", None), Mapping):  # G-Blend's estimated weights
            balancing_info["weights"] = _jsonable(extra["loss_weighting"].weights)
    trainer_extra = {}
    if align:
        from multimed_hf.fewshot.zeroshot import AlignmentTrainer

        trainer_extra = dict(trainer_class=AlignmentTrainer, pairs=pairs, pair_task=args.align_pairs or "pmc_pairs",
                             pair_projections=prepared.projections, temperature=settings.temperature,
                             pair_weight=settings.pair_weight)
    if args.streaming and args.max_train_samples is not None:
        trainer_extra["streaming_options"] = {"sizes": _capped_stream_sizes(train, args.max_train_samples,
                                                                            training_args.world_size)}
    preset = training_defaults(args.family, args.encoders, plan.read_modalities).get("label_smoothing_factor", 0.0)
    training_args = _label_smoothing_here(training_args, assembly.model.config, plan.name, chosen_here, preset)
    trainer = build_trainer(assembly.model, training_args, assembly.processor, train_datasets=train,
                            eval_datasets=evaluation or None, modalities=assembly.modalities,
                            sampling=_sampling(args, plan), loss_weighting=loss_weighting,
                            callbacks=callbacks or None, verbose=verbose, uint8_images=args.uint8_images,
                            **trainer_extra)
    resume = resume_point(training_args.resume_from_checkpoint)
    if resume is True:  # the last complete checkpoint; none: a run its stopped family never started, from scratch
        resume = last_checkpoint(training_args.output_dir)
        if resume is None:
            logger.warning("--resume_from_checkpoint true: %s holds no checkpoint; this run trains from scratch",
                           training_args.output_dir)
    _refuse_checkpoint_of_other_heads(resume, training_args.output_dir, assembly.model.config)
    if _checkpoint_at_end(resume, training_args) and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        # Trainer resumed from there trains one step past --max_steps: the checkpoint is the trained model
        logger.warning("%s is at the end of the training asked for (--max_steps %d): its model is scored as it is, "
                       "nothing more is trained", resume, training_args.max_steps)
        from transformers import TrainerState

        trainer._load_from_checkpoint(resume)
        trainer._load_loss_weighting(resume)
        trainer.state = TrainerState.load_from_json(str(Path(resume) / CHECKPOINT_DONE))
        train_metrics = {}  # no training: no train loss or runtime to report
    else:
        train_metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
    trainer.save_model(_internal_call=True)  # pushed once, at the end, with the card and results (below)
    _report(train_metrics, "train", verbose, trainer)
    trainer.save_metrics("train", train_metrics)
    trainer.save_state()

    eval_sets = {t: {s: ds for s, ds in splits.items() if s in args.eval_splits} for t, splits in data.items()}
    eval_rows = _eval_rows_note(args, eval_sets, paired_note)
    eval_sets = {t: sample_rows(s, args.max_eval_samples) for t, s in eval_sets.items()}
    records = _evaluate_splits(trainer, eval_sets, args.eval_splits, output_dir, args.bootstrap_samples,
                               training_args.seed, trainer.is_world_process_zero())
    metrics = _write_results(trainer, output_dir, records, {f"train_{k}" if not k.startswith("train_") else k: v
                                                            for k, v in train_metrics.items()})
    for split in args.eval_splits:
        scored = {k: v for k, v in metrics.items() if k.startswith(f"{split}_")}
        if scored:
            _report(scored, split, verbose, trainer)
    alignment = None
    if align:
        from multimed_hf.fewshot.zeroshot import alignment_info

        alignment = alignment_info(prepared, settings, pairs)
        alignment["pair_config"] = args.align_pairs
        alignment["evaluated_on"] = "seen classes only (held-out classes: multimed fewshot CHECKPOINT --shots 0)"
    if trainer.is_world_process_zero():
        from multimed_hf.model_card import build_model_card
        from multimed_hf.training.sharding import sharding_info

        assembly.processor.save_pretrained(output_dir)
        if alignment is not None:
            from multimed_hf.fewshot.zeroshot import write_alignment_info

            write_alignment_info(output_dir, alignment)
        training_data = [{"name": str(args.data), "config": t, "split": "train",
                          "num_rows": getattr(ds, "num_rows", None), **({"rows": rows} if rows else {})}
                         for t, ds in train.items()]
        options = {"balancing": balancing_info, "alignment": alignment}
        card = build_model_card(assembly.model.config, training_data=training_data, metrics=_card_metrics(records),
                                metrics_split="test", tags=[plan.family.split("+")[0], *(plan.variants or ())],
                                metrics_rows=eval_rows,
                                training={k: v for k, v in options.items() if v is not None} or None)
        card.save(str(output_dir / "README.md"))
        write_json(output_dir / RUN_INFO, run_info(
            world_size=training_args.world_size, tasks=list(plan.tasks), family=plan.family, plan=plan.to_dict(),
            encoders={"preset": assembly.encoders.name, "modalities": describe(assembly.encoders)},
            modalities=assembly.modalities, seed=training_args.seed, data=str(args.data),
            dataset_fingerprints=dataset_fingerprints(args.data, data, rows=rows if datasets is not None else None),
            assembly_notes=assembly.notes, arguments=_jsonable(dataclasses.asdict(args)),
            balancing=balancing_info, alignment=alignment,
            sharding=sharding_info(trainer.model) if trainer.is_fsdp_enabled else None,
        ))
    if training_args.push_to_hub:  # every process (it saves the model); process zero uploads the folder
        trainer.push_to_hub(commit_message="multimed train: model, processor, card, metrics and predictions")
    return RunResult(output_dir=output_dir, metrics=metrics, records=records, plan=plan)


def _check_eval_splits_exist(splits: Sequence[str], data: Mapping[str, Mapping[str, Any]]) -> None:
    """Before training: ``--eval_splits`` that no task of the run has would score nothing (refused); one that some
    tasks lack (a small build may have no validation split) is scored where it exists, said in one line."""
    absent = {s: [t for t, by_split in data.items() if s not in by_split] for s in splits}
    if splits and all(len(tasks) == len(data) for tasks in absent.values()):
        raise RunError(f"--eval_splits {list(splits)}: none of them exists for tasks {list(data)} (their splits: "
                       f"{ {t: list(by_split) for t, by_split in data.items()} }); name splits the data has")
    for split, tasks in absent.items():
        if tasks:
            logger.warning("--eval_splits: tasks %s have no %r split; it is scored where it exists", tasks, split)


def _jsonable(value):
    """Options as JSON can hold them (teacher models as their class names, tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Path):
        return str(value)
    return type(value).__name__


# ---------------------------------------------------------------------- evaluate
def evaluate_checkpoint(checkpoint: str, data: str, splits: Sequence[str] = ("test",), output_dir: str | Path = ...,
                        *, tasks: Sequence[str] | None = None, training_args=None, streaming: bool = False,
                        max_eval_samples: int | None = None, bootstrap_samples: int = 1000,
                        datasets: Mapping[str, Mapping[str, Any]] | None = None) -> RunResult:
    """Metrics and predictions of a saved run (a local folder or a Hub model id) on ``splits`` of ``data``.

    Each task is evaluated on the rows that hold at least one of the modalities its head reads (a unimodal
    checkpoint trained on OCT rows is scored on OCT rows). Writes ``all_results.json``, ``<split>_results.json``,
    ``metrics_long.json``, ``run_info.json`` and ``predictions/<task>-<split>.parquet`` into ``output_dir``.
    """
    from transformers import TrainingArguments

    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.tasks import get_task
    from multimed_hf.training.loading import dataset_fingerprints, load_task_data, materialize, rows_with_modality
    from multimed_hf.training.trainer import prediction_arguments

    if training_args is None:
        if output_dir is ...:
            raise RunError("evaluate_checkpoint: give output_dir= (or training_args)")
        training_args = TrainingArguments(output_dir=str(output_dir), per_device_eval_batch_size=64,
                                          remove_unused_columns=False, report_to="none",
                                          dataloader_pin_memory=has_accelerator())
    output_dir = Path(training_args.output_dir)
    if (output_dir / "config.json").is_file() and (output_dir / RUN_INFO).is_file():
        raise RunError(f"--output_dir {output_dir} holds a saved run (its model and {RUN_INFO}): the evaluation's "
                       f"results, run info and predictions would overwrite the run's; give another --output_dir "
                       f"(e.g. {output_dir}-eval)")
    from multimed_hf.training.assembly import loading_from_hub

    if str(checkpoint).startswith(("/", ".", "~")) and not Path(checkpoint).expanduser().exists():
        raise RunError(f"checkpoint {str(checkpoint)!r}: no such folder")
    with loading_from_hub("the checkpoint", str(checkpoint),
                          "Give a folder written by `multimed train` (its model, config and processor files), or a "
                          "Hub model id reachable from here or fetched beforehand (`hf download ID`; HF_HOME)"):
        model = MultiMedModel.from_pretrained(checkpoint)
        processor = MultiMedProcessor.from_pretrained(checkpoint)
    tasks = list(tasks or model.config.heads)
    unknown = [t for t in tasks if t not in model.config.heads]
    if unknown:
        raise RunError(f"checkpoint {checkpoint!r} has no head for tasks {unknown}; its heads: "
                       f"{list(model.config.heads)}")
    held = None
    if datasets is None:  # every process reads the splits whole and predicts its share of the batches
        datasets = load_task_data(data, tasks, splits=None, streaming=streaming)
        held = sorted({s for by_split in datasets.values() for s in by_split})
        datasets = {t: {s: ds for s, ds in by_split.items() if s in splits} for t, by_split in datasets.items()}
    modalities = {t: list(model.config.heads[t]["modalities"]) for t in tasks}
    if streaming and not all(hasattr(ds, "select") for by_split in datasets.values() for ds in by_split.values()):
        # the first N rows of the stream holding what the head reads, as the run kept them (not the first N of the
        # split: those of another modality, then none left)
        datasets = {t: {s: materialize(rows_with_modality(ds, t, modalities[t])
                                       if len(modalities[t]) < len(get_task(t).modalities) else ds, max_eval_samples)
                        for s, ds in by_split.items()} for t, by_split in datasets.items()}
    inactive = _inactive_classes(model.config, tasks)
    selected = {}
    for t in tasks:
        selected[t] = {s: ds for s, ds in datasets[t].items() if s in splits}
        if inactive.get(t):  # as the run scored them: held-out classes are fewshot --shots 0's to score
            logger.warning("evaluate: %s's head names no class %s (held out of its training, --holdout_classes): "
                           "their rows are left out, as the run left them (score them zero-shot with `multimed "
                           "fewshot CHECKPOINT --task %s --shots 0`)", t, inactive[t], t)
            from multimed_hf.fewshot.zeroshot import hold_out

            selected[t] = {s: hold_out(ds, t, inactive[t], check=False)[0] for s, ds in selected[t].items()}
        # drawn from the whole split, then the rows of the modalities the checkpoint reads: the rows a run reading
        # them scored (``_paired_cut``), and every family of the same cap scores
        selected[t] = sample_rows(selected[t], max_eval_samples)
        if len(modalities[t]) < len(get_task(t).modalities):
            selected[t] = {s: rows_with_modality(ds, t, modalities[t]) for s, ds in selected[t].items()}
    for t in tasks:
        for s, ds in selected[t].items():
            if len(ds) == 0:
                logger.warning("evaluate: task %r's %r split has no row holding what its head reads (%s): nothing "
                               "scored", t, s, ", ".join(modalities[t]))
    absent = [(t, s) for t in tasks for s in splits if s not in selected[t]]
    if len(absent) == len(tasks) * len(splits):
        raise RunError(f"none of the splits {list(splits)} exists for tasks {tasks} in {data!r}"
                       + (f"; it holds {held}" if held is not None else ""))
    for t, s in absent:  # recorded in run_info.json too (missing_splits)
        logger.warning("evaluate: task %r has no %r split in %r; it is scored on the others", t, s, str(data))
    trainer = build_trainer(model, prediction_arguments(training_args), processor, modalities=modalities)
    records = _evaluate_splits(trainer, selected, splits, output_dir, bootstrap_samples, training_args.seed,
                               trainer.is_world_process_zero())
    metrics = _write_results(trainer, output_dir, records, {})
    if trainer.is_world_process_zero():
        write_json(output_dir / RUN_INFO, run_info(
            checkpoint=str(checkpoint), data=str(data), tasks=tasks, splits=list(splits), modalities=modalities,
            world_size=training_args.world_size, missing_splits=[f"{t}/{s}" for t, s in absent],
            dataset_fingerprints=dataset_fingerprints(data, selected),
        ))
    return RunResult(output_dir=output_dir, metrics=metrics, records=records)


# ---------------------------------------------------------------------- command lines
def train_main(argv: Sequence[str] | None = None) -> int:
    """``multimed train``: every plan of the family for the tasks (or ``--plan``), each into ``OUTPUT_DIR`` (one
    plan) or ``OUTPUT_DIR/<plan>`` (several)."""
    try:
        args, training_args = parse_train_args(argv)
        local = args.data if Path(args.data).exists() else None
        plans = plan_runs(args.family, args.tasks, local)
        if args.list_plans:
            for p in plans:
                print(f"{p.name}: tasks {list(p.tasks)}, modalities {dict(p.modalities)}"
                      + (f", rows with {dict(p.row_modality)}" if p.row_modality else ""))
            for t, reason in unplanned(args.family, args.tasks, local).items():
                print(f"{t}: {reason}")
            return 0
        if args.plan is not None or len(plans) <= 1:
            plans = [choose_plan(args)]
        resume = training_args.resume_from_checkpoint
        if len(plans) > 1 and resumes_from_a_path(resume):
            raise RunError(f"--resume_from_checkpoint {resume}: family {args.family!r} trains {len(plans)} runs for "
                           f"{args.tasks} ({', '.join(p.name for p in plans)}), and each would start from that one "
                           f"checkpoint; give --plan NAME with it (the run it belongs to), or --resume_from_checkpoint "
                           f"true (each run goes on from its own last checkpoint)")
        if len(plans) > 1 and training_args.push_to_hub and training_args.hub_model_id:
            raise RunError(f"--hub_model_id {training_args.hub_model_id}: family {args.family!r} trains {len(plans)} "
                           f"runs for {args.tasks} ({', '.join(p.name for p in plans)}), and each would be pushed over "
                           f"the one before into that repository; give --plan NAME with it, or leave it out (each "
                           f"run is pushed to a repository named after its folder, the plan's name)")
        if args.plan is None and training_args.process_index == 0:  # a task of --tasks no plan trains: said
            for t, reason in unplanned(args.family, args.tasks, local).items():
                print(f"{t}: no run of family {args.family!r} ({reason})")
        unused = flag_changing_no_plan([plan_flag_notes(args, p) for p in plans])
        if unused:
            raise RunError(f"--{unused[0]} changes none of family {args.family!r}'s runs for {args.tasks} "
                           f"({unused[1]}" + ("; the same in every plan" if len(plans) > 1 else "")
                           + "); leave it out")
        runs = [(p, training_args if len(plans) == 1 else dataclasses.replace(
            training_args, output_dir=str(Path(training_args.output_dir) / p.name))) for p in plans]
        if not training_args.resume_from_checkpoint:
            _refuse_earlier_runs([targs.output_dir for _, targs in runs])
        elif resume_point(training_args.resume_from_checkpoint) is True:  # each run from its own last checkpoint
            _refuse_finished_without_checkpoints([targs.output_dir for _, targs in runs])
        for p, targs in runs:
            state = _training_state(targs) if resume_point(training_args.resume_from_checkpoint) is True else None
            if state == "finished":
                if targs.process_index == 0:  # resumed, it would train 0 steps and write train_loss 0.0 over its own
                    print(f"{p.name}: finished in {targs.output_dir} (its last checkpoint at the end of its "
                          f"training), kept as it is")
                continue
            # the one run asked for is chosen there again (a flag that changes nothing in it is refused)
            result = train_model(args, targs, plan=p if len(plans) > 1 else None, verbose=True)
            if targs.process_index == 0:  # one line, not one per process
                print(f"{p.name}: wrote {result.output_dir}")
    except (ValueError, FamilyError) as err:
        print(f"multimed train: error: {err}", file=sys.stderr)
        return 2
    return 0


def _refuse_checkpoint_of_other_heads(resume, output_dir: str, config) -> None:
    """``--resume_from_checkpoint`` of a checkpoint whose model is another run's (other task heads, encoders, head
    modalities or fusion: another ``--tasks``, family or ``--encoders``): refused, naming the difference, before
    Trainer fails on the missing and unexpected weights."""
    from multimed_hf.configuration_multimed import MultiMedConfig

    folder = last_checkpoint(output_dir) if resume is True else resume
    if not folder or not (Path(folder) / "config.json").is_file():
        return  # Trainer says what is missing
    try:
        saved = MultiMedConfig.from_pretrained(folder)
    except (OSError, ValueError):
        return
    differences = []
    for what, theirs, ours in (
            ("heads for tasks", sorted(saved.heads), sorted(config.heads)),
            ("encoders", sorted(saved.encoders), sorted(config.encoders)),
            ("heads reading", {t: h["modalities"] for t, h in saved.heads.items()},
             {t: h["modalities"] for t, h in config.heads.items()}),
            ("fusion", saved.fusion, config.fusion)):
        if theirs != ours:
            differences.append(f"{what} {theirs} (this run: {ours})")
    if differences:
        raise RunError(f"--resume_from_checkpoint {folder}: the checkpoint's model is another run's: "
                       f"{'; '.join(differences[:2])}: resume with the --tasks, family and encoders that made it, or "
                       f"train afresh into another --output_dir")


#: The words of ``--resume_from_checkpoint`` for the last checkpoint of ``--output_dir`` (of each run's own).
RESUME_LAST = ("true", "last")


def resumes_from_a_path(resume) -> bool:
    """Whether ``--resume_from_checkpoint`` names one checkpoint path, not each run's own last checkpoint."""
    return isinstance(resume, str) and bool(resume) and resume.lower() not in RESUME_LAST


def resume_point(resume):
    """What ``--resume_from_checkpoint`` names, as Trainer takes it: True for ``true`` / ``last``; a checkpoint folder
    (``checkpoint-N``: its optimiser state beside the weights) as given; a run folder holding checkpoints, its last
    one, said (Trainer would take the run's saved model alone and restart the optimiser, schedule and random state
    unsaid); a folder holding neither, refused."""
    if not isinstance(resume, str) or not resume:
        return resume
    if resume.lower() in RESUME_LAST:
        return True
    folder = Path(resume)
    if not folder.is_dir():
        raise RunError(f"--resume_from_checkpoint {resume}: no such folder (give a checkpoint-N folder of a run, or "
                       f"true for the last one of --output_dir)")
    if any(folder.glob("optimizer*")) or any(folder.glob("global_step*")):  # Trainer's (DeepSpeed's) optimiser state
        return resume
    last = last_checkpoint(folder)
    if last is not None:
        logger.warning("--resume_from_checkpoint %s: a run folder; resuming from its last checkpoint, %s", resume,
                       os.path.basename(last))
        return last
    raise RunError(f"--resume_from_checkpoint {resume}: not a checkpoint (no optimiser state beside the weights, and "
                   f"no checkpoint-N folder in it): resuming from it would restart the optimiser, learning-rate "
                   f"schedule and random state; give a checkpoint-N folder (saved with --save_strategy steps|epoch)")


#: What Trainer writes last into a checkpoint folder: a checkpoint without it was being saved when its run stopped.
CHECKPOINT_DONE = "trainer_state.json"
_SKIPPED_CHECKPOINTS: set[str] = set()


def last_checkpoint(folder: str | os.PathLike) -> str | None:
    """The last complete ``checkpoint-N`` folder of a run folder (numbered as transformers numbers them), or None
    (also for no folder). A later one without ``trainer_state.json`` (the run stopped while saving it: weights or
    optimiser state missing or cut) is passed over, said once: transformers' ``get_last_checkpoint`` took it, and
    every resume failed on it."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not os.path.isdir(folder):
        return None
    numbered = []
    for path in Path(folder).iterdir():
        head, _, number = path.name.rpartition("-")
        if head == PREFIX_CHECKPOINT_DIR and number.isdigit() and path.is_dir():
            numbered.append((int(number), path))
    for _, path in sorted(numbered, reverse=True):
        if (path / CHECKPOINT_DONE).is_file():
            return str(path)
        if str(path) not in _SKIPPED_CHECKPOINTS:
            _SKIPPED_CHECKPOINTS.add(str(path))
            logger.warning("%s is an incomplete checkpoint (no %s: its run stopped while saving it); passed over",
                           path, CHECKPOINT_DONE)
    return None


def _refuse_earlier_runs(output_dirs: Sequence[str]) -> None:
    """A run folder holding an earlier run's checkpoints, or a finished run or evaluation (its ``run_info.json``), is
    not trained again from scratch in silence: its checkpoints, model and results would be overwritten, and files of
    the earlier run this one does not write (another task's predictions) left beside them. The user resumes, picks
    another folder or removes it."""
    for folder in output_dirs:
        last = last_checkpoint(folder)
        if last is not None:
            raise RunError(f"{folder} holds an earlier run's checkpoints (last: {os.path.basename(last)}): pass "
                           f"--resume_from_checkpoint true to go on from it, or another --output_dir to train from "
                           f"scratch (its checkpoints would be overwritten)")
        if (Path(folder) / RUN_INFO).is_file():
            raise RunError(f"{folder} holds an earlier run or evaluation ({RUN_INFO}, no checkpoint to resume from): "
                           f"pass another --output_dir, or remove it to train there again (its model, results and "
                           f"predictions would be overwritten, other files of it left beside the new run's)")


def _checkpoint_at_end(resume, training_args) -> bool:
    """Whether the checkpoint ``resume`` (a path) is at ``--max_steps`` already (its ``trainer_state.json``)."""
    import json

    if not isinstance(resume, str) or training_args.max_steps <= 0:
        return False
    try:
        step = json.loads((Path(resume) / CHECKPOINT_DONE).read_text()).get("global_step")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(step, int) and step >= training_args.max_steps


def _training_state(training_args) -> str | None:
    """Under ``--resume_from_checkpoint true``: ``"finished"`` where ``training_args.output_dir`` holds a finished run
    (``run_info.json``) whose last checkpoint is at the end of the training these arguments ask for (its
    ``max_steps``, or its epochs where they are not more): it is kept, not resumed for nothing (a family stopped in a
    later run); ``"trained"`` where that checkpoint is at the end but the run stopped before its results (resumed,
    its checkpoint is scored: ``_checkpoint_at_end``); else None (resumed, or trained from scratch)."""
    import json

    folder = training_args.output_dir
    last = last_checkpoint(folder)
    if last is None:
        return None
    try:
        state = json.loads((Path(last) / CHECKPOINT_DONE).read_text())
    except (OSError, ValueError):
        return None
    step, total = state.get("global_step"), state.get("max_steps")
    if not isinstance(step, int) or not isinstance(total, int):
        return None
    if training_args.max_steps > 0:
        done = step >= training_args.max_steps
    else:
        epochs = state.get("num_train_epochs")
        done = step >= total and isinstance(epochs, (int, float)) and training_args.num_train_epochs <= epochs
    if not done:
        return None
    return "finished" if (Path(folder) / RUN_INFO).is_file() else "trained"


def _refuse_finished_without_checkpoints(output_dirs: Sequence[str]) -> None:
    """``--resume_from_checkpoint true`` over a finished run or evaluation's folder holding no checkpoint: nothing to
    resume from (a run its stopped family never started trains from scratch; this one would be trained again over
    its model and results, said in a warning alone)."""
    for folder in output_dirs:
        if last_checkpoint(folder) is None and (Path(folder) / RUN_INFO).is_file():
            raise RunError(f"--resume_from_checkpoint true: {folder} holds a finished run or evaluation ({RUN_INFO}) "
                           f"and no checkpoint to resume from; pass another --output_dir, or remove it to train "
                           f"there again")


def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``multimed evaluate CHECKPOINT --data DIR [--split test] --output_dir OUT``."""
    try:
        eargs, training_args = parse_evaluate_args(argv)
        result = evaluate_checkpoint(eargs.checkpoint, eargs.data, eargs.split, tasks=eargs.tasks,
                                     training_args=training_args, streaming=eargs.streaming,
                                     max_eval_samples=eargs.max_eval_samples,
                                     bootstrap_samples=eargs.bootstrap_samples)
        if training_args.process_index == 0:  # once, not once per process (torchrun)
            for key, value in sorted(result.metrics.items()):
                print(f"{key}: {value}")
            print(f"results, metrics with CIs and predictions written to {result.output_dir}")  # the default dir
    except ValueError as err:
        print(f"multimed evaluate: error: {err}", file=sys.stderr)
        return 2
    return 0


