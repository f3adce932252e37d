"""A built MultiMed folder (or Hub dataset) as datasets per task and split, its assets, and rows per modality."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from multimed_hf.tasks import IMAGE_MODALITIES, get_task

__all__ = [
    "SPLITS",
    "DataLoadingError",
    "load_task_data",
    "read_build_info",
    "read_gene_panels",
    "rows_with_modality",
    "modality_counts",
    "column_values",
    "dataset_fingerprints",
    "materialize",
    "SUBSET_SEED",
    "sample_rows",
]

SPLITS = ("train", "validation", "test")
MODALITY_COLUMN = "modality"
BUILD_INFO = "build_info.json"


class DataLoadingError(ValueError):
    """A dataset folder, Hub id or split that cannot give what a run needs."""


def _is_local(data: str | Path) -> bool:
    return Path(data).exists()


def _looks_like_repo_id(data: str | Path) -> bool:
    """``owner/name``: what ``load_dataset`` also tries on the Hub when no such folder exists."""
    parts = str(data).split("/")
    return len(parts) == 2 and all(parts) and not str(data).startswith((".", "~"))


def _folder_hint(data: str | Path, task: str) -> str:
    """What a local ``--data`` folder that holds no config ``task`` is, and what to pass instead: one config's folder
    of a built folder, a built folder without that config, or no built folder at all (a source folder)."""
    folder = Path(data)
    if not folder.is_dir():
        return ""
    if (folder / "build_info.json").is_file():
        return (f"; {str(data)!r} is one config's folder of the built folder {str(folder.resolve().parent)!r}: pass "
                f"--data {folder.resolve().parent}")
    built = sorted(p.parent.name for p in folder.glob("*/build_info.json"))
    if built:
        return (f"; the built folder holds {built}, not {task!r}: build it into the same folder with `multimed build "
                f"{task} --source DIR --out {data}`")
    return (f"; {str(data)!r} holds no built MultiMed config (a source folder? build it first: `multimed build "
            f"{task} --source {data} --out DIR`, then --data DIR)")


def load_task_data(data: str | Path, tasks: Sequence[str], *, splits: Sequence[str] | None = SPLITS,
                   streaming: bool = False, rank: int = 0, world_size: int = 1,
                   **load_kwargs) -> dict[str, dict[str, Any]]:
    """``{task: {split: Dataset}}`` via ``datasets.load_dataset(data, task)`` (a built folder or a Hub id).

    Splits a config lacks are left out (protein_structure publishes no validation split); ``splits=None``: every
    split the config has. ``streaming=True`` gives
    an ``IterableDataset`` per task and split, sharded across ``world_size`` processes with
    ``datasets.distributed.split_dataset_by_node`` (each process reads its own shards or rows).
    """
    from datasets import load_dataset

    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        get_task(task)
        try:
            loaded = load_dataset(str(data), task, streaming=streaming, **load_kwargs)
        except ValueError as err:
            raise DataLoadingError(f"cannot load config {task!r} from {str(data)!r}: {err}"
                                   + _folder_hint(data, task)) from err
        except FileNotFoundError as err:  # no such folder, and no Hub dataset of that id (or none reachable)
            where = ("a folder without that config's files" if _is_local(data) else "no such folder, nor a "
                     "Hub dataset of that id" if _looks_like_repo_id(data) else "no such folder")
            raise DataLoadingError(f"cannot load config {task!r} from {str(data)!r} ({where}; a built MultiMed "
                                   f"folder, from `multimed build`, or a Hub dataset id is expected): {err}") from err
        except ConnectionError as err:  # what load_dataset raises for a Hub id it could not reach
            raise DataLoadingError(f"cannot load config {task!r} from {str(data)!r}: no such folder, and the Hub "
                                   f"could not be reached ({err}); a built MultiMed folder, from `multimed build`, "
                                   "or a reachable Hub dataset id is expected") from err
        found = {s: loaded[s] for s in (loaded if splits is None else splits) if s in loaded}
        if streaming and world_size > 1:
            from datasets.distributed import split_dataset_by_node

            found = {s: split_dataset_by_node(d, rank=rank, world_size=world_size) for s, d in found.items()}
        out[task] = found
    return out


def read_build_info(data: str | Path, task: str, **hub_kwargs) -> dict:
    """The config's ``build_info.json`` (sources, their fingerprints and assets); ``{}`` when the data has none."""
    path = _fetch(data, f"{task}/{BUILD_INFO}", **hub_kwargs)
    return json.loads(path.read_text()) if path is not None else {}


def _fetch(data: str | Path, relpath: str, **hub_kwargs) -> Path | None:
    if _is_local(data):
        path = Path(data) / relpath
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(str(data), relpath, repo_type="dataset", **hub_kwargs))
    except EntryNotFoundError:
        return None


def read_gene_panels(data: str | Path, task: str, **hub_kwargs) -> dict[str, list[str]]:
    """``{gene_panel id: ordered gene names}`` from the ``gene_panels.json`` assets the builders wrote beside a
    config's shards (listed in its ``build_info.json``)."""
    panels: dict[str, list[str]] = {}
    for source in read_build_info(data, task, **hub_kwargs).get("sources", []):
        for asset in source.get("assets", []):
            if not asset.endswith("gene_panels.json"):
                continue
            path = _fetch(data, asset, **hub_kwargs)
            if path is None:
                raise DataLoadingError(f"{data}/{task}/{BUILD_INFO} lists {asset!r}, which is missing")
            for panel, entry in json.loads(path.read_text()).items():
                panels[panel] = list(entry["genes"] if isinstance(entry, Mapping) else entry)
    return panels


def _feeding_column(task: str, modality: str) -> str | None:
    """The registry column whose presence means a row has ``modality`` (``None``: it comes through the image)."""
    spec = get_task(task)
    own = [c.name for c in spec.inputs if c.modality == modality]
    if own:
        return own[0]
    if modality in IMAGE_MODALITIES and any(c.modality == "image" for c in spec.inputs):
        return None
    raise DataLoadingError(f"task {task!r} has no input column for modality {modality!r} (it reads "
                           f"{list(spec.modalities)})")


def _arrow(dataset) -> Any | None:
    data = getattr(dataset, "data", None)
    if data is None or not hasattr(dataset, "select"):
        return None
    table = getattr(data, "table", data)
    indices = getattr(dataset, "_indices", None)  # a non-contiguous select / filter: its rows, in its order
    return table.take(indices.column(0)) if indices is not None else table


def rows_with_modality(dataset, task: str, modality: str | Sequence[str]):
    """The rows of ``dataset`` (a task's split) that hold ``modality`` (or any of several): an image modality where
    the row's ``modality`` column names it, another where its input column is not empty. Nothing is decoded."""
    wanted = [modality] if isinstance(modality, str) else list(modality)
    columns = {m: _feeding_column(task, m) for m in wanted}
    table = _arrow(dataset)
    if table is not None:
        import numpy as np
        import pyarrow.compute as pc

        keep = np.zeros(len(table), dtype=bool)
        for m, column in columns.items():
            mask = pc.equal(table.column(MODALITY_COLUMN), m) if column is None else pc.is_valid(table.column(column))
            keep |= pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
        return dataset.select(np.flatnonzero(keep))
    images = {m for m, c in columns.items() if c is None}
    own = [c for c in columns.values() if c is not None]
    names = ([MODALITY_COLUMN] if images else []) + own

    def has(*values):
        image_ok = bool(images) and values[0] in images
        return image_ok or any(v is not None for v in values[1 if images else 0:])

    return dataset.filter(has, input_columns=names)


def modality_counts(dataset, task: str) -> dict[str, int]:
    """Rows holding each of the task's modalities (a ``Dataset``: counted from Arrow, nothing decoded)."""
    table = _arrow(dataset)
    spec = get_task(task)
    if table is None:
        raise DataLoadingError("modality_counts needs a datasets.Dataset (not streamed)")
    import pyarrow.compute as pc

    counts = {}
    image_counts = None
    for m in spec.modalities:
        column = _feeding_column(task, m)
        if column is None:
            if image_counts is None:
                pairs = pc.value_counts(table.column(MODALITY_COLUMN)).to_pylist()
                image_counts = {p["values"]: p["counts"] for p in pairs}
            counts[m] = int(image_counts.get(m, 0))
        else:
            counts[m] = len(table) - table.column(column).null_count
    return counts


def column_values(dataset, columns: Sequence[str], limit: int | None = None) -> dict[str, list]:
    """Columns as Python lists, without decoding other columns (a streamed dataset: its first ``limit`` rows)."""
    table = _arrow(dataset)
    if table is not None:
        sub = table.select(list(columns))
        if limit is not None:
            sub = sub.slice(0, limit)
        return {c: sub.column(c).to_pylist() for c in columns}
    out: dict[str, list] = {c: [] for c in columns}
    for i, row in enumerate(dataset.select_columns(list(columns))):
        if limit is not None and i >= limit:
            break
        for c in columns:
            out[c].append(row[c])
    return out


def iter_column(dataset, column: str, limit: int | None = None) -> Iterable:
    """One column's values, batch by batch (no other column decoded)."""
    yield from column_values(dataset, [column], limit)[column]


def dataset_fingerprints(data: str | Path, splits_by_task: Mapping[str, Mapping[str, Any]],
                         rows: str | None = None) -> dict:
    """What identifies the data a run saw: per task, the builders' source fingerprints and each split's rows and
    ``datasets`` fingerprint (streamed splits: ``None``); ``rows``: which of ``data``'s rows the splits are, in
    words, where a caller chose them (an analysis' subset)."""
    out = {}
    for task, splits in splits_by_task.items():
        info = read_build_info(data, task)
        out[task] = {
            "sources": {s.get("name"): s.get("fingerprint") for s in info.get("sources", [])},
            "splits": {name: {"num_rows": getattr(ds, "num_rows", None),
                              "fingerprint": getattr(ds, "_fingerprint", None)} for name, ds in splits.items()},
            **({"rows": rows} if rows else {}),
        }
    return out


def materialize(dataset, limit: int | None = None):
    """A streamed split (``IterableDataset``) as a ``datasets.Dataset`` of its first ``limit`` rows (all when
    ``None``), features kept and images left encoded, for what needs random access (evaluation, whose rows every
    process reads in full and shares out itself). A ``Dataset`` is returned as it is (cut to ``limit``)."""
    from datasets import Dataset

    if hasattr(dataset, "select"):
        return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))
    rows = dataset.take(limit) if limit is not None else dataset
    features = dataset.features
    if features is not None and hasattr(rows, "decode"):
        rows = rows.decode(False)  # image bytes as stored, encoded again as they were
    return Dataset.from_list(list(rows), features=features)


#: The seed of the rows ``--max_train_samples`` / ``--max_eval_samples`` keep: one draw for every run, family and
#: seed, so that runs cut alike score and train on the same rows.
SUBSET_SEED = 0


def sample_rows(datasets: Mapping[str, Any], n: int | None):
    """``n`` rows of each split, drawn at random once (``SUBSET_SEED``) and kept in their split's order: a built
    split is ordered by source file, so its first rows are often one class or one source; a stream (no random
    access) keeps its first ``n``."""
    import numpy as np

    if n is None:
        return dict(datasets)

    def cut(ds):
        if not hasattr(ds, "select"):
            return ds.take(n)
        if n >= len(ds):
            return ds
        return ds.select(np.sort(np.random.default_rng(SUBSET_SEED).choice(len(ds), size=n, replace=False)))

    return {t: cut(ds) for t, ds in datasets.items()}
