"""The official MCP conformance harness's client scenarios against our Streamable HTTP client.

Uses the project's Node tools (`make node-tools`, installed on first use by `tests.tools`): Node 22 and
@modelcontextprotocol/conformance 0.1.16. `conformance_client.py` is the adapter the harness runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools import NodeToolsUnavailable, conformance_cmd, ensure_node_tools

ADAPTER = Path(__file__).with_name("conformance_client.py")


@pytest.mark.conformance
@pytest.mark.parametrize("scenario", ["initialize", "tools_call", "sse-retry", "elicitation-sep1034-client-defaults"])
def test_conformance_client_scenario(scenario: str) -> None:
    try:
        ensure_node_tools()
    except NodeToolsUnavailable as exc:
        pytest.skip(f"the Node tools cannot be installed: {exc}")
    done = subprocess.run(
        [*conformance_cmd("0.1.16"), "client", "--scenario", scenario, "--command", f"{sys.executable} {ADAPTER}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "OVERALL: PASSED" in output, output[-4000:]
