"""What a source's file system holds besides plain files: links to folders (followed, a loop read once), broken
links (datalad / git-annex copies of files not fetched) and file names that are not UTF-8, each accounted for in the
manifest, by ``--strict`` too, whatever the number of processes."""

from __future__ import annotations

import os
import shutil

import pytest

from dataset_scripts.sample_sources.brain_tumor_mri import make_brain_tumor_mri
from multimed_hf.api import build_dataset
from multimed_hf.data.errors import StrictBuildError
from multimed_hf.data.manifest import read_manifest

TASK = "brain_tumor"


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """The brain_tumor sample (no damaged files) and its build: what every variant below must equal."""
    tmp = tmp_path_factory.mktemp("plain")
    root = make_brain_tumor_mri(tmp / "src", train_per_class=3, test_per_class=2, size=32, bad_files=False)
    build_dataset(TASK, [root], tmp / "out", progress=False)
    return root, tmp / "out"


def _entries(out) -> list[tuple]:
    return [(e.source_path, e.status, e.reason, e.sample_id, e.split) for e in read_manifest(out / TASK)]


def _shards(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / TASK).rglob("*.parquet"))}


def _copy(plain, tmp_path):
    return shutil.copytree(plain[0], tmp_path / "src")


def test_a_linked_folder_is_read_through_the_link_as_a_copy_would_be(plain, tmp_path):
    """``Training/`` a link to a folder on another disk: read, its files named as seen through the link."""
    root = _copy(plain, tmp_path)
    shutil.move(root / "Training", tmp_path / "Training_elsewhere")
    (root / "Training").symlink_to(tmp_path / "Training_elsewhere", target_is_directory=True)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert _entries(tmp_path / "out") == _entries(plain[1])
    assert _shards(tmp_path / "out") == _shards(plain[1])
    assert report.sources[0].files_seen == len({e[0] for e in _entries(plain[1])})


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_link_loop_is_read_once_and_listed_as_ignored(plain, tmp_path, num_proc):
    root = _copy(plain, tmp_path)
    (root / "Training" / "glioma" / "back").symlink_to(root / "Training", target_is_directory=True)  # a loop
    (root / "Testing" / "again").symlink_to(root / "Testing" / "glioma", target_is_directory=True)  # into the tree
    out = tmp_path / "out"
    build_dataset(TASK, [root], out, progress=False, num_proc=num_proc, on_bad_files="error")  # ignored: no stop
    entries = {e.source_path: e for e in read_manifest(out / TASK)}
    for link, target in (("Training/glioma/back/", "Training"), ("Testing/again/", "Testing/glioma")):
        assert entries[link].status == "ignored"
        assert entries[link].reason == f"not used: ignored: a link to a folder already read: {root / target}"
    assert [e for e in _entries(out) if not e[0].endswith("/")] == _entries(plain[1])
    assert _shards(out) == _shards(plain[1])


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_broken_link_is_rejected_naming_its_target(plain, tmp_path, num_proc):
    """A datalad / git-annex copy holds a link per file not fetched yet, into the annex: rejected, with what to
    do, and the same from the validation cache; the rest builds."""
    root = _copy(plain, tmp_path)
    target = "../../.git/annex/objects/Xk/7q/MD5E-s1234--abc.jpg/MD5E-s1234--abc.jpg"
    (root / "Training" / "glioma" / "Tr-gl_0099.jpg").symlink_to(target)
    out = tmp_path / "out"
    for _ in range(2):  # read, then from the validation cache
        report = build_dataset(TASK, [root], out, progress=False, num_proc=num_proc)
        entries = {e.source_path: e for e in read_manifest(out / TASK)}
        broken = entries.pop("Training/glioma/Tr-gl_0099.jpg")
        assert broken.status == "rejected" and broken.reason == (
            f"broken symbolic link: its target {target} does not exist (not fetched? `datalad get` / "
            "`git annex get` it)"
        )
        assert sorted((e.source_path, e.status, e.sample_id, e.split) for e in entries.values()) == sorted(
            (e[0], e[1], e[3], e[4]) for e in _entries(plain[1]))
        assert report.sources[0].files_seen == len(entries) + 1
    with pytest.raises(StrictBuildError, match=r"Tr-gl_0099\.jpg: broken symbolic link: its target .* not exist"):
        build_dataset(TASK, [root], tmp_path / "strict", progress=False, num_proc=num_proc, on_bad_files="error")


def test_a_file_name_that_is_not_utf8_is_rejected_by_an_escaped_name_and_the_rest_builds(plain, tmp_path):
    """Info-ZIP unpacks a zip made on Windows with its names' bytes as they were (cp1252 ``é`` = 0xE9): no manifest
    or database holds such a name; the file is rejected under its name with each such byte written ``\\xNN``."""
    root = _copy(plain, tmp_path)
    folder = os.fsencode(root / "Training" / "glioma")
    try:
        shutil.copyfile(root / "Training" / "glioma" / "Tr-gl_0001.jpg", os.path.join(folder, b"Tr-gl_caf\xe9.jpg"))
    except (OSError, UnicodeError):
        pytest.skip("this file system does not take file names that are not UTF-8")
    out = tmp_path / "out"
    report = build_dataset(TASK, [root], out, progress=False)
    entries = {e.source_path: e for e in read_manifest(out / TASK)}
    bad = entries.pop("Training/glioma/Tr-gl_caf\\xe9.jpg")
    assert bad.status == "rejected"
    assert bad.reason.startswith("file name is not valid UTF-8: Training/glioma/Tr-gl_caf\\xe9.jpg (")
    assert bad.reason.endswith("; rename it to read it")
    assert sorted((e.source_path, e.status, e.sample_id, e.split) for e in entries.values()) == sorted(
        (e[0], e[1], e[3], e[4]) for e in _entries(plain[1]))
    assert report.sources[0].files_seen == len(entries) + 1
    assert _shards(out) == _shards(plain[1])
    with pytest.raises(StrictBuildError, match=r"Tr-gl_caf\\xe9\.jpg: file name is not valid UTF-8"):
        build_dataset(TASK, [root], tmp_path / "strict", progress=False, on_bad_files="error")
