"""Fake-Hub tests: the real huggingface_hub / datasets / transformers clients against tests/fake_hub.py.

Nothing above the HTTP layer is mocked: pushes go through preupload, the LFS batch API + PUT and the ndjson commit,
loads through tree listings, paths-info and resolve downloads.
"""

import io

import numpy as np
import pytest

# huggingface_hub's LFS upload PUTs a file object with `data=`, which httpx2 deprecates: the library's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")


def _png(rgb, size=(5, 4)):
    from PIL import Image

    return Image.new("RGB", size, rgb)


def test_fake_hub_dataset_push_to_hub_then_load_dataset(fake_hub):
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=["glioma", "meningioma", "no_tumor"]),
         "id": datasets.Value("string")}
    )
    colours = {"train": [(255, 0, 0), (0, 255, 0), (0, 0, 255)], "test": [(10, 20, 30), (200, 100, 50)]}
    rows = {
        split: {"image": [_png(c) for c in cs], "label": [i % 3 for i in range(len(cs))],
                "id": [f"{split}-{i}" for i in range(len(cs))]}
        for split, cs in colours.items()
    }
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(r, features=features) for s, r in rows.items()})
    dd.push_to_hub("org/thing", config_name="a")

    files = fake_hub.files("org/thing")
    assert {"a/train-00000-of-00001.parquet", "a/test-00000-of-00001.parquet", "README.md"} <= set(files)
    assert {"a/train-00000-of-00001.parquet", "a/test-00000-of-00001.parquet"} <= fake_hub.lfs_paths("org/thing")
    assert files["a/train-00000-of-00001.parquet"][:4] == b"PAR1"
    readme = files["README.md"].decode()
    assert "config_name: a" in readme and "a/train-*" in readme and "meningioma" in readme

    loaded = datasets.load_dataset("org/thing", "a")
    assert sorted(loaded) == ["test", "train"]
    assert loaded["train"].features["label"].names == ["glioma", "meningioma", "no_tumor"]
    for split, cs in colours.items():
        ds = loaded[split]
        assert ds["id"] == rows[split]["id"] and ds["label"] == rows[split]["label"]
        for row, colour in zip(ds, cs):
            arr = np.asarray(row["image"])  # decoded by datasets' Image feature
            assert arr.shape == (4, 5, 3) and (arr == np.array(colour, dtype=np.uint8)).all()
    # The load went through the fake Hub (tree listing + resolve downloads), not a cache.
    assert any("/api/datasets/org/thing/tree/" in r or "/paths-info/" in r for r in fake_hub.requests)
    assert any(r.startswith("GET ") and "/datasets/org/thing/resolve/" in r and r.endswith(".parquet")
               for r in fake_hub.requests)


def test_fake_hub_upload_folder_with_configs_then_load_dataset(fake_hub, tmp_path):
    import datasets
    from huggingface_hub import HfApi

    folder = tmp_path / "multimed"
    shards = {
        "cfg/src/fp/train-00000-of-00001.parquet": {"x": [1, 2, 3], "y": ["a", "b", "c"]},
        "cfg/src/fp/test-00000-of-00001.parquet": {"x": [40], "y": ["d"]},
        "other/src/fp/train-00000-of-00001.parquet": {"x": [7, 8], "y": ["o", "p"]},
    }
    for rel, cols in shards.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_dict(cols).to_parquet(str(folder / rel))
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: cfg\n  data_files:\n"
        "  - split: train\n    path: cfg/src/fp/train-*.parquet\n"
        "  - split: test\n    path: cfg/src/fp/test-*.parquet\n"
        "- config_name: other\n  data_files:\n"
        "  - split: train\n    path: other/src/fp/train-*.parquet\n"
        "---\n# A tiny repo\n"
    )

    api = HfApi()
    assert api.whoami()["name"] == "fake-user"
    api.create_repo("org/repo", repo_type="dataset")
    info = api.upload_folder(folder_path=folder, repo_id="org/repo", repo_type="dataset", commit_message="build 1")
    assert info.oid == api.dataset_info("org/repo").sha

    assert sorted(api.list_repo_files("org/repo", repo_type="dataset")) == sorted(
        [".gitattributes", "README.md", *shards]
    )
    files = fake_hub.files("org/repo")
    assert files["README.md"] == (folder / "README.md").read_bytes()
    for rel in shards:
        assert files[rel] == (folder / rel).read_bytes()
    assert fake_hub.lfs_paths("org/repo") == set(shards)  # README went as a regular file, shards through LFS
    assert fake_hub.commit_titles("org/repo")[0] == "build 1"

    cfg = datasets.load_dataset("org/repo", "cfg")
    assert cfg["train"].to_dict() == shards["cfg/src/fp/train-00000-of-00001.parquet"]
    assert cfg["test"].to_dict() == shards["cfg/src/fp/test-00000-of-00001.parquet"]
    other = datasets.load_dataset("org/repo", "other", split="train")
    assert other.to_dict() == shards["other/src/fp/train-00000-of-00001.parquet"]


def test_fake_hub_model_push_to_hub_then_from_pretrained(fake_hub):
    import torch
    from transformers import AutoModel, BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    model = BertModel(config)
    model.push_to_hub("org/m")

    files = fake_hub.files("org/m", repo_type="model")
    assert {"config.json", "model.safetensors"} <= set(files)
    assert "model.safetensors" in fake_hub.lfs_paths("org/m", repo_type="model")

    loaded = AutoModel.from_pretrained("org/m")
    assert type(loaded) is BertModel and loaded.config.hidden_size == 16
    expected, got = model.state_dict(), loaded.state_dict()
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    ids = torch.tensor([[1, 5, 9, 2]])
    model.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, loaded(ids).last_hidden_state)


def test_fake_hub_unserved_route_raises_naming_the_url(fake_hub):
    from huggingface_hub import HfApi
    from huggingface_hub.utils import get_session

    UnservedRequest = fake_hub.UnservedRequest

    with pytest.raises(UnservedRequest, match=r"GET http://fake-hub\.test/api/models/org/m/refs"):
        HfApi().list_repo_refs("org/m")
    # A request to the real Hub (or any other host) never leaves the process either.
    with pytest.raises(UnservedRequest, match=r"https://huggingface\.co/api/whoami-v2"):
        get_session().get("https://huggingface.co/api/whoami-v2")
    # Nor does any other socket: only loopback connections are allowed while the fake Hub is installed.
    import socket

    with pytest.raises(UnservedRequest, match="example.org"):
        socket.create_connection(("example.org", 80), timeout=1)
    assert len(fake_hub.unserved) == 2
    fake_hub.unserved.clear()  # provoked on purpose: don't fail the test at teardown


def test_fake_hub_missing_repo_and_file_are_hub_errors(fake_hub):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    with pytest.raises(RepositoryNotFoundError):
        HfApi().dataset_info("org/nope")
    HfApi().create_repo("org/empty", repo_type="dataset")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/empty", "missing.txt", repo_type="dataset")
    assert set(fake_hub.files("org/empty")) == {".gitattributes"}


def test_fake_hub_repush_replaces_config_and_loads_fresh(fake_hub):
    import datasets

    datasets.Dataset.from_dict({"x": [1, 2, 3]}).push_to_hub("org/re", config_name="c")
    assert datasets.load_dataset("org/re", "c", split="train")["x"] == [1, 2, 3]
    first = set(fake_hub.files("org/re"))

    datasets.Dataset.from_dict({"x": [9, 8]}).push_to_hub("org/re", config_name="c", num_shards=2)
    files = fake_hub.files("org/re")
    # The old single shard was deleted in the same commit that added the two new ones.
    assert "c/train-00000-of-00001.parquet" in first and "c/train-00000-of-00001.parquet" not in files
    assert {"c/train-00000-of-00002.parquet", "c/train-00001-of-00002.parquet"} <= set(files)
    assert sorted(datasets.load_dataset("org/re", "c", split="train")["x"]) == [8, 9]
    assert len(fake_hub.commit_titles("org/re")) == 3  # initial + two pushes


def test_fake_hub_file_system_paths_info_tree_and_ranged_reads(fake_hub):
    from huggingface_hub import HfApi, HfFileSystem
    from huggingface_hub.hf_api import RepoFile, RepoFolder

    api = HfApi()
    api.create_repo("org/fs", repo_type="dataset")
    payload = bytes(range(256)) * 8  # binary => LFS
    api.upload_file(path_or_fileobj=payload, path_in_repo="d/blob.bin", repo_id="org/fs", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"hello\n", path_in_repo="d/note.txt", repo_id="org/fs", repo_type="dataset",
                    commit_message="add note")

    infos = {i.path: i for i in api.get_paths_info("org/fs", ["d", "d/blob.bin", "d/note.txt", "nope"],
                                                    repo_type="dataset", expand=True)}
    assert set(infos) == {"d", "d/blob.bin", "d/note.txt"}
    assert isinstance(infos["d"], RepoFolder) and isinstance(infos["d/blob.bin"], RepoFile)
    assert infos["d/blob.bin"].lfs is not None and infos["d/blob.bin"].lfs.size == len(payload)
    assert infos["d/note.txt"].lfs is None and infos["d/note.txt"].size == 6
    assert infos["d/note.txt"].last_commit.title == "add note"
    assert infos["d/blob.bin"].last_commit.title != "add note"  # unchanged by the second commit

    tree = sorted(e.path for e in api.list_repo_tree("org/fs", repo_type="dataset", recursive=True))
    assert tree == [".gitattributes", "d", "d/blob.bin", "d/note.txt"]
    assert api.file_exists("org/fs", "d/note.txt", repo_type="dataset")
    assert not api.file_exists("org/fs", "d/missing.txt", repo_type="dataset")

    fs = HfFileSystem()
    listed = sorted(fs.ls("datasets/org/fs/d", detail=False))
    assert listed == ["datasets/org/fs/d/blob.bin", "datasets/org/fs/d/note.txt"]
    with fs.open("datasets/org/fs/d/blob.bin", "rb", block_size=64) as f:
        f.seek(300)
        assert f.read(10) == payload[300:310]  # a Range request, answered with 206
    assert any(r.startswith("GET ") and "d/blob.bin" in r for r in fake_hub.requests)
    assert fs.read_text("datasets/org/fs/d/note.txt") == "hello\n"
    assert any(r.startswith("POST ") and "/paths-info/" in r for r in fake_hub.requests)
