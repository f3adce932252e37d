"""The Flower ServerApp of BlendFL: horizontal rounds through a strategy, then relayed vertical steps, then evaluation.

Per round r: ``strategy.configure_train`` -> clients train locally -> ``strategy.aggregate_train`` (BlendAvg, or a
FedAvg/FedProx baseline); then, when fragmented patients were linked, ``vertical_steps`` split-learning steps per
linked pair (``vertical.py``; the server only relays); then ``configure_evaluate`` -> each client evaluates the
global model on its own validation rows with the modalities it holds (decentralised inference), and an optional
central ``evaluate_fn`` (the simulation's view over all validation rows). The loop is Flower's ``Strategy.start``
with the vertical phase added; every message sent and received is described in the report's audit.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Callable

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp

from multimed_hf.federated.local import LocalConfig
from multimed_hf.federated.modules import module_of, payload_bytes
from multimed_hf.federated.report import FederationReport, describe_message
from multimed_hf.federated.strategy import UNIFORM_KEY
from multimed_hf.federated.vertical import EMBEDDING_PREFIX, find_pairs, sample_batch

__all__ = ["VerticalSettings", "FederationError", "FederationInterrupted", "RunConfigError", "RUN_CONFIG_DEFAULTS",
           "read_run_config", "deployment_settings", "make_server_app", "run_rounds", "app"]


class FederationError(RuntimeError):
    """A round that could not complete (a client failed or did not answer in time)."""


class FederationInterrupted(FederationError):
    """The run was told to stop (``stop`` set: Ctrl-C or SIGTERM in a simulation) while it waited for its clients."""


#: The most seconds between two looks for the clients' replies and at the stop event (the in-memory grid of a
#: simulation asks for 0.1; Flower's own deployment grid looks every 3 s).
POLL_SECONDS = 1.0


class RunConfigError(ValueError):
    """A deployment run config (``[tool.flwr.app.config]`` / ``flwr run --run-config``) the ServerApp cannot use."""


@dataclass
class VerticalSettings:
    """Split-learning phase: ``steps`` per linked pair per round (0 = off), ``batch`` linked rows per step, ``lr``
    of each side's plain SGD step (gradient clipped to norm 1, so a step moves the units by at most ``lr``).

    ``lr`` 1e-3, not 1e-2: one step of norm 0.01 on an 8-row batch, nearly all of it in the label side's scRNA
    encoder, raised the global validation loss of the expression sample from 1.38 to 3.15 (the loss is sharp
    along that encoder); at 1e-3 the phase moves it by under 0.1 either way (seeds 0-2)."""

    steps: int = 2
    batch: int = 8
    lr: float = 1e-3
    seed: int = 0


def _client(message: Message) -> tuple[str, str]:
    if message.has_error():
        return str(message.metadata.src_node_id), "?"
    for record in message.content.config_records.values():
        if "client" in record:
            return str(record["client"]), str(record.get("kind", "?"))
    return str(message.metadata.src_node_id), "?"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def error_line(reason: str, limit: int = 500) -> str:
    """A client's error in one line: the last line of the traceback a failed ClientApp sends (Ray wraps the
    exception in its own, with colour codes), which names the exception and its message."""
    lines = [line.strip() for line in _ANSI.sub("", str(reason)).splitlines() if line.strip()]
    last = lines[-1].removesuffix("'>") if lines else str(reason)  # Flower's "<class ...>:<'...'>" wrapping
    return last if len(last) <= limit else last[: limit - 3] + "..."


class _Exchange:
    """send_and_receive with a timeout and a stop event, failure on any missing or error reply, and the audit."""

    def __init__(self, grid: Grid, timeout: float, report: FederationReport, stop: threading.Event | None = None):
        self.grid, self.timeout, self.report = grid, timeout, report
        self.stop = stop if stop is not None else threading.Event()
        self.names: dict[int, str] = {}

    def __call__(self, messages, round_: int, phase: str) -> list[Message]:
        messages = list(messages)
        sent = {m.metadata.dst_node_id: payload_bytes(m.content) for m in messages}
        requests = []  # a node's name is known from its first reply: a request sent before is renamed after it
        for m in messages:
            node = m.metadata.dst_node_id
            requests.append((node, {"round": round_, "phase": phase, "direction": "to_client",
                                    "client": self.names.get(node, node), "message_type": m.metadata.message_type,
                                    "records": describe_message(m.content)}))
            self.report.audit.append(requests[-1][1])
        replies = self._send_and_receive(messages, round_, phase) if messages else []
        errors = [r for r in replies if r.has_error()]
        if errors or len(replies) != len(messages):
            reasons = "; ".join(f"{self._who(r.metadata.src_node_id)}: {error_line(r.error.reason)}" for r in errors)
            missing = sorted(set(sent) - {r.metadata.src_node_id for r in replies})
            if missing:
                reasons = "; ".join([*([reasons] if reasons else []), f"no reply within {self.timeout:g} s from "
                                     + ", ".join(self._who(n) for n in missing)])
            raise FederationError(f"round {round_}, {phase}: {len(replies) - len(errors)} of {len(messages)} clients "
                                  f"answered, {len(errors)} failed, {len(missing)} did not reply ({reasons})")
        for r in replies:
            name, _ = _client(r)
            self.names[r.metadata.src_node_id] = name
            self.report.audit.append({"round": round_, "phase": phase, "direction": "from_client", "client": name,
                                      "message_type": r.metadata.message_type, "records": describe_message(r.content),
                                      "bytes_to_client": sent.get(r.metadata.src_node_id, 0)})
        for node, entry in requests:
            entry["client"] = self.names.get(node, node)
        return replies

    def _send_and_receive(self, messages: list[Message], round_: int, phase: str) -> list[Message]:
        """Flower's ``Grid.send_and_receive``, its wait cut into short slices that also look at ``stop``: an
        interrupted simulation's server thread then ends at once, not when ``timeout`` has passed (the process
        waited up to that long on it after Ctrl-C)."""
        pending = {i for i in self.grid.push_messages(messages) if i}  # a message Flower could not push: no reply
        interval = min(float(getattr(self.grid, "pull_interval", POLL_SECONDS)), POLL_SECONDS)
        end = time.monotonic() + self.timeout
        replies: list[Message] = []
        while pending:
            if self.stop.is_set():
                raise FederationInterrupted(f"round {round_}, {phase}: stopped (interrupted) while waiting for "
                                            f"{len(pending)} of {len(messages)} clients")
            pulled = list(self.grid.pull_messages(pending))
            replies += pulled
            pending -= {r.metadata.reply_to_message_id for r in pulled}
            left = end - time.monotonic()
            if not pending or left <= 0:
                break
            self.stop.wait(min(interval, left))
        return replies

    def _who(self, node: int) -> str:
        """A client by its name where an earlier reply gave it, else by Flower's node id."""
        return f"{self.names[node]} (node {node})" if node in self.names else f"node {node}"


def _wait_for_nodes(grid: Grid, count: int, timeout: float, stop: threading.Event | None = None) -> list[int]:
    start = time.monotonic()
    stop = stop if stop is not None else threading.Event()
    while True:
        if stop.is_set():  # before anything else: a run stopped before it began touches nothing
            raise FederationInterrupted(f"stopped (interrupted) before the rounds began, {count} clients expected")
        if len(nodes := list(grid.get_node_ids())) >= count:
            return sorted(nodes)
        if time.monotonic() - start > timeout:
            raise FederationError(f"{len(nodes)} of {count} clients connected within {timeout:g} s")
        stop.wait(0.2)


def _record(message: Message, report: FederationReport, round_: int, phase: str, sent: int) -> None:
    name, kind = _client(message)
    metrics = {}
    for record in message.content.metric_records.values():
        metrics.update(record)
    modules = []
    for record in message.content.config_records.values():
        modules += str(record.get("modules", "")).split()
    report.add(round_, phase, name, kind, metrics, modules, sent, payload_bytes(message.content))


def _link(exchange: _Exchange, nodes: list[int], round_: int) -> tuple[list[dict], dict[str, int]]:
    messages = [Message(RecordDict({"config": ConfigRecord({"server-round": round_})}), dst_node_id=n,
                        message_type=f"{MessageType.QUERY}.link") for n in nodes]
    links, node_of = {}, {}
    for reply in exchange(messages, round_, "link"):
        record = reply.content.config_records["link"]
        name = str(record["client"])
        node_of[name] = reply.metadata.src_node_id
        entry = {"labelled": {}, "lacking": {}, "fragments": {}, "modalities": {}, "holds": {}}
        for key, value in record.items():
            section, _, task = key.partition(".")
            if section in entry and task:
                entry[section][task] = list(value)
        links[name] = entry
    return find_pairs(links), node_of


def _subset(arrays: ArrayRecord, units, keep: bool) -> ArrayRecord:
    units = set(units)
    return ArrayRecord({k: v for k, v in arrays.items() if (module_of(k) in units) == keep})


def _vertical(exchange: _Exchange, arrays: ArrayRecord, pairs: list[dict], node_of: dict, settings: VerticalSettings,
              round_: int, report: FederationReport, encoder_of: dict) -> ArrayRecord:
    arrays = ArrayRecord(dict(arrays.items()))
    for p, pair in enumerate(pairs):
        task, label_node, frag_node = pair["task"], node_of[pair["label_client"]], node_of[pair["fragment_client"]]
        units = [u for m in pair["modalities"] for u in (f"encoders.{encoder_of.get(m, m)}", f"projections.{m}")]
        for step in range(settings.steps):
            seed = settings.seed * 1_000_003 + round_ * 1009 + p * 101 + step
            ids = sample_batch(pair["ids"], settings.batch, seed)
            config = ConfigRecord({"task": task, "ids": ids, "modalities": pair["modalities"], "seed": seed,
                                   "vertical-lr": settings.lr, "server-round": round_})
            ask = Message(RecordDict({"arrays": _subset(arrays, units, True), "config": config}),
                          dst_node_id=frag_node, message_type=f"{MessageType.QUERY}.embed")
            (embedded,) = exchange([ask], round_, "vertical-embed")
            _record(embedded, report, round_, "vertical-embed", payload_bytes(ask.content))
            embeddings = ArrayRecord({k: v for k, v in embedded.content.array_records["arrays"].items()
                                      if k.startswith(EMBEDDING_PREFIX)})
            train = Message(RecordDict({"arrays": _subset(arrays, units, False), "embeddings": embeddings,
                                        "config": config}), dst_node_id=label_node,
                            message_type=f"{MessageType.TRAIN}.vertical")
            (trained,) = exchange([train], round_, "vertical-train")
            _record(trained, report, round_, "vertical-train", payload_bytes(train.content))
            for key, value in trained.content.array_records["arrays"].items():
                arrays[key] = value
            back = Message(RecordDict({"arrays": _subset(arrays, units, True),
                                       "gradients": trained.content.array_records["gradients"], "config": config}),
                           dst_node_id=frag_node, message_type=f"{MessageType.TRAIN}.vertical_backward")
            (updated,) = exchange([back], round_, "vertical-backward")
            _record(updated, report, round_, "vertical-backward", payload_bytes(back.content))
            for key, value in updated.content.array_records["arrays"].items():
                arrays[key] = value
    return arrays


def _evaluate(exchange: _Exchange, strategy, arrays: ArrayRecord, round_: int, grid: Grid,
              report: FederationReport) -> None:
    """Every client evaluates ``arrays`` on its validation rows; the weighted mean is the round's ``clients``
    global metric."""
    messages = list(strategy.configure_evaluate(round_, arrays, ConfigRecord(), grid))
    sent = {m.metadata.dst_node_id: payload_bytes(m.content) for m in messages}
    replies = exchange(messages, round_, "evaluate")
    for reply in replies:
        _record(reply, report, round_, "evaluate", sent[reply.metadata.src_node_id])
    report.add_global(round_, "clients", _weighted(replies))


def run_rounds(grid: Grid, strategy, initial_arrays: ArrayRecord, *, num_rounds: int, num_clients: int,
               local: LocalConfig, vertical: VerticalSettings | None, report: FederationReport,
               encoder_of: dict | None = None, timeout: float = 600.0,
               evaluate_fn: Callable[[int, ArrayRecord], dict] | None = None,
               evaluate_initial: bool = False, stop: threading.Event | None = None) -> ArrayRecord:
    """The BlendFL loop (module doc); returns the final global arrays (also ``report.final_arrays``).

    ``evaluate_initial``: the clients also evaluate the initial model (round 0 of the ``clients`` curve: the only
    view of the starting point a deployment has, where no ``evaluate_fn`` sees all validation rows). ``stop``: once
    set, the next wait for the clients raises ``FederationInterrupted`` within a second (what the simulation sets
    when it is interrupted)."""
    exchange = _Exchange(grid, timeout, report, stop)
    nodes = _wait_for_nodes(grid, num_clients, timeout, stop)
    arrays = initial_arrays
    if evaluate_fn is not None:
        report.add_global(0, "central", evaluate_fn(0, arrays))
    if evaluate_initial:
        _evaluate(exchange, strategy, arrays, 0, grid, report)
    pairs, node_of = ([], {})
    if vertical is not None and vertical.steps > 0:
        pairs, node_of = _link(exchange, nodes, 0)
    for round_ in range(1, num_rounds + 1):
        train_config = ConfigRecord(local.to_record())
        messages = list(strategy.configure_train(round_, arrays, train_config, grid))
        sent = {m.metadata.dst_node_id: payload_bytes(m.content) for m in messages}
        replies = exchange(messages, round_, "train")
        for reply in replies:
            _record(reply, report, round_, "train", sent[reply.metadata.src_node_id])
        aggregated, metrics = strategy.aggregate_train(round_, replies)
        if aggregated is None:
            raise FederationError(f"round {round_}: the strategy aggregated nothing")
        arrays = aggregated
        for unit, weights in getattr(strategy, "last_weights", {}).items():
            report.weights.append({"round": round_, "unit": unit, "weights": dict(weights)})
        if pairs:
            if evaluate_fn is not None:  # what the vertical phase then changes, seen apart
                report.add_global(round_, "central-horizontal", evaluate_fn(round_, arrays))
            arrays = _vertical(exchange, arrays, pairs, node_of, vertical, round_, report, encoder_of or {})
        _evaluate(exchange, strategy, arrays, round_, grid, report)
        if evaluate_fn is not None:
            report.add_global(round_, "central", evaluate_fn(round_, arrays))
    report.final_arrays = arrays
    return arrays


def _weighted(replies) -> dict:
    sums, weights = {}, {}
    for reply in replies:
        record = reply.content.metric_records["metrics"]
        n = float(record.get("num-examples", 0))
        for key, value in record.items():
            if key not in ("num-examples", UNIFORM_KEY) and isinstance(value, (int, float)) \
                    and not math.isnan(float(value)) and n > 0:
                sums[key] = sums.get(key, 0.0) + n * float(value)
                weights[key] = weights.get(key, 0.0) + n
    return {k: sums[k] / weights[k] for k in sums}


def make_server_app(strategy, initial_arrays: ArrayRecord, *, num_rounds: int, num_clients: int,
                    local: LocalConfig | None = None, vertical: VerticalSettings | None = None,
                    report: FederationReport | None = None, encoder_of: dict | None = None, timeout: float = 600.0,
                    evaluate_fn: Callable | None = None) -> ServerApp:
    """A ServerApp running ``run_rounds``; pass ``report`` to read the results once the run ends (simulation).
    Setting ``app.stop`` ends its rounds at their next wait for the clients; ``app.started`` / ``app.finished``
    are set once its main has begun / returned or raised (the simulation runs it in a thread of its own)."""
    app = ServerApp()
    report = report if report is not None else FederationReport(type(strategy).__name__)
    app.stop, app.started, app.finished = threading.Event(), threading.Event(), threading.Event()

    @app.main()
    def main(grid: Grid, context) -> None:
        app.started.set()
        try:
            run_rounds(grid, strategy, initial_arrays, num_rounds=num_rounds, num_clients=num_clients,
                       local=local or LocalConfig(), vertical=vertical, report=report, encoder_of=encoder_of,
                       timeout=timeout, evaluate_fn=evaluate_fn, stop=app.stop)
        finally:
            app.finished.set()

    app.report = report
    return app


#: The deployment ServerApp's run config (``[tool.flwr.app.config]`` of the Flower App, ``flwr run --run-config``):
#: every key it reads, with its default. ``model-path`` (the agreed initial model + processor folder) has none and
#: must be given; ``dp-noise-multiplier`` (Flower's central DP for the baselines) is off unless given. The local
#: settings are ``LocalConfig``'s keys; ``proximal-mu`` is FedProx's (the strategy sends it to the clients),
#: ``seed`` seeds both the local runs and the vertical batches.
RUN_CONFIG_DEFAULTS = {
    "output-dir": "federated-run", "strategy": "blendavg", "num-clients": 2, "num-rounds": 3, "timeout": 600.0,
    "evaluate-initial": True, "score-key": "val-score", "score-weight": "linear", "proximal-mu": 0.01,
    "vertical-steps": VerticalSettings.steps, "vertical-batch": VerticalSettings.batch,
    "vertical-lr": VerticalSettings.lr, "dp-clipping-norm": 1.0, "dp-clipping": "server",
    **{k: v for k, v in LocalConfig().to_record().items() if k != "proximal-mu"},
}
_REQUIRED, _OPTIONAL = ("model-path",), {"dp-noise-multiplier": float}


def read_run_config(run_config) -> dict:
    """The run config with every default filled in and each value of its default's type; raises
    ``RunConfigError`` on an unknown key (a typo would otherwise be ignored silently) or a missing ``model-path``."""
    config = dict(run_config)
    known = set(RUN_CONFIG_DEFAULTS) | set(_REQUIRED) | set(_OPTIONAL)
    unknown = sorted(set(config) - known)
    if unknown:
        raise RunConfigError(f"run config keys {unknown} are not read by the multimed ServerApp; expected keys from "
                             f"{sorted(known)}")
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise RunConfigError(f"run config has no {missing[0]!r} (the initial model + processor folder every client "
                             f"also holds); set it in [tool.flwr.app.config] or flwr run --run-config")
    out = {}
    for key, value in {**RUN_CONFIG_DEFAULTS, **config}.items():
        kind = type(RUN_CONFIG_DEFAULTS[key]) if key in RUN_CONFIG_DEFAULTS else _OPTIONAL.get(key, str)
        if kind is bool and not isinstance(value, bool):
            raise RunConfigError(f"run config {key!r} = {value!r}: expected true or false")
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise RunConfigError(f"run config {key!r} = {value!r}: expected a whole number")
        try:
            out[key] = kind(value)
        except (TypeError, ValueError):
            raise RunConfigError(f"run config {key!r} = {value!r}: expected a {kind.__name__}") from None
    _check_ranges(out)
    return out


def _check_ranges(config: dict) -> None:
    """The ranges ``multimed federate`` checks its flags against (``flags.BOUNDS``), on a run config's values, and
    the clients it waits for (at least one)."""
    from multimed_hf.federated.flags import BOUNDS, out_of_bounds

    for dest, (key, *_) in BOUNDS.items():
        why = out_of_bounds(dest, config.get(key), f"run config {key!r} =") if key is not None else None
        if why is not None:
            raise RunConfigError(why)
    if config["num-clients"] < 1:
        raise RunConfigError(f"run config 'num-clients' = {config['num-clients']}: expected an integer >= 1")


def deployment_settings(config: dict):
    """(strategy, ``LocalConfig``, ``VerticalSettings`` or None) of a ``read_run_config`` result. The local
    settings carry no proximal term: ``proximal-mu`` is FedProx's, whose ``configure_train`` sends it itself (read
    into ``LocalConfig`` it would add the term under every strategy)."""
    from multimed_hf.federated.strategy import make_strategy

    name = config["strategy"]
    strategy = make_strategy(name, num_clients=config["num-clients"], proximal_mu=config["proximal-mu"],
                             score_key=config["score-key"], score_weight=config["score-weight"],
                             dp_noise_multiplier=config.get("dp-noise-multiplier"),
                             dp_clipping_norm=config["dp-clipping-norm"], dp_clipping=config["dp-clipping"])
    vertical = VerticalSettings(config["vertical-steps"], config["vertical-batch"], config["vertical-lr"],
                                config["seed"]) if name == "blendavg" else None
    return strategy, LocalConfig.from_record(config, proximal_mu=0.0), vertical


def _deployment_main(grid: Grid, context) -> None:
    """``flwr run`` on a SuperLink: every setting from the run config (``RUN_CONFIG_DEFAULTS``). Writes the report,
    a convergence plot of the clients' weighted validation loss, ``run_info.json`` (the settings, the clients as
    they reported, versions) and the final model + processor with its card to ``output-dir`` (a path on the
    SuperLink's machine)."""
    from pathlib import Path

    from multimed_hf.federated.modules import record_from_state, state_from_record
    from multimed_hf.federated.report import (
        RUN_INFO,
        federated_model_card,
        federation_versions,
        plot_convergence,
        run_settings,
    )
    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.training.outputs import run_info, write_json

    config = read_run_config(context.run_config)
    model_path = Path(config["model-path"])
    model, processor = MultiMedModel.from_pretrained(model_path), MultiMedProcessor.from_pretrained(model_path)
    name = config["strategy"]
    strategy, local, vertical = deployment_settings(config)
    report = FederationReport(name)
    out = Path(config["output-dir"])
    try:
        final = run_rounds(grid, strategy, record_from_state(model.state_dict()), num_rounds=config["num-rounds"],
                           num_clients=config["num-clients"], local=local, vertical=vertical, report=report,
                           encoder_of=dict(model.encoder_of), timeout=config["timeout"],
                           evaluate_initial=config["evaluate-initial"])
    except FederationError as err:  # the rounds completed are kept, as in a simulation
        raise FederationError(f"{err}{report.save_incomplete(out, str(err))}") from None
    report.save(out)
    plot_convergence({name: report}, out / "convergence.png", source="clients")
    model.load_state_dict(state_from_record(final, model.state_dict()), strict=False)
    model.save_pretrained(out / "model")
    processor.save_pretrained(out / "model")
    clients = _reported_clients(report)
    settings = run_settings(name, runtime="Flower deployment", rounds=config["num-rounds"], local=local,
                            vertical=vertical, seed=config["seed"], proximal_mu=config["proximal-mu"],
                            score_key=config["score-key"], score_weight=config["score-weight"],
                            dp_noise_multiplier=config.get("dp-noise-multiplier"),
                            dp_clipping_norm=config["dp-clipping-norm"], dp_clipping=config["dp-clipping"])
    info = run_info(command="flwr run (multimed_hf.federated.server_app:app)", settings=settings, clients=clients,
                    run_config=config)
    info["versions"].update(federation_versions())
    write_json(out / RUN_INFO, info)
    federated_model_card(model.config, report, clients=clients, settings=settings,
                         tasks=list(model.config.heads)).save(str(out / "model" / "README.md"))


def _reported_clients(report: FederationReport) -> list[dict]:
    """The clients as a deployment's server knows them: name, kind and the training rows each last reported."""
    clients = {}
    for record in report.records:
        if record["phase"] == "train":
            clients[record["client"]] = {"name": record["client"], "kind": record["kind"],
                                         "num_examples": record["metrics"].get("num-examples")}
    return [clients[c] for c in sorted(clients)]


#: For ``flwr run`` on a SuperLink (``[tool.flwr.app.components] serverapp``): settings from the run config.
app = ServerApp()
app.main()(_deployment_main)
