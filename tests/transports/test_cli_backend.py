"""CLI tools (docs/tool-backends.md "CLI"; issue 12 item 3): a program run with an argument list, never
through a shell, in a process group of its own that is stopped on timeout, cancellation and too much
output; stdout as text or JSON; a non-zero exit is a tool error with the end of stderr.

The program is tests/fixtures/argv_echo.py, which prints the argv, working directory and environment it
got. Calls go to the backend directly and through the gateway (tools/call on /mcp). Spec: 2025-11-25
server/tools ("Error Handling": tool execution errors are results with ``isError``; SEP-1303 for
argument errors) and basic/utilities/cancellation.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from registry.choices import IntegrationType
from tests.factories import ToolFactory
from tests.transports.test_backends import _stream
from tests.transports.test_hot_path import _close_worker_connections, asgi_post, world  # noqa: F401
from transports.protocol.backends import cli
from transports.protocol.backends.base import CallContext
from transports.protocol.backends.cli import ArgumentRefused, CliBackend, build_argv
from transports.protocol.catalog import ToolEntry
from transports.protocol.jsonrpc import JsonRpcError
from transports.protocol.outcome import Caller
from transports.runtime import get_core

ECHO = str(Path(__file__).resolve().parents[1] / "fixtures" / "argv_echo.py")


def _context(config: dict, *, timeout: float = 30.0, version: str = "2025-11-25") -> CallContext:
    tool = ToolEntry(
        name="echo",
        wire={},
        integration_type="cli",
        gateway=None,
        upstream_name="echo",
        timeout=None,
        backend_config=config,
    )
    session = SimpleNamespace(protocol_version=version, wants_log=lambda level: False)
    return CallContext(tool=tool, params={}, timeout=timeout, exchange=SimpleNamespace(session=session))


def _echo(*args: str, **config) -> dict:
    return {"command": sys.executable, "args": [ECHO, *args], **config}


def _printed(result: dict) -> dict:
    assert not result.get("isError"), result
    return json.loads(result["content"][0]["text"])


def _gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for a reaper counts as gone: it was killed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def _until(condition, what: str, limit: float = 20.0) -> None:
    """Wait for ``condition()`` (a liveness bound, not a timing assertion)."""
    for _ in range(int(limit / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


async def _pids(folder: Path) -> tuple[int, int]:
    await _until(lambda: (folder / "parent.pid").exists() and (folder / "child.pid").exists(), "the pid files")
    return int((folder / "parent.pid").read_text()), int((folder / "child.pid").read_text())


async def _assert_group_gone(folder: Path) -> None:
    parent, child = await _pids(folder)
    await _until(lambda: _gone(parent) and _gone(child), "the program and its child to be gone")
    assert not (folder / "survived").exists()


# -- the argument template ------------------------------------------------------------------------


def test_placeholders_become_whole_elements_spread_items_or_text():
    """{name} alone is one element, {name*} one per item, inside a longer element it is text; values
    other than strings are JSON; {{ and }} are literal braces."""
    template = ["-n", "--max-count={limit}", "--", "{pattern}", "{files*}", "-I{dirs*}", "{{}}", "{flag}", "{obj}"]
    arguments = {
        "limit": 3,
        "pattern": "a b",
        "files": ["x.txt", "y z.txt"],
        "dirs": ["/a", "/b"],
        "flag": True,
        "obj": {"k": [1, 2.5, None]},
    }
    assert build_argv(template, arguments) == [
        "-n",
        "--max-count=3",
        "--",
        "a b",
        "x.txt",
        "y z.txt",
        "-I/a",
        "-I/b",
        "{}",
        "true",
        '{"k":[1,2.5,null]}',
    ]


def test_an_element_whose_argument_is_left_out_is_dropped():
    """Missing and null arguments take their element with them; an empty array gives no element."""
    template = ["--limit={limit}", "{pattern}", "{files*}", "end"]
    assert build_argv(template, {"pattern": None, "files": []}) == ["end"]


@pytest.mark.parametrize("value", ["-rf", "--output=/etc/passwd", "-", "--"])
def test_a_value_starting_with_a_dash_is_refused_where_it_would_be_an_option(value):
    """Before a literal '--' element, a standalone value (or array item) that starts with '-' is refused,
    naming the argument and the rule."""
    with pytest.raises(ArgumentRefused) as refused:
        build_argv(["{pattern}"], {"pattern": value})
    assert refused.value.argument == "pattern"
    assert "'--'" in refused.value.message
    with pytest.raises(ArgumentRefused):
        build_argv(["{files*}"], {"files": ["ok", value]})


def test_a_value_starting_with_a_dash_is_an_operand_after_a_double_dash():
    """After the template's own '--' the program reads such values as operands; glued to literal text
    (``--max-count={limit}``) a value cannot become an option either."""
    assert build_argv(["--", "{pattern}", "{files*}"], {"pattern": "-rf", "files": ["--x"]}) == ["--", "-rf", "--x"]
    assert build_argv(["--max-count={limit}"], {"limit": -1}) == ["--max-count=-1"]


def test_a_double_dash_from_a_value_does_not_open_the_operands():
    """Only a literal '--' of the template counts: a client's '--' is itself refused."""
    with pytest.raises(ArgumentRefused):
        build_argv(["{a}", "{b}"], {"a": "--", "b": "-x"})


def test_the_value_that_would_start_an_element_is_the_one_named():
    """An empty first value lets the next one start the element: that argument is refused; text of
    the template's own at the start is not the client's to change."""
    with pytest.raises(ArgumentRefused) as refused:
        build_argv(["{a}{b}"], {"a": "", "b": "-x"})
    assert refused.value.argument == "b"
    assert build_argv(["{a}-{b}"], {"a": "", "b": "x"}) == ["-x"]


def test_a_nul_character_is_refused():
    with pytest.raises(ArgumentRefused, match="NUL"):
        build_argv(["--", "{value}"], {"value": "a\x00b"})


# -- running the program --------------------------------------------------------------------------

HOSTILE = [
    "--output=/etc/passwd",
    "; rm -rf {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "| cat > {marker}",
    "&& touch {marker}",
    "> {marker}",
    "line one\ntouch {marker}",
    "$HOME ~ * ?",
    "' \" \\",
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_hostile_arguments_arrive_as_one_literal_element_and_run_nothing(hostile, tmp_path):
    """Shell syntax and option-looking text reach the program byte for byte as one argv element each
    (after the template's '--'), and nothing they spell is run: the marker file is never created."""
    marker = tmp_path / "marker"
    value = hostile.format(marker=marker)
    config = _echo("--", "{value}", "{items*}", "x{value}")
    result = await CliBackend().call({"value": value, "items": [value, value]}, _context(config))
    printed = _printed(result)
    assert printed["argv"] == ["--", value, value, value, f"x{value}"]
    await asyncio.sleep(0.05)  # anything a shell had started would have had its moment
    assert not marker.exists()
    assert not list(tmp_path.iterdir())


async def test_an_option_looking_value_before_a_double_dash_is_refused_and_nothing_runs(tmp_path):
    """2025-11-25 and later: a tool error naming the argument (SEP-1303); the program is never started."""
    config = _echo("@spawn=" + str(tmp_path), "{value}")
    result = await CliBackend().call({"value": "--output=/etc/passwd"}, _context(config))
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "Invalid arguments for tool 'echo'" in text
    assert "'value'" in text
    assert "'--'" in text
    assert not list(tmp_path.iterdir())


async def test_an_option_looking_value_is_invalid_params_for_older_sessions():
    """Before 2025-11-25 argument errors are the protocol's -32602, with the field's JSON pointer."""
    with pytest.raises(JsonRpcError) as error:
        await CliBackend().call({"value": "-x"}, _context(_echo("{value}"), version="2025-06-18"))
    assert error.value.code == -32602
    assert error.value.data == {"field": "/value"}
    assert "'value'" in error.value.message


async def test_only_allowed_variables_and_path_are_passed(monkeypatch):
    """Nothing of the gateway's environment is inherited but PATH and the names the tool lists."""
    monkeypatch.setenv("CLI_TEST_ALLOWED", "yes")
    monkeypatch.setenv("CLI_TEST_SECRET", "do-not-leak")
    monkeypatch.delenv("CLI_TEST_ABSENT", raising=False)
    result = await CliBackend().call({}, _context(_echo(env=["CLI_TEST_ALLOWED", "CLI_TEST_ABSENT"])))
    env = _printed(result)["env"]
    assert env["CLI_TEST_ALLOWED"] == "yes"
    assert env["PATH"] == os.environ["PATH"]
    # LC_CTYPE may be set by the Python interpreter itself when it starts (PEP 538 locale coercion).
    assert set(env) - {"LC_CTYPE"} == {"PATH", "CLI_TEST_ALLOWED"}


async def test_the_program_runs_in_the_working_directory(tmp_path):
    result = await CliBackend().call({}, _context(_echo(cwd=str(tmp_path))))
    assert _printed(result)["cwd"] == str(tmp_path)


async def test_a_program_name_is_looked_up_on_path_when_called(monkeypatch):
    """A bare name is found on the gateway's PATH at call time."""
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    name = Path(sys.executable).name
    result = await CliBackend().call({}, _context({"command": name, "args": [ECHO, "hello"]}))
    assert _printed(result)["argv"] == ["hello"]


@pytest.mark.parametrize("command", ["no-such-program-4711", "/nonexistent/bin/tool", "bin/relative"])
async def test_a_missing_command_is_a_tool_error_naming_it(command):
    result = await CliBackend().call({}, _context({"command": command, "args": []}))
    assert result["isError"] is True
    assert repr(command) in result["content"][0]["text"]
    assert "not found" in result["content"][0]["text"]


async def test_a_non_zero_exit_is_a_tool_error_with_the_code_and_stderr():
    result = await CliBackend().call({}, _context(_echo("@exit=3", "@stderr=disk full: /srv")))
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert "exited with code 3" in text
    assert text.endswith("disk full: /srv")


async def test_the_stderr_quoted_in_an_error_is_its_bounded_end():
    """A program that writes much to stderr: the error quotes the end, and says what it left out."""
    result = await CliBackend().call({}, _context(_echo("@exit=1", "@stderr-bytes=300000")))
    text = result["content"][0]["text"]
    assert result["isError"] is True
    assert "left out" in text
    assert len(text) < 3000


async def test_stdout_is_the_text_result():
    result = await CliBackend().call({"value": "hi"}, _context(_echo("@raw=plain text {value}")))
    assert result == {"content": [{"type": "text", "text": "plain text hi"}]}


async def test_json_output_becomes_structured_content():
    result = await CliBackend().call({}, _context(_echo("a", output="json")))
    assert result["structuredContent"]["argv"] == ["a"]
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]


async def test_output_that_is_not_json_is_a_tool_error_with_an_excerpt():
    result = await CliBackend().call({}, _context(_echo("@raw=oops, not JSON", output="json")))
    assert result["isError"] is True
    assert "did not print valid JSON" in result["content"][0]["text"]
    assert "oops, not JSON" in result["content"][0]["text"]


async def test_too_much_output_stops_the_program_and_names_the_bound(tmp_path):
    """stdout is read incrementally up to max_output_bytes; beyond it the group is stopped."""
    config = _echo("@spawn=" + str(tmp_path), "@flood=5000000", "@sleep=30", max_output_bytes=4096)
    result = await CliBackend().call({}, _context(config))
    assert result["isError"] is True
    assert "max_output_bytes (4096 bytes)" in result["content"][0]["text"]
    await _assert_group_gone(tmp_path)


async def test_the_backend_bound_caps_the_tools_own():
    """A tool may ask for less output than GATEWAY_CLI_MAX_OUTPUT_BYTES, never more."""
    result = await CliBackend(max_output_bytes=2048).call({}, _context(_echo("@flood=10000", max_output_bytes=10**9)))
    assert "max_output_bytes (2048 bytes)" in result["content"][0]["text"]


async def test_a_timeout_stops_the_whole_process_group(tmp_path):
    """On timeout the program and the grandchild it started are stopped, and the call is a tool error."""
    config = _echo("@spawn=" + str(tmp_path), "@sleep=60")
    result = await CliBackend().call({}, _context(config, timeout=0.5))
    assert result["isError"] is True
    assert "did not finish within the tool's timeout (0.5 s)" in result["content"][0]["text"]
    await _assert_group_gone(tmp_path)


async def test_a_group_that_ignores_sigterm_is_killed(tmp_path, monkeypatch):
    """SIGTERM first, then SIGKILL after the grace period, for a program and child that ignore SIGTERM."""
    monkeypatch.setattr(cli, "KILL_GRACE_SECONDS", 0.2)
    config = _echo("@spawn=" + str(tmp_path), "@ignore-term", "@sleep=60")
    result = await CliBackend().call({}, _context(config, timeout=0.5))
    assert result["isError"] is True
    await _assert_group_gone(tmp_path)


async def test_cancelling_the_call_stops_the_whole_process_group(tmp_path, monkeypatch):
    """basic/utilities/cancellation: a cancelled call (CancelledError in the backend) stops the program
    and its grandchild, even when they ignore SIGTERM."""
    monkeypatch.setattr(cli, "KILL_GRACE_SECONDS", 0.2)
    config = _echo("@spawn=" + str(tmp_path), "@ignore-term", "@sleep=60")
    call = asyncio.create_task(CliBackend().call({}, _context(config)))
    await _pids(tmp_path)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await _assert_group_gone(tmp_path)


async def test_what_the_program_leaves_behind_is_stopped_when_it_exits(tmp_path):
    """A child still running when the program exits is part of the call's group and does not outlive it."""
    result = await CliBackend().call({}, _context(_echo("@spawn=" + str(tmp_path))))
    assert _printed(result)["argv"][0].startswith("@spawn=")
    await _assert_group_gone(tmp_path)


def test_only_definitions_the_backend_can_run_are_available():
    backend = CliBackend()
    assert backend.available(_context(_echo("{value}")).tool)
    assert not backend.available(_context({"command": ""}).tool)
    assert not backend.available(_context({"command": "x", "args": ["{bad"]}).tool)


# -- through the gateway --------------------------------------------------------------------------


async def _session(token: str, version: str = "2025-11-25") -> str:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    status, headers, _ = await asgi_post(init, token=token)
    assert status == 200
    return headers["mcp-session-id"]


def _call(name: str, arguments: dict, request_id: int = 3) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": name, "arguments": arguments},
    }


@pytest.fixture
def cli_tools(world, tmp_path):  # noqa: F811
    """CLI tools in the catalog, served by the gateway's own CLI backend."""
    token, _ = world
    schema = {
        "type": "object",
        "properties": {"value": {"type": "string"}, "files": {"type": "array", "items": {"type": "string"}}},
        "required": ["value"],
    }
    common = {"integration_type": IntegrationType.CLI, "gateway": None, "input_schema": schema}
    ToolFactory(name="echo_args", backend_config=_echo("--", "{value}", "{files*}"), **common)
    ToolFactory(name="echo_option", backend_config=_echo("{value}"), **common)
    ToolFactory(name="echo_slow", backend_config=_echo("@spawn=" + str(tmp_path), "@sleep=60", "{value}"), **common)
    ToolFactory(name="echo_timeout", timeout=0.5, backend_config=_echo("@sleep=60", "{value}"), **common)
    return token, tmp_path


@pytest.mark.django_db(transaction=True)
async def test_hostile_arguments_through_the_gateway_are_plain_data(cli_tools):
    """tools/call on /mcp: the tool is listed, and shell syntax arrives as literal argv elements."""
    token, folder = cli_tools
    session = await _session(token)
    listed = await asgi_post({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, token=token, session=session)
    assert "echo_args" in {tool["name"] for tool in listed[2]["result"]["tools"]}
    marker = folder / "marker"
    values = [f"$(touch {marker})", f"; rm -rf {folder}", "--output=/etc/passwd", f"`touch {marker}`"]
    _, _, answer = await asgi_post(
        _call("echo_args", {"value": values[0], "files": values[1:]}), token=token, session=session
    )
    assert _printed(answer["result"])["argv"] == ["--", *values]
    assert folder.exists()
    assert not marker.exists()


@pytest.mark.django_db(transaction=True)
async def test_an_option_looking_value_is_refused_through_the_gateway_in_both_eras(cli_tools):
    token, _ = cli_tools
    session = await _session(token)
    _, _, answer = await asgi_post(_call("echo_option", {"value": "-rf"}), token=token, session=session)
    assert answer["result"]["isError"] is True
    assert "'value'" in answer["result"]["content"][0]["text"]
    older = await _session(token, "2025-06-18")
    _, _, answer = await asgi_post(_call("echo_option", {"value": "-rf"}), token=token, session=older)
    assert answer["error"]["code"] == -32602


@pytest.mark.django_db(transaction=True)
async def test_the_tools_timeout_bounds_a_call_through_the_gateway(cli_tools):
    token, _ = cli_tools
    session = await _session(token)
    _, _, answer = await asgi_post(_call("echo_timeout", {"value": "x"}), token=token, session=session)
    assert answer["result"]["isError"] is True
    assert "timeout (0.5 s)" in answer["result"]["content"][0]["text"]


@pytest.mark.django_db(transaction=True)
async def test_a_cancelled_call_through_the_gateway_stops_the_process_group(cli_tools):
    """notifications/cancelled (basic/utilities/cancellation) for a running CLI call: no answer is sent,
    and the program and its grandchild are gone."""
    token, folder = cli_tools
    session = await _session(token)
    call = asyncio.create_task(_stream(_call("echo_slow", {"value": "x"}, request_id=41), token, session))
    await _pids(folder)
    cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 41, "reason": "no"}}
    status, _, _ = await asgi_post(cancel, token=token, session=session)
    assert status == 202
    messages = await asyncio.wait_for(call, 30)
    assert not [message for message in messages if message.get("id") == 41]
    await _assert_group_gone(folder)


@pytest.mark.django_db(transaction=True)
async def test_a_test_call_runs_a_cli_tool_on_the_2026_path(cli_tools):
    """McpCore.call_tool (the 2026-07-28 stateless path): the output, and an option-looking value refused
    as a tool error."""
    caller = Caller(username="hot", scopes=frozenset({"read", "write", "call"}), server=None)
    answer, _ = await get_core().call_tool("echo_args", {"value": "$(id)", "files": ["-v"]}, caller)
    assert _printed(answer["result"])["argv"] == ["--", "$(id)", "-v"]
    answer, _ = await get_core().call_tool("echo_option", {"value": "-v"}, caller)
    assert answer["result"]["isError"] is True
    assert "'value' starts with '-'" in answer["result"]["content"][0]["text"]
