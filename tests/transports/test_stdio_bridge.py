"""The stdio wrapper: `manage.py mcp_stdio` and `scripts/mcp-gateway-stdio` run as real subprocesses
between stdio MCP clients (the official Python SDK, the Inspector CLI) and a live gateway that has the
project's fixture upstream registered as 'fx' in the virtual server 'demo'.

Spec references: basic/transports "stdio" (newline-delimited JSON-RPC; the server writes nothing to
stdout that is not an MCP message, logs go to stderr) and "Streamable HTTP" (sessions, the GET stream,
resumability); basic/lifecycle; utilities/progress; utilities/cancellation; client/elicitation;
server/tools "List Changed Notification". 2026-07-28: basic/index (the `_meta` envelope),
basic/transports/streamable-http "Request Metadata" (MCP-Protocol-Version, Mcp-Method, Mcp-Name,
Mcp-Param-*), basic/patterns/mrtr (input_required rounds), basic/patterns/subscriptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time

import anyio
import mcp.types as types
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from tests.fixtures.servers import running_upstream
from tests.live_gateway import free_port, start_live_gateway
from tests.tools import ROOT, ensure_node_tools, inspector_cmd

MODES = ["legacy", "2026-07-28"]
ENTRIES = {
    "manage": [sys.executable, "manage.py", "mcp_stdio"],
    "script": [str(ROOT / "scripts" / "mcp-gateway-stdio")],
}


def wrapper_argv(gateway, entry: str = "manage", server: str | None = "demo", *extra: str) -> list[str]:
    return [*ENTRIES[entry], "--url", gateway.mcp_url(server), *extra]


def wrapper_env(gateway) -> dict[str, str]:
    """The token travels in the environment, not on the command line (process listings show argv)."""
    return {**gateway.env, "MCP_GATEWAY_TOKEN": gateway.token, "MCP_GATEWAY_PYTHON": sys.executable}


def wrapper(gateway, entry: str = "manage", server: str | None = "demo", *extra: str) -> StdioServerParameters:
    argv = wrapper_argv(gateway, entry, server, *extra)
    return StdioServerParameters(command=argv[0], args=argv[1:], env=wrapper_env(gateway), cwd=str(ROOT))


class Heard:
    """A message_handler that remembers the methods of the notifications it got."""

    def __init__(self) -> None:
        self.methods: list[str] = []

    async def __call__(self, message) -> None:
        root = getattr(message, "root", message)
        method = getattr(root, "method", None)
        if method:
            self.methods.append(method)

    async def wait_for(self, method: str, seconds: float = 15) -> None:
        with anyio.fail_after(seconds):
            while method not in self.methods:
                await anyio.sleep(0.05)


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    """A gateway (authentication on) with the dual-era fixture upstream as 'fx' in server 'demo'."""
    with (
        running_upstream("streamable-http", era="auto") as upstream,
        start_live_gateway(tmp_path_factory.mktemp("stdio-relay")) as gateway,
    ):
        assert "Registered 'fx'" in gateway.manage("gateway_add", "fx", "--url", upstream.url)
        gateway.manage("server_add", "demo", "--gateway", "fx")
        yield gateway


# -- through the official SDK's stdio client ----------------------------------------------------------


@pytest.mark.parametrize("entry", list(ENTRIES))
@pytest.mark.parametrize("mode", MODES)
async def test_tools_are_listed_and_called_over_stdio(relay, mode, entry):
    """A stdio client lists and calls the gateway's tools through either entry point, in either era (the
    session era through the client's own initialize; 2026-07-28 statelessly, one POST per request)."""
    async with Client(wrapper(relay, entry), mode=mode) as client:
        assert client.protocol_version == {"legacy": "2025-11-25", "2026-07-28": "2026-07-28"}[mode]
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"echo", "test_simple_text", "test_header_param"} <= names
        result = await client.call_tool("echo", {"message": "over stdio"})
        assert result.content[0].text == "over stdio"
        assert (await client.call_tool("test_error_handling", {})).is_error
        # an x-mcp-header argument: the wrapper mirrors it into Mcp-Param-Region for 2026-07-28
        region = await client.call_tool("test_header_param", {"region": "eu-west"})
        assert region.content[0].text == "region=eu-west"
        read = await client.read_resource("test://static-text")
        assert read.contents[0].text
        prompt = await client.get_prompt("test_prompt_with_arguments", {"arg1": "a", "arg2": "b"})
        assert prompt.messages


async def test_a_header_argument_works_before_the_tools_were_listed(relay):
    """2026-07-28: a tools/call whose tool mirrors an argument into a header (x-mcp-header), sent before
    any tools/list, gets -32020 from the gateway; the wrapper then learns the tool's annotations and sends
    it again with Mcp-Param-Region, so the client never sees the header rule stdio does not have."""
    async with Client(wrapper(relay), mode="2026-07-28") as client:
        region = await client.call_tool("test_header_param", {"region": "ap-south"})
        assert region.content[0].text == "region=ap-south"


@pytest.mark.parametrize("mode", MODES)
async def test_progress_reaches_the_stdio_client(relay, mode):
    """utilities/progress: the upstream's progress arrives on the call's SSE answer and is written to
    stdout with the client's own token."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async with Client(wrapper(relay), mode=mode) as client:
        result = await client.call_tool("test_tool_with_progress", {}, progress_callback=on_progress)
        assert not result.is_error
    assert len(seen) >= 2
    assert seen == sorted(seen)


@pytest.mark.parametrize("mode", MODES)
async def test_an_elicitation_round_trip_over_stdio(relay, mode):
    """client/elicitation: session era, the gateway's elicitation/create request is written to stdout and
    the client's answer POSTed back; 2026-07-28, the input_required result and the client's retry with
    inputResponses pass through (basic/patterns/mrtr). Either way the SDK callback answers."""
    asked: list[str] = []

    async def elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async with Client(wrapper(relay), mode=mode, elicitation_callback=elicit) as client:
        result = await client.call_tool("test_elicitation", {"message": "Who are you?"})
    assert asked == ["Who are you?"]
    assert not result.is_error
    assert "accept" in result.content[0].text


async def test_list_changed_reaches_a_session_client_over_the_get_stream(relay):
    """server/tools "List Changed Notification": the upstream changes its tools, the gateway re-reads it
    and sends notifications/tools/list_changed on the session's GET stream, which the wrapper keeps open
    and relays to stdout."""
    heard = Heard()
    async with Client(wrapper(relay), mode="legacy", message_handler=heard) as client:
        before = {t.name for t in (await client.list_tools()).tools}
        await client.call_tool("test_trigger_tool_change", {})
        await heard.wait_for("notifications/tools/list_changed")
        after = {t.name for t in (await client.list_tools()).tools}
        assert ("test_dynamic_tool" in before) != ("test_dynamic_tool" in after)
        await client.call_tool("test_trigger_tool_change", {})  # put it back


async def test_list_changed_reaches_a_modern_client_on_its_listen_stream(relay):
    """basic/patterns/subscriptions: subscriptions/listen is relayed as a long-lived POST; the
    acknowledgement and then the list change arrive on stdout tagged with the subscription id."""
    async with Client(wrapper(relay), mode="2026-07-28") as client:
        async with client.listen(tools_list_changed=True) as subscription:
            await client.call_tool("test_trigger_tool_change", {})
            with anyio.fail_after(15):
                async for event in subscription:
                    assert type(event).__name__ == "ToolsListChanged"
                    break
        await client.call_tool("test_trigger_tool_change", {})  # put it back


# -- stdout carries MCP and nothing else ---------------------------------------------------------------


def _initialize(request_id: int = 0) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }


class RawClient:
    """The wrapper as a subprocess with pipes, spoken to one line at a time."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.lines: list[bytes] = []

    def send(self, message: dict | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        assert self.process.stdin is not None
        self.process.stdin.write(data + b"\n")
        self.process.stdin.flush()

    def receive(self) -> dict:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the wrapper closed stdout: " + self.stderr()
        self.lines.append(line)
        return json.loads(line)

    def answer_to(self, request_id) -> dict:
        while True:
            message = self.receive()
            if message.get("id") == request_id and "method" not in message:
                return message

    def close(self) -> tuple[bytes, bytes]:
        """Close stdin (the client is done) and collect what is left."""
        out, err = self.process.communicate(timeout=20)
        self.lines.extend(out.splitlines(keepends=True))
        return out, err

    def stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.process.kill()
            return self.process.communicate(timeout=5)[1].decode(errors="replace")
        return ""


def test_stdout_carries_only_json_rpc_lines_and_logs_go_to_stderr(relay):
    """basic/transports stdio: every line on stdout is one JSON-RPC 2.0 message, even with the wrapper
    logging at DEBUG; notifications get no answer; a line that is not JSON gets a -32700 error (id null);
    the process exits 0 when stdin closes."""
    raw = RawClient(wrapper_argv(relay, "manage", "demo", "--log-level", "DEBUG"), wrapper_env(relay))
    try:
        raw.send(_initialize(1))
        init = raw.answer_to(1)
        assert init["result"]["protocolVersion"] == "2025-11-25"
        raw.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        raw.send(b"this is not json")
        parse_error = raw.receive()
        assert parse_error["id"] is None
        assert parse_error["error"]["code"] == -32700
        raw.send({"jsonrpc": "2.0", "id": "p", "method": "ping"})
        assert raw.answer_to("p")["result"] == {}
        raw.send(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "t"}},
            }
        )
        answer = raw.answer_to(2)
        assert not answer["result"].get("isError")
        raw.send({"jsonrpc": "2.0", "id": 3, "method": "no/such/method"})
        assert raw.answer_to(3)["error"]["code"] == -32601
    finally:
        _, err = raw.close()
    assert raw.process.returncode == 0
    assert raw.lines
    progress = 0
    for line in raw.lines:
        assert line.endswith(b"\n")
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        assert ("method" in message) or ("result" in message) != ("error" in message)
        progress += message.get("method") == "notifications/progress"
    assert progress >= 2
    assert b"session open" in err  # the DEBUG/INFO logs went to stderr


def test_a_wrong_token_is_a_clear_json_rpc_error(relay):
    """The gateway's 401 becomes the JSON-RPC error of the request (the gateway's own message), and the
    wrapper says on stderr where the token comes from."""
    env = {**wrapper_env(relay), "MCP_GATEWAY_TOKEN": "not-a-token"}
    raw = RawClient(wrapper_argv(relay), env)
    try:
        raw.send(_initialize(1))
        error = raw.answer_to(1)["error"]
        assert "bearer token" in error["message"]
    finally:
        _, err = raw.close()
    assert b"HTTP 401" in err
    assert b"MCP_GATEWAY_TOKEN" in err


# -- the gateway restarts ------------------------------------------------------------------------------


@pytest.fixture
def restartable(tmp_path):
    """A gateway on a fixed port that the test can stop and start again (same database, same port)."""
    port = free_port()
    state = tmp_path / "gateway"
    state.mkdir()
    stack = contextlib.ExitStack()
    upstream = stack.enter_context(running_upstream("streamable-http", era="auto"))

    class Restartable:
        gateway = None
        current: contextlib.ExitStack | None = None

        def start(self):
            self.current = contextlib.ExitStack()
            self.gateway = self.current.enter_context(start_live_gateway(state, port=port))
            return self.gateway

        def stop(self):
            assert self.current is not None
            self.current.close()
            self.current = None

    handle = Restartable()
    gateway = handle.start()
    gateway.manage("gateway_add", "fx", "--url", upstream.url)
    gateway.manage("server_add", "demo", "--gateway", "fx")
    try:
        yield handle
    finally:
        if handle.current is not None:
            handle.stop()
        stack.close()


async def test_a_session_survives_a_gateway_restart(restartable):
    """The gateway restarts between two calls (it forgets every session): the wrapper notices on its GET
    stream, initializes again with the client's original initialize params, and the client carries on
    in the same stdio session, told that the lists may have changed (tools/list_changed)."""
    gateway = restartable.gateway
    heard = Heard()
    async with Client(wrapper(gateway), mode="legacy", message_handler=heard) as client:
        assert (await client.call_tool("echo", {"message": "before"})).content[0].text == "before"
        await client.set_logging_level("info")
        await asyncio.to_thread(restartable.stop)
        await asyncio.to_thread(restartable.start)
        await heard.wait_for("notifications/tools/list_changed", 30)
        assert (await client.call_tool("echo", {"message": "after"})).content[0].text == "after"
        assert "echo" in {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("mode", MODES)
async def test_a_request_made_while_the_gateway_is_down_waits_for_it(restartable, mode):
    """A request sent while the gateway is down is held (up to --reconnect-timeout) and answered once the
    gateway is back; in the session era after a transparent re-initialize."""
    gateway = restartable.gateway
    async with Client(wrapper(gateway), mode=mode) as client:
        assert (await client.call_tool("echo", {"message": "one"})).content[0].text == "one"
        await asyncio.to_thread(restartable.stop)
        started = time.monotonic()
        call = asyncio.ensure_future(client.call_tool("echo", {"message": "two"}))
        await asyncio.sleep(1.0)
        assert not call.done()
        await asyncio.to_thread(restartable.start)
        result = await asyncio.wait_for(call, 60)
        assert result.content[0].text == "two"
        assert time.monotonic() - started > 1.0


async def test_a_call_in_flight_when_the_gateway_dies_gets_a_clean_error(restartable):
    """A tools/call whose gateway goes away mid-call (here: while the client answers an elicitation) is not
    sent again (it may have run): the client gets a -32000 error saying so, and the next call works."""
    gateway = restartable.gateway

    async def elicit(context, params):
        await asyncio.to_thread(restartable.stop)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.com"})

    async with Client(wrapper(gateway), mode="legacy", elicitation_callback=elicit) as client:
        with pytest.raises(MCPError) as failed:
            await client.call_tool("test_elicitation", {"message": "Who are you?"})
        assert failed.value.error.code == -32000
        assert "may or may not" in failed.value.error.message
        await asyncio.to_thread(restartable.start)
        assert (await client.call_tool("echo", {"message": "again"})).content[0].text == "again"


# -- a desktop-style launch: the Inspector CLI starts the wrapper as its stdio server -----------------


@pytest.mark.conformance
@pytest.mark.parametrize("call", [False, True], ids=["tools-list", "tools-call"])
def test_the_inspector_cli_uses_the_wrapper_as_a_stdio_server(relay, call):
    """`mcp-inspector --cli -e MCP_GATEWAY_TOKEN=... --method ... -- mcp-gateway-stdio --url URL`: the
    Inspector (TS SDK) launches the wrapper as its stdio server with the token in the environment; `--`
    keeps the wrapper's options (--log-level, --header) from being read as the Inspector's."""
    ensure_node_tools()
    argv = [
        *inspector_cmd(),
        "--cli",
        "-e",
        f"MCP_GATEWAY_TOKEN={relay.token}",
        "-e",
        f"MCP_GATEWAY_PYTHON={sys.executable}",
        "--method",
        "tools/call" if call else "tools/list",
        *(["--tool-name", "echo", "--tool-arg", "message=hello-from-inspector"] if call else []),
        "--format",
        "json",
        "--",
        *ENTRIES["script"],
        "--url",
        relay.mcp_url("demo"),
        "--log-level",
        "INFO",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=os.environ.copy())
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-3000:]
    assert "mcp-gateway-stdio INFO: session open" in result.stderr  # it went through the wrapper
    answer = json.loads(result.stdout)
    if call:
        assert answer["result"]["content"][0]["text"] == "hello-from-inspector"
    else:
        assert "echo" in {tool["name"] for tool in answer["result"]["tools"]}
