"""schemathesis hooks for tests/registry/test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS): whatever the
fuzzer sends, the gateway under test reaches nothing beyond this machine and starts no program.

Every URL in a request (a gateway's url, a REST tool's base_url, an OpenAPI document or its URL) is pointed at
a loopback port the test holds closed (FUZZ_CLOSED_PORT), so a connection is refused at once; a command given by
absolute path is replaced by one that does not exist (the gateway runs with an empty PATH, so a bare name is
not found either). Only the host of a URL the document would accept is changed, and schemathesis re-checks a
case after a hook edits it, so a case stays as valid or invalid as it was drawn."""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

_URL = re.compile(r"(?i)\b((?:https?|wss?)://)[A-Za-z0-9._~%!$&'()*+,;=:@-]+(?=[/?#\s\"'<>\\]|$)")


def _closed() -> str:
    return f"127.0.0.1:{os.environ['FUZZ_CLOSED_PORT']}"


def _tame(value: Any, key: str = "") -> Any:
    if isinstance(value, str):
        if key == "command" and value.startswith("/"):
            return "/nonexistent/fuzz-command"
        return _URL.sub(lambda match: match.group(1) + _closed(), value)
    if isinstance(value, dict):
        return {name: _tame(item, str(name)) for name, item in value.items()}
    if isinstance(value, list):
        return [_tame(item, key) for item in value]
    return value


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if isinstance(case.body, dict | list | str):
        tamed = _tame(case.body)
        if tamed != case.body:
            case.body = tamed
    if case.query:
        tamed = _tame(case.query)
        if tamed != case.query:
            case.query = tamed
