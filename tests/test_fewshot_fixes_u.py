"""Table 2's rows from ``--table1`` said to score other rows than its k-shot rows where their ``n`` differ, and an
interrupted ``multimed fewshot`` leaving tables that describe only the adapters on disk (sweep H4's findings 4, 9)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from transformers import TrainingArguments

from multimed_hf.fewshot import run as fewshot_run
from multimed_hf.fewshot.run import SETTINGS_FILE, FewShotArguments, run_fewshot, write_table2
from multimed_hf.training.report import write_table1
from training_tiny import brain_tumor, tiny_model, tiny_processor


def _rows(family, task, metric, n, seeds=(0, 1), value=0.5, **extra):
    return [{"family": family, "task": task, "metric": metric, "value": value + 0.01 * s, "seed": s,
             "split": "test", "n": n, **extra} for s in seeds]


# ---------------------------------------------------------------------- finding 4: --table1 rows of other rows
def test_table2_says_where_the_rows_from_table1_scored_other_rows_than_the_k_shot_rows(tmp_path):
    # before: Table 1's rows (a benchmark run with --max_eval_samples 12) and the k-shot rows (every one of the 48
    # test rows) were printed in one column, and nothing in table2.md said that they cover other rows
    bench = tmp_path / "bench"
    write_table1(_rows("multimodal", "expression_prediction", "pearson", 12)
                 + _rows("multimodal_multitask", "expression_prediction", "pearson", 12)
                 + _rows("unimodal", "brain_tumor", "accuracy", 12), bench)
    shots = (_rows("5_shot", "expression_prediction", "pearson", 48, k=5)
             + _rows("5_shot", "brain_tumor", "accuracy", 20, k=5))
    markdown = write_table2(shots, tmp_path / "a", table1=bench / "table1.csv").markdown.read_text()
    for task, k_shot in (("expression_prediction", 48), ("brain_tumor", 20)):  # brain_tumor: Table 1's unimodal
        assert (f"\n- {task}: the numbers read from --table1 scored 12 test rows, the k-shot rows {k_shot}: not the "
                f"same rows (e.g. --max_eval_samples given to one of the two commands alone)\n") in markdown
    # kept by a later run appending to the table without --table1 (Table 1's rows stay in table2.csv)
    more = _rows("10_shot", "expression_prediction", "pearson", 48, k=10)
    markdown = write_table2(more, tmp_path / "a").markdown.read_text()
    assert "- expression_prediction: the numbers read from --table1 scored 12 test rows, the k-shot rows 48: " \
           in markdown
    # the same rows on both sides: nothing said
    same = _rows("5_shot", "expression_prediction", "pearson", 12, k=5)
    markdown = write_table2(same, tmp_path / "b", table1=bench / "table1.csv").markdown.read_text()
    assert "read from --table1" not in markdown


# ---------------------------------------------------------------------- finding 9: an interrupted command
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fewshot-u") / "base"
    tiny_model(["brain_tumor"]).save_pretrained(folder)
    tiny_processor().save_pretrained(folder)
    return str(folder)


def _run(checkpoint, out, seeds=(0, 1), max_steps=1):
    args = FewShotArguments(checkpoint=checkpoint, data="(in memory)", task="brain_tumor", shots=[2],
                            seeds=list(seeds), bootstrap_samples=0)
    training_args = TrainingArguments(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4,
                                      learning_rate=1e-2, report_to=[], save_strategy="no", use_cpu=True,
                                      disable_tqdm=True)
    data = {"train": brain_tumor(12, prefix="tr"), "test": brain_tumor(4, seed=5, prefix="te")}
    return run_fewshot(args, training_args, datasets=data)


def _seed_folder(out: Path, seed: int) -> Path:
    return out / "runs" / "brain_tumor" / "2_shot" / f"seed{seed}"


def _check_table_describes_the_adapters(out: Path) -> set[int]:
    """Every k-shot row of table2.csv (value and recorded settings) is the adapter's in its run folder; returns the
    seeds the table holds."""
    table = pd.read_csv(out / "table2.csv")
    settings = json.loads((out / SETTINGS_FILE).read_text()) if (out / SETTINGS_FILE).is_file() else {}
    seeds = set()
    for row in table[table["family"] == "2_shot"].itertuples():
        info = json.loads((_seed_folder(out, row.seed) / "adapter" / "multimed_adapter.json").read_text())
        key = f"{row.label}/{row.metric}" if isinstance(row.label, str) else row.metric
        assert info["metrics"][key] == pytest.approx(row.value), (row.seed, key)
        line = settings["brain_tumor"]["2_shot"][str(row.seed)]
        assert int(re.search(r"max_steps (\d+)", line).group(1)) == info["training"]["max_steps"], row.seed
        seeds.add(int(row.seed))
    return seeds


def test_an_interrupted_run_leaves_tables_describing_only_the_adapters_on_disk(checkpoint, tmp_path, monkeypatch):
    # before: each run overwrote runs/<task>/<k>_shot/seed<s>/ as it went and the tables were written after the
    # last run, so a command stopped midway left table2.* giving the earlier adapters' numbers and settings for the
    # adapters it had already replaced (and the stopped run's predictions and support set over the earlier ones)
    out = tmp_path / "out"
    write_table2(_run(checkpoint, out), out)
    assert _check_table_describes_the_adapters(out) == {0, 1}
    seed1 = {p.relative_to(_seed_folder(out, 1)): p.read_bytes() for p in _seed_folder(out, 1).rglob("*")
             if p.is_file()}
    stale = _seed_folder(out, 0).with_name(".partial-seed0")  # left by a run killed before (SIGKILL)
    stale.mkdir()
    (stale / "junk").write_text("x")
    save_adapter = fewshot_run.save_adapter

    def stopped_in_the_second_run(*args, **kwargs):
        if kwargs["seed"] == 1:  # after seed 1's support set and predictions were written
            raise KeyboardInterrupt
        return save_adapter(*args, **kwargs)

    monkeypatch.setattr(fewshot_run, "save_adapter", stopped_in_the_second_run)
    with pytest.raises(KeyboardInterrupt):
        _run(checkpoint, out, max_steps=2)
    # seed 0 was replaced (max_steps 2): its earlier rows left the tables; seed 1's folder and rows as they were
    assert json.loads((_seed_folder(out, 0) / "adapter" / "multimed_adapter.json").read_text())["training"][
        "max_steps"] == 2
    assert _check_table_describes_the_adapters(out) == {1}
    assert {p.relative_to(_seed_folder(out, 1)): p.read_bytes() for p in _seed_folder(out, 1).rglob("*")
            if p.is_file()} == seed1
    markdown = (out / "table2.md").read_text()
    assert "brain_tumor 2-shot adapters: lora rank 8, batch 4, max_steps 1" in markdown and "max_steps 2" not in \
        markdown
    assert not list((out / "runs" / "brain_tumor" / "2_shot").glob(".partial-*"))
    # run again to the end: every seed's rows and adapters agree
    monkeypatch.setattr(fewshot_run, "save_adapter", save_adapter)
    write_table2(_run(checkpoint, out, max_steps=2), out)
    assert _check_table_describes_the_adapters(out) == {0, 1}
    assert sorted(p.name for p in (out / "runs" / "brain_tumor" / "2_shot").iterdir()) == ["seed0", "seed1"]
