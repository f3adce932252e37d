"""The partitioner: paired / fragmented / partial clients from a built expression_prediction config."""

import json
import uuid

import numpy as np
import pytest

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.federated.partition import (
    FederationPlan, PartitionError, load_client_data, parse_partition, partition_config,
)

TASK = "expression_prediction"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fed_data")
    build_dataset(TASK, [sample_generators()["tcga_promoters"](tmp / "src")], tmp / "multimed", progress=False)
    return tmp / "multimed"


@pytest.fixture(scope="module")
def plan(data, tmp_path_factory):
    return partition_config(data, [TASK], "paired=1,fragmented=1,partial=1", tmp_path_factory.mktemp("fed"), seed=3)


def _rows(plan, name, part):
    return list(load_client_data(plan.client_dir(name))[TASK][part])


def _mri_rows(ids, prefix):
    """brain_tumor-like rows of patients ``p<i>``, one MRI each."""
    from datasets import Dataset

    return Dataset.from_dict({"group_id": [f"p{i}" for i in ids], "sample_id": [f"{prefix}{i}" for i in ids],
                              "modality": ["mri"] * len(ids), "tumor": [i % 2 for i in ids]})


def test_patients_never_span_clients_and_the_plan_reloads(plan):
    owner = {}
    for client in plan.clients:
        for split in ("train", "validation"):
            for row in _rows(plan, client.name, split):
                assert owner.setdefault(row["group_id"], client.name) == client.name
    assert [c.kind for c in FederationPlan.load(plan.root).clients] == ["paired", "fragmented", "partial"]
    assert json.loads((plan.client_dir(0).parent.parent / "federation.json").read_text())["seed"] == 3


def test_partial_client_never_holds_the_dropped_modality(plan):
    rows = _rows(plan, "partial-0", "train") + _rows(plan, "partial-0", "validation")
    assert rows and all(r["profile_indices"] is None and r["promoter"] is not None for r in rows)
    assert all(r["log_expression"] is not None for r in rows)


def test_fragmented_patients_are_split_across_two_clients(plan):
    labelled = {r["sample_id"]: r for r in _rows(plan, "fragmented-0", "train")}
    fragments = {r["sample_id"]: r for r in _rows(plan, "partial-0", "fragments")}
    assert fragments and set(fragments) <= set(labelled)
    for sid, piece in fragments.items():
        assert piece["promoter"] is not None and piece["profile_indices"] is None and piece["log_expression"] is None
        own = labelled[sid]
        assert own["promoter"] is None and own["profile_indices"] is not None and own["log_expression"] is not None
    assert plan.clients[1].partner == {TASK: "partial-0"} and plan.clients[2].fragments == {TASK: len(fragments)}
    # the paired client keeps its rows whole
    assert any(r["promoter"] is not None and r["profile_indices"] is not None for r in _rows(plan, "paired-0", "train"))


def test_two_fragmented_clients_with_one_partner_both_leave_their_fragments_there(data, tmp_path):
    # before: the partner's fragments.parquet was written once per fragmented client, so it held only the last one's
    # (27 of the 54 rows the plan counted): the first client's split-off modality was written nowhere
    plan = partition_config(data, [TASK], "fragmented=2,partial=1", tmp_path / "fed", seed=3)
    fragments = _rows(plan, "partial-0", "fragments")
    assert len(fragments) == plan.clients[2].fragments[TASK]
    for name in ("fragmented-0", "fragmented-1"):
        split_off = {r["sample_id"] for r in _rows(plan, name, "train") if r["promoter"] is None}
        assert split_off and split_off <= {r["sample_id"] for r in fragments}, name


def test_same_seed_same_clients_other_seed_other_clients(data, plan, tmp_path):
    again = partition_config(data, [TASK], "paired=1,fragmented=1,partial=1", tmp_path / "a", seed=3)
    other = partition_config(data, [TASK], "paired=1,fragmented=1,partial=1", tmp_path / "b", seed=4)
    ids = lambda p: [sorted(r["sample_id"] for r in _rows(p, c.name, "train")) for c in p.clients]
    assert ids(again) == ids(plan) and ids(other) != ids(plan)


def test_bad_requests_say_what_was_expected(data, tmp_path):
    assert parse_partition("paired=2, partial=1") == {"paired": 2, "partial": 1}
    with pytest.raises(PartitionError, match="not one of"):
        parse_partition("vertical=1")
    with pytest.raises(PartitionError, match="is not KIND=COUNT"):
        parse_partition("paired")
    with pytest.raises(PartitionError, match="no other client"):
        partition_config(data, [TASK], "fragmented=1", tmp_path / "x")
    with pytest.raises(PartitionError, match="distinct 'source' values for 3 clients"):
        partition_config(data, [TASK], "paired=3", tmp_path / "y", by="source")


def _image_rows(folder):
    """Six rows of an image task whose ``image`` column names PNG files under ``folder`` (no bytes inside)."""
    from datasets import Dataset, Image
    from PIL import Image as PILImage

    folder.mkdir(parents=True)
    pixels = np.random.default_rng(0).integers(0, 255, size=(6, 5, 7), dtype=np.uint8)
    paths = []
    for i, array in enumerate(pixels):
        paths.append(str(folder / f"scan{i}.png"))
        PILImage.fromarray(array).save(paths[-1])
    rows = Dataset.from_dict({"image": paths, "modality": ["mri"] * 6, "tumor": [i % 2 for i in range(6)],
                              "group_id": [f"p{i}" for i in range(6)], "sample_id": [f"s{i}" for i in range(6)]})
    rows = rows.cast_column("image", Image())
    assert rows.with_format("arrow")[:]["image"][0]["bytes"].as_py() is None  # paths only, as the test premise
    return rows, {f"s{i}": array for i, array in enumerate(pixels)}


def _assert_self_contained(client_dirs, task, pixels, source):
    import shutil

    shutil.rmtree(source)  # the source files are gone: every client folder must still decode its images
    seen = {}
    for client_dir in client_dirs:
        for path in client_dir.rglob("*.parquet"):
            assert str(source).encode() not in path.read_bytes(), path  # no build-machine path in the shard
        for split in load_client_data(client_dir)[task].values():
            for row in split:
                seen[row["sample_id"]] = np.asarray(row["image"])
    assert set(seen) and set(seen) <= set(pixels)
    for sid, array in seen.items():
        np.testing.assert_array_equal(array, pixels[sid])


def test_a_partition_folder_embeds_its_image_bytes(tmp_path):
    rows, pixels = _image_rows(tmp_path / "scans")
    splits = {"train": rows.select(range(4)), "validation": rows.select([4, 5])}
    plan = partition_config("unused", ["brain_tumor"], "paired=2", tmp_path / "fed", datasets={"brain_tumor": splits})
    _assert_self_contained([plan.client_dir(c) for c in plan.clients], "brain_tumor", pixels, tmp_path / "scans")


def test_a_clients_file_folder_embeds_its_image_bytes(tmp_path):
    from multimed_hf.federated.clients_file import clients_from_file

    rows, pixels = _image_rows(tmp_path / "scans")
    # a folder a hospital wrote itself with to_parquet (image paths, no bytes); a name of its own, since
    # load_dataset caches a local folder by its name (DESIGN.md: a rewritten folder of the same name loads stale)
    data = tmp_path / f"hospital-{uuid.uuid4().hex[:12]}"
    (data / "brain_tumor").mkdir(parents=True)
    rows.select(range(4)).to_parquet(str(data / "brain_tumor" / "train.parquet"))
    rows.select([4, 5]).to_parquet(str(data / "brain_tumor" / "validation.parquet"))
    (data / "README.md").write_text("---\nconfigs:\n- config_name: brain_tumor\n  data_files:\n  - split: train\n"
                                    "    path: brain_tumor/train.parquet\n  - split: validation\n"
                                    "    path: brain_tumor/validation.parquet\n---\n")
    (tmp_path / "clients.yaml").write_text(f"data: {data}\nclients:\n  - name: a\n    tasks: {{brain_tumor: {{}}}}\n")
    plan = clients_from_file(tmp_path / "clients.yaml", tmp_path / "fed")
    _assert_self_contained([plan.client_dir("a")], "brain_tumor", pixels, tmp_path / "scans")


def test_a_patient_in_two_tasks_is_at_one_client(tmp_path):
    # before: each task's groups were shuffled and cut on their own, so a patient of both disease and brain_tumor
    # (disease re-uses brain_tumor's images) landed at two clients in 13 of 28 cases on the sample data
    datasets = {"disease": {"train": _mri_rows(range(40), "d"), "validation": _mri_rows(range(40, 50), "dv")},
                "brain_tumor": {"train": _mri_rows(range(0, 40, 2), "b"),
                                "validation": _mri_rows(range(40, 50, 3), "bv")}}
    plan = partition_config("unused", ["disease", "brain_tumor"], "paired=3", tmp_path / "fed", datasets=datasets)
    owner: dict[str, str] = {}
    held = {}
    for client in plan.clients:
        for task, splits in load_client_data(plan.client_dir(client)).items():
            for split, part in splits.items():
                held[client.name, task, split] = len(part)
                for group in part["group_id"]:
                    assert owner.setdefault(group, client.name) == client.name, (group, task, split)
    assert all(held[c.name, "brain_tumor", "train"] > 0 for c in plan.clients)
    counts = [held[c.name, "disease", "train"] for c in plan.clients]
    assert max(counts) - min(counts) <= 1  # the first task: equal shares, as before


def test_a_client_left_without_rows_of_a_split_is_warned(tmp_path, caplog):
    # before: a client whose patients of a task's split all went to other clients held an empty file, unsaid (it
    # then trained nothing on that task)
    # brain_tumor's validation patients are three of disease's training patients: they sit where disease put them
    datasets = {"disease": {"train": _mri_rows(range(30), "d")},
                "brain_tumor": {"train": _mri_rows(range(30), "b"), "validation": _mri_rows([0, 1, 2], "bv")}}
    with caplog.at_level("WARNING", logger="multimed_hf.federated.partition"):
        plan = partition_config("unused", ["disease", "brain_tumor"], "paired=3", tmp_path / "fed", seed=0,
                                datasets=datasets)
    empty = [c.name for c in plan.clients if c.rows["brain_tumor"]["validation"] == 0]
    assert empty, [c.rows for c in plan.clients]
    assert any("hold no row" in r.message and all(f"{name}: brain_tumor validation" in r.message for name in empty)
               for r in caplog.records), caplog.text


def test_a_new_plan_replaces_an_earlier_federations_client_folders(tmp_path, caplog):
    # before: a second federation into the same folder left the first one's files (a task, a validation split, a
    # fragments file it no longer names), and every client read them: stale rows trained and validated on silently
    from multimed_hf.federated.clients_file import clients_from_file

    both = {"disease": {"train": _mri_rows(range(20), "d"), "validation": _mri_rows(range(20, 26), "dv")},
            "brain_tumor": {"train": _mri_rows(range(0, 20, 2), "b"),
                            "validation": _mri_rows(range(20, 26, 2), "bv")}}
    first = partition_config("unused", ["disease", "brain_tumor"], "paired=2", tmp_path / "fed", datasets=both)
    assert set(load_client_data(first.client_dir("paired-0"))) == {"disease", "brain_tumor"}
    one = {"brain_tumor": {"train": both["brain_tumor"]["train"]}}
    with caplog.at_level("WARNING", logger="multimed_hf.federated.partition"):
        second = partition_config("unused", ["brain_tumor"], "paired=1", tmp_path / "fed", datasets=one,
                                  splits=("train",))
    assert "replacing the client folders of an earlier federation" in caplog.text
    assert {k: set(v) for k, v in load_client_data(second.client_dir("paired-0")).items()} == {"brain_tumor": {"train"}}
    assert not second.client_dir("paired-1").exists()
    # a clients file into the same folder: only what the file names
    data = tmp_path / f"hospital-{uuid.uuid4().hex[:12]}"
    (data / "brain_tumor").mkdir(parents=True)
    _image_rows(tmp_path / "scans")[0].to_parquet(str(data / "brain_tumor" / "train.parquet"))
    (data / "README.md").write_text("---\nconfigs:\n- config_name: brain_tumor\n  data_files:\n  - split: train\n"
                                    "    path: brain_tumor/train.parquet\n---\n")
    (tmp_path / "clients.yaml").write_text(f"data: {data}\nclients:\n  - name: a\n"
                                           "    tasks: {brain_tumor: {validation: null}}\n")
    third = clients_from_file(tmp_path / "clients.yaml", tmp_path / "fed")
    assert not [p for p in (tmp_path / "fed").iterdir() if p.name.startswith(".replaced")]
    assert sorted(p.name for p in (tmp_path / "fed" / "clients").iterdir() if p.is_dir()) == ["a"]
    assert set(load_client_data(third.client_dir("a"))["brain_tumor"]) == {"train"}


def test_a_failed_new_plan_leaves_the_earlier_federation_and_a_foreign_clients_folder_is_refused(tmp_path):
    # before: the earlier client folders were removed before the new plan was known to work (a refused one left
    # half-written folders), and any clients/ folder under out_dir was removed, a user's own too
    rows = _mri_rows(range(12), "s")
    first = partition_config("unused", ["brain_tumor"], "paired=2", tmp_path / "fed",
                             datasets={"brain_tumor": {"train": rows}}, splits=("train",))
    before = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "fed").rglob("*"))
    with pytest.raises(PartitionError, match="distinct 'group_id' values for 20 clients"):
        partition_config("unused", ["brain_tumor"], "paired=20", tmp_path / "fed",
                         datasets={"brain_tumor": {"train": rows}}, splits=("train",))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "fed").rglob("*")) == before
    assert FederationPlan.load(first.root).clients == first.clients
    mine = tmp_path / "mine" / "clients"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("a user's own file")
    with pytest.raises(PartitionError, match="exists and is no federation's"):
        partition_config("unused", ["brain_tumor"], "paired=2", tmp_path / "mine",
                         datasets={"brain_tumor": {"train": rows}}, splits=("train",))
    assert (mine / "notes.txt").is_file()
