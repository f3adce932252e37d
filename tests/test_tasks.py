"""The task registry: well-formed entries (every registered task and extra), clear errors, its own registries."""

import dataclasses

import pytest

from multimed_hf import tasks
from multimed_hf.tasks import ColumnSpec, LabelSpec, SourceSpec, TaskSpec, get_source, get_task, list_tasks

EVERY_TASK = list_tasks(include_extras=True)


@pytest.fixture
def scratch_registry(monkeypatch):
    """The task registry as it is, restored after the test (a test may register tasks in it)."""
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))
    return tasks


def _toy(name: str, extra: bool = False) -> TaskSpec:
    return TaskSpec(
        name=name, title=name, sample="x", modalities=("mri",), problem_type="single_label_classification",
        labels=(LabelSpec("tumor", "class", ("glioma", "other")),), metrics=("accuracy",), grouping_key="g",
        inputs=(ColumnSpec("image", "image"),), extra=extra,
    )


def test_list_tasks_keeps_registration_order_and_leaves_extras_out(scratch_registry):
    before, everything = list_tasks(), list_tasks(include_extras=True)
    assert before and set(before) < set(everything)
    scratch_registry.register_task(_toy("zz_task"))
    scratch_registry.register_task(_toy("zz_extra", extra=True))
    assert list_tasks() == [*before, "zz_task"]
    assert list_tasks(include_extras=True) == [*everything, "zz_task", "zz_extra"]


@pytest.mark.parametrize("name", EVERY_TASK)
def test_every_task_is_complete(name):
    task = get_task(name)
    assert task.modalities and task.metrics and task.grouping_key and task.inputs
    assert task.labels or task.problem_type == "contrastive"  # a contrastive extra's pairing is its supervision
    for source in task.sources:
        assert source.citation.startswith("@") and source.license and source.homepage and source.layout
        assert get_source(source.name, task=name) == (task, source)
    for label in task.labels:
        if label.kind == "class":
            assert label.num_classes >= 2


def test_unknown_task_suggests_close_names():
    with pytest.raises(ValueError, match=r"unknown task 'brain_tumour'; did you mean 'brain_tumor'"):
        get_task("brain_tumour")


def test_unknown_source_suggests_close_names():
    with pytest.raises(ValueError, match=r"did you mean 'oct2017'"):
        get_source("oct2016")


def test_duplicate_task_name_raises():
    with pytest.raises(ValueError, match="already registered"):
        tasks.register_task(get_task("brain_tumor"))


def test_label_map_must_target_canonical_names():
    source = SourceSpec(
        name="s", title="t", modality="mri", citation="@x", license="l", redistributable=True, homepage="h",
        layout="l", grouping="g", label_map={"tumor": {"glioma": "gliomaa"}},
    )
    with pytest.raises(ValueError, match=r"maps to \['gliomaa'\]"):
        TaskSpec(
            name="x", title="x", sample="x", modalities=("mri",), problem_type="single_label_classification",
            labels=(LabelSpec("tumor", "class", ("glioma", "other")),), metrics=("accuracy",), grouping_key="g",
            inputs=(ColumnSpec("image", "image"),), sources=(source,),
        )


def test_bad_column_dtype_is_named():
    with pytest.raises(ValueError, match="column 'x': dtype 'tensor'"):
        ColumnSpec("x", "tensor")


def test_registry_entries_are_read_only():
    source = get_task("diabetic_retinopathy").source("oct2017")
    with pytest.raises(TypeError):
        source.label_map["oct_finding"]["CNV"] = "other"


def test_extras_are_listed_only_when_asked():
    tasks_only, everything = list_tasks(), list_tasks(include_extras=True)
    assert everything[:len(tasks_only)] == tasks_only and "pmc_pairs" in everything
    assert all(get_task(name).extra for name in everything[len(tasks_only):])
    assert not any(get_task(name).extra for name in tasks_only)


def test_a_new_label_kind_is_registered_not_edited_in():
    with pytest.raises(ValueError, match=r"label 'f': kind 'flag' is not one of \('class', "):
        LabelSpec("f", "flag")
    tasks.register_label_kind("flag", "a yes/no flag")
    try:
        assert tasks.LABEL_KINDS["flag"] == "a yes/no flag" and LabelSpec("f", "flag").kind == "flag"
        with pytest.raises(ValueError, match="label kind 'flag' is already registered"):
            tasks.register_label_kind("flag", "again")
    finally:
        tasks.unregister_label_kind("flag")
    assert "flag" not in tasks.LABEL_KINDS
    with pytest.raises(ValueError, match="label kind 'flag' is not registered"):
        tasks.unregister_label_kind("flag")
    with pytest.raises(TypeError, match="does not support item assignment"):
        tasks.LABEL_KINDS["flag"] = "edited in"  # read-only: kinds are registered


def test_residue_modality_must_be_one_the_task_reads():
    protein = get_task("protein_structure")
    coords = protein.label("ca_coords")
    assert coords.residue_modality in protein.modalities
    with pytest.raises(ValueError, match="residue_modality 'dna' is not among the task's modalities"):
        TaskSpec(
            name="x", title="x", sample="x", modalities=("protein",), problem_type="structure",
            labels=(LabelSpec("ca", "coords", residue_modality="dna"),), metrics=("tm_score",), grouping_key="g",
            inputs=(ColumnSpec("sequence", "string", modality="protein"),),
        )
    with pytest.raises(ValueError, match="residue_modality 'amino' is not one of"):
        LabelSpec("ca", "coords", residue_modality="amino")


def test_a_source_states_its_organ_as_a_lower_case_name_or_none():
    source = get_task("brain_tumor").source("brain_tumor_mri")
    assert source.organ == "brain"
    assert dataclasses.replace(source, organ=None).organ is None
    for bad in ("", " ", "Lung", " lung"):
        with pytest.raises(ValueError, match=f"source 'brain_tumor_mri': organ {bad!r} must be None or a lower-case"):
            dataclasses.replace(source, organ=bad)


def test_every_disease_source_states_its_organ_but_clinical_text():
    spec = get_task("disease")
    assert "organ" in {c.name for c in spec.metadata}
    stated = {s.name: s.organ for s in spec.sources}
    assert [name for name, organ in stated.items() if organ is None] == [
        s.name for s in spec.sources if s.modality == "text"]
    for source in spec.sources:  # the disease entry of a source read again states what its own entry does
        own = [t.source(source.name) for t in map(get_task, list_tasks()) if t.name != "disease"
               and source.name in {s.name for s in t.sources}]
        assert all(o.organ == source.organ for o in own)
