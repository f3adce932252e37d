"""A round that fails names its clients, and what the run completed before is saved, marked incomplete."""

import json
from types import SimpleNamespace

import pytest

from multimed_hf.federated.report import FederationReport
from multimed_hf.federated.server_app import FederationError, _Exchange


def _message(node):
    return SimpleNamespace(metadata=SimpleNamespace(dst_node_id=node, message_type="train"), content={})


def _error_reply(node, reason):
    return SimpleNamespace(metadata=SimpleNamespace(src_node_id=node, reply_to_message_id=f"to-{node}"),
                           has_error=lambda: True, error=SimpleNamespace(reason=reason))


class _Grid:
    """Replies at once with ``replies`` (each to the message sent to its node); the other messages never get one."""

    pull_interval = 0.01

    def __init__(self, replies):
        self.replies = replies

    def push_messages(self, messages):
        return [f"to-{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, message_ids):
        return [r for r in self.replies if r.metadata.reply_to_message_id in set(message_ids)]


def test_a_failed_round_names_the_clients_by_name(monkeypatch):
    # before: "node 16898802149811665130", though an earlier round had given its name
    import multimed_hf.federated.server_app as server_app

    monkeypatch.setattr(server_app, "payload_bytes", lambda content: 0)
    monkeypatch.setattr(server_app, "describe_message", lambda content: {})
    clock = iter(range(0, 10**6, 25))  # 25 s pass between two looks: the 60 s wait ends after a few
    monkeypatch.setattr(server_app, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    report = FederationReport("fedavg")
    exchange = _Exchange(_Grid([_error_reply(11, "ValueError: no rows")]), 60, report)
    exchange.names = {11: "partial-0", 12: "paired-0"}
    with pytest.raises(FederationError, match=r"round 2, train: 0 of 3 clients answered, 1 failed, 2 did not reply "
                                              r"\(partial-0 \(node 11\): ValueError: no rows; no reply within 60 s "
                                              r"from paired-0 \(node 12\), node 13\)"):
        exchange([_message(11), _message(12), _message(13)], 2, "train")


def test_a_clients_error_is_its_last_traceback_line_and_no_timeout_is_claimed(monkeypatch):
    # before: the whole Ray traceback (kilobytes, colour codes) in the one-line error, and "0 of 2 clients answered
    # within 600 s" of clients that both replied at once with an error
    import multimed_hf.federated.server_app as server_app

    monkeypatch.setattr(server_app, "payload_bytes", lambda content: 0)
    monkeypatch.setattr(server_app, "describe_message", lambda content: {})
    reason = ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'\x1b[36mray::ClientAppActor.run()\x1b[39m "
              "(pid=1, ip=127.0.0.1)\n  File \"actor.py\", line 3, in run\n    raise ex\n" * 20
              + "ValueError: task 'brain_tumor', column 'tumor': 2 of 2 scored row(s) have NaN logits'>\n")
    exchange = _Exchange(_Grid([_error_reply(11, reason), _error_reply(12, reason)]), 600, FederationReport("x"))
    with pytest.raises(FederationError) as caught:
        exchange([_message(11), _message(12)], 1, "evaluate")
    said = str(caught.value)
    assert said.startswith("round 1, evaluate: 0 of 2 clients answered, 2 failed, 0 did not reply (node 11: "
                           "ValueError: task 'brain_tumor', column 'tumor': 2 of 2 scored row(s) have NaN logits; "
                           "node 12: ")
    assert "\x1b" not in said and "ray::" not in said and "within" not in said and len(said) < 400


def test_what_a_stopped_run_completed_is_saved_marked_incomplete(tmp_path):
    # before: nothing of the run was kept (no report.json, rounds.csv or messages.jsonl of its first rounds)
    report = FederationReport("fedavg")
    assert report.save_incomplete(tmp_path / "empty", "round 1, train: failed") == ""
    assert not (tmp_path / "empty").exists()
    report.add(1, "train", "paired-0", "paired", {"train-loss": 0.5}, ["fusion"], 10, 20)
    said = report.save_incomplete(tmp_path / "fedavg", "round 2, train: 2 of 3 clients answered")
    assert "saved in" in said and str(tmp_path / "fedavg") in said
    saved = json.loads((tmp_path / "fedavg" / "report.json").read_text())
    assert saved["error"] == "round 2, train: 2 of 3 clients answered" and len(saved["records"]) == 1
    assert (tmp_path / "fedavg" / "rounds.csv").read_text().count("\n") == 2
