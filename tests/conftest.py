"""Shared pytest fixtures."""

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
