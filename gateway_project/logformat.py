"""GATEWAY_LOG_FORMAT "json": one JSON object per log line from the standard ``logging``.

Each line has ``time`` (ISO 8601, UTC, microseconds), ``level``, ``logger``, ``message``, the record's
extra fields (the access log's user, session, method, tool, ...: docs/governance.md) and, for a logged
exception, ``exc_info`` with the formatted traceback. Serialised by orjson (already the hot path's JSON):
the access log writes one line per MCP request, and a general-purpose JSON formatter that inspects every
record attribute cost a tools/call about four times as much (bench, issue #11).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson

# The attributes every LogRecord has: anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fallback(value: Any) -> str:
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():  # the extra fields, in the order they were given
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()
