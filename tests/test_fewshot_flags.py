"""``multimed fewshot`` flags: each one acts as its help says or is refused before the first run, naming the flag, why
it changes nothing and what to use instead. Before, each case below was silently ignored (e.g. ``--seed``, whose
value every run overwrote with one of ``--seeds``), or failed inside every run alike, which recorded the failure in
table2.csv and exited 0 (e.g. ``--eval_strategy steps``: "you didn't pass an eval_dataset")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainingArguments

from multimed_hf.fewshot.run import FewShotArguments, FewShotError, fewshot_main, parse_fewshot_args, run_fewshot
from training_tiny import brain_tumor, tiny_model, tiny_processor

BASE = ["ckpt", "--data", "multimed", "--task", "brain_tumor", "--output_dir", "out"]


def _parse(*flags):
    return parse_fewshot_args([*BASE, *flags])


# ---------------------------------------------------------------------- refused at parse time
@pytest.mark.parametrize("flags, match", [
    # TrainingArguments: every run's seed is one of --seeds, which overwrote --seed
    (["--seed", "7"], r"--seed 7: each run's seed .* --seeds \[0, 1, 2\], which overrides it; use --seeds"),
    # no evaluation set during training: each run failed in Trainer ("you didn't pass an eval_dataset")
    (["--eval_strategy", "steps", "--eval_steps", "1"], r"--eval_strategy: .*scores --eval_split 'test' once, after "
                                                        r"training"),
    (["--eval_on_start", "true"], r"--eval_on_start: .*no evaluation during training"),
    # Trainer pushed nothing of the adapters (and tried to reach the Hub from every run)
    (["--push_to_hub", "true"], r"--push_to_hub: .*multimed_hf.fewshot.push_adapter"),
    # trainer.train() was called without it
    (["--resume_from_checkpoint", "runs/x/checkpoint-3"], r"--resume_from_checkpoint runs/x/checkpoint-3: every run "
                                                          r"trains a new adapter"),
    # MultiMedTrainer set it back to False without a word
    (["--remove_unused_columns", "true"], r"--remove_unused_columns True: MultiMedTrainer reads every column"),
    (["--do_predict", "true"], r"--do_predict: a switch of transformers' example scripts that Trainer never reads"),
    # refused by MultiMedTrainer inside each run before: every run recorded as failed, exit 0
    (["--neftune_noise_alpha", "5"], r"cannot honour .*\n- neftune_noise_alpha=5.0: NEFTune"),
    # LoRA's own settings: peft_config passes them to LoraConfig alone
    (["--method", "loha", "--alpha", "4"], r"--alpha 4.0: it sets LoRA's scaling \(lora_alpha\), and --method is "
                                           r"'loha'"),
    (["--method", "ia3", "--adapter_dropout", "0.1"], r"--adapter_dropout 0.1: it sets LoRA's dropout"),
    (["--method", "ia3", "--rank", "4"], r"--rank 4: --method ia3 learns scaling vectors and has no rank"),
    # raised inside each k-shot run before (after loading the checkpoint), recorded as that run's failure
    (["--method", "lora2"], r"adapter method 'lora2' is not one of \('lora', 'loha', 'lokr', 'ia3'\)"),
    (["--rank", "0"], r"adapter rank 0: expected >= 1"),
    (["--max_eval_samples", "0"], r"--max_eval_samples 0: expected an integer >= 1"),
    (["--bootstrap_samples", "-1"], r"--bootstrap_samples -1: expected 0 \(no CI\) or more"),
    # the support sets come from the training split: every run failed its leak check
    (["--eval_split", "train"], r"--eval_split train: the support sets are drawn from the training split"),
    (["--eval_split", "tset"], r"--eval_split \['tset'\]: \['tset'\] is not a split"),
    # read by the zero-shot run alone
    (["--shots", "5", "10", "--class_texts", '{"glioma": "a glial tumour"}'],
     r"--class_texts: class texts are read by the zero-shot run \(k = 0\) alone, and --shots \[5, 10\] has none"),
    # a misspelt class kept its name as its text; the nested form (multimed train's) was read as class names
    (["--shots", "0", "--class_texts", '{"gliomaa": "a glial tumour"}'],
     r"--class_texts\['brain_tumor'\]: \['gliomaa'\] are not classes"),
    (["--shots", "0", "--class_texts", '{"brain_tumor": {"glioma": "g"}, "cell_type": {"B": "b"}}'],
     r"--class_texts names tasks \['cell_type'\]; this run adapts 'brain_tumor' alone"),
    # zero-shot alone trains no adapter, draws no support set and is evaluated once
    (["--shots", "0", "--rank", "4"], r"--rank 4: it sets the k-shot adapters .*--shots \[0\] asks for zero-shot "
                                      r"alone"),
    (["--shots", "0", "--targets", "query"], r"--targets \['query'\]: it sets the k-shot adapters"),
    (["--shots", "0", "--group_column", "patient_id"], r"--group_column patient_id: it sets the k-shot adapters "
                                                       r"\(or their support sets\)"),
    (["--shots", "0", "--seeds", "0", "1"], r"--seeds \[0, 1\]: zero-shot trains nothing and is evaluated once"),
    (["--shots", "0", "--learning_rate", "0.01"], r"--learning_rate: it shapes the k-shot adapters' training, and "
                                                  r"--shots \[0\] asks for zero-shot alone"),
    (["--shots", "0", "--max_steps", "5"], r"--max_steps: it shapes the k-shot adapters' training"),
    # read only after every run had trained: a wrong path lost the table at the end
    (["--table1", "no/such/table1.csv"], r"--table1 'no/such/table1.csv': no such file"),
])
def test_a_flag_that_would_change_nothing_is_refused_at_parse_time(flags, match):
    with pytest.raises(ValueError, match=match):
        _parse(*flags)


def test_the_command_refuses_before_any_run_and_names_the_flag(tmp_path, capsys):
    out = tmp_path / "out"
    code = fewshot_main(["ckpt", "--data", str(tmp_path / "nothing"), "--task", "brain_tumor", "--output_dir",
                         str(out), "--seed", "3"])
    assert code == 2 and "multimed fewshot: error: --seed 3:" in capsys.readouterr().err
    assert not out.exists()


def test_what_each_flag_reads_is_kept(tmp_path):
    args, training_args = _parse("--shots", "0", "5", "5", "--seeds", "1", "1", "2", "--method", "loha", "--rank",
                                 "4", "--learning_rate", "0.01", "--no_remove_unused_columns")
    assert args.shots == [0, 5] and args.seeds == [1, 2]  # a repeated k or seed ran twice into one folder
    assert (args.method, args.rank, training_args.learning_rate) == ("loha", 4, 0.01)
    zero, _ = _parse("--shots", "0", "--seeds", "3", "--per_device_eval_batch_size", "8", "--class_texts",
                     '{"brain_tumor": {"glioma": "a glial tumour"}}')
    assert zero.seeds == [3] and zero.class_texts == {"glioma": "a glial tumour"}  # multimed train's form too
    path = tmp_path / "texts.json"
    path.write_text(json.dumps({"glioma": "a glial tumour", "no_tumor": "healthy brain"}))
    flat, _ = _parse("--shots", "0", "--class_texts", str(path))
    assert flat.class_texts == {"glioma": "a glial tumour", "no_tumor": "healthy brain"}
    table = tmp_path / "table1.csv"
    table.write_text("family,task,metric,value,seed,split\nmultimodal,brain_tumor,accuracy,0.5,0,test\n")
    assert _parse("--table1", str(table))[0].table1 == str(table)


def test_a_json_file_of_flags_is_checked_alike(tmp_path):
    path = tmp_path / "fewshot.json"
    path.write_text(json.dumps({"checkpoint": "ckpt", "data": "multimed", "task": "brain_tumor", "output_dir": "o",
                                "shots": [0], "max_steps": 3}))
    with pytest.raises(FewShotError, match="--max_steps: it shapes the k-shot adapters' training"):
        parse_fewshot_args([str(path)])


# ---------------------------------------------------------------------- refused before the first run
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fewshot-flags") / "base"
    tiny_model(["brain_tumor"]).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


def _run(checkpoint, tmp_path, task="brain_tumor", training=None, shots=(2,), **kwargs):
    args = FewShotArguments(checkpoint=checkpoint, data="(in memory)", task=task, shots=list(shots), seeds=[0],
                            bootstrap_samples=0, **kwargs)
    training_args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4,
                                      report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True,
                                      **(training or {}))
    data = {"train": brain_tumor(12, prefix="tr"), "test": brain_tumor(4, seed=5, prefix="te")}
    return run_fewshot(args, training_args, datasets=data)


@pytest.mark.parametrize("kwargs, match", [
    # SupportError inside each run before
    ({"group_column": "patient"}, r"--group_column 'patient' is not a column of the training split of 'brain_tumor' .*"
                                  r"leave it out to group by 'sample_id'"),
    # AdapterError inside each run before
    ({"targets": ["query_proj"]}, r"--targets \['query_proj'\]: no linear layer named \['query_proj'\]"),
    # the fusion's layer of a modality the task does not read (before: adapted, its LoRA never trained)
    ({"targets": ["fundus"]}, r"--targets \['fundus'\]: no linear layer named \['fundus'\] in the encoders of "
                              r"\['mri'\]"),
    # one name of several matching nothing (before: the others were adapted alone, unsaid)
    ({"targets": ["q_proj", "query_proj"]}, r"--targets \['q_proj', 'query_proj'\]: no linear layer named "
                                            r"\['query_proj'\] in the encoders of \['mri'\]"),
    # a task the checkpoint cannot read (cell_type reads scRNA-seq; the tiny base encodes images)
    ({"task": "cell_type"}, r"--task 'cell_type' reads \['scrna'\]; the checkpoint .* encodes \['fundus', 'mri', "
                            r"'oct'\]: few-shot adapters cannot add an encoder"),
    # the Python API gets the TrainingArguments checks too
    ({"training": {"eval_strategy": "steps", "eval_steps": 1}}, r"--eval_strategy: a few-shot run trains on its "
                                                                r"support set alone"),
])
def test_what_would_fail_every_run_alike_is_refused_before_the_first(checkpoint, tmp_path, kwargs, match):
    with pytest.raises(FewShotError, match=match):
        _run(checkpoint, tmp_path, **kwargs)
    assert not (tmp_path / "out" / "runs").exists()


def test_zero_shot_no_run_can_score_is_skipped_beside_k_shot_runs_and_said(checkpoint, tmp_path, caplog):
    # before: --shots 2 0 trained every k-shot adapter, then recorded the zero-shot run's failure in table2.csv; a
    # refusal of the whole command (the default --shots 0 5 10 20 on any plain base) lost the k-shot runs too
    from multimed_hf.fewshot.run import NOT_SCORED, write_table2

    with caplog.at_level("WARNING", logger="multimed_hf.fewshot.run"):
        records = _run(checkpoint, tmp_path, shots=[2, 0])
    assert "no zero-shot run on" in caplog.text and "label-text alignment option" in caplog.text
    skipped = [r for r in records if r.get(NOT_SCORED)]
    assert len(skipped) == 1 and skipped[0]["family"] == "zero_shot"
    assert {r["family"] for r in records if not r.get(NOT_SCORED)} == {"2_shot"}
    assert not (tmp_path / "out" / "runs" / "brain_tumor" / "zero_shot").exists()
    markdown = write_table2(records, tmp_path / "out").markdown.read_text()
    assert "not scored: the base was not trained with the label-text alignment option" in markdown
    # another task appended to the same table keeps the note (before: "not run")
    other = [{"family": "5_shot", "task": "cell_type", "metric": "accuracy", "value": 0.5, "seed": 0, "split": "test",
              "n": 8, "k": 5}]
    assert "not scored: the base was not trained" in write_table2(other, tmp_path / "out").markdown.read_text()
    # so does another k of the same task (before: "not run", table2_not_scored.json deleted)
    more = [{**other[0], "family": "3_shot", "task": "brain_tumor", "k": 3}]
    assert "not scored: the base was not trained" in write_table2(more, tmp_path / "out").markdown.read_text()


def test_a_second_base_into_the_same_table_is_refused(checkpoint, tmp_path):
    # before: its rows went into table2.csv beside the first base's, no file saying which base made which row
    import shutil

    from multimed_hf.fewshot.run import write_table2

    other = tmp_path / "other-base"
    shutil.copytree(checkpoint, other)
    records = _run(str(other), tmp_path)  # a run that wrote no table (stopped before it): its claim gives way
    records = _run(checkpoint, tmp_path)
    markdown = write_table2(records, tmp_path / "out").markdown.read_text()
    assert f"Adapted from (each column's base): brain_tumor: `{Path(checkpoint).resolve()}`" in markdown
    # how the adapters were trained, as table1.md says it of its runs (before: nothing, under torchrun neither)
    assert "brain_tumor 2-shot adapters: lora rank 8, batch 4, max_steps 1, learning rate 5e-05" in markdown
    info = json.loads(next((tmp_path / "out" / "runs").rglob("multimed_adapter.json")).read_text())
    assert info["training"]["world_size"] == 1 and info["training"]["per_device_train_batch_size"] == 4
    with pytest.raises(FewShotError, match=r"holds Table 2 rows of 'brain_tumor' adapted from .*fewshot-flags.*; this "
                                           r"run adapts .*other-base.*: give another --output_dir"):
        _run(str(other), tmp_path)
    _run(checkpoint, tmp_path)  # the same base again: fine


def test_a_family_folder_of_several_runs_is_named_as_such(checkpoint, tmp_path):
    # before: transformers read the folder without config.json as an empty config: "the checkpoint encodes []"
    import shutil

    parent = tmp_path / "runs"
    shutil.copytree(checkpoint, parent / "brain_tumor-mri")
    with pytest.raises(FewShotError, match=r"not a saved MultiMed run folder \(no config.json\); it holds the runs "
                                           r"\['brain_tumor-mri'\]: give one of them"):
        _run(str(parent), tmp_path)


def test_zero_shot_alone_on_a_base_no_run_can_score_is_refused_up_front(tmp_path):
    import zeroshot_tiny as zt

    processor = zt.processor()
    folder = tmp_path / "base"
    zt.model(processor).save_pretrained(folder)  # a text encoder, but no alignment training (no alignment.json)
    processor.save_pretrained(folder)
    with pytest.raises(FewShotError, match=r"--shots 0 \(zero-shot\) on .*: the base was not trained with the "
                                           r"label-text alignment option .* --holdout_classes"):
        _run(str(folder), tmp_path, shots=[0])
    assert not (tmp_path / "out" / "runs").exists()
    (folder / "alignment.json").write_text('{"label_text_tasks": ["brain_tumor"], "held_out": {}}')
    with pytest.raises(FewShotError, match=r"trained on all of its classes .* --holdout_classes"):
        _run(str(folder), tmp_path, shots=[0])


def test_an_alignment_out_of_reach_leaves_the_k_shot_runs_to_run(checkpoint, tmp_path, monkeypatch):
    # before: offline, a Hub base with no alignment.json in the cache refused the whole command (--shots 0 2), k-shot
    # runs included, asking to download a file a plain base never had
    import multimed_hf.fewshot.run as fewshot_run
    from multimed_hf.fewshot.run import NOT_SCORED
    from multimed_hf.fewshot.zeroshot import ZeroShotError

    def unknown(checkpoint):
        raise ZeroShotError(f"{checkpoint!r}: whether it has an alignment.json is unknown (offline)")

    monkeypatch.setattr(fewshot_run, "read_alignment", unknown)
    records = _run(checkpoint, tmp_path, shots=[0, 2])
    assert [r[NOT_SCORED] for r in records if r.get(NOT_SCORED)] == [f"{checkpoint!r}: whether it has an "
                                                                      f"alignment.json is unknown (offline)"]
    assert {r["family"] for r in records if not r.get(NOT_SCORED)} == {"2_shot"}
    with pytest.raises(FewShotError, match=r"--shots 0 \(zero-shot\) on .*: .* is unknown \(offline\)"):
        _run(checkpoint, tmp_path, shots=[0])


def test_a_run_with_flags_that_apply_trains(checkpoint, tmp_path):
    records = _run(checkpoint, tmp_path, method="lora", rank=2, targets=["q_proj"], group_column="sample_id")
    assert records and all(r.get("error") is None for r in records)
    assert (tmp_path / "out" / "runs" / "brain_tumor" / "2_shot" / "seed0" / "adapter").is_dir()


def test_the_command_names_failed_runs_and_fails_when_every_run_failed(tmp_path, capsys, monkeypatch):
    # before: every run failed (here: no checkpoint there, found inside each run once the checks before the runs are
    # left out), the errors sat in table2.csv alone and the command said "wrote ..." and exited 0
    import balancing_tiny as bt
    import zeroshot_tiny as zt

    import multimed_hf.fewshot.run as fewshot_run

    data = bt.write_built_folder(tmp_path / "multimed", {"brain_tumor": {
        "train": zt.tumour_rows(8, 0, "tr"), "test": zt.tumour_rows(8, 1, "te")}})
    argv = [str(tmp_path / "no-checkpoint"), "--data", data, "--task", "brain_tumor", "--shots", "0",
            "--output_dir", str(tmp_path / "out"), "--bootstrap_samples", "0", "--report_to", "none"]
    assert fewshot_main(argv) == 2  # refused before any run, naming the checkpoint
    assert "CHECKPOINT" in capsys.readouterr().err and not (tmp_path / "out").exists()
    monkeypatch.setattr(fewshot_run, "_check_before_runs", lambda args, train: None)
    code = fewshot_main(argv)
    captured = capsys.readouterr()
    assert code == 1
    assert "wrote " in captured.out and (tmp_path / "out" / "table2.csv").is_file()
    assert "multimed fewshot: brain_tumor-zero_shot seed 0 failed: " in captured.err
