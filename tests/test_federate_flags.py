"""``multimed federate`` flags: each one acts as its help says or is refused before any client folder is written,
naming the flag, why it changes nothing and what to use instead. Before, each case below was silently ignored
(e.g. ``--proximal-mu`` when no FedProx run reads it, ``--superlink`` in a simulation, ``--compare`` with
``--export-app``), or failed only once the clients were made and the model assembled (an unread modality in
``--assemble processor_overrides``, ``--local-steps 0``). No data is read and no simulation starts here."""

from __future__ import annotations

import json

import pytest

from multimed_hf.federated.simulation import federate_main, parse_federate_args, prepare_federation

TASK = "expression_prediction"
CLIENTS = f"""
data: multimed
clients:
  - name: clinic
    tasks:
      {TASK}: {{modalities: [scrna], train: "train[:50%]"}}
  - name: genome-centre
    tasks:
      {TASK}: {{modalities: [dna], train: "train[50%:]"}}
"""


@pytest.fixture
def clients(tmp_path):
    """A clients file (no fragments) whose data folder exists but is never read by the checks."""
    (tmp_path / "multimed").mkdir()
    path = tmp_path / "clients.yaml"
    path.write_text(CLIENTS)
    return str(path)


def _base(tmp_path):
    return ["--data", str(tmp_path / "nothing-read"), "--tasks", TASK, "--output-dir", str(tmp_path / "fl")]


REFUSED = [
    # a strategy's own flag where no strategy run reads it (make_strategy passed it to no one)
    (["--proximal-mu", "0.1"], r"--proximal-mu 0.1: only fedprox reads it, and the strategies run are \['blendavg', "
                               r"'fedavg'\]; add fedprox to --strategy or --compare"),
    (["--strategy", "fedavg", "--compare", "--score-key", "val-inv-loss"], r"--score-key val-inv-loss: only blendavg "
                                                                           r"reads it"),
    (["--strategy", "fedprox", "--compare", "fedavg", "--score-weight", "exp"], r"--score-weight exp: only blendavg"),
    (["--strategy", "fedavg", "--vertical-steps", "3"], r"--vertical-steps 3: only blendavg reads it"),
    # the vertical phase: off, or nothing to link
    (["--vertical-steps", "0", "--vertical-lr", "0.1"], r"--vertical-lr 0.1: --vertical-steps 0 turns the vertical "
                                                        r"phase off"),
    (["--partition", "paired=1,partial=1", "--vertical-batch", "4"], r"--vertical-batch 4: the vertical phase trains "
                                                                     r"the pairs that fragments link .*--partition "
                                                                     r"paired=1,partial=1 has none"),
    # DP's clipping settings without DP (the strategy was returned unwrapped)
    (["--strategy", "fedavg", "--dp-clipping", "client"], r"--dp-clipping client: .*only --dp-noise-multiplier Z "
                                                          r"turns on"),
    (["--strategy", "fedavg", "--dp-clipping-norm", "0.5"], r"--dp-clipping-norm 0.5: it sets the clipping"),
    # deployment-only and simulation-only flags
    (["--superlink", "10.0.0.5:8000"], r"--superlink 10.0.0.5:8000: the SuperLink address an exported app's commands "
                                       r"use, and a simulation has no connections"),
    (["--export-app", "APP", "--compare", "fedprox"], r"--compare with --export-app: a deployment runs one strategy "
                                                      r"per flwr run"),
    (["--export-app", "APP", "--num-cpus", "4"], r"--num-cpus with --export-app: Ray's CPUs of a simulation"),
    # values that meant something else, or failed once the clients were made
    (["--rounds", "0"], r"--rounds 0: expected an integer >= 1 \(0 trained nothing"),
    (["--vertical-steps", "-1"], r"--vertical-steps -1: expected an integer >= 0 \(0: no vertical phase\)"),
    (["--hidden-size", "-8"], r"--hidden-size -8: expected an integer >= 0"),
    (["--local-steps", "0"], r"--local-steps / --batch-size / --lr / --warmup: local-steps=0"),
    (["--lr", "0"], r"--local-steps / --batch-size / --lr / --warmup: lr=0.0"),
    (["--num-cpus", "0"], r"--num-cpus 0: expected an integer >= 1"),
    (["--timeout", "0"], r"--timeout 0.0: expected a number > 0"),
    (["--compare", "fedsgd"], r"--compare \['fedsgd'\]: \['fedsgd'\] are not strategies"),
    # --assemble: a key assemble() never reads went to the data loader, which a federation never calls
    (["--assemble", json.dumps({"procesor_overrides": {"dna": {"max_length": 48}}})],
     r"--assemble keys \['procesor_overrides'\] are not read by the initial model's assembly"),
    (["--assemble", json.dumps({"processor_overrides": {"image": {"size": 8}}})],
     r"--assemble processor_overrides names modalities \['image'\] that none of the tasks \['expression_prediction'\] "
     r"reads"),
    (["--assemble", json.dumps({"hidden_size": 32})], r"--assemble 'hidden_size': .*--hidden-size N"),
    (["--assemble", json.dumps({"encoders": "hub"})], r"--assemble 'encoders': the federation sets it itself; use "
                                                      r"--encoders"),
    (["--assemble", json.dumps({"streaming": True})], r"--assemble 'streaming': .*changes nothing"),
    (["--assemble", "{dna: 48}"], r"--assemble: expected a JSON object of assemble\(\) arguments"),
    # before: refused by the assembly after the client folders were written
    (["--encoders", "nosuch"], r"--encoders 'nosuch': expected one of \['hub', 'small'\] or the path of a JSON file"),
]


@pytest.mark.parametrize("flags, match", REFUSED)
def test_a_flag_that_would_change_nothing_is_refused_before_any_client_is_made(tmp_path, capsys, flags, match):
    with pytest.raises(ValueError, match=match):
        parse_federate_args(_base(tmp_path) + flags)
    assert federate_main(_base(tmp_path) + flags) == 2  # the command: the message in one line (was the usage too)
    err = capsys.readouterr().err
    assert err.startswith("multimed federate: error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "fl").exists()


@pytest.mark.parametrize("flags, match", [
    # --by grouped the rows of a --partition; the clients file names each client's rows itself
    (["--by", "source"], r"--by source: it groups rows when --partition makes the clients, and --clients .* names "
                         r"each client's rows itself"),
    # a task no client holds was silently dropped
    (["--tasks", TASK, "cell_type"], r"--tasks \['expression_prediction', 'cell_type'\]: no client of .* holds "
                                     r"\['cell_type'\]"),
    # the file names its own data, which its clients are made from: --data was never read
    (["--data", "elsewhere"], r"--data elsewhere: .*clients.yaml names its own data \(.*multimed\)"),
    # no client of this file holds fragments
    (["--vertical-steps", "2"], r"--vertical-steps 2: the vertical phase .* --clients .*clients.yaml has none"),
])
def test_flags_a_clients_file_makes_moot_are_refused(tmp_path, clients, flags, match):
    with pytest.raises(ValueError, match=match):
        parse_federate_args(["--clients", clients, "--output-dir", str(tmp_path / "fl"), *flags])
    assert not (tmp_path / "fl").exists()


def test_flags_that_apply_are_kept(tmp_path, clients):
    base = _base(tmp_path)
    args = parse_federate_args(base + ["--compare", "fedprox", "--proximal-mu", "0.3", "--score-key", "val-inv-loss",
                                       "--vertical-steps", "1", "--vertical-lr", "0.01"])
    assert (args.proximal_mu, args.score_key, args.vertical_steps, args.vertical_lr) == (0.3, "val-inv-loss", 1, 0.01)
    dp = parse_federate_args(base + ["--strategy", "fedavg", "--dp-noise-multiplier", "0", "--dp-clipping", "client"])
    assert dp.dp_clipping == "client"
    # a deployment's run config holds every setting (flwr run --run-config may switch the strategy): kept there
    exported = parse_federate_args(base + ["--export-app", "APP", "--strategy", "fedavg", "--proximal-mu", "0.3",
                                           "--superlink", "10.0.0.5:8000"])
    assert (exported.proximal_mu, exported.superlink) == (0.3, "10.0.0.5:8000")
    assert parse_federate_args(["--clients", clients, "--tasks", TASK, "--output-dir", "fl"]).tasks == [TASK]
    tiny = {"processor_overrides": {"dna": {"max_length": 48}}, "fusion": "late"}
    assert json.loads(parse_federate_args(base + ["--assemble", json.dumps(tiny)]).assemble) == tiny


def test_the_python_api_checks_the_assembly_and_the_tasks_before_writing(tmp_path, clients):
    with pytest.raises(ValueError, match=r"--assemble keys \['procesor_overrides'\] are not read"):
        prepare_federation(tmp_path / "nothing-read", [TASK], tmp_path / "fed",
                           assemble_kwargs={"procesor_overrides": {"dna": {"max_length": 48}}})
    with pytest.raises(ValueError, match=r"no client of .* holds \['cell_type'\]"):
        prepare_federation(None, [TASK, "cell_type"], tmp_path / "fed", clients=clients)
    assert not (tmp_path / "fed").exists()


def test_errors_of_the_run_itself_are_messages_not_tracebacks(tmp_path, capsys, monkeypatch):
    # before: a missing data folder ended in datasets' FileNotFoundError traceback
    assert federate_main(_base(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("multimed federate: error: cannot load config 'expression_prediction'")
    assert "nothing-read' (no such folder; a built MultiMed folder" in err and "Traceback" not in err
    # a round that could not complete: exit code 1, its message
    from multimed_hf.federated import simulation
    from multimed_hf.federated.server_app import FederationError

    def fail(*args, **kwargs):
        raise FederationError("round 2, fit: 1 of 2 clients answered within 60 s")

    monkeypatch.setattr(simulation, "run_federation", fail)
    assert federate_main(_base(tmp_path)) == 1
    assert capsys.readouterr().err == "multimed federate: error: round 2, fit: 1 of 2 clients answered within 60 s\n"
