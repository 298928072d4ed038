"""Authentication and authorisation of the REST API: HTTP Basic, JWT bearer tokens (HS256, RS256,
ES256), the admin session with CSRF, scopes, revocation, and running with authentication off."""

import base64
import hashlib
import hmac
import io
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.management import call_command
from django.test import Client, override_settings

from gateway_project.checks import check_auth_disabled
from registry import auth
from registry.conf import jwt_config
from registry.exceptions import InvalidInput
from registry.models import RevokedToken, VirtualServer
from tests.conftest import ApiClient, basic
from tests.factories import UserFactory, VirtualServerFactory

pytestmark = pytest.mark.django_db


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def craft(*, key: str | None = None, algorithm: str | None = None, headers=None, **overrides) -> str:
    """A token signed directly with pyjwt: the claims token_issue would give 'staff', changed by
    overrides (a value of None drops the claim)."""
    config = jwt_config()
    now = datetime.now(UTC)
    claims = {
        "sub": "staff",
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(hours=1),
        "jti": uuid.uuid4().hex,
        "scope": "read write call",
        **overrides,
    }
    claims = {name: value for name, value in claims.items() if value is not None}
    return jwt.encode(
        claims, config.signing_key if key is None else key, algorithm=algorithm or config.algorithm, headers=headers
    )


def bearer(token: str) -> ApiClient:
    return ApiClient(f"Bearer {token}")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def alter_one_character(part: str, index: int) -> str:
    """The base64url text with the character at index replaced by a different one."""
    replacement = "A" if part[index] != "A" else "B"
    return part[:index] + replacement + part[index + 1 :]


def assert_refused(response, *reason: str) -> None:
    """401 with the WWW-Authenticate challenge and a detail that names the reason."""
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == auth.WWW_AUTHENTICATE
    detail = response.json()["detail"]
    for words in reason:
        assert words in detail, detail


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh RSA key pair."""
    return _pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh P-256 key pair."""
    return _pem_pair(ec.generate_private_key(ec.SECP256R1()))


def _pem_pair(private_key) -> tuple[str, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


# ---------------------------------------------------------------------------------------------
# No credentials, HTTP Basic
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/tools", "/api/gateways", "/api/servers", "/api/export"])
def test_request_without_credentials_is_401_with_a_challenge(anon_client, path):
    """Without credentials every API endpoint answers 401 with WWW-Authenticate naming Bearer and Basic."""
    response = anon_client.get(path)
    assert_refused(response, "Authentication required")
    assert 'Bearer realm="MCP Gateway"' in response["WWW-Authenticate"]
    assert 'Basic realm="MCP Gateway"' in response["WWW-Authenticate"]


def test_write_without_credentials_is_401_and_stores_nothing(anon_client):
    """An unauthenticated POST answers 401 and creates nothing."""
    assert_refused(anon_client.post_json("/api/servers", {"name": "sneaky"}))
    assert not VirtualServer.objects.exists()


def test_basic_with_the_right_password_is_accepted(staff_user):
    """HTTP Basic with a Django user's right password authenticates."""
    response = ApiClient(basic("staff")).get("/api/tools")
    assert response.status_code == 200


def test_basic_with_a_wrong_password_is_401(staff_user):
    """HTTP Basic with a wrong password answers 401 'Wrong username or password'."""
    assert_refused(ApiClient(basic("staff", "wrong-password")).get("/api/tools"), "Wrong username or password")


def test_basic_for_an_unknown_user_is_401(db):
    """HTTP Basic naming a user who does not exist answers 401 with the same message as a wrong password."""
    assert_refused(ApiClient(basic("nobody")).get("/api/tools"), "Wrong username or password")


@pytest.mark.parametrize(
    "value",
    ["!!!not-base64!!!", base64.b64encode(b"no-colon-here").decode(), base64.b64encode(b"\xff\xfe:pw").decode()],
    ids=["not-base64", "no-colon", "not-utf8"],
)
def test_basic_with_malformed_credentials_is_401(staff_user, value):
    """Basic credentials that are not base64 of 'username:password' answer 401 'Malformed Basic credentials'."""
    assert_refused(ApiClient(f"Basic {value}").get("/api/tools"), "Malformed Basic credentials")


@pytest.mark.parametrize("header", ["Digest abc", "Token abc", "Bearer", "Basic", "justonevalue"])
def test_an_unsupported_authorization_header_is_401(staff_user, header):
    """An Authorization header that is neither 'Bearer <token>' nor 'Basic <base64>' answers 401."""
    assert_refused(ApiClient(header).get("/api/tools"), "Unsupported Authorization header")


def test_basic_scheme_name_is_case_insensitive(staff_user):
    """'basic' and 'BEARER' scheme names are accepted in any case."""
    encoded = basic("staff").split(" ", 1)[1]
    assert ApiClient(f"basic {encoded}").get("/api/tools").status_code == 200
    token = auth.token_issue(username="staff")
    assert ApiClient(f"BEARER {token}").get("/api/tools").status_code == 200


def test_basic_for_an_inactive_user_is_401(db):
    """An inactive user's right password answers 401."""
    UserFactory(username="gone", is_staff=True, is_active=False)
    assert_refused(ApiClient(basic("gone")).get("/api/tools"))


# ---------------------------------------------------------------------------------------------
# Bearer tokens
# ---------------------------------------------------------------------------------------------


def test_a_token_from_token_issue_is_accepted(staff_user):
    """A token from auth.token_issue authenticates reads and writes of a staff user."""
    client = bearer(auth.token_issue(username="staff"))
    assert client.get("/api/tools").status_code == 200
    assert client.post_json("/api/servers", {"name": "via-token"}).status_code == 201


def test_issued_token_claims(staff_user):
    """An issued token names its user, issuer, audience, a unique id, an expiry and the user's scopes."""
    token = auth.token_issue(username="staff", expires_in=timedelta(minutes=30))
    config = jwt_config()
    claims = jwt.decode(token, config.verify_key, algorithms=["HS256"], audience=config.audience)
    assert (claims["sub"], claims["iss"], claims["aud"]) == ("staff", "mcp-gateway", "mcp-gateway")
    assert claims["scope"] == "call read write"
    assert claims["exp"] - claims["iat"] == 30 * 60
    assert len(claims["jti"]) == 32
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert auth.token_claims(auth.token_issue(username="staff"))["jti"] != claims["jti"]


@pytest.mark.parametrize("position", ["start", "middle"])
def test_a_token_altered_by_one_character_in_the_signature_is_401(staff_user, position):
    """A token whose signature part differs by one character is refused with 401."""
    header, payload, signature = auth.token_issue(username="staff").split(".")
    index = 0 if position == "start" else len(signature) // 2
    forged = ".".join([header, payload, alter_one_character(signature, index)])
    assert_refused(bearer(forged).get("/api/tools"), "Invalid bearer token", "signature does not verify")


@pytest.mark.parametrize("position", ["start", "middle", "end"])
def test_a_token_altered_by_one_character_in_the_payload_is_401(staff_user, position):
    """A token whose payload part differs by one character is refused with 401."""
    header, payload, signature = auth.token_issue(username="staff").split(".")
    index = {"start": 0, "middle": len(payload) // 2, "end": len(payload) - 2}[position]
    forged = ".".join([header, alter_one_character(payload, index), signature])
    response = bearer(forged).get("/api/tools")
    assert_refused(response, "Invalid bearer token")
    detail = response.json()["detail"]
    assert "signature does not verify" in detail or "malformed" in detail


def test_a_token_with_a_raised_scope_and_the_old_signature_is_401(db):
    """Re-encoding a read-only token's payload with more scopes, keeping the signature, is refused."""
    UserFactory(username="staff", is_staff=True)
    header, payload, signature = auth.token_issue(username="staff", scopes=["read"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = "read write call"
    forged = ".".join([header, b64url(json.dumps(claims).encode()), signature])
    assert_refused(bearer(forged).post_json("/api/servers", {"name": "x"}), "signature does not verify")
    assert not VirtualServer.objects.exists()


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "...", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_a_malformed_token_is_401(staff_user, token):
    """Something that is not a JWT answers 401 'malformed'."""
    assert_refused(bearer(token).get("/api/tools"), "Invalid bearer token", "malformed")


def test_an_expired_token_is_401(staff_user):
    """A token whose exp lies further in the past than the leeway answers 401 'expired'."""
    now = datetime.now(UTC)
    leeway = jwt_config().leeway
    token = craft(iat=now - timedelta(hours=2), nbf=now - timedelta(hours=2), exp=now - timedelta(seconds=leeway + 60))
    assert_refused(bearer(token).get("/api/tools"), "Invalid bearer token", "expired")


def test_a_token_expired_within_the_leeway_is_accepted(staff_user):
    """Clock skew up to JWT_LEEWAY is tolerated: a token expired a few seconds ago still works."""
    now = datetime.now(UTC)
    assert jwt_config().leeway >= 20
    token = craft(iat=now - timedelta(hours=1), exp=now - timedelta(seconds=5))
    assert bearer(token).get("/api/tools").status_code == 200


@override_settings(JWT_LEEWAY=0)
def test_leeway_follows_the_setting(staff_user):
    """With JWT_LEEWAY=0 a token that expired seconds ago is refused."""
    now = datetime.now(UTC)
    token = craft(iat=now - timedelta(hours=1), exp=now - timedelta(seconds=5))
    assert_refused(bearer(token).get("/api/tools"), "expired")


def test_a_token_not_valid_yet_is_401(staff_user):
    """A token whose nbf lies further in the future than the leeway answers 401 'not valid yet (nbf)'."""
    now = datetime.now(UTC)
    token = craft(nbf=now + timedelta(seconds=jwt_config().leeway + 300), exp=now + timedelta(hours=2))
    assert_refused(bearer(token).get("/api/tools"), "Invalid bearer token", "not valid yet (nbf)")


def test_a_token_from_another_issuer_is_401(staff_user):
    """A token whose iss is not JWT_ISSUER answers 401 naming iss."""
    assert_refused(bearer(craft(iss="someone-else")).get("/api/tools"), "issued by someone else (iss)")


def test_a_token_for_another_audience_is_401(staff_user):
    """A token whose aud is not JWT_AUDIENCE answers 401 naming aud."""
    assert_refused(bearer(craft(aud="another-service")).get("/api/tools"), "another audience (aud)")


@override_settings(JWT_ISSUER="issuer-b", JWT_AUDIENCE="audience-b")
def test_issuer_and_audience_follow_the_settings(staff_user):
    """Tokens are issued and checked with the configured JWT_ISSUER and JWT_AUDIENCE."""
    token = auth.token_issue(username="staff")
    assert auth.token_claims(token)["iss"] == "issuer-b"
    assert bearer(token).get("/api/tools").status_code == 200
    assert_refused(bearer(craft(iss="mcp-gateway")).get("/api/tools"), "(iss)")


@pytest.mark.parametrize("claim", ["exp", "iat", "sub", "jti", "aud", "iss"])
def test_a_token_without_a_required_claim_is_401(staff_user, claim):
    """A token lacking exp, iat, sub, jti, aud or iss answers 401 naming the missing claim."""
    assert_refused(bearer(craft(**{claim: None})).get("/api/tools"), "lacks a required claim", f'"{claim}"')


def test_a_token_signed_with_another_key_is_401(staff_user):
    """A token signed with a secret other than JWT_SECRET answers 401 'signature does not verify'."""
    token = craft(key="another-secret-that-is-long-enough-0123456789")
    assert_refused(bearer(token).get("/api/tools"), "signature does not verify")


def test_an_unsigned_alg_none_token_is_401(staff_user):
    """A token with alg 'none' (no signature) is refused with 401 naming the algorithm."""
    header = b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    now = int(datetime.now(UTC).timestamp())
    config = jwt_config()
    claims = {
        "sub": "staff",
        "iss": config.issuer,
        "aud": config.audience,
        "iat": now,
        "exp": now + 3600,
        "jti": uuid.uuid4().hex,
        "scope": "read write call",
    }
    unsigned = f"{header}.{b64url(json.dumps(claims).encode())}."
    assert_refused(bearer(unsigned).get("/api/tools"), "algorithm this gateway does not accept")
    assert_refused(bearer(unsigned.rstrip(".") + ".c2ln").get("/api/tools"), "algorithm")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_token_with_another_hmac_algorithm_is_401(staff_user):
    """A token signed with the right secret but HS512 instead of the configured HS256 answers 401."""
    assert_refused(bearer(craft(algorithm="HS512")).get("/api/tools"), "algorithm this gateway does not accept")


def test_a_revoked_token_is_401(staff_user):
    """After token_revoke, the same token answers 401 'revoked'."""
    token = auth.token_issue(username="staff")
    client = bearer(token)
    assert client.get("/api/tools").status_code == 200
    revoked = auth.token_revoke(token_or_jti=token, reason="leaked")
    assert_refused(client.get("/api/tools"), "revoked")
    claims = auth.token_claims(token)
    assert (revoked.jti, revoked.subject, revoked.reason) == (claims["jti"], "staff", "leaked")
    assert revoked.expires_at == datetime.fromtimestamp(claims["exp"], tz=UTC)


def test_revoking_by_jti_refuses_the_token(staff_user):
    """A token can be revoked by its jti alone; revoking one token leaves the others valid."""
    token, other = auth.token_issue(username="staff"), auth.token_issue(username="staff")
    auth.token_revoke(token_or_jti=auth.token_claims(token)["jti"])
    assert_refused(bearer(token).get("/api/tools"), "revoked")
    assert bearer(other).get("/api/tools").status_code == 200


def test_revoking_twice_is_harmless(staff_user):
    """Revoking an already revoked token keeps one deny-list entry."""
    token = auth.token_issue(username="staff")
    first = auth.token_revoke(token_or_jti=token)
    second = auth.token_revoke(token_or_jti=token)
    assert first.pk == second.pk
    assert RevokedToken.objects.count() == 1


def test_a_token_of_an_inactive_user_is_401(staff_user):
    """A valid token stops working when its user is deactivated."""
    token = auth.token_issue(username="staff")
    staff_user.is_active = False
    staff_user.save()
    assert_refused(bearer(token).get("/api/tools"), "inactive")


def test_a_token_of_a_deleted_user_is_401(staff_user):
    """A valid token stops working when its user is deleted."""
    token = auth.token_issue(username="staff")
    staff_user.delete()
    assert_refused(bearer(token).get("/api/tools"), "does not exist")


def test_a_token_with_an_unknown_scope_is_401(staff_user):
    """A correctly signed token whose scope claim names an unknown scope is refused with 401, not 422."""
    assert_refused(bearer(craft(scope="read admin")).get("/api/tools"), "Invalid bearer token", "admin")


def test_a_token_without_a_scope_claim_has_the_users_scopes(staff_user, plain_user):
    """A token without a scope claim may do what its user may do."""
    assert bearer(craft(scope=None)).post_json("/api/servers", {"name": "ok"}).status_code == 201
    reader_token = craft(sub="reader", scope=None)
    assert bearer(reader_token).get("/api/servers").status_code == 200
    assert bearer(reader_token).post_json("/api/servers", {"name": "no"}).status_code == 403


def test_token_issue_refuses_unknown_and_inactive_users(db):
    """token_issue raises InvalidInput for a user who does not exist or is inactive."""
    UserFactory(username="gone", is_active=False)
    for username in ("nobody", "gone"):
        with pytest.raises(InvalidInput, match="No active user"):
            auth.token_issue(username=username)


# ---------------------------------------------------------------------------------------------
# Scopes: who may write
# ---------------------------------------------------------------------------------------------


def test_non_staff_user_may_read_but_not_write(reader_client):
    """A non-staff user gets 200 on GET and 403 on POST, with a message naming the missing scope."""
    assert reader_client.get("/api/tools").status_code == 200
    response = reader_client.post_json("/api/servers", {"name": "nope"})
    assert response.status_code == 403
    assert "'write'" in response.json()["detail"]
    assert "call, read" in response.json()["detail"]
    assert not VirtualServer.objects.exists()


def test_non_staff_token_may_not_write(plain_user):
    """A non-staff user's token carries read and call only; writes answer 403."""
    token = auth.token_issue(username="reader")
    assert auth.token_claims(token)["scope"] == "call read"
    assert bearer(token).post_json("/api/servers", {"name": "nope"}).status_code == 403


def test_a_read_only_token_of_a_staff_user_may_not_write(staff_user):
    """A token limited to the read scope answers 403 on writes even though its user is staff."""
    client = bearer(auth.token_issue(username="staff", scopes=["read"]))
    server = VirtualServerFactory(name="kept")
    assert client.get("/api/servers").status_code == 200
    responses = [
        client.post_json("/api/servers", {"name": "new"}),
        client.patch_json(f"/api/servers/{server.pk}", {"title": "x"}),
        client.delete(f"/api/servers/{server.pk}"),
        client.post_json("/api/import", {"format": "mcp-gateway-catalog", "version": 1}),
    ]
    for response in responses:
        assert response.status_code == 403
        assert "they allow: read" in response.json()["detail"]
    assert list(VirtualServer.objects.values_list("name", "title")) == [("kept", "")]


def test_a_token_without_the_read_scope_may_not_read(staff_user):
    """A token limited to the call scope answers 403 on catalog reads."""
    response = bearer(auth.token_issue(username="staff", scopes="call")).get("/api/tools")
    assert response.status_code == 403
    assert "'read'" in response.json()["detail"]


def test_a_staff_token_loses_write_when_the_user_loses_staff(staff_user):
    """A token's scopes are narrowed to what its user may do now."""
    client = bearer(auth.token_issue(username="staff"))
    staff_user.is_staff = False
    staff_user.save()
    assert client.get("/api/tools").status_code == 200
    assert client.post_json("/api/servers", {"name": "nope"}).status_code == 403


# ---------------------------------------------------------------------------------------------
# RS256 and ES256
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("algorithm", "keys"), [("RS256", "rsa_keys"), ("ES256", "ec_keys")])
def test_asymmetric_tokens_round_trip(staff_user, request, algorithm, keys):
    """With an RS256 or ES256 key pair, issued tokens are signed with that algorithm and authenticate."""
    private, public = request.getfixturevalue(keys)
    with override_settings(JWT_ALGORITHM=algorithm, JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private):
        token = auth.token_issue(username="staff")
        assert jwt.get_unverified_header(token)["alg"] == algorithm
        assert jwt.decode(token, public, algorithms=[algorithm], audience="mcp-gateway")["sub"] == "staff"
        client = bearer(token)
        assert client.get("/api/tools").status_code == 200
        assert client.post_json("/api/servers", {"name": algorithm.lower()}).status_code == 201


@pytest.mark.parametrize(("algorithm", "keys"), [("RS256", "rsa_keys"), ("ES256", "ec_keys")])
def test_asymmetric_setup_refuses_tokens_signed_otherwise(staff_user, request, algorithm, keys):
    """Under RS256/ES256, an HS256 token, a token from another key pair and an altered token are 401."""
    private, public = request.getfixturevalue(keys)
    hs256_token = auth.token_issue(username="staff")
    other_private, _ = _pem_pair(
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    with override_settings(JWT_ALGORITHM=algorithm, JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private):
        assert_refused(bearer(hs256_token).get("/api/tools"), "algorithm this gateway does not accept")
        assert_refused(
            bearer(craft(key=other_private, algorithm=algorithm)).get("/api/tools"), "signature does not verify"
        )
        header, payload, signature = auth.token_issue(username="staff").split(".")
        forged = ".".join([header, payload, alter_one_character(signature, len(signature) // 2)])
        assert_refused(bearer(forged).get("/api/tools"), "Invalid bearer token")


def test_rs256_public_key_used_as_hmac_secret_is_refused(staff_user, rsa_keys):
    """Algorithm confusion: an HS256 token keyed with the RS256 public key is refused with 401."""
    private, public = rsa_keys
    with override_settings(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private):
        legitimate = auth.token_issue(username="staff")
    _, payload, _ = legitimate.split(".")
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    signing_input = f"{header}.{payload}".encode()
    signature = b64url(hmac.new(public.encode(), signing_input, hashlib.sha256).digest())
    with override_settings(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private):
        assert_refused(bearer(f"{header}.{payload}.{signature}").get("/api/tools"), "algorithm")


def test_verify_only_setup_accepts_tokens_but_cannot_issue(staff_user, rsa_keys):
    """With only JWT_PUBLIC_KEY set, tokens signed elsewhere work, and issuing one is refused."""
    private, public = rsa_keys
    with override_settings(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private):
        token = auth.token_issue(username="staff")
    with override_settings(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=""):
        assert bearer(token).get("/api/tools").status_code == 200
        with pytest.raises(InvalidInput, match="JWT_PRIVATE_KEY"):
            auth.token_issue(username="staff")
        response = ApiClient(basic("staff")).post_json("/api/tokens", {})
        assert response.status_code == 422


# ---------------------------------------------------------------------------------------------
# Admin session and CSRF
# ---------------------------------------------------------------------------------------------


def csrf_token(client: Client) -> str:
    """The CSRF token an admin page hands out to the logged-in user (its cookie is now set on the client)."""
    assert client.get("/admin/login/", follow=True).status_code == 200
    return client.cookies["csrftoken"].value


def test_session_login_may_read(staff_user):
    """A user logged in to the admin may read the API with the session cookie alone."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    assert client.get("/api/tools").status_code == 200


def test_session_write_without_csrf_token_is_403(staff_user):
    """A session POST without the CSRF token answers 403 naming CSRF; nothing is stored."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    csrf_token(client)  # the cookie alone is not enough
    response = client.post("/api/servers", data={"name": "csrf"}, content_type="application/json")
    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not VirtualServer.objects.exists()


def test_session_write_with_a_wrong_csrf_token_is_403(staff_user):
    """A session POST whose X-CSRFToken does not match the cookie answers 403."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    csrf_token(client)
    response = client.post(
        "/api/servers", data={"name": "csrf"}, content_type="application/json", headers={"X-CSRFToken": "x" * 32}
    )
    assert response.status_code == 403
    assert not VirtualServer.objects.exists()


def test_session_write_with_csrf_token_is_accepted(staff_user):
    """A session POST with the CSRF cookie and the X-CSRFToken header succeeds."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    token = csrf_token(client)
    response = client.post(
        "/api/servers", data={"name": "csrf"}, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 201, response.content
    assert VirtualServer.objects.filter(name="csrf").exists()


def test_session_of_a_non_staff_user_may_not_write(plain_user):
    """A non-staff session passes CSRF but lacks the write scope: 403."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(plain_user)
    token = csrf_token(client)
    response = client.post(
        "/api/servers", data={"name": "x"}, content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.status_code == 403
    assert "'write'" in response.json()["detail"]


def test_session_of_an_inactive_user_is_401(staff_user):
    """A session whose user was deactivated no longer authenticates."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    staff_user.is_active = False
    staff_user.save()
    assert_refused(client.get("/api/tools"))


def test_after_logout_the_session_is_401(staff_user):
    """Logging out ends API access through the session."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff_user)
    client.logout()
    assert_refused(client.get("/api/tools"))


def test_basic_and_bearer_writes_need_no_csrf_token(staff_user):
    """CSRF applies to the cookie session only: Basic and bearer writes succeed without a CSRF token."""
    token = auth.token_issue(username="staff")
    for name, authorization in (("via-basic", basic("staff")), ("via-token", f"Bearer {token}")):
        client = Client(enforce_csrf_checks=True, headers={"Authorization": authorization})
        response = client.post("/api/servers", data={"name": name}, content_type="application/json")
        assert response.status_code == 201, response.content


def test_a_bad_authorization_header_is_not_rescued_by_a_session(staff_user):
    """When an Authorization header is sent it decides: a wrong one answers 401 despite a valid session."""
    client = Client(headers={"Authorization": basic("staff", "wrong")})
    client.force_login(staff_user)
    assert_refused(client.get("/api/tools"), "Wrong username or password")


# ---------------------------------------------------------------------------------------------
# Authentication off
# ---------------------------------------------------------------------------------------------


@override_settings(GATEWAY_AUTH_REQUIRED=False)
def test_with_auth_off_anyone_may_read_and_write(anon_client):
    """GATEWAY_AUTH_REQUIRED=False lets a caller without credentials read, create, change and delete."""
    assert anon_client.get("/api/tools").status_code == 200
    created = anon_client.post_json("/api/servers", {"name": "open"})
    assert created.status_code == 201
    pk = created.json()["id"]
    assert anon_client.patch_json(f"/api/servers/{pk}", {"title": "Open"}).status_code == 200
    assert anon_client.delete(f"/api/servers/{pk}").status_code == 204
    assert anon_client.get("/api/export", {"include_secrets": "true"}).status_code == 200


@override_settings(GATEWAY_AUTH_REQUIRED=False)
def test_with_auth_off_no_token_can_be_issued(anon_client):
    """With authentication off there is no user to issue a token to: POST /api/tokens answers 403."""
    response = anon_client.post_json("/api/tokens", {})
    assert response.status_code == 403
    assert "authentication is off" in response.json()["detail"]


def test_auth_off_is_a_system_check_warning():
    """GATEWAY_AUTH_REQUIRED=False raises warning gateway.W001; on, there is none."""
    assert check_auth_disabled() == []
    with override_settings(GATEWAY_AUTH_REQUIRED=False):
        warnings = check_auth_disabled()
    assert [warning.id for warning in warnings] == ["gateway.W001"]
    assert "GATEWAY_AUTH_REQUIRED is off" in warnings[0].msg


def test_manage_py_check_shows_the_auth_off_warning():
    """`manage.py check` prints gateway.W001 when authentication is off, and not otherwise."""
    stdout, stderr = io.StringIO(), io.StringIO()
    call_command("check", stdout=stdout, stderr=stderr)
    assert "gateway.W001" not in stdout.getvalue() + stderr.getvalue()
    stdout, stderr = io.StringIO(), io.StringIO()
    with override_settings(GATEWAY_AUTH_REQUIRED=False):
        call_command("check", stdout=stdout, stderr=stderr)
    assert "gateway.W001" in stdout.getvalue() + stderr.getvalue()


# ---------------------------------------------------------------------------------------------
# POST /api/tokens and /api/tokens/revoke
# ---------------------------------------------------------------------------------------------


def test_post_tokens_issues_a_token_for_the_caller(staff_client):
    """POST /api/tokens answers 201 with a bearer token for the authenticated user with their scopes."""
    response = staff_client.post_json("/api/tokens", {})
    assert response.status_code == 201
    body = response.json()
    assert body["token_type"] == "Bearer"
    claims = auth.token_claims(body["token"])
    assert (claims["sub"], claims["scope"]) == ("staff", "call read write")
    assert claims["exp"] - claims["iat"] == int(jwt_config().default_expires_in.total_seconds())
    assert bearer(body["token"]).get("/api/tools").status_code == 200


def test_post_tokens_honours_expires_in_and_scopes(staff_client):
    """expires_in and scopes narrow the issued token."""
    response = staff_client.post_json("/api/tokens", {"expires_in": "2h", "scopes": ["read"]})
    assert response.status_code == 201
    token = response.json()["token"]
    claims = auth.token_claims(token)
    assert claims["scope"] == "read"
    assert claims["exp"] - claims["iat"] == 2 * 3600
    assert bearer(token).post_json("/api/servers", {"name": "x"}).status_code == 403


def test_post_tokens_for_a_non_staff_user_carries_their_scopes(reader_client):
    """A non-staff user may issue themselves a token with read and call."""
    response = reader_client.post_json("/api/tokens", {})
    assert response.status_code == 201
    assert auth.token_claims(response.json()["token"])["scope"] == "call read"


def test_post_tokens_refuses_scopes_the_caller_lacks(reader_client):
    """Asking for a scope the caller does not have answers 403 and issues nothing."""
    response = reader_client.post_json("/api/tokens", {"scopes": ["read", "write"]})
    assert response.status_code == 403
    assert "scopes" in response.json()["detail"]
    assert "token" not in response.json()


def test_post_tokens_cannot_widen_a_narrow_token(staff_user):
    """A read-only token cannot be traded for a token with more scopes (403); it may renew itself."""
    client = bearer(auth.token_issue(username="staff", scopes=["read"]))
    assert client.post_json("/api/tokens", {"scopes": ["write"]}).status_code == 403
    renewed = client.post_json("/api/tokens", {})
    assert renewed.status_code == 201
    assert auth.token_claims(renewed.json()["token"])["scope"] == "read"


@pytest.mark.parametrize("expires_in", ["forever", "0m", "10", "-5m", "1y", ""])
def test_post_tokens_with_a_bad_expires_in_is_422(staff_client, expires_in):
    """An expires_in that is not a positive duration like 30m, 12h, 7d or 2w answers 422."""
    response = staff_client.post_json("/api/tokens", {"expires_in": expires_in})
    if expires_in == "":
        assert response.status_code == 201  # empty means the default
        return
    assert response.status_code == 422
    assert "duration" in response.json()["detail"]


@pytest.mark.parametrize(
    "body", [{"scopes": ["admin"]}, {"scopes": "read"}, {"expires_in": 3600}, {"lifetime": "1h"}], ids=str
)
def test_post_tokens_with_a_bad_body_is_422(staff_client, body):
    """Unknown scopes, wrong types and unknown fields in POST /api/tokens answer 422."""
    assert staff_client.post_json("/api/tokens", body).status_code == 422


def test_post_tokens_without_credentials_is_401(anon_client):
    """POST /api/tokens needs credentials."""
    assert_refused(anon_client.post_json("/api/tokens", {}))


def test_post_tokens_revoke_makes_the_token_fail(staff_client, staff_user):
    """POST /api/tokens/revoke answers 200 with the jti; the token is refused from then on."""
    token = auth.token_issue(username="staff")
    response = staff_client.post_json("/api/tokens/revoke", {"token": token, "reason": "rotated"})
    assert response.status_code == 200
    assert response.json()["jti"] == auth.token_claims(token)["jti"]
    assert response.json()["revoked_at"]
    assert_refused(bearer(token).get("/api/tools"), "revoked")
    assert RevokedToken.objects.get().reason == "rotated"


def test_post_tokens_revoke_needs_write(reader_client, plain_user):
    """A non-staff user may not revoke tokens (403); nothing is revoked."""
    token = auth.token_issue(username="reader")
    assert reader_client.post_json("/api/tokens/revoke", {"token": token}).status_code == 403
    assert not RevokedToken.objects.exists()
    assert bearer(token).get("/api/tools").status_code == 200


def test_post_tokens_revoke_of_garbage_is_422(staff_client):
    """Revoking something with two dots that is not a readable token answers 422; nothing is revoked."""
    response = staff_client.post_json("/api/tokens/revoke", {"token": "a.b.c"})
    assert response.status_code == 422
    assert not RevokedToken.objects.exists()


def test_a_user_can_revoke_the_token_they_are_using(staff_user):
    """A token may revoke itself; the next request with it is refused."""
    token = auth.token_issue(username="staff")
    client = bearer(token)
    assert client.post_json("/api/tokens/revoke", {"token": token}).status_code == 200
    assert_refused(client.get("/api/tools"), "revoked")
