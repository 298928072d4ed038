"""The issue_token and revoke_token management commands."""

import io

import pytest
from django.core.management import CommandError, call_command

from registry import auth
from registry.models import RevokedToken
from tests.conftest import ApiClient
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def issue(*args: str) -> tuple[str, str]:
    """Run issue_token with the given arguments; (the last line of stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("issue_token", *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue().strip().splitlines()[-1], stderr.getvalue()


def revoke(*args: str) -> str:
    stdout = io.StringIO()
    call_command("revoke_token", *args, stdout=stdout, stderr=io.StringIO())
    return stdout.getvalue()


def bearer(token: str) -> ApiClient:
    return ApiClient(f"Bearer {token}")


def test_issue_token_prints_a_token_that_authenticates(staff_user):
    """The last line of issue_token's output is a bearer token accepted by /api/tools."""
    token, _ = issue("staff")
    assert token.count(".") == 2
    assert bearer(token).get("/api/tools").status_code == 200
    assert bearer(token).post_json("/api/servers", {"name": "from-cli"}).status_code == 201


def test_issue_token_describes_the_token_on_stderr(staff_user):
    """issue_token tells who the token is for, its scopes and jti on stderr, keeping stdout to the token."""
    token, stderr = issue("staff")
    claims = auth.token_claims(token)
    assert "Token for staff" in stderr
    assert claims["jti"] in stderr
    assert "call read write" in stderr


def test_issue_token_uses_the_default_lifetime(staff_user, settings):
    """Without --expires-in the token lives JWT_DEFAULT_EXPIRES_IN."""
    settings.JWT_DEFAULT_EXPIRES_IN = "3d"
    claims = auth.token_claims(issue("staff")[0])
    assert claims["exp"] - claims["iat"] == 3 * 24 * 3600


@pytest.mark.parametrize(
    ("duration", "seconds"), [("90s", 90), ("45m", 45 * 60), ("12h", 12 * 3600), ("2w", 14 * 86400)]
)
def test_issue_token_honours_expires_in(staff_user, duration, seconds):
    """--expires-in sets the token's lifetime (exp - iat)."""
    claims = auth.token_claims(issue("staff", "--expires-in", duration)[0])
    assert claims["exp"] - claims["iat"] == seconds


def test_issue_token_honours_repeated_scope_options(staff_user):
    """--scope read --scope call gives a token with exactly those scopes, which cannot write."""
    token, _ = issue("staff", "--scope", "read", "--scope", "call")
    assert auth.token_claims(token)["scope"] == "call read"
    assert bearer(token).get("/api/tools").status_code == 200
    assert bearer(token).post_json("/api/servers", {"name": "nope"}).status_code == 403


def test_issue_token_accepts_comma_separated_scopes(staff_user):
    """--scope read,write is the same as --scope read --scope write."""
    token, _ = issue("staff", "--scope", "read,write")
    assert auth.token_claims(token)["scope"] == "read write"


def test_issue_token_for_a_non_staff_user_drops_write(plain_user):
    """A non-staff user's token carries only the asked-for scopes the user may have."""
    token, _ = issue("reader", "--scope", "read", "--scope", "write")
    assert auth.token_claims(token)["scope"] == "read"


def test_issue_token_refuses_only_scopes_the_user_lacks(plain_user):
    """Asking only for scopes the user may not have is a CommandError."""
    with pytest.raises(CommandError, match="may not have any of the scopes"):
        issue("reader", "--scope", "write")


def test_issue_token_for_an_unknown_user_is_a_command_error(db):
    """issue_token for a user who does not exist raises CommandError naming them."""
    with pytest.raises(CommandError, match="No active user named 'ghost'"):
        issue("ghost")


def test_issue_token_for_an_inactive_user_is_a_command_error(db):
    """issue_token for an inactive user raises CommandError."""
    UserFactory(username="retired", is_active=False)
    with pytest.raises(CommandError, match="No active user"):
        issue("retired")


@pytest.mark.parametrize("duration", ["7x", "soon", "0d", "-1h", "1.5h", "h"])
def test_issue_token_with_a_bad_duration_is_a_command_error(staff_user, duration):
    """An --expires-in that is not a positive number with s, m, h, d or w raises CommandError."""
    with pytest.raises(CommandError, match=r"--expires-in: .* is not a duration"):
        issue("staff", f"--expires-in={duration}")


def test_issue_token_with_an_unknown_scope_is_a_command_error(staff_user):
    """An unknown --scope raises CommandError naming it."""
    with pytest.raises(CommandError, match="admin"):
        issue("staff", "--scope", "admin")


def test_revoke_token_makes_the_token_fail_with_401(staff_user):
    """After revoke_token TOKEN, the token is refused with 401 'revoked'."""
    token, _ = issue("staff")
    client = bearer(token)
    assert client.get("/api/tools").status_code == 200
    output = revoke(token)
    jti = auth.token_claims(token)["jti"]
    assert f"Revoked token {jti}" in output
    response = client.get("/api/tools")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert RevokedToken.objects.get(jti=jti).subject == "staff"


def test_revoke_token_by_jti_makes_the_token_fail(staff_user):
    """revoke_token with the jti alone refuses the token; other tokens keep working."""
    token, other = issue("staff")[0], issue("staff")[0]
    revoke(auth.token_claims(token)["jti"], "--reason", "laptop lost")
    assert bearer(token).get("/api/tools").status_code == 401
    assert bearer(other).get("/api/tools").status_code == 200
    assert RevokedToken.objects.get().reason == "laptop lost"


def test_revoke_token_twice_succeeds(staff_user):
    """Revoking the same token again is not an error and keeps one deny-list entry."""
    token, _ = issue("staff")
    revoke(token)
    revoke(token)
    assert RevokedToken.objects.count() == 1


def test_revoke_token_of_an_unreadable_token_is_a_command_error(db):
    """Something shaped like a token that cannot be read raises CommandError; nothing is revoked."""
    with pytest.raises(CommandError, match="neither a token id"):
        revoke("not.a.token")
    assert not RevokedToken.objects.exists()
