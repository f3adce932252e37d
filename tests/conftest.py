"""Shared pytest fixtures."""

import importlib
from pathlib import Path
from typing import NamedTuple

import pytest


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """An in-process fake of the Hub's HTTP API (tests/fake_hub.py) that the real huggingface_hub, datasets and
    transformers clients talk to; HF caches live under tmp_path. Yields a FakeHub: `.endpoint`, `.token`,
    `.files(repo_id, repo_type="dataset")`, `.lfs_paths(...)`, `.commit_titles(...)`, `.requests`, `.unserved`.
    Fails the test if any request went to a route the fake does not serve (even one a client swallowed);
    a test that provokes one on purpose clears `fake_hub.unserved`."""
    try:
        from fake_hub import installed_fake_hub
    except ImportError:  # tests/ made a package later
        from tests.fake_hub import installed_fake_hub

    with installed_fake_hub(monkeypatch, tmp_path) as hub:
        yield hub
        if hub.unserved:
            pytest.fail("fake Hub got requests it does not serve:\n  " + "\n  ".join(hub.unserved))


class BuiltSample(NamedTuple):
    """One bundled sample source built alone: its generated folder, the built folder (named ``multimed``), the
    build report and the config loaded back with plain ``load_dataset``."""

    root: Path
    out: Path
    report: object
    ds: object


@pytest.fixture(scope="session")
def build_sample(tmp_path_factory):
    """Factory ``build_sample(task, source, **make_kwargs) -> BuiltSample``: the source's bundled sample
    (``dataset_scripts/sample_sources/<source>.py``, made with ``make_kwargs``) generated, built as ``task`` and
    loaded back; each combination is built once per session, so the builder contract test
    (test_builder_contract.py) and a builder's own tests share one build. Tests must not edit what it returns."""
    from datasets import load_dataset

    from multimed_hf.api import build_dataset

    built = {}

    def build(task: str, source: str, **make_kwargs) -> BuiltSample:
        key = (task, source, tuple(sorted(make_kwargs.items())))
        if key not in built:
            sample = importlib.import_module(f"dataset_scripts.sample_sources.{source}")
            tmp = tmp_path_factory.mktemp(f"{task}-{source}")
            root = sample.make(tmp / "src" / sample.FOLDER, **make_kwargs)
            out = tmp / "multimed"
            report = build_dataset(task, [root], out, progress=False)
            ds = load_dataset(str(out), task, cache_dir=str(tmp / "hf_cache"))
            built[key] = BuiltSample(root, out, report, ds)
        return built[key]

    return build
