"""The benchmark report (training/report.py, training/paper.py) on hand-made metric records."""

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from multimed_hf.tasks import get_task, list_tasks
from multimed_hf.training import paper
from multimed_hf.training.report import (
    COLUMNS,
    SAME_AS_UNIMODAL,
    failure_records,
    figure_title,
    headline,
    read_records,
    summarize,
    write_table1,
)


def _record(family, task, metric, value, seed, *, label=None, split="test", n=20, run=None):
    return {"family": family, "task": task, "label": label, "metric": metric, "value": value, "n": n,
            "ci_low": value - 0.05, "ci_high": value + 0.05, "split": split, "seed": seed,
            "run": run or f"{family}-{task}"}


@pytest.fixture
def records():
    out = []
    for seed, acc in enumerate([0.5, 0.6, 0.7]):
        out.append(_record("unimodal", "brain_tumor", "accuracy", acc, seed))
        out.append(_record("unimodal", "brain_tumor", "macro_f1", acc - 0.1, seed))
        out.append(_record("unimodal", "brain_tumor", "accuracy", 0.99, seed, split="validation"))
    for seed, r in enumerate([0.3, 0.5]):
        out.append(_record("multimodal", "expression_prediction", "pearson", r, seed))
        out.append(_record("multimodal", "expression_prediction", "spearman", r / 2, seed))
    out.append(_record("unimodal", "protein_structure", "tm_score", 0.4, 0))
    out.append(_record("unimodal", "protein_structure", "rmsd", 5.25, 0))
    # one seed of unimodal disease scored by two runs, one per modality's rows: pooled by rows
    out.append(_record("unimodal", "disease", "accuracy", 0.6, 0, n=30, run="unimodal-disease-xray"))
    out.append(_record("unimodal", "disease", "accuracy", 0.2, 0, n=10, run="unimodal-disease-ct"))
    out += failure_records("multimodal_multitask", ["brain_tumor", "expression_prediction"], 0,
                           "RuntimeError: CUDA | out of memory\nat step 3", run="multimodal_multitask-all")
    return out


def _headline_table(markdown: str) -> dict:
    """{row label: {task: cell}} of the first Markdown table."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [cell.strip().split("<br>")[0] for cell in lines[0].strip("|").split(" | ")]
    table = {}
    for line in lines[2:]:
        if line.startswith("|---"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if len(cells) != len(header):
            break
        table[cells[0]] = dict(zip(header[1:], cells[1:]))
    return table


def _row(table, family):
    (key,) = [k for k in table if k.endswith(f"(`{family}`)")]
    return table[key]


def test_headline_is_the_registry_first_label_and_metric():
    for task in list_tasks():
        spec = get_task(task)
        label, metric = headline(task)
        assert label == spec.labels[0].name
        assert metric == (spec.labels[0].metrics or spec.metrics)[0]
    assert headline("expression_prediction")[1] == "pearson"
    assert headline("protein_structure")[1] == "tm_score"
    assert headline("brain_tumor")[1] == "accuracy"


def test_paper_tables_cover_the_registry_and_agree_with_each_other():
    assert set(paper.TABLE1_COLUMNS) == set(list_tasks())
    assert set(paper.TABLE1) == set(paper.TABLE1_ROW_LABELS)
    for row in paper.TABLE1.values():
        assert set(row) == set(list_tasks())
        assert all(0 < v < 100 for v in row.values())
    for family in ("multimodal", "multimodal_multitask"):  # Table 2 repeats Table 1's rows for its three tasks
        for task, value in paper.TABLE2[family].items():
            assert paper.TABLE1[family][task] == value
    # the paper claims multimodal multitask is best on every task: the transcription must show it too
    for task in list_tasks():
        assert max(paper.TABLE1, key=lambda f: paper.TABLE1[f][task]) == "multimodal_multitask"
    assert paper.paper_value(paper.TABLE1, "multimodal_multitask+miles", "disease") is None


def test_csv_is_long_format_with_paper_values_on_headline_test_rows(records, tmp_path):
    paths = write_table1(records, tmp_path)
    frame = pd.read_csv(paths.csv)
    assert tuple(frame.columns) == COLUMNS
    assert len(frame) == len(records)
    heads = frame[(frame["task"] == "brain_tumor") & (frame["metric"] == "accuracy") & (frame["family"] == "unimodal")]
    test = heads[heads["split"] == "test"]
    assert (test["paper_value"] == paper.TABLE1["unimodal"]["brain_tumor"]).all()
    assert heads[heads["split"] == "validation"]["paper_value"].isna().all()
    assert frame[frame["metric"] == "macro_f1"]["paper_value"].isna().all()
    expr = frame[(frame["task"] == "expression_prediction") & (frame["metric"] == "pearson")
                 & (frame["family"] == "multimodal")]
    assert (expr["paper_value"] == paper.TABLE1["multimodal"]["expression_prediction"]).all()
    # values stay on the natural scale: accuracy as a fraction
    assert sorted(test["value"]) == [0.5, 0.6, 0.7]
    failed = frame[frame["error"].notna()]
    assert set(failed["task"]) == {"brain_tumor", "expression_prediction"}
    assert failed["value"].isna().all()
    assert (failed[failed["task"] == "brain_tumor"]["paper_value"]
            == paper.TABLE1["multimodal_multitask"]["brain_tumor"]).all()


def test_read_records_round_trips(records, tmp_path):
    paths = write_table1(records, tmp_path)
    back = read_records(paths.csv)
    assert len(back) == len(records)
    assert back[0]["label"] is None and back[0]["value"] == records[0]["value"]
    assert write_table1(back, tmp_path / "again").markdown.read_text() == paths.markdown.read_text()


def test_summarize_mean_and_sd_over_seeds_and_pooling_over_runs(records):
    stats = summarize(records).set_index(["family", "task", "label", "metric"])
    bt = stats.loc[("unimodal", "brain_tumor", "tumor", "accuracy")]
    assert bt["mean"] == pytest.approx(0.6) and bt["sd"] == pytest.approx(0.1) and bt["seeds"] == 3
    ex = stats.loc[("multimodal", "expression_prediction", "log_expression", "pearson")]
    assert ex["sd"] == pytest.approx(np.std([0.3, 0.5], ddof=1))
    disease = stats.loc[("unimodal", "disease", "diseases", "accuracy")]
    assert disease["mean"] == pytest.approx((0.6 * 30 + 0.2 * 10) / 40)
    assert disease["runs"] == ("unimodal-disease-ct", "unimodal-disease-xray")
    assert math.isnan(stats.loc[("unimodal", "protein_structure", "ca_coords", "tm_score")]["sd"])
    assert ("multimodal_multitask", "brain_tumor", "tumor", "accuracy") not in stats.index  # failed: no value


def test_markdown_cells_on_the_paper_scale_beside_the_paper(records, tmp_path):
    md = write_table1(records, tmp_path, note="smoke run on synthetic samples, not a reproduction").markdown
    text = md.read_text()
    assert "smoke run on synthetic samples, not a reproduction" in text
    table = _headline_table(text)
    unimodal, multimodal = _row(table, "unimodal"), _row(table, "multimodal")
    assert unimodal["brain_tumor"] == f"60.00 ± 10.00 [paper {paper.TABLE1['unimodal']['brain_tumor']:.2f}]"
    sd = np.std([30, 50], ddof=1)
    assert multimodal["expression_prediction"] == (
        f"40.00 ± {sd:.2f} [paper {paper.TABLE1['multimodal']['expression_prediction']:.2f}]")
    # TM-score x 100 as the paper prints it; one seed shows no sd
    assert unimodal["protein_structure"] == f"40.00 [paper {paper.TABLE1['unimodal']['protein_structure']:.2f}]"
    assert unimodal["disease"].startswith("50.00*")
    # a single-modality task has no distinct multimodal run; the paper's number stays beside it
    assert multimodal["brain_tumor"] == f"{SAME_AS_UNIMODAL} [paper {paper.TABLE1['multimodal']['brain_tumor']:.2f}]"
    assert multimodal["disease"].startswith("not run")  # several modalities: missing is not "same as unimodal"
    failed = _row(table, "multimodal_multitask")
    assert failed["brain_tumor"].startswith("failed: RuntimeError: CUDA \\| out of memory at step 3")
    assert "## Failed runs" in text and "multimodal_multitask-all" in text


def test_markdown_other_metrics_keep_their_scale(records, tmp_path):
    text = write_table1(records, tmp_path).markdown.read_text()
    section = text.split("### protein_structure")[1].split("###")[0]
    assert "rmsd (natural scale)" in section
    row = [line for line in section.splitlines() if line.startswith("| `unimodal`")][0]
    assert "5.25" in row  # RMSD in angstrom as it is
    bt = text.split("### brain_tumor")[1].split("###")[0]
    assert "50.00 ± 10.00" in bt  # macro F1 x 100, mean ± sd over three seeds


def test_families_and_tasks_fix_rows_and_columns(records, tmp_path):
    text = write_table1(records, tmp_path, families=["domain_specific", "unimodal"],
                        tasks=["brain_tumor", "motor_imagery"]).markdown.read_text()
    table = _headline_table(text)
    assert len(table) == 2 and set(_row(table, "domain_specific")) == {"brain_tumor", "motor_imagery"}
    assert _row(table, "domain_specific")["motor_imagery"].startswith("not run")


def test_variants_follow_their_family_without_a_paper_number(tmp_path):
    recs = [_record("multimodal_multitask+miles", "med_vqa", "vqa_accuracy", 0.5, 0),
            _record("unimodal", "med_vqa", "vqa_accuracy", 0.4, 0),
            _record("multimodal_multitask", "med_vqa", "vqa_accuracy", 0.45, 0)]
    table = _headline_table(write_table1(recs, tmp_path).markdown.read_text())
    rows = list(table)
    assert rows[-1].endswith("(`multimodal_multitask+miles`)") and rows[-2].endswith("(`multimodal_multitask`)")
    assert table[rows[-1]]["med_vqa"] == "50.00"


def test_figure_is_a_png(records, tmp_path):
    paths = write_table1(records, tmp_path)
    assert paths.figure.stat().st_size > 1000
    with Image.open(paths.figure) as image:
        assert image.format == "PNG" and image.width > 300


def test_records_without_required_keys_are_refused(tmp_path):
    with pytest.raises(ValueError, match="missing \\['metric'\\]"):
        write_table1([{"family": "unimodal", "task": "brain_tumor", "value": 0.5}], tmp_path)


def test_notes_say_why_a_cell_has_no_run(records, tmp_path):
    notes = {("multimodal_multitask", "protein_structure"): "same as multimodal (one task selected)",
             ("unimodal_multitask", "brain_tumor"): "same as unimodal (no other selected task shares its modality)"}
    table = _headline_table(write_table1(records, tmp_path, notes=notes).markdown.read_text())
    assert _row(table, "multimodal_multitask")["protein_structure"].startswith("same as multimodal (one task")
    assert _row(table, "unimodal_multitask")["brain_tumor"].startswith("same as unimodal (no other selected")
    assert _row(table, "multimodal_multitask")["brain_tumor"].startswith("failed:")  # a record beats a note


def test_a_cell_that_points_at_the_unimodal_row_says_where_that_row_was_not_run(tmp_path):
    # before: "same as unimodal (one modality)" in a report without the unimodal family, a number to look up nowhere
    recs = [_record("multimodal", "disease", "accuracy", 0.5, 0)]
    table = _headline_table(write_table1(recs, tmp_path, families=["domain_specific", "multimodal"],
                                         tasks=["disease", "brain_tumor"]).markdown.read_text())
    assert _row(table, "multimodal")["brain_tumor"].startswith(f"{SAME_AS_UNIMODAL}; `unimodal` was not run [paper")


def test_a_cell_that_points_at_a_failed_unimodal_row_says_it_failed(tmp_path):
    # before: "`unimodal` was not run" beside a unimodal row that said "failed: ..." for the same task
    recs = [_record("multimodal", "disease", "accuracy", 0.5, 0)]
    recs += failure_records("unimodal", ["brain_tumor"], 0, "ValueError: bad encoder", run="brain_tumor-mri")
    table = _headline_table(write_table1(recs, tmp_path, families=["unimodal", "multimodal"],
                                         tasks=["disease", "brain_tumor"]).markdown.read_text())
    assert _row(table, "unimodal")["brain_tumor"].startswith("failed: ValueError: bad encoder")
    assert _row(table, "multimodal")["brain_tumor"].startswith(
        f"{SAME_AS_UNIMODAL}; `unimodal` failed (see Failed runs) [paper")


def test_a_seed_whose_value_is_undefined_is_said_not_silently_dropped(tmp_path):
    # before: seed 2's NaN (a constant prediction: Pearson undefined, no error) left the mean of seeds 0-1 under a
    # header naming seeds 0, 1, 2; a cell undefined in every seed read "not run"
    recs = [_record("multimodal", "expression_prediction", "pearson", v, seed)
            for seed, v in enumerate([0.5, 0.6, float("nan")])]
    recs += [_record("unimodal", "expression_prediction", "pearson", float("nan"), seed) for seed in range(3)]
    table = _headline_table(write_table1(recs, tmp_path).markdown.read_text())
    assert _row(table, "multimodal")["expression_prediction"].startswith(
        f"55.00 ± {np.std([50, 60], ddof=1):.2f}; seed(s) 2 undefined (e.g. a constant prediction), left out [paper")
    assert _row(table, "unimodal")["expression_prediction"].startswith(
        "undefined in seed(s) 0, 1, 2 (e.g. a constant prediction) [paper")


def test_a_unimodal_multitask_cell_says_which_modalities_it_covers(tmp_path):
    # before: disease's unimodal multitask cell pooled its mri and xray runs (22 of 111 test rows) with nothing
    # saying that its CT rows (and the rest) were in no run of it
    recs = [_record("unimodal", "disease", "accuracy", 0.5, 0, run=f"disease-{m}") for m in ("ct", "mri", "xray")]
    recs += [_record("unimodal_multitask", "disease", "accuracy", 0.4, 0, run=m) for m in ("mri", "xray")]
    table = _headline_table(write_table1(recs, tmp_path).markdown.read_text())
    cell = _row(table, "unimodal_multitask")["disease"]
    assert "; on its mri, xray rows only (no other selected task shares ct: those rows are scored in the unimodal " \
           "row alone)" in cell, cell
    assert "rows only" not in _row(table, "unimodal")["disease"]


def test_a_partly_failed_cell_shows_its_value_and_the_failure(tmp_path):
    recs = [_record("unimodal", "motor_imagery", "accuracy", acc, seed) for seed, acc in enumerate([0.4, 0.6])]
    recs += failure_records("unimodal", ["motor_imagery"], 2, "ValueError: NaN loss", run="unimodal-motor_imagery")
    cell = _row(_headline_table(write_table1(recs, tmp_path).markdown.read_text()), "unimodal")["motor_imagery"]
    assert cell == (f"50.00 ± {np.std([40, 60], ddof=1):.2f}; 1 run(s) failed: ValueError: NaN loss "
                    f"[paper {paper.TABLE1['unimodal']['motor_imagery']:.2f}]")


def test_note_banner_on_top_and_data_lines_at_the_end(records, tmp_path):
    text = write_table1(records, tmp_path, note="smoke run\nsrc_a (brain_tumor): not real MRI").markdown.read_text()
    assert text.splitlines()[2].startswith("> **smoke run**")
    assert text.rstrip().endswith("- src_a (brain_tumor): not real MRI")
    assert text.index("## Data and settings") > text.index("| family |")


def test_pooled_cells_list_each_run(records, tmp_path):
    text = write_table1(records, tmp_path).markdown.read_text()
    line = [x for x in text.splitlines() if x.startswith("- `unimodal` x `disease`")][0]
    assert "unimodal-disease-ct 20.00 (n=10)" in line and "unimodal-disease-xray 60.00 (n=30)" in line


def test_the_chart_title_wraps_a_long_note_to_the_figure():
    note = ("> **smoke run on synthetic samples, not a reproduction; its numbers say nothing about medicine.** (data "
            "and settings: see the end)\nsecond line, not in the title")
    title = figure_title("Table 1", note, width_inches=6.0)
    lines = title.splitlines()
    assert lines[0] == "Table 1" and len(lines) >= 3
    assert all(len(line) <= 11 * 4.5 for line in lines)
    assert "second line" not in title and " ".join(lines[1:]) == note.splitlines()[0]
    assert figure_title("Table 1", None, 6.0) == figure_title("Table 1", "  ", 6.0) == "Table 1"


def test_the_other_metrics_title_points_at_a_footnote_only_where_there_is_one(tmp_path):
    # before: "as the footnote \\* above says" under a table that pooled no cell, so had no footnote
    one_run = [_record("unimodal", "brain_tumor", m, 0.5, 0) for m in ("accuracy", "macro_f1")]
    text = write_table1(one_run, tmp_path / "one").markdown.read_text()
    assert "footnote \\* above" not in text and "weighted by the test rows each run scored" in text
    pooled = [_record("unimodal", "disease", m, 0.5, 0, run=f"disease-{x}") for m in ("accuracy", "macro_auroc")
              for x in ("ct", "mri")]
    assert "footnote \\* above" in write_table1(pooled, tmp_path / "pooled").markdown.read_text()


def test_a_cell_scoring_another_label_column_names_it(tmp_path):
    # before: "not run" beside a diabetic_retinopathy run of fundus rows alone (dr_grade scored, no oct_finding row)
    recs = [_record("unimodal", "diabetic_retinopathy", "accuracy", acc, seed, label="dr_grade")
            for seed, acc in enumerate([0.5, 0.7])]
    recs.append(_record("unimodal", "diabetic_retinopathy", "quadratic_kappa", 0.4, 0, label="dr_grade"))
    cell = _row(_headline_table(write_table1(recs, tmp_path).markdown.read_text()), "unimodal")
    assert cell["diabetic_retinopathy"].startswith("no `oct_finding` row scored; `dr_grade` accuracy 60.00 ± 14.14")


def test_other_metrics_say_which_seeds_were_undefined(tmp_path):
    # before: a seed whose kappa was NaN was left out of the mean unsaid, and a metric NaN in every seed dropped its
    # task's section (radiographic_findings' AUROC on test rows of one class)
    recs = []
    for seed, kappa in enumerate([0.3, math.nan, 0.5]):
        recs += [_record("unimodal", "diabetic_retinopathy", "accuracy", 0.5, seed, label="oct_finding"),
                 _record("unimodal", "diabetic_retinopathy", "quadratic_kappa", kappa, seed, label="dr_grade"),
                 _record("unimodal", "radiographic_findings", "accuracy", 0.4, seed, label="finding"),
                 _record("unimodal", "radiographic_findings", "macro_auroc", math.nan, seed, label="finding")]
    text = write_table1(recs, tmp_path).markdown.read_text()
    kappa = text.split("### diabetic_retinopathy")[1].split("###")[0]
    assert "40.00 ± 14.14; seed(s) 1 undefined, left out" in kappa
    auroc = text.split("### radiographic_findings")[1].split("###")[0]
    assert "undefined in seed(s) 0, 1, 2" in auroc
