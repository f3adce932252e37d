"""Sweep J4's federation findings: an interrupt stops a simulation within seconds and keeps what it completed (F1);
a task from a site already placed is not refused under ``--by source`` (F2); a partial client's left-out rows are
counted (F3); a re-run replaces an earlier run's strategy folders (F4); run_info.json records Flower's and Ray's
versions and absolute paths (F5).

Most tests run ``run_federation`` in this process with Flower's ``run_simulation`` replaced by a stand-in (no Ray):
a strategy either completes at once, or its real ServerApp runs in a thread of its own, as Flower runs it, against
clients that never reply, and the stand-in then raises the interrupt Flower's main thread would. One test sends a
real SIGINT to ``multimed federate`` (a subprocess, under a hang guard).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from importlib.metadata import version

import numpy as np
import pytest

from multimed_hf.federated.partition import FederationPlan, PartitionError, partition_config

from _federated_helpers import TINY, clients_root

TASK = "expression_prediction"
GUARD_SECONDS = 300


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """The expression sample built as ``multimed/`` (and a clients file: a clinic holding scRNA-seq only)."""
    clients = (f"data: multimed\nclients:\n  - name: clinic\n    tasks:\n      {TASK}: {{modalities: [scrna]}}\n"
               f"  - name: lab\n    tasks:\n      {TASK}: {{}}\n")
    return clients_root(tmp_path_factory.mktemp("fed_fixes_s"), clients)


class _SilentGrid:
    """Two connected clients that never reply (Flower's simulation after its engine stopped)."""

    pull_interval = 0.05

    def get_node_ids(self):
        return [1, 2]

    def push_messages(self, messages):
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids):
        return []

    def send_and_receive(self, messages, *, timeout=None):  # as InMemoryGrid's: waits out the timeout
        end = time.time() + timeout
        while time.time() < end:
            time.sleep(self.pull_interval)
        return []


class _Simulation:
    """Stands in for ``flwr.simulation.run_simulation``: the strategies in ``complete`` finish at once (two rounds
    of central metrics, the initial weights as the final ones); any other runs its ServerApp in a thread against
    ``_SilentGrid`` and, once the rounds wait for the clients, raises ``interrupt``."""

    def __init__(self, out, complete, interrupt=KeyboardInterrupt()):
        self.out, self.complete, self.interrupt = out, set(complete), interrupt
        self.threads, self.errors, self.raised_at = [], [], None

    def _serve(self, server_app):
        try:
            server_app(_SilentGrid(), None)
        except Exception as err:  # what Flower's thread puts in its exception queue
            self.errors.append(err)

    def __call__(self, server_app, client_app, num_supernodes, backend_config):
        from multimed_hf.federated.modules import record_from_state
        from multimed_hf.modeling_multimed import MultiMedModel

        report = server_app.report
        if report.strategy in self.complete:
            for round_, loss in enumerate((2.0, 1.5, 1.0)):
                report.add_global(round_, "central", {"val-loss": loss})
            initial = MultiMedModel.from_pretrained(self.out / "federation" / "initial")
            report.final_arrays = record_from_state(initial.state_dict())
            return
        thread = threading.Thread(target=self._serve, args=(server_app,), daemon=True)
        thread.start()
        self.threads.append(thread)
        deadline = time.monotonic() + 120
        while not report.audit and thread.is_alive() and time.monotonic() < deadline:  # a request logged: the rounds wait for replies
            time.sleep(0.05)
        assert report.audit, "the ServerApp never sent its first request"
        self.raised_at = time.monotonic()
        raise self.interrupt


def _federate(monkeypatch, data, out, simulation, **kwargs):
    import flwr.simulation
    from flwr.supercore.task_identity import TaskIdentity

    from multimed_hf.federated.simulation import run_federation

    monkeypatch.setattr(flwr.simulation, "run_simulation", simulation)
    for key, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):  # as run_simulation sets them
        monkeypatch.setattr(TaskIdentity, key, value)
    options = dict(partition="paired=1,partial=1", rounds=2, strategy="fedavg", compare=("fedprox",),
                   local_steps=2, assemble_kwargs=TINY, timeout=600.0)
    return run_federation(data, [TASK], out, **{**options, **kwargs})


# F1 -----------------------------------------------------------------------------------------------------------------

def test_a_wait_for_clients_stops_within_a_second_once_told(monkeypatch):
    # before: _Exchange waited in grid.send_and_receive until its timeout (600 s by default), whatever happened
    import multimed_hf.federated.server_app as server_app
    from multimed_hf.federated.report import FederationReport
    from multimed_hf.federated.server_app import FederationInterrupted, _Exchange, _wait_for_nodes

    monkeypatch.setattr(server_app, "payload_bytes", lambda content: 0)
    monkeypatch.setattr(server_app, "describe_message", lambda content: {})
    stop = threading.Event()
    exchange = _Exchange(_SilentGrid(), 600, FederationReport("fedavg"), stop)
    message = type("M", (), {"metadata": type("D", (), {"dst_node_id": 1, "message_type": "train"})(),
                             "content": {}})()
    threading.Timer(0.5, stop.set).start()
    start = time.monotonic()
    with pytest.raises(FederationInterrupted, match=r"round 1, train: stopped \(interrupted\) while waiting for 1 "
                                                    r"of 1 clients"):
        exchange([message], 1, "train")
    assert time.monotonic() - start < 5
    empty = type("G", (), {"get_node_ids": lambda self: []})()
    with pytest.raises(FederationInterrupted, match="before the rounds began"):
        _wait_for_nodes(empty, 2, 600, stop)


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt(), SystemExit(15)], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_federation_keeps_what_it_completed_and_reraises(root, tmp_path, monkeypatch, caplog,
                                                                        interrupt):
    # before: the interrupt left the ServerApp thread waiting up to --timeout (the process could not exit), the
    # interrupted strategy's completed rounds were not saved, and no convergence.png was written at all
    out = tmp_path / "out"
    simulation = _Simulation(out, complete={"fedavg"}, interrupt=interrupt)
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.simulation"):
        with pytest.raises(type(interrupt)):
            _federate(monkeypatch, root / "multimed", out, simulation)
    (thread,) = simulation.threads
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - simulation.raised_at < 15  # 600 s before
    assert [type(e).__name__ for e in simulation.errors] == ["FederationInterrupted"]
    assert (out / "fedavg" / "model" / "config.json").is_file()
    assert (out / "convergence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "fedprox" / "report.json").read_text())
    how = "Ctrl-C" if isinstance(interrupt, KeyboardInterrupt) else "SystemExit(15)"
    assert saved["error"].startswith(f"interrupted ({how}") and "0 completed round(s)" in saved["error"]
    assert [g["round"] for g in saved["global"]] == [0]  # the initial model's central check, done before it waited
    assert not (out / "fedprox" / "model").exists()
    said = [r.getMessage() for r in caplog.records if "interrupted" in r.getMessage()]
    assert len(said) == 1 and f"kept in {out}: fedavg/ complete; fedprox/ with 0 completed round(s) in " \
                               "report.json (no model); convergence.png of fedavg" in said[0]


def test_federate_says_interrupted_and_exits_130(root, tmp_path, monkeypatch, capsys):
    # before: a KeyboardInterrupt traceback out of federate_main
    import multimed_hf.federated.simulation as simulation

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(simulation, "run_federation", interrupted)
    argv = ["--data", str(root / "multimed"), "--tasks", TASK, "--output-dir", str(tmp_path / "out")]
    try:
        rc = simulation.federate_main(argv)
    except KeyboardInterrupt:  # (would end pytest's session)
        pytest.fail("federate_main let the KeyboardInterrupt out")
    assert rc == 130
    assert capsys.readouterr().err.strip() == "multimed federate: interrupted"


def test_ctrl_c_ends_multimed_federate_within_seconds(root, tmp_path):
    """A real SIGINT while the second strategy's rounds run (before: the process lived on until --timeout)."""
    pytest.importorskip("ray", reason="Flower's simulation engine needs flwr[simulation] (ray)")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "multimed_hf.cli", "federate", "--data", str(root / "multimed"), "--tasks", TASK,
           "--partition", "paired=1,partial=1", "--rounds", "2", "--local-steps", "2", "--compare", "fedavg",
           "--output-dir", str(out), "--assemble", json.dumps(TINY)]  # the default --timeout, 600 s
    log = tmp_path / "log.txt"
    with log.open("w") as handle:  # SIGINT at its default in the child (a background job's may be ignored)
        proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + GUARD_SECONDS
        while time.monotonic() < deadline and proc.poll() is None:  # fedavg's first round has begun
            text = log.read_text(errors="replace")
            if (out / "fedavg" / "run_info.json").is_file() and text.count("configure_train") >= 3:
                break
            time.sleep(0.2)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(1)
        os.kill(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        rc = proc.wait(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = log.read_text(errors="replace")
    assert rc == 130 and took < 30, (rc, took, text[-3000:])
    assert "multimed federate: interrupted" in text and f"kept in {out}: blendavg/ complete; fedavg/ with " in text
    assert (out / "blendavg" / "model" / "config.json").is_file() and (out / "convergence.png").is_file()
    assert json.loads((out / "fedavg" / "report.json").read_text())["error"].startswith("interrupted (Ctrl-C)")


# F2 -----------------------------------------------------------------------------------------------------------------

def _site_rows(sources, prefix, per_source=4):
    """Image-task-like rows: ``per_source`` patients at each of ``sources``."""
    from datasets import Dataset

    rows = [(s, f"{prefix}{s}-{i}") for s in sources for i in range(per_source)]
    return Dataset.from_dict({"source": [s for s, _ in rows], "group_id": [p for _, p in rows],
                              "sample_id": [p for _, p in rows], "modality": ["mri"] * len(rows),
                              "tumor": [i % 2 for i in range(len(rows))]})


@pytest.mark.parametrize("order", [["disease", "brain_tumor"], ["brain_tumor", "disease"]])
def test_a_task_from_one_site_already_placed_is_not_refused(tmp_path, caplog, order):
    # before: "task 'brain_tumor', split 'train': 1 distinct 'source' values for 3 clients", though its one site
    # is one of disease's and stays at the client holding it
    sites = [f"site{i}" for i in range(6)]
    datasets = {"disease": {"train": _site_rows(sites, "d"), "validation": _site_rows(sites, "dv", 1)},
                "brain_tumor": {"train": _site_rows(["site0"], "b"), "validation": _site_rows(["site0"], "bv", 2)}}
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.partition"):
        plan = partition_config("unused", order, "paired=3", tmp_path / "fed", by="source", datasets=datasets)
    rows = {c.name: c.rows for c in plan.clients}
    holder = [n for n, r in rows.items() if r["brain_tumor"]["train"]]
    assert len(holder) == 1 and rows[holder[0]]["brain_tumor"] == {"train": 4, "validation": 2}
    assert all(r["disease"]["train"] > 0 for r in rows.values())
    assert sum(r["disease"]["train"] for r in rows.values()) == 24
    others = [n for n in rows if n not in holder]
    assert all(f"{n}: brain_tumor train" in caplog.text for n in others) and "hold no row" in caplog.text


def test_a_validation_split_with_fewer_patients_than_clients_is_warned_not_refused(tmp_path, caplog):
    # before: refused ("2 distinct 'group_id' values for 3 clients"), as med_vqa's validation split was
    datasets = {"brain_tumor": {"train": _site_rows(["a"], "t", 12), "validation": _site_rows(["a"], "v", 2)}}
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.partition"):
        plan = partition_config("unused", ["brain_tumor"], "paired=3", tmp_path / "fed", datasets=datasets)
    assert [c.rows["brain_tumor"]["train"] for c in plan.clients] == [4, 4, 4]
    assert sorted(c.rows["brain_tumor"]["validation"] for c in plan.clients) == [0, 1, 1]
    assert "brain_tumor validation" in caplog.text and "hold no row" in caplog.text


def test_a_client_left_without_any_training_row_is_refused_before_anything_is_written(tmp_path):
    datasets = {"brain_tumor": {"train": _site_rows(["a"], "t", 2), "validation": _site_rows(["a"], "v", 9)}}
    with pytest.raises(PartitionError, match=r"1 of 3 clients would hold no training row \(paired-2\): the tasks' "
                                             r"train splits hold 2 distinct 'group_id' values for 3 clients"):
        partition_config("unused", ["brain_tumor"], "paired=3", tmp_path / "fed", datasets=datasets)
    assert not (tmp_path / "fed" / "clients").exists()


# F3 -----------------------------------------------------------------------------------------------------------------

def test_a_partial_clients_left_out_rows_are_counted_and_said(root, tmp_path, caplog):
    # before: the rows holding only the modality a partial client never collected were dropped unsaid, and
    # federation.json counted only what was left
    from multimed_hf.training.loading import load_task_data

    datasets = load_task_data(root / "multimed", [TASK], splits=("train", "validation"))
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.partition"):
        plan = partition_config(root / "multimed", [TASK], "paired=1,partial=1", tmp_path / "fed",
                                drop={TASK: ["dna"]}, datasets=datasets)
    partial = FederationPlan.load(plan.root).clients[1]
    assert partial.modalities == {TASK: ["scrna"]}
    total = {split: sum(c.rows[TASK][split] for c in plan.clients) + partial.left_out[TASK][split]
             for split in ("train", "validation")}
    assert total == {split: len(datasets[TASK][split]) for split in total}  # every row counted somewhere
    assert partial.left_out[TASK]["train"] > 0  # the sample's rows without a profile (whole blood)
    assert plan.clients[0].left_out == {}
    lines = [r.getMessage() for r in caplog.records if "never collected" in r.getMessage()]
    n, kept = partial.left_out[TASK], partial.rows[TASK]
    assert len(lines) == 1 and lines[0].startswith(f"federation: {TASK}: rows holding only a modality their client "
                                                   "never collected are at no client")
    assert (f"partial-0 (never collected dna): train {n['train']} of {n['train'] + kept['train']}, validation "
            f"{n['validation']} of {n['validation'] + kept['validation']}") in lines[0]


def test_a_clients_file_clients_left_out_rows_are_counted_and_said(root, tmp_path, caplog):
    from datasets import load_dataset

    from multimed_hf.federated.clients_file import clients_from_file

    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.partition"):
        plan = clients_from_file(root / "clients.yaml", tmp_path / "fed")
    train = load_dataset(str(root / "multimed"), TASK, split="train")
    without = sum(p is None for p in train["profile_indices"])
    clinic, lab = FederationPlan.load(plan.root).clients
    assert 0 < without < len(train) and clinic.left_out[TASK]["train"] == without
    assert clinic.rows[TASK]["train"] == len(train) - without and lab.left_out == {TASK: {"train": 0,
                                                                                          "validation": 0}}
    assert f"clinic (never collected dna): train {without} of {len(train)}" in caplog.text
    assert "left out of those clients' folders (clients file)" in caplog.text


# F4 and F5 ----------------------------------------------------------------------------------------------------------

def test_a_rerun_replaces_an_earlier_runs_strategy_folders(root, tmp_path, monkeypatch, caplog):
    # before: fedprox/ of the first run (another plan's clients) stayed beside the second run's fedavg/
    out = tmp_path / "out"
    _federate(monkeypatch, root / "multimed", out, _Simulation(out, complete={"fedavg", "fedprox"}))
    assert (out / "fedprox" / "model").is_dir()
    with pytest.raises(PartitionError):  # a new plan that fails leaves the earlier run whole
        _federate(monkeypatch, root / "multimed", out, _Simulation(out, complete=()), partition="paired=500")
    assert (out / "fedprox" / "model").is_dir() and (out / "convergence.png").is_file()
    with caplog.at_level(logging.WARNING, logger="multimed_hf.federated.simulation"):
        _federate(monkeypatch, root / "multimed", out, _Simulation(out, complete={"fedavg"}), compare=(), seed=1)
    assert "replacing an earlier run's results" in caplog.text and "(fedavg, fedprox, convergence.png)" in caplog.text
    assert sorted(p.name for p in out.iterdir()) == ["convergence.png", "fedavg", "federation"]
    assert json.loads((out / "fedavg" / "run_info.json").read_text())["arguments"]["seed"] == 1


def test_run_info_records_flower_and_ray_and_absolute_paths(root, tmp_path, monkeypatch):
    # before: versions had no flwr / ray, and data, federation and out_dir read "multimed", "out/federation", "out"
    pytest.importorskip("ray")
    monkeypatch.chdir(root)
    out = tmp_path / "out"
    relative = os.path.relpath(out, root)
    _federate(monkeypatch, "multimed", relative, _Simulation(out, complete={"fedavg"}), compare=())
    info = json.loads((out / "fedavg" / "run_info.json").read_text())
    assert info["versions"]["flwr"] == version("flwr") and info["versions"]["ray"] == version("ray")
    assert info["versions"]["torch"]  # run_info's own versions are kept
    assert info["data"] == info["arguments"]["data"] == str((root / "multimed").resolve())
    assert info["federation"] == str((out / "federation").resolve())
    assert info["arguments"]["out_dir"] == str(out.resolve()) and info["arguments"]["clients"] is None
    assert np.isclose(info["settings"]["local"]["lr"], 1e-4)
