"""The contract every registered builder keeps, on its bundled sample: detected as itself, loads with the task's
features and the report's split sizes, no group in two splits, and every file it was given accounted for."""

from collections import defaultdict

import pytest

from multimed_hf.builders import BUILDERS, detect_builder
from multimed_hf.data.features import task_features
from multimed_hf.data.manifest import STATUSES, read_manifest
from multimed_hf.data.source_builder import PROVENANCE_FILE
from multimed_hf.tasks import get_task


@pytest.fixture(params=BUILDERS, ids=lambda cls: f"{cls.task}-{cls.source}")
def contract(request, build_sample):
    cls = request.param
    return cls, build_sample(cls.task, cls.source)


def test_the_sample_is_detected_as_this_builder(contract):
    cls, built = contract
    assert type(detect_builder(cls.task, built.root)) is cls


def test_the_config_loads_with_the_tasks_features_and_the_reported_splits(contract):
    cls, built = contract
    ds = built.ds
    assert all(ds[split].features == task_features(get_task(cls.task)) for split in ds)
    assert {split: ds[split].num_rows for split in ds} == {k: v for k, v in built.report.splits.items() if v}
    assert all(row == cls.source for split in ds for row in ds[split]["source"])


def test_no_group_spans_two_splits(contract):
    _, built = contract
    splits_of = defaultdict(set)
    for split in built.ds:
        for group in built.ds[split]["group_id"]:
            splits_of[group].add(split)
    assert splits_of and all(len(s) == 1 for s in splits_of.values()), "a group spans two splits"


def test_counts_reconcile_and_every_file_is_listed(contract):
    cls, built = contract
    entries = read_manifest(built.out / cls.task)
    (source,) = built.report.sources
    assert source.name == cls.source and {e.source for e in entries} == {cls.source}
    assert {e.status for e in entries} <= set(STATUSES)
    assert sum(source.counts.values()) == len(entries)
    on_disk = {p.relative_to(built.root).as_posix() for p in built.root.rglob("*")
               if p.is_file() and p.name != PROVENANCE_FILE}
    listed = {e.source_path for e in entries if ":row" not in e.source_path}
    assert listed == on_disk
    # a record inside a file (``<file>:row <n>``) names a file that is there
    assert {e.source_path.split(":row", 1)[0] for e in entries if ":row" in e.source_path} <= on_disk


def test_the_sample_as_one_downloaded_zip_builds_alike(contract, tmp_path):
    """The sample's files as one zip in a folder of downloads (the provenance file beside it): unpacked into the
    build's cache, every file gets the entry (status, reason, split, group) the sample's own build gave it."""
    import shutil
    import zipfile

    from multimed_hf.api import build_dataset
    from multimed_hf.builders._download import is_archive

    cls, built = contract
    files = sorted(p for p in built.root.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE)
    if any(is_archive(p.name) for p in files):
        pytest.skip("the sample holds an archive, which is unpacked in turn: its entries differ by design")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / f"{cls.source}.zip", "w") as archive:
        for path in files:
            archive.write(path, path.relative_to(built.root).as_posix())
    if (built.root / PROVENANCE_FILE).is_file():
        shutil.copy2(built.root / PROVENANCE_FILE, downloads)
    report = build_dataset(cls.task, [downloads], tmp_path / "out", progress=False)
    assert report.sources[0].name == cls.source
    def entries(out):
        return {(e.source_path, e.status, e.reason, e.split, e.group) for e in read_manifest(out / cls.task)}

    assert entries(tmp_path / "out") == entries(built.out)


def test_folder_litter_is_ignored_and_changes_nothing_else(contract, tmp_path):
    """A copy of the sample that a file manager has been through (``.DS_Store``, ``Thumbs.db``, ``__MACOSX/``) or
    that ``hf download --local-dir`` wrote (``.cache/huggingface/``, rejected as stray files before):
    the litter is ignored, never rejected (``--strict`` stops on rejections), and every other file gets the entry
    the sample's own build gave it (cellxgene and symptom2disease rejected it as stray files)."""
    import shutil

    from multimed_hf.api import build_dataset

    cls, built = contract
    root = tmp_path / built.root.name
    shutil.copytree(built.root, root, symlinks=True)
    litter = [".DS_Store", "Thumbs.db", "__MACOSX/._notes",  # and `hf download --local-dir`'s bookkeeping:
              ".cache/huggingface/CACHEDIR.TAG", ".cache/huggingface/download/train.json.metadata"]
    for name in litter:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"\x00\x00\x00\x01Bud1")
    report = build_dataset(cls.task, [root], tmp_path / "out", progress=False)
    entries = {e.source_path: (e.status, e.reason, e.split, e.group) for e in report.entries}
    assert all(entries[name][0] == "ignored" for name in litter), {n: entries.get(n) for n in litter}
    expected = {e.source_path: (e.status, e.reason, e.split, e.group) for e in read_manifest(built.out / cls.task)
                if e.source_path not in litter}  # some samples hold litter of their own
    assert {k: v for k, v in entries.items() if k not in litter} == expected
