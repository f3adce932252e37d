"""Vertical (split) learning for fragmented patients: embeddings forward, their gradients back, relayed by the server.

A *fragmented* patient has modality A at client L (with the label) and modality B at client F (no label); the
partitioner makes such pairs (``partition.py``). Each round, after horizontal aggregation, the ServerApp runs
``vertical_steps`` split-learning steps per (L, F) pair on the current global model:

1. ``query.embed`` to F: the global weights of B's units (``encoders.<B>``, ``projections.<B>``) and the link ids of
   a batch; F returns B's projected embeddings ``[n, hidden]`` for those rows (an ArrayRecord ``embedding.<B>``).
2. ``train.vertical`` to L: the other units, the embeddings and the ids; L fuses its own modality with the received
   embedding (``injected`` below), takes one SGD step on its units and returns the updated units and the gradient
   of its loss with respect to the embedding (``gradient.<B>``).
3. ``train.vertical_backward`` to F: B's units, the ids and the gradient; F recomputes its forward pass (same seed,
   so dropout masks match), back-propagates the gradient, takes one SGD step and returns B's updated units.
The server merges the returned units into the global model; the next step (and round) starts from it.

Linking. Clients never show a sample id. ``query.link`` asks every client for ``link_id(sample_id, salt)`` digests
of its labelled rows that lack a modality (with the modalities each lacks) and of the fragments it holds; the server
intersects them (``find_pairs``) and links a row only for the modalities the fragments hold and the row lacks: a
fragment of a modality the row already holds adds nothing (the row keeps its own modalities in the step). ``salt`` is
a secret the clients share (node config ``link-salt``; the simulation draws one per run).

Privacy, what leaves a client here: unit weights (as in any FedAvg), per-batch embeddings of one modality and the
gradients on them, salted digests of the linked rows (with the names of the modalities each labelled one lacks), and
metrics. No raw data, label or sample id leaves. What is NOT protected: embeddings and gradients can leak
information about the inputs and labels (model inversion, label inference from gradients); the server learns which
digests two clients share (set membership), and whoever knows the salt can test a guessed id; the salted hash is not
a private set intersection protocol; nothing is encrypted beyond Flower's transport (TLS in a deployment). No
differential privacy is applied: Flower's DP wrappers
(``flwr.serverapp.strategy.DifferentialPrivacyClientSideFixedClipping`` and kin) can wrap the FedAvg/FedProx
baselines for the horizontal part; they do not cover embeddings. Choices where BlendFL is silent: the vertical phase
runs after aggregation (its updates are not averaged away by clients that never saw those patients), plain SGD with
each side's gradient clipped to norm 1 (stateless clients; ``vertical-lr``), one batch of ``vertical-batch`` linked
rows per step.
"""

from __future__ import annotations

import contextlib
import logging
import random
from typing import Iterable, Mapping, Sequence

import numpy as np

from multimed_hf.federated.modules import link_id, module_of

logger = logging.getLogger(__name__)

__all__ = [
    "EMBEDDING_PREFIX",
    "GRADIENT_PREFIX",
    "VerticalError",
    "injected",
    "link_digests",
    "unit_names",
    "embed_fragments",
    "train_on_embeddings",
    "backward_fragments",
    "find_pairs",
]

EMBEDDING_PREFIX = "embedding."
#: Split-learning steps clip each side's parameter gradient to this global L2 norm (stateless SGD is fragile).
MAX_GRAD_NORM = 1.0
GRADIENT_PREFIX = "gradient."


class VerticalError(ValueError):
    """A split-learning step the model or the data cannot take."""


def unit_names(model, modalities: Iterable[str]) -> list[str]:
    """The units that compute ``modalities``' embeddings: ``encoders.<encoder>`` and ``projections.<m>``."""
    if model.config.fusion == "early":
        raise VerticalError("vertical learning exchanges projected per-modality embeddings; early fusion has none "
                            "(use fusion='intermediate' or 'late')")
    out = []
    for m in modalities:
        out += [f"encoders.{model.encoder_of[m]}", f"projections.{m}"]
    return list(dict.fromkeys(out))


def link_digests(dataset, salt: str) -> list[str]:
    """``link_id`` of every row's ``sample_id``, in row order (one column read, nothing decoded)."""
    return [link_id(str(s), salt) for s in dataset.select_columns(["sample_id"])["sample_id"]]


def _rows_for(dataset, salt: str, ids: Sequence[str]):
    index = {d: i for i, d in enumerate(link_digests(dataset, salt))}
    missing = [d for d in ids if d not in index]
    if missing:
        raise VerticalError(f"{len(missing)} linked ids are not among this client's rows (first {missing[0]!r})")
    return [dataset[index[d]] for d in ids]


def find_pairs(links: Mapping[str, Mapping[str, Mapping[str, list]]]) -> list[dict]:
    """From each client's ``{"labelled": {task: [digests]}, "lacking": {task: [...]}, "fragments": {task:
    [digests]}, "holds": {task: [...]}, "modalities": {task: [...]}}`` the linked pairs ``{"task", "label_client",
    "fragment_client", "ids", "modalities"}`` (ids sorted).

    ``lacking[task][i]``: the modalities the i-th labelled row lacks (space-separated); without it a row is taken to
    lack every one. ``holds[task][i]``: the modalities the i-th fragment holds (space-separated); without it every
    fragment is taken to hold ``modalities[task]`` (those all of them hold). A labelled row is linked to a fragment
    only for the modalities the fragment holds and the row lacks, so the row keeps its own modalities in the step;
    rows of one pair that gain different ones make one pair each (a pair's steps embed one set of modalities).
    Linked rows the fragments add nothing to (the row already holds what they hold) are left out, with one warning
    naming both clients."""
    pairs = []
    for holder, link in links.items():
        for task, labelled in link.get("labelled", {}).items():
            lacking = link.get("lacking", {}).get(task)
            if lacking is not None and len(lacking) != len(labelled):
                raise VerticalError(f"{holder}: {len(labelled)} labelled digests of {task!r} but {len(lacking)} "
                                    f"'lacking' entries; a link reply gives one per digest")
            lacks = {d: None if lacking is None else set(str(lacking[i]).split()) for i, d in enumerate(labelled)}
            for other, theirs in links.items():
                if other == holder:
                    continue
                fragments = list(theirs.get("fragments", {}).get(task, []))
                common = sorted(set(labelled) & set(fragments))
                held = list(theirs.get("modalities", {}).get(task, []))
                holds = theirs.get("holds", {}).get(task)
                if holds is not None and len(holds) != len(fragments):
                    raise VerticalError(f"{other}: {len(fragments)} fragment digests of {task!r} but {len(holds)} "
                                        f"'holds' entries; a link reply gives one per digest")
                holds_of = dict(zip(fragments, (str(h).split() for h in holds))) if holds is not None else {}
                groups: dict[tuple, list] = {}
                for d in common:
                    adds = tuple(m for m in holds_of.get(d, held) if lacks[d] is None or m in lacks[d])
                    if adds:
                        groups.setdefault(adds, []).append(d)
                for adds, ids in sorted(groups.items()):
                    pairs.append({"task": task, "label_client": holder, "fragment_client": other, "ids": ids,
                                  "modalities": list(adds)})
                idle = len(common) - sum(len(ids) for ids in groups.values())
                if idle:
                    found = sorted({m for d in common for m in holds_of.get(d, held)})
                    why = (f"they already hold every modality those fragments hold ({', '.join(found)})" if found
                           else "those fragments hold none of the task's modalities")
                    hint = f" (give {other} fragments of a modality {holder}'s rows lack, or leave them out)"
                    logger.warning("vertical phase: %d of the %d rows of %s's %s linked to %s's fragments take no "
                                   "split-learning step: %s%s", idle, len(common), holder, task, other, why,
                                   "" if groups else f"; {holder} and {other} exchange nothing for {task}"
                                   + (hint if found else ""))
    return pairs


class _Relayed:
    """Stand-ins for a modality's encoder and projection that hand the model a received embedding."""

    @staticmethod
    def modules(value):
        import torch
        from torch import nn

        class Encoder(nn.Module):
            def __init__(self):
                super().__init__()
                self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)  # model._encode reads its dtype

            def check_inputs(self, modality, inputs, n):
                return None

            def forward(self, **tensors):
                n = next(iter(tensors.values())).shape[0]
                return self.anchor.new_zeros(n, 1), None, None

        class Projection(nn.Module):
            def forward(self, _):
                return value

        return Encoder(), Projection()


@contextlib.contextmanager
def injected(model, batch: dict, embeddings: Mapping[str, "torch.Tensor"]):
    """``batch`` completed with received embeddings: within the block the model reads ``embeddings[m]`` (``[B,
    hidden]``, every row of the batch) as modality m's projected feature. The model's modules are restored after."""
    import torch

    if model.config.fusion == "early" or getattr(model.config, "fusion_tokens", "pooled") == "sequence":
        raise VerticalError("vertical learning needs per-modality pooled features: fusion 'intermediate' or 'late' "
                            "with fusion_tokens='pooled'")
    saved = {}
    batch = dict(batch, inputs=dict(batch["inputs"]), presence=dict(batch["presence"]))
    size = len(next(iter(batch["presence"].values())))
    for m, value in embeddings.items():
        key = model.encoder_of[m]
        sharing = [o for o, k in model.encoder_of.items() if k == key and o != m and o in batch["inputs"]]
        if sharing:
            raise VerticalError(f"modality {m!r} shares its encoder with {sharing}, also in this batch")
        if value.shape[0] != size:
            raise VerticalError(f"embedding of {m!r} has {value.shape[0]} rows, the batch {size}")
        saved[m] = (model.encoders[key], model.projections[m])
        model.encoders[key], model.projections[m] = _Relayed.modules(value)
        batch["inputs"][m] = {"relayed": torch.zeros(size, 1)}
        batch["presence"][m] = torch.ones(size, dtype=torch.bool)
    try:
        yield batch
    finally:
        for m, (encoder, projection) in saved.items():
            model.encoders[model.encoder_of[m]] = encoder
            model.projections[m] = projection


def _fork(seed: int):
    import torch

    stack = torch.random.fork_rng(devices=[])
    stack.__enter__()
    torch.manual_seed(seed)
    return stack


def _embed(model, processor, rows, task: str, modalities: Sequence[str]):
    batch = processor(rows, task, labels=False, modalities=list(modalities))
    out = {}
    for m in modalities:
        if m not in batch["inputs"] or int(batch["presence"][m].sum()) != len(rows):
            raise VerticalError(f"a linked fragment lacks modality {m!r}")
        pooled, _, _ = model.encoders[model.encoder_of[m]](**batch["inputs"][m])
        out[m] = model.projections[m](pooled)
    return out


def embed_fragments(model, processor, fragments, task: str, modalities: Sequence[str], ids: Sequence[str], *,
                    salt: str, seed: int) -> dict:
    """F's step 1: ``{m: embedding [n, hidden]}`` (detached numpy) of the fragments ``ids`` (in that order)."""
    import torch

    rows = _rows_for(fragments, salt, ids)
    model.train()
    stack = _fork(seed)
    try:
        with torch.no_grad():
            return {m: v.numpy() for m, v in _embed(model, processor, rows, task, modalities).items()}
    finally:
        stack.__exit__(None, None, None)


def train_on_embeddings(model, processor, labelled, task: str, ids: Sequence[str], embeddings: Mapping[str, np.ndarray],
                        *, salt: str, lr: float) -> tuple[dict, float, set]:
    """L's step 2: one SGD step on its rows ``ids`` fused with the received embeddings. Returns (``{m: gradient
    [n, hidden]}``, loss, trained units)."""
    import torch

    rows = _rows_for(labelled, salt, ids)
    received = {m: torch.tensor(v, requires_grad=True) for m, v in embeddings.items()}
    model.train()
    batch = processor(rows, task, modalities=[m for m in model.config.heads[task]["modalities"]
                                              if m not in received])
    names = {id(p): n for n, p in model.named_parameters()}
    with injected(model, batch, received) as full:
        loss = model(**full).loss
        model.zero_grad(set_to_none=True)
        loss.backward()
    trained = _sgd_step(model, names, lr)
    grads = {m: (t.grad if t.grad is not None else torch.zeros_like(t)).numpy() for m, t in received.items()}
    return grads, float(loss.detach()), trained


def backward_fragments(model, processor, fragments, task: str, modalities: Sequence[str], ids: Sequence[str],
                       gradients: Mapping[str, np.ndarray], *, salt: str, seed: int, lr: float) -> set:
    """F's step 3: recompute the embeddings (same ``seed``), back-propagate ``gradients``, one SGD step. Returns the
    trained units."""
    import torch

    rows = _rows_for(fragments, salt, ids)
    names = {id(p): n for n, p in model.named_parameters()}
    model.train()
    model.zero_grad(set_to_none=True)
    stack = _fork(seed)
    try:
        out = _embed(model, processor, rows, task, modalities)
    finally:
        stack.__exit__(None, None, None)
    torch.autograd.backward([out[m] for m in modalities], [torch.from_numpy(np.asarray(gradients[m])) for m in
                                                           modalities])
    return _sgd_step(model, names, lr)


def _sgd_step(model, names: Mapping, lr: float, max_norm: float = MAX_GRAD_NORM) -> set:
    """One SGD step on the parameters that received a gradient, the gradient clipped to ``max_norm`` (global L2
    norm); returns their units."""
    import torch

    params = [p for p in model.parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    if not params:
        return set()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    with torch.no_grad():
        for p in params:
            p -= lr * p.grad
    return {module_of(names[id(p)]) for p in params}


def sample_batch(ids: Sequence[str], size: int, seed: int) -> list[str]:
    """A seeded batch of linked ids (all when fewer than ``size``)."""
    ids = list(ids)
    if len(ids) <= size:
        return ids
    return sorted(random.Random(seed).sample(ids, size))
