"""A source wrapped in folders of its own (Windows' "Extract All", a zip of the download's folder) builds as the
folder inside it would, and the build says where it found the layout."""

import shutil
from pathlib import Path

import pytest

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset, detect_sources
from multimed_hf.builders import detect_builder, wrapped_folders
from multimed_hf.data.errors import LayoutNotRecognised


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and ".build_cache" not in p.parts and p.name != "build_info.json"}


@pytest.mark.parametrize("source, task", [("Brain-Tumor-MRI-Dataset", "brain_tumor"), ("VQA_RAD", "med_vqa")])
def test_a_wrapped_source_builds_as_the_folder_inside(tmp_path, source, task):
    # before: "matches none of the source layouts" for 13 of the 22 builders
    plain = sample_generators()[source](tmp_path / "plain")
    outer = tmp_path / "download"
    inner = outer / "extracted" / plain.name
    shutil.copytree(plain, inner)
    (outer / ".DS_Store").write_bytes(b"\0")
    (outer / "extracted" / f"{plain.name}.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)  # the archive, unpacked
    assert [f for f, _ in wrapped_folders(outer)] == [outer / "extracted", inner]
    notes: list[str] = []
    assert detect_builder(task, outer, notes).root == inner
    assert notes and f"the layout is in extracted/{plain.name}/ inside the folder given" in notes[0]
    assert ".DS_Store" in notes[0] and f"extracted/{plain.name}.zip" in notes[0]
    direct = build_dataset(task, [plain], tmp_path / "direct", progress=False)
    wrapped = build_dataset(task, [outer], tmp_path / "wrapped", progress=False)
    assert any("the layout is in extracted/" in w for w in wrapped.warnings)
    assert _files(tmp_path / "wrapped" / task) == _files(tmp_path / "direct" / task)
    assert direct.counts == wrapped.counts


def test_a_folder_holding_data_beside_its_one_folder_is_not_looked_through(tmp_path):
    plain = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "plain")
    outer = tmp_path / "download"
    shutil.copytree(plain, outer / plain.name)
    (outer / "scan.jpg").write_bytes(b"\xff\xd8\xff")  # a file that may be data: the folder is not a mere wrapper
    assert wrapped_folders(outer) == []
    with pytest.raises(LayoutNotRecognised, match="matches none of the source layouts"):
        detect_builder("brain_tumor", outer)


def test_build_all_finds_a_wrapped_source(tmp_path):
    plain = sample_generators()["VQA_RAD"](tmp_path / "plain")
    sources = tmp_path / "sources"
    shutil.copytree(plain, sources / "vqa-rad-download" / plain.name)
    assert detect_sources(sources) == {"med_vqa": [sources / "vqa-rad-download" / plain.name]}
