"""An upstream that dies mid-call, hangs or answers garbage: the caller gets a JSON-RPC error within
the timeout, the gateway stays up, and other sessions are unaffected."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.live_gateway import start_live_gateway
from tests.transports.test_streamable_http import Raw

SCRIPT = Path(__file__).with_name("misbehaving_upstream.py")


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    with start_live_gateway(tmp_path_factory.mktemp("bad-upstreams"), GATEWAY_TOOL_TIMEOUT="2") as gateway:
        gateway.manage("gateway_add", "bad", "--command", sys.executable, "--arg", str(SCRIPT))
        yield gateway


def test_an_upstream_that_dies_mid_call(bad):
    """The call fails with -32000 naming the upstream; the next call starts the process again and works."""
    raw = Raw(bad)
    raw.initialize()
    error = raw.call("tools/call", {"name": "die", "arguments": {}})["error"]
    assert error["code"] == -32000
    assert "bad" in error["message"]
    assert raw.call("tools/call", {"name": "ok", "arguments": {}})["result"]["content"][0]["text"] == "fine"


def test_an_upstream_that_hangs_times_out(bad):
    """A call that gets no answer ends with -32001 after the tool timeout (GATEWAY_TOOL_TIMEOUT=2 here)."""
    raw = Raw(bad)
    raw.initialize()
    started = time.monotonic()
    error = raw.call("tools/call", {"name": "hang", "arguments": {}})["error"]
    assert error["code"] == -32001
    assert time.monotonic() - started < 10
    other = Raw(bad)  # another session meanwhile is fine
    other.initialize()
    assert other.call("tools/call", {"name": "ok", "arguments": {}})["result"]["content"][0]["text"] == "fine"


def test_an_upstream_that_answers_garbage(bad):
    """Noise and a malformed result become a JSON-RPC error, not a 500 or a hang."""
    raw = Raw(bad)
    raw.initialize()
    answer = raw.call("tools/call", {"name": "garbage", "arguments": {}})
    assert "error" in answer, answer
    assert raw.call("ping") == {"jsonrpc": "2.0", "id": 7, "result": {}}


def test_a_cancelled_call_ends_without_an_answer(bad):
    """notifications/cancelled (utilities/cancellation) stops the call: its stream ends with no response."""
    import threading

    raw = Raw(bad)
    raw.initialize()
    outcome: dict = {}

    def call() -> None:
        started = time.monotonic()
        response = raw.post(
            {"jsonrpc": "2.0", "id": 41, "method": "tools/call", "params": {"name": "hang", "arguments": {}}}
        )
        outcome["seconds"] = time.monotonic() - started
        outcome["text"] = response.text

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    cancel = raw.post(
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41, "reason": "no"}}
    )
    assert cancel.status_code == 202
    thread.join(10)
    assert outcome["seconds"] < 1.8  # before the 2 s tool timeout would have answered
    assert '"result"' not in outcome["text"]
    assert '"error"' not in outcome["text"]
