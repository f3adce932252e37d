"""``multimed fewshot`` on a tiny checkpoint: k-shot runs per seed with their adapters and support sets, a zero-shot
row that says why it failed, and Table 2 (CSV appended across tasks, Markdown beside the paper, PNG)."""

from __future__ import annotations

import json

import pandas as pd
from transformers import TrainingArguments

from multimed_hf.fewshot.run import (
    FewShotArguments,
    ZERO_SHOT_REGRESSION_NOTE,
    parse_fewshot_args,
    run_fewshot,
    write_table2,
)
from multimed_hf.training.report import write_table1
from training_tiny import brain_tumor, tiny_model, tiny_processor


def _quick(out, max_steps: int) -> TrainingArguments:
    """A few CPU steps of each adapter, nothing saved but what the runs write themselves."""
    return TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
                             learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)


def test_fewshot_runs_write_adapters_and_table2_beside_the_paper(tmp_path):
    checkpoint = tmp_path / "base"
    tiny_model(["brain_tumor"]).save_pretrained(checkpoint)
    tiny_processor().save_pretrained(checkpoint)
    data = {"train": brain_tumor(24, seed=0, prefix="tr"), "test": brain_tumor(12, seed=5, prefix="te")}
    args = FewShotArguments(checkpoint=str(checkpoint), data="(in memory)", task="brain_tumor", shots=[2],
                            seeds=[0, 1], rank=4, bootstrap_samples=0)
    out = tmp_path / "out"
    training_args = _quick(out, max_steps=3)
    records = run_fewshot(args, training_args, datasets=data)
    shots = [r for r in records if r["family"] == "2_shot"]
    assert {r["seed"] for r in shots} == {0, 1} and all(r["error"] is None for r in shots if "error" in r)
    assert {r["metric"] for r in shots} >= {"accuracy"} and all(r["k"] == 2 for r in shots)
    assert {r["family"] for r in records} == {"2_shot"}  # zero-shot of a fully trained task: test_fewshot_flags
    for seed in (0, 1):
        run = out / "runs" / "brain_tumor" / "2_shot" / f"seed{seed}"
        info = json.loads((run / "adapter" / "multimed_adapter.json").read_text())
        assert info["k"] == 2 and info["seed"] == seed and info["head_spec"] is None  # the base's head adapted
        support = json.loads((run / "support.json").read_text())
        assert min(support["counts"].values()) >= 2 and not set(support["sample_ids"]) & set(data["test"]["sample_id"])
        assert (run / "predictions" / "brain_tumor-test.parquet").is_file()

    table1_dir = tmp_path / "bench"
    write_table1([{"family": "multimodal", "task": "brain_tumor", "metric": "accuracy", "value": 0.5, "seed": 0,
                   "split": "test", "n": 12}], table1_dir)
    paths = write_table2(records, out, table1=table1_dir / "table1.csv")
    markdown = paths.markdown.read_text()
    assert "5-shot" in markdown and "Multimodal (`multimodal`)" in markdown and "50.00 [paper 69.23]" not in markdown
    assert "Disea cls." in markdown or "brain_tumor" in markdown
    assert "Pearson r" in markdown and paths.figure.is_file()
    frame = pd.read_csv(paths.csv)
    assert set(frame["family"]) == {"multimodal", "2_shot"}

    # another task's rows append; the regression task's zero-shot cell says why it has none
    other = [{"family": "5_shot", "task": "expression_prediction", "metric": "pearson", "value": 0.4, "seed": s,
              "split": "test", "n": 30, "run": "expression-5_shot"} for s in (0, 1)]
    paths = write_table2(other, out)
    frame = pd.read_csv(paths.csv)
    assert set(frame["task"]) == {"brain_tumor", "expression_prediction"}
    assert (frame["family"] == "2_shot").sum() == len(shots)  # the earlier rows kept once
    markdown = paths.markdown.read_text()
    # Pearson as r (issue 17), the paper's printed percentage beside it and said to be r x 100; the CSV holds r
    assert "0.400 ± 0.000 [paper 60.72 = r x 100]" in markdown and ZERO_SHOT_REGRESSION_NOTE in markdown
    assert "40.00" not in markdown and "the paper prints r x 100" in markdown
    expression = frame[frame["task"] == "expression_prediction"]
    assert (expression["value"] == 0.4).all() and (expression["paper_value"] == 60.72).all()
    assert "[paper 58.65 = r x 100]" in markdown  # the paper's zero-shot expression number stays beside our note


def test_command_line_parses_shots_seeds_and_training_arguments():
    args, training_args = parse_fewshot_args(["ckpt", "--data", "d", "--task", "cell_type", "--shots", "0", "5",
                                              "--seeds", "3", "--rank", "4", "--output_dir", "o",
                                              "--max_steps", "7"])
    assert args.checkpoint == "ckpt" and args.shots == [0, 5] and args.seeds == [3] and args.rank == 4
    assert training_args.max_steps == 7 and training_args.output_dir == "o"


def test_the_support_is_drawn_from_rows_the_adapted_head_can_read(tmp_path):
    # before: the base encodes OCT only, half of diabetic_retinopathy's training rows are fundus photographs, and a
    # support set holding one failed in training ("has none of the modalities ['oct']")
    import torch
    from transformers import AutoConfig

    from multimed_hf.configuration_multimed import MultiMedConfig
    from multimed_hf.modeling_multimed import MultiMedModel
    from training_tiny import SIDE, diabetic_retinopathy

    vit = AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=24, image_size=SIDE, patch_size=4)
    torch.manual_seed(0)
    base = MultiMedModel(MultiMedConfig.from_tasks(["brain_tumor"], encoders={"mri": vit, "oct": vit},
                                                   hidden_size=16))
    assert set(base.config.encoders) == {"mri", "oct"}
    checkpoint = tmp_path / "base"
    base.save_pretrained(checkpoint)
    tiny_processor().save_pretrained(checkpoint)
    test = diabetic_retinopathy(12, seed=5, prefix="te").map(lambda r: {"patient_id": f"te-{r['patient_id']}"})
    data = {"train": diabetic_retinopathy(32, seed=0, prefix="tr"), "test": test}
    args = FewShotArguments(checkpoint=str(checkpoint), data="(in memory)", task="diabetic_retinopathy", shots=[2],
                            seeds=[0, 1], rank=4, bootstrap_samples=0)
    out = tmp_path / "out"
    training_args = _quick(out, max_steps=2)
    records = run_fewshot(args, training_args, datasets=data)
    assert records and not [r["error"] for r in records if r.get("error")]
    fundus = {sid for sid, m in zip(data["train"]["sample_id"], data["train"]["modality"]) if m == "fundus"}
    for seed in (0, 1):
        support = json.loads((out / "runs" / "diabetic_retinopathy" / "2_shot" / f"seed{seed}" / "support.json")
                             .read_text())
        assert support["sample_ids"] and not set(support["sample_ids"]) & fundus


def test_table2_gives_a_one_modality_tasks_multimodal_cell_table1s_unimodal_number(tmp_path):
    # before: "same as unimodal (one modality); `unimodal` was not run" although table1.csv held unimodal runs:
    # Table 2 has no unimodal row for the cell to point at
    shots = [{"family": "5_shot", "task": "brain_tumor", "metric": "accuracy", "value": 0.4, "seed": s,
              "split": "test", "n": 12} for s in (0, 1)]
    unimodal = [{"family": "unimodal", "task": "brain_tumor", "metric": "accuracy", "value": v, "seed": s,
                 "split": "test", "n": 12, "run": "brain_tumor-mri"} for s, v in ((0, 0.5), (1, 0.6))]
    write_table1(unimodal, tmp_path / "bench")
    markdown = write_table2(shots, tmp_path / "a", table1=tmp_path / "bench" / "table1.csv").markdown.read_text()
    row = next(line for line in markdown.splitlines() if "(`multimodal`)" in line)
    assert "55.00 ± 7.07: Table 1's `unimodal` row (one modality: the same model)" in row and "not run" not in row
    write_table1([{**r, "family": "multimodal_multitask", "run": "all"} for r in unimodal], tmp_path / "mt")
    markdown = write_table2(shots, tmp_path / "b", table1=tmp_path / "mt" / "table1.csv").markdown.read_text()
    row = next(line for line in markdown.splitlines() if "(`multimodal`)" in line)
    assert "as unimodal (one modality), which --table1 does not hold" in row and "was not run" not in row



def test_table2_says_why_a_single_task_benchmark_has_no_multitask_number(tmp_path):
    # before (sweep C5): "not run" in the multimodal multi-task row, where table1.md of the same benchmark said "same
    # as multimodal (one task selected)"
    shots = [{"family": "5_shot", "task": "diabetic_retinopathy", "label": "oct_finding", "metric": "accuracy",
              "value": 0.4, "seed": 0, "split": "test", "n": 12}]
    multimodal = [{**r, "family": "multimodal", "value": 0.5, "run": "diabetic_retinopathy"} for r in shots]
    write_table1(multimodal, tmp_path / "bench")
    markdown = write_table2(shots, tmp_path / "a", table1=tmp_path / "bench" / "table1.csv").markdown.read_text()
    row = next(line for line in markdown.splitlines() if "(`multimodal_multitask`)" in line)
    assert "same as multimodal (one task selected)" in row and "not run" not in row


def test_table2_says_what_zero_shot_scores_unlike_k_shot(tmp_path):
    # before: zero-shot (18 held-out-class rows, a 2-way choice) sat above k-shot (every row, every class) unexplained
    records = [{"family": "zero_shot", "task": "disease", "label": "diseases", "metric": "accuracy", "value": 0.56,
                "seed": 0, "split": "test", "n": 18, "chance": 0.5, "k": 0},
               {"family": "5_shot", "task": "disease", "label": "diseases", "metric": "accuracy", "value": 0.52,
                "seed": 0, "split": "test", "n": 107, "k": 5}]
    markdown = write_table2(records, tmp_path).markdown.read_text()
    assert ("disease: zero-shot scores 18 test rows of the classes it names without training on them (held out, or "
            "a task never trained) only, as a choice among them (chance 50%); k-shot scores every test row over "
            "every class: the two do not compare") in markdown


def test_table2_names_the_k_shot_cells_whose_support_stayed_under_k(tmp_path):
    # before: a "10-shot" row trained on the whole training split (every class short) said nothing
    records = [{"family": "10_shot", "task": "brain_tumor", "label": None, "metric": "accuracy", "value": 0.4,
                "seed": s, "split": "test", "n": 12, "k": 10, "support_short": '{"meningioma": 5}'} for s in (0, 1)]
    markdown = write_table2(records, tmp_path).markdown.read_text()
    assert ('brain_tumor 10_shot: the support set stayed under k (the training split ran out): seed 0: '
            '{"meningioma": 5}; seed 1: {"meningioma": 5}') in markdown


def test_a_task_on_gene_panels_the_base_does_not_know_is_refused_once(tmp_path, capsys):
    # before: every k x seed failed alike at its first row ("gene panel ... is not known to the expression
    # processor") and was recorded as a failed run
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset
    from multimed_hf.fewshot.run import fewshot_main
    from multimed_hf.training.run import train_main

    make = sample_generators()
    data = tmp_path / "multimed"
    build_dataset("expression_prediction", [make["tcga_promoters"](tmp_path / "src" / "tcga")], data, progress=False)
    build_dataset("cell_type", [make["pbmc68k_reduced"](tmp_path / "src" / "pbmc")], data, progress=False)
    base = tmp_path / "base"
    assert train_main(["--data", str(data), "--tasks", "expression_prediction", "--family", "multimodal",
                       "--encoders", "small", "--output_dir", str(base), "--max_steps", "1", "--eval_strategy", "no",
                       "--save_strategy", "no", "--bootstrap_samples", "0", "--eval_splits", "test",
                       "--max_eval_samples", "8", "--report_to", "none", "--use_cpu"]) == 0
    capsys.readouterr()
    assert fewshot_main([str(base), "--data", str(data), "--task", "cell_type", "--shots", "2",
                         "--output_dir", str(tmp_path / "fs"), "--max_steps", "1", "--report_to", "none"]) == 2
    assert "that the checkpoint's expression processor does not know" in capsys.readouterr().err


def test_an_appending_run_keeps_the_earlier_cells_notes(tmp_path):
    # before: table2.csv kept report.COLUMNS only, so a later run appending to it dropped the earlier task's
    # zero-shot chance and its short-support note, its numbers kept
    short = [{"family": "10_shot", "task": "brain_tumor", "label": None, "metric": "accuracy", "value": 0.4,
              "seed": 0, "split": "test", "n": 12, "k": 10, "support_short": '{"meningioma": 5}'},
             {"family": "zero_shot", "task": "brain_tumor", "label": None, "metric": "accuracy", "value": 0.6,
              "seed": 0, "split": "test", "n": 7, "k": 0, "chance": 0.5, "majority": 5 / 7}]
    write_table2(short, tmp_path)
    other = [{"family": "5_shot", "task": "expression_prediction", "metric": "pearson", "value": 0.4, "seed": 0,
              "split": "test", "n": 30, "k": 5}]
    markdown = write_table2(other, tmp_path).markdown.read_text()
    assert 'brain_tumor 10_shot: the support set stayed under k (the training split ran out): seed 0: ' \
           '{"meningioma": 5}' in markdown
    assert "brain_tumor: zero-shot scores 7 test rows" in markdown
    assert "(chance 50%; naming the most frequent class for every row: 71%)" in markdown
    # k stays a whole number once rows without one (Table 1's, here the regression row's empty chance aside) share
    # the file (before: 10.0, 0.0 and 5.0 after the first append)
    with_table1 = [{"family": "multimodal", "task": "brain_tumor", "metric": "accuracy", "value": 0.5, "seed": 0,
                    "split": "test", "n": 12}]
    table = pd.read_csv(write_table2(with_table1, tmp_path).csv, dtype=str, keep_default_na=False)
    assert sorted(table["k"]) == ["", "0", "10", "5"]
    # another seed of a k-shot cell adds to it (before: it replaced the earlier seed's rows, unsaid); the same seed
    # again replaces its own
    seed1 = [{**other[0], "seed": 1, "value": 0.6}]
    table = pd.read_csv(write_table2(seed1, tmp_path).csv)
    five = table[table["family"] == "5_shot"]
    assert sorted(zip(five["seed"], five["value"])) == [(0, 0.4), (1, 0.6)]
    table = pd.read_csv(write_table2([{**seed1[0], "value": 0.7}], tmp_path).csv)
    assert sorted(table[table["family"] == "5_shot"]["value"]) == [0.4, 0.7]


def test_zero_shot_of_a_free_text_task_the_base_never_trained(tmp_path):
    # before: no vocabulary for med_vqa's free-text answers in the base's processor: every zero-shot run failed
    # ("fit one on the training split: processor.fit_vocabularies(...)", a call no CLI user can make)
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset
    from multimed_hf.fewshot.run import fewshot_main
    from multimed_hf.training.run import train_main

    make = sample_generators()
    data = tmp_path / "multimed"
    build_dataset("disease", [make["Brain-Tumor-MRI-Dataset"](tmp_path / "src" / "bt"),
                              make["chest_xray"](tmp_path / "src" / "cxr")], data, progress=False)
    build_dataset("med_vqa", [make["VQA_RAD"](tmp_path / "src" / "vqa")], data, progress=False)
    base = tmp_path / "base"
    assert train_main(["--data", str(data), "--tasks", "disease", "--family", "multimodal", "--encoders", "small",
                       "--output_dir", str(base), "--align_label_text", "--max_steps", "1", "--eval_strategy", "no",
                       "--save_strategy", "no", "--bootstrap_samples", "0", "--eval_splits", "test",
                       "--max_eval_samples", "8", "--report_to", "none", "--use_cpu"]) == 0
    assert fewshot_main([str(base), "--data", str(data), "--task", "med_vqa", "--shots", "0", "--output_dir",
                         str(tmp_path / "fs"), "--bootstrap_samples", "0", "--report_to", "none"]) == 0
    table = pd.read_csv(tmp_path / "fs" / "table2.csv")
    zero = table[table["family"] == "zero_shot"]
    assert len(zero) and zero["error"].isna().all() and (zero["n"] > 0).all()


def test_a_table_without_a_correlation_task_says_nothing_of_pearson(tmp_path):
    # before: notebook 08's cell_type-only table2.md said "Expression (Expre pred.) is Pearson r ..." and "Scale:
    # pearson, spearman on their own scale"
    from multimed_hf.fewshot.run import write_table2

    recs = [{"family": "5_shot", "task": "cell_type", "label": None, "metric": "accuracy", "value": 0.5, "n": 10,
             "ci_low": 0.4, "ci_high": 0.6, "split": "test", "seed": s, "run": "cell_type-5_shot"} for s in (0, 1)]
    text = write_table2(recs, tmp_path).markdown.read_text()
    assert "Expression (Expre pred.) is Pearson r" not in text and "own scale" not in text
    recs = [{**r, "task": "expression_prediction", "metric": "pearson", "run": "expression_prediction-5_shot"}
            for r in recs]
    text = write_table2(recs, tmp_path / "expression").markdown.read_text()
    assert "Expression (Expre pred.) is Pearson r" in text and "pearson, spearman on their own scale" in text
