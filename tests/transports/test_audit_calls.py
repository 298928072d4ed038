"""Tool calls in the audit log (docs/governance.md "audit log"): the core's tool_called hook queues each call
(never blocking it, no query on its path) and the writer stores them in batches; arguments only with
GATEWAY_AUDIT_ARGUMENTS, redacted like the logs."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from registry import audit
from registry.models import AuditEntry
from transports import governance
from transports.protocol.hooks import ToolCalled, tool_called

pytestmark = pytest.mark.django_db
send = async_to_sync(tool_called.send)


def called(tool: str = "echo", **kw) -> ToolCalled:
    values = {
        "username": "ann",
        "server": "demo",
        "session": "s-1",
        "tool": tool,
        "gateway": "fx",
        "outcome": "ok",
        "error": "",
        "seconds": 0.0123,
        "ended_at": time.time(),
        "arguments": {"q": "owls", "api_key": "k-secret", "nested": {"Password": "p"}},
    }
    return ToolCalled(**{**values, **kw})


@pytest.fixture(autouse=True)
def log():
    """The process's call log, without its background thread (tests flush on demand)."""
    log = audit.call_log()
    log.clear()
    background, log.background = log.background, False
    yield log
    log.clear()
    log.background = background


def test_the_receiver_is_connected():
    assert governance.tool_called in tool_called._receivers


def test_calls_are_recorded_after_flush(log):
    send(called())
    send(called("fail", outcome="error", error="Unknown tool: fail"))
    assert AuditEntry.objects.count() == 0  # nothing written on the call's path
    assert audit.flush() == 2
    ok, failed = AuditEntry.objects.order_by("pk")
    assert (ok.action, ok.actor, ok.via, ok.kind, ok.target, ok.outcome) == ("call", "ann", "mcp", "tool", "echo", "ok")
    assert ok.detail == {"server": "demo", "session": "s-1", "gateway": "fx", "seconds": 0.0123}
    assert (failed.outcome, failed.detail["error"]) == ("error", "Unknown tool: fail")


def test_arguments_only_by_setting_and_redacted(log):
    send(called())
    audit.flush()
    assert "arguments" not in AuditEntry.objects.get().detail
    with override_settings(GATEWAY_AUDIT_ARGUMENTS=True):
        send(called("second"))
        audit.flush()
    stored = AuditEntry.objects.get(target="second").detail["arguments"]
    assert stored == {"q": "owls", "api_key": "(redacted)", "nested": {"Password": "(redacted)"}}


@override_settings(GATEWAY_AUDIT_CALLS=False)
def test_calls_audit_switched_off_queues_nothing(log):
    send(called())
    assert log.pending() == 0


def test_a_full_queue_drops_and_counts_without_blocking():
    small = audit.CallLog(capacity=3, interval=0)
    started = time.perf_counter()
    results = [small.offer(called(str(i))) for i in range(10)]
    assert time.perf_counter() - started < 0.05
    assert results == [True] * 3 + [False] * 7
    assert (small.pending(), small.dropped) == (3, 7)
    assert small.flush() == 3
    assert AuditEntry.objects.count() == 3


def test_flush_writes_in_batches():
    batched = audit.CallLog(batch=4, interval=0)
    for i in range(10):
        batched.offer(called(str(i)))
    assert batched.flush() == 10
    assert AuditEntry.objects.filter(action="call").count() == 10


@pytest.mark.django_db(transaction=True)
def test_the_background_writer_writes_within_a_second_or_two():
    writer = audit.CallLog(interval=0.1)
    writer.offer(called("bg"))
    deadline = time.monotonic() + 5
    while not AuditEntry.objects.filter(target="bg").exists():
        assert time.monotonic() < deadline, "the writer thread wrote nothing"
        time.sleep(0.05)
