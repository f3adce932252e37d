"""Modality combinations: subsets, exact Shapley values, and the mask mode on a synthetic three-modality task."""

import itertools
import math

import pandas as pd
import pytest

from analysis_tiny import CARRIER, MODALITIES, TASK, quick_args, trio_splits, trio_task
from multimed_hf.analysis import AnalysisError, CombosOptions, combos, modality_subsets, shapley_values
from multimed_hf.training.run import train_model


def test_subsets_by_size_and_the_budget():
    assert modality_subsets(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c"),
                                                 ("a", "b", "c")]
    assert modality_subsets(["a", "b", "c"], max_order=1) == [("a",), ("b",), ("c",), ("a", "b", "c")]
    with pytest.raises(AnalysisError, match="exceed the budget max_subsets=5"):
        modality_subsets(list("abcd"), max_subsets=5)


def test_shapley_values_of_a_hand_worked_game():
    # v = 6 with a alone, 1 for b, c adds nothing; a and b together are worth 1 more than apart
    v = {frozenset(): 0.0, frozenset("a"): 6.0, frozenset("b"): 1.0, frozenset("c"): 0.0, frozenset("ab"): 8.0,
         frozenset("ac"): 6.0, frozenset("bc"): 1.0, frozenset("abc"): 8.0}
    phi = shapley_values(v, ["a", "b", "c"])
    assert phi == pytest.approx({"a": 6.5, "b": 1.5, "c": 0.0})
    assert sum(phi.values()) == pytest.approx(v[frozenset("abc")] - v[frozenset()])
    del v[frozenset("bc")]
    with pytest.raises(AnalysisError, match="missing.*b\\+c"):
        shapley_values(v, ["a", "b", "c"])


@pytest.fixture(scope="module")
def mask_result(tmp_path_factory):
    calls = []

    def counting_train(*args, **kwargs):
        calls.append(kwargs["plan"].modalities)
        return train_model(*args, **kwargs)

    out = tmp_path_factory.mktemp("combos")
    with trio_task():
        args, targs = quick_args(out)
        result = combos(args, targs, options=CombosOptions(modes=["mask"], modalities=list(MODALITIES)),
                        datasets=trio_splits(), train_fn=counting_train)
    return result, calls


def test_mask_mode_scores_every_subset_with_one_model(mask_result):
    result, calls = mask_result
    assert len(calls) == 1 and result.trainings == 1  # no retraining
    assert calls[0] == {TASK: MODALITIES}
    table = result.table
    subsets = {"+".join(s) for k in (1, 2, 3) for s in itertools.combinations(MODALITIES, k)} | {"(none)"}
    assert set(table["subset"]) == subsets and set(table["mode"]) == {"mask"}
    assert table[table["subset"] != "(none)"]["run"].nunique() == 1


def test_shapley_ranks_the_carrier_first_and_sums_to_all_minus_empty(mask_result):
    result, _ = mask_result
    shapley = result.shapley.set_index("modality")["shapley"]
    assert shapley.idxmax() == CARRIER
    accuracy = result.table[result.table["metric"] == "accuracy"].set_index("subset")["value"]
    assert math.isclose(shapley.sum(), accuracy["+".join(MODALITIES)] - accuracy["(none)"], abs_tol=1e-9)
    assert accuracy[CARRIER] > accuracy["eeg+text"]  # the carrier alone beats the others together
    assert accuracy["(none)"] == pytest.approx(0.5)  # balanced labels: the majority-class predictor
    assert CARRIER in result.best["mask"]


def test_combos_writes_its_files(mask_result):
    result, _ = mask_result
    for path in (result.paths.csv, result.paths.markdown, result.paths.figure):
        assert path.is_file() and path.stat().st_size > 0
    assert "Shapley" in result.paths.markdown.read_text()
    assert pd.read_csv(result.paths.csv)["subset"].nunique() == 8


def test_the_empty_predictor_learns_from_the_rows_the_models_were_trained_on():
    # before: the prior counted every training row, while --max_train_samples N trained the models on the first N
    import datasets
    import numpy as np

    from multimed_hf.analysis._common import prior_outputs

    train = datasets.Dataset.from_dict({"label": ["a"] * 3 + ["b"] * 7, "months": [10.0] * 3 + [40.0] * 7})
    head = {"outputs": [{"name": "label", "kind": "class", "names": ["a", "b"]},
                        {"name": "months", "kind": "regression"}]}
    every = prior_outputs("t", train, head)
    assert np.argmax(every["label"]) == 1 and every["months"] == pytest.approx(31.0)
    # --max_train_samples N: the N rows the runs drew (sweep K11: the first N, all "a", where the runs drew others)
    from multimed_hf.training.loading import sample_rows

    for n in (3, 5):
        kept = sample_rows({"t": train}, n)["t"]
        drawn = prior_outputs("t", train, head, max_rows=n)
        assert drawn["months"] == pytest.approx(np.mean(kept["months"]))
        assert np.argmax(drawn["label"]) == int(kept["label"].count("b") > kept["label"].count("a"))
    assert prior_outputs("t", train, head, max_rows=3)["months"] != pytest.approx(10.0)  # not the first 3 rows'


def test_the_best_subset_reads_rows_and_beats_the_empty_predictor():
    # before: med_vqa's test split had no MRI row, so {mri} scored the empty predictor's 0.375, tied with others as
    # bad, and was named "Best combination: mri", a modality the model never read on the split
    from multimed_hf.analysis.combos import NO_BEST, _best_subset

    modalities = ["ct", "mri", "text"]
    values = {frozenset(): 0.375, frozenset({"mri"}): 0.375, frozenset({"ct"}): 0.375,
              frozenset({"ct", "mri", "text"}): 0.375, frozenset({"text"}): float("nan")}
    read = {frozenset({"mri"}): 0, frozenset({"ct"}): 15, frozenset({"ct", "mri", "text"}): 24,
            frozenset({"text"}): 24}
    assert _best_subset(values, read, modalities) == NO_BEST
    values[frozenset({"ct", "mri", "text"})] = 0.5
    values[frozenset({"mri"})] = 0.9  # reads no row: never the best, whatever it scores
    assert _best_subset(values, read, modalities) == "ct+mri+text"
    values[frozenset({"ct"})] = 0.5  # a tie: the smaller subset
    assert _best_subset(values, read, modalities) == "ct"
