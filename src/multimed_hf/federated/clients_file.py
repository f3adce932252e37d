"""A ``clients.yaml`` naming each client's configs, splits and held modalities -> the client folders of a federation.

The declarative twin of ``partition.partition_config`` (same folders, same ``federation.json``), for federations a
partition rule does not describe: each client names, per task config, the rows it holds (``datasets`` split
strings, slices included: ``train[:40%]``), the modalities it collected (the others are blanked, rows left with
none are dropped: a warning says how many, ``ClientSpec.left_out`` records them) and, optionally, unlabelled
*fragments* (rows whose other modalities and label another client holds: the vertical phase links them by salted
``sample_id`` digests)::

    data: ../multimed                 # built folder or Hub id (relative to this file); --data when absent
    clients:
      - name: clinic                  # unique; letters, digits, '.', '_' and '-'
        kind: fragmented              # optional report label (paired | fragmented | partial); default: paired
                                      # when it holds every modality of its tasks, else partial
        tasks:
          expression_prediction:
            modalities: [scrna]       # default: all of the task's
            train: train[:50%]        # default: train
            validation: validation[:50%]   # default: validation; null = none
      - name: genome-centre
        data: ../other/multimed       # optional: this client's own built folder
        tasks:
          expression_prediction:
            modalities: [dna]
            train: train[50%:]
            validation: validation[50%:]
            fragments: train[:50%]    # the clinic's patients' DNA, without labels

Rows are not checked against other clients: two clients naming overlapping slices hold the same patients, as the
file says (``partition_config`` is the tool that keeps patients apart).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from multimed_hf.federated.partition import (
    CLIENT_KINDS,
    FRAGMENTS,
    ClientSpec,
    FederationPlan,
    PartitionError,
    _blank,
    holds_modality,
    replace_earlier_clients,
    warn_empty_splits,
    warn_left_out,
    write_rows,
)
from multimed_hf.tasks import get_task

__all__ = ["ClientsFileError", "read_clients_file", "clients_from_file", "CLIENT_KEYS", "TASK_KEYS"]

#: Keys a client entry may have, and keys of one of its tasks.
CLIENT_KEYS = ("name", "kind", "data", "tasks")
TASK_KEYS = ("modalities", "train", "validation", "fragments")
_ROLES = ("train", "validation", FRAGMENTS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ClientsFileError(PartitionError):
    """A clients file that does not say what a federation needs."""


def _where(path: Path, *fields: Any) -> str:
    return f"{path}: " + ".".join(str(f) for f in fields)


def read_clients_file(path: str | os.PathLike, data: str | os.PathLike | None = None) -> tuple[str, list[dict]]:
    """(data folder, checked client entries) of a clients file; ``data`` is used when the file names none."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ClientsFileError(f"clients file {path} does not exist")
    body = yaml.safe_load(path.read_text())
    if not isinstance(body, Mapping) or not isinstance(body.get("clients"), list) or not body["clients"]:
        raise ClientsFileError(f"{path}: expected a mapping with a non-empty list under 'clients', got "
                               f"{type(body).__name__}")
    unknown = sorted(set(body) - {"data", "clients"})
    if unknown:
        raise ClientsFileError(f"{path}: unknown top-level keys {unknown}; expected 'data' and 'clients'")
    base = path.parent
    top = _resolve(body["data"], base) if body.get("data") else data
    if top is None:
        raise ClientsFileError(f"{path}: no 'data' (a built folder or Hub id) in the file and none given (--data)")
    entries, names = [], set()
    for i, client in enumerate(body["clients"]):
        if not isinstance(client, Mapping):
            raise ClientsFileError(f"{_where(path, 'clients', i)}: expected a mapping, got {type(client).__name__}")
        unknown = sorted(set(client) - set(CLIENT_KEYS))
        if unknown:
            raise ClientsFileError(f"{_where(path, 'clients', i)}: unknown keys {unknown}; expected {CLIENT_KEYS}")
        name = str(client.get("name", ""))
        if not _NAME.match(name) or name in names:
            raise ClientsFileError(f"{_where(path, 'clients', i, 'name')}: {name!r} is empty, repeated or not made of "
                                   f"letters, digits, '.', '_' and '-'")
        names.add(name)
        kind = client.get("kind")
        if kind is not None and kind not in CLIENT_KINDS:
            raise ClientsFileError(f"{_where(path, name, 'kind')}: {kind!r} is not one of {CLIENT_KINDS}")
        tasks = client.get("tasks")
        if not isinstance(tasks, Mapping) or not tasks:
            raise ClientsFileError(f"{_where(path, name, 'tasks')}: expected a mapping task -> settings, got {tasks!r}")
        checked = {}
        for task, settings in tasks.items():
            spec = get_task(task)
            settings = dict(settings or {})
            unknown = sorted(set(settings) - set(TASK_KEYS))
            if unknown:
                raise ClientsFileError(f"{_where(path, name, task)}: unknown keys {unknown}; expected {TASK_KEYS}")
            modalities = list(settings.get("modalities") or spec.modalities)
            wrong = sorted(set(modalities) - set(spec.modalities))
            if wrong:
                raise ClientsFileError(f"{_where(path, name, task, 'modalities')}: {wrong} are not modalities of "
                                       f"{task!r} ({list(spec.modalities)})")
            splits = {"train": settings.get("train", "train"), "validation": settings.get("validation", "validation"),
                      FRAGMENTS: settings.get(FRAGMENTS)}
            checked[task] = {"modalities": modalities, "splits": {r: str(v) for r, v in splits.items() if v}}
        own = client.get("data")
        entries.append({"name": name, "kind": kind, "tasks": checked,
                        "data": str(_resolve(own, base) if own else top)})
    return str(top), entries


def _resolve(data, base: Path):
    """A relative path named in the file is read from the file's folder when it exists there; else (a Hub id) it
    stays as it is."""
    candidate = base / str(data)
    return candidate if not Path(str(data)).is_absolute() and candidate.exists() else data


def _load(data: str, task: str, split: str, where: str):
    from datasets import load_dataset

    try:
        return load_dataset(str(data), task, split=split)
    except (ValueError, KeyError) as err:
        raise ClientsFileError(f"{where}: cannot load split {split!r} of config {task!r} from {data!r}: {err}") from err


def _held_rows(dataset, task: str, modalities: list[str], labels: bool):
    """(rows blanked to ``modalities`` (and without labels when ``labels`` is False), rows left with none dropped;
    how many were dropped)."""
    dropped = [m for m in get_task(task).modalities if m not in modalities]
    part = _blank(dataset, task, dropped, labels=not labels) if dropped or not labels else dataset
    keep = np.zeros(len(part), bool)
    for m in modalities:
        keep |= holds_modality(part, task, m)
    return part.select(np.flatnonzero(keep)), int((~keep).sum())


def clients_from_file(path: str | os.PathLike, out_dir: str | os.PathLike, *,
                      data: str | os.PathLike | None = None, seed: int = 0) -> FederationPlan:
    """Write the client folders a clients file describes under ``out_dir``; return the plan (also saved)."""
    top, entries = read_clients_file(path, data)
    root = Path(out_dir)
    with replace_earlier_clients(root):
        clients, tasks = [], []
        for pid, entry in enumerate(entries):
            name = entry["name"]
            client = ClientSpec(name=name, kind=entry["kind"] or "paired", partition_id=pid)
            complete = True
            for task, settings in entry["tasks"].items():
                tasks.append(task)
                client.modalities[task] = settings["modalities"]
                complete &= set(settings["modalities"]) == set(get_task(task).modalities)
                folder = root / "clients" / name / task
                folder.mkdir(parents=True, exist_ok=True)
                for role, split in settings["splits"].items():
                    rows = _load(entry["data"], task, split, _where(Path(path), name, task, role))
                    rows, left_out = _held_rows(rows, task, settings["modalities"], labels=role != FRAGMENTS)
                    client.left_out.setdefault(task, {})[role] = left_out
                    write_rows(rows, folder / f"{role}.parquet")
                    if role == FRAGMENTS:
                        client.fragments[task] = len(rows)
                    else:
                        client.rows.setdefault(task, {})[role] = len(rows)
            if entry["kind"] is None:
                client.kind = "paired" if complete else "partial"
            clients.append(client)
        for task in dict.fromkeys(tasks):
            warn_left_out(clients, task, made_by="clients file")
        warn_empty_splits(clients, made_by="clients file")
        plan = FederationPlan(data=str(top), tasks=list(dict.fromkeys(tasks)), by=f"clients file {Path(path).name}",
                              seed=int(seed), clients=clients, root=str(root))
        plan.save()
        return plan
