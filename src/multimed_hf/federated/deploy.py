"""Real deployments on Flower's Deployment Runtime: a Flower App for our apps, and the SuperLink / SuperNode commands.

The same ``ServerApp`` and ``ClientApp`` as the simulation run under a SuperLink (the coordinating server) and one
SuperNode per hospital; ``flwr run`` starts a run from a *Flower App*, a folder whose ``pyproject.toml`` names the
two components and the run config. Our components live in the installed package, so the app folder holds no code::

    APP/pyproject.toml   [tool.flwr.app.components] -> multimed_hf.federated.{server,client}_app:app, and the run
                         config (server_app.RUN_CONFIG_DEFAULTS: every key written, so flwr run --run-config can
                         override any of them)
    APP/README.md        the commands for this federation (kept out of the bundle flwr run sends: fab-exclude)

What each machine needs, as Flower 1.42 works (checked on loopback by tests/test_federated_deploy.py):

- ``multimed_hf[federated]`` installed where the SuperLink, each SuperNode and ``flwr`` run. The SuperLink starts
  with ``--disable-runtime-dependency-installation``: by default it would ``uv sync`` the app's dependencies from
  an index for every run, and sites are often offline. (SuperNodes install nothing unless told to.)
- ``OFFLINE_ENV`` in the environment of every Flower process: no telemetry, no PyPI update check.
- The SuperLink: one HTTP port serves the SuperNodes (Fleet API), ``flwr`` (Control API) and the apps.
  ``--host 0.0.0.0`` to reach it from other machines (its default is 127.0.0.1).
- A SuperNode: ``--node-config`` naming its client folder (``data-path``), the agreed initial model
  (``model-path``) and the link salt (``link-salt``, a secret the hospitals share and the server must not know:
  the commands read it from the ``LINK_SALT`` environment variable, so it is written in no file). ``--port`` is
  its own Runtime API port: one per SuperNode on a machine.
- ``flwr``: a SuperLink connection in ``$FLWR_HOME/config.toml`` (default ``~/.flwr/config.toml``),
  ``connection_toml``.
- TLS (Flower's ``how-to-enable-tls-connections``): the SuperLink gets ``--ssl-ca-certfile``, ``--ssl-certfile``
  and ``--ssl-keyfile`` (all three); each SuperNode ``--root-certificates CA`` and ``flwr`` the
  ``root-certificates`` key (an absolute path) instead of ``--insecure`` / ``insecure = true``; they trust only
  that CA, so a self-signed one works. The server certificate must name the address the SuperNodes and ``flwr``
  dial, and 127.0.0.1 when the SuperLink binds 0.0.0.0 (its own SuperExec connects there); a SuperNode that does
  not trust it exits (Flower's exit code 305) instead of joining.

Each message a SuperNode receives runs in a fresh ``flwr-clientapp`` process (Flower's subprocess isolation): the
client loads its rows and the model every time, and keeps nothing between messages but its files.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from multimed_hf.federated.simulation import FEDERATED_HIDDEN_SIZE

__all__ = [
    "SERVER_APP",
    "CLIENT_APP",
    "OFFLINE_ENV",
    "SALT_VARIABLE",
    "DeploymentError",
    "ExportedApp",
    "superlink_command",
    "supernode_command",
    "flwr_run_command",
    "connection_toml",
    "tls_files",
    "app_pyproject",
    "write_flower_app",
    "export_app",
    "shell_line",
]

SERVER_APP = "multimed_hf.federated.server_app:app"
CLIENT_APP = "multimed_hf.federated.client_app:app"
#: Environment of every Flower process on a machine without internet: no telemetry, no PyPI update check.
OFFLINE_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
#: The environment variable the SuperNode commands read the link salt from.
SALT_VARIABLE = "LINK_SALT"
_SALT_REFERENCE = "${" + SALT_VARIABLE + "}"
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class DeploymentError(ValueError):
    """A deployment setting Flower or our apps cannot use."""


def _insecure(insecure: bool | None, given: Mapping[str, object], who: str) -> bool:
    """Whether ``who`` runs without TLS: ``insecure=None`` means "unless certificates are given"."""
    named = [k for k, v in given.items() if v is not None]
    if insecure is None:
        return not named
    if insecure and named:
        raise DeploymentError(f"{who}: insecure=True contradicts the certificates given ({', '.join(named)}): "
                              f"drop insecure=True to use TLS, or drop the certificates")
    return bool(insecure)


def superlink_command(*, host: str = "0.0.0.0", port: int = 8000, insecure: bool | None = None,
                      database: str | os.PathLike | None = None, ssl_certfile: str | os.PathLike | None = None,
                      ssl_keyfile: str | os.PathLike | None = None,
                      ssl_ca_certfile: str | os.PathLike | None = None) -> list[str]:
    """``flower-superlink`` for our apps: app dependencies never installed at run time (they are installed on the
    machine), ``database`` a state file (default: in memory). With ``ssl_certfile`` (the server certificate),
    ``ssl_keyfile`` (its private key) and ``ssl_ca_certfile`` (the CA that signed it), all three or none, every
    API is served over TLS; ``insecure`` defaults to "no certificates given"."""
    files = {"ssl_ca_certfile": ssl_ca_certfile, "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    insecure = _insecure(insecure, files, "superlink_command")
    if not insecure:
        _all_or_none(files, "superlink_command", none_ok=False)
    command = ["flower-superlink"] + (["--insecure"] if insecure else [])
    command += ["--host", str(host), "--port", str(int(port)), "--disable-runtime-dependency-installation"]
    if not insecure:
        command += ["--ssl-ca-certfile", str(ssl_ca_certfile), "--ssl-certfile", str(ssl_certfile),
                    "--ssl-keyfile", str(ssl_keyfile)]
    return command + (["--database", str(database)] if database is not None else [])


def _quoted_value(key: str, value) -> str:
    text = str(value)
    if "'" in text or "\n" in text:
        raise DeploymentError(f"node config {key} = {text!r}: a value with a single quote or a newline cannot be "
                              f"passed in --node-config; move the folder")
    return f"{key}='{text}'"


def supernode_command(superlink: str, *, data_path: str | os.PathLike, model_path: str | os.PathLike,
                      port: int = 9094, link_salt: str = _SALT_REFERENCE, insecure: bool | None = None,
                      root_certificates: str | os.PathLike | None = None) -> list[str]:
    """``flower-supernode`` for one hospital: connects to ``superlink`` (host:port), serves its own Runtime API on
    ``port`` and tells the ClientApp where its client folder and the initial model are. ``link_salt``: the shared
    secret, by default a reference to ``$LINK_SALT`` for a shell to expand (pass the value itself when starting the
    process without a shell). ``root_certificates``: the CA certificate (PEM) the SuperLink's certificate is
    checked against (TLS); ``insecure=False`` without it trusts the system's CAs; ``insecure`` defaults to "no
    root certificate given"."""
    insecure = _insecure(insecure, {"root_certificates": root_certificates}, "supernode_command")
    node_config = " ".join([_quoted_value("data-path", data_path), _quoted_value("model-path", model_path),
                            _quoted_value("link-salt", link_salt)])
    command = ["flower-supernode"] + (["--insecure"] if insecure else [])
    if root_certificates is not None:
        command += ["--root-certificates", str(root_certificates)]
    return command + ["--superlink", str(superlink), "--port", str(int(port)), "--node-config", node_config]


def flwr_run_command(app_dir: str | os.PathLike, connection: str, *, run_config: Mapping | None = None,
                     stream: bool = True) -> list[str]:
    """``flwr run APP CONNECTION``; ``run_config`` overrides keys of the app's run config for this run."""
    command = ["flwr", "run", str(app_dir), connection]
    if run_config:
        command += ["--run-config", " ".join(f"{k}={_toml_value(v)}" for k, v in run_config.items())]
    return command + (["--stream"] if stream else [])


def _toml_value(value) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value}).partition("=")[2].strip()


def connection_toml(name: str, address: str, *, insecure: bool | None = None,
                    root_certificates: str | os.PathLike | None = None) -> str:
    """The ``[superlink.<name>]`` table of ``$FLWR_HOME/config.toml`` that points ``flwr`` at the SuperLink;
    ``root_certificates``: the CA certificate ``flwr`` trusts (Flower wants an absolute path); ``insecure``
    defaults to "no root certificate given"."""
    import tomli_w

    insecure = _insecure(insecure, {"root_certificates": root_certificates}, "connection_toml")
    table = {"address": address, "insecure": insecure}
    if root_certificates is not None:
        if not Path(root_certificates).is_absolute():
            raise DeploymentError(f"connection_toml: root_certificates {str(root_certificates)!r} is relative; "
                                  f"Flower's config.toml takes an absolute path")
        table["root-certificates"] = str(root_certificates)
    return tomli_w.dumps({"superlink": {name: table}})


def _all_or_none(files: Mapping[str, object], who: str, *, none_ok: bool = True) -> bool:
    """True when every TLS file is given, False when none is (and ``none_ok``); else a DeploymentError."""
    missing = [k for k, v in files.items() if v is None]
    if not missing or (none_ok and len(missing) == len(files)):
        return not missing
    given = [k for k in files if k not in missing]
    raise DeploymentError(f"{who}: TLS needs the CA certificate, the server certificate and its private key "
                          f"({', '.join(files)}); {', '.join(missing)} missing"
                          + (f" ({', '.join(given)} given)" if given else "")
                          + ": give all three, or none (and insecure=True) for plain HTTP")


def tls_files(ssl_ca_certfile=None, ssl_certfile=None, ssl_keyfile=None) -> dict[str, str] | None:
    """A deployment's three TLS files as absolute paths (the ``superlink_command`` keywords), or ``None`` when
    none is given; a partial set raises, naming what is missing."""
    files = {"ssl_ca_certfile": ssl_ca_certfile, "ssl_certfile": ssl_certfile, "ssl_keyfile": ssl_keyfile}
    if not _all_or_none(files, "TLS files (--tls-ca, --tls-cert, --tls-key)"):
        return None
    return {k: os.path.abspath(os.path.expanduser(str(v))) for k, v in files.items()}


def shell_line(command: Sequence[str]) -> str:
    """One POSIX shell line for ``command``; a ``${LINK_SALT}`` inside an argument stays expandable (the argument
    is double-quoted with every other ``\\ " $ `` escaped)."""
    parts = []
    for arg in command:
        if _SALT_REFERENCE in arg:
            escaped = re.sub(r'([\\"$`])', r"\\\1", arg)
            parts.append('"' + escaped.replace("\\" + _SALT_REFERENCE, _SALT_REFERENCE) + '"')
        else:
            parts.append(shlex.quote(arg))
    return " ".join(parts)


def app_pyproject(run_config: Mapping, *, name: str = "multimed-blendfl", publisher: str = "multimed",
                  version: str = "1.0.0") -> str:
    """The Flower App's ``pyproject.toml``: our two components and the run config, every key of
    ``server_app.RUN_CONFIG_DEFAULTS`` written (checked as the ServerApp will: ``read_run_config``,
    ``deployment_settings``)."""
    import tomli_w

    from multimed_hf.federated.server_app import deployment_settings, read_run_config

    if not _NAME.match(name) or not _NAME.match(publisher):
        raise DeploymentError(f"app name {name!r} / publisher {publisher!r}: expected lowercase letters, digits and "
                              f"'-' (Flower's rule for app names)")
    config = read_run_config(run_config)
    deployment_settings(config)  # a strategy or setting the ServerApp would refuse fails here, not at run time
    body = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": name, "version": version,
                    "description": "BlendFL (multimodal federated training) on Flower, with multimed_hf's apps",
                    "license": "Apache-2.0", "dependencies": ["multimed_hf[federated]"]},
        "tool": {"hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}},
                 "flwr": {"app": {"publisher": publisher, "fab-exclude": ["README.md"],
                                  "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                                  "config": dict(sorted(config.items()))}}},
    }
    header = ("# A Flower App running multimed_hf's federated apps (written by multimed_hf.federated.deploy).\n"
              "# The run config keys are those of multimed_hf.federated.server_app.RUN_CONFIG_DEFAULTS; paths are on\n"
              "# the SuperLink's machine. Add dp-noise-multiplier = Z for Flower's central DP (FedAvg / FedProx).\n\n")
    return header + tomli_w.dumps(body)


@dataclass
class ExportedApp:
    """What ``export_app`` wrote, and the commands its README gives."""

    app_dir: Path
    federation_dir: Path | None
    run_config: dict  # every key, defaults filled in
    clients: dict = field(default_factory=dict)  # client name -> its folder
    commands: dict = field(default_factory=dict)  # superlink, supernode.<client>, flwr


def write_flower_app(app_dir: str | os.PathLike, run_config: Mapping, *,
                     clients: Mapping[str, str | os.PathLike] | None = None,
                     model_path: str | os.PathLike | None = None, superlink_address: str = "127.0.0.1:8000",
                     connection: str = "multimed", supernode_port: int = 9094, name: str = "multimed-blendfl",
                     publisher: str = "multimed", ssl_ca_certfile: str | os.PathLike | None = None,
                     ssl_certfile: str | os.PathLike | None = None,
                     ssl_keyfile: str | os.PathLike | None = None) -> ExportedApp:
    """Write ``APP/pyproject.toml`` and ``APP/README.md`` (the commands for ``clients``: client name -> its
    folder; ``model_path`` where each site keeps the initial model, default the run config's). With the three TLS
    files (``tls_files``; paths on the machines, made absolute) the SuperLink serves TLS and the SuperNodes and
    ``flwr`` trust ``ssl_ca_certfile``; without them every connection is ``--insecure``."""
    tls = tls_files(ssl_ca_certfile, ssl_certfile, ssl_keyfile)
    host, _, port = superlink_address.rpartition(":")
    if not host or not port.isdigit():
        raise DeploymentError(f"superlink_address {superlink_address!r}: expected HOST:PORT")
    app = Path(app_dir)
    app.mkdir(parents=True, exist_ok=True)
    from multimed_hf.federated.server_app import read_run_config

    (app / "pyproject.toml").write_text(app_pyproject(run_config, name=name, publisher=publisher))
    config = read_run_config(run_config)
    ca = tls["ssl_ca_certfile"] if tls else None
    commands = {"superlink": superlink_command(host="0.0.0.0" if host not in ("127.0.0.1", "localhost") else host,
                                               port=int(port), **(tls or {}))}
    for i, (client, folder) in enumerate((clients or {}).items()):
        commands[f"supernode.{client}"] = supernode_command(superlink_address, data_path=folder,
                                                            model_path=model_path or config["model-path"],
                                                            port=supernode_port + i, root_certificates=ca)
    commands["flwr"] = flwr_run_command(app, connection)
    toml = connection_toml(connection, superlink_address, root_certificates=ca)
    (app / "README.md").write_text(_readme(config, commands, superlink_address, toml, tls))
    return ExportedApp(app, None, config, {k: str(v) for k, v in (clients or {}).items()}, commands)


def _readme(config: Mapping, commands: Mapping[str, list], address: str, toml: str,
            tls: Mapping[str, str] | None) -> str:
    env = " ".join(f"{k}={v}" for k, v in OFFLINE_ENV.items())
    nodes = [(k.partition(".")[2], v) for k, v in commands.items() if k.startswith("supernode.")]
    host = address.rpartition(":")[0]
    if tls:
        security = [
            "Every connection uses TLS. The certificates (PEM) are expected at:", "",
            f"- `{tls['ssl_ca_certfile']}`: the CA certificate, on the server, every hospital and where `flwr` runs;",
            f"- `{tls['ssl_certfile']}` and `{tls['ssl_keyfile']}`: the SuperLink's certificate and private key, on "
            "the server only (the key never leaves it).", "",
            f"The SuperLink's certificate must be signed by that CA and name `{host}` (the address the SuperNodes and "
            "`flwr` use) and `127.0.0.1` (when it listens on `0.0.0.0`, its own SuperExec connects there). A "
            "SuperNode that does not trust it stops with Flower's exit code 305 instead of joining.", "",
        ]
        step1 = "1. Start the SuperLink on the coordinating server (TLS):"
    else:
        security = [
            "**Connections are not encrypted (`--insecure`)**: for a trusted network or a trial only. For TLS, "
            "export again with `--tls-ca CA.crt --tls-cert SERVER.pem --tls-key SERVER.key`.", "",
        ]
        step1 = "1. Start the SuperLink on the coordinating server:"
    lines = [
        "# multimed_hf federation: a Flower App", "",
        f"Runs `{SERVER_APP}` and `{CLIENT_APP}` on Flower's Deployment Runtime ({config['strategy']}, "
        f"{config['num-clients']} clients, {config['num-rounds']} rounds). Every machine needs "
        "`pip install \"multimed_hf[federated]\"`; nothing is downloaded at run time.", "",
        *security,
        "In every shell that starts a Flower process (no telemetry, no update check):", "",
        "```bash", f"export {env}", "```", "",
        "Each Flower process below runs in the foreground: give each its own terminal (or service).", "",
        step1, "",
        "   ```bash", f"   {shell_line(commands['superlink'])}", "   ```", "",
        "2. Start one SuperNode per hospital, on its machine, with the link salt the hospitals share and the server "
        "must not know (for example `python -c \"import secrets; print(secrets.token_hex(16))\"`):", "",
        "   ```bash", f"   export {SALT_VARIABLE}=<shared secret>",
        *[f"   {shell_line(c)}   # {n}" for n, c in nodes], "   ```", "",
        "   Each SuperNode gets its own `--port` (its Runtime API). On other machines, replace "
        f"`{address}` with the server's address (and start the SuperLink with `--host 0.0.0.0`).", "",
        "3. Point `flwr` at the SuperLink: add to `$FLWR_HOME/config.toml` (default `~/.flwr/config.toml`):", "",
        "   ```toml", *[f"   {line}" for line in toml.strip().splitlines()],
        "   ```", "",
        "4. Start the run (wherever `flwr` is configured; `--stream` prints the ServerApp's log until the run "
        "ends):", "",
        "   ```bash", f"   {shell_line(commands['flwr'])}", "   ```", "",
        "   `--run-config 'num-rounds=10 strategy=\"fedavg\" output-dir=\"/srv/fl/fedavg\"'` overrides settings for "
        "one run.", "",
        f"The ServerApp writes `report.json`, `rounds.csv`, `messages.jsonl`, `convergence.png` (the clients' "
        f"weighted validation loss per round, round 0 = the initial model) and `model/` to "
        f"`{config['output-dir']}` on the server.", "",
    ]
    return "\n".join(lines)


def export_app(app_dir: str | os.PathLike, out_dir: str | os.PathLike, *, data=None, tasks=None,
               partition="paired=1,fragmented=1,partial=1", clients=None, by: str = "patient", seed: int = 0,
               hidden_size: int | None = FEDERATED_HIDDEN_SIZE, encoders: str = "small",
               assemble_kwargs: Mapping | None = None,
               run_config: Mapping | None = None, superlink_address: str = "127.0.0.1:8000",
               connection: str = "multimed", ssl_ca_certfile: str | os.PathLike | None = None,
               ssl_certfile: str | os.PathLike | None = None,
               ssl_keyfile: str | os.PathLike | None = None) -> ExportedApp:
    """Everything a deployment of built configs needs: the client folders and the initial model
    (``simulation.prepare_federation`` into ``OUT/federation``, as a simulation makes them), and the Flower App in
    ``app_dir`` whose run config points at them and writes its results to ``OUT/<strategy>``; ``run_config``
    overrides settings (``local-steps``, ``num-rounds``, ...); the three ``ssl_*`` files make every connection TLS
    (``write_flower_app``). Copy each client folder to its hospital and the initial model to every site; the
    README gives each machine's command."""
    from multimed_hf.federated.server_app import read_run_config
    from multimed_hf.federated.simulation import _replace_earlier_results, prepare_federation

    read_run_config({"model-path": "", **(run_config or {})})  # a bad setting fails before any data is read
    tls = tls_files(ssl_ca_certfile, ssl_certfile, ssl_keyfile) or {}  # so does a partial set of TLS files
    out = Path(out_dir).resolve()
    with _replace_earlier_results(out):  # an earlier run's OUT/<strategy> was trained on the clients replaced here
        prepared = prepare_federation(data, tasks, out / "federation", partition=partition, clients=clients, by=by,
                                      seed=seed, hidden_size=hidden_size, encoders=encoders,
                                      assemble_kwargs=assemble_kwargs)
    given = dict(run_config or {})
    strategy = str(given.get("strategy", "blendavg"))
    config = {"model-path": str(prepared.model_path.resolve()), "output-dir": str(out / strategy),
              "num-clients": len(prepared.plan.clients), "seed": int(seed), **given}
    folders = {c.name: str(prepared.plan.client_dir(c).resolve()) for c in prepared.plan.clients}
    exported = write_flower_app(app_dir, config, clients=folders, superlink_address=superlink_address,
                                connection=connection, **tls)
    exported.federation_dir = Path(prepared.plan.root)
    return exported
