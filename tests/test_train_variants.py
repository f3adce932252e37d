"""Balancing and distillation variants through the commands users run (issue 19): ``multimed train --family
<family>+miles|+ogm_ge|+gblend|+mind`` and ``multimed benchmark --families ...+miles``, on a tiny folder holding a
two-modality task (med_vqa: X-ray + question, the image alone predictive), a one-modality task (brain_tumor) and a task
whose rows hold one of two modalities (diabetic_retinopathy: OCT or fundus)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

import balancing_tiny as bt
import training_tiny as tt
from multimed_hf.training.arguments import parse_train_args
from multimed_hf.training.families import plan_runs
from multimed_hf.training.run import train_main, train_model

TINY = ["--encoders", "small", "--hidden_size", "32", "--max_steps", "4", "--per_device_train_batch_size", "8",
        "--eval_strategy", "no", "--save_strategy", "no", "--logging_steps", "2", "--disable_tqdm", "true",
        "--bootstrap_samples", "0", "--max_eval_samples", "16", "--seed", "0", "--report_to", "none"]
TASKS = ["med_vqa", "brain_tumor"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants") / "multimed"
    return bt.write_built_folder(root, {
        "med_vqa": {"train": bt.vqa_rows(32, 0), "validation": bt.vqa_rows(16, 1, prefix="v"),
                    "test": bt.vqa_rows(16, 2, prefix="t")},
        "brain_tumor": {"train": tt.brain_tumor(16, 0), "validation": tt.brain_tumor(8, 1, "bv"),
                        "test": tt.brain_tumor(8, 2, "bte")},
        "diabetic_retinopathy": {"train": tt.diabetic_retinopathy(16),
                                 "validation": tt.diabetic_retinopathy(8, 2, "dv"),
                                 "test": tt.diabetic_retinopathy(8, 3, "dt")},
    })


def _train(data_dir, out, family, *extra, tasks=TASKS):
    return train_main(["--data", data_dir, "--tasks", *tasks, "--family", family, "--output_dir", str(out),
                       *TINY, *extra])


def _logged(out) -> list[dict]:
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def test_miles_trains_from_the_command_and_logs_utilisation_and_scales(data_dir, tmp_path, capsys):
    out = tmp_path / "miles"
    code = _train(data_dir, out, "multimodal_multitask+miles", "--miles_every_n_steps", "2", "--miles_factor", "0.25")
    assert code == 0, capsys.readouterr().err
    for name in ("model.safetensors", "README.md", "run_info.json", "metrics_long.json", "all_results.json"):
        assert (out / name).is_file(), name
    logs = _logged(out)
    keys = {k for entry in logs for k in entry}
    assert {"utilisation_med_vqa_xray", "utilisation_med_vqa_text"} <= keys  # measured with eval_strategy "no"
    assert not any(k.startswith("utilisation_brain_tumor") for k in keys)  # one modality: nothing to balance
    scales = [entry for entry in logs if "miles_scale_xray" in entry]
    assert len(scales) == 2 and all(e["miles_scale_xray"] in (1.0, 0.25) for e in scales)
    info = json.loads((out / "run_info.json").read_text())
    assert info["family"] == "multimodal_multitask+miles"
    assert info["balancing"]["variant"] == "miles"
    assert info["balancing"]["options"] == {"every_n_steps": 2, "factor": 0.25}
    assert info["balancing"]["rows_with_several_modalities"] == {"med_vqa": 32}
    card = (out / "README.md").read_text()
    assert "`+miles`" in card and "factor=0.25" in card
    assert "train_loss" in capsys.readouterr().out  # the command prints its metrics


def test_ogm_ge_adds_auxiliary_heads_and_logs_a_modulating_coefficient(data_dir, tmp_path, capsys):
    out = tmp_path / "ogm"
    code = _train(data_dir, out, "multimodal+ogm_ge", "--ogm_alpha", "0.5", tasks=["med_vqa"])
    assert code == 0, capsys.readouterr().err
    coefficients = [{k: v for k, v in e.items() if k.startswith("ogm_coefficient_")} for e in _logged(out)]
    coefficients = [c for c in coefficients if c]
    assert coefficients and set(coefficients[0]) == {"ogm_coefficient_xray", "ogm_coefficient_text"}
    assert any(v != 1.0 for c in coefficients for v in c.values())  # the dominant modality is slowed
    config = json.loads((out / "config.json").read_text())
    assert config["auxiliary_heads"] is True
    card = (out / "README.md").read_text()
    assert "Auxiliary per-modality heads" in card and "`+ogm_ge`" in card
    assert json.loads((out / "run_info.json").read_text())["balancing"]["options"] == {"alpha": 0.5}


def test_gblend_runs_its_probes_and_trains_with_blended_weights(data_dir, tmp_path, capsys):
    out = tmp_path / "gblend"
    code = _train(data_dir, out, "multimodal+gblend", "--gblend_probe_steps", "1", "--gblend_max_rows", "8",
                  tasks=["med_vqa"])
    assert code == 0, capsys.readouterr().err
    info = json.loads((out / "run_info.json").read_text())
    assert info["balancing"]["variant"] == "gblend" and info["balancing"]["auxiliary_heads"] is True
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4


def test_mind_distils_a_teacher_checkpoint_made_by_a_unimodal_run(data_dir, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    (plan,) = [p for p in plan_runs("unimodal", ["med_vqa"], data_dir) if p.name == "med_vqa-xray"]
    train_model(data=data_dir, tasks=["med_vqa"], family="unimodal", plan=plan, encoders="small",
                hidden_size=32, output_dir=str(teacher), max_steps=4, per_device_train_batch_size=8,
                eval_strategy="no", save_strategy="no", logging_strategy="no", disable_tqdm=True, bootstrap_samples=0,
                eval_splits=["test"], report_to="none")
    assert json.loads((teacher / "config.json").read_text())["heads"]["med_vqa"]["modalities"] == ["xray"]
    out = tmp_path / "mind"
    code = _train(data_dir, out, "multimodal+mind", "--teachers", f"xray={teacher}", "--mind_temperature", "3",
                  tasks=["med_vqa"])
    assert code == 0, capsys.readouterr().err
    logs = _logged(out)
    assert any("distill_med_vqa" in e for e in logs)
    info = json.loads((out / "run_info.json").read_text())
    assert info["balancing"]["options"] == {"teachers": {"xray": [str(teacher)]}, "temperature": 3.0}


def test_variants_refuse_runs_without_rows_holding_two_modalities(data_dir, tmp_path, capsys):
    # one modality per task: refused before anything is loaded
    assert _train(data_dir, tmp_path / "a", "unimodal+miles", tasks=["brain_tumor"]) == 2
    assert "no task of this run reads two or more" in capsys.readouterr().err
    # two modalities read, but each row holds one of them (an OCT scan or a fundus photograph)
    assert _train(data_dir, tmp_path / "b", "multimodal_multitask+ogm_ge",
                  tasks=["brain_tumor", "diabetic_retinopathy"]) == 2
    err = capsys.readouterr().err
    assert "no training row of ['diabetic_retinopathy'] holds two or more" in err
    assert not (tmp_path / "b" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="--miles_threshold is an option of the \\+miles variant"):
        parse_train_args(["--data", data_dir, "--tasks", "med_vqa", "--family", "multimodal", "--output_dir",
                          str(tmp_path), "--miles_threshold", "0.2"])
    with pytest.raises(ValueError, match="MODALITY=PATH"):
        parse_train_args(["--data", data_dir, "--tasks", "med_vqa", "--family", "multimodal+mind", "--output_dir",
                          str(tmp_path), "--teachers", "xray"])
    assert _train(data_dir, tmp_path / "c", "multimodal_multitask+miles+ogm_ge") == 2
    assert "several balancing variants" in capsys.readouterr().err


def test_benchmark_writes_variant_rows_and_records_failing_cells(data_dir, tmp_path):
    from transformers import TrainingArguments

    from multimed_hf.training.benchmark import run_benchmark

    args = TrainingArguments(output_dir=str(tmp_path / "unused"), max_steps=2, per_device_train_batch_size=8,
                             eval_strategy="no", save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             report_to="none")
    families = ["multimodal_multitask+miles", "unimodal+ogm_ge"]
    records, paths = run_benchmark(data_dir, TASKS, families, [0], tmp_path / "report", args,
                                   run_options={"bootstrap_samples": 0, "hidden_size": 32, "max_eval_samples": 8,
                                                "miles_every_n_steps": 1},
                                   progress=False)
    table = pd.read_csv(paths.csv)
    miles = table[table["family"] == "multimodal_multitask+miles"]
    assert set(miles["task"]) == set(TASKS) and miles["error"].isna().all()
    assert miles["paper_value"].isna().all()  # the paper ran no balancing
    failed = table[table["family"] == "unimodal+ogm_ge"]
    assert len(failed) and failed["error"].str.contains("no task of this run reads two or more").all()
    markdown = paths.markdown.read_text()
    assert "multimodal_multitask+miles" in markdown and "Failed runs" in markdown
    run = tmp_path / "report" / "runs" / "multimodal_multitask+miles" / miles["run"].iloc[0] / "seed0"
    assert "utilisation_med_vqa_xray" in (run / "trainer_state.json").read_text()


def test_align_label_text_on_a_task_read_with_text_feeds_the_head_what_it_reads(data_dir, tmp_path, caplog):
    # before: the label-text head of med_vqa reads the X-ray (the text encoder reads the class texts) but the run fed
    # it the questions too, and died at its first batch ("task 'med_vqa' does not read modality 'text'")
    out = tmp_path / "aligned"
    with caplog.at_level("WARNING"):
        code = _train(data_dir, out, "multimodal", "--align_label_text", tasks=["med_vqa"])
    assert code == 0
    assert "label-text head reads ['xray'], not ['text']" in caplog.text
    results = json.loads((out / "all_results.json").read_text())
    assert any(key.startswith("test_med_vqa_") for key in results)
