"""Peers and discovery (docs/federation.md section 5) against real gateway processes.

Three live gateways A, B and C (daphne, each with its own SQLite database and admin token) serve their
well-known documents; A lists B as an approved peer and B lists C. The test process itself plays the
third gateway that discovers them: its settings say where to start (GATEWAY_PEERS) and how far to go.
All gateways share one SECRET_KEY, so the admin token of A is accepted by B and C too (the
GATEWAY_PEER_TOKEN every peer presents)."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from federation import mdns, peers, services
from federation.choices import PeerSource, PeerStatus
from federation.models import Peer
from registry.choices import AuthType, Transport
from registry.models import Gateway
from tests.conftest import basic
from tests.live_gateway import LiveGateway, free_port, start_live_gateway


@dataclass
class Trio:
    a: LiveGateway
    b: LiveGateway
    c: LiveGateway


def set_peers(gateway: LiveGateway, urls: list[str]) -> None:
    """Make ``urls`` the gateway's approved peers (and nothing else)."""
    code = (
        "from federation.models import Peer\n"
        "Peer.objects.all().delete()\n"
        f"for url in {urls!r}:\n"
        "    Peer.objects.create(url=url, status='approved', source='manual')\n"
    )
    gateway.manage("shell", "-c", code)


def get(url: str, authorization: str | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url)
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    with contextlib.ExitStack() as stack:
        started = []
        for label in "abc":
            port = free_port()
            started.append(
                stack.enter_context(
                    start_live_gateway(
                        tmp_path_factory.mktemp(f"peer-{label}"),
                        port=port,
                        GATEWAY_PUBLIC_URL=f"http://127.0.0.1:{port}",
                        GATEWAY_SCHEDULER="off",
                    )
                )
            )
        a, b, c = started
        set_peers(a, [b.url])
        set_peers(b, [c.url])
        yield Trio(a, b, c)


@pytest.fixture
def third(settings, trio: Trio, db) -> Trio:
    """This process as the discovering gateway: starts from A, presents A's token, no allow-list."""
    settings.GATEWAY_PUBLIC_URL = ""
    settings.GATEWAY_PEERS = [trio.a.url]
    settings.GATEWAY_PEER_TOKEN = trio.a.token
    settings.GATEWAY_DISCOVERY_MAX_DEPTH = 2
    settings.GATEWAY_DISCOVERY_ALLOWED_HOSTS = []
    settings.GATEWAY_DISCOVERY_AUTO_APPROVE = False
    settings.GATEWAY_DISCOVERY_MDNS = False
    return trio


def port_of(gateway: LiveGateway) -> int:
    return int(gateway.url.rsplit(":", 1)[1])


# --- the well-known endpoint ------------------------------------------------------------------


def test_well_known_refuses_a_missing_or_invalid_token(trio: Trio) -> None:
    """Without credentials, or with a token that does not verify, the document is a 401 with a JSON reason."""
    status, body, headers = get(trio.a.url + peers.WELL_KNOWN_PATH)
    assert status == 401
    assert "Authentication required" in body["detail"]
    assert "Bearer" in headers["WWW-Authenticate"]
    status, body, _ = get(trio.a.url + peers.WELL_KNOWN_PATH, "Bearer not-a-token")
    assert status == 401
    assert body["detail"].startswith("Invalid bearer token")


def test_well_known_lists_the_approved_peers(trio: Trio) -> None:
    """With a read token: the gateway's name, URL, MCP endpoint, version and its approved peers."""
    status, body, _ = get(trio.a.url + peers.WELL_KNOWN_PATH, f"Bearer {trio.a.token}")
    assert status == 200
    assert body["url"] == trio.a.url
    assert body["mcp"] == trio.a.url + "/mcp"
    assert body["name"] == "127.0.0.1"
    assert body["version"]
    assert body["peers"] == [{"name": "", "url": trio.b.url}]


@pytest.mark.django_db
def test_well_known_accepts_basic_and_a_session_and_leaves_out_pending_peers(client, staff_user, settings) -> None:
    """In process: HTTP Basic and an admin session may read it; only approved peers are listed; the URL
    is the request's base when GATEWAY_PUBLIC_URL is unset."""
    settings.GATEWAY_PUBLIC_URL = ""
    Peer.objects.create(url="http://approved.example", status=PeerStatus.APPROVED, name="ok")
    Peer.objects.create(url="http://pending.example")
    assert client.get(peers.WELL_KNOWN_PATH).status_code == 401
    response = client.get(peers.WELL_KNOWN_PATH, headers={"Authorization": basic(staff_user.username)})
    assert response.status_code == 200
    assert response.json() == {
        "name": "mcp-gateway",
        "url": "http://testserver",
        "mcp": "http://testserver/mcp",
        "version": response.json()["version"],
        "peers": [{"name": "ok", "url": "http://approved.example"}],
    }
    client.force_login(staff_user)
    assert client.get(peers.WELL_KNOWN_PATH).status_code == 200
    assert client.post(peers.WELL_KNOWN_PATH).status_code == 405


# --- discovery --------------------------------------------------------------------------------


def test_discovery_follows_peers_of_peers_breadth_first(third: Trio) -> None:
    """From GATEWAY_PEERS=A: A (static, depth 0), B (listed by A, depth 1), C (listed by B, depth 2),
    all recorded pending with their names and when they were seen."""
    report = peers.peers_discover()
    assert [(o.url, o.depth, o.source, o.discovered_via) for o in report.peers] == [
        (third.a.url, 0, PeerSource.STATIC, ""),
        (third.b.url, 1, PeerSource.PEER, third.a.url),
        (third.c.url, 2, PeerSource.PEER, third.b.url),
    ]
    assert len(report.new) == 3
    assert not report.failed
    assert not report.refused
    rows = {peer.url: peer for peer in Peer.objects.all()}
    assert set(rows) == {third.a.url, third.b.url, third.c.url}
    assert all(p.status == PeerStatus.PENDING and p.last_seen_at and not p.last_error for p in rows.values())
    assert rows[third.c.url].depth == 2
    assert rows[third.c.url].name == "127.0.0.1"
    assert not Gateway.objects.exists()  # pending peers are not in the catalog

    again = peers.peers_discover()  # a second run finds the same peers, none new
    assert len(again.found) == 3
    assert not again.new


def test_discovery_respects_the_depth_limit(third: Trio, settings) -> None:
    """GATEWAY_DISCOVERY_MAX_DEPTH=1 reads A and B but does not follow B's list to C; 0 reads A alone."""
    settings.GATEWAY_DISCOVERY_MAX_DEPTH = 1
    assert [o.url for o in peers.peers_discover().peers] == [third.a.url, third.b.url]
    Peer.objects.all().delete()
    settings.GATEWAY_DISCOVERY_MAX_DEPTH = 0
    assert [o.url for o in peers.peers_discover().peers] == [third.a.url]


def test_discovery_never_loops(third: Trio, settings) -> None:
    """A lists B and B lists A (and C): each gateway is visited once, however deep discovery may go,
    and another spelling of the same URL (trailing slash, upper-case host) is the same peer."""
    settings.GATEWAY_DISCOVERY_MAX_DEPTH = 50
    settings.GATEWAY_PEERS = [third.a.url, third.a.url + "/", third.b.url.upper()]
    set_peers(third.b, [third.c.url, third.a.url + "/"])
    try:
        report = peers.peers_discover()
    finally:
        set_peers(third.b, [third.c.url])
    assert sorted(o.url for o in report.peers) == sorted([third.a.url, third.b.url, third.c.url])
    assert Peer.objects.count() == 3


def test_discovery_skips_this_gateway_itself(third: Trio, settings) -> None:
    """This gateway's own URL (GATEWAY_PUBLIC_URL) is never a peer, whether a peer lists it or it is reached
    under another name and its document says so."""
    settings.GATEWAY_PUBLIC_URL = third.b.url  # pretend to be B: A lists "us", so C is never reached
    report = peers.peers_discover()
    assert [o.url for o in report.peers] == [third.a.url]
    assert report.skipped_self == [third.b.url]

    Peer.objects.all().delete()
    settings.GATEWAY_PUBLIC_URL = third.c.url
    settings.GATEWAY_PEERS = [f"http://localhost:{port_of(third.c)}"]  # C's document names C's public URL
    report = peers.peers_discover()
    assert report.peers == []
    assert report.skipped_self == [f"http://localhost:{port_of(third.c)}"]
    assert not Peer.objects.exists()


def test_discovery_refuses_hosts_outside_the_allow_list(third: Trio, settings) -> None:
    """With GATEWAY_DISCOVERY_ALLOWED_HOSTS naming A's and B's host:port, C (listed by B) is refused and not
    recorded; a bare host name allows every port of it."""
    settings.GATEWAY_DISCOVERY_ALLOWED_HOSTS = [f"127.0.0.1:{port_of(third.a)}", f"127.0.0.1:{port_of(third.b)}"]
    report = peers.peers_discover()
    assert [o.url for o in report.found] == [third.a.url, third.b.url]
    assert [(r.url, r.discovered_via) for r in report.refused] == [(third.c.url, third.b.url)]
    assert "GATEWAY_DISCOVERY_ALLOWED_HOSTS" in report.refused[0].reason
    assert not Peer.objects.filter(url=third.c.url).exists()

    settings.GATEWAY_DISCOVERY_ALLOWED_HOSTS = ["127.0.0.1"]
    assert len(peers.peers_discover().found) == 3
    settings.GATEWAY_DISCOVERY_ALLOWED_HOSTS = ["gateway.example.com"]
    report = peers.peers_discover()
    assert report.peers == []
    assert [r.url for r in report.refused] == [third.a.url]


def test_a_failing_peer_is_recorded_and_does_not_stop_the_others(third: Trio, settings) -> None:
    """A peer that refuses connections gets a last_error sentence; the rest of the run goes on. Bad URLs
    (not http(s), credentials in them) are refused with the reason."""
    dead = f"http://127.0.0.1:{free_port()}"
    settings.GATEWAY_PEERS = [dead, "file:///etc/passwd", "ftp://example.com", "http://user:pw@h.example", third.a.url]
    report = peers.peers_discover()
    assert [o.url for o in report.found] == [third.a.url, third.b.url, third.c.url]
    [failed] = report.failed
    assert failed.url == dead
    assert failed.error == f"connection refused by {dead.removeprefix('http://')}"
    assert Peer.objects.get(url=dead).last_error == failed.error
    assert Peer.objects.get(url=dead).last_seen_at is None
    reasons = [r.reason for r in report.refused]
    assert "is not an http:// or https:// URL" in reasons[0]
    assert "is not an http:// or https:// URL" in reasons[1]
    assert "carries credentials" in reasons[2]


def test_a_token_the_peer_refuses_is_a_sentence(third: Trio, settings) -> None:
    """A peer that answers 401 to GATEWAY_PEER_TOKEN is recorded with an error that says what to check."""
    settings.GATEWAY_PEER_TOKEN = "wrong"
    report = peers.peers_discover()
    [failed] = report.failed
    assert failed.error == (
        f"HTTP 401 from {third.a.url}/.well-known/mcp-gateway: check GATEWAY_PEER_TOKEN "
        "(the peer must accept it with the read scope)"
    )


def test_peers_stay_pending_until_approved_and_approval_makes_a_synced_gateway(
    third: Trio, settings, client, staff_user
) -> None:
    """Approving B creates a streamable-HTTP gateway for B's /mcp with the peer token as bearer; it syncs
    (B answers as an MCP Gateway); the approved peer is listed in this gateway's own document, and the
    next run starts from it too."""
    peers.peers_discover()
    peer_b = Peer.objects.get(url=third.b.url)
    assert peer_b.status == PeerStatus.PENDING
    gateway = peers.peer_approve(peer=peer_b)
    peer_b.refresh_from_db()
    assert peer_b.status == PeerStatus.APPROVED
    assert peer_b.gateway == gateway
    assert gateway.transport == Transport.STREAMABLE_HTTP
    assert gateway.url == third.b.url + "/mcp"
    assert gateway.auth_type == AuthType.BEARER
    assert gateway.get_credentials() == {"token": third.a.token}
    assert gateway.name == f"127-0-0-1-{port_of(third.b)}"  # B names itself after its host: the port is added
    services.gateway_refresh(gateway=gateway)
    gateway.refresh_from_db()
    assert gateway.server_info["name"] == "mcp-gateway"

    body = client.get(peers.WELL_KNOWN_PATH, headers={"Authorization": basic(staff_user.username)}).json()
    assert body["peers"] == [{"name": "127.0.0.1", "url": third.b.url}]
    assert peers.peer_approve(peer=peer_b) == gateway  # approving again changes nothing

    # Without GATEWAY_PEERS the approved B is where discovery starts (depth 0), and it leads to C.
    settings.GATEWAY_PEERS = []
    report = peers.peers_discover()
    assert [(o.url, o.depth) for o in report.peers] == [(third.b.url, 0), (third.c.url, 1)]

    # Rejecting takes the peer out: its gateway is disabled and discovery no longer goes through it.
    peers.peer_reject(peer=peer_b)
    gateway.refresh_from_db()
    assert not gateway.enabled
    settings.GATEWAY_PEERS = [third.a.url]
    report = peers.peers_discover()
    assert [o.url for o in report.peers] == [third.a.url]
    assert [(r.url, r.reason) for r in report.refused] == [(third.b.url, "the peer was rejected")]


def test_auto_approve_makes_every_new_peer_a_gateway_at_once(third: Trio, settings) -> None:
    """GATEWAY_DISCOVERY_AUTO_APPROVE: the peers reached are approved in the same run, each a gateway
    with a unique name."""
    settings.GATEWAY_DISCOVERY_AUTO_APPROVE = True
    report = peers.peers_discover()
    assert all(o.approved for o in report.peers)
    assert len(report.peers) == 3
    assert set(Peer.objects.values_list("status", flat=True)) == {PeerStatus.APPROVED}
    assert sorted(Gateway.objects.values_list("name", flat=True)) == sorted(
        f"127-0-0-1-{port_of(g)}" for g in (third.a, third.b, third.c)
    )
    assert sorted(Gateway.objects.values_list("url", flat=True)) == sorted(
        g.url + "/mcp" for g in (third.a, third.b, third.c)
    )


def test_the_command_prints_found_new_and_failed_peers(third: Trio, settings, capsys) -> None:
    """`manage.py peers_discover` prints each peer; --approve-all approves them; a failed peer is exit 1."""
    call_command("peers_discover", "--approve-all")
    out = capsys.readouterr().out
    assert f"found  new {third.c.url} (127.0.0.1), depth 2 via {third.b.url}: approved now" in out
    assert "Discovery: 3 found, 3 new, 0 failed, 0 refused." in out
    assert Gateway.objects.count() == 3

    dead = f"http://127.0.0.1:{free_port()}"
    settings.GATEWAY_PEERS = [dead]
    with pytest.raises(CommandError, match=r"1 of 4 peer\(s\) could not be read"):
        call_command("peers_discover")
    assert f"failed new {dead}, depth 0: connection refused by" in capsys.readouterr().out


# --- mDNS -------------------------------------------------------------------------------------


def test_mdns_found_gateways_join_discovery(third: Trio, settings, monkeypatch) -> None:
    """With GATEWAY_DISCOVERY_MDNS on, what the mDNS agent heard is read like GATEWAY_PEERS, source mdns
    (the agent is faked here; the next test runs the real one on loopback)."""
    settings.GATEWAY_PEERS = []
    settings.GATEWAY_DISCOVERY_MDNS = True
    settings.GATEWAY_DISCOVERY_MAX_DEPTH = 0
    monkeypatch.setattr(mdns, "mdns_peer_urls", lambda *, public_url: [third.c.url])
    report = peers.peers_discover()
    assert [(o.url, o.source) for o in report.peers] == [(third.c.url, PeerSource.MDNS)]


def test_mdns_agents_advertise_and_hear_each_other_on_loopback() -> None:
    """Two real zeroconf agents on 127.0.0.1 each advertise their public URL in the TXT record and hear
    the other's (never their own)."""
    one = mdns.MdnsAgent(public_url="http://127.0.0.1:18101", interfaces=["127.0.0.1"])
    two = mdns.MdnsAgent(public_url="http://127.0.0.1:18102", interfaces=["127.0.0.1"])
    try:
        deadline = time.monotonic() + 20
        # Membership, not equality: another gateway advertising on this loopback may be heard as well.
        while not ("http://127.0.0.1:18102" in one.urls() and "http://127.0.0.1:18101" in two.urls()):
            if time.monotonic() > deadline:
                pytest.fail(f"the agents did not hear each other: {one.urls()} / {two.urls()}")
            time.sleep(0.3)
        assert "http://127.0.0.1:18101" not in one.urls()
        assert "http://127.0.0.1:18102" not in two.urls()
    finally:
        one.close()
        two.close()


def test_mdns_is_not_imported_when_off(trio: Trio) -> None:
    """A gateway process with mDNS off runs discovery without importing zeroconf."""
    out = trio.c.manage(
        "shell",
        "-c",
        "import sys\nfrom federation import peers\npeers.peers_discover()\n"
        "print('zeroconf' in sys.modules, 'federation.mdns' in sys.modules)",
    )
    assert out.strip().splitlines()[-1] == "False False"


# --- without live gateways --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("HTTPS://GW.Example.com:443/", "https://gw.example.com"),
        ("http://gw.example.com:80/base/", "http://gw.example.com/base"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        (" http://127.0.0.1:9000/ ", "http://127.0.0.1:9000"),
    ],
)
def test_one_gateway_has_one_spelling(raw: str, normalized: str) -> None:
    """Scheme and host lower-cased, default ports and trailing slashes dropped."""
    assert peers.normalize_url(raw) == normalized


@pytest.mark.parametrize("raw", ["", "gw.example.com", "javascript:alert(1)", "http://h:99999", "http://h/?q=1", 7])
def test_a_url_that_cannot_be_a_peer_is_refused(raw: object) -> None:
    with pytest.raises(peers.PeerUrlError):
        peers.normalize_url(raw)


@pytest.mark.django_db
def test_approved_gateways_get_unique_slug_names(settings) -> None:
    """Peers naming themselves alike become gateways named apart; no token: no credentials."""
    settings.GATEWAY_PEER_TOKEN = ""
    one = Peer.objects.create(url="https://one.example", name="Team Gateway!")
    two = Peer.objects.create(url="https://two.example", name="Team Gateway!")
    assert peers.peer_approve(peer=one).name == "team-gateway"
    second = peers.peer_approve(peer=two)
    assert second.name == "team-gateway-2"
    assert second.auth_type == AuthType.NONE


@pytest.mark.django_db
def test_the_admin_approves_and_rejects_through_the_services(admin_client) -> None:
    """The Approve action makes the peer a gateway; Reject disables it; a bad URL added by hand is a form error."""
    peer = Peer.objects.create(url="https://peer.example", name="peer")
    changelist = "/admin/federation/peer/"
    response = admin_client.post(changelist, {"action": "approve", "_selected_action": [peer.pk]}, follow=True)
    assert "Approved 1 peer(s)" in response.content.decode()
    peer.refresh_from_db()
    assert peer.status == PeerStatus.APPROVED
    assert peer.gateway is not None
    assert peer.gateway.url == "https://peer.example/mcp"
    admin_client.post(changelist, {"action": "reject", "_selected_action": [peer.pk]})
    peer.refresh_from_db()
    assert peer.status == PeerStatus.REJECTED
    assert not peer.gateway.enabled
    assert admin_client.get(changelist + "?status__exact=rejected").status_code == 200
    assert admin_client.get(f"{changelist}{peer.pk}/change/").status_code == 200

    response = admin_client.post(changelist + "add/", {"url": "ftp://nope.example"})
    assert "is not an http:// or https:// URL" in response.content.decode()
    admin_client.post(changelist + "add/", {"url": "HTTPS://Added.example/"})
    added = Peer.objects.get(url="https://added.example")
    assert added.source == PeerSource.MANUAL
    assert added.status == PeerStatus.PENDING
