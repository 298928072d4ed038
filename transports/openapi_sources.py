"""Where an OpenAPI import's document comes from: an http(s) URL, fetched under the outbound rules
(``transports.protocol.backends.outbound``: no private addresses unless allowed, bounded size and
time), or text the caller sent. The import itself is the catalog's service (``registry.openapi``).
Shared by the REST API, the admin's "Import OpenAPI" page and ``manage.py openapi_import``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import async_to_sync
from django.conf import settings

from registry.exceptions import InvalidInput

FETCH_TIMEOUT = 30.0  # seconds for the whole download of a document


def is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in ("http", "https")


def fetch(url: str) -> bytes:
    """The document at ``url``; InvalidInput naming the problem (refused address, too large, timeout,
    HTTP error). Call from synchronous code (a sync view runs in a worker thread)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        message = f"{url!r} is not an http or https URL."
        raise InvalidInput(message, errors={"url": [message]})
    from transports.protocol.backends.outbound import OutboundError, fetch_document

    try:
        body, _content_type = async_to_sync(fetch_document)(
            url,
            allow_private=settings.GATEWAY_OUTBOUND_ALLOW_PRIVATE,
            max_bytes=settings.GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES,
            timeout=FETCH_TIMEOUT,
            max_redirects=settings.GATEWAY_OUTBOUND_MAX_REDIRECTS,
        )
    except OutboundError as exc:
        message = f"Cannot fetch the OpenAPI document at {url}: {exc}"
        raise InvalidInput(message, errors={"url": [str(exc)]}) from None
    return bytes(body)


def openapi_import(
    *,
    url: str | None = None,
    document: bytes | str | None = None,
    source: str | None = None,
    server: str | None = None,
    include: list[str] | None = None,
    base_url: str | None = None,
    dry_run: bool = False,
    credentials: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Import the operations of the document at ``url`` or given as ``document`` as REST tools; the
    service's report (added, changed, removed, unchanged, warnings). ``source`` names the document
    for re-imports (default: the URL); ``credentials``: secrets by security scheme name. InvalidInput
    with a message a person can act on."""
    if (url is None) == (document is None):
        raise InvalidInput("Give the OpenAPI document either as a URL or as its text (an uploaded file), not both.")
    text: bytes | str
    if url is not None:
        text = fetch(url)
        source = source or url
    elif document is not None:
        text = document
    if not source:
        message = "Name the document with 'source' (a re-import with the same source updates its tools in place)."
        raise InvalidInput(message, errors={"source": [message]})
    from registry.openapi import openapi_import as import_document

    report = import_document(
        document=text,
        source=source,
        server=server or None,
        include=include or None,
        base_url=base_url or None,
        dry_run=dry_run,
        credentials=credentials or None,
    )
    return dict(report.as_dict())


def report_lines(report: dict[str, Any]) -> list[tuple[str, int | None, list[str]]]:
    """The import report for people: (label, how many or None, the items) per entry that says something."""
    lines: list[tuple[str, int | None, list[str]]] = []
    for key, value in report.items():
        label = key.replace("_", " ")
        if key == "dry_run" or value is None or value is False:  # a "no" says nothing here (server_created)
            continue
        if value is True:
            lines.append((label, None, ["yes"]))
        elif isinstance(value, list):
            lines.append((label, len(value), [str(item) for item in value]))
        elif isinstance(value, dict):
            lines.append((label, len(value), [f"{name}: {item}" for name, item in value.items()]))
        else:
            lines.append((label, None, [str(value)]))
    return lines
