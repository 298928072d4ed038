"""The benchmark's paths, hosts and limits, shared by its modules (bench/run.py and its siblings)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
DOC_PATH = ROOT / "docs" / "performance.md"
UPSTREAM_SCRIPT = ROOT / "tests" / "fixtures" / "upstream_server.py"
# The scale-out cells' upstream: an MCP server far cheaper per call than the fixture (bench/fast_upstream.py).
FAST_UPSTREAM_SCRIPT = ROOT / "bench" / "fast_upstream.py"
# Concurrencies of the scale-out cells (unless --concurrency names others): enough to keep two workers busy.
SCALE_CONCURRENCY = (32, 128)
# The REST-tool workload's API: the tests' HTTP server (tests/fixtures/http_api.py) in its own process.
REST_API_MODULE = "tests.fixtures.http_api"
REST_TOOL = "rest_echo"
PYTHON = sys.executable
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/1")
MANY_TOOLS = 10_000
MANY_TOOLS_PAGE = 100  # the gateway's default GATEWAY_MCP_PAGE_SIZE; the upstream pages the same way
# Bulk upstreams: the fixture serving exactly N tools (bulk_0000...) and nothing else of its own tools. `direct`
# talks to each; gateways and ContextForge register only the largest and serve the smaller sizes through virtual
# servers holding exactly its first N tools, so every target lists the same number of tools.
BULK_SIZES = {"b10": 10, "b1k": 1_000, "b10k": MANY_TOOLS}
BULK_SOURCE = "b10k"
GC_PROBE_DIR = ROOT / "bench" / "gcprobe"  # sitecustomize.py: logs GC pauses when BENCH_GC_LOG is set
PY_SPY = ROOT / ".tools" / "bin" / "py-spy"
MIN_OPS = 3  # a cell's window is stretched until this many operations completed (slow targets, long walks)...
MAX_CELL_SECONDS = 45.0  # ...up to this long
FINDINGS_PATH = ROOT / "bench" / "findings.md"  # hand-written findings, embedded in docs/performance.md
