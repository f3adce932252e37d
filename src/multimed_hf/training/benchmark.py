"""``multimed benchmark``: train and evaluate families x tasks x seeds, then write Table 1 beside the paper's."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from multimed_hf.tasks import get_task, list_tasks
from multimed_hf.training.families import FAMILIES, RunPlan, parse_family, plan_runs, unplanned
from multimed_hf.training.outputs import RUN_INFO
from multimed_hf.training.report import ReportPaths, failure_records, summarize, write_table1

__all__ = [
    "BenchmarkArguments",
    "BenchmarkError",
    "SMOKE_NOTE",
    "batch_description",
    "benchmark_main",
    "built_tasks",
    "data_note",
    "run_benchmark",
]

logger = logging.getLogger(__name__)

#: The banner of a table computed on the bundled synthetic samples.
SMOKE_NOTE = "smoke run on generated samples (each source's line says what in it is real), not a reproduction"

#: The file a finished run leaves (the RUN layer's long metric records); a run folder holding it is reused when asked.
RECORDS_FILE = "metrics_long.json"

#: Where a run's printed output (the Trainer's log lines) goes, in its folder: the terminal keeps the progress bar
#: over runs and the table.
STDOUT_FILE = "stdout.txt"
#: Where a failed run's traceback goes, in its folder.
ERROR_FILE = "error.txt"

#: ``multimed train`` flags that pick one family or plan: the benchmark plans every family itself.
_SINGLE_RUN_FLAGS = ("--family", "--plan", "--list_plans")
#: Flags the grid sets per run, so a value given would be overwritten: flag -> what to use instead.
_GRID_FLAGS = {"--seed": "--seeds S1 S2 ... (each run's seed)"}


class BenchmarkError(ValueError):
    """Benchmark arguments that name no runnable family, task or seed."""


@dataclass
class BenchmarkArguments:
    """What ``multimed benchmark`` adds to ``multimed train``'s arguments: the grid of families and seeds.

    ``--data``, ``--tasks`` (``all``: every config built in ``--data``), ``--encoders`` and every other option of
    ``multimed train`` apply to each run; ``--output_dir`` is the report folder (runs in ``OUTPUT_DIR/runs``)."""

    families: list[str] = field(default_factory=lambda: list(FAMILIES), metadata={
        "help": "Table 1 rows to run (default: all five), each optionally with variants after '+'", "nargs": "+"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "seeds; each run's TrainingArguments.seed (the paper: three seeds)", "nargs": "+"})
    reuse_finished_runs: bool = field(default=False, metadata={
        "help": f"keep a finished run (its folder holding {RECORDS_FILE} and run_info.json) instead of training it "
                "again, and resume a "
                "run stopped halfway from its last checkpoint, each only where it was made as this command makes "
                "it (plan, flags, training arguments); without it, a report folder holding an earlier benchmark's "
                "runs is refused"})
    note: str | None = field(default=None, metadata={
        "help": "banner of the report (default: the data's own: a smoke-run label on synthetic samples)"})


def built_tasks(data: str | Path) -> list[str]:
    """The tasks (registry order) whose config is built in the local folder ``data``."""
    root = Path(data)
    if not root.is_dir():
        raise BenchmarkError(f"--tasks all: {str(data)!r} is not a local folder; name the tasks of a Hub dataset")
    found = [task for task in list_tasks() if (root / task / "build_info.json").is_file()]
    if not found:
        raise BenchmarkError(f"--tasks all: {root} holds no built config (no <task>/build_info.json); run "
                             "`python dataset_scripts/build_all.py --out DIR` or `multimed build` first")
    return found


def data_note(data: str | Path, tasks: Sequence[str]) -> str | None:
    """The report's note for a local folder ``data`` where any source of ``tasks`` is a generated sample (the
    builders record it in ``build_info.json``): ``SMOKE_NOTE`` as its first line, then one line per synthetic source
    with its own provenance note (which says what in it is real, e.g. scanpy's pbmc68k cells). None for real data
    and for a Hub id (nothing is fetched for a note: pass ``note`` yourself)."""
    from multimed_hf.training.loading import read_build_info

    if not Path(data).is_dir():
        return None
    sources: dict[str, tuple[list[str], str]] = {}
    for task in tasks:
        for source in read_build_info(data, task).get("sources", []):
            provenance = source.get("provenance") or {}
            if provenance.get("synthetic"):
                name = str(source.get("name"))
                sources.setdefault(name, ([], provenance.get("description", "a generated sample")))[0].append(task)
    if not sources:
        return None
    lines = [f"{name} ({', '.join(used)}): {description}" for name, (used, description) in sources.items()]
    return "\n".join([f"{SMOKE_NOTE}; its numbers say nothing about medicine.", *lines])


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


@dataclass(frozen=True)
class _Run:
    plan: RunPlan
    seed: int
    output_dir: Path


def _plan_grid(data, tasks, families, seeds, output_dir: Path):
    """Every (plan, seed) run, the failure records of families that could not be planned, and the notes."""
    runs, failed, notes = [], [], {}
    for family in families:
        try:
            plans = plan_runs(family, tasks, data)
            notes.update({(family, task): why for task, why in unplanned(family, tasks, data).items()})
        except (ValueError, OSError) as err:  # e.g. a task whose rows hold none of its modalities
            logger.warning("family %s: no runs planned: %s", family, _error_text(err))
            failed += [r for seed in seeds for r in failure_records(family, tasks, seed, _error_text(err))]
            continue
        for plan in plans:
            for seed in seeds:
                runs.append(_Run(plan, seed, output_dir / "runs" / family / plan.name / f"seed{seed}"))
    return runs, failed, notes


def _training_args_for(training_args, plan: RunPlan, output_dir: Path, encoders: str):
    if training_args is None:
        from multimed_hf.training.arguments import make_training_arguments

        return make_training_arguments(output_dir, family=plan.family, encoders=encoders,
                                       modalities=plan.read_modalities)
    if isinstance(training_args, Mapping):
        return training_args[plan.family]
    if callable(training_args):
        return training_args(plan)
    return training_args


def _settings(runs: Sequence[_Run], records: Sequence[Mapping], training_args, encoders: str,
              output_dir: Path, task_batch_sizes: Mapping[str, int] | None = None) -> list[str]:
    """Lines saying how the numbers were made: runs, failures, and each family's training length and encoders."""
    failed = {(r.get("family"), r.get("run"), r.get("seed")) for r in records if r.get("error")}
    lines = [f"runs: {len(runs)} trained ({len(failed)} failed), each in {output_dir}/runs/<family>/<plan>/seed<k>"]
    recorded = {(r.get("family"), r.get("run"), r.get("seed")) for r in records}
    unscored = [f"{run.plan.family} {run.plan.name} seed {run.seed}" for run in runs
                if (run.plan.family, run.plan.name, run.seed) not in recorded]
    if unscored:  # e.g. a unimodal run of a modality no test row holds: trained, in no table
        lines.append(f"scored nothing (no evaluated row holds what they read), in no table: {'; '.join(unscored)}")
    for family in dict.fromkeys(run.plan.family for run in runs):
        settings: dict[str, list[str]] = {}  # one line per distinct setting; its plans named where several differ
        plans = {run.plan.name: run.plan for run in runs if run.plan.family == family}
        for plan in plans.values():
            args = _training_args_for(training_args, plan, Path("."), encoders)
            length = f"max_steps {args.max_steps}" if args.max_steps > 0 else f"{args.num_train_epochs:g} epochs"
            own = {t: n for t, n in (task_batch_sizes or {}).items() if t in plan.tasks}  # --task_batch_sizes
            own_note = f" ({', '.join(f'{t}: {n}' for t, n in own.items())} rows a batch per device)" if own else ""
            setting = (f"encoders {plan.encoders_for(encoders)}, {length}, learning rate {args.learning_rate:g}, "
                       f"{batch_description(args)}{own_note}")
            settings.setdefault(setting, []).append(plan.name)
        for setting, names in settings.items():
            lines.append(f"{family}: {setting}" + (f" ({', '.join(names)})" if len(settings) > 1 else ""))
    return lines


def batch_description(args) -> str:
    """The rows of one optimiser step: ``batch N`` per device, times the processes and accumulation steps where
    there are several (the effective batch then said)."""
    per, world, accumulation = args.per_device_train_batch_size, args.world_size, args.gradient_accumulation_steps
    factors = ([f"{world} processes"] if world > 1 else []) + ([f"{accumulation} accumulated"]
                                                               if accumulation > 1 else [])
    if not factors:
        return f"batch {per}"
    return f"batch {per} per device x {' x '.join(factors)} = {per * world * accumulation} a step"


#: Tasks the report sets a classical baseline beside: a logistic regression on the same rows and gene panel.
BASELINE_TASKS = ("cell_type",)
#: Training rows above which the baseline is not fitted (it holds them as one dense matrix: 100,000 cells x 2,000
#: genes is 0.8 GB); ``--max_train_samples`` brings a larger split under it.
BASELINE_MAX_ROWS = 100_000


def _baseline_lines(data, tasks: Sequence[str], records: Sequence[Mapping], *, max_train_samples: int | None = None,
                    max_eval_samples: int | None = None, streaming: bool = False) -> list[str]:
    """For each of ``BASELINE_TASKS`` benchmarked: scikit-learn's logistic regression fitted on the task's training
    rows and gene panel (``training.baselines``; the first ``max_train_samples`` rows and scored on the first
    ``max_eval_samples`` test rows, as the runs were), its test accuracy beside each family's mean over seeds; a line
    saying why where it is not fitted (streamed data, more than ``BASELINE_MAX_ROWS`` training rows, an error; the
    table is written either way)."""
    from multimed_hf.training.assembly import assemble
    from multimed_hf.training.baselines import logistic_regression_baseline
    from multimed_hf.training.loading import load_task_data, sample_rows  # the runs' own cap

    lines = []
    for task in (t for t in BASELINE_TASKS if t in tasks):
        if streaming:
            lines.append(f"{task}: logistic regression baseline not fitted: the data is streamed (the baseline "
                         f"reads the training split whole)")
            continue
        try:
            full = load_task_data(data, [task], splits=("train", "test"))[task]
            # the gene panel and scaling from the whole training split, as a run assembles them before its cap
            processor = assemble(data, [task], encoders="small", build_model=False,
                                 datasets={task: dict(full)}).processor
            capped = {"train": sample_rows({task: full["train"]}, max_train_samples)[task],
                      "test": sample_rows({task: full["test"]}, max_eval_samples)[task]}
            if len(capped["train"]) > BASELINE_MAX_ROWS:
                lines.append(f"{task}: logistic regression baseline not fitted: {len(capped['train']):,} training "
                             f"rows, above its limit of {BASELINE_MAX_ROWS:,} (--max_train_samples lowers them)")
                continue
            base = logistic_regression_baseline(data, task, processor=processor, datasets=capped)
        except Exception as err:  # noqa: BLE001  (a baseline that cannot be fitted must not cost the table)
            lines.append(f"{task}: logistic regression baseline not fitted: {_error_text(err)}")
            continue
        # each family's mean over seeds as table1.md gives it (several runs of one seed pooled by their rows)
        stats = summarize([r for r in records if r.get("task") == task])
        stats = stats[stats["metric"] == "accuracy"]
        beside = "; ".join(f"{row.family} {row.mean:.2%} (mean of {row.seeds})" for row in stats.itertuples())
        lines.append(f"{task}: scikit-learn logistic regression (C=1) on the same {base.n_train} training rows and "
                     f"{base.num_features} genes: test accuracy {base.accuracy:.2%} on {base.n_test} rows; ours: "
                     f"{beside or 'no finished run'}")
    return lines


def _check_grid_flags(runs: Sequence[_Run], data, encoders: str, options: Mapping[str, Any]) -> None:
    """Refuse a run option that changes no run of the grid (``training.run.plan_flag_notes``: e.g.
    ``--modality_dropout`` over unimodal families only); one that changes some runs is applied there, and each other
    run logs a one-line warning."""
    from multimed_hf.training.arguments import MultiMedArguments
    from multimed_hf.training.run import flag_changing_no_plan, plan_flag_notes

    notes = []
    for plan in {(run.plan.family, run.plan.name): run.plan for run in runs}.values():
        try:
            args = MultiMedArguments(data=str(data), tasks=list(plan.tasks), family=plan.family, encoders=encoders,
                                     plan=plan.name, **options)
        except (TypeError, ValueError):  # a bad option fails each run, recorded in its cells
            return
        notes.append(plan_flag_notes(args, plan))
    unused = flag_changing_no_plan(notes)
    if unused:
        raise BenchmarkError(f"--{unused[0]} changes no run of the grid ({unused[1]}, and so in every other run); "
                             f"leave it out")


def _records_of(result, run: _Run) -> list[dict]:
    records = getattr(result, "records", None)
    if records is None:
        path = run.output_dir / RECORDS_FILE
        records = json.loads(path.read_text()) if path.is_file() else []
    return [{**r, "family": run.plan.family, "seed": run.seed, "run": run.plan.name} for r in records]


def _main_process() -> bool:
    """Rank 0 of ``torchrun`` / ``accelerate launch`` (or a lone process): the one that writes the report, each
    run's log and error files (every process trains each run; their files would be written over each other)."""
    return int(os.environ.get("RANK", "0")) == 0


def _refuse_earlier_runs(runs: Sequence[_Run], output_dir: Path) -> None:
    """A report folder holding an earlier benchmark's runs (results or checkpoints) is not trained over in silence,
    as ``multimed train`` refuses a folder with checkpoints: the user keeps them or picks another folder."""
    from multimed_hf.training.run import last_checkpoint

    earlier = []
    for run in runs:
        last = last_checkpoint(run.output_dir)
        if (run.output_dir / RECORDS_FILE).is_file():
            earlier.append(f"{run.output_dir} (finished)")
        elif last is not None:
            earlier.append(f"{run.output_dir} ({os.path.basename(last)})")
    if earlier:
        raise BenchmarkError(
            f"{output_dir} holds {len(earlier)} run(s) of an earlier benchmark, first {earlier[0]}: pass "
            f"--reuse_finished_runs to keep the finished ones and resume those stopped halfway from their last "
            f"checkpoint, or another --output_dir (they would be trained over)")


#: TrainingArguments a reused run must have been trained with as the command asks (what changes its numbers); and
#: label_smoothing_factor where the run has a smoothed output (one without trains and records 0 whatever is asked).
_REUSE_COMPARED = ("learning_rate", "weight_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                   "gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "seed", "bf16", "fp16")


def _recorded_differences(run: _Run, args, training_args) -> list[str]:
    """How a finished or half-finished run of ``run``'s folder was made otherwise than this command would make it:
    its plan (tasks, modalities), ``multimed train`` arguments (``run_info.json``) and the training arguments that
    change its numbers (``training_args.bin``, of the run or of its last checkpoint). Empty where nothing recorded
    differs (or nothing is recorded)."""
    from multimed_hf.training.run import last_checkpoint

    differences = []
    info_path = run.output_dir / "run_info.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        if info.get("plan") is not None and info["plan"] != run.plan.to_dict():
            differences.append(f"plan {info['plan'].get('tasks')} / {info['plan'].get('modalities')} (now "
                               f"{list(run.plan.tasks)} / { {t: list(m) for t, m in run.plan.modalities.items()} })")
        if info.get("world_size") not in (None, training_args.world_size):  # the effective batch differs
            differences.append(f"{info['world_size']} process(es) (now {training_args.world_size})")
        ours = json.loads(json.dumps(dataclasses.asdict(args), default=str))
        for key, value in sorted((info.get("arguments") or {}).items()):
            if key != "data" and key in ours and ours[key] != value:
                differences.append(f"--{key} {value!r} (now {ours[key]!r})")
    checkpoint = last_checkpoint(run.output_dir)
    saved = run.output_dir / "training_args.bin"
    saved = saved if saved.is_file() else (Path(checkpoint) / "training_args.bin" if checkpoint else None)
    if saved is not None and saved.is_file():
        import torch

        recorded = torch.load(saved, weights_only=False)
        for key in _REUSE_COMPARED:
            then, now = getattr(recorded, key, None), getattr(training_args, key, None)
            if then != now:
                differences.append(f"--{key} {then!r} (now {now!r})")
        then, now = getattr(recorded, "label_smoothing_factor", 0.0), training_args.label_smoothing_factor
        if then != now and (then or _smooths(saved.parent)):
            differences.append(f"--label_smoothing_factor {then!r} (now {now!r})")
    return differences


def _smooths(folder: Path) -> bool:
    """Whether the model saved in ``folder`` has an output that label smoothing changes (no saved config: False,
    the recorded 0 taken as the run's own)."""
    from multimed_hf.configuration_multimed import MultiMedConfig

    try:
        return bool(MultiMedConfig.from_pretrained(folder).smoothed_outputs())
    except (OSError, ValueError):
        return False


def _refuse_runs_made_otherwise(runs: Sequence[_Run], make_args: Callable[[_Run], tuple]) -> None:
    """``--reuse_finished_runs`` keeps a run (or resumes it) only where it was made as this command would make it: a
    run of another plan (the multitask folder ``all`` of fewer tasks), other flags or another length would enter
    the table under this command's settings lines."""
    from multimed_hf.training.run import last_checkpoint

    made_otherwise = []
    for run in runs:
        if (run.output_dir / RECORDS_FILE).is_file() or last_checkpoint(run.output_dir):
            differences = _recorded_differences(run, *make_args(run))
            if differences:
                made_otherwise.append(f"{run.output_dir}: {'; '.join(differences[:4])}")
    if made_otherwise:
        raise BenchmarkError(
            f"--reuse_finished_runs: {len(made_otherwise)} run(s) of the report were made otherwise than this command "
            f"makes them, first {made_otherwise[0]}: pass the earlier settings again, or another --output_dir (a "
            f"multitask run, e.g. runs/<family>/all, holds the earlier task list: remove its folder to train it again "
            f"with these tasks)")


def _refuse_runs_outside(runs: Sequence[_Run], output_dir: Path) -> None:
    """A report folder holding runs that this grid leaves out is refused: ``table1.*`` would be written over from
    this grid's runs alone, the earlier ones left out of every table (adding seeds or tasks into the same folder)."""
    from multimed_hf.training.run import last_checkpoint

    grid = {run.output_dir.resolve() for run in runs}
    outside = sorted(
        folder for folder in (output_dir / "runs").glob("*/*/seed*")
        if folder.is_dir() and folder.resolve() not in grid
        and ((folder / RECORDS_FILE).is_file() or (folder / ERROR_FILE).is_file() or last_checkpoint(folder))
    )
    if outside:
        raise BenchmarkError(
            f"{output_dir} holds {len(outside)} run(s) of an earlier benchmark that this grid leaves out, first "
            f"{outside[0]}: table1 would be written from this grid's runs alone; name the earlier grid too (its "
            f"families, tasks and seeds) with --reuse_finished_runs to add seeds to it, or pass another --output_dir")


def run_benchmark(data: str | Path, tasks: Sequence[str], families: Sequence[str] = FAMILIES,
                  seeds: Sequence[int] = (0, 1, 2), output_dir: str | Path = "report", training_args=None, *,
                  encoders: str = "small", run_options: Mapping[str, Any] | None = None,
                  train_fn: Callable | None = None, reuse_finished_runs: bool = False, note: str | None = None,
                  progress: bool = True) -> tuple[list[dict], ReportPaths]:
    """Train and evaluate every family x plan x seed, then write ``table1.csv/.md/.png`` into ``output_dir``.

    Each run is ``train_fn(MultiMedArguments(data, plan's tasks, family, encoders, plan=name, **run_options),
    TrainingArguments(output_dir=OUTPUT_DIR/runs/<family>/<plan>/seed<k>, seed=k), plan=plan)`` (default
    ``training.run.train_model``); its long metric records get ``family``, ``seed`` and ``run`` (the plan's name). A
    run that raises records its error in its cells (``report.failure_records``; the traceback in its folder's
    ``error.txt``) and the loop goes on. What a run prints goes to its folder's ``stdout.txt``. ``training_args``:
    one ``TrainingArguments`` for every run, a mapping family -> ``TrainingArguments``, a callable plan ->
    ``TrainingArguments``, or None (our defaults per family, encoders and the plan's modalities).
    ``reuse_finished_runs`` keeps a run whose folder holds ``metrics_long.json`` and ``run_info.json`` (written after
    it) and resumes one holding checkpoints from its last (a benchmark stopped halfway goes on where it stopped);
    without it, a grid whose run folders hold
    an earlier benchmark's results or checkpoints is refused (``BenchmarkError``) before any training. ``note``
    defaults to ``data_note(data, tasks)``. Returns the records
    and the report's paths."""
    from tqdm.auto import tqdm

    from multimed_hf.training.arguments import MultiMedArguments
    from multimed_hf.training.run import last_checkpoint

    if train_fn is None:  # its printed log lines and metrics go to each run's stdout.txt
        import functools

        from multimed_hf.training.run import train_model

        train_fn = functools.partial(train_model, verbose=True)
    tasks = list(dict.fromkeys(tasks))
    families = list(dict.fromkeys(families))
    seeds = [int(s) for s in dict.fromkeys(seeds)]
    if not tasks or not families or not seeds:
        raise BenchmarkError(f"run_benchmark: needs tasks, families and seeds; got tasks={tasks}, "
                             f"families={families}, seeds={seeds}")
    for task in tasks:
        get_task(task)
    for family in families:
        parse_family(family)  # an unknown family or variant fails before any training
    output_dir = Path(output_dir)
    runs, records, notes = _plan_grid(data, tasks, families, seeds, output_dir)
    options = dict(run_options or {})
    _check_grid_flags(runs, data, encoders, options)
    if not reuse_finished_runs:
        _refuse_earlier_runs(runs, output_dir)
    _refuse_runs_outside(runs, output_dir)

    def run_args_of(run: _Run):
        args = MultiMedArguments(data=str(data), tasks=list(run.plan.tasks), family=run.plan.family,
                                 encoders=encoders, plan=run.plan.name, **options)
        base = _training_args_for(training_args, run.plan, run.output_dir, encoders)
        return args, dataclasses.replace(base, output_dir=str(run.output_dir), seed=run.seed)

    if reuse_finished_runs:
        _refuse_runs_made_otherwise(runs, run_args_of)
    main = _main_process()
    bar = tqdm(runs, desc="benchmark", unit="run", disable=not progress or not main)
    for run in bar:
        bar.set_postfix_str(f"{run.plan.family} {run.plan.name} seed {run.seed}")
        done = run.output_dir / RECORDS_FILE
        if reuse_finished_runs and done.is_file() and (run.output_dir / RUN_INFO).is_file():  # written after it
            records += _records_of(None, run)
            continue
        try:
            args, base = run_args_of(run)
            run.output_dir.mkdir(parents=True, exist_ok=True)
            for stale in (done, run.output_dir / ERROR_FILE) if main else ():  # no earlier attempt's results left
                stale.unlink(missing_ok=True)
            resume = last_checkpoint(run.output_dir) if reuse_finished_runs else None
            if resume is not None:  # a run stopped halfway goes on from where it stopped
                logger.info("run %s/%s seed %d resumes from %s", run.plan.family, run.plan.name, run.seed, resume)
            log_file = run.output_dir / STDOUT_FILE if main else os.devnull  # one log, the main process's
            with open(log_file, "a" if resume else "w") as log, contextlib.redirect_stdout(log):
                result = train_fn(args, dataclasses.replace(base, resume_from_checkpoint=resume), plan=run.plan)
            records += _records_of(result, run)
        except Exception as err:  # noqa: BLE001  (one failing cell must not stop the table; the error is kept)
            logger.warning("run %s/%s seed %d failed: %s", run.plan.family, run.plan.name, run.seed, _error_text(err))
            if main:
                run.output_dir.mkdir(parents=True, exist_ok=True)
                (run.output_dir / ERROR_FILE).write_text(traceback.format_exc())
            records += failure_records(run.plan.family, run.plan.tasks, run.seed, _error_text(err), run=run.plan.name)
    if note is None:
        note = data_note(data, tasks)
    banner, *details = (note or "").splitlines() or [""]  # an empty banner: no smoke label, the details still go
    from multimed_hf.training.arguments import json_argument

    sizes = (run_options or {}).get("task_batch_sizes")  # the runs take a JSON string (the flag's form) or a dict
    sizes = json_argument("task_batch_sizes", sizes) if isinstance(sizes, str) else sizes
    note = "\n".join([banner, *details, *_settings(runs, records, training_args, encoders, output_dir, sizes),
                      *_baseline_lines(data, tasks, records, max_train_samples=options.get("max_train_samples"),
                                       max_eval_samples=options.get("max_eval_samples"),
                                       streaming=bool(options.get("streaming")))])
    if not main:  # the main process writes the report; the others name where it goes
        return records, ReportPaths(*(output_dir / f"table1.{ext}" for ext in ("csv", "md", "png")))
    paths = write_table1(records, output_dir, note=note, families=families, tasks=tasks, notes=notes)
    return records, paths


def _parse(argv: Sequence[str], prog: str = "multimed benchmark"):
    from transformers import HfArgumentParser, TrainingArguments

    from multimed_hf.training.arguments import (
        SCRIPT_SWITCHES,
        MultiMedArguments,
        check_variant_flags,
        flags_named,
        refuse_domain_specific_encoders,
        refuse_lone_processes,
        refuse_script_switches,
    )

    parser = HfArgumentParser((BenchmarkArguments, MultiMedArguments, TrainingArguments), prog=prog)
    if len(argv) == 1 and argv[0].endswith(".json"):
        raise BenchmarkError("multimed benchmark: pass flags, not a JSON file (its defaults depend on each family)")
    bench, run_args, first = parser.parse_args_into_dataclasses(list(argv))
    # named as argparse reads them: either spelling (--resume-from-checkpoint) and abbreviations (--resume_from)
    single = [flag.lstrip("-") for flag in _SINGLE_RUN_FLAGS]
    named = flags_named(HfArgumentParser((BenchmarkArguments, MultiMedArguments, TrainingArguments)), argv,
                        ["encoders", *SCRIPT_SWITCHES, *single, "resume_from_checkpoint", "push_to_hub",
                         "hub_model_id", *(flag.lstrip("-") for flag in _GRID_FLAGS)])
    given = [dest for dest in single if dest in named]
    if given:
        raise BenchmarkError(f"multimed benchmark: --{given[0]} picks one run of `multimed train`; the "
                             "benchmark runs every plan of --families")
    if "resume_from_checkpoint" in named:
        raise BenchmarkError("multimed benchmark: --resume_from_checkpoint names one run's checkpoint; pass "
                             "--reuse_finished_runs to keep the finished runs of --output_dir and resume each run "
                             "stopped halfway from its own last checkpoint")
    pushing = [flag for flag in ("push_to_hub", "hub_model_id") if flag in named]
    if pushing:  # each run's repository would be its folder's name, seed<k>: every run of a seed into one
        raise BenchmarkError(f"multimed benchmark: --{pushing[0]}: the benchmark trains every run of the grid, and "
                             f"each would be pushed over the one before into one repository (named after its "
                             f"folder, seed<k>, or --hub_model_id); leave it out and push the runs you want "
                             f"afterwards (`hf upload ORG/NAME OUTPUT_DIR/runs/<family>/<plan>/seed<k>`)")
    overwritten = [flag for flag in _GRID_FLAGS if flag.lstrip("-") in named]
    if overwritten:
        raise BenchmarkError(f"multimed benchmark: {overwritten[0]} would be overwritten by every run of the grid; "
                             f"use {_GRID_FLAGS[overwritten[0]]}")
    check_variant_flags(run_args, bench.families)
    refuse_domain_specific_encoders(run_args, named, BenchmarkError, families=bench.families)
    refuse_script_switches(named, "multimed benchmark trains every run of the grid, then scores --eval_splits",
                           BenchmarkError)
    refuse_lone_processes(first, BenchmarkError)
    return bench, run_args, _PerRunArguments(parser, list(argv), run_args.encoders, Path(first.output_dir))


@dataclass
class _PerRunArguments:
    """A run's ``TrainingArguments``: our defaults for its family, encoders and modalities
    (``training_defaults``), under the flags given, as ``multimed train`` parses them; one parse per distinct set
    of defaults, each over the parser's own defaults (``set_defaults`` keeps what an earlier call set: the small
    encoders' label smoothing went to every domain_specific run listed after them)."""

    parser: Any
    argv: list[str]
    encoders: str
    output_dir: Path
    parsed: dict[str, Any] = field(default_factory=dict)
    initial: dict[str, Any] | None = None

    def __call__(self, plan: RunPlan):
        from multimed_hf.training.arguments import training_defaults

        defaults = training_defaults(plan.family, self.encoders, plan.read_modalities)
        key = json.dumps(defaults, sort_keys=True, default=str)
        if key not in self.parsed:
            if self.initial is None:  # argparse's rule: the first action of a dest gives its default (--no_x)
                self.initial = {}
                for action in self.parser._actions:
                    if action.dest != "help":
                        self.initial.setdefault(action.dest, action.default)
            self.parser.set_defaults(**{**self.initial, **defaults})
            self.parsed[key] = self.parser.parse_args_into_dataclasses(list(self.argv))[2]
        return self.parsed[key]


def benchmark_main(argv: Sequence[str] | None = None) -> int:
    """``multimed benchmark --data DIR --tasks all|T ... --families ... --seeds 0 1 2 --output_dir REPORT
    [every multimed train / TrainingArguments flag]``: runs the grid, writes the report, prints the table."""
    from multimed_hf.training.arguments import check_run_flags

    argv = list(sys.argv[1:] if argv is None else argv)
    try:  # a run's own failure is recorded in its cells; what stops here is the command's input
        bench, run_args, training_args_for = _parse(argv)
        tasks = built_tasks(run_args.data) if run_args.tasks == ["all"] else run_args.tasks
        check_run_flags(run_args, tasks)
        skip = {f.name for f in dataclasses.fields(run_args)} & {"data", "tasks", "family", "encoders", "plan",
                                                                  "list_plans"}
        options = {f.name: getattr(run_args, f.name) for f in dataclasses.fields(run_args) if f.name not in skip}
        output_dir = training_args_for.output_dir
        records, paths = run_benchmark(run_args.data, tasks, bench.families, bench.seeds, output_dir,
                                       training_args_for, encoders=run_args.encoders, run_options=options,
                                       reuse_finished_runs=bench.reuse_finished_runs, note=bench.note)
    except ValueError as err:
        message = str(err).removeprefix("multimed benchmark: ")
        print(f"multimed benchmark: error: {message}", file=sys.stderr)
        return 2
    if _main_process():
        print(paths.markdown.read_text())
        print(f"wrote {paths.csv}, {paths.markdown} and {paths.figure}; each run's folder is under "
              f"{output_dir / 'runs'}")
    # failed cells are results, reported in the table; only a grid where nothing ran is a failed command
    return 1 if records and all(r.get("error") for r in records) else 0
