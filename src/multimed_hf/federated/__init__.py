"""Federated multimodal training across hospitals (BlendFL on Flower): strategies, partitioner, apps, simulation."""

from __future__ import annotations

import importlib

__all__ = [
    "BlendAvg",
    "FedAvg",
    "FedProx",
    "make_strategy",
    "blend_weights",
    "partition_config",
    "load_client_data",
    "FederationPlan",
    "make_client_app",
    "make_server_app",
    "run_federation",
    "federate_main",
    "FederationReport",
    "plot_convergence",
    "LocalConfig",
    "train_local",
    "clients_from_file",
    "with_differential_privacy",
    "export_app",
    "write_flower_app",
]

_WHERE = {
    "BlendAvg": "strategy", "FedAvg": "strategy", "FedProx": "strategy", "make_strategy": "strategy",
    "blend_weights": "strategy", "partition_config": "partition", "load_client_data": "partition",
    "FederationPlan": "partition", "make_client_app": "client_app", "make_server_app": "server_app",
    "run_federation": "simulation", "federate_main": "simulation", "FederationReport": "report",
    "plot_convergence": "report", "LocalConfig": "local", "train_local": "local", "clients_from_file": "clients_file",
    "with_differential_privacy": "strategy", "export_app": "deploy", "write_flower_app": "deploy",
}


def __getattr__(name: str):  # lazy: importing the package loads neither flwr nor torch
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
