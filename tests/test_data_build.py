"""Every bundled sample source builds, loads with plain ``load_dataset``, and keeps the split and storage rules."""

import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset, detect_sources
from multimed_hf.builders import BUILDERS
from multimed_hf.data.features import task_features
from multimed_hf.data.manifest import STATUSES, read_manifest
from multimed_hf.data.source_builder import PROVENANCE_FILE
from multimed_hf.tasks import get_task

GENERATORS = sample_generators()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every sample source generated once and built into one folder named ``multimed``."""
    root = tmp_path_factory.mktemp("sources")
    out = tmp_path_factory.mktemp("work") / "multimed"
    for folder, make in GENERATORS.items():
        make(root / folder)
    reports = {}
    for task, roots in detect_sources(root).items():
        reports[task] = build_dataset(task, roots, out, progress=False)
    return root, out, reports


def _source_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != PROVENANCE_FILE}


def test_every_sample_source_is_detected(built):
    root, _, _ = built
    found = {p.name for roots in detect_sources(root).values() for p in roots}
    assert found == set(GENERATORS)


def test_every_registered_builder_has_a_sample():
    sample_modules = {make.__module__.rsplit(".", 1)[-1] for make in GENERATORS.values()}
    missing = {b.source for b in BUILDERS} - sample_modules
    assert not missing, f"builders without a sample module in dataset_scripts/sample_sources/: {missing}"


@pytest.mark.parametrize("folder", sorted(GENERATORS))
def test_manifest_accounts_for_every_file(built, folder):
    root, out, reports = built
    source_root = root / folder
    task = next(t for t, roots in detect_sources(root).items() if source_root in roots)
    report = reports[task]
    source = next(s for s in report.sources if Path(s.root) == source_root)
    entries = [e for e in read_manifest(out / task) if e.source == source.name]
    assert {e.status for e in entries} <= set(STATUSES)
    listed = {e.source_path for e in entries if ":row" not in e.source_path}
    assert listed == _source_files(source_root)
    assert sum(source.counts.values()) == len(entries)
    for e in entries:
        if e.status == "kept" and e.sample_id:  # a kept sample says nothing, or notes a name variant it kept
            assert e.reason == "" or e.reason.startswith("name variant: "), e
        else:
            assert (e.reason != "") == (e.status in ("dropped", "rejected", "moved") or e.sample_id is None), e


@pytest.mark.parametrize("task", ["brain_tumor", "diabetic_retinopathy"])
def test_config_loads_from_a_folder_named_multimed(built, task, monkeypatch):
    _, out, reports = built
    monkeypatch.chdir(out.parent)
    ds = load_dataset("multimed", task)
    assert ds["train"].features == task_features(get_task(task))
    sizes = {split: ds[split].num_rows for split in ds}
    assert sizes == {k: v for k, v in reports[task].splits.items() if v}
    groups = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            groups[group].add(split)
    assert all(len(splits) == 1 for splits in groups.values()), "a group spans two splits"
    image = ds["test"][0]["image"]
    image.load()
    assert min(image.size) >= 8


def test_brain_tumor_duplicates_and_bad_files(built):
    root, out, reports = built
    entries = {e.source_path: e for e in read_manifest(out / "brain_tumor")}
    # a near duplicate of a test slice filed under Training: its training copy is dropped, the test copy stays
    leak = entries["Training/glioma/Tr-gl_0009.jpg"]
    assert leak.status == "dropped" and leak.reason.startswith("leak repair")
    assert entries["Testing/glioma/Te-gl_0001.jpg"].split == "test"
    # an exact duplicate inside Training shares its original's group
    assert entries["Training/pituitary/Tr-pi_0009.jpg"].group == entries["Training/pituitary/Tr-pi_0002.jpg"].group
    # an exact duplicate under another class: both copies rejected as a label conflict
    for path in ("Training/notumor/Tr-no_0009.jpg", "Training/meningioma/Tr-me_0003.jpg"):
        assert entries[path].status == "rejected" and entries[path].reason.startswith("label conflict")
    expected = {
        "Training/notumor/Tr-no_0010.jpg": "cannot decode image",  # cut in half
        "Training/notumor/Tr-no_0011.jpg": "empty file",
        "Training/notumor/Tr-no_0012.jpg": "cannot decode image",  # text with an image name
        "Training/astrocytoma/Tr-as_0001.jpg": "class folder 'astrocytoma' is not one of",
        "notes.txt": "stray file",
    }
    for path, reason in expected.items():
        assert entries[path].status == "rejected" and entries[path].reason.startswith(reason), entries[path]
    # a download's non-data file is ignored, not an error; ids are <split>/<class folder>/<stem>, so one name in
    # two class folders gives two images
    thumbs = entries["Training/glioma/Thumbs.db"]
    assert thumbs.status == "ignored" and thumbs.reason.startswith("not used: ignored: Thumbs.db"), thumbs
    assert entries["Testing/meningioma/Tr-gl_0002.jpg"].status == entries["Training/glioma/Tr-gl_0002.jpg"].status
    # the published test set stays as published, less only the files rejected as bad
    test_files = {p for p, e in entries.items() if p.startswith("Testing/") and e.status != "rejected"}
    assert {p for p, e in entries.items() if e.split == "test"} == test_files
    report = reports["brain_tumor"]
    assert report.duplicates["near-duplicate pairs"] == 1 and report.duplicates["exact duplicate pairs"] == 1
    assert report.duplicates["largest group (samples)"] == 2, "chaining must not swallow a class or the source"
    assert "Near-duplicate search: two hashes of the normalised image must agree" in (out / "README.md").read_text()
    card = (out / "README.md").read_text()
    assert "Patient-level disjointness cannot be guaranteed" in card


def test_oct_leaked_patient_is_dropped_and_val_rejoins_test(built):
    root, out, _ = built
    entries = read_manifest(out / "diabetic_retinopathy")
    by_path = {e.source_path: e for e in entries}
    leaked = [e for e in entries if e.status == "dropped" and e.reason.startswith("leak repair")]
    assert all(e.reason.startswith(("leak repair", "not used: ")) for e in entries if e.status == "dropped")
    assert {e.source_path for e in leaked} == {p for p in by_path if p.startswith("train/CNV/") and p.endswith(("-7.jpeg", "-8.jpeg"))}
    leaked_patient = leaked[0].group
    assert all(e.split == "test" for e in entries if e.group == leaked_patient and e.status == "kept")
    val = [e for e in entries if e.source_path.startswith("val/")]
    assert val and all(e.split == "test" for e in val)
    assert by_path["train/DME/CNV-9200-1.jpeg"].reason == "file name class 'CNV' differs from its folder 'DME'"
    assert by_path["train/GA/GA-9100-1.jpeg"].reason.startswith("class folder 'GA'")
    # a valid image of a class folder under an unknown name is kept, its id noted
    variant = by_path["train/NORMAL/normal_scan_final.jpeg"]
    assert variant.status == "kept" and variant.group == "oct2017:patient:normal_scan_final", variant
    assert variant.reason.startswith("name variant: 'normal_scan_final.jpeg' is not CLASS-PATIENTID-N.jpeg")
    # one patient's images share a group, named by the patient
    groups = {e.group for e in entries if e.source_path.startswith("test/CNV/CNV-") and e.status == "kept"}
    assert all(g.startswith("oct2017:patient:") for g in groups)


def test_shards_are_self_contained_and_relative(built, tmp_path):
    root, out, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns(".build_cache"))
    for shard in copy.rglob("*.parquet"):
        assert str(root) not in shard.read_bytes().decode("latin-1"), f"{shard} holds a build-machine path"
        table = pq.read_table(shard)
        if "image" in table.column_names:
            cells = [c for c in table.column("image").to_pylist() if c is not None]  # text-only rows have none
            assert all(c["bytes"] and not c["path"].startswith("/") for c in cells)
    ds = load_dataset(str(copy), "brain_tumor", split="train")
    ds[0]["image"].load()


def test_same_sources_give_identical_shards(built, tmp_path):
    root, out, _ = built
    report = build_dataset("brain_tumor", [root / "Brain-Tumor-MRI-Dataset"], tmp_path / "again", progress=False)
    first = sorted(p.relative_to(out) for p in (out / "brain_tumor").rglob("*.parquet"))
    second = sorted(p.relative_to(tmp_path / "again") for p in (tmp_path / "again" / "brain_tumor").rglob("*.parquet"))
    assert first == second
    for rel in first:
        assert (out / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes()
    assert report.sources[0].fingerprint in str(first[0])


def test_unknown_layout_lists_the_expected_ones(tmp_path):
    (tmp_path / "random").mkdir()
    with pytest.raises(ValueError, match=r"(?s)matches none of the source layouts of task 'brain_tumor'.*Training/ and Testing/"):
        build_dataset("brain_tumor", [tmp_path / "random"], tmp_path / "out")


def test_strict_stops_at_the_first_bad_file(tmp_path):
    source = GENERATORS["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    with pytest.raises(ValueError, match=r"brain_tumor_mri: .*: "):
        build_dataset("brain_tumor", [source], tmp_path / "out", on_bad_files="error", progress=False)


def test_ignored_files_are_counted_apart_and_strict_passes_them(tmp_path):
    """A download's non-data file (Thumbs.db) is ``ignored``: counted apart from dropped and rejected files in the
    report, build_info.json and the card; ``--strict`` stops at the first rejected file, never at an ignored one."""
    source = GENERATORS["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    for path in [p for p in source.rglob("*") if p.is_file()]:  # leave only good images and the Thumbs.db
        rel = path.relative_to(source).as_posix()
        if rel.endswith(("Tr-no_0010.jpg", "Tr-no_0011.jpg", "Tr-no_0012.jpg", "notes.txt")) or "astrocytoma" in rel \
                or rel.endswith(("Tr-no_0009.jpg", "Tr-me_0003.jpg", "Tr-gl_0009.jpg")):  # conflict, leak
            path.unlink()
    thumbs = list(source.rglob("Thumbs.db"))
    assert thumbs
    out = tmp_path / "out"
    report = build_dataset("brain_tumor", [source], out, on_bad_files="error", progress=False)
    assert report.counts["ignored"] == len(thumbs) and report.counts["rejected"] == 0
    assert report.sources[0].counts["ignored"] == len(thumbs)
    assert f"rejected 0, ignored {len(thumbs)}" in report.summary()
    info = json.loads((out / "brain_tumor" / "build_info.json").read_text())
    assert info["counts"]["ignored"] == len(thumbs) and info["sources"][0]["counts"]["ignored"] == len(thumbs)
    assert f"ignored {len(thumbs)} (no data: system files, documents, archives)" in (out / "README.md").read_text()
    # the same file under a name the layout does not know is an error, and strict stops there
    thumbs[0].rename(thumbs[0].with_name("Thumbs.txt"))
    with pytest.raises(ValueError, match=r"Thumbs\.txt"):
        build_dataset("brain_tumor", [source], tmp_path / "out2", on_bad_files="error", progress=False)


def test_build_info_and_card_list_sources(built):
    _, out, _ = built
    card = (out / "README.md").read_text()
    for task in ("brain_tumor", "diabetic_retinopathy"):
        info = json.loads((out / task / "build_info.json").read_text())
        for source in info["sources"]:
            spec = get_task(task).source(source["name"])
            assert spec.title in card and spec.license in card and spec.citation in card
            assert "SYNTHETIC sample" in source["release_note"]
    assert "Split repair:" in card


def test_building_from_inside_the_source_folder_still_embeds_bytes(tmp_path, monkeypatch):
    source = GENERATORS["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    monkeypatch.chdir(source)  # datasets' Image keeps only a path that exists from the cwd: we must not
    build_dataset("brain_tumor", ["."], tmp_path / "out", progress=False)
    for shard in (tmp_path / "out").rglob("*.parquet"):
        assert all(cell["bytes"] for cell in pq.read_table(shard).column("image").to_pylist())


def test_perceptual_hashes_are_imagehash_bits_on_real_images():
    """The DCT half is ``imagehash.phash``'s bits; the wavelet half ``imagehash.whash``'s, except where 8 x 8 blocks
    tie at the median (then exact integers decide, not pywt's rounding)."""
    import imagehash
    import numpy as np
    from PIL import Image

    from multimed_hf.data.images import HASH_SIDE, _normalised, perceptual_hashes
    from test_data_grouping import _real_images

    mask = (1 << 64) - 1
    checked = 0
    for name, image in _real_images().items():
        normal = _normalised(image)
        value = perceptual_hashes(image)
        small = normal.resize((HASH_SIDE, HASH_SIDE), Image.Resampling.LANCZOS)
        assert value >> 64 == int(str(imagehash.phash(small)), 16), name
        blocks = np.asarray(normal, dtype=np.int64).reshape(8, 8, 8, 8).sum(axis=(1, 3))
        if (blocks == np.median(blocks)).any():
            continue
        assert value & mask == int(str(imagehash.whash(normal)), 16), name
        checked += 1
    assert checked >= 10


def test_summary_counts_a_reason_by_what_went_wrong_not_where():
    # before: the summary cut a reason at its first colon: "1 x row 1 (ENSG00000100000", "1 x image VQA_RAD Image
    # Folder/synpic88888.jpg", "1 x labels.csv"
    from multimed_hf.data.build import reason_category

    assert reason_category("row 1 (ENSG00000100000): 'inf' is not finite") == "'inf' is not finite"
    assert reason_category("image VQA_RAD Image Folder/synpic88888.jpg: cannot decode image: OSError: truncated") == \
        "cannot decode image"
    assert reason_category("expression.tsv is unusable (row 3: 6 fields, the header has 7), so no window has a "
                           "target") == "expression.tsv is unusable, so no window has a target"
    assert reason_category("T1 at 24.90 s: the 3 s window ends past the recording's end (26.00 s)") == \
        "the 3 s window ends past the recording's end"
    assert reason_category("cannot decode image: OSError: broken data stream") == "cannot decode image"
    assert reason_category("label conflict: identical content at a/b.png carries another label") == "label conflict"
