"""The benchmark loop (training/benchmark.py): planning, per-run folders and seeds, failures recorded, the report."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from multimed_hf.training import benchmark
from multimed_hf.training.benchmark import BenchmarkError, _parse, built_tasks, run_benchmark
from multimed_hf.training.families import FamilyError, plan_runs
from multimed_hf.training.report import SAME_AS_UNIMODAL, headline

TASKS = ["brain_tumor", "diabetic_retinopathy", "expression_prediction"]
FAMILIES = ["unimodal", "multimodal", "multimodal_multitask"]


class FakeTrain:
    """Stands in for training.run.train_model: records each call, fails the runs it is told to."""

    def __init__(self, fail_family=None, unscored_plan=None):
        self.calls = []
        self.fail_family = fail_family
        self.unscored_plan = unscored_plan  # a run that trains and scores nothing (no test row holds its modality)

    def __call__(self, args, training_args, *, plan):
        assert plan.name == args.plan and plan.family == args.family
        self.calls.append((args, training_args))
        print(f"log line of {args.plan}")
        if args.family == self.fail_family:
            raise RuntimeError(f"no memory left for {args.plan}")
        records = []
        for task in args.tasks if args.plan != self.unscored_plan else ():
            label, metric = headline(task)
            value = 0.5 + 0.1 * training_args.seed
            records.append({"task": task, "split": "test", "label": label if task != "brain_tumor" else None,
                            "metric": metric, "value": value, "n": 10, "ci_low": value - 0.1,
                            "ci_high": value + 0.1})
        return SimpleNamespace(output_dir=training_args.output_dir, records=records)


def _training_args(tmp_path):
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none", max_steps=1)


def test_every_plan_and_seed_runs_in_its_own_folder(tmp_path, capsys):
    fake = FakeTrain()
    records, paths = run_benchmark(tmp_path / "no-data", TASKS, FAMILIES, [0, 1], tmp_path / "report",
                                   _training_args(tmp_path), train_fn=fake, progress=False)
    planned = [(p.family, p.name) for f in FAMILIES for p in plan_runs(f, TASKS)]
    assert len(fake.calls) == 2 * len(planned)
    seen = set()
    for args, targs in fake.calls:
        (plan,) = [p for p in plan_runs(args.family, TASKS) if p.name == args.plan]
        assert list(args.tasks) == list(plan.tasks) and args.encoders == "small"
        expected = tmp_path / "report" / "runs" / args.family / args.plan / f"seed{targs.seed}"
        assert targs.output_dir == str(expected)
        seen.add((args.family, args.plan, targs.seed))
        assert (expected / "stdout.txt").read_text() == f"log line of {args.plan}\n"  # not the terminal's
    assert "log line" not in capsys.readouterr().out
    assert seen == {(f, p, s) for f, p in planned for s in (0, 1)}
    assert {r["family"] for r in records} == set(FAMILIES)
    assert all({"family", "seed", "run"} <= set(r) for r in records)
    frame = pd.read_csv(paths.csv)
    assert len(frame) == len(records)
    assert paths.markdown.is_file() and paths.figure.stat().st_size > 0


def test_a_failing_run_records_its_error_and_the_loop_goes_on(tmp_path):
    fake = FakeTrain(fail_family="multimodal")
    records, paths = run_benchmark(tmp_path / "no-data", TASKS, FAMILIES, [0], tmp_path / "report",
                                   _training_args(tmp_path), train_fn=fake, progress=False)
    assert fake.calls[-1][0].family == "multimodal_multitask"  # runs after the failures still ran
    failed = [r for r in records if r.get("error")]
    multimodal_plans = plan_runs("multimodal", TASKS)
    assert {r["task"] for r in failed} == {t for p in multimodal_plans for t in p.tasks}
    assert all(r["family"] == "multimodal" and "RuntimeError: no memory left" in r["error"] for r in failed)
    for plan in multimodal_plans:
        error = tmp_path / "report" / "runs" / "multimodal" / plan.name / "seed0" / "error.txt"
        assert "Traceback" in error.read_text() and "no memory left" in error.read_text()
    text = paths.markdown.read_text()
    row = [line for line in text.splitlines() if "(`multimodal`)" in line][0]
    assert "failed: RuntimeError: no memory left for" in row
    assert SAME_AS_UNIMODAL in row  # brain tumour has one modality: no multimodal run, said so
    ok = [r for r in records if r["family"] == "multimodal_multitask"]
    assert ok and all(not r.get("error") for r in ok)


def test_unknown_family_fails_before_any_training(tmp_path):
    fake = FakeTrain()
    with pytest.raises(FamilyError, match="unimodel"):
        run_benchmark(tmp_path, TASKS, ["unimodal", "unimodel"], [0], tmp_path / "r", _training_args(tmp_path),
                      train_fn=fake, progress=False)
    with pytest.raises(FamilyError, match="unknown variant"):
        run_benchmark(tmp_path, TASKS, ["multimodal+nosuch"], [0], tmp_path / "r", _training_args(tmp_path),
                      train_fn=fake, progress=False)
    assert not fake.calls


def test_finished_runs_are_reused_when_asked(tmp_path):
    report = tmp_path / "report"
    first = FakeTrain()
    run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 1], report, _training_args(tmp_path),
                  train_fn=first, progress=False)
    (plan,) = plan_runs("unimodal", ["brain_tumor"])
    done = report / "runs" / "unimodal" / plan.name / "seed1"
    done.mkdir(parents=True, exist_ok=True)
    (done / "metrics_long.json").write_text(json.dumps([
        {"task": "brain_tumor", "split": "test", "label": None, "metric": "accuracy", "value": 0.25, "n": 4,
         "ci_low": 0.0, "ci_high": 0.5}]))
    # a run stopped after its metrics_long.json and before its run_info.json (written after it) is not finished
    # (before, sweep H4: kept as finished, its run_info.json never written)
    stopped = FakeTrain()
    run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 1], report, _training_args(tmp_path),
                  train_fn=stopped, progress=False, reuse_finished_runs=True)
    assert [targs.seed for _, targs in stopped.calls] == [0, 1]
    (done / "metrics_long.json").write_text(json.dumps([
        {"task": "brain_tumor", "split": "test", "label": None, "metric": "accuracy", "value": 0.25, "n": 4,
         "ci_low": 0.0, "ci_high": 0.5}]))
    (done / "run_info.json").write_text("{}")
    again = FakeTrain()
    records, _ = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 1], report,
                               _training_args(tmp_path), train_fn=again, progress=False, reuse_finished_runs=True)
    assert [targs.seed for _, targs in again.calls] == [0]
    assert [r["value"] for r in records if r["seed"] == 1] == [0.25]


def test_arguments_take_each_family_defaults_unless_given():
    argv = ["--data", "d", "--tasks", "brain_tumor", "--families", "domain_specific", "unimodal",
            "--seeds", "3", "--encoders", "hub", "--output_dir", "rep", "--max_train_samples", "8"]
    bench, run_args, per_run = _parse(argv)
    assert bench.seeds == [3] and bench.families == ["domain_specific", "unimodal"]
    assert run_args.max_train_samples == 8 and per_run.output_dir == Path("rep")
    from multimed_hf.training.arguments import training_defaults
    from multimed_hf.training.families import RunPlan

    def plan(family, task, modality):
        return RunPlan(f"{task}-{modality}", family, (task,), {task: (modality,)})

    plans = [plan("domain_specific", "brain_tumor", "mri"), plan("unimodal", "brain_tumor", "mri"),
             plan("unimodal", "cell_type", "scrna")]
    for p in plans:
        targs = per_run(p)
        assert targs.learning_rate == training_defaults(p.family, "hub", p.read_modalities)["learning_rate"]
        assert targs.output_dir == "rep"
    assert per_run(plans[0]).learning_rate != per_run(plans[1]).learning_rate
    # a hub run reading only a modality without pretrained weights (scRNA-seq) trains as from scratch
    assert per_run(plans[2]).num_train_epochs == per_run(plans[0]).num_train_epochs
    assert per_run(plans[2]).num_train_epochs != per_run(plans[1]).num_train_epochs
    _, _, given = _parse([*argv, "--learning_rate", "0.02", "--num_train_epochs", "2"])
    assert {(given(p).learning_rate, given(p).num_train_epochs) for p in plans} == {(0.02, 2)}
    with pytest.raises(BenchmarkError, match="--family picks one run"):
        _parse([*argv, "--family", "unimodal"])


def test_a_familys_defaults_do_not_depend_on_the_families_listed_before_it():
    # before: the parser's set_defaults kept what an earlier family set: with --encoders small, domain_specific
    # listed after unimodal trained with the small encoders' label smoothing 0.05 (and not first: 0.0)
    from multimed_hf.training.families import RunPlan

    mri = {"brain_tumor": ("mri",)}
    small, domain = (RunPlan("brain_tumor-mri", f, ("brain_tumor",), mri) for f in ("unimodal", "domain_specific"))
    argv = ["--data", "d", "--tasks", "brain_tumor", "--encoders", "small", "--output_dir", "rep"]
    first = _parse([*argv, "--families", "domain_specific", "unimodal"])[2]
    after = _parse([*argv, "--families", "unimodal", "domain_specific"])[2]
    assert after(small).label_smoothing_factor == first(small).label_smoothing_factor == 0.05
    assert after(domain).label_smoothing_factor == first(domain).label_smoothing_factor == 0.0
    assert after(domain).weight_decay == first(domain).weight_decay == 0.01


def test_built_tasks_need_a_built_folder(tmp_path):
    with pytest.raises(BenchmarkError, match="holds no built config"):
        built_tasks(tmp_path)
    (tmp_path / "cell_type").mkdir()
    (tmp_path / "cell_type" / "build_info.json").write_text("{}")
    (tmp_path / "brain_tumor").mkdir()
    (tmp_path / "brain_tumor" / "build_info.json").write_text("{}")
    assert built_tasks(tmp_path) == ["brain_tumor", "cell_type"]  # registry order


def test_synthetic_data_is_labelled(tmp_path):
    info = {"sources": [{"name": "brain_tumor_mri", "provenance": {"synthetic": True, "description": "not real MRI"}}]}
    (tmp_path / "brain_tumor").mkdir()
    (tmp_path / "brain_tumor" / "build_info.json").write_text(json.dumps(info))
    note = benchmark.data_note(tmp_path, ["brain_tumor"])
    assert note.startswith(benchmark.SMOKE_NOTE) and "not real MRI" in note
    info["sources"][0]["provenance"] = {}
    (tmp_path / "brain_tumor" / "build_info.json").write_text(json.dumps(info))
    assert benchmark.data_note(tmp_path, ["brain_tumor"]) is None


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    tmp = tmp_path_factory.mktemp("bench")
    source = sample_generators()["Brain-Tumor-MRI-Dataset"](tmp / "bt")
    build_dataset("brain_tumor", [source], tmp / "multimed", progress=False)
    return tmp / "multimed"


def test_benchmark_command_on_the_bundled_samples(built, tmp_path, capsys):
    report = tmp_path / "report"
    code = benchmark.benchmark_main([
        "--data", str(built), "--tasks", "all", "--families", "unimodal", "multimodal", "--seeds", "0", "1",
        "--encoders", "small", "--output_dir", str(report), "--use_cpu", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--max_train_samples", "8", "--max_eval_samples", "8",
        "--eval_strategy", "no", "--save_strategy", "no", "--bootstrap_samples", "5", "--eval_splits", "test",
        "--disable_tqdm", "true",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert benchmark.SMOKE_NOTE in printed and "| family |" in printed
    frame = pd.read_csv(report / "table1.csv")
    assert frame["error"].isna().all(), frame["error"].dropna().tolist()
    head = frame[(frame["metric"] == "accuracy") & (frame["split"] == "test")]
    assert sorted(head["seed"]) == [0, 1] and set(head["family"]) == {"unimodal"}
    assert head["value"].between(0, 1).all() and (head["n"] > 0).all()
    assert head["paper_value"].notna().all()
    for seed in (0, 1):
        run = report / "runs" / "unimodal" / "brain_tumor-mri" / f"seed{seed}"
        assert json.loads((run / "run_info.json").read_text())["seed"] == seed
        assert (run / "predictions" / "brain_tumor-test.parquet").is_file()
    markdown = (report / "table1.md").read_text()
    assert SAME_AS_UNIMODAL in markdown  # brain_tumor reads one modality: no multimodal run
    assert (report / "table1.png").stat().st_size > 0


def test_report_says_how_the_numbers_were_made(tmp_path):
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal", "multimodal"], [0],
                             tmp_path / "report", _training_args(tmp_path), train_fn=FakeTrain("unimodal"),
                             progress=False)
    text = paths.markdown.read_text()
    settings = text.split("## Data and settings")[1]
    assert "runs: 1 trained (1 failed)" in settings
    assert "unimodal: encoders small, max_steps 1, learning rate 5e-05" in settings
    assert "> **" not in text  # not synthetic data: no smoke banner


def test_report_sets_the_logistic_regression_beside_cell_type(tmp_path, monkeypatch):
    from benchmarks.pbmc68k_vs_logistic import build_pbmc68k
    from multimed_hf.training.baselines import logistic_regression_baseline

    data = build_pbmc68k(tmp_path / "pbmc")  # scanpy's real pbmc68k_reduced cells alone
    _, paths = run_benchmark(data, ["cell_type"], ["unimodal"], [0, 1], tmp_path / "report",
                             _training_args(tmp_path), train_fn=FakeTrain(), progress=False)
    settings = paths.markdown.read_text().split("## Data and settings")[1]
    base = logistic_regression_baseline(data, "cell_type")
    assert (f"cell_type: scikit-learn logistic regression (C=1) on the same {base.n_train} training rows and "
            f"{base.num_features} genes: test accuracy {base.accuracy:.2%} on {base.n_test} rows; ours: unimodal "
            f"55.00% (mean of 2)") in " ".join(settings.split())  # FakeTrain: 0.5 and 0.6 at seeds 0 and 1
    # fitted and scored on the rows the runs had (--max_train_samples / --max_eval_samples: the first N)
    _, paths = run_benchmark(data, ["cell_type"], ["unimodal"], [0], tmp_path / "capped", _training_args(tmp_path),
                             run_options={"max_train_samples": 100, "max_eval_samples": 50}, train_fn=FakeTrain(),
                             progress=False)
    capped = " ".join(paths.markdown.read_text().split())
    assert f"on the same 100 training rows and {base.num_features} genes: test accuracy" in capped
    assert "on 50 rows; ours: unimodal 50.00% (mean of 1)" in capped
    # too many training rows, or streamed data: not fitted, and said
    monkeypatch.setattr(benchmark, "BASELINE_MAX_ROWS", 99)
    _, paths = run_benchmark(data, ["cell_type"], ["unimodal"], [0], tmp_path / "large", _training_args(tmp_path),
                             run_options={"max_train_samples": 100}, train_fn=FakeTrain(), progress=False)
    assert "not fitted: 100 training rows, above its limit of 99" in paths.markdown.read_text()
    lines = benchmark._baseline_lines(data, ["cell_type"], [], streaming=True)
    assert lines == ["cell_type: logistic regression baseline not fitted: the data is streamed (the baseline reads "
                     "the training split whole)"]
    # no data to fit it on: said, and the table is written all the same
    _, paths = run_benchmark(tmp_path / "no-data", ["cell_type"], ["unimodal"], [0], tmp_path / "report2",
                             _training_args(tmp_path), train_fn=FakeTrain(), progress=False)
    assert "cell_type: logistic regression baseline not fitted:" in paths.markdown.read_text()
    # a benchmark without cell_type: no baseline line
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0], tmp_path / "report3",
                             _training_args(tmp_path), train_fn=FakeTrain(), progress=False)
    assert "logistic regression" not in paths.markdown.read_text()


def test_each_run_gets_the_defaults_of_the_modalities_it_reads(tmp_path):
    """Under `--encoders hub`, brain_tumor's MRI has pretrained weights (fine-tuning defaults) while cell_type's
    scRNA-seq encoder is random-init (from-scratch defaults): one family, two settings, each run its own."""
    fake = FakeTrain()
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor", "cell_type"], ["unimodal"], [0],
                             tmp_path / "report", encoders="hub", train_fn=fake, progress=False)
    got = {args.plan: (targs.num_train_epochs, targs.learning_rate) for args, targs in fake.calls}
    assert got == {"brain_tumor-mri": (5, 1e-4), "cell_type-scrna": (40, 1e-3)}
    settings = paths.markdown.read_text().split("## Data and settings")[1]
    assert "unimodal: encoders hub, 5 epochs, learning rate 0.0001, batch 32 (brain_tumor-mri)" in settings
    assert "unimodal: encoders hub, 40 epochs, learning rate 0.001, batch 32 (cell_type-scrna)" in settings


def test_an_earlier_benchmarks_runs_are_not_trained_over_in_silence(tmp_path):
    # before: a second benchmark into the same report retrained every run over the first one's results and
    # checkpoints, exit 0, where `multimed train` refuses a folder with checkpoints
    report = tmp_path / "report"
    run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 1], report, _training_args(tmp_path),
                  train_fn=FakeTrain(), progress=False)
    (plan,) = plan_runs("unimodal", ["brain_tumor"])
    seed0, seed1 = (report / "runs" / "unimodal" / plan.name / f"seed{k}" for k in (0, 1))
    (seed0 / "metrics_long.json").write_text(json.dumps([
        {"task": "brain_tumor", "split": "test", "label": None, "metric": "accuracy", "value": 0.5, "n": 4,
         "ci_low": 0.0, "ci_high": 1.0}]))
    (seed0 / "run_info.json").write_text("{}")
    (seed1 / "checkpoint-3").mkdir()
    (seed1 / "checkpoint-3" / "trainer_state.json").write_text("{}")
    again = FakeTrain()
    with pytest.raises(BenchmarkError, match=r"holds 2 run\(s\) of an earlier benchmark, first .*seed0 \(finished\)"
                                             r".*--reuse_finished_runs"):
        run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 1], report, _training_args(tmp_path),
                      train_fn=again, progress=False)
    assert not again.calls
    # kept where finished, resumed from its own last checkpoint where stopped halfway
    run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 1], report, _training_args(tmp_path),
                  train_fn=again, progress=False, reuse_finished_runs=True)
    resumed = [(targs.seed, targs.resume_from_checkpoint) for _, targs in again.calls]
    assert resumed == [(1, str(seed1 / "checkpoint-3"))]
    with pytest.raises(BenchmarkError, match="--resume_from_checkpoint names one run's checkpoint"):
        _parse(["--data", "d", "--tasks", "brain_tumor", "--output_dir", "r", "--resume_from_checkpoint", "true"])


def test_a_grid_that_leaves_out_an_earlier_benchmarks_runs_is_refused(tmp_path):
    # before: adding seeds (or tasks) into the same report was not refused, and table1.csv/.md/.png were written
    # from the new runs alone: 178 lines became 5, the earlier runs left out of every table, silently
    report = tmp_path / "report"
    (plan,) = plan_runs("unimodal", ["brain_tumor"])
    seed0 = report / "runs" / "unimodal" / plan.name / "seed0"
    seed0.mkdir(parents=True)
    (seed0 / "metrics_long.json").write_text(json.dumps([
        {"task": "brain_tumor", "split": "test", "label": None, "metric": "accuracy", "value": 0.5, "n": 4,
         "ci_low": 0.0, "ci_high": 1.0}]))
    (seed0 / "run_info.json").write_text("{}")
    again = FakeTrain()
    for reuse in (False, True):
        with pytest.raises(BenchmarkError, match=r"holds 1 run\(s\) of an earlier benchmark that this grid leaves "
                                                 r"out, first .*seed0"):
            run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [7], report,
                          _training_args(tmp_path), train_fn=again, progress=False, reuse_finished_runs=reuse)
    assert not again.calls
    # the earlier grid named too: its run kept, the new seed trained, both in the table
    records, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0, 7], report,
                                   _training_args(tmp_path), train_fn=again, progress=False, reuse_finished_runs=True)
    assert [targs.seed for _, targs in again.calls] == [7]
    assert set(pd.read_csv(paths.csv)["seed"]) == {0, 7}


def test_only_the_main_process_writes_the_report_and_the_runs_files(tmp_path, monkeypatch):
    # before: under torchrun every process wrote table1.csv/.md/.png, each run's stdout.txt and error.txt, over
    # each other's
    monkeypatch.setenv("RANK", "1")
    fake = FakeTrain(fail_family="unimodal")
    records, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal", "domain_specific"], [0],
                                   tmp_path / "report", _training_args(tmp_path), train_fn=fake, progress=False)
    assert len(fake.calls) == 2 and records  # it trains every run, as the main process does
    assert paths.csv == tmp_path / "report" / "table1.csv" and not paths.csv.exists() and not paths.figure.exists()
    assert not list((tmp_path / "report").rglob("stdout.txt")) and not list((tmp_path / "report").rglob("error.txt"))
    monkeypatch.setenv("RANK", "0")
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal", "domain_specific"], [0],
                             tmp_path / "report0", _training_args(tmp_path), train_fn=FakeTrain(fail_family="unimodal"),
                             progress=False)
    assert paths.csv.is_file() and len(list((tmp_path / "report0").rglob("error.txt"))) == 1


@pytest.mark.parametrize("flags, match", [
    # before: only the underscore spelling was refused; the others were accepted and ignored (every run from scratch)
    (["--resume-from-checkpoint", "x"], "--resume_from_checkpoint names one run's checkpoint"),
    (["--resume_from", "x"], "--resume_from_checkpoint names one run's checkpoint"),
    (["--list-plans"], "--list_plans picks one run"),
    (["--family", "unimodal"], "--family picks one run"),
    # before (sweep C5): every run of a seed pushed into one repository named seed<k>, each over the one before
    (["--push_to_hub"], r"--push_to_hub: the benchmark trains every run of the grid"),
    (["--hub_model_id", "me/bench"], r"--hub_model_id: the benchmark trains every run of the grid"),
])
def test_single_run_flags_are_refused_in_every_spelling(flags, match):
    with pytest.raises(BenchmarkError, match=match):
        _parse(["--data", "d", "--tasks", "brain_tumor", "--output_dir", "r", *flags])


def test_a_run_that_scores_nothing_is_named(tmp_path):
    # before: a unimodal med_vqa-mri run whose test split held no MRI question trained, scored nothing and was left
    # out of every table without a word ("runs: 50 trained (0 failed)")
    plans = plan_runs("unimodal", ["med_vqa"])
    names = [p.name for p in plans]
    assert "med_vqa-mri" in names
    records, paths = run_benchmark(tmp_path / "no-data", ["med_vqa"], ["unimodal"], [0], tmp_path / "report",
                                   _training_args(tmp_path), train_fn=FakeTrain(unscored_plan="med_vqa-mri"),
                                   progress=False, note="")
    text = paths.markdown.read_text()
    assert "scored nothing (no evaluated row holds what they read), in no table: unimodal med_vqa-mri seed 0" in text


def test_reused_runs_must_have_been_made_as_this_command_makes_them(tmp_path):
    # before: --reuse_finished_runs kept any finished run: one trained at max_steps 1 entered a table whose settings
    # lines said max_steps 3, and adding a task kept the multitask folder `all` of fewer tasks without training it
    from transformers import TrainingArguments

    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset

    data = tmp_path / "multimed"
    build_dataset("cell_type", [sample_generators()["pbmc68k_reduced"](tmp_path / "pbmc")], data, progress=False)

    def args(max_steps):
        return TrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none", max_steps=max_steps,
                                 per_device_train_batch_size=16, eval_strategy="no", save_strategy="no",
                                 disable_tqdm=True, use_cpu=True)

    report = tmp_path / "report"
    options = {"bootstrap_samples": 0, "max_eval_samples": 16}
    first, _ = run_benchmark(data, ["cell_type"], ["unimodal"], [0], report, args(1), encoders="small",
                             run_options=options, progress=False)
    again, _ = run_benchmark(data, ["cell_type"], ["unimodal"], [0], report, args(1), encoders="small",
                             run_options=options, progress=False, reuse_finished_runs=True)  # made alike: kept
    assert [r["value"] for r in again] == [r["value"] for r in first]
    with pytest.raises(BenchmarkError, match=r"made otherwise than this command makes them, first .*seed0: "
                                             r"--max_steps 1 \(now 3\)"):
        run_benchmark(data, ["cell_type"], ["unimodal"], [0], report, args(3), encoders="small",
                      run_options=options, progress=False, reuse_finished_runs=True)
    with pytest.raises(BenchmarkError, match=r"--max_eval_samples 16 \(now 8\)"):
        run_benchmark(data, ["cell_type"], ["unimodal"], [0], report, args(1), encoders="small",
                      run_options={**options, "max_eval_samples": 8}, progress=False, reuse_finished_runs=True)


def test_a_runs_own_label_smoothing_is_not_a_difference(tmp_path):
    # before: --reuse_finished_runs refused the very command that made the runs: a run without a single-label class
    # output (disease, expression, protein) trains and records label smoothing 0.0 under --encoders small's 0.05
    import torch
    from transformers import TrainingArguments

    from multimed_hf.training.arguments import MultiMedArguments
    from multimed_hf.training.benchmark import _recorded_differences, _Run
    from multimed_hf.training.families import RunPlan

    plan = RunPlan("protein_structure-protein", "unimodal", ("protein_structure",),
                   {"protein_structure": ("protein",)})
    run = _Run(plan, 0, tmp_path / "run")
    run.output_dir.mkdir()

    def targs(**kw):
        return TrainingArguments(output_dir=str(run.output_dir), report_to="none", use_cpu=True, **kw)

    torch.save(targs(label_smoothing_factor=0.0, max_steps=2), run.output_dir / "training_args.bin")
    args = MultiMedArguments(data="d", tasks=["protein_structure"], family="unimodal", encoders="small")
    assert _recorded_differences(run, args, targs(label_smoothing_factor=0.05, max_steps=2)) == []
    assert _recorded_differences(run, args, targs(label_smoothing_factor=0.05, max_steps=3)) == [
        "--max_steps 2 (now 3)"]
    # a run trained by two processes (twice the rows a step) is not one of this one-process command
    (run.output_dir / "run_info.json").write_text(json.dumps({"world_size": 2}))
    assert _recorded_differences(run, args, targs(max_steps=2)) == ["2 process(es) (now 1)"]


def test_a_class_runs_label_smoothing_is_compared(tmp_path):
    # before: label smoothing was compared for no run: a brain_tumor run trained at 0.05 was kept by a command
    # asking 0.3, and the table rewritten under the new command
    import torch
    from transformers import TrainingArguments

    from multimed_hf.training.arguments import MultiMedArguments
    from multimed_hf.training.benchmark import _recorded_differences, _Run
    from multimed_hf.training.families import RunPlan
    from training_tiny import tiny_model

    run = _Run(RunPlan("brain_tumor-mri", "unimodal", ("brain_tumor",), {"brain_tumor": ("mri",)}), 0,
               tmp_path / "run")
    tiny_model(["brain_tumor"]).config.save_pretrained(run.output_dir)  # a single-label class head: smoothed

    def targs(**kw):
        return TrainingArguments(output_dir=str(run.output_dir), report_to="none", use_cpu=True, max_steps=2, **kw)

    args = MultiMedArguments(data="d", tasks=["brain_tumor"], family="unimodal", encoders="small")
    for then, now in ((0.05, 0.3), (0.0, 0.05)):
        torch.save(targs(label_smoothing_factor=then), run.output_dir / "training_args.bin")
        assert _recorded_differences(run, args, targs(label_smoothing_factor=now)) == [
            f"--label_smoothing_factor {then!r} (now {now!r})"]
    assert _recorded_differences(run, args, targs(label_smoothing_factor=0.0)) == []


def test_the_settings_say_the_rows_of_one_step_with_accumulation_and_processes(tmp_path):
    # before: "batch 8" alone, though each optimiser step read 8 x 4 accumulated (x the processes under torchrun)
    from transformers import TrainingArguments

    from multimed_hf.training.benchmark import batch_description

    args = TrainingArguments(output_dir=str(tmp_path / "unused"), report_to="none", max_steps=1,
                             per_device_train_batch_size=8, gradient_accumulation_steps=4)
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0], tmp_path / "report", args,
                             train_fn=FakeTrain(), progress=False)
    assert "batch 8 per device x 4 accumulated = 32 a step" in paths.markdown.read_text()
    # --task_batch_sizes said beside it (before: "batch 8" for runs reading 4 rows a batch)
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0], tmp_path / "report2", args,
                             train_fn=FakeTrain(), progress=False, run_options={"task_batch_sizes": {"brain_tumor": 4}})
    assert "= 32 a step (brain_tumor: 4 rows a batch per device)" in paths.markdown.read_text()
    # the flag's JSON string, as the runs take it (before: every run trained, then the table crashed on it)
    _, paths = run_benchmark(tmp_path / "no-data", ["brain_tumor"], ["unimodal"], [0], tmp_path / "report3", args,
                             train_fn=FakeTrain(), progress=False,
                             run_options={"task_batch_sizes": '{"brain_tumor": 4}'})
    assert "= 32 a step (brain_tumor: 4 rows a batch per device)" in paths.markdown.read_text()
    two = SimpleNamespace(per_device_train_batch_size=8, world_size=2, gradient_accumulation_steps=1)
    assert batch_description(two) == "batch 8 per device x 2 processes = 16 a step"
    one = SimpleNamespace(per_device_train_batch_size=8, world_size=1, gradient_accumulation_steps=1)
    assert batch_description(one) == (
        "batch 8")
