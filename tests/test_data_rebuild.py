"""Rebuilds: fresh loads after new files, reported moves, and resuming an interrupted build."""

import os
import shutil

import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.builders.oct2017 import OCT2017Builder
from multimed_hf.data.manifest import read_manifest

GENERATORS = sample_generators()


@pytest.fixture
def oct_source(tmp_path):
    return GENERATORS["OCT2017"](tmp_path / "OCT2017")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_rebuild_with_new_files_loads_fresh(oct_source, tmp_path, isolated_cache):
    out = tmp_path / "multimed"
    build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    before = load_dataset(str(out), "diabetic_retinopathy")
    total = sum(before[s].num_rows for s in before)
    extra = oct_source / "test" / "NORMAL"
    for n, image in enumerate(sorted((oct_source / "test" / "DRUSEN").glob("*.jpeg"))[:2]):
        shutil.copy(image, extra / f"NORMAL-77{n}-1.jpeg")  # new patients; content copies -> label conflict
    shutil.copy(sorted(extra.glob("NORMAL-1*.jpeg"))[0], extra / "NORMAL-7790-1.jpeg")  # same label: kept
    report = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    after = load_dataset(str(out), "diabetic_retinopathy")
    assert sum(after[s].num_rows for s in after) == sum(report.splits.values()) == total + 1 - 2
    assert len(list((out / "diabetic_retinopathy" / "oct2017").iterdir())) == 1, "old fingerprint shards remain"


def test_a_file_joining_two_groups_reports_the_moves(oct_source, tmp_path):
    out = tmp_path / "multimed"
    build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    entries = [e for e in read_manifest(out / "diabetic_retinopathy") if e.status == "kept" and e.sample_id]
    by_group = {}
    for e in entries:
        by_group.setdefault(e.group, e)
    train = [e for e in by_group.values() if e.split == "train" and e.source_path.startswith("train/")]
    val = [e for e in by_group.values() if e.split == "validation"]
    # a new file named for a training patient, with a validation patient's image (same class): joins the groups
    donor = next(v for v in val if any(t.source_path.split("/")[1] == v.source_path.split("/")[1] for t in train))
    folder = donor.source_path.split("/")[1]
    patient = next(t for t in train if t.source_path.split("/")[1] == folder).group.rsplit(":", 1)[1]
    shutil.copy(oct_source / donor.source_path, oct_source / "train" / folder / f"{folder}-{patient}-9.jpeg")
    report = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    moved = [e for e in report.entries if e.status == "moved"]
    assert moved, "merging a training and a validation group must move one of them"
    assert all(e.reason.startswith("moved from ") for e in moved)
    assert report.counts["moved"] == len(moved)
    new_groups = {e.group for e in report.entries if e.source_path.endswith(f"-{patient}-9.jpeg")}
    assert len(new_groups) == 1 and {e.group for e in moved} <= new_groups


def test_interrupted_build_resumes_from_validated_files(oct_source, tmp_path, monkeypatch):
    out = tmp_path / "multimed"
    calls = []
    original = OCT2017Builder.read_file

    def interrupted(self, relpath):
        if len(calls) == 20:
            raise KeyboardInterrupt
        calls.append(relpath)
        return original(self, relpath)

    monkeypatch.setattr(OCT2017Builder, "read_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    first = list(calls)
    calls.clear()

    def counting(self, relpath):
        calls.append(relpath)
        return original(self, relpath)

    monkeypatch.setattr(OCT2017Builder, "read_file", counting)
    resumed = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    assert not set(first) & set(calls), "files validated before the interruption were decoded again"
    assert len(first) + len(calls) == resumed.sources[0].files_seen
    clean = build_dataset("diabetic_retinopathy", [oct_source], tmp_path / "clean", progress=False)
    assert resumed.sources[0].fingerprint == clean.sources[0].fingerprint
    assert [e.status for e in resumed.entries] == [e.status for e in clean.entries]


def test_a_file_changed_after_validation_is_decoded_again(oct_source, tmp_path):
    out = tmp_path / "multimed"
    build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    victim = sorted((oct_source / "train" / "DRUSEN").glob("*.jpeg"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    report = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    entry = next(e for e in report.entries if e.source_path.endswith(victim.name))
    assert entry.status == "rejected" and entry.reason.startswith("cannot decode image")


def test_a_file_rewritten_with_its_mtime_set_back_is_decoded_again(oct_source, tmp_path):
    """Same size, same mtime (``os.utime``, ``touch -r``, ``rsync -t`` set it back), other bytes: the ctime, which no
    call sets back, tells the validation cache; the shards equal a fresh build's, byte for byte."""
    out = tmp_path / "multimed"
    build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    images = sorted((oct_source / "train" / "DRUSEN").glob("*.jpeg"), key=lambda p: p.stat().st_size)
    victim, donor = images[-1], images[0]
    stat = victim.stat()
    data = donor.read_bytes()
    victim.write_bytes(data + b"\0" * (stat.st_size - len(data)))  # a JPEG ends at its EOI: the padding is not read
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    again = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    fresh = build_dataset("diabetic_retinopathy", [oct_source], tmp_path / "fresh", progress=False)
    assert again.sources[0].fingerprint == fresh.sources[0].fingerprint
    for shard in (tmp_path / "fresh").rglob("*.parquet"):
        assert shard.read_bytes() == (out / shard.relative_to(tmp_path / "fresh")).read_bytes()
    placed = [[(e.source_path, e.sample_id, e.group, e.split) for e in build.entries] for build in (again, fresh)]
    assert placed[0] == placed[1]  # (the rebuild reports the moves its new content made)


def test_a_cache_from_before_ctime_stamps_is_validated_again(tmp_path):
    """A validation cache whose file rows have no ctime (written by an earlier version) is emptied, side files too,
    and every file read again: the same build."""
    import sqlite3

    source = GENERATORS["eeg-motor-movementimagery-dataset-1.0.0"](tmp_path / "eegmmidb")
    out = tmp_path / "multimed"
    first = build_dataset("motor_imagery", [source], out, progress=False)
    entries = list(first.entries)
    cache = out / ".build_cache" / "motor_imagery"
    with sqlite3.connect(cache / "eegmmidb.sqlite") as db:
        db.execute("ALTER TABLE files DROP COLUMN ctime")
    (cache / "eegmmidb.arrays" / "stale.bin").write_bytes(b"0")
    again = build_dataset("motor_imagery", [source], out, progress=False)
    assert again.sources[0].fingerprint == first.sources[0].fingerprint
    assert list(again.entries) == entries
    assert not (cache / "eegmmidb.arrays" / "stale.bin").exists()
    with sqlite3.connect(cache / "eegmmidb.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM files WHERE ctime IS NOT NULL").fetchone()[0] > 0


def test_worker_processes_give_the_same_build(oct_source, tmp_path):
    one = build_dataset("diabetic_retinopathy", [oct_source], tmp_path / "one", progress=False)
    two = build_dataset("diabetic_retinopathy", [oct_source], tmp_path / "two", progress=False, num_proc=2)
    assert one.sources[0].fingerprint == two.sources[0].fingerprint
    assert one.entries == two.entries
    for shard in (tmp_path / "one").rglob("*.parquet"):
        assert shard.read_bytes() == (tmp_path / "two" / shard.relative_to(tmp_path / "one")).read_bytes()


def test_arrays_are_cached_as_binary_side_files_and_rebuild_identically(tmp_path):
    source = GENERATORS["eeg-motor-movementimagery-dataset-1.0.0"](tmp_path / "eegmmidb")
    out = tmp_path / "multimed"
    first = build_dataset("motor_imagery", [source], out, progress=False)
    cache = out / ".build_cache" / "motor_imagery"
    side_files = list((cache / "eegmmidb.arrays").glob("*.bin"))
    edf_runs = [e for e in first.entries if e.source_path.endswith(".edf") and e.status == "kept"]
    assert side_files, "epochs were not written as binary side files"
    # one side file per validated file holding arrays, never one per epoch
    assert len(side_files) <= len({e.source_path for e in edf_runs}) < len(edf_runs)
    assert (cache / "eegmmidb.sqlite").stat().st_size < 400_000, "the cache holds the arrays as text"
    again = build_dataset("motor_imagery", [source], out, progress=False)  # every file from the cache
    clean = build_dataset("motor_imagery", [source], tmp_path / "clean", progress=False)
    assert first.sources[0].fingerprint == again.sources[0].fingerprint == clean.sources[0].fingerprint
    for shard in (tmp_path / "clean").rglob("*.parquet"):
        assert shard.read_bytes() == (out / shard.relative_to(tmp_path / "clean")).read_bytes()


@pytest.mark.parametrize("fact", [{"organ": "retina"}, {"age": "the patient's age in the file name"}])
def test_editing_a_sources_organ_or_age_in_the_registry_revalidates(oct_source, tmp_path, monkeypatch, fact):
    import dataclasses

    from multimed_hf import tasks

    out = tmp_path / "multimed"
    build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    calls = []
    original = OCT2017Builder.read_file

    def counting(self, relpath):
        calls.append(relpath)
        return original(self, relpath)

    monkeypatch.setattr(OCT2017Builder, "read_file", counting)
    again = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    assert not calls, "an unchanged registry re-read cached files"
    task = tasks.get_task("diabetic_retinopathy")
    edited = dataclasses.replace(task, sources=tuple(
        dataclasses.replace(s, **fact) if s.name == "oct2017" else s for s in task.sources
    ))
    monkeypatch.setitem(tasks._TASKS, task.name, edited)
    (name, value), = fact.items()
    assert getattr(OCT2017Builder.spec(), name) == value != getattr(task.source("oct2017"), name)
    edited_build = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    assert len(calls) == edited_build.sources[0].files_seen == again.sources[0].files_seen


def test_every_sample_generator_writes_the_same_bytes_each_time(tmp_path):
    """README: the samples are generated deterministically. savemat stamped the time into BCI IV 2a's and the BIDS
    EEGMMIDB copy's MAT headers, so each build_all run gave motor_imagery a new fingerprint."""
    import hashlib
    import time

    from dataset_scripts.sample_sources import sample_generators

    def files(root):
        return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}

    for name, make in sample_generators().items():
        first = files(make(tmp_path / "a" / name))
        time.sleep(1.01)  # a time stamp of one-second resolution would differ
        assert files(make(tmp_path / "b" / name)) == first, name


def test_a_file_cached_under_other_non_data_rules_is_read_again(oct_source, tmp_path, monkeypatch):
    # before: the validation cache's version did not hold the litter rules, so a rebuild into the same --out kept
    # `hf download`'s .cache/huggingface/ files rejected as stray files after the rules named them
    from multimed_hf.builders import _download

    litter = oct_source / ".cache" / "huggingface" / "download" / "x.metadata"
    litter.parent.mkdir(parents=True)
    litter.write_text("etag\n")
    out = tmp_path / "multimed"
    with monkeypatch.context() as old:  # the rules before .cache/ was named
        old.setattr(_download, "_FOLDERS", {k: v for k, v in _download._FOLDERS.items() if k != ".cache"})
        old.setattr(_download.NonDataFiles, "rules_version", "non-data-before")
        report = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    relpath = litter.relative_to(oct_source).as_posix()
    assert {e.source_path: e.status for e in report.entries}[relpath] == "rejected"
    again = build_dataset("diabetic_retinopathy", [oct_source], out, progress=False)
    assert {e.source_path: e.status for e in again.entries}[relpath] == "ignored"


def test_a_copy_whose_original_is_removed_is_read_on_the_next_build(tmp_path):
    # before: the copy's "dropped" was cached per file: with its original deleted, a rebuild into the same --out
    # kept it dropped and the study vanished from the data, named as a copy of a file no longer there
    import shutil

    root = GENERATORS["COVID19_1110"](tmp_path / "COVID19_1110", bad_files=False)
    original = sorted((root / "studies" / "CT-1").glob("study_*.nii.gz"))[0]
    copy = original.with_name(original.name.replace(".nii.gz", " (1).nii.gz"))
    shutil.copy(original, copy)
    out = tmp_path / "multimed"
    first = build_dataset("radiographic_findings", [root], out, progress=False)
    relpath = copy.relative_to(root).as_posix()
    assert {e.source_path: e.status for e in first.entries if not e.sample_id}[relpath] == "dropped"
    original.unlink()
    again = build_dataset("radiographic_findings", [root], out, progress=False)
    assert any(e.sample_id and e.source_path == relpath and e.status in ("kept", "moved") for e in again.entries)


def test_a_changed_cc_ccii_index_re_reads_the_slices(tmp_path):
    # before: a misfiled scan's slices were judged against the index when first read and cached: an index that
    # arrived later left them in the data while the manifest said "its slices are rejected"
    root = GENERATORS["CC-CCII"](tmp_path / "CC-CCII")  # its index lists Normal/24/4005 under CP
    index = root / "unzip_filenames.csv"
    text = index.read_text()
    index.unlink()
    out = tmp_path / "multimed"
    build_dataset("radiographic_findings", [root], out, progress=False)
    index.write_text(text)
    again = build_dataset("radiographic_findings", [root], out, progress=False)
    misfiled = [e for e in again.entries if e.source_path.startswith("Normal/24/4005/") and ":row" not in e.source_path]
    assert misfiled and all(e.status == "rejected" and e.reason.startswith("label conflict") for e in misfiled)
