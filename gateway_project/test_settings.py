"""Settings for the test suite: the production settings with fast hashing and fixed keys.

DATABASE_URL and REDIS_URL are honoured, so `make test` runs against PostgreSQL and Redis when
they are set, and against SQLite and in-memory backends otherwise.
"""

import os
import secrets

os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production-0123456789abcdef")
# Redis keys and channel names of this run under a prefix of its own (whatever the environment says), so test
# runs sharing a Redis server never meet and a run deletes only its keys (tests/redis_keys.py, and at the end
# tests/conftest.py). Set in the environment, the gateway processes the tests start inherit it. Set once per
# process: a second import of these settings keeps the prefix.
if not os.environ.get("GATEWAY_REDIS_PREFIX", "").startswith(f"mcpgw-test-{os.getpid()}-"):
    os.environ["GATEWAY_REDIS_PREFIX"] = f"mcpgw-test-{os.getpid()}-{secrets.token_hex(3)}"
os.environ.pop("GATEWAY_RATE_LIMIT_REDIS_PREFIX", None)  # derived from the prefix above

from gateway_project.settings import *  # noqa: F403
from gateway_project.settings import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
JWT_SECRET = "test-jwt-secret-0123456789abcdef-0123456789abcdef"
GATEWAY_ENCRYPTION_KEYS = []
# The tests' API servers listen on loopback; the refusal of private addresses is tested with the
# backend built without this.
GATEWAY_OUTBOUND_ALLOW_PRIVATE = True
GATEWAY_FUNCTION_TOOLS = ["tests.fixtures.functions.*"]
# Tests run periodic work themselves (or start their own worker, beat or gateway process).
GATEWAY_SCHEDULER = "off"
GATEWAY_STATS_PUBLISH_SECONDS = 0  # no publisher thread in the test process (tests that want one start it)
GATEWAY_AUDIT_FLUSH_SECONDS = 0  # no audit writer thread in the test process (tests flush on demand)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["TEST"] = {"NAME": ":memory:"}
    DATABASES["default"]["OPTIONS"].pop("init_command", None)
else:
    # A scratch database of this run's own (pytest-django creates and drops it), so two test runs on
    # one PostgreSQL server never share or drop each other's database (the random part: runs in other
    # containers or machines may have the same pid).
    DATABASES["default"]["TEST"] = {"NAME": f"test_mcpgw_{os.getpid()}_{secrets.token_hex(3)}"}
