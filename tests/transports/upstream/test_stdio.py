"""stdio specifics: the child process, its death, its stderr, its environment."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.transports.upstream.conftest import make_config
from transports.protocol.upstream import UpstreamUnavailable, create_client
from transports.protocol.upstream.stdio import StdioClient

RAW = Path(__file__).with_name("raw_stdio_server.py")


def stdio_client(**overrides: Any) -> StdioClient:
    client = create_client(make_config("stdio", **overrides))
    assert isinstance(client, StdioClient)
    return client


def raw_client(mode: str, **overrides: Any) -> StdioClient:
    return stdio_client(args=(str(RAW), mode), **overrides)


@pytest.fixture
async def sdk() -> AsyncIterator[StdioClient]:
    client = stdio_client()
    await client.connect()
    yield client
    await client.aclose()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def echo(client: StdioClient, text: str) -> str:
    result = await client.request("tools/call", {"name": "echo", "arguments": {"text": text}})
    return str(result["content"][0]["text"])


async def test_process_killed_mid_call_then_reconnect(sdk: StdioClient) -> None:
    pid = sdk.pid
    assert pid is not None
    call = asyncio.create_task(sdk.request("tools/call", {"name": "sleep", "arguments": {"seconds": 30}}))
    await asyncio.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(UpstreamUnavailable, match="exited with code -9"):
        await asyncio.wait_for(call, 5)
    assert not sdk.connected
    with pytest.raises(UpstreamUnavailable, match="not connected"):
        await sdk.request("tools/list")
    await sdk.connect()
    assert sdk.pid not in (None, pid)
    assert await echo(sdk, "alive again") == "alive again"


async def test_process_exit_code_is_reported(sdk: StdioClient) -> None:
    with pytest.raises(UpstreamUnavailable, match="exited with code 3"):
        await sdk.request("tools/call", {"name": "die", "arguments": {"code": 3}})


async def test_non_json_stdout_lines_are_skipped(caplog: pytest.LogCaptureFixture) -> None:
    client = raw_client("noise")
    with caplog.at_level(logging.WARNING, logger="transports.protocol.upstream"):
        await client.connect()
        assert (await client.request("ok")) == {}
        await client.aclose()
    assert any("not JSON" in record.message for record in caplog.records)


async def test_aclose_ends_the_process() -> None:
    client = stdio_client()
    await client.connect()
    pid = client.pid
    assert pid is not None
    assert alive(pid)
    await client.aclose()
    assert not alive(pid)
    assert not client.connected


async def test_sigkill_after_the_grace_period() -> None:
    client = raw_client("ignore-sigterm", shutdown_grace=0.3)
    await client.connect()
    pid = client.pid
    assert pid is not None
    started = time.monotonic()
    await client.aclose()
    assert time.monotonic() - started < 3
    assert not alive(pid)


async def test_early_notifications_reach_the_handler() -> None:
    seen: list[dict[str, Any]] = []

    async def handler(message: dict[str, Any]) -> None:
        seen.append(message)

    client = raw_client("early")
    client.set_notification_handler(handler)
    result = await client.connect()
    await client.aclose()
    assert result["protocolVersion"] == "2025-06-18"
    assert seen == [{"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "hi"}}]


async def test_malformed_response_is_unavailable_not_a_hang() -> None:
    client = raw_client("bad")
    await client.connect()
    try:
        with pytest.raises(UpstreamUnavailable, match="malformed response"):
            await asyncio.wait_for(client.request("bad"), 5)
        assert (await client.request("ok")) == {}
    finally:
        await client.aclose()


async def test_long_lines_are_bounded(caplog: pytest.LogCaptureFixture) -> None:
    client = raw_client("long-lines", max_message_size=4096)
    with caplog.at_level(logging.INFO):
        await client.connect()
        assert (await client.request("ok")) == {}
        await client.aclose()
    stderr = [r.getMessage() for r in caplog.records if r.name == "transports.protocol.upstream.stderr"]
    assert any("EEEE" in line for line in stderr)
    assert max(len(line) for line in stderr) < 2100
    assert any("longer than 4096" in r.getMessage() for r in caplog.records)


async def test_child_gets_an_allow_listed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_FOR_TEST", "do-not-leak")
    client = raw_client("env", env={"UPSTREAM_TOKEN": "for-the-child"})
    await client.connect()
    try:
        env = (await client.request("env"))["env"]
    finally:
        await client.aclose()
    assert env["UPSTREAM_TOKEN"] == "for-the-child"
    assert "GATEWAY_SECRET_FOR_TEST" not in env
    assert env.get("PATH") == os.environ.get("PATH")


async def test_missing_command_is_unavailable() -> None:
    client = stdio_client(command="/nonexistent/mcp-server", args=())
    with pytest.raises(UpstreamUnavailable, match="cannot start"):
        await client.connect()
    await client.aclose()


async def test_command_that_is_not_an_mcp_server_times_out_as_unavailable() -> None:
    client = stdio_client(command=sys.executable, args=("-c", "import time; time.sleep(30)"), connect_timeout=0.5)
    with pytest.raises(UpstreamUnavailable, match="handshake"):
        await client.connect()
    await client.aclose()
