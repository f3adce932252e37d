"""The task registry: eleven tasks, well-formed entries, clear errors."""

import pytest

from multimed_hf import tasks
from multimed_hf.tasks import ColumnSpec, LabelSpec, SourceSpec, TaskSpec, get_source, get_task, list_tasks

ELEVEN = [
    "disease", "brain_tumor", "breast_cancer", "radiographic_findings", "bone_age", "diabetic_retinopathy",
    "motor_imagery", "cell_type", "expression_prediction", "protein_structure", "med_vqa",
]


def test_registry_holds_the_eleven_tasks():
    assert list_tasks() == ELEVEN


@pytest.mark.parametrize("name", ELEVEN)
def test_every_task_is_complete(name):
    task = get_task(name)
    assert task.modalities and task.labels and task.metrics and task.grouping_key and task.inputs
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
    everything = list_tasks(include_extras=True)
    assert everything[:len(ELEVEN)] == ELEVEN and "pmc_pairs" in everything
    assert all(get_task(name).extra for name in everything[len(ELEVEN):])
    assert not any(get_task(name).extra for name in list_tasks())
