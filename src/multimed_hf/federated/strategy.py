"""BlendAvg (module-wise, score-weighted aggregation) and the FedAvg / FedProx baselines, on Flower's Message API.

BlendFL (Guerra-Manzanares et al., IJCNN 2025, arXiv 2510.13266) names BlendAvg "an adaptive global model
aggregation strategy that prioritizes collaborative model updates based on each client's performance". No author
code exists; what follows is our reading, each choice where the paper is silent stated:

- Units. A ``MultiMedModel`` is averaged unit by unit (``multimed_hf.federated.modules``): each modality encoder
  (``encoders.<m>``), its projection (``projections.<m>``), the fusion (``fusion`` / ``early``) and each task head
  (``heads.<task>``). A client sends only the units it trained this round (a parameter that received a gradient),
  and a unit is averaged only over the clients that sent it; a unit nobody sent keeps the global value. This is
  what lets a hospital that never collected scRNA-seq take part without dragging the scRNA encoder towards its
  stale copy.
- Weights. Client i reports ``val-score`` s_i (higher is better: the task registry's headline metric of its locally
  trained model on its own validation rows, averaged over its tasks; see ``local.py``). Over the holders H of a
  unit, w_i = f(s_i) / sum_{j in H} f(s_j), with f pluggable (``score_weight``: ``"linear"`` max(s, 0) by default,
  ``"squared"``, ``"exp"``, or any callable returning a number >= 0). A client whose f(s) is 0 gets weight 0.
- Ties. When every holder's f(s) is equal (within ``tie_tolerance``; all zero included) the weights are FedAvg's,
  n_i / sum n_j with n = ``num-examples``, so equal scores give FedAvg exactly.
- Which score: ``score_key`` (default ``val-score``, the headline metric); clients also report ``val-inv-loss`` =
  1 / (1 + validation loss), steadier on tiny validation sets (a Pearson r over 8 rows of 2 genes swings to +-1).
- A holder without a score (NaN, no validation rows) takes the mean f of the holders that have one; when none
  has, the unit falls back to FedAvg weights.
- ``by_examples=True`` multiplies f(s_i) by n_i (performance and size); off by default, as the paper's
  description weights by performance.

Baselines: ``FedAvg`` and ``FedProx`` are Flower's own classes (``flwr.serverapp.strategy``); with them our clients
send every parameter (the classic algorithm, every unit averaged over every client), and FedProx's
``proximal-mu`` reaches the local loss (``local.py``).

Differential privacy (``with_differential_privacy``): Flower's central-DP wrappers with fixed clipping
(``DifferentialPrivacyServerSideFixedClipping``, or ``...ClientSideFixedClipping`` with the ClientApp's train
handler clipping its own update through ``fixedclipping_mod``) wrap the FedAvg / FedProx baselines. They do not fit
BlendAvg: both clip a client's update as one vector, positionally, against the whole global model
(``ArrayRecord.to_numpy_ndarrays`` of every array) and require the reply to carry every array, while a BlendAvg
reply carries only the units its client trained; and they say nothing about the vertical phase's embeddings and
gradients. A BlendAvg with DP would need per-unit clipping and noise calibrated to each unit's holders.
"""

from __future__ import annotations

import math
from logging import INFO
from typing import Callable, Iterable, Mapping

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg, FedProx

from multimed_hf.federated.modules import module_of

__all__ = [
    "BlendAvg",
    "FedAvg",
    "FedProx",
    "SCORE_KEY",
    "EXAMPLES_KEY",
    "SEND_KEY",
    "SCORE_WEIGHTS",
    "STRATEGIES",
    "StrategyError",
    "blend_weights",
    "make_strategy",
    "with_differential_privacy",
    "DP_CLIPPING",
]

#: MetricRecord key of a client's validation score (higher is better).
SCORE_KEY = "val-score"
#: MetricRecord key of a client's number of training rows (Flower's default weighting key).
EXAMPLES_KEY = "num-examples"
#: A metric every train and evaluate reply carries as 1: the weight of a uniform average, which differential privacy
#: needs (the noise Z * C / K is calibrated to one client's share 1 / K; weighted by rows, a client of share n_i / N
#: would move the aggregate by n_i / N * C, more than the noise covers, and Flower's accountant refuses the weights).
UNIFORM_KEY = "client-weight"
#: ConfigRecord key telling clients what to send back: ``"trained"`` (units they trained) or ``"all"``.
SEND_KEY = "send"
#: Score -> weight functions by name (each returns a number >= 0; NaN scores are handled by the caller).
SCORE_WEIGHTS: dict[str, Callable[[float], float]] = {
    "linear": lambda s: max(float(s), 0.0),
    "squared": lambda s: max(float(s), 0.0) ** 2,
    "exp": lambda s: math.exp(float(s)),
}
#: Strategy names ``make_strategy`` and ``multimed federate --strategy`` accept.
STRATEGIES = ("blendavg", "fedavg", "fedprox")
#: Where central DP clips each client's update: on the server, or on the client (``fixedclipping_mod``).
DP_CLIPPING = ("server", "client")


class StrategyError(ValueError):
    """A strategy setting, or a reply, that aggregation cannot use."""


def _weight_fn(score_weight) -> Callable[[float], float]:
    if callable(score_weight):
        return score_weight
    if score_weight not in SCORE_WEIGHTS:
        raise StrategyError(f"score_weight={score_weight!r}: expected a callable or one of {sorted(SCORE_WEIGHTS)}")
    return SCORE_WEIGHTS[score_weight]


def blend_weights(scores: Mapping[str, float], examples: Mapping[str, float], score_weight="linear", *,
                  tie_tolerance: float = 1e-12, by_examples: bool = False) -> dict[str, float]:
    """BlendAvg's weights over the holders of one unit: ``{client: weight}`` summing to 1 (see the module doc).

    ``scores``: client -> validation score (NaN = none); ``examples``: client -> training rows.
    """
    fn = _weight_fn(score_weight)
    clients = list(examples)
    if not clients:
        return {}
    known = {c: float(fn(scores[c])) for c in clients if c in scores and not math.isnan(float(scores[c]))}
    for c, value in known.items():
        if not value >= 0 or math.isinf(value):
            raise StrategyError(f"score_weight gave {value!r} for client {c!r} (score {scores[c]!r}); weights must "
                                f"be finite and >= 0")
    n = {c: float(examples[c]) for c in clients}
    if not known:
        return _normalise(n, clients)
    fill = sum(known.values()) / len(known)
    f = {c: known.get(c, fill) for c in clients}
    if max(f.values()) - min(f.values()) <= tie_tolerance:
        return _normalise(n, clients)
    raw = {c: f[c] * n[c] for c in clients} if by_examples else f
    return _normalise(raw, clients) if sum(raw.values()) > 0 else _normalise(n, clients)


def _normalise(raw: Mapping[str, float], clients) -> dict[str, float]:
    total = sum(raw[c] for c in clients)
    if total <= 0:
        return {c: 1.0 / len(clients) for c in clients}
    return {c: raw[c] / total for c in clients}


def _client_name(message: Message) -> str:
    """A reply's client: its ``report`` ConfigRecord's ``client`` name, else its node id."""
    report = message.content.config_records.get("report")
    if report is not None and "client" in report:
        return str(report["client"])
    return str(message.metadata.src_node_id)


def average_metrics(records: Iterable[MetricRecord], weights: Iterable[float]) -> MetricRecord:
    """Weighted mean of each metric over the records that report it (NaN values skipped), lists element-wise."""
    sums: dict[str, float] = {}
    totals: dict[str, float] = {}
    for record, weight in zip(records, weights):
        for key, value in record.items():
            if key == EXAMPLES_KEY or isinstance(value, list):
                continue
            if math.isnan(float(value)):
                continue
            sums[key] = sums.get(key, 0.0) + weight * float(value)
            totals[key] = totals.get(key, 0.0) + weight
    return MetricRecord({k: sums[k] / totals[k] for k in sums if totals[k] > 0})


class BlendAvg(FedAvg):
    """Module-wise, validation-score-weighted aggregation (BlendFL's BlendAvg); a ``flwr`` ``FedAvg`` subclass.

    Args (besides ``FedAvg``'s):
        score_weight: ``"linear"`` (default), ``"squared"``, ``"exp"`` or a callable score -> weight >= 0.
        score_key: the MetricRecord key holding a client's validation score.
        tie_tolerance: f(s) values closer than this count as tied (then FedAvg weights).
        by_examples: multiply f(s) by the client's ``num-examples``.

    After ``aggregate_train``, ``last_weights`` holds ``{unit: {client: weight}}`` of that round (for the report).
    """

    def __init__(self, *, score_weight="linear", score_key: str = SCORE_KEY, tie_tolerance: float = 1e-12,
                 by_examples: bool = False, **fedavg_kwargs):
        fedavg_kwargs.setdefault("weighted_by_key", EXAMPLES_KEY)
        super().__init__(**fedavg_kwargs)
        self.score_weight = score_weight
        _weight_fn(score_weight)
        self.score_key = score_key
        self.tie_tolerance = float(tie_tolerance)
        self.by_examples = bool(by_examples)
        self.global_arrays: ArrayRecord | None = None
        self.last_weights: dict[str, dict[str, float]] = {}

    def summary(self) -> None:
        from flwr.supercore import log

        name = self.score_weight if isinstance(self.score_weight, str) else getattr(self.score_weight, "__name__", "fn")
        log(INFO, "\t├──> BlendAvg: score %r weighted by %s%s; ties -> FedAvg", self.score_key, name,
            " x num-examples" if self.by_examples else "")
        super().summary()

    def configure_train(self, server_round, arrays, config, grid):
        """FedAvg's, remembering the global arrays (units nobody trains keep them) and asking for trained units."""
        self.global_arrays = arrays
        config[SEND_KEY] = "trained"
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        """Each unit averaged over the replies that carry it, with ``blend_weights``; metrics averaged by
        ``num-examples``. Returns the full global ArrayRecord when ``configure_train`` ran, else the averaged units."""
        valid, _ = self._check_and_log_replies(list(replies), is_train=True, validate=False)
        if not valid:
            return None, None
        names, arrays, metrics = [], [], []
        for message in valid:
            content = message.content
            if len(content.array_records) != 1 or len(content.metric_records) != 1:
                raise StrategyError(f"reply of client {_client_name(message)!r}: expected one ArrayRecord and one "
                                    f"MetricRecord, got {list(content.array_records)} and "
                                    f"{list(content.metric_records)}")
            metric = next(iter(content.metric_records.values()))
            if self.weighted_by_key not in metric:
                raise StrategyError(f"reply of client {_client_name(message)!r}: MetricRecord lacks "
                                    f"{self.weighted_by_key!r} (has {sorted(metric)})")
            names.append(_client_name(message))
            arrays.append(next(iter(content.array_records.values())))
            metrics.append(metric)
        if len(set(names)) != len(names):
            names = [f"{n}#{i}" for i, n in enumerate(names)]
        scores = {c: float(m.get(self.score_key, float("nan"))) for c, m in zip(names, metrics)}
        examples = {c: float(m[self.weighted_by_key]) for c, m in zip(names, metrics)}
        holders: dict[str, list[int]] = {}
        for i, record in enumerate(arrays):
            for key in record:
                holders.setdefault(key, []).append(i)
        out = ArrayRecord()
        if self.global_arrays is not None:
            for key, value in self.global_arrays.items():
                out[key] = value
        cache: dict[tuple, dict[str, float]] = {}
        self.last_weights = {}
        for key, idx in holders.items():
            group = tuple(idx)
            if group not in cache:
                members = [names[i] for i in idx]
                cache[group] = blend_weights({c: scores[c] for c in members}, {c: examples[c] for c in members},
                                             self.score_weight, tie_tolerance=self.tie_tolerance,
                                             by_examples=self.by_examples)
            weights = cache[group]
            total = None
            for i in idx:
                value = arrays[i][key].numpy().astype("float64") * weights[names[i]]
                total = value if total is None else total + value
            reference = arrays[idx[0]][key].numpy()
            out[key] = Array(total.astype(reference.dtype))
            self.last_weights.setdefault(module_of(key), dict(weights))
        return out, average_metrics(metrics, [examples[c] for c in names])


def with_differential_privacy(strategy, *, noise_multiplier: float, clipping_norm: float, num_clients: int,
                              clipping: str = "server"):
    """``strategy`` (a FedAvg / FedProx baseline) inside Flower's central-DP wrapper with fixed clipping: each
    client's update clipped to ``clipping_norm`` (L2, whole model; on the ``"server"`` or on the ``"client"``),
    Gaussian noise of std ``noise_multiplier * clipping_norm / num_clients`` added to the aggregate. BlendAvg
    raises (see the module doc)."""
    from flwr.serverapp.strategy import (
        DifferentialPrivacyClientSideFixedClipping,
        DifferentialPrivacyServerSideFixedClipping,
    )

    if isinstance(strategy, BlendAvg):
        raise StrategyError("differential privacy: Flower's DP wrappers clip the whole model update of every client "
                            "and BlendAvg replies carry only the units a client trained; use --strategy fedavg or "
                            "fedprox with DP")
    if clipping not in DP_CLIPPING:
        raise StrategyError(f"DP clipping {clipping!r}: expected one of {DP_CLIPPING}")
    wrapper = (DifferentialPrivacyServerSideFixedClipping if clipping == "server"
               else DifferentialPrivacyClientSideFixedClipping)
    return wrapper(strategy, noise_multiplier=float(noise_multiplier), clipping_norm=float(clipping_norm),
                   num_sampled_clients=int(num_clients))


def make_strategy(name: str, *, proximal_mu: float = 0.01, score_weight="linear", by_examples: bool = False,
                  score_key: str = SCORE_KEY, num_clients: int = 2, dp_noise_multiplier: float | None = None,
                  dp_clipping_norm: float = 1.0, dp_clipping: str = "server"):
    """``"blendavg"`` -> ``BlendAvg``; ``"fedavg"`` / ``"fedprox"`` -> Flower's ``FedAvg`` / ``FedProx``, every
    client sampled each round (``num_clients`` = the federation's size). ``dp_noise_multiplier`` (not None) wraps
    the baseline with ``with_differential_privacy`` and averages the clients uniformly (``UNIFORM_KEY``)."""
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=num_clients,
                  min_evaluate_nodes=num_clients, min_available_nodes=num_clients, weighted_by_key=EXAMPLES_KEY)
    if name == "blendavg":
        strategy = BlendAvg(score_weight=score_weight, by_examples=by_examples, score_key=score_key, **common)
    elif name == "fedavg":
        strategy = FedAvg(**common)
    elif name == "fedprox":
        strategy = FedProx(proximal_mu=proximal_mu, **common)
    else:
        raise StrategyError(f"strategy {name!r}: expected one of {STRATEGIES}")
    if dp_noise_multiplier is None:
        return strategy
    strategy.weighted_by_key = UNIFORM_KEY  # the clipped updates averaged uniformly: see UNIFORM_KEY
    return with_differential_privacy(strategy, noise_multiplier=dp_noise_multiplier, clipping_norm=dp_clipping_norm,
                                     num_clients=num_clients, clipping=dp_clipping)
