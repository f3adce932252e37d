"""A real Flower deployment on loopback: SuperLink + 2 SuperNodes + ``flwr run`` of the app ``export_app`` writes.

The processes are the ones a user starts, with the commands ``deploy.py`` writes into the app's README (the same
functions make both). A fragmented and a partial client (the partial one holds the fragmented one's patients' DNA),
two rounds of BlendAvg with one vertical step each, on the 120-gene expression sample with the tiny DNA settings
of tests/test_federated_simulation.py. No internet: telemetry and the update check are off, the SuperLink installs
no app dependencies. Every Flower process (and the processes it spawned) is ended in a ``finally``; the guard is a
timeout against hangs, not a speed assertion (the run took 6.5 min on 2 shared cores: each message a SuperNode
receives starts a fresh ``flwr-clientapp`` process that imports torch and loads the model).
"""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

from multimed_hf.federated.deploy import (
    OFFLINE_ENV, app_pyproject, connection_toml, export_app, flwr_run_command, superlink_command,
    supernode_command, write_flower_app,
)
from multimed_hf.federated.server_app import (
    RUN_CONFIG_DEFAULTS, RunConfigError, deployment_settings, read_run_config,
)

TASK = "expression_prediction"
GENES = 120
GUARD_SECONDS = 1500
TINY = {"processor_overrides": {"dna": {"max_length": 48, "truncation_side": "center", "crop_center": 7000}}}
CLIS = ("flower-superlink", "flower-supernode", "flwr")


def test_the_app_pyproject_is_a_valid_flower_app_naming_our_components(tmp_path):
    from flwr.cli.config_utils import load_and_validate

    exported = write_flower_app(tmp_path / "app", {"model-path": "/srv/initial", "num-rounds": 4},
                                clients={"a": "/data/a", "b": "/data/b"}, superlink_address="10.0.0.5:8000")
    config, _ = load_and_validate(tmp_path / "app" / "pyproject.toml", check_module=True)  # imports the apps
    flwr = config["tool"]["flwr"]["app"]
    assert flwr["components"] == {"serverapp": "multimed_hf.federated.server_app:app",
                                  "clientapp": "multimed_hf.federated.client_app:app"}
    assert flwr["config"]["num-rounds"] == 4 and flwr["config"]["model-path"] == "/srv/initial"
    assert set(flwr["config"]) == set(RUN_CONFIG_DEFAULTS) | {"model-path"}  # every key: --run-config can set any
    readme = (tmp_path / "app" / "README.md").read_text()
    assert "--host 0.0.0.0 --port 8000" in readme and "--superlink 10.0.0.5:8000 --port 9095" in readme
    assert "link-salt='${LINK_SALT}'" in readme and "data-path='/data/b'" in readme
    assert exported.commands["flwr"][:4] == ["flwr", "run", str(tmp_path / "app"), "multimed"]


def test_the_run_config_is_checked_before_a_run(tmp_path):
    assert read_run_config({"model-path": "m", "num-rounds": 2.0})["num-rounds"] == 2
    with pytest.raises(RunConfigError, match=r"\['num-round'\] are not read"):
        read_run_config({"model-path": "m", "num-round": 2})
    with pytest.raises(RunConfigError, match="no 'model-path'"):
        read_run_config({})
    with pytest.raises(RunConfigError, match="'local-steps' = 2.5: expected a whole number"):
        read_run_config({"model-path": "m", "local-steps": 2.5})
    with pytest.raises(RunConfigError, match="'evaluate-initial' = 'yes': expected true or false"):
        read_run_config({"model-path": "m", "evaluate-initial": "yes"})
    with pytest.raises(RunConfigError, match="are not read"):
        app_pyproject({"model-path": "m", "rounds": 3})
    with pytest.raises(ValueError, match="'fedsgd'"):
        app_pyproject({"model-path": "m", "strategy": "fedsgd"})


@pytest.mark.parametrize("name", ["blendavg", "fedavg", "fedprox"])
def test_the_proximal_term_is_fedprox_s_alone(name):
    strategy, local, vertical = deployment_settings(read_run_config({"model-path": "m", "strategy": name,
                                                                     "proximal-mu": 0.5, "vertical-steps": 3}))
    assert local.proximal_mu == 0.0  # the clients' local settings never carry it ...
    assert getattr(strategy, "proximal_mu", None) == (0.5 if name == "fedprox" else None)  # ... FedProx sends it
    assert (vertical.steps if vertical else None) == (3 if name == "blendavg" else None)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _wait_for_superlink(port, process, log, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"flower-superlink exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the SuperLink did not answer /health within {timeout} s:\n{log.read_text()[-3000:]}")


def _end(processes):
    """SIGTERM each started process and every process it spawned (by id), SIGKILL what is left after 30 s."""
    import psutil

    family = []
    for process in processes:
        try:
            parent = psutil.Process(process.pid)
            family += [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for p in family:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=30)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)
    for process in processes:
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    missing = [c for c in CLIS if shutil.which(c) is None]
    if missing:
        pytest.skip(f"the Flower CLIs {missing} are not installed (pip install \"multimed_hf[federated]\")")
    from dataset_scripts.sample_sources.tcga_promoters import FOLDER, make_tcga_promoters
    from multimed_hf.api import build_dataset

    tmp = tmp_path_factory.mktemp("fl_deploy")
    source = make_tcga_promoters(tmp / "src" / FOLDER, genes=GENES, bad_files=False)
    build_dataset(TASK, [source], tmp / "multimed", progress=False)
    link, *node_ports = _free_ports(3)
    address = f"127.0.0.1:{link}"
    exported = export_app(tmp / "app", tmp / "fl", data=tmp / "multimed", tasks=[TASK],
                          partition="fragmented=1,partial=1", assemble_kwargs=TINY, superlink_address=address,
                          connection="loopback",
                          run_config={"num-rounds": 2, "vertical-steps": 1, "score-key": "val-inv-loss",
                                      "timeout": 600.0})
    home = tmp / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(connection_toml("loopback", address))
    env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home)}
    logs, processes = tmp / "logs", []
    logs.mkdir()

    def start(name, command):
        handle = (logs / f"{name}.log").open("w")
        processes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=tmp))
        return processes[-1]

    try:
        superlink = start("superlink", superlink_command(host="127.0.0.1", port=link))
        _wait_for_superlink(link, superlink, logs / "superlink.log")
        for (client, folder), port in zip(exported.clients.items(), node_ports):
            start(client, supernode_command(address, data_path=folder, model_path=exported.run_config["model-path"],
                                            port=port, link_salt="a-secret-the-server-never-sees"))
        run = subprocess.run(flwr_run_command(exported.app_dir, "loopback"), capture_output=True, text=True, env=env,
                             cwd=tmp, timeout=GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not end within {GUARD_SECONDS} s (hang guard); logs in {logs}")
    finally:
        _end(processes)
    out = exported.run_config["output-dir"]
    log = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, log
    assert os.path.isfile(os.path.join(out, "report.json")), log
    return tmp, exported, out


def _report(out):
    with open(os.path.join(out, "report.json")) as handle:
        return json.load(handle)


def test_two_deployed_rounds_improve_the_global_model(deployment):
    tmp, exported, out = deployment
    curve = {g["round"]: g["metrics"]["val-loss"] for g in _report(out)["global"] if g["source"] == "clients"}
    assert sorted(curve) == [0, 1, 2]  # round 0: the clients evaluated the initial model
    assert curve[2] < curve[0], curve
    # the same check as the simulation's central one: initial vs final model on ALL validation rows
    from datasets import load_dataset

    from multimed_hf.federated.local import evaluate_local
    from multimed_hf.modeling_multimed import MultiMedModel
    from multimed_hf.processing_multimed import MultiMedProcessor

    validation = {TASK: load_dataset(str(tmp / "multimed"), TASK, split="validation")}
    losses = {}
    for name, path in (("initial", exported.run_config["model-path"]), ("final", os.path.join(out, "model"))):
        model, processor = MultiMedModel.from_pretrained(path), MultiMedProcessor.from_pretrained(path)
        losses[name] = evaluate_local(model, validation, processor)["val-loss"]
    assert losses["final"] < losses["initial"], losses
    with open(os.path.join(out, "convergence.png"), "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_every_phase_ran_between_the_supernodes(deployment):
    _, exported, out = deployment
    records = _report(out)["records"]
    phases = {(r["phase"], r["client"]) for r in records}
    assert {("train", "fragmented-0"), ("train", "partial-0"), ("evaluate", "fragmented-0"),
            ("evaluate", "partial-0")} <= phases
    # the vertical step crossed the two nodes: DNA embeddings from the partial client, gradients back to it
    assert {("vertical-embed", "partial-0"), ("vertical-train", "fragmented-0"),
            ("vertical-backward", "partial-0")} <= phases
    assert {r["round"] for r in records if r["phase"] == "train"} == {1, 2}
    partial = [r for r in records if r["phase"] == "train" and r["client"] == "partial-0"]
    assert partial and all(not any(m.endswith(".scrna") for m in r["modules"]) for r in partial)


def test_the_salt_and_the_rows_never_reach_the_server(deployment):
    tmp, exported, out = deployment
    with open(os.path.join(out, "messages.jsonl")) as handle:
        audit = handle.read()
    assert "a-secret-the-server-never-sees" not in audit
    from datasets import load_dataset

    ids = {r["sample_id"] for split in ("train", "validation")
           for r in load_dataset(str(tmp / "multimed"), TASK, split=split)}
    assert ids and not any(sid in audit for sid in ids)
    links = [json.loads(line) for line in audit.splitlines() if '"phase": "link"' in line]
    assert any(m["direction"] == "from_client" for m in links)  # the digests did travel


def test_multimed_federate_export_app_writes_what_each_machine_needs(tmp_path, capsys):
    import tomllib

    from dataset_scripts.sample_sources import sample_generators
    from multimed_hf.api import build_dataset
    from multimed_hf.federated.partition import FederationPlan, load_client_data
    from multimed_hf.federated.simulation import federate_main

    build_dataset(TASK, [sample_generators()["tcga_promoters"](tmp_path / "src")], tmp_path / "multimed",
                  progress=False)
    code = federate_main(["--data", str(tmp_path / "multimed"), "--tasks", TASK, "--partition", "paired=1,partial=1",
                          "--rounds", "4", "--local-steps", "3", "--strategy", "fedprox", "--output-dir",
                          str(tmp_path / "fl"), "--export-app", str(tmp_path / "app"), "--assemble", json.dumps(TINY),
                          "--superlink", "10.1.2.3:9000"])
    assert code == 0 and "Flower App" in capsys.readouterr().out
    config = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert (config["strategy"], config["num-rounds"], config["local-steps"], config["num-clients"]) == \
        ("fedprox", 4, 3, 2)
    assert config["output-dir"] == str((tmp_path / "fl" / "fedprox").resolve())
    plan = FederationPlan.load(tmp_path / "fl" / "federation")
    assert [c.name for c in plan.clients] == ["paired-0", "partial-0"]
    assert (tmp_path / "fl" / "federation" / "initial" / "config.json").is_file()
    assert str(plan.client_dir("partial-0").resolve()) in (tmp_path / "app" / "README.md").read_text()
    assert load_client_data(plan.client_dir("partial-0"))[TASK]["train"].num_rows > 0
