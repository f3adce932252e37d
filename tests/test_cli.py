"""The ``multimed`` command: each subcommand calls the API and says clearly what went wrong."""

import json
import subprocess
import sys

import pytest

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.builders import builders_for_task
from multimed_hf.cli import main
from multimed_hf.tasks import get_task, list_tasks


def test_help_explains_itself():
    result = subprocess.run([sys.executable, "-m", "multimed_hf.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("list", "info", "build", "push"):
        assert command in result.stdout
    assert "load_dataset" in result.stdout


def test_list_names_every_task_with_its_builders(capsys):
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_tasks()  # one line per task, in registry order
    for name, line in zip(list_tasks(), lines):
        built = ", ".join(b.source for b in builders_for_task(name)) or "no builder yet"
        assert line.endswith(f"  sources with builders: {built}"), line


@pytest.mark.parametrize("task", list_tasks(include_extras=True))
def test_info_says_which_sources_may_be_redistributed(task, capsys):
    """The README points here for the sources left out of pushes: every source, marked from the registry."""
    assert main(["info", task]) == 0
    out = capsys.readouterr().out
    for source in get_task(task).sources:
        block = out.split(f"  source {source.name} (", 1)[1].split("\n    layout:", 1)[0]
        marked = "(not redistributable)" if not source.redistributable else "(redistributable"
        assert marked in block and source.license in block, (source.name, block)
        # what the licence covers, where not every file of the folder (before: "redistributable" alone)
        for pattern in (*source.licensed_files, *source.own_terms_files):
            assert pattern in block, (source.name, block)


def test_info_shows_sources_and_licences(capsys):
    assert main(["info", "diabetic_retinopathy"]) == 0
    out = capsys.readouterr().out
    assert "oct2017 (builder ready)" in out and "CC-BY-4.0" in out and "grouping key: patient" in out


def test_info_unknown_task_suggests(capsys):
    assert main(["info", "brain_tumour"]) == 2
    assert "did you mean 'brain_tumor'" in capsys.readouterr().err


def test_build_prints_the_summary(tmp_path, capsys):
    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    assert main(["build", "brain_tumor", "--source", str(source), "--out", str(tmp_path / "multimed"), "--quiet"]) == 0
    out = capsys.readouterr().out
    counts = json.loads((tmp_path / "multimed" / "brain_tumor" / "build_info.json").read_text())["counts"]
    assert counts["kept"] > 0 and counts["rejected"] > 0  # the sample holds good and damaged files
    summary = (f"kept {counts['kept']} (moved {counts.get('moved', 0)}), dropped {counts.get('dropped', 0)}, "
               f"rejected {counts['rejected']}")
    assert summary in out and "load_dataset(" in out


@pytest.mark.parametrize("inside", ["multimed", "."])
def test_build_refuses_an_output_folder_inside_the_source_folder(tmp_path, capsys, inside):
    # before (sweep S): the build read its own output (cache, shards, manifest) as stray source files, and a second
    # build of a folder of archives found only the unpacked copies it had left there
    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    out = source / inside
    assert main(["build", "brain_tumor", "--source", str(source), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"the output folder {out} lies inside the source folder {source}" in err
    assert "choose an output folder outside it" in err and not (source / "brain_tumor").exists()


def test_build_strict_fails_naming_the_file(tmp_path, capsys):
    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    args = ["build", "brain_tumor", "--source", str(source), "--out", str(tmp_path / "o"), "--strict", "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "multimed build: error: brain_tumor_mri: " in err and str(source) in err


def test_push_without_namespace_is_refused(tmp_path, capsys):
    assert main(["push", str(tmp_path), "--repo", "multimed"]) == 2
    assert "the bare id 'multimed' is taken" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["build", "brain_tumor", "--source", "unused", "--out", "OUT"],
    ["federate", "--data", "unused", "--tasks", "expression_prediction", "--output-dir", "OUT"],
])
def test_build_and_federate_refuse_several_launched_processes(argv, tmp_path, monkeypatch, capsys):
    # before: under torchrun each process ran the whole build (one crashed on the other's SQLite store, the config
    # was left with no sample) or the whole federation (two runs writing one folder, two numbers printed)
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = [str(tmp_path / a) if a == "OUT" else a for a in argv]
    assert main(argv) == 2
    assert f"multimed {argv[0]}: error: launched as 2 processes (WORLD_SIZE=2)" in capsys.readouterr().err
    assert not (tmp_path / "OUT").exists()


def test_build_into_a_folder_it_cannot_write_says_so(tmp_path, capsys, monkeypatch):
    # before (sweep S): a read-only --out gave a 20-line OSError traceback from the build store
    import os

    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    out = tmp_path / "out"
    out.mkdir()
    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(out)):
            raise OSError(30, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    assert main(["build", "brain_tumor", "--source", str(source), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"multimed build: error: cannot write or read {out}") and "Read-only file system" in err


def test_a_rebuild_that_keeps_no_sample_leaves_the_earlier_build_as_it_was(tmp_path, capsys):
    # before (sweep S): the failed rebuild (a wrong or unfinished download) removed the good build's shards and card
    # entry, and wrote its own empty manifest and build info over theirs
    from datasets import load_dataset

    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp_path / "bt")
    out = tmp_path / "multimed"
    assert main(["build", "brain_tumor", "--source", str(source), "--out", str(out), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in (out / "brain_tumor").rglob("*") if p.is_file()}
    card = (out / "README.md").read_text()
    broken = tmp_path / "broken"
    for split, name in (("Training", "Tr-gl_0001.jpg"), ("Testing", "Te-gl_0001.jpg")):
        (broken / split / "glioma").mkdir(parents=True)
        (broken / split / "glioma" / name).write_bytes(b"version https://git-lfs.github.com/spec/v1\n")
    capsys.readouterr()
    assert main(["build", "brain_tumor", "--source", str(broken), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    failed = out / ".build_cache" / "brain_tumor" / "failed" / "manifest.jsonl"
    assert f"no sample kept; the summary above and {failed} give each file's reason" in err
    assert f"the earlier build of brain_tumor in {out} is left as it was" in err
    assert {p: p.read_bytes() for p in (out / "brain_tumor").rglob("*") if p.is_file()} == before
    assert (out / "README.md").read_text() == card
    assert len(load_dataset(str(out), "brain_tumor", split="train", cache_dir=str(tmp_path / "hf"))) > 0
    rejected = [json.loads(line) for line in failed.read_text().splitlines()]
    assert {e["source_path"] for e in rejected} == {"Training/glioma/Tr-gl_0001.jpg", "Testing/glioma/Te-gl_0001.jpg"}
    assert all(e["status"] == "rejected" for e in rejected)


def test_a_source_folder_of_another_layout_says_what_it_holds(tmp_path, capsys):
    # before (sweep S): the error listed the layouts expected, never the sub-folders that match, nor the task whose
    # layout the folder has (and for a folder of downloads advised unpacking other sources' archives)
    parent = tmp_path / "downloads"
    sample_generators()["Brain-Tumor-MRI-Dataset"](parent / "Brain-Tumor-MRI-Dataset")
    sample_generators()["OCT2017"](parent / "OCT2017")
    assert main(["build", "brain_tumor", "--source", str(parent), "--out", str(tmp_path / "o1"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Its sub-folders Brain-Tumor-MRI-Dataset (brain_tumor_mri) hold layouts of this task: give each" in err
    assert main(["build", "brain_tumor", "--source", str(parent / "OCT2017"), "--out", str(tmp_path / "o2"),
                 "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "It has the layout of oct2017 of task 'disease', oct2017 of task 'diabetic_retinopathy'" in err
    # a folder of downloads: each sub-folder named with its task, never "build that task from the top folder" (sweep
    # K11: several layouts look a folder or more down, so the top folder "had" a dozen; following that advice built
    # one source from the whole folder, the other downloads' files rejected as stray)
    assert "It has the layout" not in _build_error(parent, "brain_tumor", tmp_path / "o3", capsys)
    sample_generators()["BreaKHis_v1"](parent / "BreaKHis_v1")
    (parent / "Brain-Tumor-MRI-Dataset").rename(tmp_path / "moved")
    err = _build_error(parent, "bone_age", tmp_path / "o4", capsys)
    assert "It has the layout" not in err
    assert (f"Its sub-folders BreaKHis_v1 (breakhis of task 'disease'), OCT2017 (oct2017 of task 'disease') hold other "
            f"tasks' sources: build each from its own folder (multimed build TASK --source {parent}/SUB-FOLDER), or "
            f"all of them with dataset_scripts/build_all.py --sources {parent}") in err


def _build_error(source, task, out, capsys) -> str:
    assert main(["build", task, "--source", str(source), "--out", str(out), "--quiet"]) == 2
    return capsys.readouterr().err
