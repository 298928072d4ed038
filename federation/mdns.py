"""DNS-SD over mDNS on the local network (GATEWAY_DISCOVERY_MDNS): advertise this gateway as
`_mcp-gateway._tcp.local.` with its public URL in a TXT record, and browse for the others.

Imported only when the setting is on (federation.peers imports it lazily), so no other process
opens multicast sockets. One agent per process: the first discovery run starts it (advertising
and browsing), later runs read what it has heard; it is closed at process exit.
"""

from __future__ import annotations

import atexit
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from zeroconf import InterfaceChoice, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

SERVICE_TYPE = "_mcp-gateway._tcp.local."
FIRST_BROWSE_SECONDS = 3.0  # how long the first run listens before it reads what was heard
RESOLVE_TIMEOUT_MS = 2000
INSTANCE_MAX = 60  # DNS labels are at most 63 bytes


def _addresses(host: str) -> list[bytes]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return []  # the TXT record still carries the URL, which is all a browsing gateway reads
    packed = []
    for family, *_rest, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            packed.append(socket.inet_pton(family, str(sockaddr[0])))
    return list(dict.fromkeys(packed))


def service_info(public_url: str) -> ServiceInfo:
    """The DNS-SD record of a gateway reached at ``public_url`` (TXT: url, path of the document)."""
    parts = urlsplit(public_url)
    host = parts.hostname or "localhost"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    instance = f"mcp-gateway {host} {port}"[:INSTANCE_MAX]
    return ServiceInfo(
        SERVICE_TYPE,
        f"{instance}.{SERVICE_TYPE}",
        port=port,
        properties={"url": public_url, "path": "/.well-known/mcp-gateway"},
        server=f"{host.replace('.', '-')}.local." if not host.endswith(".local") else host + ".",
        addresses=_addresses(host),
    )


class MdnsAgent:
    """Advertises one gateway (when it has a public URL) and keeps browsing for the others."""

    def __init__(self, *, public_url: str = "", interfaces: Any = InterfaceChoice.All) -> None:
        self.public_url = public_url
        self.zeroconf = Zeroconf(interfaces=interfaces)
        self._names: set[str] = set()
        self._lock = threading.Lock()
        self.info: ServiceInfo | None = None
        if public_url:
            self.info = service_info(public_url)
            self.zeroconf.register_service(self.info, allow_name_change=True)
        self.browser = ServiceBrowser(self.zeroconf, SERVICE_TYPE, handlers=[self._on_change])

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        # Only the name here: resolving blocks, and this runs on zeroconf's own thread.
        with self._lock:
            if state_change is ServiceStateChange.Removed:
                self._names.discard(name)
            else:
                self._names.add(name)

    def urls(self) -> list[str]:
        """The public URLs the other gateways heard so far advertise (this one's left out)."""
        with self._lock:
            names = sorted(self._names)
        found: list[str] = []
        for name in names:
            info = self.zeroconf.get_service_info(SERVICE_TYPE, name, timeout=RESOLVE_TIMEOUT_MS)
            raw = (info.properties or {}).get(b"url") if info is not None else None
            if not raw:
                continue
            url = raw.decode("utf-8", "replace").rstrip("/")
            if url != self.public_url.rstrip("/") and url not in found:
                found.append(url)
        return found

    def close(self) -> None:
        """Withdraw the advertisement and stop browsing."""
        self.browser.cancel()
        if self.info is not None:
            self.zeroconf.unregister_service(self.info)
        self.zeroconf.close()


_agent: MdnsAgent | None = None
_agent_lock = threading.Lock()


def _close_agent() -> None:
    global _agent
    with _agent_lock:
        if _agent is not None:
            _agent.close()
            _agent = None


def mdns_peer_urls(*, public_url: str) -> list[str]:
    """URLs of the gateways advertised on the local network; starts this process's agent on first use."""
    global _agent
    with _agent_lock:
        started = _agent is None
        if _agent is None:
            _agent = MdnsAgent(public_url=public_url)
            atexit.register(_close_agent)
        agent = _agent
    if started:
        time.sleep(FIRST_BROWSE_SECONDS)  # answers to the first query arrive over a second or two
    return agent.urls()
