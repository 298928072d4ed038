"""Definition drift end to end: a real upstream (tests/fixtures/drifting_server.py) changes a tool's
description between syncs; a live gateway keeps serving the approved description through the core's
tools/list until `manage.py drift_approve` approves the new one. And the command's own behaviour."""

from __future__ import annotations

import sys
import time
from io import StringIO
from pathlib import Path

import httpx2
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from registry.catalog_sync import gateway_catalog_apply
from registry.choices import SyncTrigger
from registry.models import Tool
from tests.factories import GatewayFactory
from tests.fixtures.drifting_server import write_state
from tests.live_gateway import start_live_gateway
from tests.sync_support import tool

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "drifting_server.py"
WAIT_BOUND = 15.0  # seconds a test waits for the gateway's snapshot to show a change


def listed(name: str, description: str) -> dict:
    return {"name": name, "description": description, "inputSchema": {"type": "object", "properties": {}}}


async def tools_of(gateway) -> dict[str, str]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gateway.token}"}, timeout=30)
    async with Client(streamable_http_client(gateway.mcp_url(), http_client=http), mode="legacy") as client:
        return {t.name: t.description or "" for t in (await client.list_tools()).tools}


async def wait_for(gateway, condition) -> dict[str, str]:
    deadline = time.monotonic() + WAIT_BOUND
    while True:
        tools = await tools_of(gateway)
        if condition(tools):
            return tools
        if time.monotonic() > deadline:
            raise AssertionError(f"the gateway's tools/list never showed the change: {tools}")
        time.sleep(0.2)


async def test_a_changed_description_is_held_until_approved(tmp_path):
    state = tmp_path / "tools.json"
    write_state(state, [listed("echo", "Echoes.")])
    (tmp_path / "gw").mkdir()
    with start_live_gateway(tmp_path / "gw", GATEWAY_DRIFT_POLICY="hold", GATEWAY_SCHEDULER="off") as gateway:
        args = ["--arg", str(SERVER), "--arg", "--state", "--arg", str(state)]
        out = gateway.manage("gateway_add", "drift", "--command", sys.executable, *args, "--era", "legacy")
        assert "Registered 'drift'" in out, out
        assert (await tools_of(gateway))["echo"] == "Echoes."

        # the upstream changes echo's description and adds a tool: the new tool is served at once,
        # echo's new description is held back
        write_state(state, [listed("echo", "Echoes, and now also deletes files."), listed("extra", "New.")])
        out = gateway.manage("gateway_refresh", "drift")
        assert "1 added" in out
        assert "1 held" in out
        tools = await wait_for(gateway, lambda tools: "extra" in tools)
        assert tools["echo"] == "Echoes."

        listing = gateway.manage("drift_approve", "--list")
        assert "echo (drift, since " in listing
        assert "description changed" in listing
        assert "Approved echo (drift): description changed." in gateway.manage("drift_approve", "echo")
        tools = await wait_for(gateway, lambda tools: tools.get("echo") != "Echoes.")
        assert tools["echo"] == "Echoes, and now also deletes files."
        assert "No changed definition waits" in gateway.manage("drift_approve", "--list")


# ---- the command, in process ------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("drift_approve", *args, stdout=out)
    return out.getvalue()


def sync(gateway, *tools):
    gateway_catalog_apply(
        gateway=gateway,
        tools=list(tools),
        resources=[],
        templates=[],
        prompts=[],
        detected_era="legacy",
        protocol_version="2025-11-25",
        server_info={},
        capabilities={},
        trigger=SyncTrigger.MANUAL,
        started_at=timezone.now(),
    )


@pytest.fixture
def held(db):
    """Two gateways, each with a tool whose changed description is held, and one unchanged tool."""
    one, two = GatewayFactory(name="one"), GatewayFactory(name="two")
    sync(one, tool("a", description="A."), tool("b", description="B."))
    sync(two, tool("c", description="C."))
    sync(one, tool("a", description="A2."), tool("b", description="B."))
    sync(two, tool("c", description="C2."))
    return one, two


def test_drift_approve_by_name_by_gateway_and_all(held):
    assert "a (one, since" in run("--list")
    assert run("a") == "Approved a (one): description changed.\n"
    assert Tool.objects.get(name="a").description == "A2."
    with pytest.raises(CommandError, match="No changed definition waits for approval for: a"):
        run("a")
    with pytest.raises(CommandError, match="No changed definition waits for approval for 'one'"):
        run("--gateway", "one")
    assert "Approved c (two)" in run("--gateway", "two")
    with pytest.raises(CommandError, match=r"No changed definition waits for approval\."):
        run("--all")


def test_drift_approve_refuses_unclear_requests(held):
    with pytest.raises(CommandError, match="Name the tools to approve, or give --gateway NAME or --all"):
        run()
    with pytest.raises(CommandError, match="No gateway named 'nope'"):
        run("--gateway", "nope")
    with pytest.raises(CommandError, match="for: b, zzz"):
        run("b", "zzz")  # b is known but unchanged, zzz unknown: nothing is approved
    assert Tool.objects.filter(pending_definition__isnull=False).count() == 2
    assert "Approved a (one)" in run("--all")
