"""Table 2's settings and pooled seeds: each k-shot seed's settings recorded with its rows (not before any run), a
seed added to a cell trained under other settings refused, a cell pooling recipes said to, and zero-shot one
evaluation whatever ``--seeds``."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from transformers import TrainingArguments

from multimed_hf.fewshot import run as fewshot_run
from multimed_hf.fewshot.run import (
    EARLIER_SETTINGS,
    SETTINGS_FILE,
    FewShotArguments,
    FewShotError,
    run_fewshot,
    write_table2,
)
from training_tiny import brain_tumor, tiny_model, tiny_processor

#: The settings line of ``_run``'s adapters at its defaults.
DEFAULT = "lora rank 8, batch 4, max_steps 1, learning rate 0.01"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fewshot-q") / "base"
    tiny_model(["brain_tumor"]).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


def _run(checkpoint, out, seeds=(0,), max_steps=1, learning_rate=1e-2, **kwargs):
    args = FewShotArguments(checkpoint=checkpoint, data="(in memory)", task="brain_tumor", shots=[2],
                            seeds=list(seeds), bootstrap_samples=0, **kwargs)
    training_args = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
                                      learning_rate=learning_rate, report_to=[], save_strategy="no", use_cpu=True,
                                      disable_tqdm=True)
    data = {"train": brain_tumor(12, prefix="tr"), "test": brain_tumor(4, seed=5, prefix="te")}
    return run_fewshot(args, training_args, datasets=data)


def _settings(out) -> dict:
    return json.loads((out / SETTINGS_FILE).read_text())


def test_a_seed_trained_under_other_settings_is_not_pooled_into_a_cell(checkpoint, tmp_path):
    # before: seed 1 trained at other settings was added to the 2-shot cell, and table2.md and table2_settings.json
    # named the last run's settings alone, for both seeds
    out = tmp_path / "out"
    write_table2(_run(checkpoint, out, seeds=[0]), out)
    assert _settings(out) == {"brain_tumor": {"2_shot": {"0": DEFAULT}}}
    other = "lora rank 8, batch 4, max_steps 2, learning rate 5e-05"
    with pytest.raises(FewShotError, match=rf"--output_dir '{out}' holds 'brain_tumor' 2-shot rows whose adapters "
                                           rf"were trained under other settings \(seed\(s\) 0: {DEFAULT}\); this run "
                                           rf"trains seed\(s\) 1 with: {other}\. A cell's mean ± sd is over one "
                                           rf"recipe: give another --output_dir, or train every seed of the cell "
                                           rf"with these settings \(--seeds 0 1\)"):
        _run(checkpoint, out, seeds=[1], max_steps=2, learning_rate=5e-5)
    assert not (out / "runs" / "brain_tumor" / "2_shot" / "seed1").exists()  # refused before any run
    # so are other evaluation rows and other targets (each in the settings line)
    with pytest.raises(FewShotError,
                       match=r"this run trains seed\(s\) 1 with: .*, scored on 2 test rows drawn at random"):
        _run(checkpoint, out, seeds=[1], max_eval_samples=2)
    with pytest.raises(FewShotError, match=r"this run trains seed\(s\) 1 with: .*, targets q_proj v_proj"):
        _run(checkpoint, out, seeds=[1], targets=["q_proj", "v_proj"])
    # the same settings add to the cell, one line as before; every seed of the cell again replaces it
    write_table2(_run(checkpoint, out, seeds=[1]), out)
    assert _settings(out) == {"brain_tumor": {"2_shot": {"0": DEFAULT, "1": DEFAULT}}}
    markdown = (out / "table2.md").read_text()
    assert f"brain_tumor 2-shot adapters: {DEFAULT}" in markdown and "different settings" not in markdown
    paths = write_table2(_run(checkpoint, out, seeds=[0, 1], max_steps=2, learning_rate=5e-5), out)
    assert _settings(out) == {"brain_tumor": {"2_shot": {"0": other, "1": other}}}
    assert f"brain_tumor 2-shot adapters: {other}" in paths.markdown.read_text()


def test_a_cell_pooling_seeds_of_different_settings_names_each_recipe(tmp_path):
    # rows written from Python (the command refuses them): the note names every recipe with its seeds and says the
    # cell pools them (before: the last write's line alone, as the whole cell's)
    def rows(seed, value, settings=None):
        return [{"family": "5_shot", "task": "brain_tumor", "metric": "accuracy", "value": value, "seed": seed,
                 "split": "test", "n": 12, "k": 5, **({"settings": settings} if settings else {})}]

    write_table2(rows(0, 0.4, "lora rank 8, batch 16, max_steps 6, learning rate 0.001")
                 + rows(2, 0.5, "lora rank 8, batch 16, max_steps 6, learning rate 0.001"), tmp_path)
    markdown = write_table2(rows(1, 0.6, "lora rank 8, batch 16, max_steps 2, learning rate 5e-05"),
                            tmp_path).markdown.read_text()
    assert ("brain_tumor 5-shot adapters were trained under different settings: the cell's mean ± sd pools more than "
            "one recipe: seeds 0, 2: lora rank 8, batch 16, max_steps 6, learning rate 0.001; seed 1: lora rank 8, "
            "batch 16, max_steps 2, learning rate 5e-05") in markdown
    assert "brain_tumor 5-shot adapters: " not in markdown
    # a seed written without settings is said to have none recorded, not counted under another seed's
    markdown = write_table2(rows(1, 0.6), tmp_path).markdown.read_text()
    assert ("brain_tumor 5-shot adapters: seeds 0, 2: lora rank 8, batch 16, max_steps 6, learning rate 0.001; seed "
            "1: settings not recorded (rows written without them)") in markdown
    assert _settings(tmp_path) == {"brain_tumor": {"5_shot": {
        "0": "lora rank 8, batch 16, max_steps 6, learning rate 0.001",
        "2": "lora rank 8, batch 16, max_steps 6, learning rate 0.001"}}}


def test_an_interrupted_run_leaves_the_recorded_settings_as_they_were(checkpoint, tmp_path, monkeypatch):
    # before: the settings were written before any adapter trained, so a run stopped in training (Ctrl-C, OOM,
    # timeout) left its settings against the cell whose rows it never wrote; the next table2.md printed them
    out = tmp_path / "out"
    write_table2(_run(checkpoint, out), out)
    before = (out / SETTINGS_FILE).read_text()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fewshot_run, "_few_shot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(checkpoint, out, max_steps=100000, learning_rate=0.5)
    assert (out / SETTINGS_FILE).read_text() == before
    other = [{"family": "5_shot", "task": "cell_type", "metric": "accuracy", "value": 0.5, "seed": 0,
              "split": "test", "n": 8, "k": 5}]
    markdown = write_table2(other, out).markdown.read_text()
    assert f"brain_tumor 2-shot adapters: {DEFAULT}" in markdown and "100000" not in markdown


def test_an_earlier_versions_settings_file_is_read_and_said_to_be_one(checkpoint, tmp_path):
    # table2_settings.json of an earlier version: one line per task and k, the last run's (maybe not every seed's,
    # even a run's stopped before its rows): read as each seed's of the cell, said to be that record, and no seed is
    # added to such a cell (a run of every seed replaces it)
    out = tmp_path / "out"
    records = [{"family": "2_shot", "task": "brain_tumor", "metric": "accuracy", "value": v, "seed": s,
                "split": "test", "n": 4, "k": 2} for s, v in ((0, 0.5), (1, 0.25))]
    write_table2(records, out)
    (out / SETTINGS_FILE).write_text(json.dumps({"brain_tumor": {"2_shot": DEFAULT}}))
    other = [{"family": "5_shot", "task": "cell_type", "metric": "accuracy", "value": 0.5, "seed": 0,
              "split": "test", "n": 8, "k": 5}]
    markdown = write_table2(other, out).markdown.read_text()
    earlier = f"{DEFAULT} {EARLIER_SETTINGS}"
    assert f"brain_tumor 2-shot adapters: {earlier}" in markdown
    assert _settings(out) == {"brain_tumor": {"2_shot": {"0": earlier, "1": earlier}}}
    (out / SETTINGS_FILE).write_text(json.dumps({"brain_tumor": {"2_shot": DEFAULT}}))
    with pytest.raises(FewShotError, match=r"under other settings \(seed\(s\) 0, 1: lora rank 8, batch 4, "
                                           r"max_steps 1, learning rate 0.01 \(an earlier version's record.*\); this "
                                           r"run trains seed\(s\) 2 with: lora rank 8, batch 4, max_steps 1, "
                                           r"learning rate 0.01\."):
        _run(checkpoint, out, seeds=[2])
    write_table2(_run(checkpoint, out, seeds=[0, 1]), out)
    assert _settings(out) == {"brain_tumor": {"2_shot": {"0": DEFAULT, "1": DEFAULT}}}
    (out / SETTINGS_FILE).write_text("{not json")  # not a crash: the earlier rows' settings are left out
    assert "2-shot adapters" not in write_table2(other, out).markdown.read_text()


def test_a_new_zero_shot_run_replaces_the_tasks_zero_shot_cell_whatever_its_seed(tmp_path):
    # before: two zero-shot runs differing in --seeds alone were pooled: "42.86 ± 0.00" above the note "Zero-shot
    # trains nothing: one evaluation (no sd)"
    def zero_shot(seed, value):
        return [{"family": "zero_shot", "task": "brain_tumor", "metric": "accuracy", "value": value, "seed": seed,
                 "split": "test", "n": 7, "k": 0, "chance": 0.5}]

    write_table2(zero_shot(0, 3 / 7), tmp_path)
    paths = write_table2(zero_shot(1, 4 / 7), tmp_path)
    table = pd.read_csv(paths.csv)
    zero = table[table["family"] == "zero_shot"]
    assert list(zero["seed"]) == [1] and list(zero["value"]) == [pytest.approx(4 / 7)]
    row = next(line for line in paths.markdown.read_text().splitlines() if line.startswith("| zero-shot"))
    assert "57.14" in row and "±" not in row
