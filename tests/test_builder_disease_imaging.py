"""The disease config over the other tasks' imaging sources: same files, same groups, harmonised labels."""

from collections import defaultdict

import pytest
from datasets import load_dataset

from dataset_scripts.sample_sources import sample_generators
from multimed_hf.api import build_dataset
from multimed_hf.data.manifest import read_manifest
from multimed_hf.tasks import get_task

FOLDERS = {  # sample folder -> its own task
    "Brain-Tumor-MRI-Dataset": "brain_tumor",
    "OCT2017": "diabetic_retinopathy",
    "chest_xray": "radiographic_findings",
    "BreaKHis_v1": "breast_cancer",
    "aptos2019-blindness-detection": "diabetic_retinopathy",
    "cell_images": None,  # malaria: already a disease source
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("disease")
    generators = sample_generators()
    roots = {folder: generators[folder](tmp / folder) for folder in FOLDERS}
    report = build_dataset("disease", list(roots.values()), tmp / "multimed", progress=False)
    own = {task for task in FOLDERS.values() if task}
    for folder, task in FOLDERS.items():
        if task:
            build_dataset(task, [roots[folder]], tmp / "own", progress=False)
    return tmp, report, own


def test_every_record_carries_harmonised_labels_and_its_mask(built):
    tmp, report, _ = built
    ds = load_dataset(str(tmp / "multimed"), "disease")
    names = ds["train"].features["diseases"].feature.names
    disease = get_task("disease")
    seen = defaultdict(set)
    for split in ds:
        for row in ds[split]:
            spec = disease.source(row["source"])
            assert row["image"] is not None and row["modality"] == spec.modality
            present = {names[i] for i in row["diseases"]}
            assert present and present <= set(row["label_mask"])
            assert set(row["label_mask"]) == set(spec.label_map["diseases"].values())
            seen[row["source"]] |= present
    assert seen["brain_tumor_mri"] == {"glioma", "meningioma", "pituitary_tumor", "normal"}
    assert seen["oct2017"] == {"cnv", "dme", "drusen", "normal"}
    assert seen["kermany_cxr"] == {"normal", "bacterial_pneumonia", "viral_pneumonia"}
    assert seen["breakhis"] == {"breast_benign", "breast_malignant"}
    assert seen["aptos2019"] <= {"normal", "diabetic_retinopathy"} and "diabetic_retinopathy" in seen["aptos2019"]
    assert seen["lhncbc_malaria"] == {"malaria", "normal"}


def test_same_files_same_decisions_as_in_their_own_configs(built):
    tmp, _, own = built
    disease = {(e.source, e.source_path): e for e in read_manifest(tmp / "multimed" / "disease")}
    for task in own:
        for entry in read_manifest(tmp / "own" / task):
            twin = disease[(entry.source, entry.source_path)]
            if entry.reason.startswith("label conflict") and twin.status == "kept":
                continue  # e.g. BreakHis copies filed as two malignant subtypes: one harmonised name, no conflict
            assert twin.status == entry.status, (entry, twin)
            if entry.status == "rejected":
                assert twin.reason == entry.reason


def test_no_group_spans_two_splits(built):
    tmp, _, _ = built
    splits = defaultdict(set)
    for entry in read_manifest(tmp / "multimed" / "disease"):
        if entry.split:
            splits[entry.group].add(entry.split)
    assert splits and all(len(s) == 1 for s in splits.values())


def test_the_disease_head_reads_the_new_sources_modalities():
    from multimed_hf.configuration_multimed import MultiMedConfig

    config = MultiMedConfig.from_tasks(["disease"])
    assert {"mri", "oct", "xray", "fundus", "pathology", "ct", "text"} <= set(config.encoders)
