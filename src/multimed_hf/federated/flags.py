"""``multimed federate`` flags that would change nothing, or fail only once the clients are made: refused first."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

__all__ = ["FederateFlagError", "STRATEGY_FLAGS", "BOUNDS", "out_of_bounds", "check_federate_flags",
           "check_assemble_kwargs", "clients_file_tasks", "has_fragments"]

#: Flags read by one strategy alone: dest -> that strategy (``make_strategy``; the vertical phase is BlendAvg's).
STRATEGY_FLAGS = {"proximal_mu": "fedprox", "score_weight": "blendavg", "score_key": "blendavg",
                  "vertical_steps": "blendavg", "vertical_batch": "blendavg", "vertical_lr": "blendavg"}
_VERTICAL = ("vertical_steps", "vertical_batch", "vertical_lr")
#: ``assemble()`` arguments a federation sets itself -> what to use instead.
_OWNED = {"data": "--data", "tasks": "--tasks", "encoders": "--encoders", "datasets": "--data/--tasks or --clients"}
#: ``assemble()`` arguments that change nothing in a federation: its clients' rows are already loaded, whole.
_UNUSED = ("streaming", "rank", "world_size", "build_model")


class FederateFlagError(ValueError):
    """A ``multimed federate`` flag that would change nothing, or that the run would refuse only late."""


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def clients_file_tasks(clients, data=None, tasks: Sequence[str] | None = None) -> list[str]:
    """The tasks a clients file names, checked against ``tasks`` (``--tasks``) both ways: a task the file names that
    ``tasks`` leaves out, or one ``tasks`` names that no client holds (silently dropped before)."""
    from multimed_hf.federated.clients_file import read_clients_file

    _, entries = read_clients_file(clients, data=data)
    named = list(dict.fromkeys(t for entry in entries for t in entry["tasks"]))
    if tasks:
        left_out = [t for t in named if t not in tasks]
        if left_out:
            raise FederateFlagError(f"{clients} names tasks {left_out} that --tasks {list(tasks)} leaves out")
        unheld = [t for t in tasks if t not in named]
        if unheld:
            raise FederateFlagError(f"--tasks {list(tasks)}: no client of {clients} holds {unheld} (it names "
                                    f"{named}); name only the file's tasks, or leave --tasks out")
    return named


def has_fragments(partition: str | None, clients, data=None) -> bool:
    """Whether the federation has unlabelled fragments for the vertical phase to link: a ``fragmented`` client in
    ``partition``, or a client of the ``clients`` file with ``fragments``."""
    if clients is not None:
        from multimed_hf.federated.clients_file import read_clients_file
        from multimed_hf.federated.partition import FRAGMENTS

        _, entries = read_clients_file(clients, data=data)
        return any(FRAGMENTS in task["splits"] for entry in entries for task in entry["tasks"].values())
    from multimed_hf.federated.partition import parse_partition

    return parse_partition(partition).get("fragmented", 0) > 0


def check_assemble_kwargs(kwargs: Mapping[str, Any] | None, tasks: Sequence[str] | None) -> None:
    """``--assemble`` keys a federation reads: ``assemble()``'s own arguments but those it sets itself
    (``--data``, ``--tasks``, ``--encoders``) or that change nothing with its rows already loaded (a key that is no
    argument of ``assemble()`` went to the data loader, which the federation never calls: silently ignored before),
    and ``processor_overrides`` only of modalities ``tasks`` read (``training.arguments.overrides_read``; an unread
    one crashed the assembly after every client folder was written)."""
    import inspect

    from multimed_hf.training.arguments import overrides_read, task_modalities
    from multimed_hf.training.assembly import assemble

    kwargs = dict(kwargs or {})
    for key, instead in _OWNED.items():
        if key in kwargs:
            raise FederateFlagError(f"--assemble {key!r}: the federation sets it itself; use {instead}")
    for key in _UNUSED:
        if key in kwargs:
            raise FederateFlagError(f"--assemble {key!r}: the initial model is assembled from the clients' rows, "
                                    f"already loaded whole, so it changes nothing; leave it out")
    known = [name for name, p in inspect.signature(assemble).parameters.items()
             if p.kind is not inspect.Parameter.VAR_KEYWORD and name not in _OWNED and name not in _UNUSED]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise FederateFlagError(f"--assemble keys {unknown} are not read by the initial model's assembly; expected "
                                f"keys from {known}")
    overrides = kwargs.get("processor_overrides")
    modalities = task_modalities(tasks)
    if overrides and modalities is not None:
        unread = [m for m in overrides if m not in overrides_read(overrides, modalities)]
        if unread:
            raise FederateFlagError(f"--assemble processor_overrides names modalities {unread} that none of the tasks "
                                    f"{list(tasks)} reads (they read {list(modalities)}; 'image' stands for every "
                                    f"image modality)")


def _assemble_option(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise FederateFlagError(f"--assemble: expected a JSON object of assemble() arguments, got {text!r} ({err})"
                                ) from None
    if not isinstance(value, dict):
        raise FederateFlagError(f"--assemble: expected a JSON object of assemble() arguments, got "
                                f"{type(value).__name__}")
    if "hidden_size" in value:
        raise FederateFlagError("--assemble 'hidden_size': the initial model's shared size is --hidden-size N (0: "
                                "the encoder preset's); use it")
    return value


#: The federation's settings with a range, as ``multimed federate`` flag dest -> (its key in an exported app's run
#: config, or None where only the command reads it; the lowest value; whether that value is allowed; what is
#: expected; what the edge means). ``_check_values`` checks the flags, ``server_app.read_run_config`` a run config.
BOUNDS = {
    "rounds": ("num-rounds", 1, True, "an integer", " (0 trained nothing and saved the initial model as the result)"),
    "hidden_size": (None, 0, True, "an integer", " (0: the encoder preset's size)"),
    "vertical_steps": ("vertical-steps", 0, True, "an integer", " (0: no vertical phase)"),
    "vertical_batch": ("vertical-batch", 1, True, "an integer", ""),
    "num_cpus": (None, 1, True, "an integer", ""),
    "vertical_lr": ("vertical-lr", 0, False, "a number", ""),
    "timeout": ("timeout", 0, False, "a number", ""),
    "proximal_mu": ("proximal-mu", 0, True, "a number", ""),
    "dp_clipping_norm": ("dp-clipping-norm", 0, False, "a number", ""),
}


def out_of_bounds(dest: str, value, name: str) -> str | None:
    """Why ``value`` of the setting ``dest`` (``BOUNDS``), called ``name`` in the message, is out of its range; None
    where it is in range or unset."""
    _, low, inclusive, expected, meaning = BOUNDS[dest]
    if value is None or (value >= low if inclusive else value > low):
        return None
    return f"{name} {value}: expected {expected} {'>=' if inclusive else '>'} {low}{meaning}"


def _check_values(args) -> None:
    """Values the run would refuse only after the clients are made, or that would silently mean something else."""
    from multimed_hf.federated.local import LocalConfig, LocalConfigError

    for dest in BOUNDS:
        why = out_of_bounds(dest, getattr(args, dest, None), _flag(dest))
        if why is not None:
            raise FederateFlagError(why)
    given = {"local_steps": args.local_steps, "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup}
    try:  # checked by each client at its first round before
        LocalConfig(**{k: v for k, v in given.items() if v is not None})
    except LocalConfigError as err:
        raise FederateFlagError(f"--local-steps / --batch-size / --lr / --warmup: {err}") from None


def check_federate_flags(args, given: set[str]) -> None:
    """Refuse a ``multimed federate`` flag that changes nothing in the run asked for (``given``: the dests named on
    the command line, ``training.arguments.flags_named``), before any client folder is written: a strategy's own flag when no strategy
    run reads it (``STRATEGY_FLAGS``; simulation: ``--strategy`` and ``--compare``), the vertical flags without
    fragments to link or with ``--vertical-steps 0``, ``--dp-clipping*`` without ``--dp-noise-multiplier``, ``--by``
    with ``--clients``, ``--data`` where the clients file names its own, ``--tasks`` naming a task no client of
    ``--clients`` holds, ``--superlink`` / TLS files
    without ``--export-app``, ``--compare`` / ``--num-cpus`` with it (a deployment runs one strategy per ``flwr
    run``, on its SuperNodes), ``--assemble`` keys the initial model's assembly does not read
    (``check_assemble_kwargs``), and values out of range (``_check_values``). A deployment's run config holds every
    setting (``flwr run --run-config`` may switch the strategy), so with ``--export-app`` the strategies' own flags
    are kept."""
    from multimed_hf.federated.deploy import tls_files

    export = args.export_app is not None
    if args.clients is None and (args.data is None or not args.tasks):
        raise FederateFlagError("--data and --tasks are required unless --clients names the clients")
    tls = [d for d in ("tls_ca", "tls_cert", "tls_key") if d in given]
    if export:
        tls_files(args.tls_ca, args.tls_cert, args.tls_key)
        for dest, why in (("compare", "a deployment runs one strategy per flwr run; start another with flwr run "
                                      "APP CONNECTION --run-config 'strategy=\"fedavg\"'"),
                          ("num_cpus", "Ray's CPUs of a simulation; a deployment's clients run on their SuperNodes")):
            if dest in given:
                raise FederateFlagError(f"{_flag(dest)} with --export-app: {why}; leave it out")
    else:
        if tls:
            raise FederateFlagError("--tls-ca, --tls-cert and --tls-key go with --export-app (a simulation has no "
                                    "connections)")
        if "superlink" in given:
            raise FederateFlagError(f"--superlink {args.superlink}: the SuperLink address an exported app's commands "
                                    f"use, and a simulation has no connections; add --export-app DIR or leave it out")
    _check_values(args)
    if args.clients is not None:
        if "by" in given:
            raise FederateFlagError(f"--by {args.by}: it groups rows when --partition makes the clients, and "
                                    f"--clients {args.clients} names each client's rows itself; leave it out")
        if "data" in given:
            from multimed_hf.federated.clients_file import read_clients_file

            top, _ = read_clients_file(args.clients, data=args.data)
            if str(top) != str(args.data):
                raise FederateFlagError(f"--data {args.data}: {args.clients} names its own data ({top}), which its "
                                        f"clients are made from (--data is read where the file names none); leave "
                                        f"--data out or remove 'data' from the file")
        tasks = clients_file_tasks(args.clients, args.data, args.tasks)
    else:
        tasks = args.tasks
    vertical = [d for d in _VERTICAL if d in given]
    if not export:
        from multimed_hf.federated.strategy import STRATEGIES

        unknown = [name for name in args.compare if name not in STRATEGIES]
        if unknown:
            raise FederateFlagError(f"--compare {args.compare}: {unknown} are not strategies; expected names from "
                                    f"{STRATEGIES}")
        runs = list(dict.fromkeys([args.strategy, *args.compare]))
        for dest, needs in STRATEGY_FLAGS.items():
            if dest in given and needs not in runs:
                raise FederateFlagError(f"{_flag(dest)} {getattr(args, dest)}: only {needs} reads it, and the "
                                        f"strategies run are {runs}; add {needs} to --strategy or --compare, or "
                                        f"leave it out")
        if args.vertical_steps == 0 and [d for d in vertical if d != "vertical_steps"]:
            raise FederateFlagError(f"{_flag(vertical[-1])} {getattr(args, vertical[-1])}: --vertical-steps 0 turns "
                                    f"the vertical phase off; leave it out or give --vertical-steps N")
        noise_only = [d for d in ("dp_clipping_norm", "dp_clipping") if d in given]
        if noise_only and args.dp_noise_multiplier is None:
            raise FederateFlagError(f"{_flag(noise_only[0])} {getattr(args, noise_only[0])}: it sets the clipping of "
                                    f"central differential privacy, which only --dp-noise-multiplier Z turns on; add "
                                    f"it or leave it out")
    if vertical and not has_fragments(args.partition or "paired=1,fragmented=1,partial=1", args.clients, args.data):
        where = f"--clients {args.clients}" if args.clients else f"--partition {args.partition}"
        raise FederateFlagError(f"{_flag(vertical[0])} {getattr(args, vertical[0])}: the vertical phase trains the "
                                f"pairs that fragments link (a fragmented client's unlabelled rows), and {where} has "
                                f"none; add a fragmented client or leave it out")
    check_assemble_kwargs(_assemble_option(args.assemble), tasks)
    _check_encoders(args.encoders)


def _check_encoders(encoders: str) -> None:
    """``--encoders``: a preset or a JSON file that exists, before any client folder is written (it was read by the
    initial model's assembly, after)."""
    from pathlib import Path

    from multimed_hf.training.encoder_presets import ENCODER_PRESETS

    if encoders not in ENCODER_PRESETS and not Path(encoders).is_file():
        raise FederateFlagError(f"--encoders {encoders!r}: expected one of {list(ENCODER_PRESETS)} or the path of a "
                                f"JSON file of encoder specs; no such file")
