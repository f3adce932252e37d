"""LHNCBC malaria cells: multi-label disease rows with a label mask, slide/patient groups, stray files."""

from collections import defaultdict

import pytest

from dataset_scripts.sample_sources import lhncbc_malaria as sample
from multimed_hf.api import build_dataset
from multimed_hf.builders import detect_builder
from multimed_hf.builders.lhncbc_malaria import MalariaCellsBuilder, slide_code
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "disease"
NAMES = get_task(TASK).label("diseases").names


@pytest.fixture(scope="module")
def built(build_sample):
    return build_sample(TASK, "lhncbc_malaria")


def test_rows_assert_only_what_the_source_knows(built):
    _, _, report, ds = built
    for split in ds:
        for row in ds[split]:
            folder, name = row["source_path"].split("/")
            assert [NAMES[i] for i in row["diseases"]] == (["malaria"] if folder == "Parasitized" else ["normal"])
            assert row["label_mask"] == ["malaria", "normal"]
            assert row["text"] is None and row["modality"] == "pathology" and row["image"].mode == "RGB"
            assert row["patient_id"] == slide_code(name.split("_cell_")[0])[0]


def test_slides_of_one_patient_share_a_group(built):
    _, out, report, ds = built
    splits_of = defaultdict(set)
    for split in ds:
        for group in ds[split]["group_id"]:
            splits_of[group].add(split)
    assert all(len(s) == 1 for s in splits_of.values()), "a group spans two splits"
    assert all(ds[split].num_rows for split in ("train", "validation", "test"))
    group_of_slide = defaultdict(set)
    for e in read_manifest(out / TASK):
        if e.status == "kept" and e.sample_id:
            group_of_slide[slide_code(e.source_path.split("/")[1].split("_cell_")[0])[0]].add(e.group)
    # C100P61's fields (parasitized and uninfected cells) and its second slide C103P61 are one patient
    assert group_of_slide["C100P61"] == group_of_slide["C103P61"] and len(group_of_slide["C100P61"]) == 1
    assert len({g for s, gs in group_of_slide.items() if s != "C103P61" for g in gs}) == len(group_of_slide) - 1
    assert report.duplicates["pairs linked by the source's own rule"] == 1
    assert report.duplicates["near-duplicate pairs"] == 0  # hashing is off: cell crops all look alike


def test_partial_download_and_the_folder_above_cell_images(tmp_path):
    root = sample.make(tmp_path / "download" / "cell_images", bad_files=False).parent
    (root / "cell_images" / "MULTIMED_SOURCE.json").rename(root / "MULTIMED_SOURCE.json")
    for path in (root / "cell_images" / "Uninfected").iterdir():
        path.unlink()
    (root / "cell_images" / "Uninfected").rmdir()
    assert isinstance(detect_builder(TASK, root), MalariaCellsBuilder)
    report = build_dataset(TASK, [root], tmp_path / "out", progress=False)
    assert any("partial download: no Uninfected folder" in w for w in report.warnings), report.warnings
    assert report.sources[0].counts["kept"] > 0 and report.sources[0].counts["rejected"] == 0


def test_bad_inputs_are_named(built):
    root, out, report, _ = built
    by_path = {e.source_path: e for e in read_manifest(out / TASK)}
    first = sorted((root / "Parasitized").glob("*_cell_*.png"))[0].name
    copy = [p for p in by_path if p.startswith("Uninfected/C5thinF")][-1]
    not_data = {
        "Parasitized/Thumbs.db": "not used: ignored: Thumbs.db is a Windows thumbnail cache, not data",
        "Uninfected/Thumbs.db": "not used: ignored: Thumbs.db is a Windows thumbnail cache, not data",
        f"cell_images/Parasitized/{first}": "not used: a second copy of the tree (cell_images/, as in the Kaggle",
    }
    for path, reason in not_data.items():
        status = "ignored" if reason.startswith("not used: ignored: ") else "dropped"  # what the real archive carries: named, never errors
        assert by_path[path].status == status and by_path[path].reason.startswith(reason), by_path[path]
    expected = {
        f"Parasitized/{first}": f"label conflict: identical content at lhncbc_malaria/{copy} carries another label",
        copy: f"label conflict: identical content at lhncbc_malaria/Parasitized/{first} carries another label",
    }
    rejected = {p: e.reason for p, e in by_path.items() if e.status == "rejected"}
    damaged = [p for p in rejected if p.startswith("Uninfected/C4thinF")]
    assert len(damaged) == 1 and rejected.pop(damaged[0]).startswith("cannot decode image")
    assert rejected == expected
    # a valid cell image without _cell_<n> in its name: kept, its slide read from the name, noted
    variant = by_path["Parasitized/C102P63ThinF_IMG_20150918_161826.png"]
    assert variant.status == "kept" and variant.reason == (
        "name variant: 'C102P63ThinF_IMG_20150918_161826.png' is not <smear image>_cell_<n>.png; kept as "
        "Parasitized (its folder), slide 'C102P63'"
    ), variant
    same_slide = [e for p, e in by_path.items() if p.startswith("Parasitized/C102P63ThinF_IMG_20150918_161826_cell_")]
    assert same_slide and {e.group for e in same_slide} == {variant.group}


def test_counts_of_each_outcome(built):
    _, out, report, _ = built
    entries = read_manifest(out / TASK)
    counts = report.sources[0].counts
    assert counts == {"kept": len(sample.SMEARS) * 3, "moved": 0, "dropped": 1, "rejected": 3, "ignored": 2}
    assert not any(":row" in e.source_path for e in entries)  # no record entries: one per file


@pytest.mark.parametrize("field, code, tokens", [
    ("C100P61ThinF_IMG_20150918_144104", "C100P61", ("C100", "P61")),
    ("C39P4thinF_original_IMG_20150622_105253", "C39P4", ("C39", "P4")),
    ("C1_thinF_IMG_20150604_104722", "C1", ("C1",)),
    ("C2NThinF_IMG_20150604_114631", "C2N", ("C2",)),
    ("smear_07", "smear_07", ()),  # a name outside the convention: its own field is the group
])
def test_slide_codes(field, code, tokens):
    assert slide_code(field) == (code, tokens)


def test_nlm_patient_mappings_beside_the_images_are_dropped_by_name(tmp_path):
    # NLM's download page lists cell_images.zip with patientid_cellmapping_{parasitized,uninfected}.csv; public
    # readers of the real files (e.g. ponjey/MALARIA-CNN) keep the three in one folder
    download = tmp_path / "download"
    root = sample.make(download / "cell_images", bad_files=False)
    (root / "MULTIMED_SOURCE.json").rename(download / "MULTIMED_SOURCE.json")
    mappings = sample.write_cell_mappings(root, download)
    assert mappings[0].read_text().startswith("C100P61ThinF,['C100P61ThinF_IMG_20150918_144104_cell_")
    assert isinstance(detect_builder(TASK, download), MalariaCellsBuilder)
    report = build_dataset(TASK, [download], tmp_path / "out", progress=False)
    by_path = {e.source_path: e for e in read_manifest(tmp_path / "out" / TASK)}
    for path in mappings:
        entry = by_path[path.name]
        assert entry.status == "dropped" and entry.reason.startswith(
            f"not used: {path.name} is NLM's patient-to-cell mapping"
        ), entry
    counts = report.sources[0].counts
    assert counts["rejected"] == 0 and counts["dropped"] == 2 and counts["kept"] == len(sample.SMEARS) * 3
