"""Output kinds: decoding a head's outputs back to the label's dataset representation, and a toy kind added with one
entry per layer's table (data, model, metrics)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Value

import multimed_hf.tasks as tasks
from multimed_hf.configuration_multimed import MultiMedConfig
from multimed_hf.data import label_kinds
from multimed_hf.data.features import task_features
from multimed_hf.metrics import compute_output_metrics, output_metrics
from multimed_hf.model_card import build_model_card
from multimed_hf.modeling_multimed import MultiMedModel, decode_outputs
from multimed_hf.output_kinds import OutputKind, register_output_kind, unregister_output_kind
from multimed_hf.processing_multimed import MultiMedProcessor
from multimed_hf.processors import ExpressionProcessor
from multimed_hf.tasks import get_task

HEAD = {
    "modalities": ["xray"],
    "outputs": [
        {"name": "finding", "kind": "class", "names": ["normal", "pneumonia", "covid"]},
        {"name": "answer", "kind": "class", "names": ["yes", "no", "left lung"], "from_text": True},
        {"name": "diseases", "kind": "multilabel", "names": ["a", "b", "c"]},
        {"name": "months", "kind": "regression", "target_mean": 100.0, "target_std": 40.0},
        {"name": "ca_coords", "kind": "coords", "residue_modality": "protein"},
    ],
}


def test_decode_each_kind_to_the_dataset_representation():
    logits = {
        "finding": torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]]),
        "answer": torch.tensor([[0.0, 0.0, 1.0], [5.0, 1.0, 1.0]]),
        # sigmoid > 0.5 <=> logit > 0
        "diseases": torch.tensor([[2.0, -1.0, 0.5], [-3.0, -2.0, -0.1]]),
        "months": torch.tensor([12.5, 180.0]),
        "ca_coords": torch.arange(12, dtype=torch.float32).reshape(2, 2, 3),
    }
    decoded = decode_outputs(HEAD, logits)
    assert decoded == {
        "finding": ["pneumonia", "normal"],
        "answer": ["left lung", "yes"],
        "diseases": [["a", "c"], []],
        "diseases_top1": ["a", "c"],
        "months": [12.5, 180.0],
        "ca_coords": [[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]], [[6.0, 7.0, 8.0], [9.0, 10.0, 11.0]]],
    }
    assert all(type(v) is float for v in decoded["months"])


def test_multilabel_top1_reads_the_known_names_and_numpy_inputs():
    logits = {"diseases": np.array([[2.0, -1.0, 0.5], [-3.0, -2.0, -0.1], [0.0, 1.0, 2.0]])}
    known = np.array([[False, True, True], [True, True, False], [False, False, False]])
    decoded = decode_outputs(HEAD, logits, label_masks={"diseases": known})
    # row 0: best known is c (0.5); row 1: best of a, b is b; row 2 knows nothing: best of all, c
    assert decoded["diseases_top1"] == ["c", "b", "c"]
    assert decoded["diseases"] == [["a", "c"], [], ["b", "c"]]


def test_decode_errors_name_the_column():
    with pytest.raises(ValueError, match="logits has column 'tumor', which the head spec does not have"):
        decode_outputs(HEAD, {"tumor": torch.zeros(1, 3)})
    with pytest.raises(ValueError, match=r"label_masks\['diseases'\] has 1 rows, logits\['diseases'\] has 2"):
        decode_outputs(HEAD, {"diseases": torch.zeros(2, 3)}, label_masks={"diseases": np.ones((1, 3), bool)})


def test_decode_a_registry_head_from_a_built_config():
    config = MultiMedConfig.from_tasks(["bone_age"], encoders={"xray": {"kind": "patch_embed", "config": {}}},
                                       fusion="early", regression_stats={"bone_age_months": (120.0, 30.0)})
    head = config.heads["bone_age"]
    bins = list(get_task("bone_age").label("bone_age_bin").names)
    decoded = decode_outputs(head, {"bone_age_months": torch.tensor([99.0]),
                                    "bone_age_bin": torch.eye(len(bins))[[3]]})
    assert decoded == {"bone_age_months": [99.0], "bone_age_bin": [bins[3]]}


# ---------------------------------------------------------------------------------------------------------------
# a new output kind = one entry in each layer's table: data (label_kinds), model (output_kinds), metrics
# (output_metrics); nothing else is edited. The toy kind: a yes/no flag per row, stored as a bool.

class FlagLabels(label_kinds.LabelKind):  # data side
    name = "flag"

    def feature(self, label):
        return Value("bool")

    def encode(self, label, value, row, context):
        return {label.name: float("nan") if value is None else float(bool(value))}

    def collate(self, label, encoded, context):
        return {label.name: torch.tensor([e[label.name] for e in encoded], dtype=torch.float32)}


class FlagOutput(OutputKind):  # model side
    name = "flag"
    label_kinds = ("flag",)

    def layer(self, out, hidden_size, structure):
        return torch.nn.Linear(hidden_size, 1)

    def forward(self, layer, out, features, residues):
        return layer(features).squeeze(-1)

    def check_labels(self, out, value, batch):
        if value.ndim != 1:
            raise ValueError(f"labels[{out['name']!r}]: expected FloatTensor[{batch}]")

    def loss(self, out, pred, target, mask=None):
        valid = ~torch.isnan(target)
        return F.binary_cross_entropy_with_logits(pred[valid], target[valid]) if bool(valid.any()) else None

    def vote(self, predictions, presence):
        return (predictions > 0).float().masked_fill(~presence, 0).sum(1) - 0.5

    def decode(self, out, values, known=None):
        return {out["name"]: (values > 0).tolist()}


class FlagMetrics(output_metrics.MetricKind):  # metric side
    name = "flag"
    inputs = {"accuracy": "labels"}

    def present(self, references, mask):
        return np.isfinite(references)

    def labels(self, column, metric):
        return (column.outputs > 0).astype(int), column.references.astype(int), {}


@pytest.fixture
def flag_task(monkeypatch):
    """A registry task whose one label is of the toy kind, and the three table entries, removed afterwards."""
    tasks.register_label_kind("flag", "a yes/no flag")  # the registry names the kind
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))
    cell = tasks.get_task("cell_type")
    spec = tasks.register_task(dataclasses.replace(
        cell, name="flag_task", labels=(tasks.LabelSpec("flagged", "flag"),), metrics=("accuracy",), sources=()))
    label_kinds.register_label_kind(FlagLabels())
    register_output_kind(FlagOutput())
    output_metrics.register_metric_kind(FlagMetrics())
    yield spec
    tasks.unregister_label_kind("flag")
    label_kinds.unregister_label_kind("flag")
    unregister_output_kind("flag")
    output_metrics.unregister_metric_kind("flag")


@pytest.mark.parametrize("fusion, method", [("intermediate", "concat"), ("late", "vote")])
def test_a_toy_output_kind_runs_through_data_model_metrics(flag_task, fusion, method):
    assert task_features(flag_task)["flagged"] == Value("bool")
    processor = MultiMedProcessor({"scrna": ExpressionProcessor(["G1", "G2", "G3"], panels={"p": ["G1", "G2", "G3"]})})
    rows = [{"sample_id": f"s{i}", "gene_indices": [i % 3], "gene_values": [1.0 + i], "gene_panel": "p",
             "flagged": flag} for i, flag in enumerate([True, False, None, True])]
    batch = processor(rows, "flag_task")
    assert torch.equal(batch["labels"]["flagged"].isnan(), torch.tensor([False, False, True, False]))

    config = MultiMedConfig.from_tasks(["flag_task"], hidden_size=8, fusion=fusion, fusion_method=method,
                                       fusion_num_heads=2, dropout=0.0, encoders={"scrna": {
                                           "kind": "expression", "config": {"num_genes": 3, "patch_size": 2,
                                                                            "hidden_size": 8, "num_layers": 1,
                                                                            "num_heads": 2}}})
    assert config.heads["flag_task"]["outputs"] == [{"name": "flagged", "kind": "flag"}]
    torch.manual_seed(0)
    model = MultiMedModel(config)
    out = model(**batch)
    assert out.logits["flagged"].shape == (4,) and torch.isfinite(out.loss)
    if fusion == "late":
        assert set(out.losses) == {"scrna/flagged"}  # a vote has no gradient: the modality's own loss trains
    else:
        out.loss.backward()
        assert model.heads["flag_task"].outputs["flagged"].weight.grad is not None
    decoded = decode_outputs(config.heads["flag_task"], out.logits)
    assert decoded["flagged"] == (out.logits["flagged"] > 0).tolist()
    assert "`flagged`: flag" in str(build_model_card(config))

    logits, refs = np.array([2.0, -1.0, 3.0, 0.5]), np.array([1.0, 1.0, np.nan, 1.0])
    assert compute_output_metrics("flag_task", "flagged", logits, refs) == {"accuracy": pytest.approx(2 / 3)}


def test_regression_vote_is_the_median_and_outputs_are_float32():
    # before: torch's nanmedian gives the lower middle value: the vote of two modalities was their minimum
    from multimed_hf.output_kinds import get_output_kind

    kind = get_output_kind("regression")
    predictions = torch.tensor([[3.0, 1.0, 9.0], [1.0, 3.0, 0.0], [4.0, -2.0, 7.0]])
    presence = torch.tensor([[True, True, False], [True, True, True], [True, False, False]])
    assert kind.vote(predictions, presence).tolist() == [2.0, 1.0, 4.0]
    # before: un-standardised in the prediction's dtype: in bf16 a bone age of 300 months came in 2-month steps
    out = {"name": "bone_age_months", "target_mean": 120.0, "target_std": 40.0}
    pred = torch.tensor([4.5731], dtype=torch.bfloat16)
    months = kind.to_output(out, pred)
    assert months.dtype == torch.float32 and months.item() == pytest.approx(float(pred.float()) * 40 + 120)
    assert months.item() % 2 != 0


def test_a_unanimous_multilabel_vote_is_finite_in_bf16():
    # before: in bf16, 1 - 1e-4 rounds to 1 and a name every present modality voted for got logit +inf
    from multimed_hf.output_kinds import get_output_kind

    kind = get_output_kind("multilabel")
    predictions = torch.tensor([[[2.0, -1.0], [3.0, -2.0]]], dtype=torch.bfloat16)  # [B, M, K]
    presence = torch.tensor([[True, True]])
    voted = kind.vote(predictions, presence)
    assert voted.dtype == torch.bfloat16 and torch.isfinite(voted).all()
    assert voted[0, 0] > 9 and voted[0, 1] < -9


def test_a_split_class_vote_keeps_its_tie_break_in_bf16():
    # before: in bf16 0.5 + 1e-3 x p rounded to 0.5: a 1-1 split took the lowest class index, not the class of the
    # higher mean probability (15 of 24 med_vqa answers changed under --bf16_full_eval)
    from multimed_hf.output_kinds import get_output_kind

    kind = get_output_kind("class")
    predictions = torch.tensor([[[1.0, 0.9, 0.0], [0.0, 0.0, 6.0]]])  # [B, M, K]: modality 0 says 0, modality 1 says 2
    presence = torch.tensor([[True, True]])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        assert kind.vote(predictions.to(dtype), presence).argmax(-1).tolist() == [2], dtype


def test_the_model_card_says_what_the_model_is():
    # before (sweep C5): every card read "A multimodal, multitask model" and was tagged multimodal and multitask, a
    # unimodal single-task run too
    from multimed_hf.configuration_multimed import MultiMedConfig

    one = build_model_card(MultiMedConfig.from_tasks(["bone_age"]))
    assert "A single-modality, single-task model" in str(one)
    assert "multimodal" not in one.data.tags and "multitask" not in one.data.tags
    several = build_model_card(MultiMedConfig.from_tasks(["diabetic_retinopathy", "bone_age"]))
    assert "A multimodal, multitask model" in str(several)
    assert {"multimodal", "multitask"} <= set(several.data.tags)
    # two one-modality tasks over two modalities (sweep K12: "single-modality")
    pair = build_model_card(MultiMedConfig.from_tasks(["brain_tumor", "bone_age"]))
    assert "A multimodal, multitask model" in str(pair) and "multimodal" in pair.data.tags
