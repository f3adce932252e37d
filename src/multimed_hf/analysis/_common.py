"""What the analyses share: argument parsing, one training run kept in memory, the empty predictor, output files."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from multimed_hf.tasks import IMAGE_MODALITIES, get_task

__all__ = [
    "AnalysisError",
    "AnalysisRun",
    "AnalysisPaths",
    "ANALYSIS_FAMILY",
    "parse_analysis_args",
    "run_training_arguments",
    "check_analysis_args",
    "check_plan_flags",
    "refuse_resume_path",
    "refuse_earlier_runs",
    "analysis_plan",
    "analysis_main",
    "headline",
    "modality_matrix",
    "train_run",
    "prediction_trainer",
    "prior_outputs",
    "prior_predictions",
    "merge_predictions",
    "predict_subset",
    "slice_predictions",
    "score",
    "headline_value",
    "write_outputs",
    "markdown_table",
    "analysis_datasets",
]

MODALITY_COLUMN = "modality"


class AnalysisError(ValueError):
    """An analysis that cannot run on the given data or task (a missing column, too few modalities, ...)."""


@dataclass(frozen=True)
class AnalysisPaths:
    """Where an analysis wrote its table (CSV), its report (Markdown) and its figure (PNG)."""

    csv: Path
    markdown: Path
    figure: Path


@dataclass
class AnalysisRun:
    """One trained model kept in memory: its processor, a trainer for predictions, the rows it was given."""

    task: str
    model: Any
    processor: Any
    trainer: Any
    datasets: dict  # split -> rows (as given to training)
    modalities: tuple[str, ...]
    output_dir: Path


# ---------------------------------------------------------------------- arguments
#: The family an analysis command trains unless told otherwise: each analysis trains one model per task over the
#: modalities its rows hold, which is the multimodal family's run (``unimodal`` only describes it for a task of one
#: modality; see ``check_plan_flags``).
ANALYSIS_FAMILY = "multimodal"


#: What ``--help`` adds under the flags it lists (``multimed train``'s and TrainingArguments' all): those an analysis
#: refuses, since it would change nothing (``check_analysis_args`` says why for each).
REFUSED_EPILOG = (
    "Listed above but refused here, since an analysis trains and scores its own runs (the error says why and what to "
    "use): --plan, --list_plans, --eval_splits, --streaming, a *_multitask --family, --do_train / --do_eval / "
    "--do_predict, --remove_unused_columns True, --max_eval_samples with --eval_strategy no, --encoders with --family "
    "domain_specific, flags naming tasks or modalities the run does not read, more than one process (torchrun), and "
    "the TrainingArguments MultiMedTrainer cannot honour (as multimed train: --train_sampling_strategy, "
    "--neftune_noise_alpha, --use_liger_kernel, --include_num_input_tokens_seen, --label_names, "
    "--batch_eval_metrics, --include_for_metrics, ...)."
)


def parse_analysis_args(argv: Sequence[str] | None, options_cls, *, single_task: bool = False,
                        prog: str | None = None):
    """``(MultiMedArguments, options, TrainingArguments)`` from the command line, parsed like ``multimed train``
    (every ``TrainingArguments`` flag; unset ones take ``training_defaults(family, encoders, modalities)`` of the
    tasks' modalities, and each model trained those of the modalities it reads: ``run_training_arguments``);
    ``--task T`` is accepted for ``--tasks T``; ``--family`` defaults to ``ANALYSIS_FAMILY``. A single ``.json``
    argument holds all of them. ``prog``: the usage line's command.

    Flags the analysis would silently ignore are refused here, each naming the flag, why it changes nothing and
    what to use instead (``check_analysis_args`` with the flags given, and ``--remove_unused_columns True``)."""
    from transformers import HfArgumentParser, TrainingArguments

    from multimed_hf.training.arguments import (
        MultiMedArguments,
        flags_named,
        refuse_remove_unused_columns,
        task_modalities,
        training_defaults,
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    argv = ["--tasks" if a == "--task" else a for a in argv]
    parser = HfArgumentParser((MultiMedArguments, options_cls, TrainingArguments), prog=prog, epilog=REFUSED_EPILOG)
    parser.set_defaults(family=ANALYSIS_FAMILY)
    if len(argv) == 1 and argv[0].endswith(".json"):
        given = json.loads(Path(argv[0]).read_text())
        if "task" in given:
            given["tasks"] = [given.pop("task")]
        chosen = training_defaults(given.get("family", ANALYSIS_FAMILY), given.get("encoders", "hub"),
                                   task_modalities(given.get("tasks")))
        defaults = {"family": ANALYSIS_FAMILY, **chosen}
        parser.set_defaults(**defaults)
        parsed = parser.parse_dict({**defaults, **given})
        named = set(given)
    else:
        probe, _ = parser.parse_known_args(argv)
        chosen = training_defaults(probe.family, probe.encoders, task_modalities(probe.tasks))
        parser.set_defaults(**chosen)
        parsed = parser.parse_args_into_dataclasses(argv)
        named = flags_named(HfArgumentParser((MultiMedArguments, options_cls, TrainingArguments)), argv)
    args, options, training_args = parsed[0], parsed[1], parsed[2]
    # each model takes the defaults of the modalities it reads (run_training_arguments), the flags named still win
    setattr(training_args, _PARSED_DEFAULTS, {"defaults": chosen, "named": frozenset(named)})
    if single_task and len(args.tasks) != 1:
        raise AnalysisError(f"--tasks: this analysis takes one task, got {args.tasks}")
    refuse_remove_unused_columns(training_args, prog or "the analysis commands", AnalysisError)
    refuse_several_processes(prog or "the analysis commands", AnalysisError)
    check_analysis_args(args, training_args, options, given=named)
    return parsed


#: Attribute of the ``TrainingArguments`` that ``parse_analysis_args`` returns: the training defaults it took (those
#: of every ``--tasks``' modalities) and the flags named, for ``run_training_arguments``.
_PARSED_DEFAULTS = "_multimed_analysis_defaults"


def refuse_several_processes(prog: str, error=ValueError) -> None:
    """The analyses train and score their small per-task models in one process, each writing its tables and
    predictions: under ``torchrun`` / ``accelerate launch`` every process would write the same files at once
    (``attribution`` read one while another rewrote it). Refused, before any data is read."""
    from multimed_hf.training.arguments import refuse_several_processes as refuse

    refuse(prog, error, does="trains and scores its models in one process, on one GPU or the CPU")


def run_training_arguments(args, training_args, plan):
    """The ``TrainingArguments`` one analysis model trains with. Parsed from the command line
    (``parse_analysis_args``), each unnamed flag takes the default of the run's own family, encoders and the
    modalities ``plan`` reads (``training_defaults``, as ``multimed train`` and the benchmark pick them), not that of
    every ``--tasks``' modalities (``ood --tasks disease cell_type --encoders hub`` fine-tuned cell_type's
    from-scratch scRNA-seq encoder at lr 1e-4 for 5 epochs); the flags named keep their values. Built in Python
    (``make_training_arguments``, ...), ``training_args`` is used as given."""
    from transformers import TrainingArguments

    from multimed_hf.training.arguments import training_defaults

    parsed = getattr(training_args, _PARSED_DEFAULTS, None)
    if parsed is None:
        return training_args
    taken, own = parsed["defaults"], training_defaults(args.family, args.encoders, plan.read_modalities)
    fields = TrainingArguments.__dataclass_fields__
    unset = {key: fields[key].default for key in taken.keys() | own.keys() if key in fields}
    changes = {key: own.get(key, unset[key]) for key in unset
               if key not in parsed["named"] and own.get(key, unset[key]) != taken.get(key, unset[key])}
    return dataclasses.replace(training_args, **changes) if changes else training_args


def check_analysis_args(args, training_args, options=None, *, given: set[str] | None = None) -> None:
    """Refuse, before any data is read, what an analysis would silently ignore (each error names the flag, why it
    changes nothing and what to use instead): a ``+variant``'s options without the variant and flags naming tasks or
    modalities the run does not train or read (``training.arguments.check_variant_flags`` / ``check_run_flags``, as
    ``multimed train``); ``TrainingArguments`` the trainer cannot honour (``training.trainer.refused_arguments``);
    ``multimed train``'s run choice and evaluation (``--plan``, ``--list_plans``, ``--eval_splits``: an analysis
    trains and scores its own runs), ``--streaming`` (the analyses need whole splits), a multitask family (one model
    per task), ``--max_eval_samples`` where no validation is evaluated in training; then ``options``' own
    ``check_arguments(args, training_args, given)``. ``given``: the names of the flags set on the command line
    (None from Python: the checks that need them are skipped). The functions call it first; so does the parse."""
    from multimed_hf.training.arguments import (
        MultiMedArguments,
        check_run_flags,
        check_variant_flags,
        refuse_domain_specific_encoders,
        refuse_script_switches,
    )
    from multimed_hf.training.families import parse_family
    from multimed_hf.training.trainer import refused_arguments

    check_variant_flags(args, [args.family])
    check_run_flags(args, args.tasks)
    refused = refused_arguments(training_args)
    if refused:
        raise AnalysisError("TrainingArguments that MultiMedTrainer cannot honour:\n- " + "\n- ".join(refused))
    scored = (f"--split {options.split}" if hasattr(options, "split") else
              "the held-out group's rows of every split, and with --in_distribution each group's test rows")
    if args.plan is not None:
        raise AnalysisError(f"--plan {args.plan}: it picks one of `multimed train`'s runs of a family; an analysis "
                            f"trains its own runs (one model per task over the modalities its rows hold, under "
                            f"OUTPUT_DIR/runs/), so it would change nothing; leave it out")
    if args.list_plans:
        raise AnalysisError("--list_plans prints `multimed train`'s runs of a family and exits; an analysis trains "
                            "its own runs, so it would run in full instead; use `multimed train ... --list_plans`, or "
                            "leave it out")
    if args.eval_splits != MultiMedArguments.__dataclass_fields__["eval_splits"].default_factory():
        raise AnalysisError(f"--eval_splits {list(args.eval_splits)}: an analysis scores its own rows ({scored}), "
                            f"not `multimed train`'s evaluation splits, so it would change nothing; leave it out")
    if args.streaming:
        raise AnalysisError("--streaming: the analyses pick rows by group and modality and score whole splits row "
                            "by row, which needs random access (they load every split whole, so it would change "
                            "nothing); leave it out (--max_train_samples N trains on fewer rows)")
    base, variants = parse_family(args.family)
    if base.endswith("_multitask"):
        raise AnalysisError(f"--family {args.family}: an analysis trains one model per task, so the multitask "
                            f"families' shared model over several tasks would not be trained; use --family "
                            f"{base.replace('_multitask', '')}" + "".join(f"+{v}" for v in variants)
                            + f" (the default is {ANALYSIS_FAMILY})")
    refuse_domain_specific_encoders(args, given or (), AnalysisError)
    refuse_script_switches(given or (), f"an analysis trains and scores its own runs ({scored})", AnalysisError)
    if args.max_eval_samples is not None and training_args.eval_strategy == "no" and not variants:
        raise AnalysisError(f"--max_eval_samples {args.max_eval_samples}: it caps the validation rows evaluated "
                            f"during training, and --eval_strategy is 'no'; an analysis scores every row of its own "
                            f"({scored}), so it would change nothing; leave it out")
    check = getattr(options, "check_arguments", None)
    if check is not None:
        check(args, training_args, given)


def analysis_plan(args, task: str, modalities: Sequence[str], name: str):
    """The ``RunPlan`` an analysis trains: ``task`` alone reading ``modalities``, under ``args.family`` (its
    variants; ``domain_specific`` fixes its own encoders)."""
    from multimed_hf.training.families import RunPlan, parse_family

    base, variants = parse_family(args.family)
    return RunPlan(name=name, family=args.family, tasks=(task,), modalities={task: tuple(modalities)},
                   encoders="domain_specific" if base == "domain_specific" else None, variants=variants)


def check_plan_flags(args, plans: Sequence[Any]) -> None:
    """Before training: refuse ``--family unimodal`` where a plan reads several modalities (the analysis reads them
    all), and a flag that changes none of the ``plans`` the analysis trains (``training.run.plan_flag_notes``:
    ``--modality_dropout`` where every task reads one modality, ``--sampling`` with one task, ...); a flag that
    changes some of them is applied there and ``train_model`` warns for the others, as in ``multimed train``."""
    from multimed_hf.training.families import parse_family
    from multimed_hf.training.run import flag_changing_no_plan, plan_flag_notes

    base, variants = parse_family(args.family)
    several = [p for p in plans if any(len(m) > 1 for m in p.modalities.values())]
    if base == "unimodal" and several:
        plan = several[0]
        task, read = next((t, m) for t, m in plan.modalities.items() if len(m) > 1)
        raise AnalysisError(f"--family {args.family}: the analysis reads every modality task {task!r}'s rows hold "
                            f"({list(read)}), so a unimodal family would not be trained; use --family "
                            f"{ANALYSIS_FAMILY}" + "".join(f"+{v}" for v in variants)
                            + " (unimodal describes a task of one modality only)")
    unused = flag_changing_no_plan([plan_flag_notes(args, p) for p in plans])
    if unused:
        raise AnalysisError(f"--{unused[0]} changes none of the analysis' runs ({unused[1]}"
                            + ("; the same in every run" if len(plans) > 1 else "") + "); leave it out")


def refuse_resume_path(training_args, why: str) -> None:
    """Refuse the flags of one run where the analysis trains several models (``why``): ``--resume_from_checkpoint
    PATH`` (each run would start from that one checkpoint; ``true`` resumes each from its own last checkpoint) and
    ``--push_to_hub`` (each model would be pushed over the one before, into one repository)."""
    from multimed_hf.training.run import resumes_from_a_path

    resume = training_args.resume_from_checkpoint
    if resumes_from_a_path(resume):
        raise AnalysisError(f"--resume_from_checkpoint {resume}: {why}, and each would start from that one "
                            f"checkpoint; give --resume_from_checkpoint true (each run resumes from its own last "
                            f"checkpoint under OUTPUT_DIR/runs/) or leave it out")
    if training_args.push_to_hub:
        raise AnalysisError(f"--push_to_hub: {why}, and each would be pushed over the one before into one "
                            f"repository; leave it out and push the run you want afterwards (`hf upload ORG/NAME "
                            f"OUTPUT_DIR/runs/...`)")


def refuse_earlier_runs(output_dir: str | Path) -> None:
    """Refuse an ``output_dir`` whose ``runs/`` holds an earlier analysis' runs (finished: ``run_info.json``; or
    stopped with checkpoints): the analysis would train over them and rewrite its outputs in silence, where
    ``multimed train`` and ``multimed benchmark`` refuse such a folder. The error names the folder and what to do."""
    from multimed_hf.training.outputs import RUN_INFO
    from multimed_hf.training.run import last_checkpoint

    runs = Path(output_dir) / "runs"
    if not runs.is_dir():
        return
    earlier = {path.parent: "finished" for path in runs.rglob(RUN_INFO)}
    for folder in sorted({path.parent for path in runs.rglob("checkpoint-*") if path.is_dir()}):
        last = last_checkpoint(folder)
        if last is not None and folder not in earlier:
            earlier[folder] = Path(last).name
    if earlier:
        first = min(earlier)
        checkpoints = any(state != "finished" for state in earlier.values())
        raise AnalysisError(
            f"{output_dir} holds {len(earlier)} run(s) of an earlier analysis under {runs}, first {first} "
            f"({earlier[first]}): this command would train over them and rewrite its outputs; pass another "
            f"--output_dir, or remove {runs} first" + (" (--resume_from_checkpoint true goes on from each run's last "
                                                       "checkpoint)" if checkpoints else ""))


def analysis_main(name: str, argv: Sequence[str] | None, options_cls, run: Callable, *,
                  single_task: bool = False) -> int:
    """The ``multimed <name>`` command: parse like ``multimed train`` (refusing the flags the analysis would ignore:
    ``parse_analysis_args``), refuse an ``--output_dir`` holding an earlier analysis' runs unless told to resume
    (``refuse_earlier_runs``; ``attribution --checkpoint`` trains nothing), call ``run(args, training_args,
    options=options)``, print the files it wrote (``result.paths``, and ``result.predictions_path`` where there is
    one); a bad input is one error line naming the command (exit 2)."""
    try:
        args, options, training_args = parse_analysis_args(argv, options_cls, single_task=single_task,
                                                           prog=f"multimed {name}")
        if not training_args.resume_from_checkpoint and not getattr(options, "checkpoint", None):
            refuse_earlier_runs(training_args.output_dir)
        result = run(args, training_args, options=options)
    except ValueError as err:
        print(f"multimed {name}: error: {err}", file=sys.stderr)
        return 2
    written = [getattr(result, "predictions_path", None), result.paths.csv, result.paths.markdown,
               result.paths.figure]
    best = f"best: {result.best}; " if getattr(result, "best", None) is not None else ""
    print(f"{best}wrote " + ", ".join(str(path) for path in written if path is not None))
    return 0

def headline(task: str) -> tuple[str, str]:
    """(label column, metric) of a task's headline score (the registry's first label column and its first metric)."""
    from multimed_hf.training.report import headline as table_headline

    return table_headline(task)


# ---------------------------------------------------------------------- rows and modalities
def _arrow_table(dataset, columns: Sequence[str]):
    """The ``columns`` of ``dataset``'s rows as a pyarrow Table (a select / filter's own rows; nothing decoded)."""
    if not hasattr(dataset, "select_columns") or not hasattr(dataset, "with_format"):
        return None
    return dataset.select_columns(list(columns)).with_format("arrow")[:]


def modality_matrix(dataset, task: str, modalities: Sequence[str]) -> np.ndarray:
    """Bool ``[rows, len(modalities)]``: which of ``modalities`` each row holds (nothing decoded): an image modality
    where the row's ``modality`` column names it and its image is there, another where its input column is set."""
    spec = get_task(task)
    image = next((c.name for c in spec.inputs if c.modality == "image"), None)
    wanted = {c.name for c in spec.inputs if c.modality in modalities}
    if image is not None and any(m in IMAGE_MODALITIES for m in modalities):
        wanted |= {image, MODALITY_COLUMN}
    table = _arrow_table(dataset, sorted(wanted & set(dataset.column_names)))
    if table is None:
        raise AnalysisError("the analyses need a datasets.Dataset (not a streamed IterableDataset)")
    import pyarrow.compute as pc

    out = np.zeros((len(dataset), len(modalities)), dtype=bool)
    for j, m in enumerate(modalities):
        own = [c.name for c in spec.inputs if c.modality == m]
        if own:
            mask = pc.is_valid(table.column(own[0]))
        elif m in IMAGE_MODALITIES and image is not None:
            mask = pc.and_(pc.equal(table.column(MODALITY_COLUMN), m), pc.is_valid(table.column(image)))
        else:
            raise AnalysisError(f"task {task!r} has no input column for modality {m!r}")
        out[:, j] = pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    return out


def analysis_datasets(data: str, task: str, modalities: Sequence[str]) -> dict:
    """``{split: rows}`` of ``task`` in ``data``, each split restricted to rows holding at least one of
    ``modalities`` (the model refuses a row with none)."""
    from multimed_hf.training.loading import load_task_data

    splits = load_task_data(data, [task])[task]
    if "train" not in splits:
        raise AnalysisError(f"task {task!r} has no train split in {data!r}")
    out = {}
    for split, ds in splits.items():
        keep = np.flatnonzero(modality_matrix(ds, task, modalities).any(1))
        out[split] = ds if len(keep) == len(ds) else ds.select(keep)
    return out


# ---------------------------------------------------------------------- one run
def prediction_trainer(model, processor, training_args, task: str, modalities: Sequence[str], **trainer_kwargs):
    """A ``MultiMedTrainer`` that only predicts (``predict_task``) with ``model`` over ``modalities`` of ``task``."""
    from multimed_hf.training.trainer import MultiMedTrainer, prediction_arguments

    return MultiMedTrainer(model=model, args=prediction_arguments(training_args), processor=processor,
                           modalities={task: tuple(modalities)}, **trainer_kwargs)


def train_run(args, training_args, *, task: str, datasets: Mapping[str, Any], modalities: Sequence[str],
              output_dir: str | Path, modality_dropout: float | None = None, rows: str | None = None,
              train_fn: Callable | None = None) -> AnalysisRun:
    """Train one model on ``datasets`` (``{split: rows}``) reading ``modalities`` of ``task`` through
    ``multimed_hf.training.run.train_model`` (every run file written into ``output_dir``), and keep it in memory.

    ``args``/``training_args``: the parsed ``MultiMedArguments`` / ``TrainingArguments`` (with the defaults of the
    modalities this run reads: ``run_training_arguments``); the run evaluates nothing itself (``eval_splits=[]``):
    the analysis predicts what it needs. ``rows``: which of ``args.data``'s rows ``datasets`` holds, in words (the
    run's card and ``run_info.json`` record it). ``train_fn`` replaces ``train_model`` (tests count the trainings)."""
    from multimed_hf.training.arguments import overrides_read
    from multimed_hf.training.run import train_model

    train_fn = train_fn or train_model
    output_dir = Path(output_dir)
    modalities = tuple(modalities)
    plan = analysis_plan(args, task, modalities, output_dir.name)
    changes: dict[str, Any] = {"tasks": [task], "eval_splits": []}
    if args.processor_overrides:  # settings of modalities this run does not read would name a missing processor
        changes["processor_overrides"] = overrides_read(args.processor_overrides, modalities) or None
    if modality_dropout is not None:
        changes["modality_dropout"] = float(modality_dropout)
    run_args = dataclasses.replace(args, **changes)
    targs = dataclasses.replace(run_training_arguments(args, training_args, plan), output_dir=str(output_dir))
    resume = targs.resume_from_checkpoint
    if isinstance(resume, bool) or (isinstance(resume, str) and resume.lower() in ("true", "last")):
        from multimed_hf.training.run import last_checkpoint

        if resume and last_checkpoint(output_dir) is None:  # a run the stopped analysis never started: from scratch
            targs = dataclasses.replace(targs, resume_from_checkpoint=None)
    captured: dict[str, Any] = {}
    train_fn(run_args, targs, plan=plan, datasets={task: dict(datasets)}, rows=rows,
             on_assembly=lambda assembly: captured.setdefault("assembly", assembly))
    assembly = captured["assembly"]
    trainer = prediction_trainer(assembly.model, assembly.processor, targs, task, modalities)
    return AnalysisRun(task=task, model=assembly.model, processor=assembly.processor, trainer=trainer,
                       datasets=dict(assembly.datasets[task]), modalities=modalities, output_dir=output_dir)


# ---------------------------------------------------------------------- the empty predictor
def _class_counts(out: dict, values: Sequence) -> np.ndarray:
    names = list(out["names"])
    counts = np.zeros(len(names))
    for v in values:
        if v is None or (isinstance(v, (int, np.integer)) and v < 0):
            continue
        index = names.index(str(v).strip()) if isinstance(v, str) and str(v).strip() in names else \
            int(v) if isinstance(v, (int, np.integer)) else None
        if index is not None:
            counts[index] += 1
    return counts


def prior_outputs(task: str, train, head_spec: Mapping[str, Any], max_rows: int | None = None
                  ) -> dict[str, np.ndarray]:
    """The empty predictor's output for one row, per label column, in model units (``MultiMedOutput.logits``):
    class logits ``log`` of the training class frequencies (the majority class wins; AUROC 0.5), multilabel
    logits of each name's training prevalence, the training mean for regression. It is what every row gets when
    no modality is read (the model refuses such rows), i.e. v(empty) of the subset table. ``max_rows``: from the
    rows of ``train`` the models were trained on (``--max_train_samples``: drawn as ``sample_rows`` draws them)."""
    from multimed_hf.training.loading import column_values, sample_rows

    columns = [o["name"] for o in head_spec["outputs"]]
    extra = ["label_mask"] if "label_mask" in getattr(train, "column_names", ()) else []
    train = sample_rows({task: train}, max_rows)[task]
    values = column_values(train, [*columns, *extra])
    prior = {}
    for out in head_spec["outputs"]:
        name, kind = out["name"], out["kind"]
        if kind == "class":
            counts = _class_counts(out, values[name])
            if counts.sum() == 0:
                raise AnalysisError(f"task {task!r}: no training row has a label in {name!r}")
            prior[name] = np.log((counts + 1e-3) / (counts.sum() + 1e-3 * len(counts))).astype(np.float32)
        elif kind == "multilabel":
            names = list(out["names"])
            positive, known = np.zeros(len(names)), np.zeros(len(names))
            for i, present in enumerate(values[name]):
                if present is None:
                    continue
                hits = {names.index(p) if isinstance(p, str) else int(p) for p in present}
                asserted = set(hits) | {names.index(n) for n in (values["label_mask"][i] if extra else ()) or ()
                                        if n in names}
                for k in asserted:
                    known[k] += 1
                    positive[k] += k in hits
            rate = np.clip((positive + 0.5) / (known + 1.0), 1e-4, 1 - 1e-4)
            prior[name] = np.log(rate / (1 - rate)).astype(np.float32)
        elif kind == "regression":
            finite = np.array([v for v in values[name] if v is not None], dtype=np.float64)
            finite = finite[np.isfinite(finite)]
            if finite.size == 0:
                raise AnalysisError(f"task {task!r}: no training row has a value of {name!r}")
            prior[name] = np.float32(finite.mean())
        else:
            raise AnalysisError(f"task {task!r}: label {name!r} of kind {kind!r} has no empty predictor (the "
                                f"analyses cover class, multilabel and regression labels)")
    return prior


def prior_predictions(reference, prior: Mapping[str, np.ndarray]):
    """``reference`` (``TaskPredictions`` over some rows) with every row's output replaced by the empty predictor."""
    outputs = {c: np.broadcast_to(prior[c], reference.outputs[c].shape).copy() for c in reference.outputs}
    return dataclasses.replace(reference, outputs=outputs, loss=None)


def merge_predictions(reference, part, rows: np.ndarray, prior: Mapping[str, np.ndarray]):
    """Predictions over ``reference``'s rows: ``part``'s outputs at positions ``rows`` (``part`` covers exactly
    those rows, in order), the empty predictor's everywhere else; labels and ids from ``reference``."""
    merged = prior_predictions(reference, prior)
    rows = np.asarray(rows, dtype=np.int64)
    if len(part) != len(rows):
        raise AnalysisError(f"merge_predictions: {len(part)} predicted rows for {len(rows)} positions")
    for column, values in part.outputs.items():
        merged.outputs[column][rows] = _in_names_of(reference.head_spec, part.head_spec, column, values)
    return merged


def _names(head_spec: Mapping[str, Any], column: str) -> list | None:
    return next((list(o["names"]) for o in head_spec["outputs"] if o["name"] == column and "names" in o), None)


def _in_names_of(target_spec, source_spec, column: str, values: np.ndarray) -> np.ndarray:
    """Class logits of a model whose vocabulary (fitted on its own training rows) differs from ``target_spec``'s,
    re-ordered into the target's names; a name the model does not know gets a logit far below the rest."""
    target, source = _names(target_spec, column), _names(source_spec, column)
    if target is None or source is None or target == source:
        return values
    out = np.full((len(values), len(target)), np.float32(values.min() - 1e4 if values.size else -1e4),
                  dtype=values.dtype)
    for j, name in enumerate(source):
        if name in target:
            out[:, target.index(name)] = values[:, j]
    return out


def predict_subset(run: AnalysisRun, dataset, modalities: Sequence[str], prior, reference, *, split=None,
                   trainer=None):
    """``run``'s predictions over every row of ``dataset`` reading only ``modalities`` (the others masked out
    through the presence masks): rows holding none of them get the empty predictor. ``reference``: the run's
    predictions over the same rows (for labels and ids)."""
    trainer = trainer or run.trainer
    modalities = [m for m in run.modalities if m in set(modalities)]
    if not modalities:
        return prior_predictions(reference, prior)
    rows = np.flatnonzero(modality_matrix(dataset, run.task, modalities).any(1))
    if len(rows) == 0:
        return prior_predictions(reference, prior)
    subset = dataset if len(rows) == len(dataset) else dataset.select(rows)
    part = trainer.predict_task(run.task, subset, split=split, modalities=modalities)
    return merge_predictions(reference, part, rows, prior)


def slice_predictions(predictions, rows: np.ndarray):
    """``predictions`` restricted to positions ``rows`` (subgroups, bootstrap draws): ``TaskPredictions.select``."""
    return predictions.select(rows)


def score(predictions, split: str, bootstrap_samples: int, seed: int) -> list[dict]:
    """Long metric records (``metric_records``: value, n, bootstrap CI) of ``predictions``."""
    from multimed_hf.training.outputs import metric_records

    return metric_records(predictions, split, bootstrap_samples=bootstrap_samples, seed=seed)


def headline_value(records: Sequence[Mapping], task: str) -> dict | None:
    """The record of the task's headline (label column, metric) among ``records``."""
    column, metric = headline(task)
    single = len(get_task(task).labels) == 1
    for r in records:
        if r["metric"] == metric and (r["label"] == column or (single and r["label"] is None)):
            return dict(r)
    return None


# ---------------------------------------------------------------------- output files
#: Columns of counts: whole numbers, though a column with a missing value is float in pandas (61 shown as 61.000).
_COUNT_COLUMNS = frozenset({"rows", "scored", "unseen", "n", "seed", "seeds"})


def _cell(value, count: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and count and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value).replace("|", "\\|")


def markdown_table(frame, columns: Sequence[str] | None = None) -> str:
    """A GitHub Markdown table of ``frame`` (floats with 3 decimals, counts as whole numbers, missing values as a
    dash)."""
    columns = list(columns or frame.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in frame[columns].iterrows():
        lines.append("| " + " | ".join(_cell(row[c], c in _COUNT_COLUMNS) for c in columns) + " |")
    return "\n".join(lines)


def write_outputs(frame, output_dir: str | Path, name: str, markdown: str,
                  draw: Callable[[Any], None]) -> AnalysisPaths:
    """``<name>.csv`` (``frame``), ``<name>.md`` (``markdown``) and ``<name>.png`` (``draw(figure)`` on a
    matplotlib figure, Agg backend, nothing shown) under ``output_dir``."""
    from matplotlib.figure import Figure

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = AnalysisPaths(output_dir / f"{name}.csv", output_dir / f"{name}.md", output_dir / f"{name}.png")
    frame.to_csv(paths.csv, index=False)
    paths.markdown.write_text(markdown.rstrip() + "\n")
    figure = Figure(figsize=(8, 4.5), layout="constrained")  # no pyplot: no global state, no window
    draw(figure)
    figure.savefig(paths.figure, dpi=120)
    return paths
