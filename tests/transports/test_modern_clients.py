"""Real 2026-07-28 clients through the gateway: the official Python SDK pinned to the modern era
(`mcp.Client(..., mode="2026-07-28")`) and the Inspector CLI with `--protocol-era modern`, both against
npm @modelcontextprotocol/server-everything, a session-era-only upstream registered over stdio.

Every server-to-client request server-everything makes (elicitation, sampling) reaches a modern client
as an input_required round (basic/patterns/mrtr) that the SDK answers through its callbacks. Spec
references are to the MCP specification 2026-07-28: basic/index, basic/patterns/mrtr,
basic/transports/streamable-http, server/tools.
"""

from __future__ import annotations

import json
import subprocess

import httpx2
import mcp.types as types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.live_gateway import start_live_gateway
from tests.tools import ensure_node_tools, everything_server_cmd, inspector_cmd

pytestmark = pytest.mark.conformance  # needs the Node tools (installed on first use)

MODERN = "2026-07-28"
CONDITIONAL = {"trigger-elicitation-request": "elicitation", "trigger-sampling-request": "sampling"}


@pytest.fixture(scope="module")
def everything(tmp_path_factory):
    """A gateway (authentication on) with server-everything over stdio as 'everything', in server 'demo'."""
    ensure_node_tools()
    with start_live_gateway(tmp_path_factory.mktemp("modern-everything")) as gateway:
        node, *node_args = everything_server_cmd("stdio")
        args = [part for arg in node_args for part in ("--arg", arg)]
        out = gateway.manage("gateway_add", "everything", "--command", node, *args)
        assert "Registered 'everything'" in out, out
        gateway.manage("server_add", "demo", "--gateway", "everything")
        yield gateway


def modern_client(gateway, **callbacks) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
    return Client(streamable_http_client(gateway.mcp_url("demo"), http_client=http), mode=MODERN, **callbacks)


class Answers:
    """SDK callbacks that answer elicitation and sampling, and remember what they were asked."""

    def __init__(self) -> None:
        self.elicited: list[str] = []
        self.sampled: list[str] = []

    async def elicit(self, context, params) -> types.ElicitResult:
        self.elicited.append(params.message)
        return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})

    async def sample(self, context, params) -> types.CreateMessageResult:
        self.sampled.append(params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris"), model="test-model"
        )

    def callbacks(self) -> dict:
        return {"elicitation_callback": self.elicit, "sampling_callback": self.sample}


async def test_the_sdk_lists_and_calls_get_sum(everything):
    """basic/versioning: a client pinned to 2026-07-28 talks to the gateway without a handshake; server/tools:
    the upstream's tools are listed (with the ones server-everything offers only to clients that declare
    elicitation/sampling, since the gateway declares both upstream for such a client) and get-sum adds."""
    answers = Answers()
    async with modern_client(everything, **answers.callbacks()) as client:
        assert client.protocol_version == MODERN
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"echo", "get-sum", *CONDITIONAL} <= names
        result = await client.call_tool("get-sum", {"a": 2, "b": 40})
        assert not result.is_error
        assert result.content[0].text == "The sum of 2 and 40 is 42."


async def test_the_sdk_completes_an_elicitation_round(everything):
    """basic/patterns/mrtr: server-everything's elicitation/create (a session-era server-to-client request)
    arrives as an input_required round; the SDK answers it with its elicitation callback and retries, and the
    same upstream call completes with the answer."""
    answers = Answers()
    async with modern_client(everything, **answers.callbacks()) as client:
        result = await client.call_tool("trigger-elicitation-request", {})
    assert answers.elicited == ["Please provide inputs for the following fields:"]
    assert not result.is_error
    text = "\n".join(item.text for item in result.content)
    assert "User provided the requested information" in text
    assert "Name: Ada Lovelace" in text


async def test_the_sdk_completes_a_sampling_round(everything):
    """basic/patterns/mrtr and client/sampling: sampling/createMessage answered by the SDK's sampling callback."""
    answers = Answers()
    async with modern_client(everything, **answers.callbacks()) as client:
        result = await client.call_tool("trigger-sampling-request", {"prompt": "Capital of France?"})
    assert answers.sampled == ["Resource trigger-sampling-request context: Capital of France?"]
    assert not result.is_error
    sampled = json.loads(result.content[0].text.split("\n", 1)[1])
    assert sampled["content"]["text"] == "Paris"
    assert sampled["model"] == "test-model"


@pytest.mark.parametrize(("tool", "capability"), list(CONDITIONAL.items()))
async def test_a_tool_needing_an_undeclared_capability_names_it(everything, tool, capability):
    """basic/index "_meta": "If processing a request requires a capability the client did not include in
    clientCapabilities, the server MUST return a MissingRequiredClientCapabilityError (-32021) whose
    data.requiredCapabilities lists the missing capabilities." A tool the gateway lists to this client must
    therefore either work or fail that way."""
    async with modern_client(everything) as client:
        assert tool in {t.name for t in (await client.list_tools()).tools}
        with pytest.raises(MCPError) as refused:
            await client.call_tool(tool, {"prompt": "?"} if capability == "sampling" else {})
    assert refused.value.error.code == -32021
    assert capability in refused.value.error.data["requiredCapabilities"]


def inspector(gateway, *method: str) -> dict:
    argv = [
        *inspector_cmd(),
        "--cli",
        gateway.mcp_url("demo"),
        "--transport",
        "http",
        "--protocol-era",
        "modern",
        "--header",
        f"Authorization: Bearer {gateway.token}",
        *method,
        "--format",
        "json",
        "-q",
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_inspector_cli_in_the_modern_era_lists_and_gets_42(everything):
    """The Inspector CLI (TS SDK v2) with `--protocol-era modern` and a bearer token, through
    /servers/demo/mcp: tools/list, then tools/call get-sum a=2 b=40. The result carries the gateway's
    serverInfo in `_meta`, which only the 2026-07-28 side adds (basic/index "Per-response protocol fields")."""
    listed = inspector(everything, "--method", "tools/list")
    assert "get-sum" in {tool["name"] for tool in listed["result"]["tools"]}
    answer = inspector(everything, "--method", "tools/call", "--tool-name", "get-sum", "--tool-arg", "a=2", "b=40")[
        "result"
    ]
    assert answer["content"] == [{"type": "text", "text": "The sum of 2 and 40 is 42."}]
    assert answer["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "mcp-gateway"
