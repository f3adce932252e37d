"""What a federation run reports: per round per client metrics, units updated and bytes; a convergence plot."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from multimed_hf.federated.modules import record_bytes

__all__ = ["FederationReport", "plot_convergence", "describe_message"]


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
