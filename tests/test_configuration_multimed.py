"""MultiMedConfig: head specs from the task registry, encoder specs, validation, and the JSON round trip."""

import json

import pytest
from transformers import AutoConfig

from multimed_hf.configuration_multimed import (
    DEFAULT_EMBEDDERS,
    DEFAULT_ENCODERS,
    MultiMedConfig,
    normalize_encoder_spec,
    timm_encoder_spec,
)
from multimed_hf.tasks import get_task, list_tasks

VOCABS = {"cell_type": ["b_cell", "t_cell", "monocyte"], "med_vqa": ["yes", "no", "left"]}


def _vit():
    return AutoConfig.for_model("vit", hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=37, image_size=30, patch_size=10)


@pytest.mark.parametrize("task", list_tasks())
def test_from_tasks_reads_every_registered_task(task):
    config = MultiMedConfig.from_tasks([task], vocabularies=VOCABS)
    spec, head = get_task(task), config.heads[task]
    assert head["modalities"] == list(spec.modalities)
    assert [o["name"] for o in head["outputs"]] == list(spec.label_names)  # one output per label column
    for label, out in zip(spec.labels, head["outputs"]):
        expected_kind = {"text": "class"}.get(label.kind, label.kind)
        assert out["kind"] == expected_kind
        if label.kind in ("class", "multilabel"):
            assert out["names"] == list(label.names)
            assert config.id2label_for(task, label.name) == dict(enumerate(label.names))
        if label.kind == "text":
            assert out["names"] == VOCABS[task] and out["from_text"]
    assert set(config.encoders) == set(spec.modalities)
    for m in spec.modalities:  # Hub-id defaults per modality, following the paper
        assert config.encoders[m] == normalize_encoder_spec(m, DEFAULT_ENCODERS[m])


def test_two_label_columns_and_single_task_labels():
    config = MultiMedConfig.from_tasks(["breast_cancer", "bone_age"], regression_stats={"bone_age_months": (120, 40)})
    assert [o["name"] for o in config.heads["breast_cancer"]["outputs"]] == ["malignancy", "subtype"]
    kinds = {o["name"]: o for o in config.heads["bone_age"]["outputs"]}
    assert kinds["bone_age_months"]["kind"] == "regression" and kinds["bone_age_months"]["target_mean"] == 120
    assert kinds["bone_age_bin"]["kind"] == "class"
    single = MultiMedConfig.from_tasks(["brain_tumor"])
    assert single.id2label == {0: "glioma", 1: "meningioma", 2: "no_tumor", 3: "pituitary"}
    assert single.label2id["pituitary"] == 3 and single.problem_type == "single_label_classification"


def test_free_text_label_needs_a_vocabulary():
    with pytest.raises(ValueError, match="free text; give its vocabulary"):
        MultiMedConfig.from_tasks(["med_vqa"])


def test_modality_subset_and_early_defaults():
    config = MultiMedConfig.from_tasks(["disease"], modalities={"disease": ["xray", "ct", "mri"]})
    assert config.heads["disease"]["modalities"] == ["xray", "ct", "mri"] and set(config.encoders) == {"xray", "ct", "mri"}
    with pytest.raises(ValueError, match="does not read"):
        MultiMedConfig.from_tasks(["brain_tumor"], modalities={"brain_tumor": ["eeg"]})
    early = MultiMedConfig.from_tasks(["expression_prediction"], fusion="early")
    assert early.encoders["dna"] == DEFAULT_EMBEDDERS["dna"] and early.fusion_method == "concat"


def test_encoder_spec_forms():
    assert normalize_encoder_spec("text", "org/model")["pretrained"] == "org/model"
    spec = normalize_encoder_spec("oct", _vit())
    assert spec["kind"] == "auto" and spec["config"]["model_type"] == "vit" and spec["pretrained"] is None
    assert normalize_encoder_spec("oct", _vit().to_dict())["config"]["hidden_size"] == 24
    timm = timm_encoder_spec("test_vit", img_size=32)
    assert timm["config"]["model_type"] == "timm_wrapper" and timm["config"]["model_args"] == {"img_size": 32}
    with pytest.raises(ValueError, match="did you mean 'eeg_lstm'"):
        normalize_encoder_spec("eeg", {"kind": "eeg_lstn"})
    with pytest.raises(TypeError, match="expected a Hub id"):
        normalize_encoder_spec("eeg", 3)


@pytest.mark.parametrize("kwargs, message", [
    ({"fusion": "middle"}, "fusion 'middle' is not one of"),
    ({"fusion": "late", "fusion_method": "gated"}, "does not go with fusion 'late'"),
    ({"fusion_tokens": "sequence", "fusion_method": "mean"}, "needs fusion_method='attention'"),
    ({"hidden_size": 10, "fusion_num_heads": 4}, r"hidden_size \(10\) is not a multiple"),
    ({"modality_dropout": 1.0}, r"must be in \[0, 1\)"),
    ({"loss_weights": {"brain_tumour": 2.0}}, "did you mean 'brain_tumor'"),
    ({"loss_weights": {"brain_tumor": {"mri": 2.0}}}, "apply only to late fusion"),
    ({"loss_weights": {"brain_tumor": {"fused": -1.0}}}, "must be finite and >= 0"),
    ({"frozen_encoders": ["eeg"]}, r"frozen_encoders \['eeg'\] have no encoder"),
    ({"fusion": "early"}, "does not go with fusion 'early'"),
])
def test_validation_errors_show_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiMedConfig.from_tasks(["brain_tumor"], encoders={"mri": _vit()}, **kwargs)


def test_heads_need_encoders_and_shared_targets():
    head = {"modalities": ["mri"], "outputs": [{"name": "tumor", "kind": "class", "names": ["a", "b"]}]}
    with pytest.raises(ValueError, match=r"reads modalities \['mri'\] that have no encoder"):
        MultiMedConfig(heads={"brain_tumor": head}, encoders={"xray": _vit()})
    with pytest.raises(ValueError, match="shares with 'ct', which is not a modality"):
        MultiMedConfig(heads={"brain_tumor": head}, encoders={"mri": {"kind": "shared", "with": "ct"}})
    with pytest.raises(ValueError, match="needs at least 2 class names"):
        MultiMedConfig(heads={"t": {"modalities": ["mri"], "outputs": [{"name": "y", "kind": "class", "names": ["a"]}]}},
                       encoders={"mri": _vit()})


def test_late_fusion_loss_weights_per_modality():
    config = MultiMedConfig.from_tasks(["breast_cancer"], fusion="late",
                                       loss_weights={"breast_cancer": {"pathology": 0.5, "fused": 0.0}})
    assert config.fusion_method == "weighted_mean"
    assert config.loss_weight("breast_cancer", "pathology") == 0.5
    assert config.loss_weight("breast_cancer", "mammography") == 1.0
    assert config.loss_weight("breast_cancer") == 0.0
    assert MultiMedConfig.from_tasks(["brain_tumor"], loss_weights={"brain_tumor": 3}).loss_weight("brain_tumor") == 3.0


def test_round_trip_through_json(tmp_path):
    config = MultiMedConfig.from_tasks(["diabetic_retinopathy", "cell_type"], vocabularies=VOCABS,
                                       encoders={"oct": _vit(), "fundus": {"kind": "shared", "with": "oct"}},
                                       hidden_size=48, fusion_method="attention", fusion_tokens="sequence")
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "multimed" and saved["encoders"]["oct"]["config"]["model_type"] == "vit"
    loaded = MultiMedConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert list(loaded.encoders) == sorted(loaded.encoders)  # stable modality order (config.json sorts keys)
    assert MultiMedConfig().to_diff_dict()["model_type"] == "multimed"  # defaults build


def test_auto_config_registration():
    import multimed_hf.modeling_multimed  # noqa: F401  (registers the auto classes)

    assert type(AutoConfig.for_model("multimed")) is MultiMedConfig
