"""Split built configs into federated clients: paired, fragmented and partial hospitals, by patient/source, seeded.

BlendFL's three kinds of client data, made from MultiMed rows that hold several modalities (expression_prediction:
DNA + scRNA-seq profile; med_vqa: image + question):

- ``paired``: its patients' rows as built, every modality and the labels.
- ``partial``: a modality never collected (``drop``, default the task's last modality) is blanked in every row;
  rows left with no modality are removed: they are at no client (a warning says how many, ``ClientSpec.left_out``
  records them per task and split).
- ``fragmented``: it keeps the labels and the modalities in ``keep`` (default the task's last modality); for each of
  its training rows that also held other modalities, those move to a *partner* client as an unlabelled fragment
  with the same ``sample_id`` (the same patient seen at two hospitals). The partner is the first ``partial``
  client (it collects exactly the moved modalities under the defaults), else the first ``paired``, else another
  ``fragmented`` one. Rows holding only moved modalities stay with the fragmented client as they are (a hospital
  may hold some complete records). Validation rows are blanked the same way and never fragmented: each client
  evaluates on what it holds (BlendFL's decentralised inference).

Patients never span clients, across tasks too: rows are grouped by ``by`` (``"patient"`` = the built ``group_id``
column, the task's grouping key; ``"source"``; or any column name, e.g. a site column), groups are shuffled with
``seed`` and cut into equal shares in client order; a group met in an earlier task of the federation (``disease``
re-uses ``brain_tumor``'s images) stays at its client, and the new ones fill the clients with the fewest. A split
with fewer new groups than clients (a task collected at one site, ``--by source``) leaves some clients without its
rows, which is warned; a partition that would leave a client without any training row is refused. Output, one
folder per client (what a SuperNode's ``data-path`` names)::

    OUT/federation.json                       the plan (FederationPlan.save)
    OUT/clients/<name>/<task>/train.parquet   labelled rows (validation.parquet likewise)
    OUT/clients/<name>/<task>/fragments.parquet   unlabelled fragments held for a partner's patients

Each Parquet file stands alone (``write_rows``: file-backed columns such as images are embedded, not referenced by
path), so a client folder can be copied to its hospital.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

from multimed_hf.tasks import IMAGE_MODALITIES, get_task

__all__ = [
    "CLIENT_KINDS",
    "PLAN_FILE",
    "replace_earlier_clients",
    "ClientSpec",
    "FederationPlan",
    "PartitionError",
    "parse_partition",
    "partition_config",
    "load_client_data",
    "modality_columns",
    "holds_modality",
    "write_rows",
]

CLIENT_KINDS = ("paired", "fragmented", "partial")
PLAN_FILE = "federation.json"
FRAGMENTS = "fragments"
_BY_ALIASES = {"patient": "group_id", "group": "group_id"}
_PARTNER_PREFERENCE = ("partial", "paired", "fragmented")


class PartitionError(ValueError):
    """A partition request the data cannot satisfy."""


@dataclass
class ClientSpec:
    """One client of a federation: what it holds, per task."""

    name: str
    kind: str
    partition_id: int
    modalities: dict[str, list[str]] = field(default_factory=dict)  # task -> modalities it collects
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> split -> labelled rows
    fragments: dict[str, int] = field(default_factory=dict)  # task -> unlabelled fragment rows held for a partner
    partner: dict[str, str] = field(default_factory=dict)  # task -> where its patients' moved modalities went
    left_out: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> split (or fragments) -> rows of its
    # share holding only modalities it never collected, not in its folder (a partial client's: at no client)


@dataclass
class FederationPlan:
    """The clients made from built configs, with the settings that reproduce them."""

    data: str
    tasks: list[str]
    by: str
    seed: int
    clients: list[ClientSpec]
    root: str = ""

    def client_dir(self, client: ClientSpec | str | int) -> Path:
        if isinstance(client, int):
            client = self.clients[client]
        name = client.name if isinstance(client, ClientSpec) else client
        return Path(self.root) / "clients" / name

    def save(self) -> Path:
        path = Path(self.root) / PLAN_FILE
        body = {k: v for k, v in asdict(self).items() if k != "root"}
        path.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, root: str | os.PathLike) -> "FederationPlan":
        path = Path(root) / PLAN_FILE
        if not path.is_file():
            raise PartitionError(f"{path} does not exist: run partition_config(...) (or `multimed federate`) first")
        body = json.loads(path.read_text())
        body["clients"] = [ClientSpec(**c) for c in body["clients"]]
        return cls(**body, root=str(root))


def parse_partition(text: str | Mapping[str, int]) -> dict[str, int]:
    """``"paired=1,fragmented=1,partial=1"`` (or a dict) -> ``{kind: count}`` in the given order."""
    if isinstance(text, Mapping):
        items = list(text.items())
    else:
        items = []
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            kind, sep, count = part.partition("=")
            if not sep:
                raise PartitionError(f"--partition {text!r}: {part!r} is not KIND=COUNT (e.g. paired=1,partial=2)")
            try:
                items.append((kind.strip(), int(count)))
            except ValueError:
                raise PartitionError(f"--partition {text!r}: count {count!r} of {kind!r} is not an integer") from None
    out: dict[str, int] = {}
    for kind, count in items:
        if kind not in CLIENT_KINDS:
            raise PartitionError(f"--partition: client kind {kind!r} is not one of {CLIENT_KINDS}")
        if count < 0:
            raise PartitionError(f"--partition: {kind}={count}: counts must be >= 0")
        out[kind] = out.get(kind, 0) + int(count)
    if sum(out.values()) < 1:
        raise PartitionError(f"--partition {text!r}: no client")
    return out


def modality_columns(task: str, modality: str) -> tuple[list[str], bool]:
    """(columns holding ``modality`` in a row of ``task``, whether they are the shared image column: then only rows
    whose ``modality`` column names it hold it)."""
    spec = get_task(task)
    own = [c.name for c in spec.inputs if c.modality == modality]
    if own:
        return own, False
    images = [c.name for c in spec.inputs if c.modality == "image"]
    if modality in IMAGE_MODALITIES and images:
        return images, True
    raise PartitionError(f"task {task!r} has no input column for modality {modality!r}")


def _blank(dataset, task: str, modalities: Sequence[str], labels: bool):
    """``dataset`` with ``modalities`` (and the labels when ``labels``) set to None in every row."""
    spec = get_task(task)
    plain, image = [], []
    for m in modalities:
        columns, shared = modality_columns(task, m)
        (image if shared else plain).extend((c, m) for c in columns)
    label_columns = [l.name for l in spec.labels] + (["label_mask"] if labels and "label_mask" in
                                                      dataset.column_names else [])

    def blank(row):
        out = {c: None for c, _ in plain}
        for c, m in image:
            if row.get("modality") == m:
                out[c] = None
        if labels:
            out.update({c: None for c in label_columns if c in row})
        return out

    return dataset.map(blank, desc=None, load_from_cache_file=False) if (plain or image or labels) else dataset


def _arrow(dataset, columns: Sequence[str]):
    """Those columns as a pyarrow Table, row selection applied, nothing decoded."""
    return dataset.select_columns(list(columns)).with_format("arrow")[:]


def holds_modality(dataset, task: str, modality: str) -> np.ndarray:
    """Bool per row: the row holds ``modality`` (read from Arrow, nothing decoded)."""
    import pyarrow.compute as pc

    columns, shared = modality_columns(task, modality)
    table = _arrow(dataset, columns[:1] + (["modality"] if shared else []))
    if shared:
        found = pc.and_(pc.is_valid(table.column(columns[0])), pc.equal(table.column("modality"), modality))
    else:
        found = pc.is_valid(table.column(columns[0]))
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


def write_rows(dataset, path: str | os.PathLike) -> Path:
    """Write a client's rows to one Parquet file that stands alone: the bytes of every file-backed column (``Image``,
    ``Audio``, ``Nifti``, ... whose rows may only name a file on this machine) are embedded first, with
    ``datasets``' own ``embed_table_storage`` as ``push_to_hub`` does, since ``Dataset.to_parquet`` writes such a
    column's paths and no bytes. A client folder then loads on another machine with the source files gone."""
    from datasets.features.features import require_storage_embed
    from datasets.table import embed_table_storage

    path = Path(path)
    if any(require_storage_embed(feature) for feature in dataset.features.values()):
        format_ = dataset.format
        dataset = dataset.with_format("arrow").map(embed_table_storage, batched=True, keep_in_memory=True,
                                                   desc="Embedding file bytes")
        dataset = dataset.with_format(**format_)
    dataset.to_parquet(str(path))
    return path


def _group_keys(dataset, by: str, what: str) -> np.ndarray:
    """Each row's group (the ``by`` column, as strings), read from Arrow."""
    if by not in dataset.column_names:
        raise PartitionError(f"{what}: no column {by!r} to group rows by (columns: {dataset.column_names}); use "
                             f"by='patient' (group_id), 'source' or a column name")
    return np.asarray([str(v) for v in _arrow(dataset, [by]).column(by).to_pylist()])


def _shares(keys: np.ndarray, n: int, seed: int, assigned: dict[str, int]) -> list[np.ndarray]:
    """Each client's row indices of a dataset whose rows' groups are ``keys``: its groups shuffled with ``seed``
    and cut into equal shares, except that a group ``assigned`` to a client by another task or split of the
    federation stays with it (``disease`` holds the images of ``brain_tumor``, say: a patient is at one client
    whatever the task); the new groups then go to the clients with the fewest of this dataset's groups. Fewer
    groups than clients leave some clients without rows here (``partition_config`` checks that each keeps some
    training rows). ``assigned`` is updated."""
    groups = np.unique(keys)
    groups = groups[np.random.default_rng(seed).permutation(len(groups))]
    if not any(str(g) in assigned for g in groups):  # no patient met before: equal shares in client order
        for i, share in enumerate(np.array_split(groups, n)):
            assigned.update((str(g), i) for g in share)
    else:
        counts = np.bincount([assigned[str(g)] for g in groups if str(g) in assigned], minlength=n)
        for g in groups:
            if str(g) not in assigned:
                assigned[str(g)] = int(np.argmin(counts))
                counts[assigned[str(g)]] += 1
    client = np.array([assigned[str(g)] for g in groups], dtype=int)
    return [np.flatnonzero(np.isin(keys, groups[client == i])) for i in range(n)]


def _refuse_clients_without_rows(shares: Mapping[tuple, list], keys: Mapping[tuple, np.ndarray], names: list[str],
                                 by: str) -> None:
    """Refuse a partition that leaves a client without a training row of any task (without any row where no
    training split is partitioned): it would have nothing to train on. A client without the rows of one task's
    split only is warned about (``warn_empty_splits``)."""
    counted = [k for k in shares if k[1] == "train"] or list(shares)
    empty = [name for i, name in enumerate(names) if not any(len(shares[k][i]) for k in counted)]
    if empty:
        train = counted[0][1] == "train"
        distinct = len(set().union(*(set(keys[k].tolist()) for k in counted)))
        raise PartitionError(f"{len(empty)} of {len(names)} clients would hold no {'training ' if train else ''}row "
                             f"({', '.join(empty)}): the tasks' {'train splits' if train else 'rows'} hold "
                             f"{distinct} distinct {by!r} values for {len(names)} clients; a patient never spans "
                             f"clients, so use fewer clients or group by another column")


def _partner(names: list[str], kinds: list[str], me: int) -> int:
    for kind in _PARTNER_PREFERENCE:
        for j, k in enumerate(kinds):
            if j != me and k == kind:
                return j
    raise PartitionError(f"client {names[me]!r} is fragmented but the federation has no other client to hold its "
                         f"patients' other modalities; add a client (e.g. partial=1)")


def partition_config(data: str | os.PathLike, tasks: Sequence[str], partition, out_dir: str | os.PathLike, *,
                     by: str = "patient", seed: int = 0, splits: Sequence[str] = ("train", "validation"),
                     drop: Mapping[str, Sequence[str]] | None = None,
                     keep: Mapping[str, Sequence[str]] | None = None, datasets=None) -> FederationPlan:
    """Write one folder per client under ``out_dir`` and return the plan (also saved as ``federation.json``).

    ``partition``: ``"paired=1,fragmented=1,partial=1"`` or ``{kind: count}``; clients are named ``<kind>-<i>``
    in that order. ``drop``: task -> modalities a partial client never collected; ``keep``: task -> modalities a
    fragmented client keeps with its labels (defaults: the task's last modality for both). ``datasets``: already
    loaded ``{task: {split: Dataset}}`` (else ``load_dataset(data, task)``).
    """
    from multimed_hf.training.loading import load_task_data

    kinds_count = parse_partition(partition)
    kinds = [k for k, n in kinds_count.items() for _ in range(n)]
    counters: dict[str, int] = {}
    names = []
    for k in kinds:
        names.append(f"{k}-{counters.get(k, 0)}")
        counters[k] = counters.get(k, 0) + 1
    column = _BY_ALIASES.get(by, by)
    tasks = list(dict.fromkeys(tasks))
    loaded = datasets if datasets is not None else load_task_data(data, tasks, splits=splits)
    root = Path(out_dir)
    with replace_earlier_clients(root):
        clients = [ClientSpec(name=n, kind=k, partition_id=i) for i, (n, k) in enumerate(zip(names, kinds))]
        settings = {}  # task -> (its modalities, a partial client's dropped ones, a fragmented one's kept ones)
        for task in tasks:
            modalities = list(get_task(task).modalities)
            dropped = list((drop or {}).get(task) or modalities[-1:])
            kept = list((keep or {}).get(task) or modalities[-1:])
            for name, value in (("drop", dropped), ("keep", kept)):
                wrong = sorted(set(value) - set(modalities))
                if wrong:
                    raise PartitionError(f"{name}[{task!r}] = {value}: task {task!r} reads {modalities}")
            if len(modalities) < 2 and ({"partial", "fragmented"} & set(kinds)):
                raise PartitionError(f"task {task!r} reads one modality ({modalities}); partial and fragmented clients "
                                     f"need rows with several (expression_prediction, med_vqa)")
            if set(kept) >= set(modalities) and "fragmented" in kinds:
                raise PartitionError(f"keep[{task!r}] = {kept} keeps every modality: a fragmented client would move "
                                     f"none")
            settings[task] = modalities, dropped, kept
        # every split's shares before any row is written: a group (patient, site) at one client across every task
        # and split, in task then split order; a client left with no training row at all is refused here
        assigned: dict[str, int] = {}
        keys = {(task, split): _group_keys(loaded[task][split], column, f"task {task!r}, split {split!r}")
                for task in tasks for split in splits if split in loaded[task]}
        shares = {key: _shares(k, len(clients), seed, assigned) for key, k in keys.items()}
        _refuse_clients_without_rows(shares, keys, names, column)
        for task in tasks:
            modalities, dropped, kept = settings[task]
            moved = [m for m in modalities if m not in kept]
            held: dict[int, list] = {}  # partner -> the fragments it holds of this task, from each fragmented client
            for split in splits:
                if split not in loaded[task]:
                    continue
                ds = loaded[task][split]
                for i, (client, rows) in enumerate(zip(clients, shares[task, split])):
                    part = ds.select(rows)
                    folder = root / "clients" / client.name / task
                    folder.mkdir(parents=True, exist_ok=True)
                    if client.kind == "paired":
                        client.modalities[task] = modalities
                    elif client.kind == "partial":
                        client.modalities[task] = [m for m in modalities if m not in dropped]
                        part = _blank(part, task, dropped, labels=False)
                        has_any = np.zeros(len(part), bool)
                        for m in client.modalities[task]:
                            has_any |= holds_modality(part, task, m)
                        part = part.select(np.flatnonzero(has_any))
                        client.left_out.setdefault(task, {})[split] = int((~has_any).sum())
                    else:
                        client.modalities[task] = modalities
                        split_rows = np.zeros(len(part), bool)
                        has_kept = np.zeros(len(part), bool)
                        for m in kept:
                            has_kept |= holds_modality(part, task, m)
                        for m in moved:
                            split_rows |= holds_modality(part, task, m)
                        split_rows &= has_kept
                        if split == "train":
                            partner = _partner(names, kinds, i)
                            held.setdefault(partner, []).append(
                                _blank(part.select(np.flatnonzero(split_rows)), task, kept, labels=True))
                            client.partner[task] = names[partner]
                        rest = np.flatnonzero(~split_rows)
                        blanked = _blank(part.select(np.flatnonzero(split_rows)), task, moved, labels=False)
                        from datasets import concatenate_datasets

                        part = concatenate_datasets([blanked, part.select(rest)])
                    write_rows(part, folder / f"{split}.parquet")
                    client.rows.setdefault(task, {})[split] = len(part)
            for partner, parts in held.items():  # one file per partner, holding every fragmented client's fragments
                from datasets import concatenate_datasets

                fragments = concatenate_datasets(parts)
                target = root / "clients" / names[partner] / task
                target.mkdir(parents=True, exist_ok=True)
                write_rows(fragments, target / f"{FRAGMENTS}.parquet")
                clients[partner].fragments[task] = len(fragments)
            warn_left_out(clients, task)
        warn_empty_splits(clients)
        plan = FederationPlan(data=str(data), tasks=tasks, by=by, seed=int(seed), clients=clients, root=str(root))
        plan.save()
        return plan


#: Marks a clients/ folder as a federation's (written first): one an interrupted run left is replaced, not refused.
CLIENTS_MARK = ".multimed_federation"


@contextlib.contextmanager
def replace_earlier_clients(root: str | os.PathLike):
    """Around the writing of a new plan under ``root``: an earlier federation's client folders and plan are set
    aside, then removed once the new plan is written (a client reads every file of its folder, so a task, split or
    fragments file the new plan does not give it would be trained or validated on silently), or put back where the
    new plan fails. A ``clients/`` folder that is no federation's (no plan, no mark) is refused, never removed."""
    root = Path(root)
    clients, plan = root / "clients", root / PLAN_FILE
    if clients.exists() and not (plan.is_file() or (clients / CLIENTS_MARK).is_file()):
        raise PartitionError(f"{clients} exists and is no federation's (no {PLAN_FILE} beside it): give another "
                             f"output folder, or remove it")
    aside = [(path, root / f".replaced-{path.name}") for path in (clients, plan) if path.exists()]
    if aside:
        logger.warning("federation: replacing the client folders of an earlier federation in %s", clients)
    for path, kept in aside:
        shutil.rmtree(kept, ignore_errors=True) if kept.is_dir() else kept.unlink(missing_ok=True)
        path.rename(kept)
    clients.mkdir(parents=True)
    (clients / CLIENTS_MARK).write_text("client folders of a multimed_hf federation (federation.json beside)\n")
    try:
        yield
    except BaseException:
        shutil.rmtree(clients, ignore_errors=True)
        plan.unlink(missing_ok=True)
        for path, kept in aside:
            kept.rename(path)
        raise
    for _, kept in aside:
        shutil.rmtree(kept) if kept.is_dir() else kept.unlink()


#: What gives an empty client split rows, per way the clients were made.
_EMPTY_SPLIT_REMEDY = {"partition": "fewer clients, another --seed or --by give them rows",
                       "clients file": "the file's slices and modalities decide their rows"}


def warn_left_out(clients: Sequence[ClientSpec], task: str, made_by: str = "partition") -> None:
    """Warn, in one line for ``task``, of the rows each client left out of its folder (``ClientSpec.left_out``):
    they hold only modalities it never collected. Under a partition those rows are at no client (the simulation's
    central check still scores the validation ones)."""
    said = []
    for c in clients:
        counts = {split: n for split, n in (c.left_out.get(task) or {}).items() if n}
        if counts:
            lacking = [m for m in get_task(task).modalities if m not in c.modalities.get(task, [])]
            kept = {split: n for split, n in {**c.rows.get(task, {}), FRAGMENTS: c.fragments.get(task)}.items()
                    if n is not None}
            said.append(f"{c.name} (never collected {', '.join(lacking) or '-'}): " + ", ".join(
                f"{split} {n} of {n + kept.get(split, 0)}" for split, n in counts.items()))
    if said:
        where = "at no client" if made_by == "partition" else "left out of those clients' folders"
        logger.warning("federation: %s: rows holding only a modality their client never collected are %s (%s): %s",
                       task, where, made_by, "; ".join(said))


def warn_empty_splits(clients: Sequence[ClientSpec], made_by: str = "partition") -> None:
    """Warn of each client left with no row of a task's split (its patients all at other clients, or none of its
    rows holding a modality a partial client keeps): it trains or validates nothing on that task. ``made_by``:
    ``"partition"`` or ``"clients file"``, what the warning advises."""
    empty = [f"{c.name}: {task} {split}" for c in clients for task, splits in c.rows.items()
             for split, n in splits.items() if n == 0]
    if empty:
        logger.warning("federation: %d client split(s) hold no row, so those clients train or validate nothing "
                       "on them (%s: %s): %s", len(empty), made_by, _EMPTY_SPLIT_REMEDY[made_by], "; ".join(empty))


def load_client_data(client_dir: str | os.PathLike) -> dict[str, dict[str, object]]:
    """``{task: {split or "fragments": Dataset}}`` of one client folder (features restored from the Parquet
    metadata ``datasets`` writes; read in memory, so a rewritten partition is never served from a stale cache)."""
    import pyarrow.parquet as pq
    from datasets import Dataset, Features
    from datasets.info import DatasetInfo

    root = Path(client_dir)
    if not root.is_dir():
        raise PartitionError(f"client folder {root} does not exist (see partition_config)")
    out: dict[str, dict[str, object]] = {}
    for task_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        get_task(task_dir.name)
        for path in sorted(task_dir.glob("*.parquet")):
            table = pq.read_table(path)
            features = Features.from_arrow_schema(table.schema)
            out.setdefault(task_dir.name, {})[path.stem] = Dataset(table, info=DatasetInfo(features=features))
    return out
