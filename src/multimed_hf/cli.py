"""The ``multimed`` command: parses arguments, then calls the Python API; no logic of its own."""

from __future__ import annotations

import argparse
import importlib
import os
from pathlib import Path
import sys

from multimed_hf import __version__

__all__ = ["main"]

_EPILOG = """examples:
  multimed list
  multimed info brain_tumor
  multimed build brain_tumor --source ~/data/Brain-Tumor-MRI-Dataset --out multimed
  multimed build diabetic_retinopathy --source ~/data/OCT2017 --out multimed --strict
  multimed push multimed --repo my-org/multimed
  multimed train --data multimed --tasks brain_tumor --family unimodal --encoders small --output_dir runs/bt
  multimed evaluate runs/bt --data multimed --split test --output_dir runs/bt-eval
  multimed benchmark --data multimed --families unimodal multimodal_multitask --seeds 0 1 2 --output_dir report
  multimed train --data multimed --tasks expression_prediction --family multimodal+miles --encoders small --output_dir runs/miles
  multimed fewshot runs/bt --data multimed --task diabetic_retinopathy --shots 5 10 20 --seeds 0 1 2 --output_dir fs
  multimed ood --data multimed --tasks disease --group organ --encoders small --output_dir ood
then: datasets.load_dataset("multimed", "brain_tumor")
`multimed COMMAND --help` explains each command; train, evaluate and benchmark also take every
transformers TrainingArguments flag (--max_steps, --seed, --bf16, --resume_from_checkpoint, ...)."""

#: Commands whose arguments are parsed by their own HfArgumentParser (our dataclass + TrainingArguments): the
#: command line hands them the rest of argv untouched. name -> (module, function, one-line help).
_FORWARDED = {
    "train": ("multimed_hf.training.run", "train_main",
              "train a model on built configs (a Table 1 family) and save it, its metrics and predictions"),
    "evaluate": ("multimed_hf.training.run", "evaluate_main",
                 "metrics and predictions of a saved checkpoint (folder or Hub id) on built configs"),
    "benchmark": ("multimed_hf.training.benchmark", "benchmark_main",
                  "train and evaluate families x tasks x seeds; write table1.csv/.md/.png beside the paper's"),
    "fewshot": ("multimed_hf.fewshot.run", "fewshot_main",
                "adapt a checkpoint to a task with PEFT adapters on k-shot support sets (0 = zero-shot); Table 2"),
    "federate": ("multimed_hf.federated.simulation", "federate_main",
                 "simulate BlendFL / FedAvg / FedProx over clients made from built configs, or export a Flower App"),
    "ood": ("multimed_hf.analysis", "ood_main",
            "hold out one organ / tissue / cell type at a time; per-group metrics with CIs (Fig. 2)"),
    "combos": ("multimed_hf.analysis", "combos_main",
               "every modality subset (mask / retrain), heat map, exact Shapley values per modality (Fig. 3)"),
    "robustness": ("multimed_hf.analysis", "robustness_main",
                   "scores under per-modality corruption and missing modalities; relative / effective robustness"),
    "attribution": ("multimed_hf.analysis", "attribution_main",
                    "which modality drove each prediction: leave-one-out deltas, gradient x input; subgroups"),
}


def _list(args) -> int:
    from multimed_hf.builders import builders_for_task
    from multimed_hf.tasks import get_task, list_tasks

    extras = [name for name in list_tasks(include_extras=True) if get_task(name).extra]
    for name in list_tasks(include_extras=args.extras):
        task = get_task(name)
        built = ", ".join(b.source for b in builders_for_task(name)) or "no builder yet"
        kind = "extra: " if task.extra else ""
        print(f"{name:24s} {kind}{task.title}  [{', '.join(task.modalities)}]  sources with builders: {built}")
    if extras and not args.extras:  # a hint, on stderr: stdout stays one line per task
        print(f"optional extra configs beside the eleven tasks: {', '.join(extras)} (multimed list --extras)",
              file=sys.stderr)
    return 0


def _info(args) -> int:
    from multimed_hf.builders import builders_for_task
    from multimed_hf.tasks import get_task

    task = get_task(args.task)
    print(f"{task.name}: {task.title}\n  sample: {task.sample}\n  problem: {task.problem_type}")
    print(f"  modalities: {', '.join(task.modalities)}\n  metrics: {', '.join(task.metrics)}")
    print(f"  grouping key: {task.grouping_key}")
    for label in task.labels:
        print(f"  label {label.name} ({label.kind}): {', '.join(label.names) or label.description}")
    implemented = {b.source for b in builders_for_task(task.name)}
    for s in task.sources:
        state = "builder ready" if s.name in implemented else "no builder yet"
        print(f"  source {s.name} ({state}): {s.title}\n    licence: {s.license} ({s.redistribution})\n"
              f"    download: {s.homepage}\n    layout: {s.layout}")
    return 0


def _build(args) -> int:
    from multimed_hf.api import build_dataset
    from multimed_hf.training.arguments import refuse_several_processes

    refuse_several_processes("multimed build", does="builds with its own worker processes (--num-proc N)")

    report = build_dataset(
        args.task, args.source, args.out, on_bad_files="error" if args.strict else "report",
        progress=not args.quiet, num_proc=args.num_proc, engine=args.engine, ray_address=args.ray_address,
        unpack=args.unpack,
    )
    print(report.summary())
    if not report.kept_samples:  # an empty config is no dataset: say so rather than how to load it
        earlier = report.entries.path.parent != Path(args.out) / args.task  # an earlier build is left as it was
        print(f"multimed build: error: {args.task}: no sample kept; the summary above and {report.entries.path} give "
              f"each file's reason" + (f"; the earlier build of {args.task} in {args.out} is left as it was"
                                       if earlier else ""), file=sys.stderr)
        return 1
    print(f"load it with: datasets.load_dataset({str(args.out)!r}, {args.task!r})")
    return 0


def _push(args) -> int:
    from multimed_hf.data.push import push_dataset

    report = push_dataset(args.folder, args.repo, token=args.token, private=args.private)
    print(f"pushed {len(report.uploaded)} files to {report.repo_id}: {report.commit_url}")
    for name, reason in report.left_out.items():
        print(f"left out {name}: {reason}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multimed",
        description="MultiMed on Hugging Face: list the eleven tasks, build a task's config from its publishers' "
        "source folders, push the built folder to the Hub, train and evaluate models, reproduce Table 1.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="list the tasks and which sources have builders")
    listing.add_argument("--extras", action="store_true",
                         help="also list the optional extra configs (e.g. pmc_pairs: image-caption pairs)")
    listing.set_defaults(func=_list)
    info = sub.add_parser("info", help="a task's labels, metrics, grouping and sources (licence, download page)")
    info.add_argument("task")
    info.set_defaults(func=_info)
    build = sub.add_parser(
        "build", help="build a task's config from source folders",
        description="Detect each --source folder's layout, validate every file (decoded), group samples "
        "(patients, exact and near duplicates), split them without leaks and write Parquet shards, a manifest "
        "of every file seen and the dataset card under --out.",
    )
    build.add_argument("task", help="a task name (see `multimed list`)")
    build.add_argument("--source", action="append", required=True, metavar="DIR",
                       help="a source folder in its publisher's layout, or its archives as downloaded (a folder of "
                       "them, or one archive) (repeat for several sources)")
    build.add_argument("--out", required=True, metavar="DIR", help="the dataset folder to write (e.g. multimed)")
    build.add_argument("--strict", action="store_true", help="stop at the first bad file instead of reporting it")
    build.add_argument("--num-proc", type=int, default=1, metavar="N", help="decode files in N processes")
    build.add_argument("--quiet", action="store_true", help="no progress bars")
    build.add_argument("--no-unpack", dest="unpack", action="store_false",
                       help="do not unpack a --source folder of downloads as they came (archives, no folder) into "
                       "--out/.build_cache/unpacked/ to build from; by default it is unpacked there and kept")
    build.add_argument("--engine", choices=("local", "ray"), default="local",
                       help="read and validate files here (local) or on a Ray cluster (ray: pip install "
                       "'multimed_hf[ray]'); both write the same shards, manifest and card")
    build.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="the Ray cluster to join (default: RAY_ADDRESS, else a local Ray instance)")
    build.set_defaults(func=_build)
    push = sub.add_parser("push", help="upload a built folder to ORG/NAME on the Hub (non-redistributable "
                          "sources left out by name)")
    push.add_argument("folder")
    push.add_argument("--repo", required=True, help="ORG/NAME (the bare id 'multimed' is taken on the Hub)")
    push.add_argument("--token", default=None, help="a Hub token (default: the logged-in one)")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_push)
    for name, (_, _, summary) in _FORWARDED.items():  # listed in --help; main() hands them their argv
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _FORWARDED:
        module, function, _ = _FORWARDED[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, KeyError) as err:
        print(f"multimed {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's, not the data's (a bad source file is rejected on its own): no traceback
        where = f" {err.filename}" if err.filename else ""
        print(f"multimed {args.command}: error: cannot write or read{where}: {err.strerror or err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
