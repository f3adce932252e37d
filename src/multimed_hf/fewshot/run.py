"""``multimed fewshot``: k-shot adapters and zero-shot evaluation of a trained checkpoint on one task, per seed, and
the paper's Table 2 (table2.csv appended across tasks, table2.md beside the paper's numbers, table2.png)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from multimed_hf.fewshot.adapters import (
    AdapterSettings,
    attach_adapter,
    encoded_modalities,
    head_spec_for,
    prepare_head,
    save_adapter,
)
from multimed_hf.fewshot.support import GROUP_COLUMNS, check_disjoint, class_keys, example_counts, sample_support
from multimed_hf.fewshot.zeroshot import (
    ZeroShotError,
    check_zero_shot_checkpoint,
    class_text,
    hold_out,
    label_text_modalities,
    read_alignment,
    zero_shot_chance,
    zero_shot_classes,
    zero_shot_majority,
    zero_shot_predict,
)
from multimed_hf.tasks import get_task
from multimed_hf.training.arguments import (
    TRAINING_ONLY_FLAGS,
    check_class_texts,
    check_counts,
    check_eval_splits,
    flags_named,
    has_accelerator,
    json_argument,
    refuse_lone_processes,
    refuse_remove_unused_columns,
    refuse_script_switches,
    set_by_user,
)
from multimed_hf.training.outputs import PREDICTIONS_FOLDER, metric_records, write_json, write_predictions

logger = logging.getLogger(__name__)

__all__ = [
    "FewShotArguments",
    "FewShotError",
    "family_name",
    "run_fewshot",
    "write_table2",
    "parse_fewshot_args",
    "check_training_flags",
    "fewshot_main",
    "ADAPTER_FLAGS",
    "TRAINING_ONLY_FLAGS",
    "ZERO_SHOT_REGRESSION_NOTE",
    "TABLE1_ROWS",
]

#: What table2.csv keeps beside report.COLUMNS, so that a later run appending to it keeps each cell's notes: k, the
#: zero-shot chance, the classes a support set could not fill, and ``SCOPE_KEY``.
TABLE2_EXTRA_COLUMNS = ("k", "chance", "majority", "support_short", "scope")
#: The key (and table2.csv column) of a k-shot record that drew its support set from, or scored, part of the rows:
#: JSON of ``rows`` scored ``of`` the evaluation split's rows of the task, and where the base encodes only some of
#: the task's modalities, ``modalities`` (those read: the rows holding one of them) and ``unread`` (the classes under
#: k that the training split holds more of in rows the base cannot read: class -> its examples in the whole training
#: split). None where every row was read and scored.
SCOPE_KEY = "scope"
#: Table 2's first two rows, read from a ``multimed benchmark`` table1.csv.
TABLE1_ROWS = ("multimodal", "multimodal_multitask")
#: A run is made in ``<PARTIAL_PREFIX>seed<s>`` beside its folder ``seed<s>``, and moved there once done
#: (``_replace_run``).
PARTIAL_PREFIX = ".partial-"
#: The key of a record that stands for a run not made (its value: why), read by ``write_table2`` into a cell note.
NOT_SCORED = "not_scored"
#: Beside table2.csv: task -> why its zero-shot cell has no number (``NOT_SCORED`` records), for later appends.
NOT_SCORED_FILE = "table2_not_scored.json"
#: Beside table2.csv: task -> the base checkpoint its rows were adapted from (``_claim_table2_task``).
BASES_FILE = "table2_bases.json"
#: How each k-shot adapter of table2.csv was trained (``_settings_line``), as task -> k-shot row -> seed -> line,
#: written with the rows (``write_table2``) for table2.md's settings section and the runs appending to the table.
SETTINGS_FILE = "table2_settings.json"
#: The key of a k-shot record holding how its adapter was trained (``_settings_line``), read by ``write_table2``.
SETTINGS_KEY = "settings"
#: Said after a line of an earlier version's ``SETTINGS_FILE`` (one per task and k, the last run's, even a run stopped
#: before its rows): read as each seed's of the cell, it matches no run's line, so no seed is added to that cell.
EARLIER_SETTINGS = "(an earlier version's record, one line per task and k: the last run's, maybe not every seed's)"
#: What Table 2's zero-shot cell of a regression task says (see ``multimed_hf.fewshot.zeroshot``).
ZERO_SHOT_REGRESSION_NOTE = "no zero-shot for a regression target (no class texts); see fewshot.zeroshot"


#: ``FewShotArguments`` fields that only the k > 0 runs read (the adapter and its support sets): a zero-shot-only
#: run (``--shots 0``) trains no adapter and draws no support set.
ADAPTER_FLAGS = ("method", "rank", "alpha", "adapter_dropout", "targets", "base_id", "group_column")
#: ``TrainingArguments`` flags that evaluate during training: a k-shot run trains on its support set alone and
#: scores ``--eval_split`` once, after training (an ``eval_strategy`` other than "no" crashed each run in Trainer:
#: "you didn't pass an eval_dataset").
_EVAL_DURING_TRAINING = ("eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "load_best_model_at_end",
                         "metric_for_best_model", "greater_is_better")


class FewShotError(ValueError):
    """A few-shot run that cannot start: missing splits, shots < 0, a --table1 file that is not a table1.csv, a flag
    that would change nothing (``check_training_flags``, ``FewShotArguments``)."""


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
                                                                    "text for zero-shot (or, as multimed train "
                                                                    "takes it, task -> class -> text)"})
    group_column: str | None = field(default=None, metadata={"help": "grouping column of the support sets "
                                                                     "(default: group_id)"})
    eval_split: str = field(default="test", metadata={"help": "the split scored"})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "keep N evaluation rows, drawn at random once (the same rows in every run)"})
    bootstrap_samples: int = field(default=1000, metadata={"help": "bootstrap resamples of the metrics' CIs"})

    def __post_init__(self):
        if any(k < 0 for k in self.shots):
            raise FewShotError(f"--shots {self.shots}: every k must be >= 0 (0 = zero-shot)")
        get_task(self.task)
        # a repeated k or seed ran again into the same folder and counted twice in table2's mean +- sd
        self.shots, self.seeds = list(dict.fromkeys(self.shots)), list(dict.fromkeys(self.seeds))
        check_counts(self, max_eval_samples=1, bootstrap_samples=0)
        check_eval_splits("eval_split", [self.eval_split])
        if self.eval_split == "train":
            raise FewShotError("--eval_split train: the support sets are drawn from the training split, so every "
                               "support row would be scored too (each run failed its leak check); score on "
                               "--eval_split test or validation")
        _settings(self)  # an unknown --method or a --rank below 1 failed each k-shot run apart, after loading
        self._check_method_flags()
        if self.class_texts is not None and not isinstance(self.class_texts, dict):
            self.class_texts = _task_class_texts(self.task, json_argument("class_texts", self.class_texts))
        self._check_zero_shot_flags()
        if self.table1 is not None:  # read after every run before; a wrong path lost the table at the end
            _read_table1(self.table1)

    def _check_method_flags(self) -> None:
        """``--alpha`` and ``--adapter_dropout`` are LoRA's (``peft_config`` passes them to LoraConfig alone);
        IA3 has no rank."""
        if self.method != "lora":
            for name in ("alpha", "adapter_dropout"):
                if set_by_user(self, name):
                    raise FewShotError(f"--{name} {getattr(self, name)}: it sets LoRA's "
                                       f"{'scaling (lora_alpha)' if name == 'alpha' else 'dropout (lora_dropout)'}, "
                                       f"and --method is {self.method!r}, which takes PEFT's default; use --method "
                                       f"lora or leave it out")
        if self.method == "ia3" and set_by_user(self, "rank"):
            raise FewShotError(f"--rank {self.rank}: --method ia3 learns scaling vectors and has no rank; leave it "
                               f"out or use --method lora|loha|lokr")

    def _check_zero_shot_flags(self) -> None:
        """Flags that only one kind of run reads: ``--class_texts`` the zero-shot one (k = 0), the adapter flags
        and more than one seed the k-shot ones (zero-shot trains nothing and is evaluated once, with the first
        seed)."""
        if self.class_texts and 0 not in self.shots:
            raise FewShotError(f"--class_texts: class texts are read by the zero-shot run (k = 0) alone, and --shots "
                               f"{self.shots} has none; add 0 to --shots or leave it out")
        if any(k > 0 for k in self.shots):
            return
        if get_task(self.task).problem_type == "regression":  # before: ran nothing, wrote an empty table, exit 0
            raise FewShotError(f"--shots {self.shots} (zero-shot alone) on {self.task!r}, a regression task: "
                               f"{ZERO_SHOT_REGRESSION_NOTE}; add a k > 0 to --shots (k-shot adapters)")
        given = [name for name in ADAPTER_FLAGS if set_by_user(self, name)]
        if given:
            raise FewShotError(f"--{given[0]} {getattr(self, given[0])}: it sets the k-shot adapters (or their "
                               f"support sets), and --shots {self.shots} asks for zero-shot alone, which trains "
                               f"none; add a k > 0 to --shots or leave it out")
        if len(self.seeds) > 1 and set_by_user(self, "seeds"):
            raise FewShotError(f"--seeds {self.seeds}: zero-shot trains nothing and is evaluated once, with the "
                               f"first seed ({self.seeds[0]}); give one seed, or add a k > 0 to --shots")


def _task_class_texts(task: str, texts: Mapping[str, Any]) -> dict[str, str]:
    """``--class_texts`` as ``{class: text}`` of ``task``: given so, or as ``multimed train --class_texts`` takes it
    (``{task: {class: text}}``, naming ``task`` alone); classes checked against the registry (a misspelt class, or
    the nested form read as classes, kept every class's name as its text)."""
    nested = bool(texts) and all(isinstance(v, Mapping) for v in texts.values())
    if nested:
        others = sorted(set(texts) - {task})
        if others:
            raise FewShotError(f"--class_texts names tasks {others}; this run adapts {task!r} alone: give "
                               f"{{class: text}} of {task!r} (or {{{task!r}: {{class: text}}}})")
    check_class_texts(texts if nested else {task: texts})
    flat = dict(texts[task]) if nested else dict(texts)
    wrong = sorted(k for k, v in flat.items() if not isinstance(v, str))
    if wrong:
        raise FewShotError(f"--class_texts[{task!r}]: the texts of {wrong} are not strings")
    return flat


def _settings(args: FewShotArguments) -> AdapterSettings:
    return AdapterSettings(method=args.method, rank=args.rank, alpha=args.alpha, dropout=args.adapter_dropout,
                           targets=args.targets)


def _texts(args: FewShotArguments, alignment: Mapping | None) -> dict | None:
    if args.class_texts:
        return dict(args.class_texts)  # {class: text}, checked by FewShotArguments
    return ((alignment or {}).get("class_texts") or {}).get(args.task)


def _readable_rows(dataset, task: str, modalities: Sequence[str], limit: int | None = None):
    """The rows holding one of ``modalities`` (those the adapted head reads); ``limit`` of them, drawn at random once
    as ``multimed train --max_eval_samples`` draws them (a split ordered by source file starts with one class)."""
    from multimed_hf.training.loading import rows_with_modality, sample_rows

    if len(modalities) < len(get_task(task).modalities):
        dataset = rows_with_modality(dataset, task, list(modalities)).flatten_indices()
    if limit is not None and len(dataset) > limit:
        dataset = sample_rows({task: dataset}, limit)[task].flatten_indices()
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
    # the support is drawn from the rows the adapted head can read: those of a modality the base encodes
    read = encoded_modalities(model.config, args.task)
    whole, train = train, _readable_rows(train, args.task, read)
    support = sample_support(train, args.task, k, seed, group_column=args.group_column)
    if support.short:  # said here, in support.json, the adapter card and Table 2's note
        logger.warning("%s %d-shot, seed %d: under k in the training split's readable rows: %s; the support set "
                       "holds what there is (%d rows)", args.task, k, seed, support.short, len(support))
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
    evaluation = _readable_rows(test, args.task, modalities, args.max_eval_samples)
    scope = _scope(args.task, k, read, support, whole, len(evaluation), len(test))
    if scope and "modalities" in scope:
        logger.warning("%s %d-shot, seed %d: the base encodes %s of the task's modalities %s: the support set was "
                       "drawn from, and the adapter scores, the rows holding them alone (%d of the %d %s rows)",
                       args.task, k, seed, read, list(get_task(args.task).modalities), len(evaluation), len(test),
                       args.eval_split)
    predictions = trainer.predict_task(args.task, evaluation, split=args.eval_split)
    records = metric_records(predictions, args.eval_split, bootstrap_samples=args.bootstrap_samples, seed=seed)
    if trainer.is_world_process_zero():
        write_predictions(predictions, evaluation, out / PREDICTIONS_FOLDER / f"{args.task}-{args.eval_split}.parquet")
        # drawn from the rows of the modalities the base encodes, where it encodes only some of the task's
        drawn = {**support.to_dict(), **({"read_modalities": scope["modalities"]} if scope and "modalities" in scope
                                         else {})}
        write_json(out / "support.json", drawn)
        metrics = {f"{r['label']}/{r['metric']}" if r["label"] else r["metric"]: r["value"] for r in records}
        save_adapter(peft_model, out / "adapter", task=args.task, k=k, seed=seed, head_spec=carried,
                     base_id=args.base_id, settings=settings, support=drawn, metrics=metrics,
                     training=_training_record(targs), eval_split=args.eval_split)
        if carried is not None or args.task in processor.vocabularies:
            processor.save_pretrained(out / "adapter" / "processor")
    short = json.dumps(support.short) if support.short else None
    return [{**r, "k": k, "support_rows": len(support), "support_short": short,
             SCOPE_KEY: json.dumps(scope) if scope else None} for r in records]


def _scope(task: str, k: int, read: Sequence[str], support, whole, scored: int, rows: int) -> dict | None:
    """A k-shot run's ``SCOPE_KEY`` (None where it read and scored every row): ``scored`` of the evaluation split's
    ``rows``; where the base encodes only ``read`` of the task's modalities, those, and the classes under k that
    the whole training split (``whole``) holds more of than the rows read (their count there)."""
    partial = len(read) < len(get_task(task).modalities)
    if not partial and scored >= rows:
        return None
    scope: dict[str, Any] = {"rows": int(scored), "of": int(rows)}
    if partial:
        scope["modalities"] = list(read)
        reached = support.counts
        unread = {c: n for c, n in example_counts(whole, task).items() if reached.get(c, 0) < k
                  and n > reached.get(c, 0)}
        if unread:
            scope["unread"] = unread
    return scope


def _training_record(training_args) -> dict:
    """How an adapter was trained: processes, per-device batch, accumulation, steps (or epochs), learning rate."""
    return {"world_size": training_args.world_size, "per_device_train_batch_size":
            training_args.per_device_train_batch_size, "gradient_accumulation_steps":
            training_args.gradient_accumulation_steps, "max_steps": training_args.max_steps,
            "num_train_epochs": training_args.num_train_epochs, "learning_rate": training_args.learning_rate}


def _settings_line(args: FewShotArguments, training_args) -> str:
    """Table 2's line on how a task's k-shot adapters were trained (table1.md says it of Table 1's runs): method,
    rank, batch, length, learning rate, then what was set of LoRA's alpha and dropout, the targets, the support
    sets' grouping and the evaluation rows (the seeds of one cell pool only adapters of one line)."""
    from multimed_hf.training.benchmark import batch_description

    length = (f"max_steps {training_args.max_steps}" if training_args.max_steps > 0 else
              f"{training_args.num_train_epochs:g} epochs")
    extra = ([f"alpha {args.alpha:g}"] if args.alpha is not None else []) + (
        [f"dropout {args.adapter_dropout:g}"] if args.adapter_dropout else []) + (
        [f"targets {' '.join(args.targets)}"] if args.targets else []) + (
        [f"support grouped by {args.group_column}"] if args.group_column else []) + (
        [f"scored on {args.max_eval_samples} {args.eval_split} rows drawn at random"] if args.max_eval_samples else [])
    return ", ".join([f"{args.method} rank {args.rank}", batch_description(training_args), length,
                      f"learning rate {training_args.learning_rate:g}", *extra])


def _zero_shot(args, training_args, train, test, seed: int, out: Path) -> list[dict]:
    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor

    model = MultiMedModel.from_pretrained(args.checkpoint).eval()
    processor = MultiMedProcessor.from_pretrained(args.checkpoint)
    alignment = read_alignment(args.checkpoint)
    free_text = [label.name for label in get_task(args.task).labels if label.kind == "text"]
    if any(column not in processor.vocabularies for column in free_text):  # a free-text task the base never trained:
        processor.fit_vocabularies(train, args.task)  # its classes from the training split, as a k-shot run's
    classes = zero_shot_classes(model, args.task, alignment, train, texts=_texts(args, alignment) or {})
    targs = dataclasses.replace(training_args, output_dir=str(out), seed=seed)
    # the rows the label-text head reads (not text, which encodes the class texts), of the classes scored, then
    # --max_eval_samples of them (cut after, the held-out classes' rows could be few or none)
    readable = _readable_rows(test, args.task, label_text_modalities(model, args.task))
    others = [n for ns in class_keys(args.task, readable).values() for n in ns if n not in set(classes)]
    evaluation = _readable_rows(hold_out(readable, args.task, others)[0], args.task, get_task(args.task).modalities,
                                args.max_eval_samples)
    predictions, rows = zero_shot_predict(model, processor, args.task, evaluation, classes=classes,
                                          training_args=targs, texts=_texts(args, alignment),
                                          split=args.eval_split)
    records = metric_records(predictions, args.eval_split, bootstrap_samples=args.bootstrap_samples, seed=seed)
    chance, majority = zero_shot_chance(predictions, classes), zero_shot_majority(predictions, classes)
    texts = _texts(args, alignment) or {}
    if training_args.process_index == 0:  # the main process moves the run folder into place (run_fewshot)
        write_predictions(predictions, rows, out / PREDICTIONS_FOLDER / f"{args.task}-{args.eval_split}.parquet")
        # the texts scored, so a description given for a class is seen to be used (a class without one: its name)
        write_json(out / "zero_shot.json", {"classes": classes, "class_texts": {c: texts.get(c, class_text(c))
                                                                                 for c in classes},
                                            "chance": chance, "majority": majority, "rows": len(rows),
                                            "split": args.eval_split, "alignment": alignment})
    from multimed_hf.training.report import headline

    label, metric = headline(args.task)  # chance and majority are references of the headline accuracy alone
    return [{**r, "k": 0, **({"chance": chance, "majority": majority} if r["metric"] == metric
                             and r.get("label") in (None, label) else {})} for r in records]


def _claim_table2_task(output_dir: Path, task: str, checkpoint: str, write: bool,
                       previous: Sequence[Mapping]) -> None:
    """Record which base a task's Table 2 rows in ``output_dir`` come from (``BASES_FILE``; table2.md names each
    column's base); a run of the task from another base is refused where ``table2.csv`` (its records:
    ``previous``) holds rows of the task (its rows would sit beside the earlier base's in one column). A claim no
    row was written for (a first run stopped before its table) gives way."""
    path = output_dir / BASES_FILE
    bases = json.loads(path.read_text()) if path.is_file() else {}
    base = str(Path(checkpoint).resolve()) if Path(checkpoint).exists() else str(checkpoint)
    if bases.get(task, base) != base and any(r.get("task") == task for r in previous):
        raise FewShotError(f"--output_dir {str(output_dir)!r} holds Table 2 rows of {task!r} adapted from "
                           f"{bases[task]!r}; this run adapts {base!r}: give another --output_dir (one base per "
                           f"task's column)")
    if write and bases.get(task) != base:
        output_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**bases, task: base}, indent=2, sort_keys=True) + "\n")


def _seed_key(seed) -> str | None:
    """A record's seed as ``SETTINGS_FILE`` keys it (JSON keys are strings), or None where it has none."""
    return None if seed is None or seed != seed else str(int(seed))


def _cell_seeds(records: Sequence[Mapping]) -> dict[tuple[str, str], set[str]]:
    """(task, k-shot row) -> the seeds of ``records`` in that cell (zero-shot, trained by nothing, left out)."""
    cells: dict[tuple[str, str], set[str]] = {}
    for r in records:
        family, seed = str(r.get("family")), _seed_key(r.get("seed"))
        if family.endswith("_shot") and family != family_name(0) and seed is not None:
            cells.setdefault((r["task"], family), set()).add(seed)
    return cells


def _read_settings(output_dir: Path, previous: Sequence[Mapping]) -> dict[str, dict[str, dict[str, str]]]:
    """``output_dir``'s ``SETTINGS_FILE`` as task -> k-shot row -> seed -> line. A file of an earlier version (one
    line per task and k, the last run's) is read as every seed's of the cell in ``previous`` (table2.csv's rows),
    followed by ``EARLIER_SETTINGS``; one that is not JSON is left out, warned."""
    path = output_dir / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        kept = json.loads(path.read_text())
    except ValueError as err:
        logger.warning("%s is not JSON (%s): the k-shot adapters' settings of the earlier rows are left out of "
                       "table2.md", path, err)
        return {}
    cells, settings, old = _cell_seeds(previous), {}, []
    for task, rows in (kept.items() if isinstance(kept, dict) else ()):
        for family, by_seed in (rows.items() if isinstance(rows, dict) else ()):
            if isinstance(by_seed, str):  # one line per task and k (before: the last run's, the other seeds' too)
                old.append(f"{task} {family}")
                by_seed = {seed: f"{by_seed} {EARLIER_SETTINGS}" for seed in cells.get((task, family), ())}
            if isinstance(by_seed, dict):
                settings.setdefault(task, {})[family] = {str(k): str(v) for k, v in by_seed.items()}
    if old:
        logger.warning("%s records one settings line per task and k (an earlier version's, the last run's, which may "
                       "not be every seed's): table2.md says so of %s, and a run adding seeds to them is refused "
                       "(rerun every seed of the cell to record each one's)", path, ", ".join(old))
    return settings


def _check_settings(output_dir: Path, args: FewShotArguments, training_args, previous: Sequence[Mapping]) -> None:
    """Refuse a run that would add its seeds to a k-shot cell of ``output_dir``'s table2.csv (its records:
    ``previous``) whose other seeds' adapters were trained under other settings (``_settings_line``; an earlier
    version's line, ``EARLIER_SETTINGS``, matches none): a cell's mean ± sd is over one recipe. Seeds this run trains
    again are replaced, so they do not count."""
    if not any(k > 0 for k in args.shots) or not previous:
        return
    previous = [r for r in previous if r.get("task") == args.task]
    cells, settings = _cell_seeds(previous), _read_settings(output_dir, previous)
    line, ours = _settings_line(args, training_args), {str(s) for s in args.seeds}
    for k in (k for k in args.shots if k > 0):
        recorded = settings.get(args.task, {}).get(family_name(k), {})
        other: dict[str, list[str]] = {}
        for seed in sorted(cells.get((args.task, family_name(k)), set()) - ours, key=int):
            if seed in recorded and recorded[seed] != line:
                other.setdefault(recorded[seed], []).append(seed)
        if other:
            earlier = "; ".join(f"seed(s) {', '.join(seeds)}: {setting}" for setting, seeds in other.items())
            every = sorted({int(s) for seeds in other.values() for s in seeds} | set(args.seeds))
            raise FewShotError(f"--output_dir {str(output_dir)!r} holds {args.task!r} {k}-shot rows whose adapters "
                               f"were trained under other settings ({earlier}); this run trains seed(s) "
                               f"{', '.join(map(str, args.seeds))} with: {line}. A cell's mean ± sd is over one "
                               f"recipe: give another --output_dir, or train every seed of the cell with these "
                               f"settings (--seeds {' '.join(map(str, every))})")


def _table2_settings(output_dir: Path, previous: Sequence[Mapping], new: Sequence[Mapping],
                     combined: Sequence[Mapping]) -> dict[str, dict[str, dict[str, str]]]:
    """``SETTINGS_FILE``'s content once ``new`` records are written: the earlier file's lines (``previous``: the
    rows of table2.csv before) less the seeds ``new`` writes again, plus the lines ``new`` carries (``SETTINGS_KEY``),
    kept only for the k-shot seeds of ``combined`` (the rows the table holds)."""
    settings = _read_settings(output_dir, previous) if previous else {}
    for r in new:  # a seed written again: its earlier line goes with its rows
        seed = _seed_key(r.get("seed"))
        settings.get(r["task"], {}).get(r["family"], {}).pop(seed, None)
    for r in new:
        seed = _seed_key(r.get("seed"))
        if r.get(SETTINGS_KEY) and seed is not None:
            settings.setdefault(r["task"], {}).setdefault(r["family"], {})[seed] = str(r[SETTINGS_KEY])
    cells = _cell_seeds(combined)
    kept = {task: {family: {seed: line for seed, line in by_seed.items() if seed in cells.get((task, family), ())}
                   for family, by_seed in rows.items()} for task, rows in settings.items()}
    return {task: {family: by_seed for family, by_seed in rows.items() if by_seed}
            for task, rows in kept.items() if any(rows.values())}


def _settings_note(settings: Mapping[str, Mapping[str, Mapping[str, str]]], records: Sequence[Mapping],
                   tasks: Sequence[str]) -> str:
    """Note lines on how each task's k-shot adapters were trained (``SETTINGS_FILE``): one line per setting where
    every seed of its cells agrees (its ks named), else a line per cell naming each setting with its seeds, said to
    pool more than one recipe where they differ, and the seeds whose setting was not recorded."""
    cells, lines = _cell_seeds(records), []
    for task in tasks:
        by_line: dict[str, list[str]] = {}
        cell_lines = []
        for family in sorted(settings.get(task, {}), key=lambda f: int(f.split("_")[0])):
            recorded, k = settings[task][family], family.split("_")[0]
            seeds = sorted(cells.get((task, family), set()) | set(recorded), key=int)
            grouped: dict[str, list[str]] = {}
            for seed in seeds:
                grouped.setdefault(recorded.get(seed, ""), []).append(seed)
            unrecorded = grouped.pop("", [])
            if len(grouped) == 1 and not unrecorded:
                by_line.setdefault(next(iter(grouped)), []).append(k)
                continue
            said = "; ".join(f"seed{'s' if len(s) > 1 else ''} {', '.join(s)}: {line}" for line, s in grouped.items())
            if unrecorded:
                said += (f"; seed{'s' if len(unrecorded) > 1 else ''} {', '.join(unrecorded)}: settings not recorded "
                         f"(rows written without them)")
            cell_lines.append(f"\n{task} {k}-shot adapters" + (
                " were trained under different settings: the cell's mean ± sd pools more than one recipe"
                if len(grouped) > 1 else "") + f": {said}")
        lines += [f"\n{task} {', '.join(ks)}-shot adapters: {line}" for line, ks in by_line.items()] + cell_lines
    return "".join(lines)


def _bases_note(output_dir: Path, tasks: Sequence[str]) -> str:
    """A note line naming the base each task's rows were adapted from (``BASES_FILE``)."""
    path = output_dir / BASES_FILE
    bases = json.loads(path.read_text()) if path.is_file() else {}
    named = [f"{task}: `{bases[task]}`" for task in tasks if task in bases]
    return "\nAdapted from (each column's base): " + "; ".join(named) if named else ""


def _load_config(checkpoint: str):
    """``checkpoint``'s ``MultiMedConfig``, or a ``FewShotError`` naming it."""
    from multimed_hf.configuration_multimed import MultiMedConfig

    folder = Path(checkpoint)
    if folder.is_dir() and not (folder / "config.json").is_file():  # transformers reads it as an empty config
        runs = sorted(p.parent.name for p in folder.glob("*/config.json"))
        raise FewShotError(f"CHECKPOINT {checkpoint!r}: not a saved MultiMed run folder (no config.json)"
                           + (f"; it holds the runs {runs}: give one of them" if runs else ""))
    try:
        return MultiMedConfig.from_pretrained(checkpoint)
    except OSError as err:  # each run failed on it alike before
        raise FewShotError(f"CHECKPOINT {checkpoint!r}: not a saved MultiMed run folder or Hub model id ({err})"
                           ) from None


def _why_no_zero_shot(args: FewShotArguments, config) -> str | None:
    """Why no zero-shot run of ``args.task`` can be scored on the checkpoint (not trained with the label-text
    alignment option, every class of the task trained, none of its modalities or no text encoded), or None. A
    regression task is left to its table note (``ZERO_SHOT_REGRESSION_NOTE``)."""
    if get_task(args.task).problem_type == "regression":
        return None
    plain = ("the base was not trained with the label-text alignment option (no alignment.json): its embeddings "
             "were never matched to class texts")
    try:
        alignment = read_alignment(args.checkpoint)
    except ZeroShotError as err:  # offline and not cached: the k-shot runs need no alignment.json
        return str(err)
    if alignment is None:
        return plain
    try:
        check_zero_shot_checkpoint(config, args.task, alignment)
    except ZeroShotError as err:
        return str(err)
    return None


def _check_zero_shot(args: FewShotArguments, config) -> str | None:
    """``--shots 0`` on a checkpoint (of ``config``) no zero-shot run can score: refused where it is all that was
    asked, else the reason (the k-shot runs go on, the zero-shot cell says why it has no number), before any run
    trains."""
    why = _why_no_zero_shot(args, config)
    if why is not None and not any(k > 0 for k in args.shots):
        raise FewShotError(f"--shots 0 (zero-shot) on {args.checkpoint!r}: {why}. Give a base trained with label-text "
                           f"alignment and held-out classes (multimed train --align_label_text --holdout_classes "
                           f"TASK:CLASS,...; see the README's zero-shot section)")
    if why is not None:
        logger.warning("multimed fewshot: no zero-shot run on %r: %s; the k-shot runs go on", args.checkpoint, why)
    return why


def _check_free_text_class_texts(task: str, texts: Mapping[str, str], train) -> None:
    """``--class_texts`` of a task with free-text labels (cell_type): the classes named must be values its training
    split holds, as ``--holdout_classes`` are (``zeroshot.hold_out``); the registry has no class list to check them
    against (``FewShotArguments``), so a misspelt class was silently scored by its name."""
    import difflib

    if not any(label.kind == "text" for label in get_task(task).labels):
        return  # the registry's classes, checked by FewShotArguments
    classes = sorted({n for names in class_keys(task, train).values() for n in names})
    unknown = [name for name in texts if name not in set(classes)]
    if unknown:
        close = {name: difflib.get_close_matches(str(name), classes, n=3, cutoff=0.5) for name in unknown}
        hints = "; ".join(f"{name!r}: did you mean {', '.join(map(repr, found))}?" for name, found in close.items()
                          if found)
        raise FewShotError(f"--class_texts[{task!r}]: {unknown} are not classes of {task!r} (a free-text label: the "
                           f"values its training split holds, {len(classes)} of them: {_listed(classes, 12)})"
                           + (f"; {hints}" if hints else "") + "; name the classes as the data spells them")


def _check_before_runs(args: FewShotArguments, train) -> str | None:
    """What would fail every run alike, refused once before the first: a ``--group_column`` the training split lacks,
    a ``--task`` none of whose modalities the checkpoint encodes, ``--targets`` naming no linear layer of it (each
    was raised inside every run before, recorded as that run's failure, and the command exited 0). Returns why no
    zero-shot run can be scored where ``--shots`` asks for one beside k-shot runs (``_check_zero_shot``)."""
    from multimed_hf.fewshot.adapters import AdapterError, default_targets

    config = _load_config(args.checkpoint)  # an unreachable checkpoint: named first
    if args.class_texts:
        _check_free_text_class_texts(args.task, args.class_texts, train)
    no_zero_shot = _check_zero_shot(args, config) if 0 in args.shots else None
    if not any(k > 0 for k in args.shots):
        return no_zero_shot
    if args.group_column is not None and args.group_column not in train.column_names:
        raise FewShotError(f"--group_column {args.group_column!r} is not a column of the training split of "
                           f"{args.task!r} (columns: {train.column_names}); leave it out to group by "
                           f"{next(c for c in GROUP_COLUMNS if c in train.column_names or c == 'sample_id')!r}")
    read = encoded_modalities(config, args.task)
    if not read:
        raise FewShotError(f"--task {args.task!r} reads {list(get_task(args.task).modalities)}; the checkpoint "
                           f"{args.checkpoint!r} encodes {sorted(config.encoders)}: few-shot adapters cannot add an "
                           f"encoder (adapt a checkpoint trained on one of the task's modalities)")
    if "scrna" in read and "gene_panel" in train.column_names:  # else every run failed alike on its first row
        from multimed_hf.processing_multimed import MultiMedProcessor

        known = set(getattr(MultiMedProcessor.from_pretrained(args.checkpoint).processors.get("scrna"), "panels", {}))
        unknown = sorted({str(p) for p in train["gene_panel"] if p is not None} - known)
        if unknown:
            raise FewShotError(f"--task {args.task!r}: its rows use gene panel(s) {unknown[:3]} that the checkpoint's "
                               f"expression processor does not know (it knows {sorted(known)[:3]}): an adapter reads "
                               f"cells through the base's gene panels; adapt a base trained on these cells' panel")
    if args.targets:
        from multimed_hf.modeling_multimed import MultiMedModel

        try:
            # the encoders the run's head reads: the base's head of the task, else (a task the base never trained,
            # or a label-text head, which the run replaces by a class head) the task's encoded modalities
            trained = args.task in config.heads and not any(
                o["kind"] == "label_text" for o in config.heads[args.task]["outputs"])
            default_targets(MultiMedModel.from_pretrained(args.checkpoint), args.targets,
                            task=args.task if trained else None, modalities=None if trained else read)
        except AdapterError as err:
            raise FewShotError(f"--targets {args.targets}: {err}") from None
    return no_zero_shot


def run_fewshot(args: FewShotArguments, training_args, *, datasets: Mapping[str, Any] | None = None) -> list[dict]:
    """Every k of ``args.shots`` x seed on ``args.task``: a support set, an adapter trained through
    ``MultiMedTrainer`` and scored on the evaluation split (k = 0: zero-shot by label text, once, as it trains
    nothing); each run's adapter, support set and predictions under ``<output_dir>/runs/<task>/<family>/seed<s>/``.
    A run that fails records its error and the loop goes on. Each run is made in a folder beside its own and moved
    into place once done, the rows of the run it replaces first dropped from the output folder's table2.* (a run
    stopped midway leaves the earlier run's folder and rows as they were: the tables never describe an adapter that
    is no longer on disk; ``_replace_run``). Seeds added to a k-shot cell of the output folder's
    table2.csv trained under other settings are refused before any run (``_check_settings``); each k-shot record
    carries its settings line (``SETTINGS_KEY``), which ``write_table2`` records with the rows. ``datasets``:
    ``{split: Dataset}`` of the task instead of loading ``args.data``. Returns the metric records (``family``,
    ``seed``, ``run`` added); see ``write_table2``."""
    from multimed_hf.training.report import failure_records

    if datasets is None:
        from multimed_hf.training.loading import load_task_data

        datasets = load_task_data(args.data, [args.task], splits=("train", args.eval_split))[args.task]
    check_training_flags(args, training_args)
    missing = [s for s in ("train", args.eval_split) if s not in datasets]
    if missing:
        raise FewShotError(f"task {args.task!r}: {args.data!r} has no split(s) {missing}")
    train, test = datasets["train"], datasets[args.eval_split]
    no_zero_shot = _check_before_runs(args, train)
    root, main = Path(training_args.output_dir), training_args.process_index == 0
    previous = _table2_records(root)  # read once: its split, base, settings, and the rows the runs replace
    earlier = _earlier_split(previous)
    if earlier is not None and earlier != args.eval_split:  # before: a run's rows replaced another split's
        raise FewShotError(_mixed_splits(root, earlier, args.eval_split))
    _claim_table2_task(root, args.task, args.checkpoint, main, previous)
    _check_settings(root, args, training_args, previous)
    line = _settings_line(args, training_args)  # recorded by write_table2 with the rows, per seed
    records: list[dict] = []
    if no_zero_shot is not None:  # no run: Table 2's zero-shot cell says why (write_table2)
        records.append({"family": family_name(0), "task": args.task, "seed": args.seeds[0], "k": 0,
                        NOT_SCORED: no_zero_shot})
    for k in [k for k in args.shots if not (k == 0 and no_zero_shot is not None)]:
        family = family_name(k)
        for seed in args.seeds[:1] if k == 0 else args.seeds:
            run = f"{args.task}-{family}"  # one name across seeds: the report pools seeds, never runs
            out = root / "runs" / args.task / family / f"seed{seed}"
            partial = out.with_name(f"{PARTIAL_PREFIX}{out.name}")  # moved to ``out`` once the run is done
            if main:
                shutil.rmtree(partial, ignore_errors=True)  # what a run stopped before left
            try:
                got = (_zero_shot(args, training_args, train, test, seed, partial) if k == 0 else
                       _few_shot(args, training_args, train, test, k, seed, partial))
            except ZeroShotError as err:
                if get_task(args.task).problem_type == "regression":
                    if main:
                        shutil.rmtree(partial, ignore_errors=True)
                    continue  # the table says why (ZERO_SHOT_REGRESSION_NOTE)
                got = failure_records(family, [args.task], seed, f"{type(err).__name__}: {err}", run=run,
                                      split=args.eval_split)
            except (ValueError, RuntimeError, OSError) as err:
                got = failure_records(family, [args.task], seed, f"{type(err).__name__}: {err}", run=run,
                                      split=args.eval_split)
            except BaseException:  # stopped (Ctrl-C): the earlier run's folder and table rows stay as they were
                if main:
                    shutil.rmtree(partial, ignore_errors=True)
                raise
            if main:  # this run's rows replace the earlier run's in write_table2: its folder goes with them
                previous = _replace_run(root, out, partial, (args.task, family, None if k == 0 else _seed_key(seed)),
                                        previous, table1=args.table1, split=args.eval_split)
            records += _tag([{**r, SETTINGS_KEY: line} for r in got] if k > 0 else got, family, seed, run)
    return records


def _table2_records(output_dir: Path) -> list[dict]:
    """The records of ``output_dir``'s table2.csv (none where it has none)."""
    from multimed_hf.training.report import read_records

    path = output_dir / "table2.csv"
    return read_records(path) if path.is_file() else []


def _run_of(record: Mapping) -> tuple[str, str, str | None]:
    """The run of Table 2 a record belongs to: (task, row, seed); zero-shot, one evaluation per task, has no seed."""
    seed = None if record["family"] == family_name(0) else _seed_key(record.get("seed"))
    return record["task"], record["family"], seed


def _replace_run(root: Path, out: Path, partial: Path, run: tuple[str, str, str | None],
                 previous: Sequence[Mapping], *, table1: str | Path | None, split: str) -> list[dict]:
    """Move a finished run made in ``partial`` into its folder ``out``, first rewriting ``root``'s table2.* without
    the rows of the earlier ``run`` (task, row, seed) there: before, a stopped command left tables describing
    adapters it had already overwritten. ``previous``: table2.csv's records; returns them after."""
    kept = [dict(r) for r in previous if _run_of(r) != run]
    if len(kept) < len(previous):
        logger.info("%s %s seed %s: replacing its run folder, and its earlier rows in %s/table2.*", *run, root)
        _write_table2([], root, kept, table1=table1, split=split)
    if out.exists():
        shutil.rmtree(out)
    if partial.exists():
        partial.rename(out)
    return kept


def _read_table1(path: str | Path) -> list[dict]:
    """Every record of ``--table1`` (a table1.csv, or the report folder holding one)."""
    from multimed_hf.training.report import read_records

    path = Path(path)
    if path.is_dir():
        path = path / "table1.csv"
    if not path.is_file():
        raise FewShotError(f"--table1 {str(path)!r}: no such file (give the table1.csv of multimed benchmark)")
    rows = read_records(path)
    if rows and "family" not in rows[0]:
        raise FewShotError(f"--table1 {str(path)!r}: not a table1.csv (no 'family' column)")
    return rows


def _table1_rows(rows: Sequence[Mapping], tasks: Sequence[str], split: str = "test") -> list[dict]:
    """Table 2's first two rows among Table 1's records ``rows``, for ``tasks``, on ``split`` (the table's)."""
    return [dict(r) for r in rows if r.get("family") in TABLE1_ROWS and r.get("task") in set(tasks)
            and _split_of(r) == split]


def _split_of(record: Mapping) -> str:
    """The split a record was scored on (a record without one: test, as ``report.write_table`` reads it)."""
    return str(record.get("split") or "test")


def _read_scope(record: Mapping) -> dict | None:
    """A record's ``SCOPE_KEY`` (JSON in table2.csv), or None where it has none (every row read and scored)."""
    value = record.get(SCOPE_KEY)
    if not value or value != value:
        return None
    try:
        scope = json.loads(value) if isinstance(value, str) else dict(value)
    except (ValueError, TypeError):
        return None
    return scope if isinstance(scope, dict) else None


def _listed(names: Sequence[str], most: int = 8) -> str:
    """``names`` comma-joined, the first ``most`` of them and how many more."""
    names = list(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _k_shot_records(records: Sequence[Mapping], split: str) -> list[Mapping]:
    """The k-shot records of ``split`` that hold a score (no failed run, no Table 1 row, no zero-shot one)."""
    return [r for r in records if str(r.get("family")).endswith("_shot") and r.get("family") != family_name(0)
            and _split_of(r) == split and not r.get("error")]


def _short_support(records: Sequence[Mapping], split: str = "test") -> str:
    """Note lines naming the k-shot cells whose support sets could not reach k: their k is less than the row says,
    and seeds may draw the same set. Why: the training split ran out, or, where the base encodes only some of the
    task's modalities (``SCOPE_KEY``), the rows it can read did (the classes the split holds more of in its other
    rows named)."""
    short: dict[tuple[str, str], dict] = {}
    scopes: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        if r.get("support_short") and _split_of(r) == split:
            short.setdefault((r["task"], r["family"]), {})[r.get("seed")] = r["support_short"]
            scope = _read_scope(r)
            if scope and scope.get("modalities"):
                scopes.setdefault((r["task"], r["family"]), []).append(scope)
    lines = []
    for (task, family), by_seed in sorted(short.items()):
        read = scopes.get((task, family))
        why = "the training split ran out"
        if read:
            unread = sorted({c for scope in read for c in scope.get("unread") or {}})
            why = (f"the training rows the base can read, those holding {', '.join(read[0]['modalities'])}, ran out"
                   + (f"; the split holds more of {_listed(unread)} in rows of modalities the base does not encode"
                      if unread else ""))
        lines.append(f"\n{task} {family}: the support set stayed under k ({why}): "
                     + "; ".join(f"seed {seed}: {value}" for seed, value in sorted(by_seed.items(), key=str)))
    return "".join(lines)


def _scope_note(records: Sequence[Mapping], tasks: Sequence[str], split: str = "test") -> str:
    """Note lines naming the k-shot cells that drew their support sets from, or scored, part of the rows
    (``SCOPE_KEY``): the rows of the modalities the base encodes alone (a base that encodes only some of the task's),
    or ``--max_eval_samples`` drawn at random; with how many ``split`` rows were scored of how many."""
    said: dict[tuple[str, str], list[str]] = {}
    for r in _k_shot_records(records, split):
        scope = _read_scope(r)
        if not scope or r["task"] not in tasks:
            continue
        rows = f"{scope.get('rows')} of the {scope.get('of')} {split} rows"
        mods = scope.get("modalities")
        line = (f"the base encodes {', '.join(mods)} alone of the task's modalities "
                f"({', '.join(get_task(r['task']).modalities)}): the support sets were drawn from, and the cell "
                f"scores, the rows holding {', '.join(mods)} only: {rows} scored" if mods else
                f"scored on {rows}, drawn at random (--max_eval_samples)")
        cell = said.setdefault((r["task"], r["family"]), [])
        if line not in cell:
            cell.append(line)
    order = {t: i for i, t in enumerate(tasks)}
    return "".join(f"\n{task} {family}: " + "; ".join(lines) for (task, family), lines in
                   sorted(said.items(), key=lambda item: (order[item[0][0]], int(item[0][1].split("_")[0]))))


def _scored_rows(records: Sequence[Mapping], task: str, split: str) -> list[int]:
    """The numbers of ``split`` rows (``n``) that ``records`` scored ``task``'s headline on (failed runs aside)."""
    from multimed_hf.training.report import headline

    label, metric = headline(task)
    return sorted({int(r["n"]) for r in records if r.get("task") == task and r.get("metric") == metric
                   and r.get("label") in (None, label) and _split_of(r) == split and not r.get("error")
                   and r.get("n") is not None and r["n"] == r["n"]})


def _table1_rows_note(table1: Sequence[Mapping], records: Sequence[Mapping], tasks: Sequence[str],
                      split: str = "test") -> str:
    """Note lines naming the tasks whose numbers from Table 1 (``table1``: the records shown, read from
    ``--table1``) scored another number of ``split`` rows (``n``) than their k-shot ``records``: e.g. a benchmark run
    with ``--max_eval_samples`` (before: printed in one column with nothing said)."""
    lines = []
    for task in tasks:
        theirs, ours = _scored_rows(table1, task, split), _scored_rows(_k_shot_records(records, split), task, split)
        if theirs and ours and theirs != ours:
            lines.append(f"\n{task}: the numbers read from --table1 scored {' or '.join(map(str, theirs))} "
                         f"{split} rows, the k-shot rows {' or '.join(map(str, ours))}: not the same rows (e.g. "
                         f"--max_eval_samples given to one of the two commands alone)")
    return "".join(lines)


def _zero_shot_scope(records: Sequence[Mapping], task: str, split: str = "test") -> str:
    """A note line saying what a task's zero-shot cell scores, unlike its k-shot cells: only the ``split`` rows of the
    held-out classes, as a choice among those classes; the k-shot cells every row over every class, or the part of
    the rows their ``SCOPE_KEY`` names."""
    from multimed_hf.training.report import headline

    label, metric = headline(task)
    hit = [r for r in records if r["task"] == task and r["family"] == "zero_shot" and r.get("metric") == metric
           and (r.get("label") in (None, label)) and _split_of(r) == split and not r.get("error")]
    if not hit:
        return ""
    n, chance, majority = hit[0].get("n"), hit[0].get("chance"), hit[0].get("majority")
    rows = f"{int(n)} {split} rows" if n is not None and n == n else f"the {split} rows"
    odds = f" (chance {100 * float(chance):.0f}%" if chance is not None and chance == chance else ""
    if odds and majority is not None and majority == majority:
        odds += f"; naming the most frequent class for every row: {100 * float(majority):.0f}%"
    odds += ")" if odds else ""
    scopes = {json.dumps(_read_scope(r), sort_keys=True) for r in _k_shot_records(records, split)
              if r["task"] == task}
    k_shot = f"k-shot scores every {split} row over every class"  # before: said also where untrue
    if len(scopes) > 1:
        k_shot = f"k-shot scores every class over every {split} row, or the part a cell's note names"
    elif scopes - {"null"}:
        scope = json.loads(next(iter(scopes)))
        which = (f"those holding {', '.join(scope['modalities'])}, the modalities the base encodes"
                 if scope.get("modalities") else "drawn at random, --max_eval_samples")
        k_shot = f"k-shot scores {scope['rows']} of the {scope['of']} {split} rows ({which}) over every class"
    return (f"\n{task}: zero-shot scores {rows} of the classes it names without training on them (held out, or a "
            f"task never trained) only, as a choice among them{odds}; {k_shot}: the two do not compare")


def _one_modality_notes(rows: Sequence[Mapping], tasks: Sequence[str],
                        split: str = "test") -> dict[tuple[str, str], str]:
    """Table 2's multimodal cell of a one-modality task: the number of Table 1's ``unimodal`` row among its records
    ``rows`` on ``split`` (the same model; Table 2 has no unimodal row for "same as unimodal" to point at), or that
    ``--table1`` lacks it."""
    from multimed_hf.training.report import (
        CORRELATION_METRICS,
        NATURAL_SCALE_METRICS,
        _fmt,
        headline,
        summarize,
    )

    stats = summarize([r for r in rows if r.get("family") == "unimodal"], split=split)
    notes = {}
    for task in tasks:
        if len(get_task(task).modalities) != 1:
            continue
        label, metric = headline(task)
        hit = stats[(stats["task"] == task) & (stats["label"] == label) & (stats["metric"] == metric)]
        notes["multimodal", task] = (
            f"{_fmt(hit['mean'].iloc[0], hit['sd'].iloc[0], metric, NATURAL_SCALE_METRICS | CORRELATION_METRICS)}: "
            f"Table 1's `unimodal` row (one modality: the same model)" if not hit.empty else
            "as unimodal (one modality), which --table1 does not hold")
    return notes


def write_table2(records: Sequence[Mapping], output_dir: str | Path, *, table1: str | Path | None = None,
                 append: bool = True, split: str | None = None):
    """Write ``table2.csv`` (long format, ``report.COLUMNS``; rows of an earlier table2.csv kept unless this run
    rewrites their task, row and seed: other seeds of a k-shot row add to it, a zero-shot row, one evaluation,
    replaces the task's zero-shot cell whatever its seed), ``table2.md`` (rows: multimodal, multimodal multitask --
    from ``table1`` when given -- zero-shot, 5-, 10-, 20-shot and any other k; columns: the tasks, the paper's three
    first) and ``table2.png``; ``SETTINGS_FILE`` keeps the k-shot records' settings (``SETTINGS_KEY``) per task, k
    and seed, with their rows, and table2.md names each cell's. One table per split: ``split`` (default: the one
    ``records`` were scored on, else the earlier table's, else test) is the table's, and records or an earlier
    table2.csv of another split are refused (``_table2_split``). Returns ``report.ReportPaths``."""
    output_dir = Path(output_dir)
    return _write_table2(records, output_dir, _table2_records(output_dir) if append else [], table1=table1,
                         split=split, append=append)


def _write_table2(records: Sequence[Mapping], output_dir: Path, previous: Sequence[Mapping], *,
                  table1: str | Path | None, split: str | None, append: bool = True):
    """``write_table2`` over ``previous``, the earlier table2.csv's records (those kept)."""
    from multimed_hf.training.paper import TABLE2, TABLE2_COLUMNS, TABLE2_ROW_LABELS
    from multimed_hf.training.report import CORRELATION_METRICS, NATURAL_SCALE_METRICS, write_table

    skipped = {r["task"]: r[NOT_SCORED] for r in records if r.get(NOT_SCORED)}
    new = [dict(r) for r in records if not r.get(NOT_SCORED)]
    split = _table2_split(output_dir, new, previous, split)
    # why an earlier run's zero-shot cell has no number, kept beside table2.csv for the runs appending to it
    kept_notes = output_dir / NOT_SCORED_FILE
    earlier = json.loads(kept_notes.read_text()) if append and kept_notes.is_file() else {}
    # kept unless this run writes the task's zero-shot cell (scored, or not scored for a reason of its own); a run of
    # other shots of the same task (the same base: table2_bases.json) leaves the cell and its reason as they were
    zero_shot_now = {r["task"] for r in new if r["family"] == "zero_shot"} | set(skipped)
    skipped = {**{t: why for t, why in earlier.items() if t not in zero_shot_now}, **skipped}
    output_dir.mkdir(parents=True, exist_ok=True)
    if skipped:
        kept_notes.write_text(json.dumps(skipped, indent=2, sort_keys=True) + "\n")
    elif kept_notes.is_file():
        kept_notes.unlink()
    written = {_run_of(r) for r in new}  # this run replaces the rows of the task, k and seed it writes
    kept = [r for r in previous if _run_of(r) not in written
            and not (table1 is not None and r["family"] in TABLE1_ROWS)]
    combined = kept + new
    # how each k-shot seed in the table was trained, written with its rows (a run stopped before them writes none)
    settings = _table2_settings(output_dir, previous, new, combined)
    settings_path = output_dir / SETTINGS_FILE
    if settings:
        settings_path.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    elif settings_path.is_file():
        settings_path.unlink()
    tasks = list(dict.fromkeys(r["task"] for r in combined))
    table1_records = _read_table1(table1) if table1 is not None else None
    if table1_records is not None:
        combined = _table1_rows(table1_records, tasks, split) + combined
    shots = sorted({int(f.split("_")[0]) for f in (r["family"] for r in combined) if f.endswith("_shot")
                    and f.split("_")[0].isdigit()})
    families = list(TABLE2_ROW_LABELS) + [family_name(k) for k in shots if family_name(k) not in TABLE2_ROW_LABELS]
    ordered = [t for t in TABLE2_COLUMNS if t in tasks] + [t for t in tasks if t not in TABLE2_COLUMNS]
    notes = {("zero_shot", t): ZERO_SHOT_REGRESSION_NOTE for t in ordered
             if get_task(t).problem_type == "regression"
             and not any(r["task"] == t and r["family"] == "zero_shot" for r in combined)}
    notes.update({("zero_shot", t): f"not scored: {why}" for t, why in skipped.items()
                  if not any(r["task"] == t and r["family"] == "zero_shot" for r in combined)})
    shown = [r for r in combined if r.get("family") in TABLE1_ROWS]  # Table 1's numbers in Table 2
    if table1 is None:
        notes.update({(f, t): "give --table1 (multimed benchmark's table1.csv)" for f in TABLE1_ROWS for t in ordered
                      if not any(r["task"] == t and r["family"] == f for r in combined)})
    else:
        no_multimodal = [t for t in ordered if not any(r["task"] == t and r["family"] == "multimodal"
                                                       for r in combined)]
        notes.update(_one_modality_notes(table1_records, no_multimodal, split))
        shown += [r for r in table1_records if r.get("family") == "unimodal" and r.get("task") in no_multimodal
                  and len(get_task(r["task"]).modalities) == 1]
        # as table1.md says why its benchmark has no multitask run of a task (one task selected), not "not run"
        from multimed_hf.training.families import unplanned

        table1_tasks = list(dict.fromkeys(r["task"] for r in table1_records if r.get("task")))
        notes.update({("multimodal_multitask", t): why
                      for t, why in unplanned("multimodal_multitask", table1_tasks).items() if t in ordered
                      and not any(r["task"] == t and r["family"] == "multimodal_multitask" for r in combined)})
    expression = ("Expression (Expre pred.) is Pearson r, reported as r; the paper prints r x 100 as a percentage "
                  "(its number beside ours says so); table2.csv holds r, paper_value the printed percentage\n"
                  "The paper's zero-shot expression number (a Pearson task printed as a percentage) cannot be "
                  "label-text zero-shot: a regression target has no class texts (multimed_hf.fewshot.zeroshot says "
                  "what it can mean)\n") if "expression_prediction" in ordered else ""
    scored = (f"Scored on the {split} split, not the test split: the paper's numbers beside the cells are its "
              f"test results\n" if split != "test" else "")
    note = ("Zero-shot = label-text transfer to classes held out of alignment training; k-shot = a PEFT adapter on "
            "k examples per class of the training split\n" + scored + expression +
            "Zero-shot trains nothing: one evaluation (no sd); k-shot: mean ± sd over the seeds' support sets"
            + _table1_rows_note(shown, combined, ordered, split)
            + "".join(_zero_shot_scope(combined, t, split) for t in ordered) + _scope_note(combined, ordered, split)
            + _short_support(combined, split) + _bases_note(output_dir, ordered)
            + _settings_note(settings, combined, ordered))
    return write_table(combined, output_dir, name="table2", title="Table 2", note=note, paper=TABLE2,
                       columns=TABLE2_COLUMNS, row_labels=TABLE2_ROW_LABELS, families=families, tasks=ordered,
                       split=split, notes=notes, natural_scale=NATURAL_SCALE_METRICS | CORRELATION_METRICS,
                       extra_columns=TABLE2_EXTRA_COLUMNS, integer_columns=("k",))


def _table2_split(output_dir: Path, new: Sequence[Mapping], previous: Sequence[Mapping], split: str | None) -> str:
    """The split a Table 2 of ``new`` records over ``previous`` (the earlier table2.csv's) is of: ``split``, else
    the records', else the earlier table's, else test. Records of several splits, or of another split than the
    earlier table's own rows (Table 1's, from ``--table1``, aside), are refused: before, a validation run dropped the
    same seeds' test rows, and table2.md showed the test split alone ("not run" in every cell it made)."""
    ours = sorted({_split_of(r) for r in new if r.get("family") not in TABLE1_ROWS} | ({split} if split else set()))
    if len(ours) > 1:
        raise FewShotError(f"Table 2 records of the splits {ours}: a table holds one split (its mean ± sd is over "
                           f"one set of rows); write each split's into its own --output_dir")
    earlier = _earlier_split(previous)
    split = ours[0] if ours else earlier or "test"
    if earlier is not None and earlier != split:
        raise FewShotError(_mixed_splits(output_dir, earlier, split))
    return split


def _earlier_split(previous: Sequence[Mapping]) -> str | None:
    """The split of a table2.csv's records ``previous`` (its own rows; Table 1's aside), or None where it holds none.
    Rows of several splits (an earlier version's table): the first written."""
    return next((_split_of(r) for r in previous if r.get("family") not in TABLE1_ROWS), None)


def _mixed_splits(output_dir: Path, earlier: str, split: str) -> str:
    return (f"--output_dir {str(output_dir)!r} holds Table 2 rows scored on the {earlier!r} split; this run scores "
            f"--eval_split {split!r}. A table holds one split (its cells' mean ± sd over one set of rows, its run "
            f"folders one split's): give another --output_dir for the {split} split (e.g. "
            f"{str(output_dir).rstrip('/')}-{split}), or --eval_split {earlier}")


def check_training_flags(args: FewShotArguments, training_args, given: set[str] | None = None) -> None:
    """Refuse ``TrainingArguments`` that change nothing in ``args``' runs, or break each of them, before any run:
    those ``MultiMedTrainer`` cannot honour (``training.trainer.refused_arguments``; raised inside each run before,
    so every run was recorded as failed and the command exited 0), evaluation during training (a k-shot run scores
    ``--eval_split`` once, after training), ``push_to_hub`` and ``resume_from_checkpoint`` (each run trains a new
    adapter over the checkpoint and saves it in its own folder). ``given``: the flags named on the command line
    (``parse_fewshot_args``); with it, also ``--seed`` (each run's seed is one of ``--seeds``),
    ``--remove_unused_columns true``, transformers' script switches ``--do_train/--do_eval/--do_predict`` and, in a
    zero-shot-only run, the training flags (``TRAINING_ONLY_FLAGS``)."""
    from multimed_hf.training.trainer import refused_arguments

    refused = refused_arguments(training_args)
    if refused:
        raise FewShotError("TrainingArguments that MultiMedTrainer cannot honour (each k-shot and zero-shot run "
                           "builds one):\n- " + "\n- ".join(refused))
    given = set(given or ())
    evaluating = [name for name in _EVAL_DURING_TRAINING if name in given]
    if training_args.eval_strategy != "no" or training_args.load_best_model_at_end or evaluating:
        name = evaluating[0] if evaluating else ("eval_strategy" if training_args.eval_strategy != "no" else
                                                 "load_best_model_at_end")
        raise FewShotError(f"--{name}: a few-shot run trains on its support set alone and scores --eval_split "
                           f"{args.eval_split!r} once, after training, so there is no evaluation during training "
                           f"(with eval_strategy != 'no' each run failed: no eval_dataset); leave it out")
    if training_args.push_to_hub:
        raise FewShotError("--push_to_hub: each run saves its adapter under <output_dir>/runs/<task>/<k>_shot/"
                           "seed<s>/adapter, and Trainer would push nothing of it (it tried to create the repo "
                           "from every run); push the adapter you want with multimed_hf.fewshot.push_adapter")
    if training_args.resume_from_checkpoint is not None:
        raise FewShotError(f"--resume_from_checkpoint {training_args.resume_from_checkpoint}: every run trains a new "
                           f"adapter over the CHECKPOINT argument and was never resumed; leave it out (the "
                           f"checkpoint adapted is the first argument)")
    if "seed" in given:
        raise FewShotError(f"--seed {training_args.seed}: each run's seed (support set, adapter initialisation, "
                           f"batches) is one of --seeds {args.seeds}, which overrides it; use --seeds")
    if "remove_unused_columns" in given:  # from Python, TrainingArguments' own default (True) is not refused
        refuse_remove_unused_columns(training_args, "multimed fewshot", FewShotError)
    refuse_script_switches(given, "multimed fewshot trains every k > 0 of --shots and scores --eval_split",
                           FewShotError)
    if not any(k > 0 for k in args.shots):
        training_only = [name for name in TRAINING_ONLY_FLAGS if name in given]
        if training_only:
            raise FewShotError(f"--{training_only[0]}: it shapes the k-shot adapters' training, and --shots "
                               f"{args.shots} asks for zero-shot alone, which trains nothing; add a k > 0 to "
                               f"--shots or leave it out")


def _fewshot_parser(prog: str):
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser((FewShotArguments, TrainingArguments), prog=prog)
    parser.set_defaults(remove_unused_columns=False, report_to="none", save_strategy="no", learning_rate=1e-3,
                        num_train_epochs=20, per_device_train_batch_size=16, per_device_eval_batch_size=64,
                        logging_steps=10, dataloader_pin_memory=has_accelerator())  # as multimed train's defaults
    return parser


def parse_fewshot_args(argv: Sequence[str] | None = None, *, prog: str = "multimed fewshot"):
    """``(FewShotArguments, TrainingArguments)``; the checkpoint may come first, positionally. ``prog``: the usage
    line's command. Flags that would change nothing are refused (``FewShotArguments``, ``check_training_flags``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and not argv[0].endswith(".json"):
        argv = ["--checkpoint", argv[0], *argv[1:]]
    parser = _fewshot_parser(prog)
    parser.usage = (f"{prog} CHECKPOINT --data DATA --task TASK [--shots K ...] [--seeds S ...] [--output_dir OUT] "
                    "[adapter and TrainingArguments flags]\n(CHECKPOINT: the base run's folder or Hub id; also "
                    "--checkpoint CHECKPOINT)")
    if len(argv) == 1 and argv[0].endswith(".json"):
        args, training_args = parser.parse_json_file(argv[0])
        given = set(json.loads(Path(argv[0]).read_text()))
    else:
        args, training_args = parser.parse_args_into_dataclasses(argv)
        given = flags_named(_fewshot_parser(prog), argv)
    check_training_flags(args, training_args, given)
    refuse_lone_processes(training_args, FewShotError)
    return args, training_args


def fewshot_main(argv: Sequence[str] | None = None) -> int:
    """``multimed fewshot CHECKPOINT --data DIR --task T --shots 0 5 10 20 --seeds 0 1 2 [--table1 PATH]
    [TrainingArguments]``: every k x seed run, then ``table2.csv`` (appended across tasks), ``table2.md`` and
    ``table2.png`` in ``--output_dir``."""
    try:
        args, training_args = parse_fewshot_args(argv)
        records = run_fewshot(args, training_args)
        if training_args.process_index == 0:
            paths = write_table2(records, training_args.output_dir, table1=args.table1, split=args.eval_split)
            print(f"wrote {paths.csv}, {paths.markdown}, {paths.figure}")
            failed = {(r["run"], r["seed"]): r["error"] for r in records if r.get("error")}
            for (run, seed), error in failed.items():  # in the tables too; said here, where the user looks
                print(f"multimed fewshot: {run} seed {seed} failed: {error}", file=sys.stderr)
    except ValueError as err:
        print(f"multimed fewshot: error: {err}", file=sys.stderr)
        return 2
    # failed runs are results, reported in the tables; only a command where nothing ran failed
    made = [r for r in records if not r.get(NOT_SCORED)]
    return 1 if made and all(r.get("error") for r in made) else 0
