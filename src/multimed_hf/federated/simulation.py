"""Local simulations of a federation with Flower's simulation engine: ``run_federation`` and ``federate_main``.

``run_federation`` partitions built configs into clients (``partition.py``) or reads them from a clients file
(``clients_file.py``), assembles the initial model and
processor from the data (``multimed_hf.training.assembly.assemble``; in a real federation they are agreed on and
shipped before training), runs the ServerApp and ClientApp under ``flwr.simulation.run_simulation`` (Ray backend:
``pip install "flwr[simulation]"``), once per strategy asked for, and writes the report and a convergence plot.

Simulation-only conveniences, stated: the server also evaluates each round's global model on ALL validation rows
of the configs (``central`` in the report, and ``central-horizontal`` before the vertical phase; a real server
holds no data), and the link salt is drawn here.

The federation pins its own settings rather than the centralised training defaults: the initial model's shared
size (``FEDERATED_HIDDEN_SIZE``), the local schedule (``local.LocalConfig``: lr 1e-4, 10 steps, warm-up, clipping)
and the vertical step (``server_app.VerticalSettings``: lr 1e-3). Measured on the expression sample (120 genes, 3
seeds, curves in tests/test_federated_simulation.py): with the centralised lr 1e-3, no warm-up and the preset's
256-wide fusion, or a vertical lr of 1e-2, the global validation loss rose in some rounds by 2-5x.

Output folder::

    OUT/federation/                      the clients' folders and federation.json, the initial model (initial/)
    OUT/<strategy>/report.json|rounds.csv|messages.jsonl   per round per client metrics, units, bytes; audit
    OUT/<strategy>/run_info.json         the settings it ran with, the clients, the run_federation arguments,
                                         package versions and git commit (``training.outputs.run_info``)
    OUT/<strategy>/model/                the final global model + processor, and a card (README.md) saying it is
                                         a federated model of which run
    OUT/convergence.png                  global validation loss per round, one line per strategy

A run replaces what an earlier run wrote in OUT: its client folders (``partition.replace_earlier_clients``) and,
once the new ones are written, its strategy folders and plot (they were trained on the replaced clients), with a
warning. An interrupted run (Ctrl-C, or SIGTERM while Ray's handler turns it into ``SystemExit``) stops its rounds
within a second or so, keeps the strategies it finished (and their convergence plot) and what the interrupted
one completed (``report.json`` with an ``error``), says so, and re-raises the interrupt.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["FederationResult", "PreparedFederation", "prepare_federation", "run_federation", "federate_main",
           "build_parser", "parse_federate_args", "FEDERATED_HIDDEN_SIZE"]

logger = logging.getLogger(__name__)

#: The initial model's shared size in a federation: the small encoders' own width (64), not the centralised
#: small preset's 256 (``encoder_presets.SMALL_SHARED_SIZE``). Every round ships the fusion and heads whole, so
#: they are kept small; and a fresh optimizer each round moves a wider fusion further (see ``local.py``).
FEDERATED_HIDDEN_SIZE = 64

#: The most seconds an interrupted simulation waits for its server thread to leave its rounds (it looks at the
#: stop event at each wait for the clients; a central evaluation under way finishes first) before saving them.
STOP_WAIT_SECONDS = 30.0
CONVERGENCE = "convergence.png"


@dataclass
class FederationResult:
    """The plan, one report per strategy (the first is the main one) and the files written."""

    plan: object
    reports: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)


def _central_evaluator(model, processor, validation: Mapping):
    from multimed_hf.federated.local import evaluate_local
    from multimed_hf.federated.modules import state_from_record

    def evaluate(round_: int, arrays) -> dict:
        model.load_state_dict(state_from_record(arrays, model.state_dict()), strict=False)
        scores = evaluate_local(model, validation, processor)
        return {k: v for k, v in scores.items() if "/" not in k}

    return evaluate


def _assemble_kwargs(hidden_size: int | None, extra: Mapping | None) -> dict:
    kwargs = dict(extra or {})
    if "hidden_size" in kwargs and hidden_size not in (None, kwargs["hidden_size"]):
        raise ValueError(f"hidden_size is given twice: {hidden_size} and assemble_kwargs['hidden_size'] = "
                         f"{kwargs['hidden_size']}; give it once")
    kwargs.setdefault("hidden_size", hidden_size)
    return kwargs


@dataclass
class PreparedFederation:
    """The client folders (``plan``), the configs' rows they were made from and the initial model + processor
    (saved in ``<federation>/initial``)."""

    plan: object
    data: str
    tasks: list
    datasets: dict
    model: object
    processor: object

    @property
    def model_path(self) -> Path:
        from multimed_hf.federated.client_app import INITIAL_MODEL_DIR

        return Path(self.plan.root) / INITIAL_MODEL_DIR


def prepare_federation(data: str | Path | None, tasks: Sequence[str] | None, federation_dir: str | Path, *,
                       partition="paired=1,fragmented=1,partial=1", clients: str | Path | None = None,
                       by: str = "patient", seed: int = 0, hidden_size: int | None = FEDERATED_HIDDEN_SIZE,
                       encoders: str = "small", assemble_kwargs: Mapping | None = None) -> PreparedFederation:
    """Write the client folders under ``federation_dir`` (the ``clients`` file's, or a ``partition`` of ``tasks``
    of ``data``) and the initial model + processor assembled from the data with ``seed`` in
    ``federation_dir/initial``: what a simulation runs on, and what a deployment ships to its sites."""
    import torch

    from multimed_hf.federated.client_app import INITIAL_MODEL_DIR
    from multimed_hf.federated.clients_file import clients_from_file
    from multimed_hf.federated.flags import check_assemble_kwargs, clients_file_tasks
    from multimed_hf.federated.partition import partition_config
    from multimed_hf.training.assembly import assemble
    from multimed_hf.training.loading import load_task_data

    federation = Path(federation_dir)
    # before any folder is written: --tasks against the clients file, the assemble() arguments against the tasks
    named = clients_file_tasks(clients, data, tasks) if clients is not None else tasks
    check_assemble_kwargs(assemble_kwargs, named)
    if clients is not None:
        plan = clients_from_file(clients, federation, data=data, seed=seed)
        data, tasks = plan.data, plan.tasks
        datasets = load_task_data(data, tasks, splits=("train", "validation"))
    else:
        if data is None or not tasks:
            raise ValueError("a federation needs data and tasks to partition (or a clients file)")
        datasets = load_task_data(data, tasks, splits=("train", "validation"))
        plan = partition_config(data, tasks, partition, federation, by=by, seed=seed, datasets=datasets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        assembly = assemble(data, tasks, encoders=encoders, datasets=datasets, **_assemble_kwargs(hidden_size,
                                                                                                    assemble_kwargs))
    assembly.model.save_pretrained(federation / INITIAL_MODEL_DIR)
    assembly.processor.save_pretrained(federation / INITIAL_MODEL_DIR)
    return PreparedFederation(plan, str(data), list(tasks), datasets, assembly.model, assembly.processor)


def run_federation(data: str | Path | None, tasks: Sequence[str] | None, out_dir: str | Path, *,
                   partition="paired=1,fragmented=1,partial=1", clients: str | Path | None = None,
                   by: str = "patient", seed: int = 0, rounds: int = 3, strategy: str = "blendavg",
                   compare: Sequence[str] = ("fedavg",), local_steps: int | None = None,
                   batch_size: int | None = None, lr: float | None = None, warmup: float | None = None,
                   hidden_size: int | None = FEDERATED_HIDDEN_SIZE, proximal_mu: float = 0.01,
                   score_weight: str = "linear", score_key: str = "val-score", vertical_steps: int = 2,
                   vertical_batch: int = 8, vertical_lr: float = 1e-3, dp_noise_multiplier: float | None = None,
                   dp_clipping_norm: float = 1.0, dp_clipping: str = "server", encoders: str = "small",
                   assemble_kwargs: Mapping | None = None, timeout: float = 600.0,
                   num_cpus: int = 1) -> FederationResult:
    """Make the clients, assemble, simulate ``strategy`` (and each of ``compare`` on the same clients and initial
    model), report.

    Clients: ``partition`` of ``tasks`` of ``data`` (``partition.partition_config``), or the ``clients`` file
    (``clients_file.clients_from_file``; its tasks, and its ``data``; ``data`` where it names none). ``fedavg`` /
    ``fedprox`` run horizontally only (the baselines); ``blendavg`` adds the vertical phase unless
    ``vertical_steps=0``. Local settings left None take ``LocalConfig``'s federation defaults; ``hidden_size`` is
    the initial model's shared size (None: the encoder preset's). ``dp_noise_multiplier`` wraps every strategy run
    in Flower's central DP (``strategy.with_differential_privacy``; baselines only). ``num_cpus``: Ray's CPUs (one
    client runs per CPU)."""
    arguments = dict(locals(), **({"partition": None} if clients is not None else {}))  # for run_info.json
    from flwr.simulation import run_simulation

    from multimed_hf.federated.client_app import make_client_app
    from multimed_hf.federated.local import LocalConfig
    from multimed_hf.federated.modules import record_from_state, state_from_record
    from multimed_hf.federated.report import (
        RUN_INFO,
        FederationReport,
        federated_model_card,
        federation_versions,
        plot_convergence,
        run_settings,
    )
    from multimed_hf.federated.server_app import FederationError, VerticalSettings, make_server_app
    from multimed_hf.federated.strategy import STRATEGIES, make_strategy
    from multimed_hf.training.outputs import run_info, write_json

    names = list(dict.fromkeys([strategy, *compare]))
    unknown = [n for n in names if n not in STRATEGIES]
    if unknown:
        raise ValueError(f"strategies {unknown}: expected names from {STRATEGIES}")
    strategy_options = dict(proximal_mu=proximal_mu, score_weight=score_weight, score_key=score_key,
                            dp_noise_multiplier=dp_noise_multiplier, dp_clipping_norm=dp_clipping_norm,
                            dp_clipping=dp_clipping)
    for name in names:  # a setting a strategy cannot take fails before any data is read
        make_strategy(name, num_clients=1, **strategy_options)
    out = Path(out_dir)
    for key in ("data", "clients", "out_dir"):  # run_info.json: paths that read the same from any folder
        arguments[key] = _local_path(arguments[key]) if key != "out_dir" else str(out.resolve())
    with _replace_earlier_results(out):
        prepared = prepare_federation(data, tasks, out / "federation", partition=partition, clients=clients, by=by,
                                      seed=seed, hidden_size=hidden_size, encoders=encoders,
                                      assemble_kwargs=assemble_kwargs)
    plan, datasets, tasks = prepared.plan, prepared.datasets, prepared.tasks
    model, processor = prepared.model, prepared.processor
    initial = record_from_state(model.state_dict())
    validation = {t: datasets[t]["validation"] for t in tasks if "validation" in datasets[t]}
    evaluate_fn = _central_evaluator(model, processor, validation) if validation else None
    given = {"local_steps": local_steps, "batch_size": batch_size, "lr": lr, "warmup": warmup}
    local = LocalConfig(seed=seed, **{k: v for k, v in given.items() if v is not None})
    result = FederationResult(plan=plan)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": int(num_cpus), "include_dashboard": False}}
    for name in names:
        report = FederationReport(name)
        vertical = VerticalSettings(vertical_steps, vertical_batch, vertical_lr, seed) if name == "blendavg" else None
        server = make_server_app(make_strategy(name, num_clients=len(plan.clients), **strategy_options),
                                 initial, num_rounds=rounds, num_clients=len(plan.clients), local=local,
                                 vertical=vertical, report=report, encoder_of=dict(model.encoder_of),
                                 timeout=timeout, evaluate_fn=evaluate_fn)
        settings = run_settings(name, runtime="Flower simulation", rounds=rounds, local=local, vertical=vertical,
                                seed=seed, **strategy_options)
        clients_info = [asdict(c) for c in plan.clients]
        info = run_info(  # before the rounds: a run that stops early has it too
            command="multimed federate", settings=settings, clients=clients_info, data=_local_path(prepared.data),
            tasks=list(tasks), federation=_local_path(plan.root), strategies=names, arguments=arguments,
            model={"encoders": encoders, "hidden_size": model.config.hidden_size, "fusion": model.config.fusion,
                   "assemble_kwargs": dict(assemble_kwargs or {})})
        info["versions"].update(federation_versions())
        write_json(out / name / RUN_INFO, info)
        client = make_client_app(plan.root, salt=secrets.token_hex(16))
        failure = None
        try:
            run_simulation(server_app=server, client_app=client, num_supernodes=len(plan.clients),
                           backend_config=backend)
        except FederationError as err:
            failure = str(err)
        except (KeyboardInterrupt, SystemExit) as interrupt:  # Ctrl-C; SIGTERM under Ray's handler: sys.exit(15)
            _keep_interrupted(interrupt, server, name, out, result)
            raise
        if failure is None and report.final_arrays is None:
            failure = f"the {name} simulation ended before its last round (see Flower's log above)"
        if failure is not None:
            raise FederationError(failure + report.save_incomplete(out / name, failure))
        paths = report.save(out / name)
        model.load_state_dict(state_from_record(report.final_arrays, model.state_dict()), strict=False)
        model.save_pretrained(out / name / "model")
        processor.save_pretrained(out / name / "model")
        federated_model_card(model.config, report, clients=clients_info, settings=settings, data=prepared.data,
                             tasks=tasks).save(str(out / name / "model" / "README.md"))
        result.reports[name] = report
        result.paths[name] = paths
    result.paths["convergence"] = plot_convergence(result.reports, out / CONVERGENCE)
    return result


def _local_path(value):
    """A path that exists here, made absolute (``run_info.json`` is read from elsewhere than the shell's folder);
    anything else (a Hub id, None) as it is."""
    if value is None or not Path(str(value)).exists():
        return value if value is None else str(value)
    return str(Path(str(value)).resolve())


def _earlier_results(out: Path) -> list[Path]:
    """What an earlier ``run_federation`` wrote in ``out`` beside its client folders: each strategy's folder (one
    holding a report or run_info.json) and the convergence plot."""
    from multimed_hf.federated.report import RUN_INFO
    from multimed_hf.federated.strategy import STRATEGIES

    folders = [out / n for n in STRATEGIES if any((out / n / f).is_file() for f in (RUN_INFO, "report.json"))]
    return folders + ([out / CONVERGENCE] if (out / CONVERGENCE).is_file() else [])


@contextlib.contextmanager
def _replace_earlier_results(out: Path):
    """Around the making of new client folders in ``out``: an earlier run's strategy folders and plot are set aside
    (``.replaced-<name>``), then removed once the new clients are written (a report, model or plot trained on the
    clients those replace, beside the new run's, would read as one run's), or put back where making them fails."""
    aside = [(path, out / f".replaced-{path.name}") for path in _earlier_results(out)]
    if aside:
        logger.warning("federation: replacing an earlier run's results in %s (%s): they were trained on the client "
                       "folders this run replaces", out, ", ".join(p.name for p, _ in aside))
    for path, kept in aside:
        shutil.rmtree(kept, ignore_errors=True) if kept.is_dir() else kept.unlink(missing_ok=True)
        path.rename(kept)
    try:
        yield
    except BaseException:
        for path, kept in aside:
            kept.rename(path)
        raise
    for _, kept in aside:
        shutil.rmtree(kept) if kept.is_dir() else kept.unlink()


def _keep_interrupted(interrupt: BaseException, server, name: str, out: Path, result: FederationResult) -> None:
    """An interrupted simulation of strategy ``name``: stop its rounds (``server.stop``: its thread would otherwise
    wait for clients that never answer, up to ``timeout``, and the process with it), save what they completed and
    the finished strategies' convergence plot, and say what was kept. The caller re-raises the interrupt."""
    from multimed_hf.federated.report import plot_convergence

    server.stop.set()
    if server.started.is_set() and not server.finished.wait(STOP_WAIT_SECONDS):
        logger.warning("federation: the %s rounds did not stop within %g s of the interrupt; saving what they had "
                       "completed so far", name, STOP_WAIT_SECONDS)
    how = "Ctrl-C" if isinstance(interrupt, KeyboardInterrupt) else f"SystemExit({interrupt.code}), e.g. a SIGTERM"
    report = server.report
    completed = max((g["round"] for g in report.global_metrics if g["source"] in ("central", "clients")), default=0)
    kept = [f"{n}/ complete" for n in result.reports]
    saved = report.save_incomplete(out / name, f"interrupted ({how}) after {completed} completed round(s)")
    kept.append(f"{name}/ with {completed} completed round(s) in report.json (no model)" if saved else
                f"{name}/ with run_info.json only (no round completed)")
    if result.reports:
        result.paths["convergence"] = plot_convergence(result.reports, out / CONVERGENCE)
        kept.append(f"{CONVERGENCE} of {', '.join(result.reports)}")
    logger.warning("federation: interrupted (%s) during %s; kept in %s: %s", how, name, out, "; ".join(kept))


def build_parser() -> argparse.ArgumentParser:
    from multimed_hf.federated.local import LocalConfig

    parser = argparse.ArgumentParser(prog="multimed federate", description="Simulate BlendFL (or a baseline) over "
                                     "clients made from built MultiMed configs, with Flower's simulation engine; or, "
                                     "with --export-app, write what a real deployment (SuperLink + SuperNodes) needs.")
    parser.add_argument("--data", default=None, help="a built folder (multimed/) or a Hub dataset id (with "
                        "--clients: the file's 'data' when absent)")
    parser.add_argument("--tasks", nargs="+", default=None, help="task configs, e.g. expression_prediction (with "
                        "--clients: the file's)")
    clients = parser.add_mutually_exclusive_group()
    clients.add_argument("--partition", default=None, help="client kinds and counts made from --data (default "
                         "paired=1,fragmented=1,partial=1)")
    clients.add_argument("--clients", default=None, help="a clients.yaml naming each client's configs, splits and "
                         "held modalities (multimed_hf.federated.clients_file)")
    parser.add_argument("--by", default="patient", help="group rows by: patient (group_id), source, or a column")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategy", default="blendavg", choices=("blendavg", "fedavg", "fedprox"))
    parser.add_argument("--compare", nargs="*", default=["fedavg"], help="baselines run on the same clients")
    parser.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True)
    local = LocalConfig()
    parser.add_argument("--local-steps", type=int, default=None,
                        help=f"optimizer steps per client per round (default {local.local_steps})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"local batch size (default {local.batch_size})")
    parser.add_argument("--lr", type=float, default=None, help=f"local AdamW learning rate (default {local.lr:g})")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up of each round's schedule: a fraction "
                        f"of --local-steps or a number of steps (default {local.warmup:g})")
    parser.add_argument("--hidden-size", type=int, default=FEDERATED_HIDDEN_SIZE,
                        help=f"the initial model's shared size (default {FEDERATED_HIDDEN_SIZE}; 0: the preset's)")
    parser.add_argument("--proximal-mu", type=float, default=0.01)
    parser.add_argument("--score-weight", default="linear", choices=("linear", "squared", "exp"))
    parser.add_argument("--score-key", default="val-score", choices=("val-score", "val-inv-loss"),
                        help="the client metric BlendAvg weights by: the task's headline metric or 1/(1+val loss)")
    parser.add_argument("--vertical-steps", type=int, default=2)
    parser.add_argument("--vertical-batch", type=int, default=8)
    parser.add_argument("--vertical-lr", type=float, default=1e-3)
    parser.add_argument("--dp-noise-multiplier", type=float, default=None, help="central differential privacy "
                        "with Flower's fixed-clipping wrapper (FedAvg / FedProx only): Gaussian noise of std "
                        "multiplier x clipping norm / clients on each aggregate (default: no DP)")
    parser.add_argument("--dp-clipping-norm", type=float, default=1.0, help="L2 norm each client's update is "
                        "clipped to under DP")
    parser.add_argument("--dp-clipping", default="server", choices=("server", "client"),
                        help="who clips the updates under DP: the server, or each client before sending")
    parser.add_argument("--encoders", default="small", help="encoder preset of the initial model (small | hub | FILE)")
    parser.add_argument("--assemble", default=None, help="JSON of extra assemble() arguments, e.g. "
                        "'{\"processor_overrides\": {\"dna\": {\"max_length\": 64}}}'")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the clients of one step")
    parser.add_argument("--num-cpus", type=int, default=1, help="CPUs Ray may use (clients run one per CPU)")
    parser.add_argument("--export-app", default=None, metavar="DIR", help="instead of simulating: write the client "
                        "folders and the initial model under --output-dir/federation and a Flower App in DIR "
                        "(pyproject.toml + README.md with the SuperLink / SuperNode / flwr run commands) for a real "
                        "deployment (multimed_hf.federated.deploy)")
    parser.add_argument("--superlink", default="127.0.0.1:8000", help="with --export-app: the SuperLink address "
                        "the commands use (HOST:PORT)")
    tls = parser.add_argument_group("TLS (with --export-app: all three, or none for --insecure connections)")
    tls.add_argument("--tls-ca", default=None, metavar="CA.crt", help="the CA certificate (PEM) the SuperNodes and "
                     "flwr trust, and the SuperLink's --ssl-ca-certfile")
    tls.add_argument("--tls-cert", default=None, metavar="SERVER.pem", help="the SuperLink's certificate, signed by "
                     "--tls-ca, naming the --superlink host and 127.0.0.1")
    tls.add_argument("--tls-key", default=None, metavar="SERVER.key", help="the SuperLink's private key")
    return parser


def _export(args) -> int:
    from multimed_hf.federated.deploy import export_app

    given = {"strategy": args.strategy, "num-rounds": args.rounds, "local-steps": args.local_steps,
             "batch-size": args.batch_size, "lr": args.lr, "warmup": args.warmup, "proximal-mu": args.proximal_mu,
             "score-key": args.score_key, "score-weight": args.score_weight, "vertical-steps": args.vertical_steps,
             "vertical-batch": args.vertical_batch, "vertical-lr": args.vertical_lr, "timeout": args.timeout,
             "dp-noise-multiplier": args.dp_noise_multiplier, "dp-clipping-norm": args.dp_clipping_norm,
             "dp-clipping": args.dp_clipping}
    exported = export_app(args.export_app, args.output_dir, data=args.data, tasks=args.tasks, clients=args.clients,
                          partition=args.partition or "paired=1,fragmented=1,partial=1", by=args.by, seed=args.seed,
                          hidden_size=args.hidden_size or None, encoders=args.encoders,
                          assemble_kwargs=json.loads(args.assemble) if args.assemble else None,
                          run_config={k: v for k, v in given.items() if v is not None},
                          superlink_address=args.superlink, ssl_ca_certfile=args.tls_ca,
                          ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    print(f"client folders and initial model: {exported.federation_dir}")
    print(f"Flower App: {exported.app_dir} (commands in {exported.app_dir / 'README.md'})")
    return 0


def parse_federate_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``multimed federate`` arguments; a flag that would change nothing in the run asked for, or that the run would
    refuse only once the clients are made, raises ``flags.FederateFlagError`` (``flags.check_federate_flags``)."""
    from multimed_hf.federated.flags import check_federate_flags
    from multimed_hf.training.arguments import flags_named

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    check_federate_flags(args, flags_named(build_parser(), argv, list(vars(args))))
    return args


def federate_main(argv: Sequence[str] | None = None) -> int:
    """``multimed federate ...``: parse, run ``run_federation`` (or ``deploy.export_app``), print where the report
    went."""
    try:
        from multimed_hf.training.arguments import refuse_several_processes

        refuse_several_processes("multimed federate", does="runs every client and the server itself (Flower's "
                                                          "simulation, or the deployment's own processes)")
        args = parse_federate_args(argv)
    except ValueError as error:  # a refused flag: one line, as the other commands say it
        print(f"multimed federate: error: {error}", file=sys.stderr)
        return 2
    from multimed_hf.federated.server_app import FederationError

    try:
        return _export(args) if args.export_app is not None else _federate(args)
    except ValueError as error:  # bad data, clients or partition: the message, not a traceback
        print(f"multimed federate: error: {error}", file=sys.stderr)
        return 2
    except FederationError as error:  # a round that could not complete
        print(f"multimed federate: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: run_federation has said what it kept; 130 = killed by SIGINT
        print("multimed federate: interrupted", file=sys.stderr)
        return 130


def _federate(args) -> int:
    result = run_federation(args.data, args.tasks, args.output_dir, clients=args.clients,
                            partition=args.partition or "paired=1,fragmented=1,partial=1", by=args.by,
                            seed=args.seed, rounds=args.rounds, strategy=args.strategy,
                            compare=[c for c in args.compare if c != args.strategy], local_steps=args.local_steps,
                            batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                            hidden_size=args.hidden_size or None, proximal_mu=args.proximal_mu,
                            score_weight=args.score_weight, score_key=args.score_key,
                            vertical_steps=args.vertical_steps,
                            vertical_batch=args.vertical_batch, vertical_lr=args.vertical_lr,
                            dp_noise_multiplier=args.dp_noise_multiplier, dp_clipping_norm=args.dp_clipping_norm,
                            dp_clipping=args.dp_clipping, encoders=args.encoders,
                            assemble_kwargs=json.loads(args.assemble) if args.assemble else None,
                            timeout=args.timeout, num_cpus=args.num_cpus)
    for name, report in result.reports.items():
        curve = report.curve()
        print(f"{name}: global val-loss by round {[(r, round(v, 4)) for r, v in curve if v is not None]}; "
              f"report in {result.paths[name]['report'].parent}")
    print(f"convergence plot: {result.paths['convergence']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(federate_main())
