"""GATEWAY_LOG_FORMAT=json (gateway_project.logformat): one JSON object per line, extras included."""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

from gateway_project.logformat import JsonFormatter


def _logged(emit) -> list[dict]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.logformat")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)
    finally:
        logger.removeHandler(handler)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_extra_fields():
    (line,) = _logged(lambda log: log.warning("%s went %s", "it", "well", extra={"user": "ann", "n": 3}))
    assert line["level"] == "WARNING"
    assert line["logger"] == "tests.logformat"
    assert line["message"] == "it went well"
    assert (line["user"], line["n"]) == ("ann", 3)
    assert datetime.fromisoformat(line["time"]).utcoffset().total_seconds() == 0
    assert not {"args", "msg", "pathname", "lineno", "levelno", "taskName"} & set(line)


def test_values_json_cannot_hold_are_written_as_text_and_exceptions_as_their_traceback():
    def emit(log):
        try:
            raise ValueError("bad value")
        except ValueError:
            log.exception("failed", extra={"thing": object(), "keys": {1: "one"}})

    (line,) = _logged(emit)
    assert line["thing"].startswith("<object object at")
    assert line["keys"] == {"1": "one"}
    assert "ValueError: bad value" in line["exc_info"]
