"""The official MCP conformance harness's client scenarios against our Streamable HTTP client.

Uses the project's Node tools (`make node-tools`, installed on first use by `tests.tools`): Node 22,
@modelcontextprotocol/conformance 0.1.16 (session-era scenarios) and 0.2.0-alpha.12 (the 2026-07-28
client scenarios that do not need OAuth). `conformance_client.py` is the adapter the harness runs; its
client is in `era="auto"`, so each scenario also checks the era detection against the harness's servers.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import NodeToolsUnavailable, conformance_cmd, ensure_node_tools

ADAPTER = Path(__file__).with_name("conformance_client.py")


MODERN_SCENARIOS = [
    "tools_call",
    "request-metadata",
    "sep-2322-client-request-state",
    "http-standard-headers",
    "http-custom-headers",
    "http-invalid-tool-headers",
    "json-schema-ref-no-deref",
    "json-schema-2020-12-preservation",
]
RUNS = [("0.1.16", s) for s in ["initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults"]] + [
    ("0.2.0-alpha.12", s) for s in MODERN_SCENARIOS
]


@pytest.mark.conformance
@pytest.mark.parametrize(("version", "scenario"), RUNS)
def test_conformance_client_scenario(version: str, scenario: str) -> None:
    """basic/versioning, basic/index "_meta", streamable-http "Request Metadata" and "Custom Headers",
    basic/patterns/mrtr: as the official harness checks them."""
    try:
        ensure_node_tools()
    except NodeToolsUnavailable as exc:
        pytest.skip(f"the Node tools cannot be installed: {exc}")
    done = subprocess.run(
        [*conformance_cmd(version), "client", "--scenario", scenario, "--command", f"{sys.executable} {ADAPTER}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "OVERALL: PASSED" in output, output[-4000:]
