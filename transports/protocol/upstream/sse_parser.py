"""An incremental parser for `text/event-stream` (Server-Sent Events, WHATWG HTML section 9.2).

Fed with raw chunks as they arrive; yields complete events. Keeps the last event id and the `retry`
value across events (what a client needs to resume with `Last-Event-ID`). Bounded: a line or an
event's data larger than `max_size` raises SSEError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"


class SSEError(Exception):
    """The stream broke the limits (an oversized line or event)."""


@dataclass(slots=True)
class SSEEvent:
    event: str  # the event type, "message" when the stream named none
    data: str
    id: str | None  # the last event id in force when this event was dispatched


class SSEParser:
    def __init__(self, max_size: int, last_event_id: str | None = None) -> None:
        self.max_size = max_size
        self.last_event_id = last_event_id  # updated at every dispatch, even of an event without data
        self.retry: int | None = None  # milliseconds, from the latest valid `retry:` field
        self._buffer = bytearray()
        self._started = False
        self._skip_lf = False  # the previous chunk ended with CR: a leading LF belongs to it
        self._data: list[str] = []
        self._data_size = 0
        self._has_data = False
        self._event = ""
        self._id_buffer = last_event_id
        # Bytes of the buffer already searched for a line end (and found without one): a long line arriving in
        # many chunks is scanned once, not once per chunk (which took seconds of the event loop for 16 MiB).
        self._scanned = 0

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse one chunk; return the events it completed."""
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buffer = self._buffer
        buffer += chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(bytes(buffer)):
                return []
            if buffer.startswith(_BOM):
                del buffer[: len(_BOM)]
            self._started = True
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer, self._scanned):
            end = match.start()
            if match.end() == len(buffer) and buffer[end:] == b"\r":
                self._skip_lf = True  # CR at the very end: a LF may follow in the next chunk
            event = self._line(bytes(buffer[start:end]))
            if event is not None:
                events.append(event)
            start = match.end()
        if start:
            del buffer[:start]
        self._scanned = len(buffer)
        if len(buffer) > self.max_size:
            raise SSEError(f"SSE line longer than {self.max_size} bytes")
        return events

    def _line(self, raw: bytes) -> SSEEvent | None:
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            return None  # a comment (keep-alive)
        line = raw.decode("utf-8", errors="replace")
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data_size += len(value) + 1
            if self._data_size > self.max_size:
                raise SSEError(f"SSE event larger than {self.max_size} bytes")
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        self.last_event_id = self._id_buffer
        event = None
        if self._has_data:
            event = SSEEvent(self._event or "message", "\n".join(self._data), self._id_buffer)
        self._data = []
        self._data_size = 0
        self._has_data = False
        self._event = ""
        return event
