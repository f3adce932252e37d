"""`multimed push` through a fake Hub at the HTTP boundary: the real huggingface_hub and datasets clients run."""

import dataclasses

import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.cli import main
from multimed_hf.data import push as push_module
from multimed_hf.data.push import push_dataset
from multimed_hf.tasks import get_task

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
def built(tmp_path):
    generators = sample_generators()
    out = tmp_path / "multimed"
    build_dataset("brain_tumor", [generators["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")], out, progress=False)
    build_dataset("diabetic_retinopathy", [generators["OCT2017"](tmp_path / "oct")], out, progress=False)
    return out


def test_fake_hub_push_then_load_back(built, fake_hub, capsys):
    assert main(["push", str(built), "--repo", "org/multimed", "--token", fake_hub.token]) == 0
    assert "pushed" in capsys.readouterr().out
    files = fake_hub.files("org/multimed")
    assert not any(path.startswith(".build_cache") for path in files)
    assert "brain_tumor/manifest.jsonl" in files
    for task in ("brain_tumor", "diabetic_retinopathy"):
        remote = load_dataset("org/multimed", task)
        local = load_dataset(str(built), task)
        for split in local:
            assert remote[split]["sample_id"] == local[split]["sample_id"]
        assert remote["test"][0]["image"].tobytes() == local["test"][0]["image"].tobytes()


def test_fake_hub_push_leaves_out_a_non_redistributable_source(built, fake_hub, monkeypatch):
    task = get_task("diabetic_retinopathy")
    closed = dataclasses.replace(task.source("oct2017"), redistributable=False, license="no redistribution")
    restricted = dataclasses.replace(task, sources=(closed,))
    monkeypatch.setattr(push_module, "get_task", lambda name: restricted if name == task.name else get_task(name))
    report = push_dataset(built, "org/multimed", token=fake_hub.token)
    assert set(report.left_out) == {"oct2017"}
    files = fake_hub.files("org/multimed")
    assert not any(path.startswith("diabetic_retinopathy/oct2017/") for path in files)
    readme = files["README.md"].decode()
    assert "diabetic_retinopathy/oct2017/" not in readme.split("---")[1], "the YAML lists a shard not uploaded"
    assert "`oct2017`: its licence (no redistribution) does not allow redistribution" in readme
    assert load_dataset("org/multimed", "brain_tumor")["test"].num_rows > 0
    with pytest.raises(ValueError, match="diabetic_retinopathy"):
        load_dataset("org/multimed", "diabetic_retinopathy")


def test_push_of_an_unbuilt_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no built config"):
        push_dataset(tmp_path, "org/multimed")


def test_a_second_push_removes_what_the_build_no_longer_holds(built, fake_hub, tmp_path):
    # before: push only added files: an edited source's old fingerprint folder (and a file withdrawn on purpose)
    # stayed in the repository's head beside the new shards
    stale = built / "brain_tumor" / "brain_tumor_mri" / "000000000000" / "train-00000-of-00001.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"PAR1 an earlier build's shard")
    push_dataset(built, "org/multimed", token=fake_hub.token)
    relpath = stale.relative_to(built).as_posix()
    assert relpath in fake_hub.files("org/multimed")
    stale.unlink()
    stale.parent.rmdir()
    from huggingface_hub import HfApi  # the user's own file elsewhere in the repository stays

    HfApi(endpoint=fake_hub.endpoint, token=fake_hub.token).upload_file(
        path_or_fileobj=b"notes", path_in_repo="NOTES.md", repo_id="org/multimed", repo_type="dataset")
    push_dataset(built, "org/multimed", token=fake_hub.token)
    files = fake_hub.files("org/multimed")
    assert relpath not in files and "NOTES.md" in files and "brain_tumor/manifest.jsonl" in files
    assert load_dataset("org/multimed", "brain_tumor")["test"].num_rows > 0


def test_pushing_one_config_keeps_the_others_in_the_card(fake_hub, tmp_path):
    # before: the card listed the pushing build's configs only, so an earlier push's brain_tumor stayed in the
    # repository but load_dataset("org/multimed", "brain_tumor") no longer found it
    generators = sample_generators()
    build_dataset("brain_tumor", [generators["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")], tmp_path / "a",
                  progress=False)
    build_dataset("diabetic_retinopathy", [generators["OCT2017"](tmp_path / "oct")], tmp_path / "b", progress=False)
    push_dataset(tmp_path / "a", "org/multimed", token=fake_hub.token)
    push_dataset(tmp_path / "b", "org/multimed", token=fake_hub.token)
    readme = fake_hub.files("org/multimed")["README.md"].decode()
    assert "config_name: brain_tumor" in readme and "config_name: diabetic_retinopathy" in readme
    assert readme.index("## `brain_tumor`") < readme.index("## `diabetic_retinopathy`")  # registry order
    for task, folder in (("brain_tumor", "a"), ("diabetic_retinopathy", "b")):
        remote = load_dataset("org/multimed", task)
        assert remote["test"]["sample_id"] == load_dataset(str(tmp_path / folder), task)["test"]["sample_id"]


def test_a_source_holding_files_its_licence_does_not_cover_is_not_pushed(tmp_path):
    # before: any .h5ad beside scanpy's pbmc68k_reduced (a user's liver cells, our synthetic donors) was pushed under
    # 10x Genomics' CC-BY-4.0 and the Zheng et al. citation
    from multimed_hf.data.push import left_out_sources

    source = sample_generators()["pbmc68k_reduced"](tmp_path / "pbmc")
    others = sorted(p.name for p in source.glob("*.h5ad") if p.name != "10x_pbmc68k_reduced.h5ad")
    assert others
    build_dataset("cell_type", [source], tmp_path / "mixed", progress=False)
    reason = left_out_sources(tmp_path / "mixed").get("pbmc68k_reduced", "")
    assert reason.startswith("its samples come from files its licence") and "*pbmc68k_reduced*.h5ad" in reason
    for name in others:
        (source / name).unlink()
    build_dataset("cell_type", [source], tmp_path / "scanpy_only", progress=False)
    assert "pbmc68k_reduced" not in left_out_sources(tmp_path / "scanpy_only")
    # scanpy's file under the name sc.datasets.pbmc68k_reduced().write(...) gives it (before: called unlicensed)
    (source / "10x_pbmc68k_reduced.h5ad").rename(source / "pbmc68k_reduced.h5ad")
    build_dataset("cell_type", [source], tmp_path / "renamed", progress=False)
    assert "pbmc68k_reduced" not in left_out_sources(tmp_path / "renamed")


def test_promoter_rows_carrying_a_users_cells_are_not_pushed(tmp_path):
    # before: the pseudo-bulk profiles of the .h5ad beside the promoters (a user's own cells) were pushed, the source
    # "redistributable: yes"
    from multimed_hf.data.push import left_out_sources

    source = sample_generators()["tcga_promoters"](tmp_path / "tcga")
    build_dataset("expression_prediction", [source], tmp_path / "with_cells", progress=False)
    reason = left_out_sources(tmp_path / "with_cells").get("tcga_promoters", "")
    assert reason.startswith("its rows carry data of pbmc_cells.h5ad, a file of the user's whose terms are its own")
    for path in source.glob("*.h5ad"):
        path.unlink()
    build_dataset("expression_prediction", [source], tmp_path / "without", progress=False)
    assert "tcga_promoters" not in left_out_sources(tmp_path / "without")


def test_a_push_keeps_what_the_repository_holds_that_it_does_not_replace(fake_hub, tmp_path):
    # before: a config added by hand (no build_info.json of ours) dropped out of the card, and another tool's
    # build_info.json made every push fail with KeyError: 'task'
    import json

    from huggingface_hub import HfApi

    api = HfApi(endpoint=fake_hub.endpoint, token=fake_hub.token)
    api.create_repo("org/mixed", repo_type="dataset")
    import io

    import pandas as pd

    shard = io.BytesIO()
    pd.DataFrame({"a": [1], "b": [2]}).to_parquet(shard)
    readme = "---\nconfigs:\n- config_name: mine\n  data_files:\n  - split: train\n    path: mine/*.parquet\n---\n"
    for path, data in (("README.md", readme.encode()), ("mine/train.parquet", shard.getvalue()),
                       ("extra/build_info.json", json.dumps({"tool": "other"}).encode())):
        api.upload_file(path_or_fileobj=data, path_in_repo=path, repo_id="org/mixed", repo_type="dataset")
    build_dataset("brain_tumor", [sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")], tmp_path / "a",
                  progress=False)
    push_dataset(tmp_path / "a", "org/mixed", token=fake_hub.token)
    assert load_dataset("org/mixed", "mine")["train"].num_rows == 1
    assert load_dataset("org/mixed", "brain_tumor")["test"].num_rows > 0


def test_a_config_this_build_leaves_out_stays_loadable_from_an_earlier_push(fake_hub, tmp_path):
    # before: this build's left-out pbmc68k_reduced (other .h5ad beside scanpy's) was applied to the repository's
    # cell_type of an earlier push: its shards stayed but left the card, and the card named a local file
    source = sample_generators()["pbmc68k_reduced"]
    clean = source(tmp_path / "clean")
    for path in clean.glob("*.h5ad"):
        if path.name != "10x_pbmc68k_reduced.h5ad":
            path.unlink()
    build_dataset("cell_type", [clean], tmp_path / "first", progress=False)
    push_dataset(tmp_path / "first", "org/mm", token=fake_hub.token)
    rows = load_dataset("org/mm", "cell_type")["test"].num_rows
    build_dataset("cell_type", [source(tmp_path / "mixed")], tmp_path / "second", progress=False)  # left out
    build_dataset("brain_tumor", [sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")],
                  tmp_path / "second", progress=False)
    report = push_dataset(tmp_path / "second", "org/mm", token=fake_hub.token)
    assert "pbmc68k_reduced" in report.left_out
    assert load_dataset("org/mm", "cell_type")["test"].num_rows == rows
    card = fake_hub.files("org/mm")["README.md"].decode()
    assert "config_name: cell_type" in card and "config_name: brain_tumor" in card
    assert "its samples come from files its licence" not in card  # this build's reason, not the repository's


def test_a_config_pushed_by_an_older_version_keeps_its_left_out_source_out_of_the_card(fake_hub, tmp_path):
    # before: its build_info.json (no left_out key) listed BreakHis, whose shards were never uploaded: the card's
    # YAML named files not in the repository and its body a source left out
    from huggingface_hub import HfApi

    from multimed_hf.data.card import render_readme
    from multimed_hf.data.push import left_out_sources

    old = tmp_path / "old"
    make = sample_generators()
    build_dataset("breast_cancer", [make["BreaKHis_v1"](tmp_path / "bh"), make["cbis_ddsm"](tmp_path / "cbis")], old,
                  progress=False)
    left = left_out_sources(old)
    assert "breakhis" in left
    api = HfApi(endpoint=fake_hub.endpoint, token=fake_hub.token)
    api.create_repo("org/old", repo_type="dataset")
    for path in sorted((old / "breast_cancer").rglob("*")):  # as an older push uploaded it
        rel = path.relative_to(old).as_posix()
        if path.is_file() and not rel.startswith("breast_cancer/breakhis/"):
            api.upload_file(path_or_fileobj=str(path), path_in_repo=rel, repo_id="org/old", repo_type="dataset")
    api.upload_file(path_or_fileobj=render_readme(old, left).encode(), path_in_repo="README.md", repo_id="org/old",
                    repo_type="dataset")
    build_dataset("brain_tumor", [make["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")], tmp_path / "new", progress=False)
    push_dataset(tmp_path / "new", "org/old", token=fake_hub.token)
    card = fake_hub.files("org/old")["README.md"].decode()
    assert "breast_cancer/breakhis/" not in card.split("---")[1]
    hub = load_dataset("org/old", "breast_cancer")
    assert hub["test"].num_rows > 0
    # its split counts are the rows on the Hub, counted again from the manifest it pushed (before: BreakHis's too)
    section = card.split("## `breast_cancer`")[1].split("\n## ")[0]
    counts = "\n".join(f"| {split} | {hub[split].num_rows} |" for split in ("train", "validation", "test"))
    assert f"| split | samples |\n|---|---|\n{counts}\n" in section, section


def test_a_push_leaving_out_every_hashed_source_drops_the_near_duplicate_search_from_the_card(tmp_path):
    # before: disease pushed without APTOS (left out, the one source whose images are hashed) still described a
    # near-duplicate search none of the pushed rows had
    from multimed_hf.data.card import read_build_infos
    from multimed_hf.data.push import pushed_build_info

    make = sample_generators()
    build_dataset("disease", [make["cell_images"](tmp_path / "cells"),
                              make["aptos2019-blindness-detection"](tmp_path / "aptos")], tmp_path / "out",
                  progress=False)
    (info,) = read_build_infos(tmp_path / "out")
    hashed = {s["name"]: s["near_duplicates_searched"] for s in info["sources"]}
    assert info["near_duplicate_search"] and True in hashed.values()
    lines = (tmp_path / "out" / "disease" / "manifest.jsonl").read_text().splitlines(keepends=True)
    searched = [name for name, flag in hashed.items() if flag]
    pushed, _ = pushed_build_info(info, lines, set(searched))
    assert pushed["near_duplicate_search"] is None
    unhashed = [name for name, flag in hashed.items() if not flag]
    if unhashed:
        kept, _ = pushed_build_info(info, lines, set(unhashed))
        assert kept["near_duplicate_search"] == info["near_duplicate_search"]
