"""Peer gateways: the well-known document this gateway serves, discovery of others by following the
documents of its peers breadth-first, and approval (an approved peer becomes an upstream Gateway).

Discovery reads other gateways over plain HTTP(S) with a timeout and a bounded body; it writes one
Peer row per gateway it reaches or fails to reach (one peer's failure never stops the others) and
never holds a transaction across a network read. See docs/federation.md section 5 and docs/ops-peers.md.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from federation.choices import PeerSource, PeerStatus
from federation.models import Peer
from registry import services as registry_services
from registry.choices import AuthType, Transport
from registry.exceptions import CatalogError, InvalidInput
from registry.models import Gateway

WELL_KNOWN_PATH = "/.well-known/mcp-gateway"
DEFAULT_NAME = "mcp-gateway"
FETCH_TIMEOUT = 10.0  # seconds for one peer's document: a slow peer must not stall a whole run
MAX_DOCUMENT_BYTES = 1024 * 1024  # a peer's document is a short list; more is a broken or hostile peer
MAX_LISTED_PEERS = 1000  # entries read from one document
MAX_PEERS_PER_RUN = 500  # URLs one run visits, against peers that invent endless lists
NAME_MAX = 64  # Peer.name
URL_MAX = 2048  # Peer.url


class PeerUrlError(ValueError):
    """A URL that cannot be a peer's base URL; the message says why."""


class PeerFetchError(Exception):
    """A peer's document could not be read; the message is a sentence for Peer.last_error."""


@dataclass
class PeerOutcome:
    """What one run learned about one peer."""

    url: str
    depth: int
    source: str
    discovered_via: str = ""
    name: str = ""
    ok: bool = True
    error: str = ""
    created: bool = False
    approved: bool = False  # approved during this run (GATEWAY_DISCOVERY_AUTO_APPROVE or approve_all)
    status: str = PeerStatus.PENDING


@dataclass
class Refusal:
    """A URL discovery would not visit, and why."""

    url: str
    reason: str
    discovered_via: str = ""


@dataclass
class DiscoveryReport:
    """The peers one discovery run reached, created, failed to read or refused."""

    peers: list[PeerOutcome] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    skipped_self: list[str] = field(default_factory=list)

    @property
    def found(self) -> list[PeerOutcome]:
        return [outcome for outcome in self.peers if outcome.ok]

    @property
    def new(self) -> list[PeerOutcome]:
        return [outcome for outcome in self.peers if outcome.created]

    @property
    def failed(self) -> list[PeerOutcome]:
        return [outcome for outcome in self.peers if not outcome.ok]

    def outcome(self, url: str) -> PeerOutcome | None:
        """The outcome for ``url`` (any spelling of it), if this run visited it."""
        try:
            key = normalize_url(url)
        except PeerUrlError:
            return None
        return next((outcome for outcome in self.peers if outcome.url == key), None)

    def summary(self) -> str:
        return f"{len(self.found)} found, {len(self.new)} new, {len(self.failed)} failed, {len(self.refused)} refused"


# ---------------------------------------------------------------------------------------------
# URLs and configuration


def normalize_url(raw: Any) -> str:
    """A peer's base URL in one spelling (lower-case scheme and host, no default port, no trailing
    slash), so one gateway is one visit and one Peer row however it is written."""
    if not isinstance(raw, str) or not raw.strip():
        raise PeerUrlError("a peer URL must be a non-empty string")
    text = raw.strip()
    if len(text) > URL_MAX:
        raise PeerUrlError(f"a peer URL is at most {URL_MAX} characters")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise PeerUrlError(f"{text!r} is not an http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise PeerUrlError(f"{text!r} carries credentials; peers authenticate with GATEWAY_PEER_TOKEN")
    if parts.query or parts.fragment:
        raise PeerUrlError(f"{text!r} has a query or fragment; a peer's base URL has neither")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise PeerUrlError(f"{text!r} names no host")
    try:
        port = parts.port
    except ValueError:
        raise PeerUrlError(f"{text!r} has an invalid port") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != (443 if scheme == "https" else 80):
        netloc += f":{port}"
    return f"{scheme}://{netloc}{parts.path.rstrip('/')}"


def public_url() -> str:
    """GATEWAY_PUBLIC_URL normalized, or "" when unset or unusable."""
    try:
        return normalize_url(settings.GATEWAY_PUBLIC_URL) if settings.GATEWAY_PUBLIC_URL else ""
    except PeerUrlError:
        return ""


def gateway_name() -> str:
    """The name this gateway gives itself: its public URL's host, else "mcp-gateway"."""
    url = public_url()
    return (urlsplit(url).hostname or DEFAULT_NAME) if url else DEFAULT_NAME


def _host_allowed(url: str, allowed: list[str]) -> bool:
    if not allowed:
        return True
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"[{host}]" if ":" in host else host
    wanted = {entry.strip().lower() for entry in allowed if entry.strip()}
    return bool({host, shown, f"{shown}:{port}"} & wanted)


def _clean_name(value: Any) -> str:
    if not isinstance(value, str):
        return ""
    return re.sub(r"[\x00-\x1f\x7f]", "", value).strip()[:NAME_MAX]


# ---------------------------------------------------------------------------------------------
# The document this gateway serves and the one it reads from peers


def well_known_document(*, base_url: str) -> dict[str, Any]:
    """The well-known document of this gateway reached at ``base_url``: name, URLs, version, approved peers."""
    from transports.protocol.core import SERVER_VERSION

    approved = Peer.objects.filter(status=PeerStatus.APPROVED).order_by("url")
    return {
        "name": gateway_name(),
        "url": base_url,
        "mcp": base_url + "/mcp",
        "version": SERVER_VERSION,
        "peers": [{"name": peer.name, "url": peer.url} for peer in approved],
    }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead the token anywhere (another host, another scheme): refuse it and say where.
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise PeerFetchError(
            f"HTTP {code} from {req.full_url}: it redirects to {newurl}; list the final URL as the peer instead"
        )


def _describe(exc: BaseException, *, target: str, timeout: float) -> str:
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    netloc = urlsplit(target).netloc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s reading {target}"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {netloc}"
    if isinstance(reason, socket.gaierror):
        return f"no address for host {urlsplit(target).hostname}"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate of {netloc} not trusted ({reason.verify_message or reason})"
    if isinstance(reason, ssl.SSLError):
        return f"TLS failed with {netloc} ({reason.reason or reason})"
    if isinstance(reason, ConnectionResetError):
        return f"connection reset by {netloc}"
    return f"could not read {target}: {reason}"


def fetch_document(url: str, *, token: str = "", timeout: float = FETCH_TIMEOUT) -> dict[str, Any]:
    """A peer's well-known document, checked for shape; PeerFetchError with a sentence otherwise."""
    target = normalize_url(url) + WELL_KNOWN_PATH
    # normalize_url admits http and https only, so no file: or custom scheme reaches urllib.
    request = urllib.request.Request(  # noqa: S310
        target, headers={"Accept": "application/json", "User-Agent": "mcp-gateway"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(request, timeout=timeout) as response:
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except PeerFetchError:
        raise
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise PeerFetchError(
                f"HTTP {exc.code} from {target}: check GATEWAY_PEER_TOKEN (the peer must accept it with the read scope)"
            ) from None
        if exc.code == 404:
            raise PeerFetchError(f"HTTP 404 from {target}: no MCP Gateway answers at this URL") from None
        raise PeerFetchError(f"HTTP {exc.code} from {target}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise PeerFetchError(_describe(exc, target=target, timeout=timeout)) from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise PeerFetchError(f"the document at {target} is larger than {MAX_DOCUMENT_BYTES // 1024} KiB")
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise PeerFetchError(f"the answer of {target} is not JSON; is it an MCP Gateway?") from None
    if not isinstance(document, dict) or not isinstance(document.get("peers", []), list):
        raise PeerFetchError(f"the answer of {target} is not an MCP Gateway document (an object with a peers list)")
    return document


# ---------------------------------------------------------------------------------------------
# Writes


def _unique_gateway_name(peer: Peer) -> str:
    parts = urlsplit(peer.url)
    # A name of its own says more than an address; a host name alone (the default) needs the port,
    # since several gateways may share a host.
    named = peer.name if peer.name not in ("", DEFAULT_NAME, parts.hostname) else ""
    base = named or (parts.hostname or "peer") + (f"-{parts.port}" if parts.port else "")
    slug = re.sub(r"[^a-z0-9_-]+", "-", base.lower()).strip("-_")[:56] or "peer"
    name, counter = slug, 1
    while Gateway.objects.filter(name=name).exists():
        counter += 1
        name = f"{slug}-{counter}"
    return name


@transaction.atomic
def peer_add(*, url: str) -> Peer:
    """Record a peer by hand (source manual, pending); InvalidInput for a URL that cannot be a peer."""
    try:
        key = normalize_url(url)
    except PeerUrlError as exc:
        raise InvalidInput(f"Invalid peer URL: {exc}.") from None
    if Peer.objects.filter(url=key).exists():
        raise InvalidInput(f"The peer {key} is already known.")
    return Peer.objects.create(url=key, source=PeerSource.MANUAL)


@transaction.atomic
def peer_approve(*, peer: Peer) -> Gateway:
    """Let the peer join the catalog: a streamable-HTTP Gateway for <url>/mcp (bearer GATEWAY_PEER_TOKEN if set)."""
    peer = Peer.objects.select_for_update().get(pk=peer.pk)
    gateway = Gateway.objects.filter(pk=peer.gateway_id).first() if peer.gateway_id else None
    if gateway is None:
        data: dict[str, Any] = {
            "name": _unique_gateway_name(peer),
            "transport": Transport.STREAMABLE_HTTP,
            "url": peer.url + "/mcp",
            "description": f"Peer gateway {peer.url} (found by {peer.get_source_display()}).",
        }
        if settings.GATEWAY_PEER_TOKEN:
            data["auth_type"] = AuthType.BEARER
            data["credentials"] = {"token": settings.GATEWAY_PEER_TOKEN}
        gateway = registry_services.entry_create(Gateway, data=data)
    elif not gateway.enabled:
        registry_services.entry_update(gateway, data={"enabled": True})
    peer.gateway = gateway
    peer.status = PeerStatus.APPROVED
    peer.save(update_fields=["gateway", "status"])
    return gateway


@transaction.atomic
def peer_reject(*, peer: Peer) -> Peer:
    """Keep the peer out: discovery no longer proposes or follows it; its Gateway, if any, is disabled."""
    peer = Peer.objects.select_for_update().get(pk=peer.pk)
    gateway = Gateway.objects.filter(pk=peer.gateway_id).first() if peer.gateway_id else None
    if gateway is not None and gateway.enabled:
        registry_services.entry_update(gateway, data={"enabled": False})
    peer.status = PeerStatus.REJECTED
    peer.save(update_fields=["status"])
    return peer


@transaction.atomic
def _peer_record(outcome: PeerOutcome, *, now: datetime) -> Peer:
    peer = Peer.objects.select_for_update().filter(url=outcome.url).first()
    if peer is None:
        peer = Peer(
            url=outcome.url,
            source=outcome.source,
            discovered_via=outcome.discovered_via[:URL_MAX],
            depth=outcome.depth,
        )
        outcome.created = True
    else:
        peer.depth = min(peer.depth, outcome.depth)  # the shortest path found so far
    if outcome.ok:
        peer.name = outcome.name or peer.name
        peer.last_seen_at = now
        peer.last_error = ""
    else:
        peer.last_error = outcome.error
    peer.save()
    outcome.status = peer.status
    return peer


# ---------------------------------------------------------------------------------------------
# Discovery


def _mdns_urls() -> list[str]:
    # Imported only when mDNS is on, so zeroconf (and its sockets) stay out of every other process.
    from federation import mdns

    return mdns.mdns_peer_urls(public_url=public_url())


def peers_discover(
    *, now: datetime | None = None, timeout: float = FETCH_TIMEOUT, approve_all: bool = False
) -> DiscoveryReport:
    """Follow GATEWAY_PEERS, the approved peers (and mDNS when on) breadth-first, recording each peer reached."""
    now = now or timezone.now()
    report = DiscoveryReport()
    me = public_url()
    allowed = list(settings.GATEWAY_DISCOVERY_ALLOWED_HOSTS)
    max_depth = int(settings.GATEWAY_DISCOVERY_MAX_DEPTH)
    token = settings.GATEWAY_PEER_TOKEN
    auto_approve = approve_all or bool(settings.GATEWAY_DISCOVERY_AUTO_APPROVE)
    rejected = set(Peer.objects.filter(status=PeerStatus.REJECTED).values_list("url", flat=True))
    visited: set[str] = {me} if me else set()
    queue: deque[tuple[str, int, str, str]] = deque()

    def enqueue(raw: Any, depth: int, source: str, via: str) -> None:
        try:
            url = normalize_url(raw)
        except PeerUrlError as exc:
            report.refused.append(Refusal(url=str(raw)[:URL_MAX], reason=str(exc), discovered_via=via))
            return
        if url in visited:
            if url == me and url not in report.skipped_self:
                report.skipped_self.append(url)
            return
        visited.add(url)
        if url in rejected:
            report.refused.append(Refusal(url=url, reason="the peer was rejected", discovered_via=via))
        elif not _host_allowed(url, allowed):
            report.refused.append(
                Refusal(url=url, reason="its host is not in GATEWAY_DISCOVERY_ALLOWED_HOSTS", discovered_via=via)
            )
        elif len(visited) > MAX_PEERS_PER_RUN:
            report.refused.append(
                Refusal(url=url, reason=f"one run visits at most {MAX_PEERS_PER_RUN} peers", discovered_via=via)
            )
        else:
            queue.append((url, depth, source, via))

    for url in settings.GATEWAY_PEERS:
        enqueue(url, 0, PeerSource.STATIC, "")
    if settings.GATEWAY_DISCOVERY_MDNS:
        for url in _mdns_urls():
            enqueue(url, 0, PeerSource.MDNS, "")
    for peer in Peer.objects.filter(status=PeerStatus.APPROVED).order_by("url"):
        enqueue(peer.url, 0, peer.source, "")

    while queue:
        url, depth, source, via = queue.popleft()
        outcome = PeerOutcome(url=url, depth=depth, source=source, discovered_via=via)
        try:
            document = fetch_document(url, token=token, timeout=timeout)
        except PeerFetchError as exc:
            outcome.ok, outcome.error = False, str(exc)
            document = None
        if document is not None:
            try:
                named = normalize_url(document.get("url", "")) if document.get("url") else ""
            except PeerUrlError:
                named = ""
            if me and named == me:  # ourselves, reached under another address
                report.skipped_self.append(url)
                continue
            outcome.name = _clean_name(document.get("name"))
        peer = _peer_record(outcome, now=now)
        report.peers.append(outcome)
        if outcome.ok and auto_approve and peer.status == PeerStatus.PENDING:
            try:
                peer_approve(peer=peer)
                outcome.approved, outcome.status = True, PeerStatus.APPROVED
            except CatalogError as exc:
                outcome.error = f"could not be approved: {exc.message}"
                Peer.objects.filter(pk=peer.pk).update(last_error=outcome.error)
        if document is not None and depth < max_depth:
            for item in document.get("peers", [])[:MAX_LISTED_PEERS]:
                if isinstance(item, dict):
                    enqueue(item.get("url"), depth + 1, PeerSource.PEER, url)
    return report
