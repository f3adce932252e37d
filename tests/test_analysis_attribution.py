"""Attribution per prediction: leave-one-modality-out deltas, gradient x input, subgroups, the predictions file."""

import numpy as np
import pandas as pd
import pytest

from analysis_tiny import MODALITIES, TASK, quick_args, trio_splits, trio_task
from multimed_hf.analysis import AttributionOptions, attribution
from multimed_hf.analysis._common import parse_analysis_args
from multimed_hf.analysis.attribution import _band, _figure


@pytest.fixture(scope="module")
def attributed(tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution")
    with trio_task():
        args, targs = quick_args(out, max_steps=20)
        return attribution(args, targs, datasets=trio_splits(48, 16), options=AttributionOptions(batch_size=5))


def test_deltas_are_zero_for_a_modality_the_row_does_not_have(attributed):
    rows = attributed.rows
    test = trio_splits(48, 16)["test"]
    absent = {"mri": np.zeros(len(test), dtype=bool), "text": np.array([t is None for t in test["text"]]),
              "eeg": np.array([e is None for e in test["eeg"]])}
    assert all(absent[m].any() and (~absent[m]).any() for m in ("text", "eeg"))
    for m in MODALITIES:
        assert (rows.loc[absent[m], f"loo_delta_{m}"] == 0).all()
        assert (rows.loc[absent[m], f"grad_x_input_{m}"] == 0).all()
        assert (rows.loc[~absent[m], f"grad_x_input_{m}"] > 0).all()  # pixels, epochs, token embeddings reached
    # the carrier moves the predictions most when it goes
    means = {m: rows[f"loo_delta_{m}"].abs().mean() for m in MODALITIES}
    assert max(means, key=means.get) == "mri"


def test_attribution_columns_are_saved_beside_the_predictions(attributed):
    saved = pd.read_parquet(attributed.predictions_path)
    assert attributed.predictions_path.name == f"{TASK}-test.parquet"
    assert {"sample_id", "finding", "finding_prediction", "top_modality_loo"} <= set(saved.columns)
    assert {f"{kind}_{m}" for kind in ("loo_delta", "grad_x_input") for m in MODALITIES} <= set(saved.columns)
    assert saved["sample_id"].tolist() == attributed.rows["sample_id"].tolist()
    assert np.allclose(saved["loo_delta_mri"], attributed.rows["loo_delta_mri"])
    # before: rewriting the file through pandas dropped what its <column>_scores score
    from multimed_hf.training.outputs import predictions_score_names

    names = predictions_score_names(attributed.predictions_path)
    assert list(names) == ["finding_scores"] and len(names["finding_scores"]) == len(saved["finding_scores"][0]) > 1


def test_subgroup_metrics_where_the_task_records_them(attributed):
    groups = attributed.subgroups
    assert set(groups["column"]) == {"sex"} and set(groups["group"]) == {"F", "M"}
    assert groups.groupby("metric")["n"].sum().tolist() == [16]
    text = attributed.paths.markdown.read_text()
    assert "no subgroup metrics): age" in text
    assert attributed.paths.figure.is_file() and attributed.paths.csv.is_file()


def test_age_bands():
    assert [_band(a) for a in (None, 3, 17.9, 18, 64, 65, 90)] == [None, "0-17", "0-17", "18-39", "40-64", "65+",
                                                                   "65+"]


def test_the_command_line_takes_the_training_flags_and_task(tmp_path):
    args, options, targs = parse_analysis_args(
        ["--data", "d", "--task", "bone_age", "--encoders", "small", "--output_dir", str(tmp_path), "--max_steps",
         "3", "--seed", "5", "--split", "validation", "--subgroups", "sex"], AttributionOptions, single_task=True)
    assert args.tasks == ["bone_age"] and (targs.max_steps, targs.seed) == (3, 5)
    assert options.split == "validation" and options.subgroups == ["sex"]
    assert targs.learning_rate == 1e-3  # our training defaults apply as in `multimed train`


def test_the_subgroup_panel_draws_one_label_and_metric():
    """bone_age scores accuracy for both its label columns: the panel draws one of them, once per group, and names
    it (before, each group appeared once per label, under the same tick label)."""
    from matplotlib.figure import Figure

    rows = pd.DataFrame({"sample_id": ["a", "b"], "loo_delta_xray": [1.0, -2.0], "grad_x_input_xray": [0.5, 0.7]})
    subgroups = pd.DataFrame([
        {"column": "sex", "group": g, "label": label, "metric": metric, "value": v, "ci_low": v, "ci_high": v, "n": 3}
        for g in ("F", "M") for label, metric, v in (("bone_age_months", "accuracy", 0.5),
                                                      ("bone_age_months", "mae", 12.0),
                                                      ("bone_age_bin", "accuracy", 0.25))])
    fig = Figure()
    _figure(fig, "bone_age", ["xray"], rows, subgroups, np.ones((2, 1), dtype=bool))
    panel = fig.axes[1]
    assert [t.get_text() for t in panel.get_xticklabels()] == ["sex=F", "sex=M"]
    assert [p.get_height() for p in panel.patches] == [0.5, 0.5]
    assert panel.get_title() == "accuracy per subgroup (bone_age_months)"


def test_the_mean_leave_one_out_delta_is_over_the_rows_holding_the_modality():
    # before: averaged over every row, the rows without the modality as 0 (scRNA, held by half the rows, read 8.27
    # where its rows' mean was 16.54)
    from multimed_hf.analysis.attribution import _mean_abs_delta

    rows = pd.DataFrame({"loo_delta_dna": [1.0, -3.0, 2.0, 0.0], "loo_delta_scrna": [4.0, -2.0, 0.0, 0.0]})
    held = np.array([[True, True], [True, True], [True, False], [True, False]])
    assert _mean_abs_delta(rows, ["dna", "scrna"], held) == [1.5, 3.0]


def test_the_mean_grad_x_input_share_is_over_the_rows_holding_the_modality():
    # before: over every row, a dna-only row's scRNA share 0 in the mean (scRNA read 0.33 beside dna's 0.67 where
    # the rows holding both gave scRNA 0.66): the share bars contradicted the leave-one-out bars beside them
    from multimed_hf.analysis.attribution import _mean_share

    rows = pd.DataFrame({"grad_x_input_dna": [1.0, 3.0, 2.0, 0.0], "grad_x_input_scrna": [3.0, 1.0, 0.0, 0.0]})
    held = np.array([[True, True], [True, True], [True, False], [True, False]])
    # row 3 sums to 0: no share; dna over rows 0-2: (0.25 + 0.75 + 1) / 3; scrna over rows 0-1: (0.75 + 0.25) / 2
    assert _mean_share(rows, ["dna", "scrna"], held) == pytest.approx([2 / 3, 0.5])
