"""The built folder's README.md: the dataset card (huggingface_hub ``DatasetCard``, its YAML ``configs:`` for
``load_dataset`` in ``DatasetCardData``), from the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from huggingface_hub import DatasetCard, DatasetCardData

from multimed_hf.data.manifest import kept_samples
from multimed_hf.data.splits import SPLITS
from multimed_hf.tasks import get_task, list_tasks

__all__ = ["build_card", "read_build_infos", "render_readme", "write_readme"]

_INTRO = """\
# MultiMed, rebuilt with multimed_hf

This folder is a Hugging Face dataset repository built by
`multimed_hf` from the public sources behind **MultiMed** (Mo & Liang, 2024,
arXiv:2408.12682), a benchmark of medical tasks across ten modalities. It is not the `multimed` speech data
set on the Hub. Each config is one MultiMed task; load one with

```python
from datasets import load_dataset
ds = load_dataset("<this folder or ORG/multimed>", "<config>")
```

Cite MultiMed, and each source as its section below asks:

```bibtex
@article{mo2024multimed, title={MultiMed: Massively Multimodal and Multitask Medical Understanding},
author={Mo, Shentong and Liang, Paul Pu}, journal={arXiv preprint arXiv:2408.12682}, year={2024}}
```

Shards sit per source and build fingerprint (`<config>/<source>/<fingerprint>/<split>-*.parquet`); each
config's `manifest.jsonl` lists every source file seen, with its status (kept, moved, dropped, rejected, or
ignored: no data, e.g. system files and documents), the reason, its group and its split. Samples of one group
(patient, subject, or exact/near-duplicate image group) never span two splits; the sources whose notes say so
group exact duplicates only (near-duplicate hashing off: the CT slices of CC-CCII, MosMedData and DICOM series,
the CBIS-DDSM mammograms, the malaria cell crops and PMC-OA's figures).
"""


def read_build_infos(out_dir: Path) -> list[dict]:
    """Every config's ``build_info.json`` under ``out_dir``, in registry order."""
    infos = [json.loads(p.read_text()) for p in Path(out_dir).glob("*/build_info.json")]
    order = {name: i for i, name in enumerate(list_tasks(include_extras=True))}
    return sorted(infos, key=lambda info: order.get(info["task"], len(order)))


def _left_out_of(info: dict, left_out: Mapping[str, str]) -> set[str]:
    """The sources of a config the card names but does not load: a pushed copy's own list (``build_info``'s
    ``left_out``, which ``push`` sets), else those of ``left_out``."""
    return set(info["left_out"]) if "left_out" in info else set(left_out)


def _card_data(infos: list[dict], left_out: Mapping[str, str],
               extra_configs: Sequence[Mapping] = ()) -> DatasetCardData:
    """The card's YAML: each config's shards but those of its left-out sources (``_left_out_of``), then
    ``extra_configs`` (a repository's configs of no build info of ours, kept as they were)."""
    configs = []
    for info in infos:
        data_files = []
        left = _left_out_of(info, left_out)
        for split in SPLITS:
            paths = [
                f"{info['config']}/{s['name']}/{s['fingerprint']}/{split}-*.parquet"
                for s in info["sources"]
                if s["data_files"].get(split) and s["name"] not in left
            ]
            if paths:
                data_files.append({"split": split, "path": paths})
        if data_files:
            configs.append({"config_name": info["config"], "data_files": data_files})
    configs += [dict(c) for c in extra_configs]
    return DatasetCardData(
        pretty_name="MultiMed (multimed_hf rebuild)",
        license="other",
        tags=["medical", "multimodal", "multitask", "multimed"],
        configs=configs,
    )


def _config_section(info: dict, left_out: Mapping[str, str]) -> list[str]:
    task = get_task(info["task"])
    lines = [f"## `{task.name}`: {task.title}", "", f"- A sample is {task.sample}."]
    for label in task.labels:
        names = f": {', '.join(label.names)}" if label.names else ""
        lines.append(f"- Label `{label.name}` ({label.kind}){names}. {label.description}".rstrip())
    if task.extra:
        lines.append("- An optional extra config, not one of the paper's eleven tasks.")
    lines += [
        f"- Metrics: {', '.join(task.metrics)}" + ("." if task.extra else " (the first is the paper's)."),
        f"- Grouping key (never spans splits): {task.grouping_key}.",
    ]
    if task.metadata:
        lines.append("- Metadata columns: " + "; ".join(
            f"`{c.name}` ({c.dtype}{': ' + c.description if c.description else ''})" for c in task.metadata) + ".")
    if task.notes:
        lines.append(f"- Note: {task.notes}")
    splits = info["splits"]
    counts = info["counts"]
    kept = kept_samples(counts, info.get("index_files", 0), info.get("data_files", 0))
    lines += [
        "",
        "| split | samples |", "|---|---|",
        *[f"| {name} | {splits.get(name, 0)} |" for name in SPLITS],
        "",
        f"Build: kept {kept} samples (moved {counts.get('moved', 0)}; {info.get('index_files', 0)} index files read"
        + (f"; {info['data_files']} files stored with other files' samples" if info.get("data_files") else "")
        + f"), dropped {counts.get('dropped', 0)}, rejected {counts.get('rejected', 0)}, ignored "
        f"{counts.get('ignored', 0)} (no data: system files, documents, archives). Duplicates"
        + (f" (counted over {info['duplicates_scope']})" if info.get("duplicates_scope") else "") + ": "
        + ", ".join(f"{k} {v}" for k, v in info["duplicates"].items()) + ".",
    ]
    if info.get("near_duplicate_search") and any(c.modality == "image" for c in task.inputs):
        lines.append(f"Near-duplicate search: {info['near_duplicate_search']}.")
    for note, n in info.get("kept_notes", {}).items():
        lines.append(f"Kept with a note in the manifest: {n} x {note}.")
    repairs = info["split_repairs"]
    if repairs["dropped"]:
        lines.append(
            f"Split repair: {repairs['dropped']} training files of {repairs['groups']} groups that also have files in "
            "the publisher's test split were dropped (the published test set is kept as published)."
        )
    lines += ["", "| source | licence | redistributable | files seen | samples | release |", "|---|---|---|---|---|---|"]
    for s in info["sources"]:
        spec = task.source(s["name"])
        lines.append(
            f"| [{spec.title}]({spec.homepage}) | {spec.license} | {_redistribution_cell(spec)} | "
            f"{s['files_seen']} | {sum(s['splits'].values())} | {s['release_note']} |"
        )
    # a pushed copy's build info (``push.pushed_build_info``) names its left-out sources instead of listing them
    for s in [*info["sources"], *({"name": name} for name in info.get("left_out", []))]:
        spec = task.source(s["name"])
        lines += ["", f"**{spec.title}**: layout `{spec.layout}`; grouped by {spec.grouping}."]
        columns = {c.name for c in task.metadata}
        if "organ" in columns:
            lines.append(f"`organ`: {spec.organ or 'per sample where its files give one, else None'}.")
        if "age" in columns:
            lines.append(f"`age`: {'from ' + spec.age if spec.age else 'not recorded by the source (None)'}.")
        if spec.notes:
            lines.append(spec.notes)
        if s.get("assets"):
            lines.append("Files beside the shards: " + ", ".join(f"`{a}`" for a in s["assets"]) + ".")
        if s["name"] in _left_out_of(info, left_out):
            why = left_out.get(f"{info['config']}/{s['name']}") or left_out.get(s["name"], "left out")
            lines.append(f"*Left out of this repository*: {why} with `multimed build {task.name} --source DIR`")
        lines += ["", "```bibtex", spec.citation, "```"]
    return lines + [""]


def build_card(out_dir: Path, left_out: Mapping[str, str] | None = None, *,
               infos: list[dict] | None = None, extra_configs: Sequence[Mapping] = ()) -> DatasetCard:
    """The dataset card of ``out_dir``; sources in ``left_out`` (name, or ``config/name`` -> reason) are listed but
    not loaded.

    ``infos``: the build infos to describe, in place of those in ``out_dir``: a push passes its pushed copies
    (``push.pushed_build_info``: the pushed configs only, their figures counted over the pushed sources, their
    left-out sources under ``left_out``) and those an earlier push left in the repository; ``extra_configs``: YAML
    config entries of the repository that no build info describes, kept in the card's YAML."""
    left_out = dict(left_out or {})
    infos = read_build_infos(out_dir) if infos is None else infos
    body = [_INTRO]
    if left_out:
        body.append("## Left out of this copy\n")
        body += [f"- `{name}`: {reason}" for name, reason in sorted(left_out.items())]
        body.append("")
    for info in infos:
        body += _config_section(info, left_out)
    return DatasetCard(f"---\n{_card_data(infos, left_out, extra_configs).to_yaml()}\n---\n\n" + "\n".join(body))


def render_readme(out_dir: Path, left_out: Mapping[str, str] | None = None, *,
                  infos: list[dict] | None = None, extra_configs: Sequence[Mapping] = ()) -> str:
    """The README text for ``out_dir`` (``build_card`` as text); the same build infos give the same bytes."""
    return str(build_card(out_dir, left_out, infos=infos, extra_configs=extra_configs))


def write_readme(out_dir: Path) -> Path:
    path = Path(out_dir) / "README.md"
    path.write_text(render_readme(out_dir))
    return path


def _redistribution_cell(spec) -> str:
    """The card's "redistributable" cell: yes / no, and what the licence covers where not every file."""
    return spec.redistribution.replace("not redistributable", "no").replace("redistributable", "yes", 1)
