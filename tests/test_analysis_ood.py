"""Out-of-distribution analysis: held-out groups never reach training, unscorable groups are listed, the scores."""

import json

import numpy as np
import pytest

from datasets import Dataset, Features, Value

from analysis_tiny import TASK, quick_args, trio_splits, trio_task
from multimed_hf.analysis import AnalysisError, OODOptions, ood, ood_metrics
from multimed_hf.analysis.ood import NO_GROUP, SCORED, TOO_SMALL, UNSEEN, _hide_unseen_names, resolve_group_column
from multimed_hf.training.predictions import TaskPredictions
from multimed_hf.training.run import train_model


def test_scores_of_a_hand_worked_case():
    logits = np.eye(3)[[0, 0, 1, 2, 2, 2]]  # predicted 0, 0, 1, 2, 2, 2
    truth = np.array([0, 1, 1, 2, 2, 0])
    scores = ood_metrics("class", logits, truth)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # recall per class: 0 -> 1/2, 1 -> 1/2, 2 -> 2/2; specificity: 0 -> 3/4, 1 -> 4/4, 2 -> 3/4
    assert scores["sensitivity"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert scores["specificity"] == pytest.approx((0.75 + 1 + 0.75) / 3)
    assert ood_metrics("regression", np.array([1.0, 2, 3]), np.array([2.0, 4, 6])) == {"pearson": pytest.approx(1)}


def test_multilabel_accuracy_leaves_out_rows_with_a_single_known_name():
    # before: a held-out organ's rows kept only `normal` known once its diseases were hidden, so top-1 among the
    # row's known names was right whatever the logits: accuracy 1.000 [1.000, 1.000] for any model
    nan = np.nan
    only_normal = np.array([[1.0, nan, nan], [0.0, nan, nan], [1.0, nan, nan]])
    random_logits = np.random.default_rng(0).normal(size=(3, 3))
    assert np.isnan(ood_metrics("multilabel", random_logits, only_normal)["accuracy"])
    two_known = np.vstack([only_normal, [[1.0, 0.0, nan], [0.0, 1.0, nan]]])
    logits = np.vstack([random_logits, [[0.0, 3.0, 0.0], [0.0, 3.0, 0.0]]])  # row 3 wrong, row 4 right
    assert ood_metrics("multilabel", logits, two_known)["accuracy"] == pytest.approx(0.5)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    seen = []

    def recording_train(args, training_args, **kwargs):
        seen.append({split: (list(ds["sample_id"]), list(ds["site"])) for split, ds in
                     kwargs["datasets"][TASK].items()})
        return train_model(args, training_args, **kwargs)

    splits = trio_splits()
    splits["train"] = splits["train"].map(lambda r, i: {"site": None if i % 8 == 7 else r["site"]},
                                          with_indices=True)
    out = tmp_path_factory.mktemp("ood")
    with trio_task():
        args, targs = quick_args(out, max_steps=2)
        result = ood(args, targs, options=OODOptions(group="site", min_group_rows=20), datasets={TASK: splits},
                     train_fn=recording_train)
    return result, seen, splits


def test_the_held_out_group_never_appears_in_training(held_out):
    result, seen, splits = held_out
    scored = result.table[result.table["setting"] == "out-of-distribution"]
    groups = list(scored["group"].unique())
    assert sorted(groups) == ["east", "north", "south"] and len(seen) == 3
    for group, given in zip(sorted(groups), seen):
        trained_ids = {i for split in given.values() for i in split[0]}
        assert group not in {s for split in given.values() for s in split[1]}
        pool = {i for ds in splits.values() for i, s in zip(ds["sample_id"], ds["site"]) if s == group}
        assert pool and not pool & trained_ids
        assert result.training_ids[(TASK, group)] == trained_ids
    assert set(scored["status"]) == {SCORED}
    assert (scored["rows"] >= 20).all()
    assert set(scored["metric"]) == {"accuracy", "sensitivity", "specificity"}
    ungrouped = result.table[result.table["group"] == NO_GROUP]
    assert ungrouped["rows"].tolist() == [6] and ungrouped["status"].tolist() == ["never held out"]
    for path in (result.paths.csv, result.paths.markdown, result.paths.figure):
        assert path.is_file()
    # each run's card and run_info.json say which group it never saw (before: nothing told the runs apart)
    run = result.paths.csv.parent / "runs" / TASK / "without-east"
    info = json.loads((run / "run_info.json").read_text())["dataset_fingerprints"][TASK]
    assert info["rows"] == "every `site` group but 'east' (held out by ood)"
    assert info["splits"]["train"]["num_rows"] == len(seen[0]["train"][0])
    assert "rows: every `site` group but 'east' (held out by ood)" in (run / "README.md").read_text()


def test_held_out_classes_and_small_groups_are_listed_not_scored(tmp_path):
    with trio_task():
        args, targs = quick_args(tmp_path, max_steps=1)
        result = ood(args, targs, options=OODOptions(group="finding", min_group_rows=5),
                     datasets={TASK: trio_splits(16, 8)})
        table = result.table
        assert set(table["group"]) == {"absent", "present"} and table["value"].isna().all()
        assert set(table["status"]) == {UNSEEN}
        assert (table["unseen"] == table["rows"]).all()
        assert sum(result.predicted_as[(TASK, "absent", "out-of-distribution")].values()) == 16
        small = ood(args, targs, options=OODOptions(group="site", min_group_rows=100),
                    datasets={TASK: trio_splits(16, 8)}, output_dir=tmp_path / "small")
        assert set(small.table["status"]) == {TOO_SMALL} and len(small.table) == 3
        assert "too small" in small.paths.markdown.read_text()


def test_a_config_without_the_grouping_column_says_what_the_registry_needs(tmp_path):
    with trio_task():
        args, targs = quick_args(tmp_path)
        with pytest.raises(AnalysisError, match="no column 'organ' to group by.*registry entry of 'zz_trio'"):
            ood(args, targs, options=OODOptions(group="organ"), datasets={TASK: trio_splits(8, 4)})


def test_organ_falls_back_to_tissue_where_no_row_records_an_organ():
    rows = {"sample_id": ["a", "b", "c"], "tissue": ["liver", "lung", None]}
    no_organ = Dataset.from_dict(rows)
    empty_organ = Dataset.from_dict({**rows, "organ": [None, None, None]},
                                    features=Features({"sample_id": Value("string"), "tissue": Value("string"),
                                                       "organ": Value("string")}))
    with_organ = Dataset.from_dict({**rows, "organ": ["liver", None, None]})
    assert resolve_group_column({"train": no_organ}, "organ") == "tissue"
    assert resolve_group_column({"train": empty_organ, "test": empty_organ}, "organ") == "tissue"
    assert resolve_group_column({"train": empty_organ, "test": with_organ}, "organ") == "organ"
    assert resolve_group_column({"train": Dataset.from_dict({"sample_id": ["a"]})}, "organ") == "organ"
    assert resolve_group_column({"train": no_organ}, "site") == "site"  # no stand-in for other columns


def test_the_groups_come_from_tissue_and_the_report_says_so(tmp_path):
    splits = {s: ds.rename_column("site", "tissue") for s, ds in trio_splits(16, 8).items()}
    with trio_task():
        args, targs = quick_args(tmp_path, max_steps=1)
        result = ood(args, targs, options=OODOptions(group="organ", min_group_rows=100), datasets={TASK: splits})
    assert set(result.table["group_column"]) == {"tissue"} and result.group_columns == {TASK: "tissue"}
    assert set(result.table["group"]) == {"east", "north", "south"}
    assert "no row records `organ`; the groups are its `tissue` values" in result.paths.markdown.read_text()


def test_multilabel_names_never_positive_in_training_are_not_scored():
    # names a, b, c; rows: [a], [c], [b, c]; entries of c unknown in row 0; training saw a and b positive only
    ref = np.array([[1, 0, np.nan], [0, 0, 1], [0, 1, 1]], dtype=float)
    logits = np.array([[2.0, -1, -1], [-1, -1, -3], [-1, 2, -3]])
    preds = TaskPredictions(task="t", sample_ids=["0", "1", "2"], outputs={"d": logits}, references={"d": ref},
                            masks={}, head_spec={"outputs": [{"name": "d", "names": ["a", "b", "c"]}]})
    masked, hidden, rows = _hide_unseen_names(preds, "d", {"a", "b"})
    assert hidden == ["c"] and rows.tolist() == [False, True, True]
    # row 1's only positive name is c: not scored on its negatives alone (before: it was, and counted right)
    assert masked.sample_ids == ["0", "2"]
    assert np.isnan(masked.references["d"][:, 2]).all() and preds.references["d"][1, 2] == 1  # a copy
    # accuracy as the task's: top-1 among the known names (before: per entry); on a and b alone both rows are right
    scores = ood_metrics("multilabel", masked.outputs["d"], masked.references["d"])
    assert scores["accuracy"] == 1.0 and scores["sensitivity"] == 1.0 and scores["specificity"] == 1.0
    # with c kept, row 1's top known name is a (c scores lowest): wrong
    assert ood_metrics("multilabel", logits, ref)["accuracy"] == pytest.approx(2 / 3)
    assert _hide_unseen_names(preds, "d", {"a", "b", "c"})[1] == []


def test_the_figure_names_each_groups_scored_rows():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from multimed_hf.analysis.ood import _figure

    rows = [{"task": TASK, "group": g, "setting": s, "status": SCORED, "scored": n, "metric": "accuracy",
             "value": 0.5, "ci_low": 0.4, "ci_high": 0.6}
            for g, s, n in [("east", "out-of-distribution", 31), ("north", "out-of-distribution", 7),
                            ("north", "in-distribution", 3)]]
    fig = plt.figure()
    _figure(fig, pd.DataFrame(rows), OODOptions(group="site"))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    plt.close(fig)
    assert labels == ["east\nn=31", "north\nn=7, in-dist. n=3"]
