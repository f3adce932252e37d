"""What a build cannot use is said, never passed over: build_all names every folder of --sources that matches no
layout and every archive put at its top, and a config that keeps no sample fails (`multimed build` and build_all),
instead of printing how to load a dataset that does not exist."""

import shutil

import pytest

from dataset_scripts import build_all
from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import detect_sources
from multimed_hf.cli import main

GENERATORS = sample_generators()


def _sources(tmp_path):
    sources = tmp_path / "sources"
    GENERATORS["symptom2disease"](sources / "symptom2disease")
    aptos = GENERATORS["aptos2019-blindness-detection"](sources / "aptos2019-blindness-detection")
    (aptos / "train.csv").unlink()  # lost in the download: no layout left to recognise
    shutil.make_archive(str(sources / "cells"), "zip", GENERATORS["cell_images"](tmp_path / "plain" / "cell_images"))
    (sources / "notes.txt").write_text("my notes")
    (sources / ".DS_Store").write_bytes(b"\0")
    return sources


def test_detect_sources_lists_what_it_does_not_use(tmp_path):
    sources = _sources(tmp_path)
    skipped: list = []
    assert list(detect_sources(sources, skipped=skipped)) == ["disease"]
    reasons = {path.name: reason for path, reason in skipped}
    assert set(reasons) == {"aptos2019-blindness-detection", "cells.zip", "notes.txt"}
    assert reasons["aptos2019-blindness-detection"].startswith("matches no source layout")
    assert reasons["cells.zip"].startswith("an archive at the top of the folder")


def test_build_all_fails_naming_each_folder_it_could_not_build(tmp_path, capsys):
    # before: exit 0, "built 1 configs", the APTOS folder and the archive never mentioned
    sources = _sources(tmp_path)
    assert build_all.main(["--sources", str(sources), "--out", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "built 1 configs" in captured.out and "not used: " in captured.out and "notes.txt" in captured.out
    assert "not built: " in captured.err and "aptos2019-blindness-detection: matches no source layout" in captured.err
    assert "cells.zip: an archive at the top of the folder" in captured.err


def test_a_config_that_keeps_no_sample_fails(tmp_path, capsys):
    # before: "kept 0", exit 0 and "load it with: datasets.load_dataset(...)", which then failed
    source = GENERATORS["VQA_RAD"](tmp_path / "VQA_RAD")
    (source / "VQA_RAD Dataset Public.json").write_text("<html><body>Rate limit exceeded</body></html>")
    assert main(["build", "med_vqa", "--source", str(source), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "load it with" not in captured.out
    assert "multimed build: error: med_vqa: no sample kept" in captured.err and "manifest.jsonl" in captured.err
    sources = tmp_path / "sources"
    shutil.copytree(source, sources / "VQA_RAD")
    assert build_all.main(["--sources", str(sources), "--out", str(tmp_path / "all")]) == 1
    assert "not built: med_vqa: no sample kept" in capsys.readouterr().err


def test_an_out_folder_inside_sources_is_not_a_source_and_a_push_is_not_skipped_in_silence(tmp_path, capsys):
    # before: every rebuild into --sources/multimed exited 1 naming its own output folder; and with a folder not
    # built, --push was skipped without a word
    sources = tmp_path / "sources"
    GENERATORS["symptom2disease"](sources / "symptom2disease")
    for _ in range(2):
        assert build_all.main(["--sources", str(sources), "--out", str(sources / "multimed")]) == 0
    assert "not built" not in capsys.readouterr().err
    (sources / "unknown").mkdir()
    (sources / "unknown" / "data.bin").write_bytes(b"x")
    assert build_all.main(["--sources", str(sources), "--out", str(sources / "multimed"), "--push", "org/x"]) == 1
    assert "not pushed to org/x" in capsys.readouterr().err


def test_a_config_whose_only_kept_files_are_index_files_fails_too(tmp_path, capsys):
    # before: RSNA's sheets read, its images left packed in zips beside them: "kept 0", yet exit 0 and "load it
    # with ...": the check counted the index files (kept entries without a sample)
    source = GENERATORS["rsna-bone-age"](tmp_path / "rsna")
    for folder in [p for p in source.iterdir() if p.is_dir()]:
        shutil.make_archive(str(folder), "zip", folder.parent, folder.name)
        shutil.rmtree(folder)
    assert main(["build", "bone_age", "--source", str(source), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "kept 0 " in captured.out and "load it with" not in captured.out
    assert "multimed build: error: bone_age: no sample kept" in captured.err
    sources = tmp_path / "sources"
    shutil.copytree(source, sources / "rsna-bone-age")
    assert build_all.main(["--sources", str(sources), "--out", str(tmp_path / "all")]) == 1
    assert "not built: bone_age: no sample kept" in capsys.readouterr().err


def test_build_all_strict_stops_in_one_line_naming_the_file(tmp_path, capsys):
    # before: build_all --strict ended in a traceback at the first rejected file
    sources = tmp_path / "sources"
    sample_generators()["Brain-Tumor-MRI-Dataset"](sources / "Brain-Tumor-MRI-Dataset")
    with pytest.raises(SystemExit) as stop:
        build_all.main(["--sources", str(sources), "--out", str(tmp_path / "out"), "--strict"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: brain_tumor: brain_tumor_mri: " in err and "Traceback" not in err


def test_build_all_names_the_failed_rebuilds_manifest_not_the_earlier_builds(tmp_path, capsys):
    # before (sweep K11): its "not built" line named OUT/<task>/manifest.jsonl, the earlier good build's (every row
    # kept), where the failed rebuild's reasons are in the build cache
    good, broken, out = tmp_path / "good", tmp_path / "broken", tmp_path / "out"
    GENERATORS["Brain-Tumor-MRI-Dataset"](good / "Brain-Tumor-MRI-Dataset")
    assert build_all.main(["--sources", str(good), "--out", str(out)]) == 0
    for split, name in (("Training", "Tr-gl_0001.jpg"), ("Testing", "Te-gl_0001.jpg")):
        (broken / "Brain-Tumor-MRI-Dataset" / split / "glioma").mkdir(parents=True)
        (broken / "Brain-Tumor-MRI-Dataset" / split / "glioma" / name).write_bytes(b"not a jpeg")
    capsys.readouterr()
    assert build_all.main(["--sources", str(broken), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    failed = out / ".build_cache" / "brain_tumor" / "failed" / "manifest.jsonl"
    assert f"not built: brain_tumor: no sample kept (its summary above and {failed} give each file's reason)" in err
    assert f"the earlier build of brain_tumor in {out} is left as it was" in err
