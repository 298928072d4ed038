"""HTTPS behind a TLS-terminating proxy (docs/deployment.md): SECURE_PROXY_SSL_HEADER, the secure cookies, the
https redirect and HSTS read from the environment, off by default so `make run`'s plain http on loopback keeps
working; with the proxy's header the absolute URLs the gateway shows are https. The OAuth documents and
challenges behind the proxy: tests/transports/test_oauth.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from django.test import Client

from gateway_project import env
from tests.live_gateway import ROOT

HTTPS_SETTINGS = (
    "SECURE_PROXY_SSL_HEADER",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
)
# As nginx passes a request on: the Host the client sent (no port: 443) and the scheme it used.
BEHIND_THE_PROXY = {"HTTP_HOST": "testserver", "HTTP_X_FORWARDED_PROTO": "https"}


def production_settings(**environ: str) -> dict:
    """These settings as gateway_project.settings reads them from this environment, in a fresh process."""
    base = {k: v for k, v in os.environ.items() if k not in HTTPS_SETTINGS and k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import json; from gateway_project import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {HTTPS_SETTINGS!r}}} | {{'errors': s.SETTINGS_ERRORS}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=base | {"SECRET_KEY": "k" * 50} | environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_embedded_default_serves_plain_http():
    """Unset: no proxy header trusted, cookies sent over http, no redirect, no HSTS."""
    assert production_settings() == {
        "SECURE_PROXY_SSL_HEADER": None,
        "SESSION_COOKIE_SECURE": False,
        "CSRF_COOKIE_SECURE": False,
        "SECURE_SSL_REDIRECT": False,
        "SECURE_HSTS_SECONDS": 0,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": False,
        "errors": [],
    }


def test_the_environment_turns_them_on():
    found = production_settings(
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        SESSION_COOKIE_SECURE="true",
        CSRF_COOKIE_SECURE="true",
        SECURE_SSL_REDIRECT="on",
        SECURE_HSTS_SECONDS="3600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="yes",
    )
    assert found == {
        "SECURE_PROXY_SSL_HEADER": ["HTTP_X_FORWARDED_PROTO", "https"],
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "errors": [],
    }


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("X-Forwarded-Proto", ("HTTP_X_FORWARDED_PROTO", "https")),
        (" x-forwarded-proto ", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("X-Forwarded-Ssl: on", ("HTTP_X_FORWARDED_SSL", "on")),
        ("", None),
    ],
)
def test_the_proxy_header_is_a_name_and_an_optional_value(monkeypatch, env_errors, raw, expected):
    monkeypatch.setenv("GW_TEST_HEADER", raw)
    assert env.env_proxy_ssl_header("GW_TEST_HEADER") == expected
    assert env_errors == []


@pytest.mark.parametrize("raw", ["X_Forwarded_Proto", "X-Forwarded-Proto:", "X Forwarded Proto", ":https"])
def test_a_bad_proxy_header_is_reported_and_nothing_trusted(monkeypatch, env_errors, raw):
    """Underscores (Django's META cannot tell them from dashes), an empty value, a header name with blanks: the
    system check names the variable, and no header is trusted meanwhile."""
    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", raw)
    assert env.env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER") is None
    assert len(env_errors) == 1
    assert env_errors[0].startswith(f"SECURE_PROXY_SSL_HEADER={raw!r} is not a header name")


# -- what the settings do ----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_behind_the_proxy_the_landing_page_shows_https_and_wss_endpoints(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    text = Client().get("/", **BEHIND_THE_PROXY).content.decode()
    for url in ("https://testserver/mcp", "https://testserver/sse", "wss://testserver/ws", "https://testserver/rpc"):
        assert f"<code>{url}</code>" in text
    assert "<code>http://testserver/mcp</code>" in Client().get("/").content.decode()


@pytest.mark.django_db
def test_secure_cookies_are_marked_secure(settings):
    settings.CSRF_COOKIE_SECURE = True
    response = Client().get("/admin/login/", **BEHIND_THE_PROXY)
    assert response.status_code == 200
    assert response.cookies["csrftoken"]["secure"] is True
    settings.CSRF_COOKIE_SECURE = False
    assert not Client().get("/admin/login/").cookies["csrftoken"]["secure"]


@pytest.mark.django_db
def test_the_https_redirect_spares_the_probes_and_hsts_goes_with_https(settings):
    """SECURE_SSL_REDIRECT: the admin over plain http is sent to https; /health answers as it is (orchestrators
    probe the pod directly over http); an https answer carries Strict-Transport-Security."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 600
    client = Client()
    redirected = client.get("/admin/login/", HTTP_HOST="testserver", HTTP_X_FORWARDED_PROTO="http")
    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/admin/login/"
    assert client.get("/health").status_code == 200
    secure = client.get("/admin/login/", **BEHIND_THE_PROXY)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=600"
