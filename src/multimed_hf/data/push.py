"""Upload a built folder to the Hub as it is, leaving out sources whose licence forbids redistribution.

A left-out source leaves nothing behind: not its shards, not its lines of the config's ``manifest.jsonl`` (sample
ids, file paths, groups), not its entry in ``build_info.json`` (whose figures are counted again over the pushed
sources); a config with no source left is not pushed. The card lists the pushed configs and those an earlier push
left in the repository (from their own ``build_info.json`` there), so that pushing one config keeps the others
loadable."""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from multimed_hf.data.build import CACHE_DIR, tally_entries
from multimed_hf.data.card import read_build_infos, render_readme
from multimed_hf.data.manifest import MANIFEST_NAME as MANIFEST
from multimed_hf.data.manifest import iter_manifest
from multimed_hf.data.splits import SPLITS
from multimed_hf.hub_upload import folder_files, upload_files
from multimed_hf.tasks import get_task, list_tasks

__all__ = ["PushReport", "push_dataset", "left_out_sources", "pushed_build_info"]

BUILD_INFO = "build_info.json"


@dataclass
class PushReport:
    repo_id: str
    uploaded: list[str]
    left_out: dict[str, str]
    commit_url: str


def left_out_sources(out_dir: Path) -> dict[str, str]:
    """Built sources that may not be redistributed, by name, with the reason (a source of several configs, e.g.
    APTOS in diabetic_retinopathy and disease, once: each config's card names its own build command)."""
    left_out = {}
    for info in read_build_infos(out_dir):
        task = get_task(info["task"])
        for source in info["sources"]:
            spec = task.source(source["name"])
            if not spec.redistributable:
                left_out[spec.name] = (
                    f"its licence ({spec.license}) does not allow redistribution; build it locally from "
                    f"{spec.homepage}"
                )
            elif spec.own_terms_files and (read := _own_terms_files(out_dir / info["config"], spec)):
                left_out[spec.name] = (
                    f"its rows carry data of {read[0]}, a file of the user's whose terms are its own (the source's "
                    f"licence: {spec.license}); build it locally")
            elif spec.licensed_files:
                others = _unlicensed_files(out_dir / info["config"], spec)
                if others:
                    left_out[spec.name] = (
                        f"its samples come from files its licence ({spec.license}) does not cover, e.g. {others[0]} "
                        f"(it covers files named {', '.join(spec.licensed_files)}; other files' terms are their own)")
    return left_out


def _own_terms_files(config_dir: Path, spec) -> list[str]:
    """The files of ``spec``'s source a built config read (kept) that match ``spec.own_terms_files``."""
    return sorted({e.source_path for e in iter_manifest(config_dir) if e.source == spec.name and e.status == "kept"
                   and any(fnmatch.fnmatch(PurePosixPath(e.source_path).name.lower(), pattern.lower())
                           for pattern in spec.own_terms_files)})


def _unlicensed_files(config_dir: Path, spec) -> list[str]:
    """The files of ``spec``'s source that gave samples of a built config but are none of ``spec.licensed_files``."""
    files = {e.source_path.split(":row ")[0] for e in iter_manifest(config_dir)
             if e.source == spec.name and e.sample_id and e.status in ("kept", "moved")}
    return sorted(f for f in files if not any(fnmatch.fnmatch(PurePosixPath(f).name.lower(), pattern.lower())
                                              for pattern in spec.licensed_files))


def pushed_build_info(info: dict, manifest_lines: list[str], left_out) -> tuple[dict, list[str]]:
    """The config's ``build_info`` and manifest lines without the sources in ``left_out``: the build's figures
    (counts, splits, index files, notes, split repairs) counted again over the pushed sources' manifest lines, the
    warnings of the left-out sources dropped, and their names under ``left_out``. The duplicate figures are those of
    the local build (its duplicate search is not in the manifest): ``duplicates_scope`` says so."""
    dropped = [s["name"] for s in info["sources"] if s["name"] in left_out]
    if not dropped:
        return info, manifest_lines
    kept = [line for line in manifest_lines if line.strip() and json.loads(line)["source"] not in left_out]
    entries = [json.loads(line) for line in kept]
    tally = tally_entries((e["status"], e["split"], e["sample_id"], e["reason"], e["group"]) for e in entries)
    info = dict(info)
    info["sources"] = [s for s in info["sources"] if s["name"] not in left_out]
    info["counts"] = dict(tally["counts"])
    info["splits"] = {s: tally["splits"].get(s, 0) for s in SPLITS}
    info["index_files"] = tally["index_files"]
    info["data_files"] = tally["data_files"]
    info["kept_notes"] = dict(sorted(tally["kept_notes"].items()))
    info["split_repairs"] = {"dropped": sum(tally["repairs"].values()), "groups": tally["repaired_groups"],
                             "reasons": dict(tally["repairs"].most_common(5))}
    info["warnings"] = [w for w in info.get("warnings", []) if not any(w.startswith(f"{n}:") for n in dropped)]
    info["left_out"] = sorted(dropped)
    info["duplicates_scope"] = "the local build, the left-out sources included"
    if all("near_duplicates_searched" in s for s in info["sources"]) and not any(
            s["near_duplicates_searched"] for s in info["sources"]):
        info["near_duplicate_search"] = None  # the sources hashed are all left out: no search of the pushed rows
    return info, kept


def push_dataset(
    out_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False
) -> PushReport:
    """Push ``out_dir`` (a built MultiMed folder) to the dataset repo ``repo_id`` in one commit, which also removes
    what an earlier push left in the pushed configs' folders that this build does not hold (an edited source's old
    fingerprint folder, a file withdrawn on purpose); other folders of the repo stay."""
    out_dir = Path(out_dir)
    if "/" not in repo_id:
        raise ValueError(
            f"repo id {repo_id!r} has no namespace: the bare id 'multimed' is taken on the Hub (a speech data set); "
            "push to ORG/multimed"
        )
    infos = read_build_infos(out_dir)
    if not infos:
        raise ValueError(f"{out_dir} holds no built config (no */build_info.json): run `multimed build` first")
    left_out = left_out_sources(out_dir)
    pushed_infos, rewritten = [], {}
    skipped = set()  # folders (a config, or a config's source) that stay here
    for info in infos:
        config = info["config"]
        if all(s["name"] in left_out for s in info["sources"]):
            skipped.add(config)
            continue
        skipped |= {f"{config}/{s['name']}" for s in info["sources"] if s["name"] in left_out}
        if any(s["name"] in left_out for s in info["sources"]):
            manifest = out_dir / config / MANIFEST
            lines = manifest.read_text().splitlines(keepends=True) if manifest.is_file() else []
            info, lines = pushed_build_info(info, lines, left_out)
            rewritten[f"{config}/{BUILD_INFO}"] = (json.dumps(info, indent=2, sort_keys=True) + "\n").encode("utf-8")
            if manifest.is_file():
                rewritten[f"{config}/{MANIFEST}"] = "".join(lines).encode("utf-8")
        pushed_infos.append({**info, "left_out": list(info.get("left_out", []))})
    uploads = {rel: rewritten.get(rel, path) for rel, path in folder_files(out_dir).items()
               if rel != "README.md" and not rel.startswith(CACHE_DIR + "/")
               and not any(rel.startswith(prefix + "/") for prefix in skipped)}
    if not pushed_infos:
        raise ValueError(f"{out_dir}: every built source is left out ({', '.join(sorted(left_out))}): nothing to push")
    files = list(uploads)
    kept, extra_configs = _remote_configs(repo_id, token, {i["config"] for i in pushed_infos})
    order = {name: i for i, name in enumerate(list_tasks(include_extras=True))}
    card_infos = sorted([*pushed_infos, *kept], key=lambda info: order.get(info["task"], len(order)))
    # the repository's other configs keep their own left-out sources (and shards): a source this build leaves out
    # is named only where it is left out of the card's configs
    theirs = {s["name"] for info in kept for s in info["sources"]}
    card_left_out = {**{f"{info['config']}/{name}": _earlier_reason(name, info) for info in kept
                        for name in info.get("left_out", [])},
                     **{name: why for name, why in left_out.items() if name not in theirs}}
    uploads["README.md"] = render_readme(out_dir, card_left_out, infos=card_infos,
                                         extra_configs=extra_configs).encode("utf-8")
    commit = upload_files(repo_id, uploads, repo_type="dataset", token=token, private=private,
                          commit_message=f"multimed push: {', '.join(i['config'] for i in pushed_infos)}",
                          replace_under=[f"{i['config']}/" for i in pushed_infos])  # an earlier push's shards go
    return PushReport(repo_id, files + ["README.md"], left_out, commit.commit_url)


def _remote_configs(repo_id: str, token, pushed: set[str]) -> tuple[list[dict], list[dict]]:
    """What the repository holds beside the configs this push replaces: the ``build_info.json`` of each config an
    earlier push left there (a file of another tool is not one), and its card's YAML config entries that no such
    build info describes (a config added by hand). Both empty for a repository not made yet."""
    from huggingface_hub import DatasetCard, HfApi
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    from multimed_hf.hub_upload import hub_failure

    api = HfApi(token=token)
    try:
        try:
            paths = api.list_repo_files(repo_id, repo_type="dataset")
        except RepositoryNotFoundError:
            return [], []
        infos = []
        held = {tuple(p.split("/")[:2]) for p in paths if p.count("/") >= 2}  # (config, source) folders there
        for path in sorted(p for p in paths if p.count("/") == 1 and p.endswith("/" + BUILD_INFO)):
            config = path.split("/")[0]
            if config in pushed:
                continue
            info = _build_info_of(Path(api.hf_hub_download(repo_id, path, repo_type="dataset")).read_text())
            if info is None or info["config"] != config:
                continue
            # its own left-out sources, none of this build's; a push of an older version did not list them: the
            # sources whose folder is not in the repository, and its figures still counted them: counted again
            # from the manifest it pushed (which holds every source's lines), as this push does
            if "left_out" in info:
                left = list(info["left_out"])
            else:
                left = [s["name"] for s in info["sources"] if (config, s["name"]) not in held]
                if left and f"{config}/{MANIFEST}" in paths:
                    lines = Path(api.hf_hub_download(repo_id, f"{config}/{MANIFEST}", repo_type="dataset")
                                 ).read_text().splitlines(keepends=True)
                    info = pushed_build_info(info, lines, set(left))[0]
            infos.append({**info, "sources": [s for s in info["sources"] if s["name"] not in left], "left_out": left})
        described = pushed | {info["config"] for info in infos}
        extra = []
        if "README.md" in paths:
            try:
                card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
            except EntryNotFoundError:
                card = None
            configs = (card.data.to_dict().get("configs") or []) if card is not None else []
            extra = [c for c in configs if isinstance(c, dict) and c.get("config_name") not in described]
        return infos, extra
    except Exception as err:
        failure = hub_failure(err, f"reading the dataset repository {repo_id!r}", api.endpoint)
        if failure is err:
            raise
        raise failure from err


def _build_info_of(text: str) -> dict | None:
    """A config's ``build_info.json`` as ``multimed build`` writes it, or None for a file of another kind."""
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("sources"), list) or "config" not in info:
        return None
    try:
        get_task(info.get("task"))
    except (ValueError, KeyError, TypeError):
        return None
    return info


def _earlier_reason(name: str, info: dict) -> str:
    """Why an earlier push left source ``name`` of a config out, as the card says it."""
    spec = get_task(info["task"]).source(name)
    if not spec.redistributable:
        return f"its licence ({spec.license}) does not allow redistribution; build it locally from {spec.homepage}"
    return f"left out by an earlier push of `{info['config']}` (its licence: {spec.license})"
