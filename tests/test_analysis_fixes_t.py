"""Fixes of sweep H4's findings on ood and combos: ood's classes seen in training are those of the rows
--max_train_samples drew, ood.md keeps a metric (and a group) undefined everywhere as dashes, and combos --modes
retrain refuses a +variant before training anything."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest

from analysis_tiny import MODALITIES, TASK, quick_args, trio_splits, trio_task
from multimed_hf.analysis import AnalysisError, CombosOptions, OODOptions, combos, ood
from multimed_hf.analysis.ood import SCORED, UNDEFINED_NOTE, OODResult, _markdown
from multimed_hf.training.loading import sample_rows
from multimed_hf.training.run import train_model


# ---------------------------------------------------------------------- 1. ood: the classes of the rows drawn
def test_ood_lists_a_class_the_drawn_training_rows_never_hold_as_unseen(tmp_path):
    # before: the classes seen in training were read from the whole training split, so with --max_train_samples N
    # a class only outside the N rows drawn was scored (sweep H4: 12 lung `T cell` rows, accuracy 0) where the
    # closed-set head never saw it
    n = 8
    splits = trio_splits(48, 24)
    train = splits["train"]
    without_east = train.select([i for i, site in enumerate(train["site"]) if site != "east"])
    drawn = set(sample_rows({"t": without_east}, n)["t"]["sample_id"])  # what train_model draws for without-east
    drawn |= set(sample_rows({"t": train}, n)["t"]["sample_id"])  # and for --in_distribution's reference
    # `present` only outside the rows drawn: the whole split holds it, the rows trained on never do
    splits["train"] = train.map(lambda r: {"finding": 0 if r["sample_id"] in drawn else 1})
    assert 0 < sum(splits["train"]["finding"]) < len(train)
    east_present = sum(int(site == "east" and y == 1) for ds in splits.values()
                       for site, y in zip(ds["site"], ds["finding"]))
    east_test_present = sum(int(site == "east" and y == 1)
                            for site, y in zip(splits["test"]["site"], splits["test"]["finding"]))
    with trio_task():
        args, targs = quick_args(tmp_path, max_steps=1, max_train_samples=n)
        result = ood(args, targs, options=OODOptions(group="site", groups=["east"], min_group_rows=1,
                                                     in_distribution=True), datasets={TASK: splits})
    table = result.table.drop_duplicates(["group", "setting"]).set_index("setting")
    assert table.loc["out-of-distribution", "unseen"] == east_present > 0
    assert table.loc["in-distribution", "unseen"] == east_test_present > 0
    assert set(table["status"]) == {SCORED}  # the `absent` rows are still scored
    assert sum(result.predicted_as[(TASK, "east", "out-of-distribution")].values()) == east_present
    assert "rows of classes unseen in training were predicted as" in result.paths.markdown.read_text()


# ---------------------------------------------------------------------- 2. ood.md: undefined scores as dashes
def _scored(group, setting, scores, scored=12):
    return [{"task": "disease", "label": "diagnosis", "group_column": "organ", "group": group, "setting": setting,
             "status": SCORED, "rows": scored, "scored": scored, "unseen": 0, "metric": metric, "value": value,
             "ci_low": value, "ci_high": value} for metric, value in scores.items()]


def test_ood_md_keeps_a_metric_undefined_for_every_group_as_dashes():
    # before: pivot_table dropped the accuracy and specificity columns (sweep H4: disease, brain and breast held
    # out, no row knowing two names) and ood.md showed sensitivity alone, without a word
    nan = float("nan")
    rows = (_scored("brain", "out-of-distribution", {"accuracy": nan, "sensitivity": 0.4, "specificity": nan})
            + _scored("breast", "out-of-distribution", {"accuracy": nan, "sensitivity": 0.7, "specificity": nan})
            + _scored("lung", "out-of-distribution", {"accuracy": nan, "sensitivity": nan, "specificity": nan}))
    result = OODResult(table=pd.DataFrame(rows), predicted_as={})
    text = _markdown(result, OODOptions(group="organ"))
    header = next(line for line in text.splitlines() if line.startswith("| task"))
    assert header == "| task | group | setting | scored | accuracy | sensitivity | specificity |"
    assert "| disease | brain | out-of-distribution | 12 | – | 0.400 | – |" in text
    # a group with no defined score at all stays in the table too (pivot_table dropped its row)
    assert "| disease | lung | out-of-distribution | 12 | – | – | – |" in text
    assert UNDEFINED_NOTE in text
    defined = OODResult(table=pd.DataFrame(_scored("brain", "out-of-distribution", {"accuracy": 0.5,
                                                                                     "sensitivity": 0.4,
                                                                                     "specificity": 0.9})),
                        predicted_as={})
    assert UNDEFINED_NOTE not in _markdown(defined, OODOptions(group="organ"))


# ---------------------------------------------------------------------- 3. combos retrain: a variant refused first
@pytest.mark.parametrize("variant", ["miles", "ogm_ge"])
def test_combos_retrain_with_a_variant_is_refused_before_any_training(tmp_path, variant):
    # before: the full model trained (a run folder written), then +miles refused the first one-modality subset, no
    # combos.csv, and the re-run was refused for the earlier run in runs/
    calls = []

    def counting_train(*args, **kwargs):
        calls.append(kwargs["plan"].modalities)
        return train_model(*args, **kwargs)

    with trio_task():
        args, targs = quick_args(tmp_path, max_steps=1)
        args = dataclasses.replace(args, family=f"multimodal+{variant}")
        with pytest.raises(AnalysisError, match=f"--family multimodal\\+{variant} --modes mask retrain: retrain mode "
                                                f"trains one model per modality subset, and on subset 'mri': "
                                                f"\\+{variant} balances modalities.*Nothing was trained; use --modes "
                                                f"mask .*or --family multimodal to retrain"):
            combos(args, targs, options=CombosOptions(modes=["mask", "retrain"], modalities=list(MODALITIES)),
                   datasets=trio_splits(16, 8), train_fn=counting_train)
    assert calls == [] and not (tmp_path / "runs").exists()


def test_combos_checks_the_variant_on_the_rows_drawn_and_lets_mask_mode_through():
    from multimed_hf.analysis.combos import _check_variant

    with trio_task():
        args, _ = quick_args("unused", max_train_samples=4)
        args = dataclasses.replace(args, family="multimodal+miles")
        train = trio_splits(16, 8)["train"]
        _check_variant(args, TASK, [MODALITIES], ["mask"], lambda subset: train)  # the full model: two modalities
        # a pair whose rows drawn never hold both (each one of them), though other rows do: check_rows, on the
        # rows --max_train_samples draws (as train_model checks them), refuses it before any training
        drawn = set(sample_rows({"t": train}, 4)["t"]["sample_id"])
        single = train.map(lambda r, i: ({"text": "a text", "eeg": [[0.0] * 64] * 3} if r["sample_id"] not in drawn
                                         else {"text": None} if i % 2 else {"eeg": None}), with_indices=True)

        def rows(subset):
            return train if len(subset) == len(MODALITIES) else single

        with pytest.raises(AnalysisError, match="subset 'eeg\\+text'.*no training row of \\['zz_trio'\\] holds two"):
            _check_variant(args, TASK, [MODALITIES, ("eeg", "text")], ["retrain"], rows)
        _check_variant(dataclasses.replace(args, max_train_samples=None), TASK, [MODALITIES, ("eeg", "text")],
                       ["retrain"], rows)  # every row: some hold both
        _check_variant(args, TASK, [MODALITIES, ("eeg", "text")], ["retrain"])  # rows not given: check_plan only
