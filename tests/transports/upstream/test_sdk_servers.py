"""The upstream clients against real servers built with the official `mcp` SDK (HTTP, SSE, stdio)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.transports.upstream.conftest import eventually
from transports.protocol.upstream import (
    SUPPORTED_PROTOCOL_VERSIONS,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeout,
)


def text_of(result: dict[str, Any]) -> str:
    return str(result["content"][0]["text"])


async def call(client: UpstreamClient, tool: str, **kwargs: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": kwargs.pop("arguments", {})}
    if "token" in kwargs:
        params["_meta"] = {"progressToken": kwargs.pop("token")}
    return await client.request("tools/call", params, **kwargs)


async def sleeps_seen(client: UpstreamClient) -> dict[str, list[str]]:
    result = await call(client, "cancelled")
    return dict(result["structuredContent"])


async def test_connect_returns_the_initialize_result(client: UpstreamClient) -> None:
    result = client.initialize_result
    assert client.connected
    assert result is not None
    assert result["protocolVersion"] in SUPPORTED_PROTOCOL_VERSIONS
    assert result["serverInfo"]["name"] == "fixture"
    assert result["instructions"] == "Test upstream for the gateway."
    assert "tools" in result["capabilities"]
    assert await client.connect() is result  # idempotent while connected


async def test_tools_list_and_call(client: UpstreamClient) -> None:
    tools = await client.request("tools/list")
    assert {"echo", "progress", "sleep", "ask_name"} <= {tool["name"] for tool in tools["tools"]}
    result = await call(client, "echo", arguments={"text": "hello upstream"})
    assert text_of(result) == "hello upstream"
    assert result["isError"] is False


async def test_progress_goes_to_on_message_with_the_callers_token(client: UpstreamClient) -> None:
    seen: list[dict[str, Any]] = []

    async def on_message(message: dict[str, Any]) -> None:
        seen.append(message)

    result = await call(client, "progress", arguments={"steps": 3}, token="tok-1", on_message=on_message)
    assert text_of(result) == "did 3 steps"
    progress = [m["params"] for m in seen if m["method"] == "notifications/progress"]
    assert [(p["progressToken"], p["progress"], p["total"]) for p in progress] == [
        ("tok-1", 1, 3),
        ("tok-1", 2, 3),
        ("tok-1", 3, 3),
    ]


async def test_log_message_goes_to_on_message(client: UpstreamClient) -> None:
    seen: list[dict[str, Any]] = []

    async def on_message(message: dict[str, Any]) -> None:
        seen.append(message)

    result = await call(client, "log", arguments={"message": "hi from the tool"}, on_message=on_message)
    assert text_of(result) == "logged"
    logs = [m["params"] for m in seen if m["method"] == "notifications/message"]
    assert logs
    assert logs[0]["data"] == "hi from the tool"


async def test_elicitation_is_answered_by_on_message(client: UpstreamClient) -> None:
    asked: list[dict[str, Any]] = []

    async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("method") == "elicitation/create":
            asked.append(message)
            return {"result": {"action": "accept", "content": {"name": "Ada"}}}
        return None

    result = await call(client, "ask_name", on_message=on_message)
    assert text_of(result) == "hello Ada"
    assert asked[0]["params"]["message"] == "What is your name?"


async def test_sampling_is_answered_by_on_message(client: UpstreamClient) -> None:
    async def on_message(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("method") == "sampling/createMessage":
            prompt = message["params"]["messages"][0]["content"]["text"]
            return {
                "result": {
                    "role": "assistant",
                    "content": {"type": "text", "text": prompt.upper()},
                    "model": "test-model",
                    "stopReason": "endTurn",
                }
            }
        return None

    result = await call(client, "sample", arguments={"prompt": "shout"}, on_message=on_message)
    assert text_of(result) == "model said: SHOUT"


async def test_unhandled_server_request_is_refused(client: UpstreamClient) -> None:
    """No on_message and no notification handler: the upstream's request gets -32601 (which the SDK
    server passes on as the error of the tool call)."""
    with pytest.raises(UpstreamError) as caught:
        await call(client, "ask_name")
    assert caught.value.code == -32601


async def test_server_request_without_on_message_goes_to_the_notification_handler(client: UpstreamClient) -> None:
    async def handler(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("method") == "elicitation/create":
            return {"result": {"action": "accept", "content": {"name": "Grace"}}}
        return None

    client.set_notification_handler(handler)
    result = await call(client, "ask_name")
    assert text_of(result) == "hello Grace"


async def test_jsonrpc_error_becomes_upstream_error(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamError) as caught:
        await call(client, "fail", arguments={"code": -32042})
    assert caught.value.code == -32042
    assert caught.value.message == "requested failure"
    assert caught.value.data == {"why": "test"}
    with pytest.raises(UpstreamError) as unknown:
        await client.request("no/such/method")
    assert unknown.value.code == -32601
    assert text_of(await call(client, "echo", arguments={"text": "still fine"})) == "still fine"


async def test_timeout_raises_and_cancels_upstream(client: UpstreamClient) -> None:
    with pytest.raises(UpstreamTimeout):
        await call(client, "sleep", arguments={"seconds": 10}, timeout=0.5)

    async def cancelled() -> bool:
        seen = await sleeps_seen(client)
        return bool(seen["started"]) and set(seen["started"]) <= set(seen["cancelled"])

    await eventually(cancelled)


async def test_cancelling_the_caller_cancels_upstream(client: UpstreamClient) -> None:
    before = await sleeps_seen(client)
    task = asyncio.create_task(call(client, "sleep", arguments={"seconds": 10}))

    async def started() -> bool:
        return len((await sleeps_seen(client))["started"]) > len(before["started"])

    await eventually(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def cancelled() -> bool:
        seen = await sleeps_seen(client)
        return len(seen["cancelled"]) > len(before["cancelled"])

    await eventually(cancelled)
    assert text_of(await call(client, "echo", arguments={"text": "after cancel"})) == "after cancel"


async def test_concurrent_requests_share_one_connection(client: UpstreamClient) -> None:
    progress: list[list[tuple[str, float]]] = [[] for _ in range(6)]

    def recorder(index: int) -> Any:
        async def on_message(message: dict[str, Any]) -> None:
            if message["method"] == "notifications/progress":
                params = message["params"]
                progress[index].append((params["progressToken"], params["progress"]))

        return on_message

    echoes = [call(client, "echo", arguments={"text": f"n{i}"}) for i in range(20)]
    # The last two calls use the same progress token at once: each still gets only its own progress.
    tokens = ["p0", "p1", "p2", "p3", "same", "same"]
    steps = [
        call(client, "progress", arguments={"steps": 2}, token=token, on_message=recorder(i))
        for i, token in enumerate(tokens)
    ]
    results = await asyncio.gather(*echoes, *steps)
    assert [text_of(r) for r in results[:20]] == [f"n{i}" for i in range(20)]
    assert all(text_of(r) == "did 2 steps" for r in results[20:])
    for token, seen in zip(tokens, progress, strict=True):
        assert seen == [(token, 1), (token, 2)]
