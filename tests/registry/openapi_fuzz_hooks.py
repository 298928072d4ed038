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


# The fields a body valid by the document may still be refused on (tests/registry/schemathesis.toml says why):
# references to other entries, rules that join fields, contents in their own language, the world. A 422 on any
# other field means a rule of that field is missing from the document.
JOINED_OR_REFERENCED = {
    "__all__",
    "gateway",
    "gateways",
    "tools",
    "resources",
    "resource_templates",
    "prompts",
    "url",
    "command",
    "args",
    "env",
    "cwd",
    "era",
    "auth_type",
    "credentials",
    "per_user_credentials",
    "per_user_process",
    "oauth_client_id",
    "oauth_token_url",
    "oauth_authorization_url",
    "backend_config",
    "input_schema",
    "output_schema",
    "template",
    "arguments",
    "scopes",
    "server",
    "expires_in",
    "source",
}


@schemathesis.check
def field_rules_in_document(ctx: Any, response: Any, case: Any) -> bool | None:
    """A body valid by the document is never refused by request validation, nor on a field whose own rules
    the document states: narrower than positive_data_acceptance, which the configuration lets take a 422."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 422:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        raise AssertionError(f"Request validation refused a body valid by the document: {body.get('detail')}")
    if isinstance(errors, dict):
        messages = " ".join(str(message) for values in errors.values() for message in values)
        stated = sorted(set(errors) - JOINED_OR_REFERENCED)
        if stated and "owned by the upstream" not in messages:
            raise AssertionError(
                f"Refused on {', '.join(stated)}, whose rules the document states: {body.get('detail')}"
            )
    return None
