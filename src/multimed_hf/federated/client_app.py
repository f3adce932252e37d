"""The Flower ClientApp: one hospital's local training, evaluation and split-learning steps on its own rows.

Where a client finds its things: node config ``data-path`` (its folder, as ``partition.py`` writes it),
``model-path`` (the initial model + processor folder, ``save_pretrained``) and ``link-salt`` (the secret shared by
the clients, ``vertical.py``) — what a deployment passes with ``flower-supernode --node-config "data-path='...'
model-path='...' link-salt='...'"``. In the simulation, ``make_client_app(federation_dir)`` finds them from the
plan and the node's ``partition-id``. The modalities a client holds are read from its rows (presence), never
declared: a column that is None is a modality the row lacks. Under a SuperNode every message runs in a fresh
``flwr-clientapp`` process, so the client reloads its rows and the model per message (``_Local`` caches them only
within one process: the simulation's); ``deploy.py`` writes the commands.

Local training is ``local.train_local`` (our ``MultiMedTrainer`` for ``local-steps`` steps) unless
``make_client_app(local_trainer=...)`` gives another. When the server wraps its strategy in Flower's client-side
DP clipping, the train handler clips its own update (``clip_when_asked``).

Every reply holds only: an ArrayRecord of model parameters (or embeddings / gradients in vertical steps), a
MetricRecord of numbers, and a ConfigRecord ``report`` naming the client, its kind and the units it trained.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, NamedTuple

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from multimed_hf.federated.local import LocalConfig, evaluate_local, train_local
from multimed_hf.federated.modules import record_from_state, state_from_record
from multimed_hf.federated.partition import PLAN_FILE, FederationPlan, load_client_data
from multimed_hf.federated.strategy import SEND_KEY, UNIFORM_KEY
from multimed_hf.federated.vertical import (
    EMBEDDING_PREFIX,
    GRADIENT_PREFIX,
    backward_fragments,
    embed_fragments,
    link_digests,
    train_on_embeddings,
)

__all__ = ["make_client_app", "clip_when_asked", "ClientSetupError", "INITIAL_MODEL_DIR", "TRAIN_METRIC_KEYS"]

#: Folder of the initial model + processor inside a federation folder.
INITIAL_MODEL_DIR = "initial"
#: The MetricRecord keys of every train reply (the same for every client, as Flower's FedAvg requires).
TRAIN_METRIC_KEYS = ("num-examples", "train-loss", "val-loss", "val-score", "val-inv-loss", "num-val-examples",
                     UNIFORM_KEY)


class ClientSetupError(ValueError):
    """A client that cannot find its data or model."""


class _Local:
    """What one client process keeps between messages: its rows, its model and processor (loaded once)."""

    cache: dict = {}

    @classmethod
    def get(cls, data_path: Path, model_path: Path):
        key = (str(data_path), str(model_path))
        if key not in cls.cache:
            from multimed_hf.modeling_multimed import MultiMedModel
            from multimed_hf.processing_multimed import MultiMedProcessor

            if not model_path.is_dir():
                raise ClientSetupError(f"model-path {model_path} is not a folder with the initial model "
                                       f"(save_pretrained of MultiMedModel + MultiMedProcessor)")
            model = MultiMedModel.from_pretrained(model_path)
            processor = MultiMedProcessor.from_pretrained(model_path)
            cls.cache[key] = (load_client_data(data_path), model, processor)
        return cls.cache[key]


def _where(context: Context, federation_dir: str | None) -> tuple[Path, Path, str, str]:
    """(data path, model path, client name, client kind) of this node."""
    config = context.node_config
    if "data-path" in config:
        data = Path(str(config["data-path"]))
        root = data.parent.parent
    elif federation_dir is not None:
        plan = FederationPlan.load(federation_dir)
        pid = int(config.get("partition-id", -1))
        if not 0 <= pid < len(plan.clients):
            raise ClientSetupError(f"partition-id {pid} is not a client of {federation_dir} "
                                   f"({len(plan.clients)} clients)")
        data, root = plan.client_dir(pid), Path(federation_dir)
    else:
        raise ClientSetupError("node config has no 'data-path' and the ClientApp was made without a federation "
                               "folder; start the SuperNode with --node-config \"data-path='...'\"")
    model = Path(str(config.get("model-path", root / INITIAL_MODEL_DIR)))
    kind = "unknown"
    if (root / PLAN_FILE).is_file():
        kinds = {c["name"]: c["kind"] for c in json.loads((root / PLAN_FILE).read_text())["clients"]}
        kind = kinds.get(data.name, kind)
    return data, model, data.name, kind


def _split(data: dict, split: str) -> dict:
    return {t: splits[split] for t, splits in data.items() if split in splits and len(splits[split])}


def _report(name: str, kind: str, modules=()) -> ConfigRecord:
    # one space-separated string: Flower 1.42's ConfigRecord.count_bytes fails on an empty list
    return ConfigRecord({"client": name, "kind": kind, "modules": " ".join(sorted(modules))})


class _Call(NamedTuple):
    """What every handler starts from: this client's rows, its model (the received arrays loaded), processor,
    name and kind, and the message's ``config`` record."""

    data: dict
    model: object
    processor: object
    name: str
    kind: str
    config: ConfigRecord


def make_client_app(federation_dir: str | os.PathLike | None = None, *, local_trainer: Callable = train_local,
                    salt: str | None = None) -> ClientApp:
    """A ClientApp for the clients of ``federation_dir`` (simulation) or of node configs (deployment).

    ``local_trainer``: the local training loop (``local.LocalTrainer``); ``salt``: the link salt when the node
    config gives none.
    """
    federation_dir = None if federation_dir is None else str(federation_dir)
    app = ClientApp()

    def start(message: Message, context: Context) -> _Call:
        """This node's data and model, with the message's ``arrays`` (when it carries some) loaded."""
        data_path, model_path, name, kind = _where(context, federation_dir)
        data, model, processor = _Local.get(data_path, model_path)
        if "arrays" in message.content.array_records:
            state = model.state_dict()
            model.load_state_dict(state_from_record(message.content.array_records["arrays"], state), strict=False)
        config = message.content.config_records.get("config", ConfigRecord())
        return _Call(data, model, processor, name, kind, config)

    def link_salt(context) -> str:
        value = context.node_config.get("link-salt", salt)
        if not value:
            raise ClientSetupError("no link salt: give the clients node config link-salt='<shared secret>'")
        return str(value)

    def reply(message: Message, call: _Call, modules=(), **records) -> Message:
        """A reply holding ``records`` and the ``report`` record (this client, its kind, ``modules`` it trained)."""
        return Message(RecordDict({**records, "report": _report(call.name, call.kind, modules)}), reply_to=message)

    @app.train(mods=[clip_when_asked])
    def train(message: Message, context: Context) -> Message:
        call = start(message, context)
        global_state = {k: v.detach().clone() for k, v in call.model.state_dict().items()}
        local = LocalConfig.from_record(call.config)
        local.seed = local.seed * 1000 + int(call.config.get("server-round", 0))
        result = local_trainer(call.model, _split(call.data, "train"), call.processor, local,
                               global_state=global_state)
        scores = evaluate_local(call.model, _split(call.data, "validation"), call.processor,
                                batch_size=local.batch_size)
        metrics = {**result.metrics, **{k: v for k, v in scores.items() if "/" not in k}, UNIFORM_KEY: 1}
        send = result.trained if str(call.config.get(SEND_KEY, "all")) == "trained" else None
        return reply(message, call, result.trained, arrays=record_from_state(call.model.state_dict(), send),
                     metrics=MetricRecord({k: metrics[k] for k in TRAIN_METRIC_KEYS}))

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        call = start(message, context)
        scores = evaluate_local(call.model, _split(call.data, "validation"), call.processor)
        metrics = MetricRecord({"num-examples": scores["num-val-examples"], "val-loss": scores["val-loss"],
                                "val-score": scores["val-score"], "val-inv-loss": scores["val-inv-loss"],
                                UNIFORM_KEY: 1})
        return reply(message, call, metrics=metrics)

    @app.query("link")
    def link(message: Message, context: Context) -> Message:
        from multimed_hf.training.loading import modality_counts

        call = start(message, context)
        secret = link_salt(context)
        record = ConfigRecord({"client": call.name, "kind": call.kind})
        for task, splits in call.data.items():
            heads = call.model.config.heads
            modalities = heads[task]["modalities"] if task in heads else []
            if "train" in splits and len(splits["train"]):
                lacking = _lacking_modalities(splits["train"], task, modalities)
                rows = [(d, " ".join(lacks)) for d, lacks in zip(link_digests(splits["train"], secret), lacking)
                        if lacks]
                if rows:  # (no empty lists: see _report); "lacking": what each row lacks, for vertical.find_pairs
                    record[f"labelled.{task}"] = [d for d, _ in rows]
                    record[f"lacking.{task}"] = [lacks for _, lacks in rows]
            if "fragments" in splits and len(splits["fragments"]):
                frag = splits["fragments"]
                counts = modality_counts(frag, task)
                record[f"fragments.{task}"] = link_digests(frag, secret)
                held = [m for m in modalities if counts.get(m, 0) == len(frag)]
                if held:
                    record[f"modalities.{task}"] = held
                # what each fragment holds ("holds"), for fragments of different modalities (med_vqa's images)
                record[f"holds.{task}"] = [" ".join(m for m in modalities if m not in lacks)
                                           for lacks in _lacking_modalities(frag, task, modalities)]
        return Message(RecordDict({"link": record}), reply_to=message)  # the record names the client itself

    @app.query("embed")
    def embed(message: Message, context: Context) -> Message:
        call = start(message, context)
        task, ids, modalities = str(call.config["task"]), list(call.config["ids"]), list(call.config["modalities"])
        out = embed_fragments(call.model, call.processor, call.data[task]["fragments"], task, modalities, ids,
                              salt=link_salt(context), seed=int(call.config["seed"]))
        return reply(message, call, arrays=_prefixed(out, EMBEDDING_PREFIX),
                     metrics=MetricRecord({"num-examples": len(ids)}))

    @app.train("vertical")
    def vertical(message: Message, context: Context) -> Message:
        call = start(message, context)
        embeddings = _unprefixed(message.content.array_records["embeddings"], EMBEDDING_PREFIX)
        task, ids = str(call.config["task"]), list(call.config["ids"])
        grads, loss, trained = train_on_embeddings(call.model, call.processor, call.data[task]["train"], task, ids,
                                                   embeddings, salt=link_salt(context),
                                                   lr=float(call.config["vertical-lr"]))
        return reply(message, call, trained, arrays=record_from_state(call.model.state_dict(), trained),
                     gradients=_prefixed(grads, GRADIENT_PREFIX),
                     metrics=MetricRecord({"num-examples": len(ids), "vertical-loss": loss}))

    @app.train("vertical_backward")
    def vertical_backward(message: Message, context: Context) -> Message:
        call = start(message, context)
        grads = _unprefixed(message.content.array_records["gradients"], GRADIENT_PREFIX)
        task, ids = str(call.config["task"]), list(call.config["ids"])
        trained = backward_fragments(call.model, call.processor, call.data[task]["fragments"], task, list(grads),
                                     ids, grads, salt=link_salt(context), seed=int(call.config["seed"]),
                                     lr=float(call.config["vertical-lr"]))
        return reply(message, call, trained, arrays=record_from_state(call.model.state_dict(), trained),
                     metrics=MetricRecord({"num-examples": len(ids)}))

    return app


def clip_when_asked(message: Message, context: Context, call_next) -> Message:
    """Flower's ``fixedclipping_mod`` (client-side DP clipping of this reply's update) when the server's train
    config carries a clipping norm (``DifferentialPrivacyClientSideFixedClipping``); otherwise the reply as is."""
    from flwr.clientapp.mod import fixedclipping_mod
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    if any(KEY_CLIPPING_NORM in record for record in message.content.config_records.values()):
        return fixedclipping_mod(message, context, call_next)
    return call_next(message, context)


def _prefixed(values: dict, prefix: str) -> ArrayRecord:
    """``{modality: array}`` -> an ArrayRecord of float32 arrays named ``<prefix><modality>``."""
    import numpy as np
    from flwr.app import Array

    return ArrayRecord({f"{prefix}{m}": Array(np.ascontiguousarray(v, dtype=np.float32)) for m, v in values.items()})


def _unprefixed(record: ArrayRecord, prefix: str) -> dict:
    """The inverse of ``_prefixed``: ``{modality: numpy array}``."""
    return {k[len(prefix):]: v.numpy() for k, v in record.items() if k.startswith(prefix)}


def _lacking_modalities(dataset, task: str, modalities) -> list[list[str]]:
    """Per row, which of ``modalities`` it lacks (a row lacking one is a candidate for a fragment held elsewhere)."""
    from multimed_hf.federated.partition import holds_modality

    held = {m: holds_modality(dataset, task, m) for m in modalities}
    return [[m for m in modalities if not held[m][i]] for i in range(len(dataset))]


#: For ``flwr run`` / SuperNode deployments: every setting from the node config.
app = make_client_app()
