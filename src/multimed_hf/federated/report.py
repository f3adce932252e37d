"""What a federation run reports: per round per client metrics, units updated and bytes; a convergence plot; the
final model's card (``federated_model_card``)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from multimed_hf.federated.modules import record_bytes

__all__ = ["FederationReport", "plot_convergence", "describe_message", "federated_model_card", "run_settings",
           "federation_versions", "RUN_INFO"]

#: What a federation's ``<strategy>/`` folder records of how it ran (``training.outputs.run_info``'s content).
RUN_INFO = "run_info.json"


def federation_versions() -> dict[str, str]:
    """The versions of the packages a federation runs on beside ``training.outputs.run_info``'s: Flower (its
    strategies and simulation) and Ray (the simulation's engine), those installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("flwr", "ray"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def describe_message(content) -> dict:
    """The audit view of a message's RecordDict: per record its kind, keys, array shapes/dtypes and config values
    (what a reviewer checks to see that only weights, embeddings, gradients, metrics and digests travel)."""
    out = {}
    for name, record in content.items():
        kind = type(record).__name__
        entry = {"kind": kind, "bytes": record_bytes(record)}
        if kind == "ArrayRecord":
            entry["arrays"] = {k: [list(v.shape), str(v.dtype)] for k, v in record.items()}
        elif kind == "MetricRecord":
            entry["metrics"] = {k: v for k, v in record.items()}
        else:
            entry["config"] = {k: v for k, v in record.items() if not isinstance(v, bytes)}
        out[name] = entry
    return out


@dataclass
class FederationReport:
    """Filled by the ServerApp while it runs; saved by ``save``."""

    strategy: str
    records: list[dict] = field(default_factory=list)  # round, phase, client, kind, metrics, modules, bytes
    global_metrics: list[dict] = field(default_factory=list)  # round, source ("clients" | "central"), metrics
    audit: list[dict] = field(default_factory=list)  # every message: round, phase, direction, client, records
    weights: list[dict] = field(default_factory=list)  # BlendAvg: round, unit, {client: weight}
    final_arrays: object | None = None
    error: str | None = None  # why the run stopped before its last round (its report then holds what it completed)

    def add(self, round_: int, phase: str, client: str, kind: str, metrics: Mapping, modules: Sequence[str],
            bytes_down: int, bytes_up: int) -> None:
        self.records.append({"round": round_, "phase": phase, "client": client, "kind": kind,
                             "metrics": {k: _num(v) for k, v in metrics.items()}, "modules": sorted(modules),
                             "bytes_to_client": int(bytes_down), "bytes_from_client": int(bytes_up)})

    def add_global(self, round_: int, source: str, metrics: Mapping) -> None:
        self.global_metrics.append({"round": round_, "source": source,
                                    "metrics": {k: _num(v) for k, v in (metrics or {}).items()}})

    def curve(self, metric: str = "val-loss", source: str = "central") -> list[tuple[int, float]]:
        return [(g["round"], g["metrics"][metric]) for g in self.global_metrics
                if g["source"] == source and metric in g["metrics"]]

    def to_dict(self) -> dict:
        out = {"strategy": self.strategy, "records": self.records, "global": self.global_metrics,
               "weights": self.weights}
        return {**out, "error": self.error} if self.error is not None else out

    def save_incomplete(self, out_dir: str | Path, failure: str) -> str:
        """Save what a run that stopped early (``failure``) completed, ``error`` set (no final model), and return a
        sentence saying where, to append to the failure's message ("" where no round completed)."""
        if not (self.records or self.global_metrics):
            return ""
        self.error = failure
        self.save(out_dir)
        return f"; what it completed is saved in {out_dir} (report.json's 'error' says why it stopped; no model)"

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """``report.json`` (everything), ``rounds.csv`` (one row per round, phase and client), ``messages.jsonl``
        (the audit of every message)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"report": out / "report.json", "rounds": out / "rounds.csv", "messages": out / "messages.jsonl"}
        paths["report"].write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        keys = sorted({k for r in self.records for k in r["metrics"]})
        with paths["rounds"].open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["strategy", "round", "phase", "client", "kind", *keys, "modules", "bytes_to_client",
                             "bytes_from_client"])
            for r in self.records:
                writer.writerow([self.strategy, r["round"], r["phase"], r["client"], r["kind"],
                                 *[r["metrics"].get(k, "") for k in keys], " ".join(r["modules"]),
                                 r["bytes_to_client"], r["bytes_from_client"]])
        with paths["messages"].open("w") as handle:
            for entry in self.audit:
                handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        return paths


def _num(value):
    if isinstance(value, (int, float)):
        return value if not (isinstance(value, float) and math.isnan(value)) else None
    return value


def plot_convergence(reports: Mapping[str, FederationReport], path: str | Path, *, metric: str = "val-loss",
                     source: str = "central") -> Path:
    """One line per strategy: the global model's ``metric`` after each round (round 0 = the initial model)."""
    from matplotlib.figure import Figure  # no pyplot: renders with the Agg canvas, no global backend switch

    figure = Figure(figsize=(5, 3.5))
    axes = figure.subplots()
    for name, report in reports.items():
        points = [(r, v) for r, v in report.curve(metric, source) if v is not None]
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    axes.set_xlabel("round")
    axes.set_ylabel(f"global {metric} ({'all validation rows' if source == 'central' else 'clients, weighted'})")
    axes.set_title("Convergence")
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path


def run_settings(strategy: str, *, runtime: str, rounds: int, local, vertical, seed: int, proximal_mu: float,
                 score_key: str, score_weight: str, dp_noise_multiplier: float | None, dp_clipping_norm: float,
                 dp_clipping: str) -> dict:
    """What ``strategy`` ran with (``run_info.json``'s ``settings``, the card's "Federated training"): ``local`` a
    ``local.LocalConfig``, ``vertical`` a ``server_app.VerticalSettings`` or None; an option the strategy does not
    read is None (FedProx's mu, BlendAvg's score, DP when off)."""
    return {"strategy": strategy, "runtime": runtime, "rounds": rounds, "seed": seed,
            "local": {k: v for k, v in local.to_record().items() if k != "proximal-mu"},  # FedProx sends its own
            "proximal_mu": proximal_mu if strategy == "fedprox" else None,
            "score_key": score_key if strategy == "blendavg" else None,
            "score_weight": score_weight if strategy == "blendavg" else None,
            "vertical": asdict(vertical) if vertical is not None else None,
            "dp": None if dp_noise_multiplier is None else {"noise_multiplier": dp_noise_multiplier,
                                                            "clipping_norm": dp_clipping_norm, "clipping": dp_clipping}}


def _final_metrics(report: FederationReport) -> tuple[dict, str | None]:
    """The last round's global metrics (on all validation rows where the simulation scored them, else the
    clients' weighted ones) and a sentence saying on what."""
    for source, where in (("central", "every validation row of the configs (the simulation's central check)"),
                          ("clients", "the clients' own validation rows, each client's score weighted by its rows")):
        entries = [g for g in report.global_metrics if g["source"] == source]
        if entries:
            last = entries[-1]
            values = {k: v for k, v in last["metrics"].items() if k != "num-val-examples" and v is not None}
            return values, f"The metrics below: the final global model on {where}, after round {last['round']}."
    return {}, None


def _client_rows(client: Mapping) -> str:
    """``expression_prediction: train 54, validation 12, fragments 20`` (or what the client reported)."""
    parts = []
    for task, splits in sorted((client.get("rows") or {}).items()):
        counts = [f"{split} {n}" for split, n in splits.items()]
        if (client.get("fragments") or {}).get(task):
            counts.append(f"fragments {client['fragments'][task]} (unlabelled, for a partner's patients)")
        parts.append(f"{task}: {', '.join(counts)}")
    if not parts and client.get("num_examples") is not None:
        parts.append(f"{client['num_examples']} training rows (as it reported)")
    return "; ".join(parts) or "-"


def federated_model_card(config, report: FederationReport, *, clients: Sequence[Mapping], settings: Mapping,
                         data: str | None = None, tasks: Sequence[str] = ()):
    """The final model's card: ``model_card.build_model_card`` (tasks, encoders, fusion, the tasks' data, the last
    round's global metrics) with a "Federated training" section before its training data: the strategy, rounds,
    local, vertical and DP settings (``settings``, as ``run_info.json`` records them) and the clients (dicts with
    ``name``, ``kind`` and ``rows`` ``{task: {split: n}}`` / ``fragments`` ``{task: n}``, or ``num_examples``)."""
    from huggingface_hub import ModelCard

    from multimed_hf.model_card import build_model_card

    metrics, measured = _final_metrics(report)
    names = " + ".join(tasks) or "all tasks"
    training_data = [{"name": str(data), "config": t, "split": "train", "held by": f"{len(clients)} clients, never "
                      "pooled"} for t in tasks] if data is not None else None
    card = build_model_card(config, training_data=training_data, metrics={names: metrics} if metrics else None,
                            metrics_split="validation" if metrics else None,
                            tags=["federated", "flower", settings["strategy"]])
    vertical_ran = any(r["phase"].startswith("vertical") for r in report.records)
    lines = ["## Federated training", "", *_settings_lines(settings, vertical_ran), "", "| client | kind | rows |",
             "|---|---|---|"]
    lines += [f"| `{c['name']}` | {c.get('kind', '?')} | {_client_rows(c)} |" for c in clients]
    lines += ["", f"How the run was made (every setting, the clients, package versions, git commit): `{RUN_INFO}` "
              "beside this model's folder; per round and per client metrics: `report.json` there."
              + (f" {measured}" if measured else ""), "", ""]
    content = card.content
    marker = "## Training data"
    at = content.index(marker) if marker in content else len(content)
    return ModelCard(content[:at] + "\n".join(lines) + content[at:])


def _settings_lines(settings: Mapping, vertical_ran: bool) -> list[str]:
    local = settings.get("local") or {}
    lines = [f"A federated model: its clients trained it on their own rows, which never left them "
             f"(`multimed_hf.federated`, BlendFL on Flower; {settings.get('runtime', 'Flower')}). Strategy "
             f"`{settings['strategy']}`, {settings.get('rounds')} round(s); per round each client took "
             f"{local.get('local-steps')} local AdamW steps (lr {local.get('lr')}, batch {local.get('batch-size')}, "
             f"warm-up {local.get('warmup')}); seed {settings.get('seed')}.", ""]
    vertical = settings.get("vertical")
    if vertical and vertical.get("steps"):
        lines.append(f"- Vertical (split-learning) steps for patients linked across clients: {vertical['steps']} per "
                     f"linked pair and round, {vertical['batch']} linked rows a step, SGD lr {vertical['lr']}"
                     + ("." if vertical_ran else "; none ran: no labelled row was linked to a fragment of a modality "
                        "it lacks."))
    elif settings["strategy"] == "blendavg":
        lines.append("- Vertical (split-learning) phase: off.")
    if settings.get("score_key"):
        lines.append(f"- BlendAvg weights each unit's clients by `{settings['score_key']}` "
                     f"({settings.get('score_weight')}).")
    if settings.get("proximal_mu") is not None:
        lines.append(f"- FedProx proximal weight mu = {settings['proximal_mu']}.")
    dp = settings.get("dp")
    lines.append(f"- Differential privacy: Gaussian noise multiplier {dp['noise_multiplier']}, clipping norm "
                 f"{dp['clipping_norm']} ({dp['clipping']}-side clipping)." if dp else
                 "- Differential privacy: none.")
    return lines
