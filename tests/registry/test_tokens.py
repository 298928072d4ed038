"""Issued tokens are recorded (never the token itself), can be bound to one virtual server, listed and
revoked: the services in registry.auth, the REST endpoints (/api/tokens) and the commands (issue_token
--name/--server, token_list). Enforcement at the MCP edge is in tests/transports/test_bound_tokens.py."""

import io
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from registry import auth
from registry.exceptions import AuthenticationFailed, InvalidInput
from registry.models import IssuedToken, RevokedToken, VirtualServer
from tests.conftest import ApiClient, basic
from tests.factories import VirtualServerFactory

pytestmark = pytest.mark.django_db


def bearer(token: str) -> ApiClient:
    return ApiClient(f"Bearer {token}")


@pytest.fixture
def pair(db):
    return VirtualServerFactory(name="pair")


# ---------------------------------------------------------------------------------------------
# The record and the services
# ---------------------------------------------------------------------------------------------


def test_issuing_records_the_token_but_not_its_text(staff_user):
    """issued_token_create stores jti, user, name, scopes, issued/expiry times and issuer; no column holds
    the token or its signature."""
    issued = auth.issued_token_create(
        username="staff", scopes=["read", "call"], name="laptop", expires_in=timedelta(hours=2), issued_by="boss"
    )
    claims = auth.token_claims(issued.token)
    record = IssuedToken.objects.get()
    assert record == issued.record
    assert (record.jti, record.user, record.name, record.scopes) == (claims["jti"], staff_user, "laptop", "call read")
    assert (record.server, record.revoked_at, record.issued_by) == (None, None, "boss")
    assert int(record.issued_at.timestamp()) == claims["iat"]
    assert int(record.expires_at.timestamp()) == claims["exp"]
    assert record.state == "active"
    signature = issued.token.rsplit(".", 1)[1]
    for field in IssuedToken._meta.concrete_fields:
        assert signature not in str(getattr(record, field.attname)), field.name


def test_token_issue_still_returns_the_token_text_and_records_it(staff_user):
    """The old entry point returns the token as before and records it too."""
    token = auth.token_issue(username="staff")
    assert IssuedToken.objects.get().jti == auth.token_claims(token)["jti"]


def test_a_refused_issue_records_nothing(staff_user, plain_user):
    """Unknown users and servers, scopes the user may not have and too-long names are InvalidInput naming
    the field; nothing is recorded."""
    with pytest.raises(InvalidInput) as unknown_server:
        auth.token_issue(username="staff", server="nowhere")
    assert unknown_server.value.errors == {"server": ["No virtual server named 'nowhere'."]}
    with pytest.raises(InvalidInput, match="may not have any of the scopes"):
        auth.token_issue(username="reader", scopes=["write"])
    with pytest.raises(InvalidInput, match="No active user"):
        auth.token_issue(username="ghost")
    with pytest.raises(InvalidInput, match="longer than 128"):
        auth.token_issue(username="staff", name="x" * 129)
    with pytest.raises(InvalidInput, match="too long"):
        auth.token_issue(username="staff", expires_in=timedelta(days=10**7))
    assert not IssuedToken.objects.exists()


def test_a_bound_token_carries_the_server_claim_and_its_principal_the_server(staff_user, pair):
    """server= puts the server's name in the `srv` claim and on the record; the Principal says which server."""
    token = auth.token_issue(username="staff", server="pair")
    assert auth.token_claims(token)["srv"] == "pair"
    assert IssuedToken.objects.get().server == pair
    principal = auth.token_principal(token)
    assert principal.server == "pair"
    assert auth.token_principal(auth.token_issue(username="staff")).server is None


def test_a_bound_token_dies_with_its_server_and_never_passes_to_a_namesake(staff_user, pair):
    """Deleting the server deletes the record (CASCADE); the token is then refused, also when a new server of
    the same name appears. It is never widened to an unbound token."""
    token = auth.token_issue(username="staff", server="pair")
    pair.delete()
    assert not IssuedToken.objects.exists()
    with pytest.raises(AuthenticationFailed, match="bound to virtual server 'pair', which no longer exists"):
        auth.token_principal(token)
    VirtualServerFactory(name="pair")
    with pytest.raises(AuthenticationFailed, match="no longer exists"):
        auth.token_principal(token)


def test_a_bound_token_follows_its_server_when_it_is_renamed(staff_user, pair):
    """The binding is to the server, not its old name: after a rename the token opens the renamed server."""
    token = auth.token_issue(username="staff", server="pair")
    VirtualServer.objects.filter(pk=pair.pk).update(name="duo")
    assert auth.token_principal(token).server == "duo"


def test_revoking_marks_the_record_and_denies_the_token(staff_user):
    """token_revoke by jti puts the jti on the deny list with the record's user and expiry, and marks the
    record revoked at the same time."""
    token = auth.token_issue(username="staff")
    jti = auth.token_claims(token)["jti"]
    revoked = auth.token_revoke(token_or_jti=jti, reason="lost")
    record = IssuedToken.objects.get()
    assert record.revoked_at == revoked.revoked_at
    assert record.state == "revoked"
    assert (revoked.subject, revoked.expires_at) == ("staff", record.expires_at)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        auth.token_principal(token)


def test_tokens_from_before_records_still_work_and_can_be_revoked(staff_user):
    """A token issued before records were kept (no IssuedToken row) authenticates, and revoking it by jti
    works as before."""
    token = auth.token_issue(username="staff")
    IssuedToken.objects.all().delete()  # as if issued by the previous version
    assert bearer(token).get("/api/tools").status_code == 200
    auth.token_revoke(token_or_jti=auth.token_claims(token)["jti"])
    assert bearer(token).get("/api/tools").status_code == 401


def test_states_and_the_list_filters(staff_user, plain_user, pair):
    """issued_token_list narrows by user, state (active, expired, revoked as of now) and server ("" for
    unbound); the record's state agrees with the filter."""
    active = auth.issued_token_create(username="staff", server="pair").record
    expired = auth.issued_token_create(username="staff").record
    IssuedToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    revoked = auth.issued_token_create(username="reader").record
    auth.token_revoke(token_or_jti=revoked.jti)

    def jtis(**filters):
        return {token.jti for token in auth.issued_token_list(**filters)}

    assert jtis() == {active.jti, expired.jti, revoked.jti}
    assert jtis(state="active") == {active.jti}
    assert jtis(state="expired") == {expired.jti}
    assert jtis(state="revoked") == {revoked.jti}
    assert jtis(username="reader") == {revoked.jti}
    assert jtis(server="pair") == {active.jti}
    assert jtis(server="") == {expired.jti, revoked.jti}
    assert [t.state for t in IssuedToken.objects.filter(pk__in=[active.pk, expired.pk, revoked.pk]).order_by("pk")] == [
        "active",
        "expired",
        "revoked",
    ]
    with pytest.raises(InvalidInput, match="Unknown token state"):
        auth.issued_token_list(state="lost")


def test_deleting_a_record_revokes_the_token_first(staff_user):
    """issued_tokens_delete never leaves a working token unlisted: it revokes, then forgets the record."""
    token = auth.token_issue(username="staff")
    assert auth.issued_tokens_delete(tokens=IssuedToken.objects.all()) == 1
    assert not IssuedToken.objects.exists()
    assert RevokedToken.objects.filter(jti=auth.token_claims(token)["jti"]).exists()


def test_deleting_the_user_deletes_their_records(staff_user):
    auth.token_issue(username="staff")
    staff_user.delete()
    assert not IssuedToken.objects.exists()


# ---------------------------------------------------------------------------------------------
# REST
# ---------------------------------------------------------------------------------------------


def test_post_tokens_takes_a_name_and_a_server(staff_client, pair):
    """POST /api/tokens with name and server answers the token once with its id, scopes, server and expiry."""
    response = staff_client.post_json("/api/tokens", {"name": "ci", "server": "pair", "scopes": ["read", "call"]})
    assert response.status_code == 201, response.content
    body = response.json()
    claims = auth.token_claims(body["token"])
    assert (body["jti"], body["name"], body["scopes"], body["server"]) == (
        claims["jti"],
        "ci",
        ["call", "read"],
        "pair",
    )
    assert claims["srv"] == "pair"
    record = IssuedToken.objects.get()
    assert (record.name, record.server, record.issued_by) == ("ci", pair, "staff")


@pytest.mark.parametrize("expires_in", ["99999999w", "9999999999w"])
def test_post_tokens_with_an_overlong_lifetime_is_422(staff_client, expires_in):
    response = staff_client.post_json("/api/tokens", {"expires_in": expires_in})
    assert response.status_code == 422
    assert "too long" in response.json()["detail"]


def test_post_tokens_for_an_unknown_server_is_422(staff_client):
    response = staff_client.post_json("/api/tokens", {"server": "nowhere"})
    assert response.status_code == 422
    assert "No virtual server named 'nowhere'" in response.json()["detail"]
    assert not IssuedToken.objects.exists()


def test_a_bound_token_is_refused_by_the_rest_api(staff_user, pair):
    """A server-bound token opens only its server's MCP endpoints: every REST call is 403 naming the server,
    even reads, issuing tokens and test calls."""
    client = bearer(auth.token_issue(username="staff", server="pair"))
    for response in (
        client.get("/api/tools"),
        client.get("/api/tokens"),
        client.post_json("/api/tokens", {}),
        client.post_json("/api/servers", {"name": "x"}),
        client.post_json("/api/tools/anything/call", {"arguments": {}}),
    ):
        assert response.status_code == 403, response.content
        assert "bound to virtual server 'pair' and only opens its MCP endpoints" in response.json()["detail"]


def test_get_tokens_lists_your_own_without_the_token_text(staff_user, plain_user, reader_client):
    """GET /api/tokens lists the caller's tokens (not others'), newest first, never the token itself."""
    mine = auth.issued_token_create(username="reader", name="mine", scopes=["read"])
    auth.issued_token_create(username="staff", name="theirs")
    response = reader_client.get("/api/tokens")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    item = body["items"][0]
    assert item["jti"] == mine.record.jti
    assert (item["user"], item["name"], item["scopes"], item["server"], item["state"]) == (
        "reader",
        "mine",
        ["read"],
        None,
        "active",
    )
    assert mine.token not in response.content.decode()
    assert mine.token.rsplit(".", 1)[1] not in response.content.decode()
    assert reader_client.get("/api/tokens?user=staff").status_code == 403
    assert reader_client.get("/api/tokens?user=reader").json()["count"] == 1


def test_get_tokens_with_write_lists_everyones_and_filters(staff_client, plain_user, pair):
    """With the write scope GET /api/tokens lists every user's tokens; ?user=, ?state= and ?server= narrow it."""
    auth.issued_token_create(username="staff", server="pair")
    theirs = auth.issued_token_create(username="reader").record
    assert staff_client.get("/api/tokens").json()["count"] == 2
    assert [t["jti"] for t in staff_client.get("/api/tokens?user=reader").json()["items"]] == [theirs.jti]
    assert staff_client.get("/api/tokens?server=pair").json()["items"][0]["server"] == "pair"
    auth.token_revoke(token_or_jti=theirs.jti)
    assert [t["jti"] for t in staff_client.get("/api/tokens?state=revoked").json()["items"]] == [theirs.jti]
    assert staff_client.get("/api/tokens?state=lost").status_code == 422


def test_post_tokens_jti_revoke_revokes_your_own(plain_user, reader_client):
    """POST /api/tokens/{jti}/revoke: a user may revoke their own token (no write scope needed); the record
    says revoked and the token is refused."""
    issued = auth.issued_token_create(username="reader")
    response = reader_client.post(f"/api/tokens/{issued.record.jti}/revoke?reason=lost")
    assert response.status_code == 200, response.content
    assert response.json()["jti"] == issued.record.jti
    assert IssuedToken.objects.get().state == "revoked"
    assert RevokedToken.objects.get().reason == "lost"
    assert bearer(issued.token).get("/api/tools").status_code == 401


def test_post_tokens_jti_revoke_of_someone_elses_is_404_without_write(staff_user, plain_user, reader_client):
    """A user without write cannot revoke, or learn of, another user's token (404); staff can."""
    theirs = auth.issued_token_create(username="staff").record
    assert reader_client.post(f"/api/tokens/{theirs.jti}/revoke").status_code == 404
    assert not RevokedToken.objects.exists()
    staff = ApiClient(basic("staff"))
    assert staff.post(f"/api/tokens/{theirs.jti}/revoke").status_code == 200
    assert IssuedToken.objects.get().state == "revoked"


def test_post_tokens_revoke_also_marks_the_record(staff_client, staff_user):
    """The existing POST /api/tokens/revoke keeps working and marks the record revoked too."""
    token = auth.token_issue(username="staff")
    assert staff_client.post_json("/api/tokens/revoke", {"token": token}).status_code == 200
    assert IssuedToken.objects.get().revoked_at is not None


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def issue(*args: str) -> tuple[str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("issue_token", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue().strip().splitlines()[-1], stderr.getvalue()


def token_list(*args: str) -> str:
    stdout = io.StringIO()
    call_command("token_list", *args, stdout=stdout)
    return stdout.getvalue()


def test_issue_token_with_name_and_server(staff_user, pair):
    """issue_token --name --server records both, says so on stderr, and the token carries the claim."""
    token, stderr = issue("staff", "--name", "desktop", "--server", "pair")
    assert auth.token_claims(token)["srv"] == "pair"
    assert "only virtual server pair" in stderr
    record = IssuedToken.objects.get()
    assert (record.name, record.server, record.issued_by) == ("desktop", pair, "manage.py issue_token")


def test_issue_token_for_an_unknown_server_is_a_command_error(staff_user):
    with pytest.raises(CommandError, match="No virtual server named 'nowhere'"):
        issue("staff", "--server", "nowhere")


def test_token_list_shows_records_without_tokens(staff_user, plain_user, pair):
    """token_list prints one row per token with its state; --user, --state and --server narrow it."""
    assert "No tokens" in token_list()
    bound, _ = issue("staff", "--name", "desktop", "--server", "pair")
    other, _ = issue("reader")
    auth.token_revoke(token_or_jti=other)
    output = token_list()
    assert output.splitlines()[0].split() == ["JTI", "USER", "NAME", "SCOPES", "SERVER", "ISSUED", "EXPIRES", "STATE"]
    for expected in (auth.token_claims(bound)["jti"], auth.token_claims(other)["jti"], "desktop", "pair", "revoked"):
        assert expected in output
    for token in (bound, other):
        assert token not in output
    assert auth.token_claims(other)["jti"] not in token_list("--user", "staff")
    assert auth.token_claims(bound)["jti"] not in token_list("--state", "revoked")
    assert auth.token_claims(other)["jti"] not in token_list("--server", "pair")
