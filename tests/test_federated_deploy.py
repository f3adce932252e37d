"""A real Flower deployment on loopback: SuperLink + 2 SuperNodes + ``flwr run`` of the app ``export_app`` writes.

The processes are the ones a user starts, with the commands ``deploy.py`` writes into the app's README (the same
functions make both). A fragmented and a partial client (the partial one holds the fragmented one's patients' DNA),
two rounds of BlendAvg with one vertical step each, on the 120-gene expression sample with the tiny DNA settings
of tests/test_federated_simulation.py. No internet: telemetry and the update check are off, the SuperLink installs
no app dependencies. Every Flower process (and the processes it spawned) is ended in a ``finally``; the guard is a
timeout against hangs, not a speed assertion (the run took 6.5 min on 2 shared cores: each message a SuperNode
receives starts a fresh ``flwr-clientapp`` process that imports torch and loads the model).

The same federation then runs again over TLS (a throwaway CA and a server certificate for 127.0.0.1 / localhost,
made here with ``cryptography``): one FedAvg round, so it costs a fraction of the insecure run; SuperNodes that do
not trust the CA, and ``flwr`` without it, must be refused within a bounded time.
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
    OFFLINE_ENV, DeploymentError, app_pyproject, connection_toml, export_app, flwr_run_command, superlink_command,
    supernode_command, tls_files, write_flower_app,
)
from multimed_hf.federated.server_app import (
    RUN_CONFIG_DEFAULTS, RunConfigError, deployment_settings, read_run_config,
)

TASK = "expression_prediction"
GENES = 120
GUARD_SECONDS = 1500
REFUSAL_SECONDS = 90  # a SuperNode that does not trust the SuperLink exits within seconds; this bounds a hang
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


def _certificates(folder):
    """A throwaway CA, a server certificate it signs for 127.0.0.1 / localhost (+ key), and an unrelated CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(common_name, key, issuer=None, issuer_key=None):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        builder = (x509.CertificateBuilder().subject_name(name).public_key(key.public_key())
                   .issuer_name(issuer.subject if issuer else name).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1)))
        if issuer is None:  # a CA
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(issuer_key or key, hashes.SHA256())

    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, other_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = certificate("multimed test CA", ca_key)
    files = {"ca": ca, "server": certificate("localhost", server_key, ca, ca_key),
             "other-ca": certificate("another CA", other_key)}
    paths = {}
    for name, cert in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"] = folder / "server.key"
    paths["key"].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))
    return paths


def test_tls_flags_are_flower_s_and_come_all_together():
    tls = {"ssl_ca_certfile": "ca.pem", "ssl_certfile": "server.pem", "ssl_keyfile": "server.key"}
    command = superlink_command(port=8100, **tls)
    assert "--insecure" not in command
    assert command[command.index("--ssl-ca-certfile"):] == ["--ssl-ca-certfile", "ca.pem", "--ssl-certfile",
                                                            "server.pem", "--ssl-keyfile", "server.key"]
    assert superlink_command()[:2] == ["flower-superlink", "--insecure"]  # no certificates: plain HTTP, as before
    with pytest.raises(DeploymentError, match="ssl_ca_certfile, ssl_keyfile missing \\(ssl_certfile given\\)"):
        superlink_command(ssl_certfile="server.pem")
    with pytest.raises(DeploymentError, match="insecure=True contradicts the certificates given"):
        superlink_command(insecure=True, **tls)
    with pytest.raises(DeploymentError, match="TLS needs the CA certificate"):
        superlink_command(insecure=False)  # flower-superlink would exit: TLS without certificates
    node = supernode_command("10.0.0.5:8000", data_path="/d", model_path="/m", root_certificates="/etc/fl/ca.pem")
    assert "--insecure" not in node and node[1:3] == ["--root-certificates", "/etc/fl/ca.pem"]
    assert "--root-certificates" not in supernode_command("h:1", data_path="/d", model_path="/m", insecure=False)
    with pytest.raises(DeploymentError, match="supernode_command: insecure=True contradicts .*root_certificates"):
        supernode_command("h:1", data_path="/d", model_path="/m", insecure=True, root_certificates="ca.pem")
    with pytest.raises(DeploymentError, match="ssl_keyfile missing"):
        tls_files("ca.pem", "server.pem")
    assert tls_files() is None and tls_files("ca.pem", "s.pem", "s.key")["ssl_ca_certfile"] == os.path.abspath("ca.pem")


def test_the_connection_toml_is_read_by_flower_with_its_root_certificate(tmp_path):
    import tomllib

    from flwr.cli.config_utils import load_certificate_in_connection
    from flwr.cli.flower_config import parse_superlink_connection

    ca = _certificates(tmp_path)["ca"]
    table = tomllib.loads(connection_toml("site", "10.0.0.5:8000", root_certificates=ca))["superlink"]["site"]
    connection = parse_superlink_connection(table, "site")
    assert (connection.address, connection.insecure, connection.root_certificates) == ("10.0.0.5:8000", False,
                                                                                      str(ca))
    assert load_certificate_in_connection(connection) == ca.read_bytes()  # what flwr hands to its TLS channel
    plain = parse_superlink_connection(tomllib.loads(connection_toml("site", "h:1"))["superlink"]["site"], "site")
    assert plain.insecure and plain.root_certificates is None
    with pytest.raises(DeploymentError, match="'ca.pem' is relative; Flower's config.toml takes an absolute path"):
        connection_toml("site", "h:1", root_certificates="ca.pem")
    with pytest.raises(DeploymentError, match="connection_toml: insecure=True contradicts"):
        connection_toml("site", "h:1", insecure=True, root_certificates=ca)


def test_the_app_readme_gives_the_tls_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative certificate paths become absolute ones
    exported = write_flower_app(tmp_path / "app", {"model-path": "/srv/initial"}, clients={"a": "/data/a"},
                                superlink_address="fl.example.org:8000", ssl_ca_certfile="certs/ca.pem",
                                ssl_certfile="certs/server.pem", ssl_keyfile="certs/server.key")
    ca, cert, key = (str(tmp_path / "certs" / f) for f in ("ca.pem", "server.pem", "server.key"))
    readme = (tmp_path / "app" / "README.md").read_text()
    assert "--insecure" not in readme and "insecure = true" not in readme
    assert f"--ssl-ca-certfile {ca} --ssl-certfile {cert} --ssl-keyfile {key}" in readme
    assert f"flower-supernode --root-certificates {ca} --superlink fl.example.org:8000" in readme
    assert f'root-certificates = "{ca}"' in readme and "name `fl.example.org`" in readme
    assert exported.commands["supernode.a"][1:3] == ["--root-certificates", ca]
    with pytest.raises(DeploymentError, match="ssl_certfile, ssl_keyfile missing"):
        write_flower_app(tmp_path / "other", {"model-path": "/m"}, ssl_ca_certfile="ca.pem")
    assert not (tmp_path / "other").exists()  # refused before anything is written
    plain = write_flower_app(tmp_path / "plain", {"model-path": "/m"}, clients={"a": "/data/a"})
    assert "Connections are not encrypted" in (tmp_path / "plain" / "README.md").read_text()
    assert plain.commands["supernode.a"][1] == "--insecure"


def test_the_export_app_command_refuses_a_partial_set_of_tls_files(tmp_path, capsys):
    from multimed_hf.federated.simulation import federate_main

    base = ["--data", str(tmp_path / "nothing-read"), "--tasks", TASK, "--output-dir", str(tmp_path / "fl")]
    assert federate_main(base + ["--export-app", str(tmp_path / "app"), "--tls-ca", "ca.pem", "--tls-key",
                                 "s.key"]) == 2
    assert "ssl_certfile missing" in capsys.readouterr().err and not (tmp_path / "fl").exists()
    assert federate_main(base + ["--tls-ca", "ca.pem", "--tls-cert", "s.pem", "--tls-key", "s.key"]) == 2
    assert "go with --export-app" in capsys.readouterr().err


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


@pytest.mark.parametrize("key, value, expected", [
    # before: accepted, where multimed federate refuses the same value (0 rounds saved the initial model as the result)
    ("num-rounds", 0, r"'num-rounds' = 0: expected an integer >= 1 \(0 trained nothing"),
    ("vertical-steps", -1, r"'vertical-steps' = -1: expected an integer >= 0"),
    ("vertical-batch", 0, r"'vertical-batch' = 0: expected an integer >= 1"),
    ("vertical-lr", -1.0, r"'vertical-lr' = -1.0: expected a number > 0"),
    ("timeout", 0.0, r"'timeout' = 0.0: expected a number > 0"),
    ("dp-clipping-norm", -1.0, r"'dp-clipping-norm' = -1.0: expected a number > 0"),
    ("num-clients", 0, r"'num-clients' = 0: expected an integer >= 1"),
])
def test_the_run_config_takes_the_ranges_the_command_takes(key, value, expected):
    with pytest.raises(RunConfigError, match=expected):
        read_run_config({"model-path": "m", key: value})


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


def _wait_for_superlink(port, process, log, timeout=120, ca=None):
    import ssl

    scheme, context = ("https", ssl.create_default_context(cafile=str(ca))) if ca else ("http", None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"flower-superlink exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/health", timeout=2,
                                        context=context) as response:
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
def federation(tmp_path_factory):
    """The built sample, the client folders, the initial model and the Flower App (``export_app``)."""
    missing = [c for c in CLIS if shutil.which(c) is None]
    if missing:
        pytest.skip(f"the Flower CLIs {missing} are not installed (pip install \"multimed_hf[federated]\")")
    from dataset_scripts.sample_sources.tcga_promoters import FOLDER, make_tcga_promoters
    from multimed_hf.api import build_dataset

    tmp = tmp_path_factory.mktemp("fl_deploy")
    source = make_tcga_promoters(tmp / "src" / FOLDER, genes=GENES, bad_files=False)
    build_dataset(TASK, [source], tmp / "multimed", progress=False)
    exported = export_app(tmp / "app", tmp / "fl", data=tmp / "multimed", tasks=[TASK],
                          partition="fragmented=1,partial=1", assemble_kwargs=TINY, connection="loopback",
                          run_config={"num-rounds": 2, "vertical-steps": 1, "score-key": "val-inv-loss",
                                      "timeout": 600.0})
    return tmp, exported


def _deploy(tmp, exported, name, *, tls=None, run_config=None, before_nodes=None):
    """Start a SuperLink and one SuperNode per client with ``deploy.py``'s commands (TLS with ``tls``: the
    ``_certificates`` paths), ``flwr run`` the app through the ``loopback`` connection, and end every process;
    ``before_nodes(start, address, env)`` runs once the SuperLink answers. Returns (run, logs)."""
    link, *node_ports = _free_ports(3)
    address = f"127.0.0.1:{link}"
    home = tmp / name / "flwr-home"
    home.mkdir(parents=True)
    ca = tls["ca"] if tls else None
    (home / "config.toml").write_text(connection_toml("loopback", address, root_certificates=ca))
    env = {**os.environ, **OFFLINE_ENV, "FLWR_HOME": str(home)}
    logs, processes = tmp / name / "logs", []
    logs.mkdir()
    certificates = {"ssl_ca_certfile": ca, "ssl_certfile": tls["server"], "ssl_keyfile": tls["key"]} if tls else {}

    def start(log_name, command):
        handle = (logs / f"{log_name}.log").open("w")
        processes.append(subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=tmp))
        return processes[-1]

    try:
        superlink = start("superlink", superlink_command(host="127.0.0.1", port=link, **certificates))
        _wait_for_superlink(link, superlink, logs / "superlink.log", ca=ca)
        if before_nodes is not None:
            before_nodes(start, address, env)
        for (client, folder), port in zip(exported.clients.items(), node_ports):
            start(client, supernode_command(address, data_path=folder, model_path=exported.run_config["model-path"],
                                            port=port, link_salt="a-secret-the-server-never-sees",
                                            root_certificates=ca))
        run = subprocess.run(flwr_run_command(exported.app_dir, "loopback", run_config=run_config),
                             capture_output=True, text=True, env=env, cwd=tmp, timeout=GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"flwr run did not end within {GUARD_SECONDS} s (hang guard); logs in {logs}")
    finally:
        _end(processes)
    return run, logs


@pytest.fixture(scope="module")
def deployment(federation):
    tmp, exported = federation
    run, _ = _deploy(tmp, exported, "insecure")
    out = exported.run_config["output-dir"]
    log = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, log
    assert os.path.isfile(os.path.join(out, "report.json")), log
    return tmp, exported, out


@pytest.fixture(scope="module")
def tls_deployment(federation):
    """One FedAvg round over TLS; before the trusted SuperNodes start, a SuperNode without a root certificate, one
    trusting another CA and ``flwr ls`` through a connection without the CA try the same SuperLink."""
    tmp, exported = federation
    certs = _certificates(tmp / "tls" / "certs")
    refused = {}

    def untrusting(start, address, env):
        home = tmp / "tls" / "untrusting-flwr-home"
        home.mkdir()
        (home / "config.toml").write_text(connection_toml("untrusting", address, insecure=False))
        try:
            flwr = subprocess.run(["flwr", "ls", "untrusting", "--format", "json"], capture_output=True, text=True,
                                  env={**env, "FLWR_HOME": str(home)}, timeout=REFUSAL_SECONDS)
            refused["flwr"] = (flwr.returncode, flwr.stdout + flwr.stderr)
        except subprocess.TimeoutExpired:
            refused["flwr"] = (None, f"flwr ls did not end within {REFUSAL_SECONDS} s")
        folder = next(iter(exported.clients.values()))
        nodes = {"no-ca": {"insecure": False}, "other-ca": {"root_certificates": certs["other-ca"]}}
        for name, trust in nodes.items():
            process = start(name, supernode_command(address, data_path=folder, port=_free_ports(1)[0],
                                                    model_path=exported.run_config["model-path"],
                                                    link_salt="a-secret-the-server-never-sees", **trust))
            began = time.monotonic()
            try:
                code = process.wait(timeout=REFUSAL_SECONDS)
            except subprocess.TimeoutExpired:
                code = None  # still running (the finally ends it): it was not refused in time
            refused[name] = (code, time.monotonic() - began, (tmp / "tls" / "logs" / f"{name}.log").read_text())

    run, logs = _deploy(tmp, exported, "tls", tls=certs, before_nodes=untrusting,
                        run_config={"num-rounds": 1, "strategy": "fedavg", "evaluate-initial": False,
                                    "output-dir": str(tmp / "tls" / "fl")})
    out = tmp / "tls" / "fl"
    log = run.stdout[-4000:] + run.stderr[-2000:]
    assert run.returncode == 0, log
    assert (out / "report.json").is_file(), log
    return out, logs, refused


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


def test_a_tls_deployment_completes_its_round(tls_deployment):
    out, logs, _ = tls_deployment
    assert "Uvicorn running on https://127.0.0.1:" in (logs / "superlink.log").read_text()  # TLS was on
    report = _report(out)
    ran = {(r["phase"], r["client"], r["round"]) for r in report["records"]}
    assert {("train", c, 1) for c in ("fragmented-0", "partial-0")} <= ran
    assert {("evaluate", c, 1) for c in ("fragmented-0", "partial-0")} <= ran
    clients = [g for g in report["global"] if g["source"] == "clients"]
    assert [g["round"] for g in clients] == [1] and clients[0]["metrics"]["val-loss"] > 0
    assert (out / "model" / "config.json").is_file()


def test_who_does_not_trust_the_ca_is_refused_in_bounded_time(tls_deployment):
    _, _, refused = tls_deployment
    for name in ("no-ca", "other-ca"):
        code, seconds, log = refused[name]
        assert code not in (None, 0), f"{name}: exit code {code} after {seconds:.0f} s\n{log[-2000:]}"
        assert "CERTIFICATE_VERIFY_FAILED" in log, log[-2000:]
    code, output = refused["flwr"]
    assert '"success": false' in output and "unavailable" in output, (code, output)


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
                          "--superlink", "10.1.2.3:9000", "--tls-ca", str(tmp_path / "ca.pem"), "--tls-cert",
                          str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key")])
    assert code == 0 and "Flower App" in capsys.readouterr().out
    config = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert (config["strategy"], config["num-rounds"], config["local-steps"], config["num-clients"]) == \
        ("fedprox", 4, 3, 2)
    assert config["output-dir"] == str((tmp_path / "fl" / "fedprox").resolve())
    plan = FederationPlan.load(tmp_path / "fl" / "federation")
    assert [c.name for c in plan.clients] == ["paired-0", "partial-0"]
    assert (tmp_path / "fl" / "federation" / "initial" / "config.json").is_file()
    readme = (tmp_path / "app" / "README.md").read_text()
    assert str(plan.client_dir("partial-0").resolve()) in readme
    assert f"--ssl-keyfile {tmp_path / 'server.key'}" in readme and readme.count("--root-certificates") == 2
    assert load_client_data(plan.client_dir("partial-0"))[TASK]["train"].num_rows > 0
