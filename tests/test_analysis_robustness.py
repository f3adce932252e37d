"""Robustness: the corruptions per modality, MultiBench's summaries, and the curves of a trained model."""

import pytest
import torch

from analysis_tiny import TASK, quick_args, trio_splits, trio_task
from multimed_hf.analysis import (
    AnalysisError,
    RobustnessOptions,
    corrupt,
    effective_robustness,
    relative_robustness,
    robustness,
)


@pytest.mark.parametrize("modality, tensors", [
    ("mri", {"pixel_values": torch.randn(3, 3, 8, 8)}),
    ("eeg", {"values": torch.randn(3, 4, 32)}),
    ("scrna", {"values": torch.rand(3, 50) + 0.5}),
    ("dna", {"input_ids": torch.randint(5, 60, (3, 20)), "attention_mask": torch.ones(3, 20, dtype=torch.long)}),
])
def test_level_zero_leaves_inputs_alone_and_level_one_changes_them(modality, tensors):
    same = corrupt(modality, tensors, 0.0, torch.Generator().manual_seed(0))
    assert all(torch.equal(same[k], tensors[k]) for k in tensors)
    changed = corrupt(modality, tensors, 1.0, torch.Generator().manual_seed(0))
    key = next(iter(tensors))
    assert changed[key].shape == tensors[key].shape and not torch.equal(changed[key], tensors[key])
    if modality == "scrna":
        assert torch.count_nonzero(changed["values"]) == 0  # dropout of every gene
    with pytest.raises(AnalysisError, match="expected a value in \\[0, 1\\]"):
        corrupt(modality, tensors, 1.5, torch.Generator())


def test_token_substitution_keeps_the_special_tokens_and_padding():
    ids = torch.tensor([[101, 7, 8, 9, 102, 0, 0], [101, 11, 12, 13, 14, 15, 102]])
    mask = (ids != 0).long()
    out = corrupt("text", {"input_ids": ids, "attention_mask": mask}, 1.0, torch.Generator().manual_seed(1))
    assert out["input_ids"][:, 0].tolist() == [101, 101]
    assert out["input_ids"][0, 4] == 102 and out["input_ids"][1, 6] == 102
    assert out["input_ids"][0, 5:].tolist() == [0, 0]
    assert set(out["input_ids"][mask.bool()].tolist()) <= set(ids[mask.bool()].tolist())


def test_multibench_summaries_of_hand_worked_curves():
    assert relative_robustness([0, 0.5, 1.0], [1.0, 0.8, 0.4]) == pytest.approx((1.8 / 2 + 1.2 / 2) * 0.5)
    assert relative_robustness([0, 50, 100], [1.0, 0.8, 0.4]) == pytest.approx(0.75)  # levels scaled to [0, 1]
    # baseline drops 0.3 then 0.6 from its clean 0.9; the model 0.1 then 0.2 from its clean 1.0
    assert effective_robustness([1.0, 0.9, 0.8], [0.9, 0.6, 0.3]) == pytest.approx(0 + 0.2 + 0.4)
    assert effective_robustness([0.9, 0.6, 0.3], [0.9, 0.6, 0.3]) == 0


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness")
    with trio_task():
        args, targs = quick_args(out, max_steps=12)
        return robustness(args, targs, datasets=trio_splits(32, 16), options=RobustnessOptions(
            levels=[0.0, 1.0], missing_rates=[0.0, 0.5, 1.0], modality_dropouts=[0.0], modalities=["mri", "text"]))


def test_the_curve_at_corruption_zero_is_the_clean_score(curves):
    table = curves.curves[curves.curves["metric"] == "accuracy"]
    assert set(table["modality"]) == {"mri", "text"}
    at_zero = table[table["level"] == 0.0]
    assert len(at_zero) == 4  # corruption and missing, two modalities
    assert (at_zero["value"] == curves.clean[0.0]).all()
    summary = curves.summary.set_index(["perturbation", "modality"])
    assert (summary["clean"] == curves.clean[0.0]).all()
    assert (summary["effective_robustness"] == 0).all()  # the only run is its own baseline
    for path in (curves.paths.csv, curves.paths.markdown, curves.paths.figure):
        assert path.is_file()


def test_losing_the_carrier_at_test_time_costs_more_than_losing_the_text(curves):
    table = curves.curves[(curves.curves["metric"] == "accuracy") & (curves.curves["perturbation"] == "missing")]
    at_one = table[table["level"] == 1.0].set_index("modality")["value"]
    assert at_one["mri"] < at_one["text"]
    assert TASK in curves.paths.markdown.read_text()
