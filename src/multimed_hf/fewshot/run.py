"""``multimed fewshot``: k-shot adapters and zero-shot evaluation of a trained checkpoint on one task, per seed, and
the paper's Table 2 (table2.csv appended across tasks, table2.md beside the paper's numbers, table2.png)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from multimed_hf.fewshot.adapters import (
    AdapterSettings,
    attach_adapter,
    head_spec_for,
    prepare_head,
    save_adapter,
)
from multimed_hf.fewshot.support import check_disjoint, sample_support
from multimed_hf.fewshot.zeroshot import (
    ZeroShotError,
    read_alignment,
    zero_shot_classes,
    zero_shot_predict,
)
from multimed_hf.tasks import get_task
from multimed_hf.training.outputs import PREDICTIONS_FOLDER, metric_records, write_json, write_predictions

__all__ = [
    "FewShotArguments",
    "FewShotError",
    "family_name",
    "run_fewshot",
    "write_table2",
    "parse_fewshot_args",
    "fewshot_main",
    "ZERO_SHOT_REGRESSION_NOTE",
    "TABLE1_ROWS",
]

#: Table 2's first two rows, read from a ``multimed benchmark`` table1.csv.
TABLE1_ROWS = ("multimodal", "multimodal_multitask")
#: What Table 2's zero-shot cell of a regression task says (see ``multimed_hf.fewshot.zeroshot``).
ZERO_SHOT_REGRESSION_NOTE = "no zero-shot for a regression target (no class texts); see fewshot.zeroshot"


class FewShotError(ValueError):
    """A few-shot run that cannot start: missing splits, shots < 0, a --table1 file that is not a table1.csv."""


def family_name(shots: int) -> str:
    """Table 2's row key of ``shots``: ``zero_shot`` or ``<k>_shot``."""
    return "zero_shot" if shots == 0 else f"{shots}_shot"


@dataclass
class FewShotArguments:
    """``multimed fewshot CHECKPOINT --data DIR --task T --shots 0 5 10 20 --seeds 0 1 2 [TrainingArguments]``."""

    checkpoint: str = field(metadata={"help": "a trained MultiMed run folder (multimed train) or Hub model id"})
    data: str = field(metadata={"help": "a built MultiMed folder or Hub dataset id"})
    task: str = field(metadata={"help": "the task to adapt to (its train split gives the support sets, its test "
                                        "split the scores)"})
    shots: list[int] = field(default_factory=lambda: [0, 5, 10, 20],
                             metadata={"help": "k per class (0: zero-shot by label text)", "nargs": "+"})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "support-set and training seeds",
                                                                          "nargs": "+"})
    method: str = field(default="lora", metadata={"help": "PEFT method: lora, loha, lokr, ia3"})
    rank: int = field(default=8, metadata={"help": "adapter rank"})
    alpha: float | None = field(default=None, metadata={"help": "LoRA alpha (default 2 x rank)"})
    adapter_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    targets: list[str] | None = field(default=None, metadata={"help": "leaf names of the linear layers to adapt "
                                                                      "(default: per encoder family)", "nargs": "+"})
    base_id: str | None = field(default=None, metadata={"help": "the checkpoint's Hub id, written into each "
                                                                "adapter as base_model_name_or_path"})
    table1: str | None = field(default=None, metadata={"help": "table1.csv of multimed benchmark: Table 2's first "
                                                               "two rows"})
    class_texts: str | None = field(default=None, metadata={"help": "JSON (or a JSON file): class -> describing "
                                                                    "text for zero-shot"})
    group_column: str | None = field(default=None, metadata={"help": "grouping column of the support sets "
                                                                     "(default: group_id)"})
    eval_split: str = field(default="test", metadata={"help": "the split scored"})
    max_eval_samples: int | None = field(default=None, metadata={"help": "keep the first N evaluation rows"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples of the metrics' CIs"})

    def __post_init__(self):
        if any(k < 0 for k in self.shots):
            raise FewShotError(f"--shots {self.shots}: every k must be >= 0 (0 = zero-shot)")
        get_task(self.task)


def _settings(args: FewShotArguments) -> AdapterSettings:
    return AdapterSettings(method=args.method, rank=args.rank, alpha=args.alpha, dropout=args.adapter_dropout,
                           targets=args.targets)


def _texts(args: FewShotArguments, alignment: Mapping | None) -> dict | None:
    if args.class_texts:
        text = Path(args.class_texts).read_text() if Path(args.class_texts).is_file() else args.class_texts
        return dict(json.loads(text))
    return ((alignment or {}).get("class_texts") or {}).get(args.task)


def _evaluation_rows(dataset, task: str, modalities: Sequence[str], limit: int | None):
    from multimed_hf.training.loading import rows_with_modality

    if len(modalities) < len(get_task(task).modalities):
        dataset = rows_with_modality(dataset, task, list(modalities)).flatten_indices()
    if limit is not None and len(dataset) > limit:
        dataset = dataset.select(range(limit)).flatten_indices()
    return dataset


def _tag(records: list[dict], family: str, seed: int, run: str) -> list[dict]:
    return [{**r, "family": family, "seed": seed, "run": run} for r in records]


def _few_shot(args, training_args, train, test, k: int, seed: int, out: Path) -> list[dict]:
    from transformers import set_seed

    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.training.assembly import regression_statistics
    from multimed_hf.training.run import build_trainer

    set_seed(seed)
    model = MultiMedModel.from_pretrained(args.checkpoint)
    processor = MultiMedProcessor.from_pretrained(args.checkpoint)
    support = sample_support(train, args.task, k, seed, group_column=args.group_column)
    check_disjoint(support, test, split=args.eval_split)
    rows = support.select(train)
    stats = regression_statistics({args.task: rows})
    spec = head_spec_for(model, args.task, processor=processor, train=train, regression_stats=stats)
    carried = prepare_head(model, args.task, spec)
    settings = _settings(args)
    peft_model = attach_adapter(model, args.task, settings, base_id=args.base_id)
    modalities = list(model.config.heads[args.task]["modalities"])
    targs = dataclasses.replace(training_args, output_dir=str(out), seed=seed)
    trainer = build_trainer(peft_model, targs, processor, train_datasets={args.task: rows},
                            modalities={args.task: modalities})
    trainer.train()
    evaluation = _evaluation_rows(test, args.task, modalities, args.max_eval_samples)
    predictions = trainer.predict_task(args.task, evaluation, split=args.eval_split)
    records = metric_records(predictions, args.eval_split, bootstrap_samples=args.bootstrap_samples, seed=seed)
    if trainer.is_world_process_zero():
        write_predictions(predictions, evaluation, out / PREDICTIONS_FOLDER / f"{args.task}-{args.eval_split}.parquet")
        write_json(out / "support.json", support.to_dict())
        metrics = {f"{r['label']}/{r['metric']}" if r["label"] else r["metric"]: r["value"] for r in records}
        save_adapter(peft_model, out / "adapter", task=args.task, k=k, seed=seed, head_spec=carried,
                     base_id=args.base_id, settings=settings, support=support.to_dict(), metrics=metrics)
        if carried is not None or args.task in processor.vocabularies:
            processor.save_pretrained(out / "adapter" / "processor")
    return [{**r, "k": k, "support_rows": len(support), "support_short": json.dumps(support.short) if support.short else None}
            for r in records]


def _zero_shot(args, training_args, train, test, seed: int, out: Path) -> list[dict]:
    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor

    model = MultiMedModel.from_pretrained(args.checkpoint).eval()
    processor = MultiMedProcessor.from_pretrained(args.checkpoint)
    alignment = read_alignment(args.checkpoint)
    classes = zero_shot_classes(model, args.task, alignment, train)
    targs = dataclasses.replace(training_args, output_dir=str(out), seed=seed)
    evaluation = _evaluation_rows(test, args.task, [m for m in get_task(args.task).modalities
                                                    if m in model.config.encoders], args.max_eval_samples)
    predictions, rows = zero_shot_predict(model, processor, args.task, evaluation, classes=classes,
                                          training_args=targs, texts=_texts(args, alignment),
                                          split=args.eval_split)
    records = metric_records(predictions, args.eval_split, bootstrap_samples=args.bootstrap_samples, seed=seed)
    write_predictions(predictions, rows, out / PREDICTIONS_FOLDER / f"{args.task}-{args.eval_split}.parquet")
    write_json(out / "zero_shot.json", {"classes": classes, "chance": 1 / len(classes), "rows": len(rows),
                                        "alignment": alignment})
    return [{**r, "k": 0, "chance": 1 / len(classes)} for r in records]


def run_fewshot(args: FewShotArguments, training_args, *, datasets: Mapping[str, Any] | None = None) -> list[dict]:
    """Every k of ``args.shots`` x seed on ``args.task``: a support set, an adapter trained through
    ``MultiMedTrainer`` and scored on the evaluation split (k = 0: zero-shot by label text, once, as it trains
    nothing); each run's adapter, support set and predictions under ``<output_dir>/runs/<task>/<family>/seed<s>/``.
    A run that fails records its error and the loop goes on. ``datasets``: ``{split: Dataset}`` of the task instead of
    loading ``args.data``. Returns the metric records (``family``, ``seed``, ``run`` added); see ``write_table2``."""
    from multimed_hf.training.report import failure_records

    if datasets is None:
        from multimed_hf.training.loading import load_task_data

        datasets = load_task_data(args.data, [args.task], splits=("train", args.eval_split))[args.task]
    missing = [s for s in ("train", args.eval_split) if s not in datasets]
    if missing:
        raise FewShotError(f"task {args.task!r}: {args.data!r} has no split(s) {missing}")
    train, test = datasets["train"], datasets[args.eval_split]
    root = Path(training_args.output_dir)
    records: list[dict] = []
    for k in args.shots:
        family = family_name(k)
        for seed in args.seeds[:1] if k == 0 else args.seeds:
            run = f"{args.task}-{family}"  # one name across seeds: the report pools seeds, never runs
            out = root / "runs" / args.task / family / f"seed{seed}"
            try:
                got = (_zero_shot(args, training_args, train, test, seed, out) if k == 0 else
                       _few_shot(args, training_args, train, test, k, seed, out))
            except ZeroShotError as err:
                if get_task(args.task).problem_type == "regression":
                    continue  # the table says why (ZERO_SHOT_REGRESSION_NOTE)
                got = failure_records(family, [args.task], seed, f"{type(err).__name__}: {err}", run=run,
                                      split=args.eval_split)
            except (ValueError, RuntimeError, OSError) as err:
                got = failure_records(family, [args.task], seed, f"{type(err).__name__}: {err}", run=run,
                                      split=args.eval_split)
            records += _tag(got, family, seed, run)
    return records


def _table1_rows(path: str | Path, tasks: Sequence[str]) -> list[dict]:
    from multimed_hf.training.report import read_records

    path = Path(path)
    if path.is_dir():
        path = path / "table1.csv"
    if not path.is_file():
        raise FewShotError(f"--table1 {str(path)!r}: no such file (give the table1.csv of multimed benchmark)")
    rows = read_records(path)
    if rows and "family" not in rows[0]:
        raise FewShotError(f"--table1 {str(path)!r}: not a table1.csv (no 'family' column)")
    return [r for r in rows if r.get("family") in TABLE1_ROWS and r.get("task") in set(tasks)]


def write_table2(records: Sequence[Mapping], output_dir: str | Path, *, table1: str | Path | None = None,
                 append: bool = True):
    """Write ``table2.csv`` (long format, ``report.COLUMNS``; rows of an earlier table2.csv kept unless this run
    rewrites their task and row), ``table2.md`` (rows: multimodal, multimodal multitask -- from ``table1`` when given
    -- zero-shot, 5-, 10-, 20-shot and any other k; columns: the tasks, the paper's three first) and ``table2.png``.
    Returns ``report.ReportPaths``."""
    from multimed_hf.training.paper import TABLE2, TABLE2_COLUMNS, TABLE2_ROW_LABELS
    from multimed_hf.training.report import CORRELATION_METRICS, NATURAL_SCALE_METRICS, read_records, write_table

    output_dir = Path(output_dir)
    new = [dict(r) for r in records]
    written = {(r["task"], r["family"]) for r in new}
    previous = read_records(output_dir / "table2.csv") if append and (output_dir / "table2.csv").is_file() else []
    kept = [r for r in previous if (r["task"], r["family"]) not in written
            and not (table1 is not None and r["family"] in TABLE1_ROWS)]
    combined = kept + new
    tasks = list(dict.fromkeys(r["task"] for r in combined))
    if table1 is not None:
        combined = _table1_rows(table1, tasks) + combined
    shots = sorted({int(f.split("_")[0]) for f in (r["family"] for r in combined) if f.endswith("_shot")
                    and f.split("_")[0].isdigit()})
    families = list(TABLE2_ROW_LABELS) + [family_name(k) for k in shots if family_name(k) not in TABLE2_ROW_LABELS]
    ordered = [t for t in TABLE2_COLUMNS if t in tasks] + [t for t in tasks if t not in TABLE2_COLUMNS]
    notes = {("zero_shot", t): ZERO_SHOT_REGRESSION_NOTE for t in ordered
             if get_task(t).problem_type == "regression"
             and not any(r["task"] == t and r["family"] == "zero_shot" for r in combined)}
    if table1 is None:
        notes.update({(f, t): "give --table1 (multimed benchmark's table1.csv)" for f in TABLE1_ROWS for t in ordered
                      if not any(r["task"] == t and r["family"] == f for r in combined)})
    note = ("Zero-shot = label-text transfer to classes held out of alignment training; k-shot = a PEFT adapter on "
            "k examples per class of the training split\n"
            "Expression (Expre pred.) is Pearson r, reported as r; the paper prints r x 100 as a percentage (its "
            "number beside ours says so); table2.csv holds r, paper_value the printed percentage\n"
            "The paper's zero-shot expression number (a Pearson task printed as a percentage) cannot be label-text "
            "zero-shot: a regression target has no class texts (multimed_hf.fewshot.zeroshot says what it can mean)\n"
            "Zero-shot trains nothing: one evaluation (no sd); k-shot: mean ± sd over the seeds' support sets")
    return write_table(combined, output_dir, name="table2", title="Table 2", note=note, paper=TABLE2,
                       columns=TABLE2_COLUMNS, row_labels=TABLE2_ROW_LABELS, families=families, tasks=ordered,
                       split="test", notes=notes, natural_scale=NATURAL_SCALE_METRICS | CORRELATION_METRICS)


def parse_fewshot_args(argv: Sequence[str] | None = None, *, prog: str = "multimed fewshot"):
    """``(FewShotArguments, TrainingArguments)``; the checkpoint may come first, positionally. ``prog``: the usage
    line's command."""
    from transformers import HfArgumentParser, TrainingArguments

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = ["--checkpoint", argv[0], *argv[1:]]
    parser = HfArgumentParser((FewShotArguments, TrainingArguments), prog=prog)
    parser.set_defaults(remove_unused_columns=False, report_to="none", save_strategy="no", learning_rate=1e-3,
                        num_train_epochs=20, per_device_train_batch_size=16, per_device_eval_batch_size=64,
                        logging_steps=10)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    return parser.parse_args_into_dataclasses(argv)


def fewshot_main(argv: Sequence[str] | None = None) -> int:
    """``multimed fewshot CHECKPOINT --data DIR --task T --shots 0 5 10 20 --seeds 0 1 2 [--table1 PATH]
    [TrainingArguments]``: every k x seed run, then ``table2.csv`` (appended across tasks), ``table2.md`` and
    ``table2.png`` in ``--output_dir``."""
    try:
        args, training_args = parse_fewshot_args(argv)
        records = run_fewshot(args, training_args)
        if training_args.process_index == 0:
            paths = write_table2(records, training_args.output_dir, table1=args.table1)
            print(f"wrote {paths.csv}, {paths.markdown}, {paths.figure}")
    except ValueError as err:
        print(f"multimed fewshot: error: {err}", file=sys.stderr)
        return 2
    return 0
