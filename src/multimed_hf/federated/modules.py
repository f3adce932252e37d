"""The units BlendAvg averages: a MultiMedModel state dict grouped by module, and state <-> Flower ArrayRecord."""

from __future__ import annotations

import hashlib
from typing import Iterable, Mapping

__all__ = [
    "GROUPED_PREFIXES",
    "module_of",
    "group_keys",
    "record_from_state",
    "state_from_record",
    "payload_bytes",
    "record_bytes",
    "link_id",
]

#: State-dict prefixes whose second component names the unit: ``encoders.<modality>``, ``projections.<modality>``,
#: ``heads.<task>``. Every other top-level child (``fusion``, ``early``) is one unit by itself. These are
#: ``MultiMedModel``'s own attribute names (modeling_multimed.py); a new child becomes its own unit automatically.
GROUPED_PREFIXES = ("encoders", "projections", "heads")


def module_of(key: str) -> str:
    """The unit a state-dict key belongs to: ``encoders.dna.layer.0...`` -> ``encoders.dna``; ``fusion.linear.weight``
    -> ``fusion``; ``heads.med_vqa.out.weight`` -> ``heads.med_vqa``."""
    parts = key.split(".")
    if parts[0] in GROUPED_PREFIXES and len(parts) > 2:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def group_keys(keys: Iterable[str]) -> dict[str, list[str]]:
    """``{unit: [state-dict keys]}`` in first-seen order."""
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(module_of(key), []).append(key)
    return groups


def record_from_state(state: Mapping, modules: Iterable[str] | None = None):
    """A Flower ``ArrayRecord`` holding the tensors of ``state`` (a torch state dict) whose unit is in ``modules``
    (all when None). Floating tensors only travel as float32 on CPU; integer buffers as they are."""
    from flwr.app import Array, ArrayRecord

    wanted = None if modules is None else set(modules)
    record = ArrayRecord()
    for key, value in state.items():
        if wanted is None or module_of(key) in wanted:
            record[key] = Array(value.detach().cpu().numpy())
    return record


def state_from_record(record, reference: Mapping) -> dict:
    """The record's arrays as torch tensors shaped and typed like ``reference`` (the receiving model's state dict);
    a key the model lacks, or a shape that differs, raises ``ValueError`` naming it."""
    import torch

    out = {}
    for key, array in record.items():
        if key not in reference:
            raise ValueError(f"ArrayRecord key {key!r} is not a parameter of the model (first model keys: "
                             f"{list(reference)[:3]})")
        value = torch.from_numpy(array.numpy().copy())
        if tuple(value.shape) != tuple(reference[key].shape):
            raise ValueError(f"ArrayRecord key {key!r} has shape {tuple(value.shape)}, the model expects "
                             f"{tuple(reference[key].shape)}")
        out[key] = value.to(reference[key].dtype)
    return out


def record_bytes(record) -> int:
    """Bytes one record carries: an ArrayRecord's serialised array data; a Metric/ConfigRecord's keys and values
    (8 per number, the length of each string or bytes). Flower's ``ConfigRecord.count_bytes`` is not used: in 1.42
    it raises on an empty string or list."""
    if type(record).__name__ == "ArrayRecord":
        return int(sum(len(array.data) for array in record.values()))
    total = 0
    for key, value in record.items():
        values = value if isinstance(value, list) else [value]
        total += len(key) + sum(len(v) if isinstance(v, (str, bytes)) else 8 for v in values)
    return int(total)


def payload_bytes(content) -> int:
    """Bytes a message's ``RecordDict`` carries (``record_bytes`` summed over its records)."""
    return int(sum(record_bytes(record) for record in content.values()))


def link_id(sample_id: str, salt: str) -> str:
    """The identifier a client shows the server for a row it may hold a fragment of: SHA-256 of ``salt`` + id,
    first 32 hex digits. Clients that share ``salt`` find their common patients; the server sees only digests (see
    ``multimed_hf.federated.vertical`` for what this does and does not protect)."""
    return hashlib.sha256(f"{salt}\x1f{sample_id}".encode()).hexdigest()[:32]
