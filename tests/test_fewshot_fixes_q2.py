"""Table 2 of another split, a base reading part of a task's modalities, local bases, free-text class texts, zero-shot
alone on a regression task and notebook 08's command-line equivalent (sweep M3's findings 1, 3-7)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from transformers import TrainingArguments

from multimed_hf.fewshot.run import (
    SCOPE_KEY,
    ZERO_SHOT_REGRESSION_NOTE,
    FewShotArguments,
    FewShotError,
    fewshot_main,
    run_fewshot,
    write_table2,
)
from training_tiny import brain_tumor, tiny_model, tiny_processor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fewshot-q2") / "base"
    tiny_model(["brain_tumor"]).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


def _training(out, **kwargs) -> TrainingArguments:
    return TrainingArguments(output_dir=str(out), max_steps=1, per_device_train_batch_size=4, learning_rate=1e-2,
                             report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True, **kwargs)


def _run(checkpoint, out, split="test", task="brain_tumor", shots=(2,), datasets=None, **kwargs):
    args = FewShotArguments(checkpoint=checkpoint, data="(in memory)", task=task, shots=list(shots), seeds=[0],
                            bootstrap_samples=0, eval_split=split, **kwargs)
    data = datasets or {"train": brain_tumor(12, prefix="tr"), split: brain_tumor(4, seed=5, prefix=split[:2])}
    return run_fewshot(args, _training(out), datasets=data)


# ---------------------------------------------------------------------- finding 1: --eval_split validation
def test_a_validation_run_writes_its_own_table_and_never_replaces_test_rows(checkpoint, tmp_path):
    # before: table2.md read the test split alone ("not run" in every cell the run made, "Split `test`"), a
    # validation run into a folder of test rows deleted the same seed's test rows and overwrote its adapter, and the
    # adapter card said "Test metrics" of the validation metrics
    out = tmp_path / "val"
    paths = write_table2(_run(checkpoint, out, split="validation"), out)
    markdown = paths.markdown.read_text()
    assert "Split `validation`" in markdown and "Split `test`" not in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| `2_shot`"))
    assert "not run" not in row and "50.00" in row
    assert "Scored on the validation split, not the test split: the paper's numbers beside the cells are its test " \
           "results" in markdown
    adapter = out / "runs" / "brain_tumor" / "2_shot" / "seed0" / "adapter"
    info = json.loads((adapter / "multimed_adapter.json").read_text())
    assert info["eval_split"] == "validation"
    card = (adapter / "README.md").read_text()
    assert "Validation metrics (`brain_tumor`, validation split)" in card and "Test metrics" not in card

    # a test run into the folder of validation rows is refused before any run, and the other way round
    before = (adapter / "adapter_model.safetensors").read_bytes()
    with pytest.raises(FewShotError, match=r"holds Table 2 rows scored on the 'validation' split; this run scores "
                                           r"--eval_split 'test'\. A table holds one split .* give another "
                                           r"--output_dir for the test split"):
        _run(checkpoint, out, split="test")
    assert (adapter / "adapter_model.safetensors").read_bytes() == before
    assert json.loads((adapter / "multimed_adapter.json").read_text())["eval_split"] == "validation"
    test_out = tmp_path / "test"
    write_table2(_run(checkpoint, test_out), test_out)
    with pytest.raises(FewShotError, match=r"holds Table 2 rows scored on the 'test' split; this run scores "
                                           r"--eval_split 'validation'"):
        _run(checkpoint, test_out, split="validation")
    # from Python alike: rows of another split are not written over the table's, nor mixed in one write
    rows = [{"family": "2_shot", "task": "brain_tumor", "metric": "accuracy", "value": 0.5, "seed": 0, "n": 4,
             "split": "validation", "k": 2}]
    with pytest.raises(FewShotError, match=r"scored on the 'test' split; this run scores --eval_split 'validation'"):
        write_table2(rows, test_out)
    with pytest.raises(FewShotError, match=r"Table 2 records of the splits \['test', 'validation'\]"):
        write_table2(rows + [{**rows[0], "split": "test", "seed": 1}], tmp_path / "mixed")
    table = (test_out / "table2.csv").read_text()
    assert ",test," in table and ",validation," not in table


# ---------------------------------------------------------------------- finding 3: part of the modalities read
def test_a_base_reading_some_of_the_tasks_modalities_says_so_in_table2(tmp_path):
    # before: the base reads OCT alone, diabetic_retinopathy's fundus rows were left out of the support sets and the
    # scores, and table2.md said "the support set stayed under k (the training split ran out)" (the split has every
    # dr_grade: the base cannot read them) and, beside a zero-shot cell, "k-shot scores every test row"
    import torch
    from transformers import AutoConfig

    from multimed_hf.configuration_multimed import MultiMedConfig
    from multimed_hf.modeling_multimed import MultiMedModel
    from training_tiny import SIDE, diabetic_retinopathy

    vit = AutoConfig.for_model("vit", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=24, image_size=SIDE, patch_size=4)
    torch.manual_seed(0)
    base = tmp_path / "base"
    MultiMedModel(MultiMedConfig.from_tasks(["brain_tumor"], encoders={"mri": vit, "oct": vit},
                                            hidden_size=16)).save_pretrained(base)
    tiny_processor().save_pretrained(base)
    test = diabetic_retinopathy(12, seed=5, prefix="te").map(lambda r: {"patient_id": f"te-{r['patient_id']}"})
    data = {"train": diabetic_retinopathy(32, seed=0, prefix="tr"), "test": test}
    out = tmp_path / "out"
    records = _run(str(base), out, task="diabetic_retinopathy", datasets=data)
    assert records and not [r["error"] for r in records if r.get("error")]
    scope = json.loads(records[0][SCOPE_KEY])
    assert scope["rows"] == 6 and scope["of"] == 12 and scope["modalities"] == ["oct"]
    # every grade is short (no fundus row read) and in the training split's fundus rows: unread, not run out
    grades = ("no_dr", "mild", "moderate", "severe", "proliferative")
    assert sorted(scope["unread"]) == sorted(f"dr_grade={g}" for g in grades)
    assert all(n > 0 for n in scope["unread"].values())
    run = out / "runs" / "diabetic_retinopathy" / "2_shot" / "seed0"
    assert json.loads((run / "support.json").read_text())["read_modalities"] == ["oct"]
    assert "from the training split's rows holding oct (the modalities the base encodes)" in " ".join(
        (run / "adapter" / "README.md").read_text().split())
    zero = {"family": "zero_shot", "task": "diabetic_retinopathy", "label": "oct_finding", "metric": "accuracy",
            "value": 0.5, "seed": 0, "split": "test", "n": 3, "k": 0, "chance": 0.5}
    markdown = write_table2(records + [zero], out).markdown.read_text()
    assert ("diabetic_retinopathy 2_shot: the base encodes oct alone of the task's modalities (oct, fundus): the "
            "support sets were drawn from, and the cell scores, the rows holding oct only: 6 of the 12 test rows "
            "scored") in markdown
    short = next(line for line in markdown.splitlines() if "stayed under k" in line)
    assert "the training split ran out" not in short
    assert ("the support set stayed under k (the training rows the base can read, those holding oct, ran out; the "
            "split holds more of dr_grade=") in short
    assert "k-shot scores every test row" not in markdown
    assert ("k-shot scores 6 of the 12 test rows (those holding oct, the modalities the base encodes) over every "
            "class: the two do not compare") in markdown
    # table2.csv keeps it for a later run appending to the table
    other = [{"family": "5_shot", "task": "brain_tumor", "metric": "accuracy", "value": 0.5, "seed": 0,
              "split": "test", "n": 8, "k": 5}]
    assert "6 of the 12 test rows scored" in write_table2(other, out).markdown.read_text()
    # nor is every row said to be scored where --max_eval_samples kept the first ones
    cut = [{**zero, "task": "brain_tumor", "label": None},
           {**zero, "task": "brain_tumor", "label": None, "family": "5_shot", "k": 5, "n": 20,
            SCOPE_KEY: json.dumps({"rows": 20, "of": 125})}]
    markdown = write_table2(cut, tmp_path / "cut").markdown.read_text()
    assert "k-shot scores 20 of the 125 test rows (drawn at random, --max_eval_samples) over every class" in markdown
    assert "brain_tumor 5_shot: scored on 20 of the 125 test rows, drawn at random (--max_eval_samples)" in markdown


# ---------------------------------------------------------------------- finding 4: a local base
def test_a_local_base_given_as_a_relative_path_is_recorded_absolute_and_never_pushed(checkpoint, tmp_path,
                                                                                     monkeypatch):
    # before: adapter_config.json, multimed_adapter.json and the card named the base "base" (as given), a Hub id
    # from any other directory, where push_adapter uploaded it as one
    import multimed_hf.hub_upload as hub_upload
    from multimed_hf.fewshot.adapters import AdapterError, push_adapter

    work = tmp_path / "work"
    shutil.copytree(checkpoint, work / "base")
    monkeypatch.chdir(work)
    _run("base", Path("out"))
    adapter = (work / "out" / "runs" / "brain_tumor" / "2_shot" / "seed0" / "adapter").resolve()
    absolute = str((work / "base").resolve())
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == absolute
    info = json.loads((adapter / "multimed_adapter.json").read_text())
    assert info["base_model"] == absolute and info["base_local"] is True
    card = (adapter / "README.md").read_text()
    assert "base_model:" not in card and f"the local MultiMed checkpoint `{absolute}`" in card

    pushed = {}
    monkeypatch.setattr(hub_upload, "upload_files", lambda repo, files, **kw: pushed.update(files) or "UPLOADED")
    monkeypatch.chdir(tmp_path)  # where no folder of that name exists
    with pytest.raises(AdapterError, match=r"a local path; give base_id="):
        push_adapter(adapter, "me/x")
    shutil.rmtree(work / "base")  # elsewhere (another machine): refused all the same
    with pytest.raises(AdapterError, match=r"a local path; give base_id="):
        push_adapter(adapter, "me/x")
    assert not pushed
    assert push_adapter(adapter, "me/x", base_id="org/multimed-base") == "UPLOADED"
    assert json.loads(pushed["adapter_config.json"])["base_model_name_or_path"] == "org/multimed-base"
    assert json.loads(pushed["multimed_adapter.json"])["base_local"] is False
    assert "base_model: org/multimed-base" in pushed["README.md"].decode()


# ---------------------------------------------------------------------- finding 5: free-text class texts
def _cells(n: int, prefix: str):
    from datasets import Dataset

    names = ["CD56+ NK", "CD19+ B", "CD14+ Monocyte"]
    return Dataset.from_dict({"sample_id": [f"{prefix}-{i}" for i in range(n)], "cell_type": [names[i % 3]
                                                                                             for i in range(n)]})


@pytest.mark.parametrize("texts", [{"CD56 NK": "natural killer cell"},
                                   {"cell_type": {"CD56 NK": "natural killer cell", "CD19+ B": "B cell"}}])
def test_class_texts_of_a_free_text_task_are_checked_against_its_classes(checkpoint, tmp_path, texts,
                                                                        monkeypatch):
    # before: cell_type has no class list in the registry, so a misspelt class was run with the default names,
    # scores identical to a run without --class_texts (here: the zero-shot run stands in for one on an aligned base)
    import multimed_hf.fewshot.run as fewshot_run

    ran = []
    monkeypatch.setattr(fewshot_run, "_check_zero_shot", lambda args, config: None)
    monkeypatch.setattr(fewshot_run, "_zero_shot", lambda *args: ran.append(args) or [])
    with pytest.raises(FewShotError, match=r"--class_texts\['cell_type'\]: \['CD56 NK'\] are not classes of "
                                           r"'cell_type' \(a free-text label: the values its training split holds, "
                                           r"3 of them: CD14\+ Monocyte, CD19\+ B, CD56\+ NK\); 'CD56 NK': did you "
                                           r"mean 'CD56\+ NK'"):
        _run(checkpoint, tmp_path / "out", task="cell_type", shots=[0], class_texts=json.dumps(texts),
             datasets={"train": _cells(12, "tr"), "test": _cells(6, "te")})
    assert not ran and not (tmp_path / "out" / "runs").exists()


def test_zero_shot_json_records_the_class_texts_scored(tmp_path):
    # before: zero_shot.json held the classes, not their texts: a description left unused could not be seen
    import zeroshot_tiny as zt

    processor = zt.processor()
    base = tmp_path / "base"
    zt.model(processor).save_pretrained(base)
    processor.save_pretrained(base)
    (base / "alignment.json").write_text(json.dumps({"label_text_tasks": ["brain_tumor"],
                                                     "held_out": {"brain_tumor": ["meningioma", "pituitary"]}}))
    data = {"train": zt.tumour_rows(8, 0, "tr"), "test": zt.tumour_rows(8, 1, "te")}
    _run(str(base), tmp_path / "out", shots=[0], class_texts='{"meningioma": "bright red"}', datasets=data)
    info = json.loads((tmp_path / "out" / "runs" / "brain_tumor" / "zero_shot" / "seed0" / "zero_shot.json")
                      .read_text())
    assert info["class_texts"] == {"meningioma": "bright red", "pituitary": "pituitary"}
    assert info["split"] == "test"


# ---------------------------------------------------------------------- finding 6: zero-shot alone, regression
@pytest.mark.parametrize("task", ["expression_prediction", "bone_age"])
def test_zero_shot_alone_on_a_regression_task_is_refused(task, tmp_path, capsys):
    # before: nothing ran, table2.csv and table2.md were written empty and the command exited 0
    with pytest.raises(FewShotError, match=rf"--shots \[0\] \(zero-shot alone\) on '{task}', a regression task: "
                                           rf"no zero-shot for a regression target"):
        FewShotArguments(checkpoint="ckpt", data="d", task=task, shots=[0])
    argv = [str(tmp_path / "ckpt"), "--data", "d", "--task", task, "--shots", "0", "--output_dir",
            str(tmp_path / "out")]
    assert fewshot_main(argv) == 2
    assert ZERO_SHOT_REGRESSION_NOTE in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert FewShotArguments(checkpoint="ckpt", data="d", task=task, shots=[0, 2]).shots == [0, 2]  # the note


# ---------------------------------------------------------------------- finding 7: notebook 08
def test_notebook_08_trains_as_its_command_line_equivalent(monkeypatch):
    # before: the notebook built multimed train's small preset (weight decay 1.0, cosine schedule, warmup) and
    # printed as its equivalent a fewshot command that trains with none of them
    import shlex

    import nbformat

    import multimed_hf.fewshot.run as fewshot_run
    from multimed_hf.fewshot.run import parse_fewshot_args

    nb = nbformat.read(ROOT / "notebooks" / "08_table2.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.cell_type == "code" and "run_fewshot" in c.source)
    text = next(c.source for c in nb.cells if c.cell_type == "markdown" and "    multimed fewshot" in c.source)
    command = " ".join(line.strip().rstrip("\\") for line in text.splitlines() if line.startswith("    "))
    argv = shlex.split(command)
    assert argv[:2] == ["multimed", "fewshot"]
    expected_args, expected = parse_fewshot_args(argv[2:])
    seen = {}

    def capture(args, training_args, **kwargs):
        seen.update(args=args, training_args=training_args)
        return []

    monkeypatch.setattr(fewshot_run, "run_fewshot", capture)
    monkeypatch.setattr(fewshot_run, "write_table2", lambda *a, **k: None)
    exec(cell.source, {"WORK": Path("notebook_output"), "DATA": Path("notebook_output") / "table2_data"})
    ours, theirs = seen["training_args"].to_dict(), expected.to_dict()
    # the notebook's additions change how it runs, not what it computes
    quiet = {"output_dir", "use_cpu", "disable_tqdm", "dataloader_num_workers", "logging_strategy", "logging_dir"}
    assert {k: ours[k] for k in ours if k not in quiet and ours[k] != theirs.get(k)} == {}
    for name in ("task", "shots", "seeds", "rank", "method", "bootstrap_samples", "eval_split", "max_eval_samples"):
        assert getattr(seen["args"], name) == getattr(expected_args, name), name
