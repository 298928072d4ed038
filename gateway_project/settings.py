"""Settings for MCP Gateway, read from the environment.

Every setting is listed with its default in README.md ("Configuration"). Bad values do not crash
the import: they are collected in ``env.ERRORS`` and reported by a system check.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import (
    ERRORS as SETTINGS_ERRORS,  # noqa: F401 - read by gateway_project.checks
)
from gateway_project.env import (
    env_bool,
    env_database,
    env_float,
    env_int,
    env_key_prefix,
    env_list,
    env_proxy_ssl_header,
    env_redis,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent


def _local_secret_key(path: Path = BASE_DIR / ".secret_key") -> str:
    """A random key kept in .secret_key, so a newcomer's `make run` is safe without configuration. Where that
    file cannot be kept (the image's read-only app directory), one sentence saying what to set instead of an
    OSError's traceback, and never a key of this process's own: the replicas must share one."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and {path} cannot be read ({exc.strerror or exc}): "
            "set SECRET_KEY (every replica must share it)."
        ) from None
    key = secrets.token_urlsafe(50)
    try:
        path.write_text(key + "\n")
        path.chmod(0o600)
    except OSError as exc:
        raise ImproperlyConfigured(
            f"SECRET_KEY is not set and {path} is not writable ({exc.strerror or exc}): "
            "set SECRET_KEY (every replica must share it)."
        ) from None
    return key


# ---------------------------------------------------------------------------------------------
# Core
# ---------------------------------------------------------------------------------------------
# Signs sessions and, unless JWT_SECRET / GATEWAY_ENCRYPTION_KEYS are set, derives those keys.
# Every replica must share it. Unset: a random key created once in .secret_key.
SECRET_KEY = env_str("SECRET_KEY") or _local_secret_key()
# Django's debug pages. Never on in production.
DEBUG = env_bool("DEBUG", False)
# Host names this gateway answers to (Host header); others get 400.
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
# Origins trusted for the admin's CSRF checks when served behind a proxy on another origin.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# Log level of the gateway's own loggers.
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()

# ---------------------------------------------------------------------------------------------
# HTTPS behind a TLS-terminating proxy (docs/deployment.md, "HTTPS behind the proxy")
# ---------------------------------------------------------------------------------------------
# The header the proxy sets to say the client used https: "X-Forwarded-Proto" (secure when it says https) or
# "Name: value". Set it only when the proxy overwrites that header on every request, or a client could claim
# https. The OAuth metadata documents, the MCP endpoints' challenges and the absolute URLs the admin and the
# landing page show are then https. Empty: Django takes the scheme from the server (the image's daphne reads
# X-Forwarded-Proto when the proxy also sets X-Real-IP) and the MCP challenges from X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = env_proxy_ssl_header("SECURE_PROXY_SSL_HEADER")
# Send the admin's session and CSRF cookies over https only. Off by default: `make run` serves plain http on
# loopback, where a browser would not send such cookies back and the admin login would fail.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Redirect admin and REST API requests that came over plain http to https (the MCP endpoints and /health,
# /ready are never redirected). Usually the proxy's job; needs SECURE_PROXY_SSL_HEADER behind one.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Strict-Transport-Security on https answers of the admin and REST API: seconds browsers remember to use https
# only (0: no header), and whether that covers subdomains. Start small: a browser keeps it for that long.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)

# ---------------------------------------------------------------------------------------------
# Storage: the catalog database, Redis (channel layer, cache, Celery broker)
# ---------------------------------------------------------------------------------------------
# Any URL dj-database-url understands; default: an SQLite file beside manage.py.
DATABASES = {"default": env_database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers; wait for the lock instead of failing, and use WAL for readers.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A server that does not answer (a partition drops packets, a dead host) fails a new connection after this
    # many seconds instead of holding the request that opens it until TCP gives up; ?connect_timeout= wins.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Unset: in-memory channel layer and local-memory cache (one process). Set: Redis for both, and
# as Celery's broker.
REDIS_URL = env_redis("REDIS_URL")
# The start of every Redis key and channel name the gateway makes: sessions and stream logs
# (<prefix>:s:..., :e:...), rate-limit buckets (<prefix>:rl:), the cache (<prefix>:1:...), Celery's
# broker keys (<prefix>:celery:) and the channel layer (<prefix>-db<N>:). Deployments, or test runs,
# that share one Redis server with different prefixes never see each other's keys or messages.
GATEWAY_REDIS_PREFIX = env_key_prefix("GATEWAY_REDIS_PREFIX", "mcpgw")

if REDIS_URL:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                # A connection Redis dropped (a restart) is opened again and the command sent again, as the
                # session store's client does by default; without this the first message each replica sends
                # after a Redis restart is lost (channels_redis builds its pool with no retries).
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=1.0), 3),
                        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
                    }
                ],
                # Pub/sub ignores the database number: name it in the prefix, so that deployments sharing
                # one Redis server on different databases do not hear each other.
                "prefix": f"{GATEWAY_REDIS_PREFIX}-db{urlsplit(REDIS_URL).path.strip('/') or '0'}:",
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": GATEWAY_REDIS_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------
# Require credentials on every REST and MCP endpoint. Off: anyone may read and write (a warning
# is logged at start-up).
GATEWAY_AUTH_REQUIRED = env_bool("GATEWAY_AUTH_REQUIRED", True)
# JWT bearer tokens: HS256 (shared secret) or RS256/ES256 (key pair; the public key verifies,
# the private key is needed only by `manage.py issue_token`). Keys are PEM text or a file path.
JWT_ALGORITHM = env_str("JWT_ALGORITHM", "HS256")
JWT_SECRET = env_str("JWT_SECRET", "")  # empty: derived from SECRET_KEY
JWT_PUBLIC_KEY = env_str("JWT_PUBLIC_KEY", "")
JWT_PRIVATE_KEY = env_str("JWT_PRIVATE_KEY", "")
JWT_ISSUER = env_str("JWT_ISSUER", "mcp-gateway")
JWT_AUDIENCE = env_str("JWT_AUDIENCE", "mcp-gateway")
# Lifetime of tokens from `issue_token` without --expires-in (e.g. 30m, 12h, 7d).
JWT_DEFAULT_EXPIRES_IN = env_str("JWT_DEFAULT_EXPIRES_IN", "7d")
# Clock skew tolerated on exp/nbf, in seconds.
JWT_LEEWAY = env_int("JWT_LEEWAY", 30, minimum=0)

# ---------------------------------------------------------------------------------------------
# Secrets at rest (upstream credentials)
# ---------------------------------------------------------------------------------------------
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation: put the new key first,
# then run `manage.py rotate_secrets`). Empty: one key derived from SECRET_KEY.
GATEWAY_ENCRYPTION_KEYS = env_list("GATEWAY_ENCRYPTION_KEYS", [])

# ---------------------------------------------------------------------------------------------
# API behaviour
# ---------------------------------------------------------------------------------------------
# Largest request body accepted, in bytes; larger ones get 413.
GATEWAY_MAX_BODY_BYTES = env_int("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = GATEWAY_MAX_BODY_BYTES
# Default and largest page size of REST list endpoints.
GATEWAY_PAGE_SIZE = env_int("GATEWAY_PAGE_SIZE", 50, minimum=1)
GATEWAY_MAX_PAGE_SIZE = env_int("GATEWAY_MAX_PAGE_SIZE", 1000, minimum=1)
# Timeout of a tool call, in seconds, for tools that set none.
GATEWAY_TOOL_TIMEOUT = env_float("GATEWAY_TOOL_TIMEOUT", 60.0, minimum=0.001)

# ---------------------------------------------------------------------------------------------
# Wrapped tools: REST APIs, command lines, Python functions (docs/tool-backends.md)
# ---------------------------------------------------------------------------------------------
# REST and OpenAPI tools refuse private, loopback and link-local addresses (checked on the address
# actually connected to, redirects included) unless this is on.
GATEWAY_OUTBOUND_ALLOW_PRIVATE = env_bool("GATEWAY_OUTBOUND_ALLOW_PRIVATE", False)
# Largest REST response body read, in bytes; a larger one makes the call an error.
GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES = env_int("GATEWAY_OUTBOUND_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, minimum=1024)
# Most redirects one REST call follows.
GATEWAY_OUTBOUND_MAX_REDIRECTS = env_int("GATEWAY_OUTBOUND_MAX_REDIRECTS", 5, minimum=0)
# Size of the one connection pool all REST tools share (connections open at once).
GATEWAY_OUTBOUND_MAX_CONNECTIONS = env_int("GATEWAY_OUTBOUND_MAX_CONNECTIONS", 100, minimum=1)
# Largest stdout a CLI tool may write, in bytes, for tools that set none.
GATEWAY_CLI_MAX_OUTPUT_BYTES = env_int("GATEWAY_CLI_MAX_OUTPUT_BYTES", 1024 * 1024, minimum=1024)
# Python functions that may become tools (comma-separated dotted paths; "package.module.*" allows
# every public function of a module). Empty: no function tools.
GATEWAY_FUNCTION_TOOLS = env_list("GATEWAY_FUNCTION_TOOLS", [])

# ---------------------------------------------------------------------------------------------
# MCP endpoints
# ---------------------------------------------------------------------------------------------
# Browser origins allowed to call the MCP endpoints besides the gateway's own (comma-separated;
# "*" allows any). Requests without an Origin header (non-browser clients) are always allowed.
GATEWAY_ALLOWED_ORIGINS = env_list("GATEWAY_ALLOWED_ORIGINS", [])
# Items per page of tools/list, resources/list, resources/templates/list and prompts/list.
GATEWAY_MCP_PAGE_SIZE = env_int("GATEWAY_MCP_PAGE_SIZE", 100, minimum=1)
# A session-era session ends after this many seconds without a request (and no open stream).
GATEWAY_SESSION_IDLE_TIMEOUT = env_float("GATEWAY_SESSION_IDLE_TIMEOUT", 3600.0, minimum=1.0)
# Most sessions one gateway process holds (with the shared store: the whole deployment holds);
# more get HTTP 503 with a JSON-RPC error.
GATEWAY_MAX_SESSIONS = env_int("GATEWAY_MAX_SESSIONS", 10_000, minimum=1)
# Most sessions one user holds at once (0: no bound); more get HTTP 429 naming this setting.
GATEWAY_MAX_SESSIONS_PER_USER = env_int("GATEWAY_MAX_SESSIONS_PER_USER", 1000, minimum=0)
# Most open streams (SSE, GET, subscriptions/listen, WebSocket) one process serves, and one user may
# hold on one process (0: no per-user bound); more get 503 / 429.
GATEWAY_MAX_STREAMS = env_int("GATEWAY_MAX_STREAMS", 10_000, minimum=1)
GATEWAY_MAX_STREAMS_PER_USER = env_int("GATEWAY_MAX_STREAMS_PER_USER", 100, minimum=0)
# Where session-era sessions live: "memory" (this process only), "redis" (shared by every replica;
# needs REDIS_URL), or "auto" (redis when REDIS_URL is set).
GATEWAY_SESSION_STORE = env_str("GATEWAY_SESSION_STORE", "auto").lower()
# Seconds a verified credential is remembered by the MCP endpoints (revocations and password
# changes take effect within this time).
GATEWAY_AUTH_CACHE_SECONDS = env_float("GATEWAY_AUTH_CACHE_SECONDS", 30.0, minimum=0.0)
# Seconds between keep-alive comments on idle SSE streams.
GATEWAY_SSE_KEEPALIVE = env_float("GATEWAY_SSE_KEEPALIVE", 15.0, minimum=1.0)
# WebSocket clients may send their bearer token as ?token= (browsers cannot set the Authorization
# header on a WebSocket). Off by default: URLs end up in logs and histories.
GATEWAY_WS_QUERY_TOKEN = env_bool("GATEWAY_WS_QUERY_TOKEN", False)
# The `retry` (milliseconds) sent in the first event of each SSE stream: how long a 2025-11-25 client
# waits before resuming a dropped stream with Last-Event-ID.
GATEWAY_SSE_RETRY_MS = env_int("GATEWAY_SSE_RETRY_MS", 1000, minimum=0)
# 2026-07-28: seconds a call that asked the client something (an InputRequiredResult) waits for the
# client's retry before it is cancelled; its requestState expires with it.
GATEWAY_REQUEST_STATE_TTL = env_float("GATEWAY_REQUEST_STATE_TTL", 300.0, minimum=1.0)
# Most such waiting calls one gateway process holds; more get a JSON-RPC error.
GATEWAY_MAX_PARKED_CALLS = env_int("GATEWAY_MAX_PARKED_CALLS", 1000, minimum=1)
# The ttlMs cache hint (milliseconds) on 2026-07-28 lists, reads and server/discover. The scope is
# "private" while GATEWAY_AUTH_REQUIRED is on (answers are for authenticated callers), else "public".
GATEWAY_CACHE_TTL_MS = env_int("GATEWAY_CACHE_TTL_MS", 5000, minimum=0)

# ---------------------------------------------------------------------------------------------
# Federation and operations: health, sync, drift, failover, peers, stdio (docs/federation.md)
# ---------------------------------------------------------------------------------------------
# Seconds between health checks of each enabled gateway (ping, or server/discover for 2026-07-28).
GATEWAY_HEALTH_INTERVAL = env_float("GATEWAY_HEALTH_INTERVAL", 15.0, minimum=1.0)
# Seconds a health check waits for the upstream before counting a failure.
GATEWAY_HEALTH_TIMEOUT = env_float("GATEWAY_HEALTH_TIMEOUT", 10.0, minimum=0.1)
# Failed checks in a row that make a gateway unreachable (the first failure makes it degraded).
GATEWAY_HEALTH_FAILURES = env_int("GATEWAY_HEALTH_FAILURES", 3, minimum=1)
# Longest wait, in seconds, between checks of an unreachable gateway (the wait doubles from the interval).
GATEWAY_HEALTH_MAX_BACKOFF = env_float("GATEWAY_HEALTH_MAX_BACKOFF", 300.0, minimum=1.0)
# Leave the tools, resources and prompts of unreachable gateways out of the lists (clients get
# list_changed when they go and when they return); off: they stay listed and calls fail fast.
GATEWAY_HIDE_UNREACHABLE = env_bool("GATEWAY_HIDE_UNREACHABLE", False)
# Default seconds between scheduled syncs of a gateway's catalog (a gateway's own sync_interval wins;
# 0: only on list_changed, on a change to the gateway, or by hand).
GATEWAY_SYNC_INTERVAL = env_int("GATEWAY_SYNC_INTERVAL", 300, minimum=0)
# Seconds a sync waits for each of the upstream's answers.
GATEWAY_SYNC_TIMEOUT = env_float("GATEWAY_SYNC_TIMEOUT", 30.0, minimum=0.1)
# Sync runs kept per gateway (older ones are deleted).
GATEWAY_SYNC_RUNS_KEPT = env_int("GATEWAY_SYNC_RUNS_KEPT", 50, minimum=1)
# What a changed description, schema or annotations of a known upstream tool does: "hold" (the approved
# definition keeps serving until a staff user approves the change), "withhold" (the tool is not served
# until approved), or "accept" (taken at once, still recorded).
GATEWAY_DRIFT_POLICY = env_str("GATEWAY_DRIFT_POLICY", "hold").lower()
# Where the periodic work runs: "inprocess" (a scheduler thread in the gateway process), "celery"
# (Celery beat and workers; the gateway process runs none), "off", or "auto" (celery when REDIS_URL is
# set, else inprocess).
GATEWAY_SCHEDULER = env_str("GATEWAY_SCHEDULER", "auto").lower()
# Seconds between scheduler ticks (each finds the gateways whose check or sync is due).
GATEWAY_SCHEDULER_TICK = env_float("GATEWAY_SCHEDULER_TICK", 5.0, minimum=0.1)
# Threads of the in-process scheduler (checks and syncs that run at once).
GATEWAY_SCHEDULER_WORKERS = env_int("GATEWAY_SCHEDULER_WORKERS", 4, minimum=1)
# Seconds between publications of each gateway process's traffic counts (calls, errors, open sessions
# and streams) to the cache, where the admin dashboard sums every replica's (0: not published; the
# dashboard then shows only the process that serves it).
GATEWAY_STATS_PUBLISH_SECONDS = env_float("GATEWAY_STATS_PUBLISH_SECONDS", 5.0, minimum=0.0)
# Seconds one worker holds a gateway's lease for a check or sync (a crashed worker's lease runs out).
GATEWAY_LEASE_SECONDS = env_float("GATEWAY_LEASE_SECONDS", 120.0, minimum=1.0)
# Failover: failed calls in a row that open a gateway's circuit, and seconds before it is tried again.
GATEWAY_CIRCUIT_FAILURES = env_int("GATEWAY_CIRCUIT_FAILURES", 3, minimum=1)
GATEWAY_CIRCUIT_COOLDOWN = env_float("GATEWAY_CIRCUIT_COOLDOWN", 30.0, minimum=0.1)
# Supervised stdio servers: most running at once per gateway process, seconds unused before one is
# stopped (0: never), and the longest wait, in seconds, between restarts of one that keeps dying.
GATEWAY_STDIO_MAX_PROCESSES = env_int("GATEWAY_STDIO_MAX_PROCESSES", 32, minimum=1)
GATEWAY_STDIO_IDLE_TIMEOUT = env_float("GATEWAY_STDIO_IDLE_TIMEOUT", 600.0, minimum=0.0)
GATEWAY_STDIO_MAX_BACKOFF = env_float("GATEWAY_STDIO_MAX_BACKOFF", 60.0, minimum=0.1)
# Peers: this gateway's own base URL as peers reach it (loop detection, mDNS), peer base URLs to
# discover from (comma-separated), the bearer token presented to peers' well-known endpoints, how many
# hops of peer-of-peer discovery to follow, hosts discovery may add (empty: any), whether discovered
# peers join without approval, mDNS/DNS-SD on the local network, and seconds between discovery runs.
GATEWAY_PUBLIC_URL = env_str("GATEWAY_PUBLIC_URL", "")
GATEWAY_PEERS = env_list("GATEWAY_PEERS", [])
GATEWAY_PEER_TOKEN = env_str("GATEWAY_PEER_TOKEN", "")
GATEWAY_DISCOVERY_MAX_DEPTH = env_int("GATEWAY_DISCOVERY_MAX_DEPTH", 2, minimum=0)
GATEWAY_DISCOVERY_ALLOWED_HOSTS = env_list("GATEWAY_DISCOVERY_ALLOWED_HOSTS", [])
GATEWAY_DISCOVERY_AUTO_APPROVE = env_bool("GATEWAY_DISCOVERY_AUTO_APPROVE", False)
GATEWAY_DISCOVERY_MDNS = env_bool("GATEWAY_DISCOVERY_MDNS", False)
GATEWAY_DISCOVERY_INTERVAL = env_float("GATEWAY_DISCOVERY_INTERVAL", 600.0, minimum=1.0)

# ---------------------------------------------------------------------------------------------
# Governance: rate and concurrency limits (docs/governance.md)
# ---------------------------------------------------------------------------------------------
# Token buckets, "N/second|minute|hour|day"; empty: no limit. Per user (every MCP request), per token,
# per virtual server and per tool (per user), per gateway (everyone's calls to its tools). A catalog
# entry's own rate_limit wins over the setting of its kind. Shared through Redis when REDIS_URL is set
# (limits hold across replicas), in process memory otherwise.
GATEWAY_RATE_LIMIT_PER_USER = env_str("GATEWAY_RATE_LIMIT_PER_USER", "")
GATEWAY_RATE_LIMIT_PER_TOKEN = env_str("GATEWAY_RATE_LIMIT_PER_TOKEN", "")
GATEWAY_RATE_LIMIT_PER_SERVER = env_str("GATEWAY_RATE_LIMIT_PER_SERVER", "")
GATEWAY_RATE_LIMIT_PER_TOOL = env_str("GATEWAY_RATE_LIMIT_PER_TOOL", "")
GATEWAY_RATE_LIMIT_PER_GATEWAY = env_str("GATEWAY_RATE_LIMIT_PER_GATEWAY", "")
# The key prefix of the buckets in Redis (replicas that share limits share it).
GATEWAY_RATE_LIMIT_REDIS_PREFIX = env_str("GATEWAY_RATE_LIMIT_REDIS_PREFIX", f"{GATEWAY_REDIS_PREFIX}:rl:")
# Calls in flight to one upstream at once, per gateway process (0: no bound; a gateway's
# max_concurrency wins), and how long a call waits for a slot before it is refused.
GATEWAY_UPSTREAM_MAX_CONCURRENCY = env_int("GATEWAY_UPSTREAM_MAX_CONCURRENCY", 0, minimum=0)
GATEWAY_UPSTREAM_QUEUE_TIMEOUT = env_float("GATEWAY_UPSTREAM_QUEUE_TIMEOUT", 2.0)
# Notifications (progress, log messages) one upstream may send during one request (0: no bound); past it the
# request is cancelled upstream and fails, so a flooding upstream cannot fill the gateway's memory with what a
# slow client has not read yet.
GATEWAY_UPSTREAM_MAX_NOTIFICATIONS = env_int("GATEWAY_UPSTREAM_MAX_NOTIFICATIONS", 10_000, minimum=0)

# ---------------------------------------------------------------------------------------------
# Governance: caching of upstream answers (docs/governance.md)
# ---------------------------------------------------------------------------------------------
# Seconds an upstream's resources/read answer is kept (0: not cached) when the upstream gives no
# ttlMs hint; results it marks cacheScope "private" are kept per user. The Django cache alias used.
GATEWAY_CACHE_TTL = env_float("GATEWAY_CACHE_TTL", 0.0, minimum=0.0)
GATEWAY_CACHE_ALIAS = env_str("GATEWAY_CACHE_ALIAS", "default")
# The longest an answer is kept, in seconds: an upstream's ttlMs hint is honoured up to this (also when
# GATEWAY_CACHE_TTL is 0), and GATEWAY_CACHE_TTL is capped by it; 0 turns the cache off. Answers larger
# than GATEWAY_CACHE_MAX_ENTRY_BYTES (serialized) are not kept.
GATEWAY_CACHE_MAX_TTL = env_float("GATEWAY_CACHE_MAX_TTL", 300.0, minimum=0.0)
GATEWAY_CACHE_MAX_ENTRY_BYTES = env_int("GATEWAY_CACHE_MAX_ENTRY_BYTES", 1_048_576, minimum=0)

# ---------------------------------------------------------------------------------------------
# Governance: logs, metrics, traces (docs/governance.md)
# ---------------------------------------------------------------------------------------------
# "plain" or "json" (one JSON object per line); GATEWAY_ACCESS_LOG: one line per MCP request with
# user, session, method, tool, gateway, duration and outcome; arguments are never logged unless
# GATEWAY_LOG_ARGUMENTS is on (then with the keys named in GATEWAY_LOG_REDACT replaced).
GATEWAY_LOG_FORMAT = env_str("GATEWAY_LOG_FORMAT", "plain")
GATEWAY_ACCESS_LOG = env_bool("GATEWAY_ACCESS_LOG", False)
GATEWAY_LOG_ARGUMENTS = env_bool("GATEWAY_LOG_ARGUMENTS", False)
GATEWAY_LOG_REDACT = env_list("GATEWAY_LOG_REDACT", ["password", "token", "secret", "authorization", "api_key"])
# Prometheus metrics at /metrics: on or off, and who may read them (a bearer token, or client
# addresses; neither set: staff credentials like the REST API).
GATEWAY_METRICS = env_bool("GATEWAY_METRICS", True)
GATEWAY_METRICS_TOKEN = env_str("GATEWAY_METRICS_TOKEN", "")
GATEWAY_METRICS_ALLOWED_IPS = env_list("GATEWAY_METRICS_ALLOWED_IPS", [])
# OpenTelemetry traces exported by OTLP/HTTP to this endpoint (e.g. http://collector:4318); empty: off.
GATEWAY_OTEL_ENDPOINT = env_str("GATEWAY_OTEL_ENDPOINT", "")
GATEWAY_OTEL_SERVICE_NAME = env_str("GATEWAY_OTEL_SERVICE_NAME", "mcp-gateway")

# ---------------------------------------------------------------------------------------------
# Governance: audit log (docs/governance.md)
# ---------------------------------------------------------------------------------------------
# Record catalog changes (who, what, before and after) and tool calls (who, which tool, when, the
# outcome; arguments only with GATEWAY_AUDIT_ARGUMENTS), kept this many days (0: forever).
GATEWAY_AUDIT_CATALOG = env_bool("GATEWAY_AUDIT_CATALOG", True)
GATEWAY_AUDIT_CALLS = env_bool("GATEWAY_AUDIT_CALLS", True)
GATEWAY_AUDIT_ARGUMENTS = env_bool("GATEWAY_AUDIT_ARGUMENTS", False)
GATEWAY_AUDIT_RETENTION_DAYS = env_int("GATEWAY_AUDIT_RETENTION_DAYS", 90, minimum=0)
# Tool calls are queued in process and written every this many seconds (or per 500); 0: no writer thread,
# written only at exit or by registry.audit.flush() (the tests). At most 10,000 wait; more are dropped.
GATEWAY_AUDIT_FLUSH_SECONDS = env_float("GATEWAY_AUDIT_FLUSH_SECONDS", 1.0, minimum=0.0)

# ---------------------------------------------------------------------------------------------
# Governance: MCP authorization, the gateway as an OAuth 2.1 resource server (docs/governance.md)
# ---------------------------------------------------------------------------------------------
# The authorization server's issuer URL (OIDC / RFC 8414 discovery); empty: OAuth off (Basic and the
# gateway's own JWTs keep working either way). The audience tokens must carry (empty: the resource
# URL of the endpoint, GATEWAY_PUBLIC_URL or the request's own address), seconds JWKS keys are kept,
# and the authorization server's scope names for the gateway's read, call and write.
GATEWAY_OAUTH_ISSUER = env_str("GATEWAY_OAUTH_ISSUER", "")
GATEWAY_OAUTH_AUDIENCE = env_str("GATEWAY_OAUTH_AUDIENCE", "")
GATEWAY_OAUTH_JWKS_CACHE_SECONDS = env_int("GATEWAY_OAUTH_JWKS_CACHE_SECONDS", 300, minimum=0)
GATEWAY_OAUTH_SCOPE_READ = env_str("GATEWAY_OAUTH_SCOPE_READ", "mcp:read")
GATEWAY_OAUTH_SCOPE_CALL = env_str("GATEWAY_OAUTH_SCOPE_CALL", "mcp:call")
GATEWAY_OAUTH_SCOPE_WRITE = env_str("GATEWAY_OAUTH_SCOPE_WRITE", "mcp:write")
# The scope that binds a token to one virtual server ({name} is the server's name): such a token opens
# only that server's endpoints. Seconds to wait for the authorization server, the least seconds between
# fetches of its keys after a failure or an unknown key id (rotation), and the clock skew allowed.
GATEWAY_OAUTH_SCOPE_SERVER = env_str("GATEWAY_OAUTH_SCOPE_SERVER", "mcp:server:{name}")
GATEWAY_OAUTH_TIMEOUT = env_float("GATEWAY_OAUTH_TIMEOUT", 5.0, minimum=0.1)
GATEWAY_OAUTH_REFETCH_SECONDS = env_float("GATEWAY_OAUTH_REFETCH_SECONDS", 10.0, minimum=0.0)
GATEWAY_OAUTH_LEEWAY = env_int("GATEWAY_OAUTH_LEEWAY", 30, minimum=0)

# ---------------------------------------------------------------------------------------------
# Celery (production runner of the periodic work: `celery -A gateway_project worker` and `... beat`)
# ---------------------------------------------------------------------------------------------
# Broker: Redis when REDIS_URL is set; otherwise tasks run eagerly in the calling process.
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_TASK_ALWAYS_EAGER = REDIS_URL is None
# Every broker key and pub/sub channel (queues, bindings, unacked messages, remote control) under the
# gateway's prefix, like the rest of its Redis data.
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": f"{GATEWAY_REDIS_PREFIX}:celery:"}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat's schedule lives here, not in the database (no django-celery-beat): beat only ticks; each
# gateway's own intervals (sync_interval, health backoff) are on its row and edited in the admin.
CELERY_BEAT_SCHEDULE = {
    "federation-tick": {"task": "federation.tasks.tick", "schedule": GATEWAY_SCHEDULER_TICK},
    "federation-discover": {"task": "federation.tasks.discover_peers", "schedule": GATEWAY_DISCOVERY_INTERVAL},
}

# ---------------------------------------------------------------------------------------------
# Django plumbing
# ---------------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "ninja",
    "gateway_project.apps.GatewayProjectConfig",
    "registry",
    "transports",
    "federation",
]

MIDDLEWARE = [
    # /health and /ready whatever the Host (orchestrators probe by IP address): before anything reads it.
    "gateway_project.health.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who is acting, for the audit log (registry/audit.py): the request's user, through admin or api.
    "registry.middleware.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
ASGI_APPLICATION = "gateway_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# GATEWAY_LOG_FORMAT "json": one JSON object per line (gateway_project.logformat) with time, level, logger,
# message and the record's extra fields (the access log's user, session, method, tool, ...).
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "gateway_project.logformat.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if GATEWAY_LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {
        **{
            name: {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}
            for name in ("gateway_project", "registry", "transports", "federation")
        },
        # The access log (GATEWAY_ACCESS_LOG): INFO lines whatever LOG_LEVEL says.
        "transports.access": {"handlers": ["console"], "level": "INFO", "propagate": False},
    },
}

# django-ninja: offset pagination without an artificial cap (GATEWAY_MAX_PAGE_SIZE bounds pages).
NINJA_PAGINATION_MAX_OFFSET = 2**31
