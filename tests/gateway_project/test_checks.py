"""System checks: bad environment values and bad catalog settings make `manage.py check` fail with the message."""

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.conf import settings
from django.core.checks import Error, Warning
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from gateway_project import checks, env
from registry import checks as registry_checks
from registry.conf import parse_duration, settings_problems

# ---------------------------------------------------------------------------------------------
# Environment helpers
# ---------------------------------------------------------------------------------------------


def test_settings_share_the_environment_error_list():
    """settings.SETTINGS_ERRORS is env.ERRORS itself, so errors recorded later are still reported."""
    assert settings.SETTINGS_ERRORS is env.ERRORS


def test_unset_variables_give_the_defaults(monkeypatch, env_errors):
    """Every helper returns its default when the variable is not set, and records nothing."""
    for name in ("GW_TEST_INT", "GW_TEST_BOOL", "GW_TEST_FLOAT", "GW_TEST_LIST", "GW_TEST_REDIS", "GW_TEST_STR"):
        monkeypatch.delenv(name, raising=False)
    assert env.env_int("GW_TEST_INT", 7) == 7
    assert env.env_bool("GW_TEST_BOOL", True) is True
    assert env.env_float("GW_TEST_FLOAT", 1.5) == 1.5
    assert env.env_list("GW_TEST_LIST", ["a"]) == ["a"]
    assert env.env_redis("GW_TEST_REDIS") is None
    assert env.env_str("GW_TEST_STR", "x") == "x"
    assert env_errors == []


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), (" yes ", True), ("on", True), ("0", False), ("false", False), ("Off", False)],
)
def test_env_bool_parses_common_spellings(monkeypatch, env_errors, raw, expected):
    """1/true/yes/on and 0/false/no/off, any case, surrounding blanks ignored."""
    monkeypatch.setenv("GW_TEST_BOOL", raw)
    assert env.env_bool("GW_TEST_BOOL", not expected) is expected
    assert env_errors == []


def test_env_values_are_parsed(monkeypatch, env_errors):
    """Integers, numbers and comma-separated lists are parsed from their text."""
    monkeypatch.setenv("GW_TEST_INT", " 42 ")
    monkeypatch.setenv("GW_TEST_FLOAT", "2.5")
    monkeypatch.setenv("GW_TEST_LIST", " a, b ,,c ")
    assert env.env_int("GW_TEST_INT", 1, minimum=1) == 42
    assert env.env_float("GW_TEST_FLOAT", 1.0) == 2.5
    assert env.env_list("GW_TEST_LIST", []) == ["a", "b", "c"]
    assert env_errors == []


def test_a_redis_key_prefix_is_read_as_given(monkeypatch, env_errors):
    """Letters, digits and - _ . : make a Redis key prefix (no glob characters: SCAN by it is exact)."""
    monkeypatch.setenv("GW_TEST_PREFIX", " team-a.gw_1:prod ")
    assert env.env_key_prefix("GW_TEST_PREFIX", "mcpgw") == "team-a.gw_1:prod"
    monkeypatch.delenv("GW_TEST_PREFIX")
    assert env.env_key_prefix("GW_TEST_PREFIX", "mcpgw") == "mcpgw"
    assert env_errors == []


@pytest.mark.parametrize(
    ("name", "raw", "read", "default", "fragment"),
    [
        ("GATEWAY_PAGE_SIZE", "abc", lambda n: env.env_int(n, 50, minimum=1), 50, "is not an integer"),
        ("GATEWAY_PAGE_SIZE", "0", lambda n: env.env_int(n, 50, minimum=1), 50, "must be at least 1"),
        ("GATEWAY_TOOL_TIMEOUT", "soon", lambda n: env.env_float(n, 60.0), 60.0, "is not a number"),
        ("GATEWAY_TOOL_TIMEOUT", "-1", lambda n: env.env_float(n, 60.0, minimum=0.001), 60.0, "must be at least"),
        ("DEBUG", "maybe", lambda n: env.env_bool(n, False), False, "is not a boolean"),
        ("REDIS_URL", "http://x", env.env_redis, None, "is not a Redis URL"),
        ("GATEWAY_REDIS_PREFIX", "my app*", lambda n: env.env_key_prefix(n, "mcpgw"), "mcpgw", "is not a Redis key"),
        ("GATEWAY_REDIS_PREFIX", "", lambda n: env.env_key_prefix(n, "mcpgw"), "mcpgw", "is not a Redis key"),
    ],
)
def test_bad_values_fall_back_to_the_default_and_are_recorded(
    monkeypatch, env_errors, name, raw, read, default, fragment
):
    """A value that does not parse gives the default and records a message naming the variable and value."""
    monkeypatch.setenv(name, raw)
    assert read(name) == default
    assert len(env_errors) == 1
    assert env_errors[0].startswith(f"{name}={raw!r} ")
    assert fragment in env_errors[0]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache.example.com:6380/1", "unix:///run/r.sock"])
def test_env_redis_accepts_redis_urls(monkeypatch, env_errors, url):
    """redis://, rediss:// and unix:// URLs are returned as given."""
    monkeypatch.setenv("REDIS_URL", url)
    assert env.env_redis("REDIS_URL") == url
    assert env_errors == []


def test_env_redis_treats_blank_as_unset(monkeypatch, env_errors):
    """An empty or blank REDIS_URL means no Redis, not an error."""
    monkeypatch.setenv("REDIS_URL", "   ")
    assert env.env_redis("REDIS_URL") is None
    assert env_errors == []


def test_bad_database_url_is_recorded_and_the_default_used(monkeypatch, env_errors):
    """DATABASE_URL with an unknown scheme records an error and falls back to the default database."""
    monkeypatch.setenv("DATABASE_URL", "nonsense://")
    config = env.env_database("DATABASE_URL", "sqlite:////tmp/fallback.sqlite3")
    assert config["ENGINE"] == "django.db.backends.sqlite3"
    assert config["NAME"] == "/tmp/fallback.sqlite3"
    assert len(env_errors) == 1
    assert env_errors[0].startswith("DATABASE_URL='nonsense://' is not a database URL")


def test_good_database_url_is_parsed(monkeypatch, env_errors):
    """A PostgreSQL URL becomes a Django database configuration with persistent connections."""
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@db.example.com:5433/catalog")
    config = env.env_database("DATABASE_URL", "sqlite:///x")
    assert config["ENGINE"] == "django.db.backends.postgresql"
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == ("db.example.com", 5433, "catalog", "u")
    assert config["CONN_MAX_AGE"] == 60
    assert env_errors == []


# ---------------------------------------------------------------------------------------------
# gateway_project.checks
# ---------------------------------------------------------------------------------------------


def test_check_environment_passes_without_recorded_errors(env_errors):
    """No recorded environment errors: no check errors."""
    assert checks.check_environment() == []


def test_check_environment_reports_each_recorded_error(monkeypatch, env_errors):
    """Each bad variable read by env becomes an Error gateway.E001 naming it."""
    monkeypatch.setenv("GATEWAY_PAGE_SIZE", "abc")
    monkeypatch.setenv("REDIS_URL", "http://x")
    env.env_int("GATEWAY_PAGE_SIZE", 50, minimum=1)
    env.env_redis("REDIS_URL")

    errors = checks.check_environment()

    assert [type(e) for e in errors] == [Error, Error]
    assert {e.id for e in errors} == {"gateway.E001"}
    assert "GATEWAY_PAGE_SIZE='abc'" in errors[0].msg
    assert "REDIS_URL='http://x'" in errors[1].msg
    assert errors[0].hint == "Fix the environment variable and start again."


def test_manage_check_fails_in_process_on_a_recorded_error(db, monkeypatch, env_errors):
    """call_command('check') raises SystemCheckError with the message (db: model checks ask the backend)."""
    monkeypatch.setenv("GATEWAY_MAX_PAGE_SIZE", "lots")
    env.env_int("GATEWAY_MAX_PAGE_SIZE", 1000, minimum=1)
    with pytest.raises(SystemCheckError, match=r"gateway\.E001.*GATEWAY_MAX_PAGE_SIZE='lots'"):
        call_command("check")


def test_auth_disabled_is_a_warning():
    """GATEWAY_AUTH_REQUIRED off is reported as warning gateway.W001; on, nothing is reported."""
    assert checks.check_auth_disabled() == []
    with override_settings(GATEWAY_AUTH_REQUIRED=False):
        warnings = checks.check_auth_disabled()
    assert [(type(w), w.id) for w in warnings] == [(Warning, "gateway.W001")]


def run_manage_check(**variables: str) -> subprocess.CompletedProcess:
    """`python manage.py check` with the production settings and only the given variables set."""
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "DJANGO_SETTINGS_MODULE": "gateway_project.settings",
        "SECRET_KEY": "subprocess-check-secret-key-0123456789abcdefghijklmnop",
        **variables,
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=settings.BASE_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_manage_check_subprocess_fails_on_bad_environment_values():
    """Bad GATEWAY_PAGE_SIZE, DATABASE_URL and REDIS_URL make `manage.py check` exit non-zero naming each."""
    result = run_manage_check(GATEWAY_PAGE_SIZE="abc", DATABASE_URL="nonsense://", REDIS_URL="http://x")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output
    assert "gateway.E001" in output
    for name in ("GATEWAY_PAGE_SIZE='abc'", "DATABASE_URL='nonsense://'", "REDIS_URL='http://x'"):
        assert name in output


def test_manage_check_subprocess_passes_with_a_clean_environment(tmp_path):
    """The same command succeeds when nothing is misconfigured (so the failure above is the variables')."""
    result = run_manage_check(DATABASE_URL=f"sqlite:///{tmp_path / 'check.sqlite3'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


# ---------------------------------------------------------------------------------------------
# registry.conf.settings_problems / registry.checks
# ---------------------------------------------------------------------------------------------


def pem_pair(private_key) -> tuple[str, str]:
    private = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def rsa_pair():
    return pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_pair():
    return pem_pair(ec.generate_private_key(ec.SECP256R1()))


def messages(**overrides) -> list[str]:
    with override_settings(**overrides):
        return [message for message, _hint in settings_problems()]


def test_test_settings_have_no_problems():
    """The test settings are valid: no problems, no check errors."""
    assert settings_problems() == []
    assert registry_checks.check_registry_settings() == []


def test_unknown_jwt_algorithm_is_a_problem():
    """An algorithm outside HS/RS/ES 256-512 is refused with the list of supported ones."""
    with override_settings(JWT_ALGORITHM="none"):
        problems = settings_problems()
    assert problems[0][0] == "JWT_ALGORITHM='none' is not supported."
    assert "HS256" in problems[0][1]
    assert "RS256" in problems[0][1]


def test_short_jwt_secret_is_a_problem():
    """An HMAC secret shorter than 32 bytes is refused; an empty one (derived from SECRET_KEY) is fine."""
    assert messages(JWT_ALGORITHM="HS256", JWT_SECRET="short") == ["JWT_SECRET is shorter than 32 bytes."]
    assert messages(JWT_ALGORITHM="HS512", JWT_SECRET="x" * 31) == ["JWT_SECRET is shorter than 32 bytes."]
    assert messages(JWT_ALGORITHM="HS256", JWT_SECRET="x" * 32) == []
    assert messages(JWT_ALGORITHM="HS256", JWT_SECRET="") == []


def test_asymmetric_algorithm_without_public_key_is_a_problem():
    """RS256 needs JWT_PUBLIC_KEY."""
    assert messages(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY="", JWT_PRIVATE_KEY="") == [
        "JWT_ALGORITHM=RS256 needs JWT_PUBLIC_KEY."
    ]


@pytest.mark.parametrize(
    "public_key",
    [
        "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
        "/nonexistent/dir/public.pem",
    ],
    ids=["garbage-pem", "missing-file"],
)
def test_unloadable_public_key_is_a_problem(public_key):
    """A public key that is not loadable PEM (text or file) is reported."""
    problems = messages(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public_key, JWT_PRIVATE_KEY="")
    assert len(problems) == 1
    assert problems[0].startswith("JWT_PUBLIC_KEY cannot be loaded:")


def test_unloadable_private_key_is_a_problem(rsa_pair):
    """A broken private key is reported even when the public key is fine."""
    _private, public = rsa_pair
    problems = messages(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\n")
    assert len(problems) == 1
    assert problems[0].startswith("JWT_PRIVATE_KEY cannot be loaded:")


def test_valid_rs256_key_pair_passes(rsa_pair, tmp_path):
    """A valid RS256 key pair passes, given as PEM text or as paths of PEM files."""
    private, public = rsa_pair
    assert messages(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private) == []
    assert messages(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY="") == []
    (tmp_path / "private.pem").write_text(private)
    (tmp_path / "public.pem").write_text(public)
    assert (
        messages(
            JWT_ALGORITHM="RS256",
            JWT_PUBLIC_KEY=str(tmp_path / "public.pem"),
            JWT_PRIVATE_KEY=str(tmp_path / "private.pem"),
        )
        == []
    )


def test_valid_es256_key_pair_passes(ec_pair):
    """An ES256 key pair passes too."""
    private, public = ec_pair
    assert messages(JWT_ALGORITHM="ES256", JWT_PUBLIC_KEY=public, JWT_PRIVATE_KEY=private) == []


@pytest.mark.parametrize("value", ["7 days", "0d", "abc", "", "10y", "-1h"])
def test_bad_default_expiry_is_a_problem(value):
    """JWT_DEFAULT_EXPIRES_IN must be a positive number with a unit s, m, h, d or w."""
    problems = messages(JWT_DEFAULT_EXPIRES_IN=value)
    assert len(problems) == 1
    assert problems[0].startswith("JWT_DEFAULT_EXPIRES_IN:")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7d", timedelta(days=7)),
        (" 2W ", timedelta(weeks=2)),
        ("5 m", timedelta(minutes=5)),
    ],
)
def test_parse_duration_reads_number_and_unit(text, expected):
    """Durations are a positive number and a unit, case and surrounding blanks ignored."""
    assert parse_duration(text) == expected


def test_bad_fernet_keys_are_problems_named_by_position():
    """Each entry of GATEWAY_ENCRYPTION_KEYS that is not a Fernet key is reported with its position."""
    good = Fernet.generate_key().decode()
    assert messages(GATEWAY_ENCRYPTION_KEYS=[good]) == []
    assert messages(GATEWAY_ENCRYPTION_KEYS=["not-a-key"]) == ["GATEWAY_ENCRYPTION_KEYS entry 1 is not a Fernet key."]
    assert messages(GATEWAY_ENCRYPTION_KEYS=[good, good[:-4], "x" * 44]) == [
        "GATEWAY_ENCRYPTION_KEYS entry 2 is not a Fernet key.",
        "GATEWAY_ENCRYPTION_KEYS entry 3 is not a Fernet key.",
    ]


def test_page_size_above_the_maximum_is_a_problem():
    """GATEWAY_PAGE_SIZE larger than GATEWAY_MAX_PAGE_SIZE is reported; equal is fine."""
    assert messages(GATEWAY_PAGE_SIZE=2000, GATEWAY_MAX_PAGE_SIZE=1000) == [
        "GATEWAY_PAGE_SIZE (2000) is larger than GATEWAY_MAX_PAGE_SIZE (1000)."
    ]
    assert messages(GATEWAY_PAGE_SIZE=1000, GATEWAY_MAX_PAGE_SIZE=1000) == []


def test_several_problems_are_all_reported():
    """Every problem is listed, not only the first."""
    problems = messages(
        JWT_ALGORITHM="HS256",
        JWT_SECRET="short",
        JWT_DEFAULT_EXPIRES_IN="soon",
        GATEWAY_ENCRYPTION_KEYS=["bad"],
        GATEWAY_PAGE_SIZE=5,
        GATEWAY_MAX_PAGE_SIZE=1,
    )
    assert len(problems) == 4


def test_registry_check_turns_problems_into_errors():
    """check_registry_settings gives Error registry.E001 with the message and a hint."""
    with override_settings(JWT_ALGORITHM="HS1"):
        errors = registry_checks.check_registry_settings()
    assert len(errors) == 1
    assert isinstance(errors[0], Error)
    assert errors[0].id == "registry.E001"
    assert errors[0].msg == "JWT_ALGORITHM='HS1' is not supported."
    assert errors[0].hint


def test_manage_check_fails_on_a_bad_catalog_setting(db):
    """`manage.py check` fails with registry.E001 when a catalog setting is bad."""
    with override_settings(JWT_ALGORITHM="RS256", JWT_PUBLIC_KEY=""), pytest.raises(SystemCheckError) as info:
        call_command("check")
    assert "registry.E001" in str(info.value)
    assert "needs JWT_PUBLIC_KEY" in str(info.value)


def test_governance_settings_are_checked_at_start_up():
    """A malformed rate limit or OAuth issuer fails `manage.py check` naming the setting (docs/governance.md)."""
    assert registry_checks.check_governance_settings() == []
    with override_settings(GATEWAY_RATE_LIMIT_PER_TOOL="5/fortnight", GATEWAY_OAUTH_ISSUER="https://as.example/?x=1"):
        errors = registry_checks.check_governance_settings()
    assert [error.id for error in errors] == ["registry.E002", "registry.E003"]
    assert errors[0].msg.startswith("GATEWAY_RATE_LIMIT_PER_TOOL: '5/fortnight' is not a rate")
    assert "GATEWAY_OAUTH_ISSUER" in errors[1].msg
    with override_settings(GATEWAY_RATE_LIMIT_PER_USER="100/minute", GATEWAY_OAUTH_ISSUER="https://as.example"):
        assert registry_checks.check_governance_settings() == []
