"""Upload a built folder to the Hub as it is, leaving out sources whose licence forbids redistribution."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from multimed_hf.data.build import CACHE_DIR
from multimed_hf.data.card import read_build_infos, render_readme
from multimed_hf.hub_upload import folder_files, upload_files
from multimed_hf.tasks import get_task

__all__ = ["PushReport", "push_dataset", "left_out_sources"]


@dataclass
class PushReport:
    repo_id: str
    uploaded: list[str]
    left_out: dict[str, str]
    commit_url: str


def left_out_sources(out_dir: Path) -> dict[str, str]:
    """Built sources that may not be redistributed, by name, with the reason."""
    left_out = {}
    for info in read_build_infos(out_dir):
        task = get_task(info["task"])
        for source in info["sources"]:
            spec = task.source(source["name"])
            if not spec.redistributable:
                left_out[spec.name] = (
                    f"its licence ({spec.license}) does not allow redistribution; build it locally from "
                    f"{spec.homepage} with `multimed build {task.name} --source DIR`"
                )
    return left_out


def push_dataset(
    out_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool = False
) -> PushReport:
    """Push ``out_dir`` (a built MultiMed folder) to the dataset repo ``repo_id`` in one commit."""
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
    skipped = {f"{info['config']}/{s['name']}" for info in infos for s in info["sources"] if s["name"] in left_out}
    uploads = {rel: path for rel, path in folder_files(out_dir).items()
               if rel != "README.md" and not rel.startswith(CACHE_DIR + "/")
               and not any(rel.startswith(prefix + "/") for prefix in skipped)}
    files = list(uploads)
    uploads["README.md"] = render_readme(out_dir, left_out).encode("utf-8")
    commit = upload_files(repo_id, uploads, repo_type="dataset", token=token, private=private,
                          commit_message=f"multimed push: {', '.join(i['config'] for i in infos)}")
    return PushReport(repo_id, files + ["README.md"], left_out, commit.commit_url)
