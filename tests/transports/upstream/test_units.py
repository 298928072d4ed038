"""Unit tests: the SSE parser, the config, the factory."""

from __future__ import annotations

import pytest

from transports.protocol.upstream import TRANSPORTS, UpstreamConfig, create_client
from transports.protocol.upstream.sse_parser import SSEError, SSEParser


def feed_all(parser: SSEParser, *chunks: bytes) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.data, e.id) for chunk in chunks for e in parser.feed(chunk)]


def test_sse_events_ids_and_retry() -> None:
    parser = SSEParser(1024)
    stream = b'id: 1\ndata: \nretry: 100\n\n: keep-alive\n\nid: 2\nevent: message\ndata: {"a":1}\n\n'
    assert feed_all(parser, stream) == [("message", "", "1"), ("message", '{"a":1}', "2")]
    assert parser.retry == 100
    assert parser.last_event_id == "2"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_sse_split_anywhere_with_any_line_ending(size: int) -> None:
    stream = (
        b"\xef\xbb\xbfevent: endpoint\r\ndata: /messages?x=1\r\n\r\n"
        b"data: line one\rdata: line two\r\r"
        b"id: 7\ndata: x\n\n"
    )
    parser = SSEParser(1024)
    chunks = [stream[i : i + size] for i in range(0, len(stream), size)]
    assert feed_all(parser, *chunks) == [
        ("endpoint", "/messages?x=1", None),
        ("message", "line one\nline two", None),
        ("message", "x", "7"),
    ]


def test_sse_ignores_bad_fields_and_keeps_the_last_id() -> None:
    parser = SSEParser(1024, last_event_id="start")
    events = feed_all(parser, b"retry: soon\nid: a\0b\nfoo: bar\ndata\n\n")
    assert events == [("message", "", "start")]
    assert parser.retry is None


def test_sse_limits() -> None:
    with pytest.raises(SSEError):
        SSEParser(10).feed(b"data: " + b"x" * 20)
    parser = SSEParser(10)
    parser.feed(b"data: xxx\n")
    parser.feed(b"data: xxx\n")
    with pytest.raises(SSEError):
        parser.feed(b"data: xxx\n")


def test_config_repr_hides_credentials() -> None:
    config = UpstreamConfig(
        name="u",
        transport="stdio",
        headers={"Authorization": "Bearer s3cret"},
        env={"TOKEN": "s3cret"},
        ca_bundle="PEM",
    )
    assert "s3cret" not in repr(config)
    assert "PEM" not in repr(config)
    assert config == UpstreamConfig(
        name="u",
        transport="stdio",
        headers={"Authorization": "Bearer s3cret"},
        env={"TOKEN": "s3cret"},
        ca_bundle="PEM",
    )


def test_factory() -> None:
    for transport in TRANSPORTS:
        client = create_client(UpstreamConfig(name="u", transport=transport, url="http://x/", command="x"))
        assert not client.connected
        assert client.initialize_result is None
    with pytest.raises(ValueError, match="unknown upstream transport"):
        create_client(UpstreamConfig(name="u", transport="carrier-pigeon"))


def test_the_package_imports_no_django() -> None:
    import ast
    from pathlib import Path

    import transports.protocol.upstream as package

    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "django" for name in names), path
