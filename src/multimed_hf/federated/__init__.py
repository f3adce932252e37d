"""Federated multimodal training across hospitals (BlendFL on Flower): strategies, partitioner, apps, simulation.

The names below are imported on first use, so ``import multimed_hf.federated`` loads neither flwr nor torch.
"""

from __future__ import annotations

from multimed_hf._lazy import lazy_attributes

#: Public name -> the module (inside this package) that defines it.
_LAZY = {
    "BlendAvg": ".strategy",
    "FedAvg": ".strategy",
    "FedProx": ".strategy",
    "make_strategy": ".strategy",
    "blend_weights": ".strategy",
    "with_differential_privacy": ".strategy",
    "partition_config": ".partition",
    "load_client_data": ".partition",
    "FederationPlan": ".partition",
    "make_client_app": ".client_app",
    "make_server_app": ".server_app",
    "run_federation": ".simulation",
    "federate_main": ".simulation",
    "FederationReport": ".report",
    "plot_convergence": ".report",
    "LocalConfig": ".local",
    "train_local": ".local",
    "clients_from_file": ".clients_file",
    "export_app": ".deploy",
    "write_flower_app": ".deploy",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(globals(), _LAZY)
